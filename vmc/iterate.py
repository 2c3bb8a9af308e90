"""``python -m vmc.iterate``: World Models' iterative procedure, N rounds of collect → retrain → evolve in the dream.

Round 1 evolves the controller in the dream of the given MDN-RNN, starting from ``--start``. Every later
round first drives ``--episodes`` new real episodes with the previous round's controller (plus exploration
noise), encodes old + new episodes with the VAE, goes on training the MDN-RNN from the previous round's
weights on all of them, and evolves in the new dream from the previous controller. Each round ends with
the controller scored in the real game on ``--eval-seeds`` seeds; ``<out>/rounds.csv`` holds one row per
round (dream score and real score side by side).

Everything a round writes lives in ``<run>/iterate/round-<k>/`` and every step is skipped when its output is
complete, so an interrupted run continues where it stopped. The collection is ``<run>/iterate/data``: the base
collection's shards hard-linked (never written to) plus the new rounds' shards.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Optional

from vmc import cli, records
from vmc.checkpoints import load_checkpoint, vae_from
from vmc.cli import Config, check_correlation, check_non_negative, check_positive, check_share
from vmc.cluster import check_cluster
from vmc.runs import RUNS, SEED_STRIDE, write_config
from vmc.sim.env import REWARDS

if TYPE_CHECKING:
    from vmc.collect import CollectConfig
    from vmc.evolve import EvolveConfig

log = logging.getLogger("vmc.iterate")


@dataclass
class IterateConfig(Config):
    """World Models' iterative procedure: rounds of collect with the controller, retrain the MDN-RNN, evolve in the dream."""

    run: str = str(RUNS / "lighthouse-small")
    """Run folder: its ``vae.pt``, ``mdn.pt`` and ``latents.h5`` start round 1; rounds go to ``iterate/``."""
    rounds: int = 3
    """Rounds of collect → retrain → evolve in the dream."""
    data: str = "data/lighthouse"
    """Base collection (its shards are linked, not copied or changed)."""
    start: str = "fit"
    """Round 1's starting controller: ``fit``, ``zeros``, ``dagger`` or a controller checkpoint."""
    tracks: list[str] = field(default_factory=lambda: ["lighthouse"])
    """Race tracks."""
    workers: int = 0
    """Game processes (collection and real-game scores; 0: one per core this process may run on)."""
    cluster: str = "local"
    """Where the game workers run: ``local`` (processes on this machine), ``ray`` (join the running Ray cluster of
    ``RAY_ADDRESS`` or ``ray start``), ``ray-local`` (start a private Ray here) or a Ray address (``HOST:6379``,
    ``ray://HOST:10001``); on Ray, ``--workers 0`` is one worker per CPU of the cluster."""
    episodes: int = 10
    """New real episodes per round (driven by the previous round's controller)."""
    episode_steps: int = 0
    """Step limit of a collected episode (0: the races' ``--max-steps``, so that the collection holds whole laps: a
    limit below a lap leaves the rest of the track out of the VAE's, the MDN-RNN's and the dream's data)."""
    explore_noise: float = 0.1
    """Exploration noise on steering and throttle while collecting (unless ``--collect-noise``) and in the real and
    dream evaluations."""
    collect_noise: Optional[float] = None
    """The exploration noise's std in the rounds' collections only (None: ``--explore-noise``); the real and dream
    evaluations keep ``--explore-noise``."""
    collect_correlation: float = 0.0
    """The collections' noise correlated from step to step (``vmc.collect --controller-correlation``: 0.9 holds a
    deviation for about 10 steps), so that the controller's races also try other lines where it always fails."""
    dream_noise: Optional[float] = None
    """That noise's std in the dream rollouts that score CMA-ES's candidates (None: ``--explore-noise``; see
    ``vmc.evolve --dream-noise``)."""
    reward: str = "best"
    """The reward the rounds' collections record, that the MDN-RNN learns to predict (``vmc.collect --reward``):
    ``best`` or ``signed``; the base collection's must be the same. Real scores stay the best progress's; under
    ``signed`` a dream's score is the progress where it ended (the same for a lap)."""
    vae_epochs: int = 0
    """VAE epochs per round from round 2, from the previous round's VAE on the grown collection, so that z also
    learns the parts of the track the first data never reached (0: the run's VAE in every round)."""
    mdn_epochs: int = 4
    """MDN-RNN epochs per round."""
    mdn_steps: int = 100
    """MDN-RNN optimiser steps per epoch."""
    mdn_seq_len: int = 32
    """MDN-RNN training window in steps."""
    done_weight: float = 1.0
    """Weight of episode endings in the MDN-RNN's done loss (see ``vmc.train_mdn --done-weight``)."""
    temperature: float = 1.15
    """Dream temperature."""
    dream_stuck_steps: int = 60
    """The real env's ``stuck`` rule in the dream (see ``vmc.evolve --dream-stuck-steps``; 0: off)."""
    dream_min_progress: float = 2.0
    """Predicted progress a dream rollout must make every ``--dream-stuck-steps`` steps."""
    dream_done: Literal["head", "stuck"] = "head"
    """What ends a dream race before its lap: the done head or the stuck rule (``head``), or the stuck rule alone
    (``stuck``); in CMA-ES's fitness and the evaluations' dream races alike (see ``vmc.evolve --dream-done``)."""
    dream_eval_rollouts: int = 0
    """Dream races per candidate at a round's evaluation, whose best dream score picks the round's controller
    under ``--keep best`` without ``--dream-pick-steps`` (0: ``--eval-seeds``; see ``vmc.evolve --dream-eval-rollouts``)."""
    eval_population: int = 6
    """Candidates of each round's last generation scored in the real game and the dream besides the best and the
    CMA-ES mean: the points of ``dream_vs_real.png``."""
    popsize: int = 64
    """CMA-ES population."""
    rollouts: int = 16
    """Dream rollouts per candidate."""
    generations: int = 30
    """CMA-ES generations per round."""
    dream_steps: int = 500
    """Steps of a dream rollout."""
    race_start: float = 0.5
    """Share of CMA-ES's dream rollouts that start at a race start, the rest anywhere in the recorded episodes
    (``vmc.evolve --race-start``); 0 with a short ``--dream-steps``: fitness from short rollouts from the states the
    real races visited. The round's evaluation stays whole dream races from the start."""
    sigma0: float = 0.1
    """Initial CMA-ES step size of each round."""
    dream_pick_steps: int = 0
    """Pick each round's controller by dream rollouts of this many steps from anywhere in the recorded episodes
    instead of by whole dream races (0; 300 rollouts a candidate; see ``vmc.evolve --dream-pick-steps``)."""
    keep: Literal["best", "mean"] = "best"
    """Each round's controller: ``best``, the candidate with the best dream score at the round's evaluations, or
    ``mean``, the CMA-ES mean at its end (``vmc.evolve --keep``); the next round goes on from it."""
    controller_hidden: int = 0
    """Hidden tanh units of the controller (0: World Models' linear one; see ``vmc.evolve --controller-hidden``)."""
    carry: bool = True
    """Start each round from the previous controller moved onto the retrained MDN-RNN's h (``vmc.dagger.carry_over``:
    least squares of its own actions); off: from the previous controller as it is, whose weights read the old h."""
    eval_seeds: int = 10
    """Real-game seeds of each round's final score."""
    until_laps: int = 0
    """Stop after the first round whose controller laps in at least this many of its ``--eval-seeds`` noisy races on
    every track and in every noise-free race: the rounds go on "until the real game laps", at most ``--rounds`` (0:
    all ``--rounds``). Those races are the round's evaluation, never CMA-ES's fitness."""
    max_steps: int = 1000
    """Step limit of a real-game race."""
    seed: int = 0
    """Seed of everything random."""
    force: bool = False
    """Start over even if ``iterate/`` holds rounds made with another config."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"run", "rounds", "workers", "cluster", "until_laps"})

    def validate(self) -> None:
        check_positive(rounds=self.rounds, episodes=self.episodes,
                       mdn_epochs=self.mdn_epochs, mdn_steps=self.mdn_steps, mdn_seq_len=self.mdn_seq_len,
                       popsize=self.popsize, rollouts=self.rollouts, generations=self.generations,
                       dream_steps=self.dream_steps, eval_seeds=self.eval_seeds, max_steps=self.max_steps)
        check_non_negative(workers=self.workers, episode_steps=self.episode_steps, explore_noise=self.explore_noise,
                           dream_noise=self.dream_noise or 0.0, collect_noise=self.collect_noise or 0.0,
                           eval_population=self.eval_population, controller_hidden=self.controller_hidden,
                           dream_eval_rollouts=self.dream_eval_rollouts, dream_stuck_steps=self.dream_stuck_steps,
                           dream_pick_steps=self.dream_pick_steps,
                           dream_min_progress=self.dream_min_progress)
        check_share(race_start=self.race_start)
        check_cluster(self.cluster)
        if not 0 <= self.until_laps <= self.eval_seeds:
            raise ValueError(f"--until-laps must be between 0 and --eval-seeds ({self.eval_seeds}), got {self.until_laps}")
        check_correlation(collect_correlation=self.collect_correlation)
        if self.dream_done != "head" and not self.dream_stuck_steps:
            raise ValueError("--dream-done stuck ends dream races by the stuck rule alone: it needs --dream-stuck-steps above 0")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown --reward {self.reward!r}; choose one of {', '.join(REWARDS)}")
        recorded = recorded_reward(Path(self.data))
        if recorded not in (None, self.reward):
            raise ValueError(f"--reward {self.reward}: the base collection {self.data} recorded the {recorded!r} "
                             "reward; collect it again with vmc.collect --reward, or use its reward")
        # Round 1 dreams in the run's own MDN-RNN, which learnt the reward of the collection its latents came from.
        latents = Path(self.run) / "latents.h5"
        if latents.is_file():
            from vmc.errors import CheckpointError
            from vmc.latents import latents_info

            try:
                source = str(latents_info(latents).get("data", ""))
            except CheckpointError:
                source = ""  # named by the round that reads it
            recorded = recorded_reward(Path(source)) if source else None
            if recorded not in (None, self.reward):
                raise ValueError(f"--reward {self.reward}: {self.run}'s models learnt from {source}, which recorded "
                                 f"the {recorded!r} reward; train them on a collection of --reward {self.reward} "
                                 "(vmc.main --teacher-free --reward) or use its reward")
        if self.keep not in ("best", "mean"):
            raise ValueError(f"--keep must be best or mean, got {self.keep!r}")

    def collect_config(self, data: Path, episodes: int, controller: str) -> CollectConfig:
        """The collection in ``data`` grown to ``episodes`` episodes, the new ones raced by ``controller`` with the
        collections' exploration noise."""
        from vmc.collect import CollectConfig

        return CollectConfig(out=str(data), tracks=list(self.tracks), episodes=episodes, workers=self.workers,
                             cluster=self.cluster, policy="controller", controller=controller,
                             controller_noise=self.explore_noise if self.collect_noise is None else self.collect_noise,
                             controller_correlation=self.collect_correlation, seed=self.seed * SEED_STRIDE + 1_000_000,
                             max_steps=self.episode_steps or self.max_steps, reward=self.reward)

    def evolve_config(self, k: int, rd: Path, vae: Path, mdn: Path, latents: Path, init: str) -> EvolveConfig:
        """Round ``k``'s CMA-ES in the dream of ``mdn`` over ``latents``, from controller ``init``, in folder ``rd``:
        its fitness from this config's dream sizes, its evaluations (real seeds and the dream's pick) at its end."""
        from vmc.evolve import EvolveConfig

        return EvolveConfig(
            run=str(rd), vae=str(vae), mdn=str(mdn), latents=str(latents), tracks=list(self.tracks), workers=self.workers,
            cluster=self.cluster, popsize=self.popsize, rollouts=self.rollouts, generations=self.generations,
            sigma0=self.sigma0, init=init, max_steps=self.max_steps, controller_hidden=self.controller_hidden,
            keep=self.keep, dream_pick_steps=self.dream_pick_steps, eval_every=self.generations,
            eval_rollouts=self.eval_seeds, seed=self.seed + k, dream=True, temperature=self.temperature,
            dream_steps=self.dream_steps, race_start=self.race_start, action_noise=self.explore_noise,
            dream_noise=self.dream_noise,
            dream_done=self.dream_done,
            dream_stuck_steps=self.dream_stuck_steps, dream_min_progress=self.dream_min_progress,
            eval_population=self.eval_population, dream_eval_rollouts=self.dream_eval_rollouts,
            resume=(rd / "controller" / "evolve.pt").exists())

    @property
    def out(self) -> Path:
        return Path(self.run) / "iterate"


