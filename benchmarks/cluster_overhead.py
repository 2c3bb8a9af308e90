"""What running the game workers on Ray costs: one CMA-ES generation on the local pool and on Ray, in one run.

The same population (a controller plus seeded Gaussian perturbations), rollout seeds, workers and races on both
backends: ``vmc.pool.GamePool`` (spawned processes) and ``vmc.cluster.RayPool`` (Ray actors, on a Ray started
here with this machine's cores, or on the cluster of ``--cluster``). Each pool is started, warmed up (one race per
worker: the track's first load), then scores the generation ``--repeats`` times, the backends taking turns so that
both see the same machine load; the start-up and the best and median generation times are printed with Ray's
overhead (Ray / local - 1). The scores must be equal: the races are deterministic. Then the cost of the pool
itself, which machine load does not blur: ``--echo`` tasks of a race's size (a controller's parameters in, 300
steps of actions out) that do nothing, per task, on both backends.

    python benchmarks/cluster_overhead.py [--popsize 16] [--rollouts 2] [--workers 2] [--cluster ray-local]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np


def _setup_echo(steps: int):
    """Worker of the dispatch test: a task of a race's size that does nothing."""
    out = np.zeros((steps, 3), np.float32)

    def run(params):
        return float(np.asarray(params).sum()), out

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controller", default="runs/lighthouse-small/controller/best.pt",
                   help="controller checkpoint (default: the main job's; without one, untrained weights of the same shapes)")
    p.add_argument("--track", default="lighthouse")
    p.add_argument("--popsize", type=int, default=16)
    p.add_argument("--rollouts", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=0, help="workers of both pools (0: this machine's cores)")
    p.add_argument("--repeats", type=int, default=2, help="generations timed per backend")
    p.add_argument("--cluster", default="ray-local", help="the Ray side: ray-local (a Ray started here), ray, HOST:PORT")
    p.add_argument("--echo", type=int, default=400, help="tasks of the dispatch test (0: none)")
    a = p.parse_args()

    from vmc import evolve
    from vmc.checkpoints import controller_or_untrained
    from vmc.pool import make_pool, usable_cores
    from vmc.racing import AgentRace, racing_pool
    from vmc.sim.env import EnvConfig

    params, models, source = controller_or_untrained(Path(a.controller))
    workers = a.workers or usable_cores()
    cfg = evolve.EvolveConfig(tracks=[a.track], popsize=a.popsize, rollouts=a.rollouts, max_steps=a.max_steps, init="zeros")
    population = params + np.random.default_rng(0).normal(0.0, 0.05, (a.popsize, params.size))
    print(f"cluster_overhead: {a.track}, population {a.popsize} x {a.rollouts} rollouts (max {a.max_steps} steps), "
          f"{workers} workers, {source}, {os.cpu_count()} cores; Ray side: {a.cluster}")

    pools, startup = {}, {}
    try:
        for name, cluster in (("local", "local"), ("ray", a.cluster)):
            t0 = time.perf_counter()
            pool = racing_pool(workers, models, EnvConfig(max_steps=a.max_steps), cfg.action_noise, name=f"bench-{name}",
                               cluster=cluster)
            pool.map([AgentRace(params, a.track, 10**6 + k) for k in range(workers)])  # every worker up, track loaded
            startup[name], pools[name] = time.perf_counter() - t0, pool
        times: dict[str, list[float]] = {"local": [], "ray": []}
        scores: dict[str, np.ndarray] = {}
        for r in range(a.repeats):
            for name in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
                t0 = time.perf_counter()
                s, steps, _, _ = evolve.score_generation(cfg, population, 1, pools[name], None)
                times[name].append(time.perf_counter() - t0)
                scores[name] = s
                print(f"  {name:<6} generation {r + 1}: {times[name][-1]:6.2f} s ({steps} steps, {steps / times[name][-1]:.0f} steps/s)",
                      flush=True)
    finally:
        for pool in pools.values():
            pool.close()
    same = np.array_equal(scores["local"], scores["ray"])
    dispatch = {}
    for name, cluster in (("local", "local"), ("ray", a.cluster)) if a.echo else ():
        with make_pool(cluster, workers, _setup_echo, (a.max_steps,), name=f"bench-echo-{name}") as pool:
            pool.map([params] * workers)
            t0 = time.perf_counter()
            pool.map([params] * a.echo)
            dispatch[name] = (time.perf_counter() - t0) / a.echo
    print(f"\n{'backend':<8} {'start-up s':>10} {'best gen s':>10} {'median gen s':>12}")
    for name in ("local", "ray"):
        print(f"{name:<8} {startup[name]:10.1f} {min(times[name]):10.2f} {statistics.median(times[name]):12.2f}")
    best = min(times["ray"]) / min(times["local"]) - 1
    median = statistics.median(times["ray"]) / statistics.median(times["local"]) - 1
    total = sum(times["ray"]) / sum(times["local"]) - 1
    print(f"Ray overhead per generation: {100 * best:+.1f} % (best), {100 * median:+.1f} % (median), {100 * total:+.1f} % "
          f"(all {a.repeats} together); scores {'identical' if same else 'DIFFERENT'} on both backends")
    if dispatch:
        races = a.popsize * a.rollouts
        print(f"pool cost per task ({a.echo} empty tasks of a race's size, {workers} workers): local {1e3 * dispatch['local']:.2f} ms, "
              f"Ray {1e3 * dispatch['ray']:.2f} ms; for this generation's {races} races on {workers} workers, Ray adds about "
              f"{races * (dispatch['ray'] - dispatch['local']):.2f} s = "
              f"{100 * races * (dispatch['ray'] - dispatch['local']) / min(times['local']):+.2f} % of its best local time")


if __name__ == "__main__":
    main()
