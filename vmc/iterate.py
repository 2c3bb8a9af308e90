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
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from vmc import cli
from vmc.checkpoints import load_checkpoint, load_vae
from vmc.cli import Config, check_non_negative, check_positive
from vmc.cluster import check_cluster
from vmc.runs import RUNS, write_config

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
    """Game processes (collection and real-game scores; 0: one per core)."""
    cluster: str = "local"
    """Where the game workers run: ``local`` (processes on this machine), ``ray`` (join the running Ray cluster of
    ``RAY_ADDRESS`` or ``ray start``), ``ray-local`` (start a private Ray here) or a Ray address (``HOST:6379``,
    ``ray://HOST:10001``); on Ray, ``--workers 0`` is one worker per CPU of the cluster."""
    episodes: int = 10
    """New real episodes per round (driven by the previous round's controller)."""
    episode_steps: int = 500
    """Step limit of a collected episode."""
    explore_noise: float = 0.1
    """Exploration noise on steering and throttle while collecting."""
    mdn_epochs: int = 4
    """MDN-RNN epochs per round."""
    mdn_steps: int = 100
    """MDN-RNN optimiser steps per epoch."""
    mdn_seq_len: int = 32
    """MDN-RNN training window in steps."""
    temperature: float = 1.15
    """Dream temperature."""
    popsize: int = 64
    """CMA-ES population."""
    rollouts: int = 16
    """Dream rollouts per candidate."""
    generations: int = 30
    """CMA-ES generations per round."""
    dream_steps: int = 500
    """Steps of a dream rollout."""
    sigma0: float = 0.1
    """Initial CMA-ES step size of each round."""
    eval_seeds: int = 10
    """Real-game seeds of each round's final score."""
    max_steps: int = 1000
    """Step limit of a real-game race."""
    seed: int = 0
    """Seed of everything random."""
    force: bool = False
    """Start over even if ``iterate/`` holds rounds made with another config."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"run", "rounds", "workers", "cluster"})

    def validate(self) -> None:
        check_positive(rounds=self.rounds, episodes=self.episodes, episode_steps=self.episode_steps,
                       mdn_epochs=self.mdn_epochs, mdn_steps=self.mdn_steps, mdn_seq_len=self.mdn_seq_len,
                       popsize=self.popsize, rollouts=self.rollouts, generations=self.generations,
                       dream_steps=self.dream_steps, eval_seeds=self.eval_seeds, max_steps=self.max_steps)
        check_non_negative(workers=self.workers, explore_noise=self.explore_noise)
        check_cluster(self.cluster)

    @property
    def out(self) -> Path:
        return Path(self.run) / "iterate"


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
    """Round ``k`` (1-based); ``previous`` is round k-1's result (its controller, MDN-RNN and latents)."""
    from vmc import evolve, train_mdn
    from vmc.collect import CollectConfig, Collector
    from vmc.latents import latents_info, write_latents
    from vmc.models import MDNRNNConfig

    run = Path(cfg.run)
    rd = cfg.out / f"round-{k}"
    rd.mkdir(parents=True, exist_ok=True)
    if previous is None:
        mdn, latents, init, episodes = run / "mdn.pt", run / "latents.h5", cfg.start, None
    else:
        data = cfg.out / "data"
        link_collection(Path(cfg.data), data)
        base = len(_episodes(Path(cfg.data)))
        m = Collector(CollectConfig(out=str(data), tracks=list(cfg.tracks), episodes=base + (k - 1) * cfg.episodes,
                                    workers=cfg.workers, cluster=cfg.cluster, policy="controller", controller=previous["controller"],
                                    controller_noise=cfg.explore_noise, seed=cfg.seed * 1_000_003 + 1_000_000,
                                    max_steps=cfg.episode_steps)).run()
        episodes = m["episodes"]
        latents = rd / "latents.h5"
        vae_ck = load_checkpoint(run / "vae.pt", "vae")
        if not (latents.exists() and latents_info(latents).get("episodes") == episodes):
            write_latents(load_vae(run / "vae.pt"), vae_ck["fingerprint"], data, latents)
        arch = MDNRNNConfig(**load_checkpoint(Path(previous["mdn"]), "mdn")["config"]["model"])
        mcfg = train_mdn.TrainMDNConfig(run=str(rd), latents=str(latents), vae=str(run / "vae.pt"), epochs=cfg.mdn_epochs,
                                        steps_per_epoch=cfg.mdn_steps, seq_len=cfg.mdn_seq_len, init=previous["mdn"],
                                        seed=cfg.seed + k, model=arch, video=False, resume=(rd / "mdn.last.pt").exists())
        train_mdn.train(mcfg, progress=False)
        mdn, init = mcfg.out, previous["controller"]
    ecfg = evolve.EvolveConfig(run=str(rd), vae=str(run / "vae.pt"), mdn=str(mdn), latents=str(latents),
                               tracks=list(cfg.tracks), workers=cfg.workers, cluster=cfg.cluster, popsize=cfg.popsize, rollouts=cfg.rollouts,
                               generations=cfg.generations, sigma0=cfg.sigma0, init=init, max_steps=cfg.max_steps,
                               eval_every=cfg.generations, eval_rollouts=cfg.eval_seeds, seed=cfg.seed + k, dream=True,
                               temperature=cfg.temperature, dream_steps=cfg.dream_steps, action_noise=cfg.explore_noise,
                               resume=(rd / "controller" / "evolve.pt").exists())
    summary = evolve.evolve(ecfg, progress=False)
    ev = summary["evals"][-1]
    start_ev = summary["evals"][0]
    return {"round": k, "episodes": episodes, "mdn": str(mdn), "latents": str(latents),
            "controller": str(ecfg.out / "best.pt"), "start_real": start_ev["mean"],
            "start_dream": start_ev.get("dream_mean"), "dream": ev.get("dream_mean"), "dream_std": ev.get("dream_std"),
            "real": ev["mean"], "real_std": ev["std"], "noise_free": ev["noise_free"], "laps": ev["laps"],
            "kept": ev["which"]}


def _episodes(folder: Path) -> list:
    from vmc.data import RolloutDataset

    with RolloutDataset(folder, "all") as ds:
        return ds.episodes


def iterate(cfg: IterateConfig) -> list[dict]:
    """Run (or continue) all rounds; returns their rows, also in ``<run>/iterate/rounds.csv``."""
    out = cfg.out
    write_config(out, cfg.record(), cfg.RESUME_FREE, cfg.force)  # refuses a changed config on resume
    rows: list[dict] = []
    for k in range(1, cfg.rounds + 1):
        rows.append(run_round(cfg, k, rows[-1] if rows else None))
        r = rows[-1]
        log.info("round %d: dream %.1f ± %.1f, real %.1f ± %.1f over %d seeds (%d laps, %.1f without noise)", k, r["dream"],
                 r["dream_std"], r["real"], r["real_std"], cfg.eval_seeds, r["laps"], r["noise_free"])
        with open(out / "rounds.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(IterateConfig, argv, "python -m vmc.iterate")

    def body() -> None:
        rows = iterate(cfg)
        print(f"\n{'round':>5} {'episodes':>8} {'dream':>15} {'real':>15} {'laps':>5}")
        for r in rows:
            print(f"{r['round']:>5} {str(r['episodes'] or '-'):>8} {r['dream']:>8.1f} ± {r['dream_std']:<5.1f} "
                  f"{r['real']:>8.1f} ± {r['real_std']:<5.1f} {r['laps']:>5}")

    return cli.run("vmc.iterate", body)


if __name__ == "__main__":
    raise SystemExit(main())
