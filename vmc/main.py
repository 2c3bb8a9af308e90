"""The main job, ``./run.sh``: the whole World Models pipeline on a small default, end to end.

Stages, each reading the previous stage's file and skipped when its output is already complete (so an
interrupted job continues where it stopped):

1. reference laps: each reference driver drives one lap; scores, ``<runs>/reference_strip.png``;
2. collect: ``--episodes`` rollouts (mix policy, all cores) into ``data/<track>``;
3. train_vae: ConvVAE → ``checkpoints/vae.pt`` and ``checkpoints/latents.h5``;
4. train_mdn: MDN-RNN → ``checkpoints/mdn.pt`` and ``checkpoints/dream.mp4``;
5. evolve: DAgger imitation of the centre-line driver as the starting point, then CMA-ES on real races →
   ``checkpoints/controller/best.pt``;
6. play: the best controller's lap → ``best_lap.mp4`` (400x300) and ``best_lap.json``.

The default sizes finish in about 30 minutes on 2 cores; ``--preset debug`` runs every stage on a
tiny budget in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("vmc.main")


@dataclass
class Preset:
    """Sizes of each stage."""

    episodes: int
    """Episodes to collect."""
    max_steps: int
    """Step limit of collected episodes."""
    vae_epochs: int
    """ConvVAE epochs."""
    mdn_epochs: int
    """MDN-RNN epochs."""
    mdn_steps: int
    """MDN-RNN optimiser steps per epoch."""
    popsize: int
    """CMA-ES population."""
    rollouts: int
    """Races per candidate."""
    generations: int
    """CMA-ES generations."""
    race_steps: int
    """Step limit of a scored race."""
    dagger_rounds: int
    """DAgger rounds of the controller's starting point."""
    dagger_episodes: int
    """Races per DAgger round."""


PRESETS = {
    "small": Preset(episodes=40, max_steps=400, vae_epochs=6, mdn_epochs=8, mdn_steps=100, popsize=16, rollouts=1,
                    generations=12, race_steps=700, dagger_rounds=6, dagger_episodes=4),
    "debug": Preset(episodes=6, max_steps=60, vae_epochs=1, mdn_epochs=1, mdn_steps=10, popsize=4, rollouts=1,
                    generations=2, race_steps=60, dagger_rounds=2, dagger_episodes=2),
}