def recorded_reward(collection: Path) -> Optional[str]:
    """The reward a collection folder recorded (``vmc.collect --reward``; ``best`` before there was a choice), or
    None where it has no readable manifest (vmc.collect names that, with its fix, when it reads the folder)."""
    try:
        return (json.loads((collection / "manifest.json").read_text()).get("collect_config") or {}).get("reward", "best")
    except (OSError, ValueError, AttributeError):
        return None


def link_collection(base: Path, dest: Path) -> None:
    """``dest`` holds hard links (copies across file systems) of ``base``'s shards; new shards go beside them."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for shard in sorted(base.glob("shard-*.h5")):
        target = dest / shard.name
        if not target.exists():
            try:
                os.link(shard, target)
            except OSError:
                shutil.copy2(shard, target)


def run_round(cfg: IterateConfig, k: int, previous: Optional[dict]) -> dict:
    """Round ``k`` (1-based); ``previous`` is round k-1's result (its controller, MDN-RNN and latents). A finished
    round's row is kept in ``round-<k>/round.json`` and returned from there."""
    from vmc import evolve, train_mdn, train_vae
    from vmc.collect import Collector
    from vmc.latents import latents_info, write_latents
    from vmc.models import MDNRNNConfig, VAEConfig

    run = Path(cfg.run)
    rd = cfg.out / f"round-{k}"
    if (rd / "round.json").exists():
        return json.loads((rd / "round.json").read_text())
    rd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if previous is None:
        vae, mdn, latents, init = run / "vae.pt", run / "mdn.pt", run / "latents.h5", cfg.start
        episodes = _episodes(Path(cfg.data))
    else:
        data = cfg.out / "data"
        link_collection(Path(cfg.data), data)
        base = len(_episodes(Path(cfg.data)))
        Collector(cfg.collect_config(data, base + (k - 1) * cfg.episodes, previous["controller"])).run()
        episodes = _episodes(data)
        latents, vae = rd / "latents.h5", Path(previous.get("vae", run / "vae.pt"))
        if cfg.vae_epochs:
            arch = VAEConfig(**load_checkpoint(vae, "vae")["config"]["model"])
            vcfg = train_vae.TrainVAEConfig(data=str(data), run=str(rd), epochs=cfg.vae_epochs, init=str(vae), model=arch,
                                            seed=cfg.seed + k, encode=False, resume=(rd / "vae.last.pt").exists())
            train_vae.train(vcfg)
            vae = vcfg.out
        vae_ck = load_checkpoint(vae, "vae")
        info = latents_info(latents) if latents.exists() else {}
        if not (info.get("episodes") == len(episodes) and info.get("vae") == vae_ck["fingerprint"]):
            write_latents(vae_from(vae_ck), vae_ck["fingerprint"], data, latents)
        arch = MDNRNNConfig(**load_checkpoint(Path(previous["mdn"]), "mdn")["config"]["model"])
        mcfg = train_mdn.TrainMDNConfig(run=str(rd), latents=str(latents), vae=str(vae), epochs=cfg.mdn_epochs,
                                        steps_per_epoch=cfg.mdn_steps, seq_len=cfg.mdn_seq_len, init=previous["mdn"],
                                        seed=cfg.seed + k, model=arch, video=False, done_weight=cfg.done_weight,
                                        resume=(rd / "mdn.last.pt").exists())
        train_mdn.train(mcfg)
        mdn, init = mcfg.out, previous["controller"]
        if cfg.carry:
            old_latents = Path(previous["latents"]) if cfg.vae_epochs else latents  # the old z, where it changed
            init = str(carry_controller(Path(previous["controller"]), vae, mdn, old_latents, latents, rd / "carried.pt"))
    ecfg = cfg.evolve_config(k, rd, vae, mdn, latents, init)
    summary = evolve.evolve(ecfg)
    # The evaluation whose pick is best.pt: the last one evolve saved from (runs from before that flag: the last
    # under --keep mean, else the highest dream score, the earliest on a tie, as evolve kept it then).
    evals = summary["evals"]
    saved = [e for e in evals if e.get("saved")]
    ev = (saved[-1] if saved else evals[-1] if cfg.keep == "mean"
          else max(evals, key=lambda e: e["dream_mean"]))
    start_ev = evals[0]
    row = {"round": k, "episodes": len(episodes), "steps": int(sum(e.length for e in episodes)), "vae": str(vae), "mdn": str(mdn),
           "latents": str(latents), "controller": str(ecfg.out / "best.pt"), "start_real": start_ev["mean"],
           "start_dream": start_ev.get("dream_mean"), "dream": ev.get("dream_mean"), "dream_std": ev.get("dream_std"),
           "dream_check": ev.get("dream_check"), "dream_check_std": ev.get("dream_check_std"),
           "dream_pick": ev.get("dream_pick"),
           "real": ev["mean"], "real_std": ev["std"], "noise_free": ev["noise_free"], "laps": ev["laps"],
           "races": ev["races"], "noise_free_laps": ev.get("noise_free_laps"),
           "noisy_laps_per_track": ev.get("noisy_laps_per_track"), "kept": ev["which"], "seconds": time.perf_counter() - t0,
           "points": [{"round": k, "generation": e["generation"], "candidate": name, "dream": c["dream_mean"],
                       "dream_pick": c.get("dream_pick"), "real": c["mean"]}
                      for e in evals for name, c in e.get("candidates", {}).items()]}
    (rd / "round.json").write_text(json.dumps(row, indent=2))
    return row


