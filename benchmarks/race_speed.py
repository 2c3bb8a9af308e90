"""Where a World Models race's time goes, and how close the agent's races come to the bare env's speed.

One run, on one track, with a controller checkpoint (default: the main job's; without one, a controller of
the same shapes with untrained weights, which costs the same per step):

1. Parts, in one worker process: a race of the agent with every part timed: reset (track load, countdown),
   and per step the game step (physics and scene update), the frame (pystk2 renders when the frame is read,
   so this is the render and its read-back), the rest of ``env.step`` (kart state, reward), the VAE encode,
   the controller, the LSTM step; the same actions replayed physics-only give the physics' share of the game
   step. The reset is the second of the worker (the first loads the track; later ones restart it).
2. Throughput with 1 and 2 workers: races of the agent on the worker pool (``vmc.racing``) against the bare env
   replaying the agent's own actions (the same frames, no agent), steps/s summed over workers, resets
   included; the pipe to the parent is the parent's wall time per race minus the worker's own.

    python benchmarks/race_speed.py [--controller runs/lighthouse-small/controller/best.pt] [--track lighthouse]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def _timed(obj, name: str, times: dict):
    """Wrap ``obj.name`` so that each call's duration is appended to ``times[name]``; returns the original."""
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        times[name].append(time.perf_counter() - t0)
        return out

    setattr(obj, name, wrapper)
    return fn


def _setup_parts(models, track: str, renderer: str):
    """Worker: an instrumented agent race. ``run(params) -> dict`` of per-part times and the actions."""
    import torch

    from vmc.racing import AgentDriver
    from vmc.sim.env import SuperTuxKartEnv

    env = SuperTuxKartEnv(track=track, renderer=renderer, max_steps=1000)
    agent = models.agent()

    def run(params) -> dict:
        times: dict[str, list] = defaultdict(list)
        agent.controller.set_flat(params)
        parts = ((env, "_new_race"), (env, "_game_step"), (env, "_frame"), (env, "step"), (agent, "encode"), (agent, "cell"),
                 (agent, "controller"))
        originals = [(obj, name, _timed(obj, name, times)) for obj, name in parts]
        actions: list = []
        t0 = time.perf_counter()
        with torch.no_grad():
            env.reset(seed=None)
            reset = time.perf_counter() - t0
            load = sum(times["_new_race"])
            countdown_steps = len(times["_game_step"])
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controller", default="runs/lighthouse-small/controller/best.pt")
    p.add_argument("--track", default="lighthouse")
    p.add_argument("--races", type=int, default=4, help="races per worker in the throughput part")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--renderer", default="llvmpipe")
    a = p.parse_args()

    from vmc.checkpoints import controller_or_untrained
    from vmc.pool import GamePool
    from vmc.racing import AgentRace, racing_pool
    from vmc.sim.env import EnvConfig

    params, models, source = controller_or_untrained(Path(a.controller))
    print(f"race_speed: {a.track}, {a.renderer}, {source}, {os.cpu_count()} cores")

    with GamePool(1, _setup_parts, (models, a.track, a.renderer), name="bench-parts") as pool:
        pool.map([params])  # warm-up: first load of the track, lazy allocations
        parts = pool.map([params])[0]
    with GamePool(1, _setup_replay, (a.track, "none"), name="bench-physics") as pool:
        pool.map([parts["actions"][:5]])
        physics = pool.map([parts["actions"]])[0]
    n = parts["steps"]
    ms = lambda s: 1000 * s / n
    step_rest = parts["step"] - parts["_game_step"] - parts["_frame"]
    agent = parts["encode"] + parts["cell"] + parts["controller"]
    other = parts["race"] - parts["step"] - agent
    print(f"\n1. one race, one worker: {n} steps ({parts['end']}), reset {parts['reset']:.3f} s "
          f"(track load {parts['load']:.3f} s, countdown {parts['countdown']:.3f} s in {parts['countdown_steps']} game steps)")
    print(f"{'part':<34} {'ms/step':>8} {'share':>6}")
    rows = [("game step: physics (renderer none)", physics["step_s"]),
            ("game step: scene update (rest of it)", parts["_game_step"] - physics["step_s"]),
            ("render and frame read-back", parts["_frame"]), ("env.step: kart state, reward", step_rest),
            ("agent: VAE encode", parts["encode"]), ("agent: controller", parts["controller"]),
            ("agent: LSTM step", parts["cell"]), ("agent: other Python", other)]
    for name, s in rows:
        print(f"{name:<34} {ms(s):8.3f} {s / parts['race']:6.1%}")
    print(f"{'race step in all':<34} {ms(parts['race']):8.3f}   agent {ms(agent + other):.3f} ms/step "
          f"({(agent + other) / parts['race']:.1%})")

    print(f"\n2. throughput, {a.races} races per worker (resets included): agent races vs the bare env replaying "
          "the same actions")
    print(f"{'workers':>7} {'bare env steps/s':>17} {'agent steps/s':>14} {'ratio':>6} {'pipe ms/race':>13}")
    env = EnvConfig(renderer=a.renderer, max_steps=1000)
    for w in a.workers:
        with GamePool(w, _setup_replay, (a.track, a.renderer), name="bench-bare") as pool:
            pool.map([parts["actions"][:5]] * w)
            done: list[float] = []
            t0 = time.perf_counter()
            bare = pool.map([parts["actions"]] * (a.races * w), on_result=lambda *_, d=done: d.append(time.perf_counter()))
            bare_rate = sum(r["steps"] for r in bare) / (time.perf_counter() - t0)
        # One worker runs its races back to back: the parent's time per race beyond the worker's own is the pipe.
        pipe_ms = (f"{1000 * float(np.median(np.diff([t0] + done) - [r['wall'] for r in bare])):13.2f}" if w == 1
                   else f"{'-':>13}")
        with racing_pool(w, models, env, 0.0, name="bench-agent") as pool:
            pool.map([AgentRace(params, a.track, None)] * w)
            t0 = time.perf_counter()
            res = pool.map([AgentRace(params, a.track, None)] * (a.races * w))
            agent_rate = sum(r.steps for r in res) / (time.perf_counter() - t0)
        print(f"{w:>7} {bare_rate:17.1f} {agent_rate:14.1f} {agent_rate / bare_rate:6.2f} {pipe_ms}")


if __name__ == "__main__":
    main()
