"""Frames per second recorded by ``vmc.collect`` with 1 and 2 workers (lighthouse, mix policy, 64x64).

Wall time covers the whole command as a user runs it: worker start-up, game set-up, track loads,
countdowns, rendering, HDF5 compression and writing.

    python benchmarks/collect_speed.py --episodes 4 --workers 1 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

from vmc.collect import CollectConfig, Collector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4, help="episodes per measurement")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--track", default="lighthouse")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("| workers | episodes | frames | wall s | frames/s | MB on disk | bytes/frame |")
    print("|---|---|---|---|---|---|---|")
    for w in args.workers:
        with tempfile.TemporaryDirectory() as out:
            cfg = CollectConfig(out=out, tracks=[args.track], episodes=args.episodes, workers=w, max_steps=args.max_steps)
            t0 = time.perf_counter()
            m = Collector(cfg).run(progress=False)
            wall = time.perf_counter() - t0
            import pathlib

            size = sum(p.stat().st_size for p in pathlib.Path(out).glob("*.h5"))
            frames = m["steps"] + m["episodes"]
            print(f"| {w} | {m['episodes']} | {frames} | {wall:.1f} | {frames / wall:.1f} | {size / 1e6:.1f} | {size / frames:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
