"""Which dream score ranks a teacher-free round's candidates the way the real game does.

For each round of a ``vmc.iterate`` run (``<run>/iterate/round-<k>``), the candidates its last evaluation scored in
the real game (the round's starting controller, the best, the CMA-ES mean and ``--eval-population`` ranks) are
dreamed again in that round's MDN-RNN: ``--rollouts`` rollouts of H steps from anywhere in the round's recorded
episodes (the same draws for every candidate), for each H of ``--horizons``, scored by their mean predicted
progress. Per round: Pearson's r within the round between each dream score and the recorded real score (10 noisy
seeds), the recorded whole-race dream score (the one ``--keep best`` picks by, over the evaluation's 10 races)
beside them; then, over the rounds, the mean r and the real score of the candidate each rule would have picked,
against the candidates' average and the CMA-ES mean's. A round's picks change the rounds after it, so the picks are
what each rule would have kept in that round, not another run.

``--ensemble K`` adds an ensemble of K MDN-RNNs per round, each trained from scratch on the round's latents for
``--ensemble-epochs`` E (seeds 0..K-1, kept under ``<run>/dream-ensemble/round-<k>/m<i>-e<E>`` and reused), and dreams
every candidate in each member on the same ``--race-rollouts`` whole races: rules ``ensemble mean``, ``ensemble
min`` (the member that likes it least) and ``mean - std`` (disagreement between members as a penalty, as
model-based RL does against a model's exploitation), beside the round's own MDN-RNN on the same draws.

    python benchmarks/dream_ranking.py runs/lighthouse-small-teacher-free [--horizons 20,50,100] [--ensemble 4] [--rounds 8 16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def corr(a: list[float], b: list[float]) -> float:
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    return float(np.corrcoef(a_, b_)[0, 1]) if a_.std() > 0 and b_.std() > 0 else float("nan")


def ensemble_scores(a: argparse.Namespace, k: int, folder: Path, latents: Path, env, params: np.ndarray) -> dict:
    """The ensemble rules' scores (P,) of round ``k``'s candidates ``params`` (P, n_params); ``env`` is the round's
    own dream, whose settings every member shares."""
    from vmc import train_mdn
    from vmc.checkpoints import load_checkpoint, load_mdn
    from vmc.dream import DreamEnv
    from vmc.models import MDNRNNConfig

    own = load_checkpoint(folder / "mdn.pt" if (folder / "mdn.pt").exists() else a.run / "mdn.pt", "mdn")
    members = []
    for i in range(a.ensemble):
        out = a.run / "dream-ensemble" / f"round-{k}" / f"m{i}-e{a.ensemble_epochs}"
        if not (out / "mdn.pt").exists():
            c = own["config"]
            train_mdn.train(train_mdn.TrainMDNConfig(
                run=str(out), latents=str(latents), vae=c["vae"], epochs=a.ensemble_epochs,
                steps_per_epoch=c["steps_per_epoch"], seq_len=c["seq_len"], seed=i, model=MDNRNNConfig(**c["model"]),
                video=False, done_weight=c["done_weight"]), progress=False)
        members.append(load_mdn(out / "mdn.pt"))
    noise = env.noise(a.seed + 1, a.race_rollouts, race_start=1.0)

    def race(mdn) -> np.ndarray:
        m = DreamEnv(mdn, env.starts, env.temperature, env.max_steps, env.action_noise, env.done_threshold,
                     stuck_steps=env.stuck_steps, min_progress=env.min_progress)
        return m.run(params, noise).scores.double().mean(1).numpy()

    # the starts' LSTM states come from the round's own MDN-RNN; whole races start from a zero state, which every
    # member shares, so race starts are the same for all
    each = np.stack([race(m) for m in members])  # (K, P)
    return {"own, redrawn": race(env.mdn).tolist(), "ensemble mean": each.mean(0).tolist(),
            "ensemble min": each.min(0).tolist(), "mean - std": (each.mean(0) - each.std(0)).tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with iterate/round-<k>/ (a teacher-free run)")
    p.add_argument("--horizons", default="20,50,100", help="steps of the short dream rollouts, comma-separated")
    p.add_argument("--rollouts", type=int, default=300, help="short rollouts per candidate")
    p.add_argument("--seed", type=int, default=7, help="seed of the short rollouts' draws")
    p.add_argument("--ensemble", type=int, default=0, help="MDN-RNNs per round in an ensemble (0: none)")
    p.add_argument("--ensemble-epochs", type=int, default=12, help="epochs of each member, from scratch")
    p.add_argument("--race-rollouts", type=int, default=32, help="whole-race dreams per candidate and member")
    p.add_argument("--rounds", nargs="+", type=int, default=None, help="only these rounds (default: every finished one)")
    a = p.parse_args()

    from vmc.checkpoints import load_checkpoint, load_mdn
    from vmc.dream import load_dream
    from vmc.evolve import short_dream_scores
    from vmc.training import use_all_cores

    use_all_cores()
    horizons = [int(h) for h in a.horizons.split(",")]
    cfg = json.loads((a.run / "iterate" / "config.json").read_text())["config"]
    rules = ["whole race"] + [f"{h} steps" for h in horizons]
    if a.ensemble:
        rules += ["own, redrawn", "ensemble mean", "ensemble min", "mean - std"]
    rows = []
    print(f"\nwithin-round r against the real score; {a.rollouts} rollouts per horizon, temperature {cfg['temperature']}\n")
    print("| round | candidates | " + " | ".join(rules) + " |")
    print("|---|---|" + "---|" * len(rules))
    # Finished rounds only: a round still evolving has only its generation-0 evaluation.
    finished, k = [], 1
    while (a.run / "iterate" / f"round-{k}" / "round.json").exists():
        finished.append(k)
        k += 1
    for k in finished if a.rounds is None else sorted(set(a.rounds) & set(finished)):
        folder = a.run / "iterate" / f"round-{k}"
        # Round 1 dreams in the run's own models; later rounds in their retrained ones.
        mdn = load_mdn(folder / "mdn.pt" if (folder / "mdn.pt").exists() else a.run / "mdn.pt")
        latents = folder / "latents.h5" if (folder / "latents.h5").exists() else a.run / "latents.h5"
        env = load_dream(mdn, latents, cfg["temperature"], cfg["max_steps"], cfg.get("explore_noise", 0.1),
                         stuck_steps=cfg.get("dream_stuck_steps", 60), min_progress=cfg.get("dream_min_progress", 2.0))
        evals = load_checkpoint(folder / "controller" / "evolve.pt", "evolve")["evals"]
        cands = {"initial": evals[0]["candidates"]["initial"], **evals[-1]["candidates"]}
        params = np.stack([np.asarray(c["params"]) for c in cands.values()])
        scores = {"whole race": [c["dream_mean"] for c in cands.values()]}
        for h in horizons:
            scores[f"{h} steps"] = short_dream_scores(env, params, a.seed, a.rollouts, h).tolist()
        if a.ensemble:
            scores.update(ensemble_scores(a, k, folder, latents, env, params))
        real = [c["mean"] for c in cands.values()]
        rows.append({"real": real, "mean": cands["mean"]["mean"], **scores})
        print(f"| {k} | {len(real)} | " + " | ".join(f"{corr(scores[r], real):.2f}" for r in rules) + " |", flush=True)
    if not rows:
        asked = "" if a.rounds is None else f" among rounds {', '.join(map(str, a.rounds))}"
        raise SystemExit(f"no finished iterate rounds{asked} under {a.run} (round-<k>/round.json)")
    print(f"\nover {len(rows)} rounds: candidates' average real score "
          f"{np.mean([np.mean(r['real']) for r in rows]):.1f}, the CMA-ES mean's {np.mean([r['mean'] for r in rows]):.1f}\n")
    print("| rule | mean within-round r | rounds with r > 0 | real score of its pick (mean over rounds) |")
    print("|---|---|---|---|")
    for rule in rules:
        rs = np.array([corr(r[rule], r["real"]) for r in rows])
        picks = [r["real"][int(np.argmax(r[rule]))] for r in rows]
        print(f"| {rule} | {np.nanmean(rs):.2f} | {int((rs > 0).sum())} of {len(rs)} | {np.mean(picks):.1f} |")


if __name__ == "__main__":
    main()
