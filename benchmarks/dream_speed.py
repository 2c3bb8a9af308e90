"""One CMA-ES generation in the dream vs. the same generation in the real game, measured in one run.

Dream: population x rollouts x steps (default 64 x 16 x 500) as one batch through the trained MDN-RNN
and the linear controller, timed whole. Real game: the same controller races on a pool of game
processes (llvmpipe, 64x64), timed over a few races after the workers are up; the generation's wall
time is estimated as (population x rollouts x steps) / measured steps per second.

The models, latent file and controller are the run folder's (``--run``, default ``runs/lighthouse-small``,
what ``./run.sh`` leaves); ``--vae``, ``--mdn``, ``--latents`` and ``--controller`` name other files.

    python benchmarks/dream_speed.py [--run runs/lighthouse-small --popsize 64 --rollouts 16 --steps 500 --workers 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from vmc.pool import usable_cores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/lighthouse-small", help="run folder with vae.pt, mdn.pt, latents.h5")
    p.add_argument("--mdn", default="", help="MDN-RNN checkpoint (default: the run's mdn.pt)")
    p.add_argument("--vae", default="", help="VAE checkpoint (default: the run's vae.pt)")
    p.add_argument("--latents", default="", help="latent file (default: the run's latents.h5)")
    p.add_argument("--controller", default="",
                   help="parameters to race (default: the run's controller/best.pt; zeros if absent)")
    p.add_argument("--track", default="lighthouse")
    p.add_argument("--popsize", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=16)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--temperature", type=float, default=1.15)
    p.add_argument("--workers", type=int, default=usable_cores())
    p.add_argument("--real-races", type=int, default=4, help="races timed in the real game")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the dream (0: one per core)")
    p.add_argument("--device", default="cpu", help="where the dream runs: cpu, cuda, auto (CUDA when present)")
    a = p.parse_args()

    from vmc.checkpoints import WorldModels, load_checkpoint
    from vmc.dream import load_dream
    from vmc.errors import VmcError
    from vmc.racing import AgentRace, racing_pool
    from vmc.sim.env import EnvConfig
    from vmc.training import use_all_cores

    run = Path(a.run)
    vae, mdn = Path(a.vae or run / "vae.pt"), Path(a.mdn or run / "mdn.pt")
    latents, ck = Path(a.latents or run / "latents.h5"), Path(a.controller or run / "controller" / "best.pt")
    threads = use_all_cores(a.threads)
    models = WorldModels.load(vae, mdn)
    dream = load_dream(models.mdn(), latents, a.temperature, a.steps, action_noise=0.1, device=a.device)
    x = np.asarray(load_checkpoint(ck, "controller")["params"], np.float64) if ck.is_file() else np.zeros(models.n_params())
    try:
        models.hidden_of(x)
    except VmcError as err:
        raise SystemExit(f"{ck}: {err}; the models of {vae} and {mdn}") from None
    n_params = x.size
    rng = np.random.default_rng(0)
    population = np.stack([x + 0.02 * rng.standard_normal(n_params) for _ in range(a.popsize)])

    dream.run(population[:2], dream.noise(1, 2))  # warm-up (allocations, thread pool)
    t0 = time.perf_counter()
    res = dream.run(population, dream.noise(0, a.rollouts))
    dream_s = time.perf_counter() - t0
    dream_steps = int(res.steps.sum())

    with racing_pool(a.workers, models, EnvConfig(track=a.track, max_steps=a.steps), 0.1, name="vmc-bench") as pool:
        pool.map([AgentRace(x, a.track, s) for s in range(a.workers)])  # workers up, tracks loaded
        t0 = time.perf_counter()
        races = pool.map([AgentRace(x, a.track, 100 + s) for s in range(a.real_races)])
        real_s = time.perf_counter() - t0
    real_steps = sum(r.steps for r in races)
    real_rate = real_steps / real_s
    full = a.popsize * a.rollouts * a.steps
    real_gen = full / real_rate

    print(f"\none generation: population {a.popsize} x {a.rollouts} rollouts x {a.steps} steps = {full:,} steps; "
          f"dream on {dream.device}, {torch.get_num_threads()} torch threads ({threads} requested), {a.workers} game "
          f"workers\n")
    print(f"{'where':<12} {'steps':>10} {'wall s':>10} {'steps/s':>12} {'generation s':>14}")
    print(f"{'dream':<12} {dream_steps:>10,} {dream_s:>10.1f} {dream_steps / dream_s:>12,.0f} {dream_s:>14.1f}")
    print(f"{'real game':<12} {real_steps:>10,} {real_s:>10.1f} {real_rate:>12,.0f} {real_gen:>14.0f}  (estimated)")
    print(f"\ndream speed-up for one generation: {real_gen / dream_s:.0f}x "
          f"(dream rollouts ended early: {int(res.done.sum())} of {res.done.numel()})")


if __name__ == "__main__":
    main()