def carry_controller(controller: Path, vae: Path, mdn: Path, old_latents: Path, latents: Path, out: Path) -> Path:
    """``out``: ``controller`` moved onto the VAE ``vae`` and MDN-RNN ``mdn`` (:func:`vmc.dagger.carry_over` over
    the episodes of ``old_latents``, its own models' latent file; ``latents``: the new VAE's), with ``vae`` and
    ``mdn`` embedded; kept when already there."""
    from vmc.checkpoints import WorldModels, load_dream_controller, load_mdn, save_controller
    from vmc.dagger import carry_over

    if not out.exists():
        ck, old = load_dream_controller(controller)
        params = carry_over(ck["params"], old.mdn(), load_mdn(mdn), old_latents, latents)
        save_controller(out, WorldModels.load(vae, mdn), params,
                        {"carried_from": str(controller), "tracks": ck.get("tracks"), "track": ck.get("track"),
                         "max_steps": ck.get("max_steps")}, ck.get("config"))
    return out


def _episodes(folder: Path) -> list:
    from vmc.data import RolloutDataset

    with RolloutDataset(folder, "all") as ds:
        return ds.episodes


def dream_vs_real(rows: list[dict], out: Path) -> tuple[Optional[float], Optional[float]]:
    """Every candidate evaluated in the rounds, its dream score against its real score: ``dream_vs_real.csv``
    and ``dream_vs_real.png`` in ``out``. Returns Pearson's r over all candidates, which the rounds' levels drive,
    and its mean within a round over the rounds with 3 or more candidates, which is what a round's pick depends on
    (each None where no round or set of points has 3 points with spread)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def pearson(a: np.ndarray, b: np.ndarray) -> Optional[float]:
        return float(np.corrcoef(a, b)[0, 1]) if len(a) >= 3 and a.std() > 0 and b.std() > 0 else None

    points = [p for r in rows for p in r["points"]]
    with open(out / "dream_vs_real.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["round", "generation", "candidate", "dream", "dream_pick", "real"])
        w.writeheader()
        w.writerows(points)
    d, real = np.array([p["dream"] for p in points], float), np.array([p["real"] for p in points], float)
    rounds = np.array([p["round"] for p in points], int)
    r = pearson(d, real)
    within = [x for k in sorted(set(rounds.tolist())) if (x := pearson(d[rounds == k], real[rounds == k])) is not None]
    r_within = float(np.mean(within)) if within else None
    fig, ax = plt.subplots(figsize=(5.6, 5))
    # One colour scale for all rounds: a categorical palette repeats its colours after ten rounds.
    dots = ax.scatter(d, real, c=rounds, cmap="viridis", s=18)
    if len(points):
        fig.colorbar(dots, ax=ax, label="round")
        lo, hi = float(min(d.min(), real.min())), float(max(d.max(), real.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="real = dream")
        ax.legend(fontsize=7)
    ax.set_xlabel("dream score (mean over the evaluation's dream rollouts)")
    ax.set_ylabel("real score (mean over noisy seeds)")
    ax.set_title("dream vs real per evaluated candidate"
                 + (f"\nr = {r:.2f} over all" if r is not None else "")
                 + (f", {r_within:.2f} within a round (mean of {len(within)})" if r_within is not None else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "dream_vs_real.png", dpi=100)
    plt.close(fig)
    return r, r_within


TABLE = ["round", "episodes", "steps", "dream", "dream_std", "dream_check", "dream_check_std", "dream_pick", "real", "real_std",
         "noise_free", "laps", "races", "noise_free_laps", "kept", "seconds", "start_dream", "start_real"]
"""The columns of ``rounds.csv``."""


def iterate(cfg: IterateConfig) -> list[dict]:
    """Run (or continue) all rounds; returns their rows, also in ``<run>/iterate/rounds.csv``, with the
    dream-vs-real points in ``dream_vs_real.csv`` / ``.png``."""
    out = cfg.out
    write_config(out, cfg.record(), cfg.RESUME_FREE, cfg.force, cfg.defaults())  # refuses a changed config on resume
    rows: list[dict] = []
    for k in range(1, cfg.rounds + 1):
        rows.append(run_round(cfg, k, rows[-1] if rows else None))
        r = rows[-1]
        fresh = "" if r.get("dream_check") is None else f" ({r['dream_check']:.1f} on fresh draws)"
        log.info("round %d: %d episodes (%d steps), dream %.1f ± %.1f%s, real %.1f ± %.1f over %d seeds (%d/%d laps, "
                 "%.1f without noise), %.0f s", k, r["episodes"], r["steps"], r["dream"], r["dream_std"], fresh,
                 r["real"], r["real_std"], cfg.eval_seeds, r["laps"], r["races"], r["noise_free"], r["seconds"])
        records.scalars(str(out), "iterate", {c: r.get(c) for c in TABLE}, k)  # rounds from before a column: None
        with open(out / "rounds.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=TABLE, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        corr, within = dream_vs_real(rows, out)
        log.info("dream vs real over %d evaluated candidates: r = %s, within a round %s",
                 sum(len(x["points"]) for x in rows), "n/a" if corr is None else f"{corr:.2f}",
                 "n/a" if within is None else f"{within:.2f} (mean)")
        if cfg.until_laps and lapped(r, cfg.until_laps, len(cfg.tracks)):
            log.info("round %d lapped in %d of %d noisy races and every noise-free one (--until-laps %d): done",
                     k, r["laps"] - r["noise_free_laps"], r["races"] - len(cfg.tracks), cfg.until_laps)
            break
    else:
        if cfg.until_laps:
            log.warning("no round of %d lapped %d of its noisy races on every track and every noise-free race "
                        "(--until-laps %d)", cfg.rounds, cfg.until_laps, cfg.until_laps)
    return rows


def lapped(row: dict, laps: int, tracks: int) -> bool:
    """Whether a round's controller lapped in at least ``laps`` noisy races on each track (``noisy_laps_per_track``)
    and in all ``tracks`` noise-free races. False for rounds of a vmc version that did not count them apart."""
    clean, per_track = row.get("noise_free_laps"), row.get("noisy_laps_per_track")
    return clean == tracks and bool(per_track) and min(per_track.values()) >= laps


def print_table(rows: list[dict]) -> None:
    """The rounds as a table on stdout."""
    print(f"\n{'round':>5} {'episodes':>8} {'steps':>7} {'dream (kept)':>15} {'dream (fresh)':>15} {'real (noisy)':>15} "
          f"{'noise-free':>10} {'laps':>7} {'s':>6}")
    for r in rows:
        fresh = (f"{r['dream_check']:>8.1f} ± {r['dream_check_std']:<5.1f}" if r.get("dream_check") is not None
                 else f"{'-':>15}")
        print(f"{r['round']:>5} {r['episodes']:>8} {r['steps']:>7} {r['dream']:>8.1f} ± {r['dream_std']:<5.1f} {fresh} "
              f"{r['real']:>8.1f} ± {r['real_std']:<5.1f} {r['noise_free']:>10.1f} {r['laps']:>3}/{r['races']:<3} "
              f"{r['seconds']:>6.0f}")


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(IterateConfig, argv, "python -m vmc.iterate")

    def body() -> None:
        print_table(iterate(cfg))

    return cli.run("vmc.iterate", body)


if __name__ == "__main__":
    raise SystemExit(main())
