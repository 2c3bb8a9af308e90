"""Rendered steps per second of ``vmc/SuperTuxKart-v0``: one lap driven by the centre-line driver.

For each track and renderer: the lap's wall time, median / p99 / max time of one ``env.step``
(render included, reset excluded), steps/s of one process, and the summed steps/s of N processes
driving at once (each process its own game, as the collectors and CMA-ES workers run; they start
their laps together, after loading the track). Physics only
(``renderer=none``) is the ceiling. Every measurement runs in fresh processes (one game set-up per
process) and is cut off after ``--lap-timeout`` seconds, so a renderer that stalls is reported as
such instead of hanging the benchmark.

    python benchmarks/env_speed.py                       # six tracks, llvmpipe and softpipe, 1 and 2 procs
    python benchmarks/env_speed.py --tracks zengarden --renderers llvmpipe --anisotropic 4   # the stalls
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import numpy as np


def _lap(track: str, renderer: str, width: int, options: dict, timeout: float, repeats: int, queue, barrier) -> None:
    from vmc.sim.drivers import CentreLineDriver
    from vmc.sim.env import SuperTuxKartEnv

    env = SuperTuxKartEnv(track=track, renderer=renderer, width=width, height=width, max_steps=2000, **options)
    times, ends = [], []
    t_start = time.perf_counter()
    for _ in range(repeats):
        obs, info = env.reset(seed=0)
        barrier.wait()  # all processes drive at the same time, none is still loading its track
        driver = CentreLineDriver()
        driver.reset(env.track)
        while True:
            action = driver.act(obs, info)
            t0 = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            times.append(time.perf_counter() - t0)
            if terminated or truncated:
                ends.append(info["end"])
                break
            if time.perf_counter() - t_start > timeout:
                ends.append("timeout")
                break
        if ends[-1] == "timeout":
            break
    env.close()
    queue.put({"times": times, "end": ",".join(sorted(set(ends))), "laps": len(ends)})


def measure(track: str, renderer: str, procs: int, width: int, timeout: float, anisotropic: int = 0,
            repeats: int = 1, max_texture_size: int = 0, action_repeat: int = 1) -> dict:
    """Run ``procs`` processes at once, each driving ``repeats`` laps; returns the summary row (per lap)."""
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(procs)
    options = {"anisotropic": anisotropic, "max_texture_size": max_texture_size, "action_repeat": action_repeat}
    workers = [ctx.Process(target=_lap, args=(track, renderer, width, options, timeout, repeats, queue, barrier))
               for _ in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=repeats * timeout + 300) for _ in workers]
    for w in workers:
        w.join()
    times = np.concatenate([r["times"] for r in results])
    lap_walls = [float(np.sum(r["times"])) for r in results]
    return {
        "track": track, "renderer": renderer, "procs": procs, "tex": max_texture_size or 512, "repeat": action_repeat,
        "steps": int(len(times) / procs / max(1, results[0]["laps"])),
        "lap_s": float(np.mean(lap_walls)) / max(1, results[0]["laps"]),
        "median_ms": 1e3 * float(np.median(times)), "p99_ms": 1e3 * float(np.percentile(times, 99)),
        "max_ms": 1e3 * float(times.max()),
        "steps_per_s": float(len(times) / max(lap_walls)),
        "end": ",".join(sorted({r["end"] for r in results})),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", nargs="+",
                        default=["lighthouse", "zengarden", "hacienda", "scotland", "snowtuxpeak", "cornfield_crossing"])
    parser.add_argument("--anisotropic", type=int, default=0, help="STK anisotropic filtering level")
    parser.add_argument("--repeats", type=int, default=1, help="laps per process (short laps make noisy ratios)")
    parser.add_argument("--renderers", nargs="+", default=["llvmpipe", "softpipe"], help="llvmpipe softpipe system")
    parser.add_argument("--max-texture-sizes", nargs="+", type=int, default=[0],
                        help="texture size limits to compare (0: the game's 512)")
    parser.add_argument("--action-repeats", nargs="+", type=int, default=[1],
                        help="game steps of 0.1 s per rendered agent step to compare")
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2], help="processes at once")
    parser.add_argument("--width", type=int, default=64, help="square image size (default 64)")
    parser.add_argument("--control-repeats", type=int, default=3,
                        help="runs of the no-game control (cpu_scaling.py's python loop) printed first; 0 skips it")
    parser.add_argument("--lap-timeout", type=float, default=600.0, help="seconds before a lap is cut off")
    args = parser.parse_args()

    print(f"# env_speed: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.width}x{args.width}, anisotropic {args.anisotropic}")
    if args.control_repeats and 2 in args.procs:
        from cpu_scaling import ratios  # benchmarks/ is on sys.path when this file runs as a script

        r = ratios("python loop", args.control_repeats)
        print(f"# control, no game: 2 processes of a pure-Python loop give {np.median(r):.2f}x one "
              f"(runs: {', '.join(f'{x:.2f}x' for x in r)})")
    header = f"| {'track':<18} | {'renderer':<9} | tex | rep | procs | steps | lap s | median ms | p99 ms | max ms | steps/s | end |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for track in args.tracks:
        rows = [measure(track, "none", 1, args.width, args.lap_timeout, repeats=args.repeats)]
        for renderer in args.renderers:
            for tex in args.max_texture_sizes:
                for rep in args.action_repeats:
                    for procs in args.procs:
                        rows.append(measure(track, renderer, procs, args.width, args.lap_timeout, args.anisotropic,
                                            args.repeats, tex, rep))
        for r in rows:
            print(f"| {r['track']:<18} | {r['renderer']:<9} | {r['tex']:3d} | {r['repeat']:3d} | {r['procs']:5d} "
                  f"| {r['steps']:5d} | {r['lap_s']:5.1f} | {r['median_ms']:9.1f} | {r['p99_ms']:6.1f} | {r['max_ms']:6.0f} "
                  f"| {r['steps_per_s']:7.1f} | {r['end']} |",
                  flush=True)


if __name__ == "__main__":
    main()
