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

    python benchmarks/dream_ranking.py runs/lighthouse-small-teacher-free [--horizons 20,50,100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def corr(a: list[float], b: list[float]) -> float:
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    return float(np.corrcoef(a_, b_)[0, 1]) if a_.std() > 0 and b_.std() > 0 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with iterate/round-<k>/ (a teacher-free run)")
    p.add_argument("--horizons", default="20,50,100", help="steps of the short dream rollouts, comma-separated")
    p.add_argument("--rollouts", type=int, default=300, help="short rollouts per candidate")
    p.add_argument("--seed", type=int, default=7, help="seed of the short rollouts' draws")
    a = p.parse_args()

    from vmc.checkpoints import load_checkpoint, load_mdn
    from vmc.dream import load_dream
    from vmc.evolve import short_dream_scores

    torch.set_num_threads(2)  # this machine's cores; the dream's batches are small enough that more do not pay
    horizons = [int(h) for h in a.horizons.split(",")]
    cfg = json.loads((a.run / "iterate" / "config.json").read_text())["config"]
    rules = ["whole race"] + [f"{h} steps" for h in horizons]
    rows = []
    print(f"\nwithin-round r against the real score; {a.rollouts} rollouts per horizon, temperature {cfg['temperature']}\n")
    print("| round | candidates | " + " | ".join(rules) + " |")
    print("|---|---|" + "---|" * len(rules))
    k = 1
    # Finished rounds only: a round still evolving has only its generation-0 evaluation.
    while (folder := a.run / "iterate" / f"round-{k}").joinpath("round.json").exists():
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
        real = [c["mean"] for c in cands.values()]
        rows.append({"real": real, "mean": cands["mean"]["mean"], **scores})
        print(f"| {k} | {len(real)} | " + " | ".join(f"{corr(scores[r], real):.2f}" for r in rules) + " |")
        k += 1
    if not rows:
        raise SystemExit(f"no iterate rounds with evolve.pt under {a.run}")
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
