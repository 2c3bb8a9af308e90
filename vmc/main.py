"""The main job, ``./run.sh``: what vmc does end to end on a small default.

Today it runs the stages that exist, each writing a file the next one reads:

1. reference laps: one lap of the track with each reference driver through the real game at 64x64,
   their scores and wall times, ``<out>/reference_strip.png`` and ``<out>/reference_lap.mp4``;
2. collect: a small rollout collection (``--episodes``, mix policy, all cores) in ``data/<track>``,
   continued rather than redone when the job runs again.

It grows into the whole pipeline (train_vae, train_mdn, evolve, play) as those stages land.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from vmc.collect import CollectConfig, Collector
from vmc.drivers import CentreLineDriver, Driver, GameAIDriver, run_episode
from vmc.env import EnvConfig, SuperTuxKartEnv, check_track
from vmc.video import frame_strip, write_video


def drive_reference(config: EnvConfig, driver: Driver, seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    """One episode of ``driver``; returns a summary row and the frames (initial one included)."""
    env = SuperTuxKartEnv(config=config)
    frames: list[np.ndarray] = []
    try:
        t0 = time.perf_counter()
        obs, _ = env.reset(seed=seed)
        frames.append(obs)
        result = run_episode(env, driver, seed=seed, on_step=lambda o, *_: frames.append(o))
        wall = time.perf_counter() - t0
    finally:
        env.close()
    row = {"score": result.score, "steps": result.steps, "end": result.end, "lap_fraction": result.lap_fraction,
           "game_s": result.lap_time, "wall_s": wall, "steps_per_s": result.steps / wall}
    return row, frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmc.main", description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="lighthouse", help="race track (default: lighthouse)")
    parser.add_argument("--out", type=Path, default=Path("runs/main"), help="output folder (default: runs/main)")
    parser.add_argument("--renderer", default="llvmpipe", help="llvmpipe (default), softpipe or system")
    parser.add_argument("--episodes", type=int, default=8, help="episodes to collect (default: 8)")
    parser.add_argument("--max-steps", type=int, default=300, help="step limit of collected episodes (default: 300)")
    parser.add_argument("--data", type=Path, default=None, help="collection folder (default: data/<track>)")
    args = parser.parse_args(argv)
    try:
        check_track(args.track)
    except ValueError as err:
        print(f"vmc: error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    rows = {}
    strips = []
    for name, driver, controller in (("centre-line", CentreLineDriver(), "player"), ("game AI", GameAIDriver(), "ai")):
        config = EnvConfig(track=args.track, renderer=args.renderer, controller=controller)
        rows[name], frames = drive_reference(config, driver)
        strips.append(frame_strip(frames, 12))
        if name == "centre-line":
            write_video(args.out / "reference_lap.mp4", frames, fps=10, scale=4)

    from PIL import Image

    Image.fromarray(np.concatenate(strips, axis=0)).save(args.out / "reference_strip.png")
    print(f"\nReference drivers on {args.track} (64x64, {args.renderer}):")
    print(f"{'driver':<12} {'score':>7} {'steps':>6} {'end':>9} {'wall s':>7} {'steps/s':>8}")
    for name, r in rows.items():
        print(f"{name:<12} {r['score']:7.1f} {r['steps']:6d} {str(r['end']):>9} {r['wall_s']:7.1f} {r['steps_per_s']:8.1f}")
    print(f"\nwrote {args.out / 'reference_strip.png'} and {args.out / 'reference_lap.mp4'}\n")

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    data = args.data or Path("data") / args.track
    cfg = CollectConfig(out=str(data), tracks=[args.track], episodes=args.episodes, max_steps=args.max_steps,
                        renderer=args.renderer)
    m = Collector(cfg).run()
    print(f"collected: {m['episodes']} episodes, {m['steps']} steps in {data} (mean score {m['mean_score']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
