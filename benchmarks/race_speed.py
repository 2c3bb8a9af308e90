"""Where a World Models race's time goes, and how close the agent's races come to the bare env's speed.

One run, on one track, with a controller checkpoint (default: the main job's; without one, a controller of
the same shapes with untrained weights, which costs the same per step):

1. Parts, in one worker process, for each of the agent's runtimes (``torch``: its one-step graph in torch with
   the traced encoder, as before; ``onnxruntime``: today's): a race of the agent with every part timed: reset (track load, countdown), and per
   step the game step (physics and scene update), the frame (pystk2 renders when the frame is read, so this is
   the render and its read-back), the rest of ``env.step`` (kart state, reward), the agent's graph (LSTM step,
   VAE encode, controller) and the rest of its step; the same actions replayed physics-only give the physics'
   share of the game step. The reset is the second of the worker (the first loads the track; later ones
   restart it).
2. Throughput with 1 and 2 workers: the bare env replaying the agent's own actions (the same frames, no agent)
   against the agent's races with each runtime and as ``vmc.racing``'s pool runs them, steps/s summed over
   workers, resets included, in alternating rounds; the pipe to the parent is the parent's wall time per race
   minus the worker's own.

    python benchmarks/race_speed.py [--controller runs/lighthouse-small/controller/best.pt] [--track lighthouse]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def _timed(obj, name: str, times: dict, label: str):
    """Wrap ``obj.name`` so that each call's duration is appended to ``times[label]``; returns the original."""
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        times[label].append(time.perf_counter() - t0)
        return out

    setattr(obj, name, wrapper)
    return fn


def _setup_parts(models, track: str, renderer: str, runtime: str):
    """Worker: an instrumented agent race, its graphs run by ``runtime``. ``run(params) -> dict`` of per-part times
    and the actions."""
    import torch

    from vmc.racing import AgentDriver
    from vmc.sim.env import SuperTuxKartEnv

    env = SuperTuxKartEnv(track=track, renderer=renderer, max_steps=1000)
    agent = models.agent(runtime=runtime)

    def run(params) -> dict:
        times: dict[str, list] = defaultdict(list)
        agent.controller.set_flat(params)
        parts = ((env, "_new_race", "load"), (env, "_game_step", "game_step"), (env, "_frame", "frame"),
                 (env, "step", "env_step"), (agent, "step", "graph"))
        originals = [(obj, name, _timed(obj, name, times, label)) for obj, name, label in parts]
        actions: list = []
        t0 = time.perf_counter()
        with torch.no_grad():
            env.reset(seed=None)
            reset = time.perf_counter() - t0
            load = sum(times["load"])
            countdown_steps = len(times["game_step"])
            times.clear()
            driver = AgentDriver(agent, 0.0, None)
            driver.reset(env.track)
            obs, info = env._obs, None
            t1 = time.perf_counter()
            while True:
                a = driver.act(obs, info)
                actions.append(a)
                obs, _, term, trunc, info = env.step(a)
                if term or trunc:
                    break
            race = time.perf_counter() - t1
        for obj, name, fn in originals:
            setattr(obj, name, fn)
        return {"reset": reset, "load": load, "countdown": reset - load, "countdown_steps": countdown_steps,
                "race": race, "steps": len(actions), "actions": np.stack(actions), "end": info["end"],
                **{k: float(np.sum(v)) for k, v in times.items()}}

    return run


def _setup_replay(track: str, renderer: str):
    """Worker: the bare env replaying actions. ``run(actions) -> dict`` of wall times."""
    from vmc.sim.env import SuperTuxKartEnv

    env = SuperTuxKartEnv(track=track, renderer=renderer, max_steps=1000)

    def run(actions) -> dict:
        t0 = time.perf_counter()
        env.reset(seed=None)
        t1 = time.perf_counter()
        step_times = []
        for a in actions:
            s = time.perf_counter()
            env.step(a)
            step_times.append(time.perf_counter() - s)
        return {"reset": t1 - t0, "race": time.perf_counter() - t1, "steps": len(actions), "step_s": float(np.sum(step_times)),
                "wall": time.perf_counter() - t0}

    return run


