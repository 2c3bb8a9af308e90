"""``python -m vmc.iterate``: World Models' iterative procedure, N rounds of collect → retrain → evolve in the dream.

Round 1 evolves the controller in the dream of the given MDN-RNN, starting from ``--start``. Every later
round first drives ``--episodes`` new real episodes with the previous round's controller (plus exploration
noise), encodes old + new episodes with the VAE, goes on training the MDN-RNN from the previous round's
weights on all of them, and evolves in the new dream from the previous controller. Each round ends with
the controller scored in the real game on ``--eval-seeds`` seeds; ``<out>/rounds.csv`` holds one row per
round (dream score and real score side by side).

Everything a round writes lives in ``<out>/round-<k>/`` and every step is skipped when its output is
complete, so an interrupted run continues where it stopped. The collection is ``<out>/data``: the base
collection's shards hard-linked (never written to) plus the new rounds' shards.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vmc.training import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger("vmc.iterate")


@dataclass
class IterateConfig:
    """What ``python -m vmc.iterate`` does; saved beside its results."""

    rounds: int = 3
    """Rounds of collect → retrain → evolve in the dream."""
    data: str = "data/lighthouse"
    """Base collection (its shards are linked, not copied or changed)."""
    vae: str = "checkpoints/vae.pt"
    """VAE (kept fixed: it encodes every round's frames)."""
    mdn: str = "checkpoints/mdn.pt"
    """MDN-RNN of round 1 (later rounds go on training from the previous round's)."""
    latents: str = "checkpoints/latents.h5"
    """Latent file of the base collection (round 1's dream starts)."""
    start: str = "fit"
    """Round 1's starting controller: ``fit``, ``zeros``, ``dagger`` or a controller checkpoint."""
    out: str = "checkpoints/iterate"
    """Output folder."""
    track: str = "lighthouse"
    """Race track."""
    workers: int = max(1, os.cpu_count() or 1)
    """Game processes (collection and real-game scores)."""
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
    from vmc import evolve, train_mdn, train_vae
    from vmc.collect import CollectConfig, Collector
    from vmc.models import MDNRNNConfig

    out = Path(cfg.out)
    rd = out / f"round-{k}"
    rd.mkdir(parents=True, exist_ok=True)
    if previous is None:
        mdn, latents, init, episodes = Path(cfg.mdn), Path(cfg.latents), cfg.start, None
    else:
        data = out / "data"
        link_collection(Path(cfg.data), data)
        base = len(_episodes(Path(cfg.data)))
        m = Collector(CollectConfig(out=str(data), tracks=[cfg.track], episodes=base + (k - 1) * cfg.episodes,
                                    workers=cfg.workers, policy="controller", controller=previous["controller"],
                                    controller_noise=cfg.explore_noise, seed=cfg.seed * 1_000_003 + 1_000_000,
                                    max_steps=cfg.episode_steps)).run()
        episodes = m["episodes"]
        latents = rd / "latents.h5"
        if not latents.exists():
            train_vae.encode_dataset(Path(cfg.vae), data, latents)
        mdn = rd / "mdn.pt"
        arch = MDNRNNConfig(**load_checkpoint(Path(previous["mdn"]), "mdn")["config"]["model"])
        mcfg = train_mdn.TrainMDNConfig(latents=str(latents), vae=cfg.vae, out=str(mdn), epochs=cfg.mdn_epochs,
                                        steps_per_epoch=cfg.mdn_steps, seq_len=cfg.mdn_seq_len, init=previous["mdn"],
                                        seed=cfg.seed + k, model=arch)
        last = Path(str(mdn).replace(".pt", ".last.pt"))
        if not (last.exists() and load_checkpoint(last, "mdn")["epoch"] >= cfg.mdn_epochs):
            train_mdn.train(mcfg, resume=last.exists())
        init = previous["controller"]
    ecfg = evolve.EvolveConfig(vae=cfg.vae, mdn=str(mdn), latents=str(latents), out=str(rd / "controller"),
                               track=cfg.track, workers=cfg.workers, popsize=cfg.popsize, rollouts=cfg.rollouts,
                               generations=cfg.generations, sigma0=cfg.sigma0, init=init, max_steps=cfg.max_steps,
                               eval_every=cfg.generations, eval_rollouts=cfg.eval_seeds, seed=cfg.seed + k, dream=True,
                               temperature=cfg.temperature, dream_steps=cfg.dream_steps, action_noise=cfg.explore_noise)
    state = Path(ecfg.out) / "evolve.pt"
    summary = evolve.evolve(ecfg, resume=state.exists())
    ev = summary["evals"][-1]
    start_ev = summary["evals"][0]
    return {"round": k, "episodes": episodes, "mdn": str(mdn), "latents": str(latents),
            "controller": str(Path(ecfg.out) / "best.pt"), "start_real": start_ev["mean"],
            "start_dream": start_ev.get("dream_mean"), "dream": ev.get("dream_mean"), "dream_std": ev.get("dream_std"),
            "real": ev["mean"], "real_std": ev["std"], "noise_free": ev["noise_free"], "laps": ev["laps"],
            "kept": ev["which"]}


def _episodes(folder: Path) -> list:
    from vmc.data import RolloutDataset

    with RolloutDataset(folder, "all") as ds:
        return ds.episodes


def iterate(cfg: IterateConfig) -> list[dict]:
    """Run (or continue) all rounds; returns their rows, also in ``<out>/rounds.csv``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "iterate.pt", "iterate", {}, cfg)  # the config (and its JSON) beside the results
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


def parse_args(argv: Optional[list[str]] = None) -> IterateConfig:
    d = IterateConfig()
    p = argparse.ArgumentParser(prog="python -m vmc.iterate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f, v in vars(d).items():
        p.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    return IterateConfig(**vars(p.parse_args(argv)))


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = parse_args(argv)
    try:
        rows = iterate(cfg)
    except (CheckpointError, ValueError) as err:
        print(f"vmc.iterate: error: {err}", file=sys.stderr)
        return 1
    print(f"\n{'round':>5} {'episodes':>8} {'dream':>15} {'real':>15} {'laps':>5}")
    for r in rows:
        print(f"{r['round']:>5} {str(r['episodes'] or '-'):>8} {r['dream']:>8.1f} ± {r['dream_std']:<5.1f} "
              f"{r['real']:>8.1f} ± {r['real_std']:<5.1f} {r['laps']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
