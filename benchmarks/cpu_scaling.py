"""How much two processes get out of this machine's cores, without the game: the ceiling for the
renderer's two-process ratio.

Three workloads, each run by 1 process and then by 2 processes at once (started together), several
times: a pure-Python integer loop (no memory traffic), copies of a 64 MB array (memory bandwidth) and
copies of a 1 MB array (stays in a core's L2 cache). Throughput ratio = 2 x time(1 process) / time of
the slower of the 2.

    python benchmarks/cpu_scaling.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

WORKLOADS = ("python loop", "64 MB copies", "1 MB copies")


def _work(name: str) -> None:
    if name == "python loop":
        x = 0
        for i in range(25_000_000):
            x += i * i
    elif name == "64 MB copies":
        a = np.ones(8_000_000)
        for _ in range(120):
            a.copy()
    else:
        a = np.ones(125_000)
        for _ in range(20_000):
            a.copy()


def _timed(name: str, barrier, queue) -> None:
    barrier.wait()
    t0 = time.perf_counter()
    _work(name)
    queue.put(time.perf_counter() - t0)


def run(name: str, procs: int) -> float:
    """Wall time of the slowest of ``procs`` processes doing ``name`` at once."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_timed, args=(name, barrier, queue)) for _ in range(procs)]
    for p in ps:
        p.start()
    times = [queue.get() for _ in ps]
    for p in ps:
        p.join()
    return max(times)


def ratios(name: str, repeats: int) -> list[float]:
    """Two-process throughput ratios of ``repeats`` paired measurements."""
    return [2 * run(name, 1) / run(name, 2) for _ in range(repeats)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    print("| workload | 2-process throughput, median | min | max |")
    print("|---|---|---|---|")
    for name in WORKLOADS:
        r = ratios(name, a.repeats)
        print(f"| {name} | {np.median(r):.2f}x | {min(r):.2f}x | {max(r):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