def _setup_agent(models, track: str, renderer: str, runtime: str):
    """Worker: the agent's races as :mod:`vmc.racing` runs them (:class:`AgentDriver`, no noise), its graphs run by
    ``runtime``. ``run(params) -> steps``."""
    from vmc.racing import AgentDriver
    from vmc.sim.env import SuperTuxKartEnv

    env = SuperTuxKartEnv(track=track, renderer=renderer, max_steps=1000)
    driver = AgentDriver(models.agent(runtime=runtime), 0.0, None)

    def run(params) -> int:
        driver.agent.controller.set_flat(params)
        obs, info = env.reset(seed=None)
        driver.reset(env.track)
        while True:
            obs, _, term, trunc, info = env.step(driver.act(obs, info))
            if term or trunc:
                return info["steps"]

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controller", default="runs/lighthouse-small/controller/best.pt")
    p.add_argument("--track", default="lighthouse")
    p.add_argument("--races", type=int, default=2, help="races per worker and round in the throughput part")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the throughput part")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--renderer", default="llvmpipe")
    a = p.parse_args()

    from vmc.checkpoints import controller_or_untrained
    from vmc.pool import GamePool
    from vmc.racing import AgentRace, racing_pool
    from vmc.sim.env import EnvConfig

    params, models, source = controller_or_untrained(Path(a.controller))
    print(f"race_speed: {a.track}, {a.renderer}, {source}, {os.cpu_count()} cores")

    runtimes = ("torch", "onnxruntime")  # before (in torch, the traced encoder), after (today's default)
    parts = {}
    for rt in runtimes:
        with GamePool(1, _setup_parts, (models, a.track, a.renderer, rt), name="bench-parts") as pool:
            pool.map([params])  # warm-up: first load of the track, lazy allocations
            parts[rt] = pool.map([params])[0]
    with GamePool(1, _setup_replay, (a.track, "none"), name="bench-physics") as pool:
        pool.map([parts["onnxruntime"]["actions"][:5]])
        physics = pool.map([parts["onnxruntime"]["actions"]])[0]

    def rows(r: dict) -> dict[str, float]:
        """ms per step of each part of one instrumented race ``r``."""
        ms, physics_ms = 1000 / r["steps"], 1000 * physics["step_s"] / physics["steps"]
        return {"game step: physics (renderer none)": physics_ms,
                "game step: scene update (rest of it)": ms * r["game_step"] - physics_ms,
                "render and frame read-back": ms * r["frame"],
                "env.step: kart state, reward": ms * (r["env_step"] - r["game_step"] - r["frame"]),
                "agent: its graph (LSTM step, VAE encode, controller)": ms * r["graph"],
                "agent: the rest (driver, noise, Python)": ms * (r["race"] - r["env_step"] - r["graph"]),
                "agent in all": ms * (r["race"] - r["env_step"]), "a race step": ms * r["race"]}

    table = {rt: rows(parts[rt]) for rt in runtimes}
    print(f"\n1. one race, one worker, each runtime: {parts['onnxruntime']['steps']} steps ({parts['onnxruntime']['end']}), "
          f"reset {parts['onnxruntime']['reset']:.3f} s (track load {parts['onnxruntime']['load']:.3f} s, countdown "
          f"{parts['onnxruntime']['countdown']:.3f} s in {parts['onnxruntime']['countdown_steps']} game steps)")
    print(f"{'part, ms/step':<52} {'torch':>8} {'onnxruntime':>12} {'ratio':>6}")
    for name in table["torch"]:
        before, after = table["torch"][name], table["onnxruntime"][name]
        print(f"{name:<52} {before:8.3f} {after:12.3f} {after / before if before > 0 else float('nan'):6.2f}")

    print(f"\n2. throughput, {a.rounds} rounds of {a.races} races per worker (resets included), steps/s summed over "
          "workers, median over rounds: the bare env replaying the agent's actions (the same frames, no agent), the "
          "agent's races with each runtime and as vmc.racing runs them (onnxruntime); ratios to the bare env in the "
          "same round, median over rounds")
    print(f"{'workers':>7} {'bare env':>9} {'torch':>7} {'ratio':>6} {'onnxruntime':>12} {'ratio':>6} {'vmc.racing':>11} "
          f"{'ratio':>6} {'pipe ms/race':>13}")
    env = EnvConfig(renderer=a.renderer, max_steps=1000)
    actions = parts["onnxruntime"]["actions"]

    def rate(pool, tasks: list, steps) -> tuple[float, list, list[float], float]:
        """Steps/s summed over the pool's workers, the results, when each came back, and the start."""
        done: list[float] = []
        t0 = time.perf_counter()
        res = pool.map(tasks, on_result=lambda *_: done.append(time.perf_counter()))
        return sum(steps(x) for x in res) / (time.perf_counter() - t0), res, done, t0

    for w in a.workers:
        n = a.races * w
        # All pools stay open (idle workers wait on their pipes) and take turns, so that the machine's drift over
        # the run falls on every column alike.
        with (GamePool(w, _setup_replay, (a.track, a.renderer), name="bench-bare") as bare,
              GamePool(w, _setup_agent, (models, a.track, a.renderer, "torch"), name="bench-torch") as torch_pool,
              GamePool(w, _setup_agent, (models, a.track, a.renderer, "onnxruntime"), name="bench-ort") as ort_pool,
              racing_pool(w, models, env, 0.0, name="bench-racing", progress=False) as racing):
            columns = [(bare, [actions] * n, lambda r: r["steps"]), (torch_pool, [params] * n, lambda s: s),
                       (ort_pool, [params] * n, lambda s: s), (racing, [AgentRace(params, a.track, None)] * n, lambda r: r.steps)]
            for pool, tasks, _ in columns:
                pool.map(tasks[:w])  # warm-up: each worker loads the track once
            rates, pipes = [], []
            for _ in range(a.rounds):
                row = []
                for i, (pool, tasks, steps) in enumerate(columns):
                    r, res, done, t0 = rate(pool, tasks, steps)
                    row.append(r)
                    if i == 0 and w == 1:  # one worker, races back to back: the parent's time beyond the worker's
                        pipes.append(float(np.median(np.diff([t0] + done) - [x["wall"] for x in res])))
                rates.append(row)
        rates_a = np.array(rates)
        med = np.median(rates_a, axis=0)
        ratios = np.median(rates_a[:, 1:] / rates_a[:, :1], axis=0)
        cells = " ".join(f"{r:{width}.1f} {q:6.2f}" for r, q, width in zip(med[1:], ratios, (7, 12, 11)))
        pipe = f"{1000 * float(np.median(pipes)):13.2f}" if pipes else f"{'-':>13}"
        print(f"{w:>7} {med[0]:9.1f} {cells} {pipe}")


if __name__ == "__main__":
    main()