def stage(name: str) -> None:
    print(f"\n=== {name} ===", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmc.main", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--track", default="lighthouse", help="race track")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small", help="sizes of the stages")
    parser.add_argument("--workers", type=int, default=0, help="game processes (0: one per core)")
    parser.add_argument("--data", type=Path, default=None, help="collection folder (default: data/<track>)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="model folder")
    parser.add_argument("--runs", type=Path, default=Path("runs/main"), help="folder for the reference pictures")
    parser.add_argument("--video", type=Path, default=Path("best_lap.mp4"), help="where the best lap goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from vmc.env import check_track

    try:
        check_track(args.track)
    except ValueError as err:
        print(f"vmc: error: {err}", file=sys.stderr)
        return 2
    import os

    p = PRESETS[args.preset]
    workers = args.workers or os.cpu_count() or 1
    data = args.data or Path("data") / args.track
    ck = args.checkpoints
    args.runs.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    stage("1/6 reference laps")
    t0 = time.perf_counter()
    refs = reference_laps(args.track, args.runs)
    timings["reference"] = time.perf_counter() - t0

    stage("2/6 collect")
    t0 = time.perf_counter()
    from vmc.collect import CollectConfig, Collector

    m = Collector(CollectConfig(out=str(data), tracks=[args.track], episodes=p.episodes, workers=workers,
                                max_steps=p.max_steps)).run()
    print(f"{m['episodes']} episodes, {m['steps']} steps in {data}")
    timings["collect"] = time.perf_counter() - t0

    stage("3/6 train_vae")
    t0 = time.perf_counter()
    from vmc import train_vae

    vae_cfg = train_vae.TrainVAEConfig(data=str(data), out=str(ck / "vae.pt"), epochs=p.vae_epochs)
    if not _finished(ck / "vae.last.pt", "vae", p.vae_epochs):
        train_vae.train(vae_cfg, resume=(ck / "vae.last.pt").exists())
    latents = vae_cfg.latents_path
    if not latents.exists():
        train_vae.encode_dataset(ck / "vae.pt", data, latents, vae_cfg.val_fraction)
    timings["train_vae"] = time.perf_counter() - t0

    stage("4/6 train_mdn")
    t0 = time.perf_counter()
    from vmc import train_mdn

    mdn_cfg = train_mdn.TrainMDNConfig(latents=str(latents), vae=str(ck / "vae.pt"), out=str(ck / "mdn.pt"),
                                       epochs=p.mdn_epochs, steps_per_epoch=p.mdn_steps,
                                       seq_len=min(32, p.max_steps // 2))
    if not _finished(ck / "mdn.last.pt", "mdn", p.mdn_epochs):
        train_mdn.train(mdn_cfg, resume=(ck / "mdn.last.pt").exists())
        train_mdn.dream_video(ck / "vae.pt", ck / "mdn.pt", latents, ck / "dream.mp4", steps=100)
    timings["train_mdn"] = time.perf_counter() - t0

    stage("5/6 evolve")
    t0 = time.perf_counter()
    from vmc import evolve

    ev_cfg = evolve.EvolveConfig(vae=str(ck / "vae.pt"), mdn=str(ck / "mdn.pt"), latents=str(latents),
                                 out=str(ck / "controller"), track=args.track, workers=workers, popsize=p.popsize,
                                 rollouts=p.rollouts, generations=p.generations, max_steps=p.race_steps,
                                 eval_every=max(1, p.generations // 3), eval_rollouts=4,
                                 dagger_rounds=p.dagger_rounds, dagger_episodes=p.dagger_episodes)
    state = ck / "controller" / "evolve.pt"
    summary = evolve.evolve(ev_cfg, resume=state.exists())
    timings["evolve"] = time.perf_counter() - t0

    stage("6/6 play")
    t0 = time.perf_counter()
    from vmc.play import play

    lap = play(ck / "controller" / "best.pt", args.video)
    timings["play"] = time.perf_counter() - t0

    stage("summary")
    print(f"track {args.track}, preset {args.preset}, {workers} workers, {time.perf_counter() - t_all:.0f} s in all")
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"centre-line driver {refs['centre-line']['score']:.1f}, game AI {refs['game AI']['score']:.1f}, "
          f"evolved controller {lap['score']:.1f} ({lap['end']} after {lap['steps']} steps; best fitness "
          f"{summary['best_fitness']:.1f})")
    print(f"wrote {args.video}, {args.video.with_suffix('.json')}, {ck / 'dream.mp4'}, {args.runs / 'reference_strip.png'}")
    (args.runs / "summary.json").write_text(json.dumps({"timings": timings, "references": refs, "lap": lap,
                                                        "preset": args.preset, "workers": workers}, indent=2))
    return 0


def _finished(last: Path, kind: str, epochs: int) -> bool:
    from vmc.training import load_checkpoint

    return last.exists() and load_checkpoint(last, kind)["epoch"] >= epochs


def reference_laps(track: str, runs: Path) -> dict:
    """One lap per reference driver (in worker processes); a strip of frames; scores."""
    from dataclasses import asdict

    from PIL import Image

    from vmc.env import EnvConfig
    from vmc.pool import GamePool
    from vmc.video import frame_strip

    rows = {}
    strips = []
    for name, kind in (("centre-line", "player"), ("game AI", "ai")):
        with GamePool(1, _setup_reference, (asdict(EnvConfig(track=track, controller=kind)),), name="vmc-reference") as pool:
            (r,) = pool.map([name])
        rows[name] = {k: v for k, v in r.items() if k != "frames"}
        strips.append(frame_strip(r["frames"], 12))
    Image.fromarray(np.concatenate(strips, axis=0)).save(runs / "reference_strip.png")
    print(f"{'driver':<12} {'score':>7} {'steps':>6} {'end':>9} {'wall s':>7} {'steps/s':>8}")
    for name, r in rows.items():
        print(f"{name:<12} {r['score']:7.1f} {r['steps']:6d} {str(r['end']):>9} {r['wall_s']:7.1f} {r['steps_per_s']:8.1f}")
    return rows


def _setup_reference(env_config: dict):
    from vmc.drivers import CentreLineDriver, GameAIDriver, run_episode
    from vmc.env import EnvConfig, SuperTuxKartEnv

    env = SuperTuxKartEnv(config=EnvConfig(**env_config))

    def run(name: str) -> dict:
        frames: list = []
        t0 = time.perf_counter()
        obs, _ = env.reset(seed=0)
        frames.append(obs)
        driver = CentreLineDriver() if name == "centre-line" else GameAIDriver()
        r = run_episode(env, driver, seed=0, on_step=lambda o, *_: frames.append(o))
        wall = time.perf_counter() - t0
        return {"score": r.score, "steps": r.steps, "end": r.end, "wall_s": wall, "steps_per_s": r.steps / wall,
                "frames": frames}

    return run


if __name__ == "__main__":
    sys.exit(main())
