"""Controllers evolved in the dream at several temperatures, scored in the dream and in the real game.

For each temperature: ``evolve --dream`` with the VAE, MDN-RNN and latent file of the run folder ``--run``
(default ``runs/lighthouse-small``) from the least-squares starting point (``--init fit``), into
``<out>/tau-<t>/controller/``; then the final controller (the CMA-ES mean or best candidate, whichever the
real-game evaluation prefers) is scored on ``--eval-seeds`` real races with action noise, once without noise,
and on as many dream rollouts. The run's real-game-trained controller (``<run>/controller/best.pt``) and the
reference drivers are scored beside them. Runs resume: a temperature whose run is complete is only read back.

    python benchmarks/dream_temperatures.py [--run runs/lighthouse-small --temperatures 0.75 1.0 1.15 1.3 --generations 20]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main() -> None:
    from vmc.pool import usable_cores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.75, 1.0, 1.15, 1.3])
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--popsize", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=16)
    p.add_argument("--init", default="fit", help="starting point of every dream run")
    p.add_argument("--eval-seeds", type=int, default=10)
    p.add_argument("--workers", type=int, default=usable_cores())
    p.add_argument("--run", default="runs/lighthouse-small", help="run folder with vae.pt, mdn.pt, latents.h5")
    p.add_argument("--out", default="runs/dream_temperatures", help="one run folder per temperature goes here")
    p.add_argument("--real-controller", default="", help="default: the run's controller/best.pt")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from vmc import evolve
    from vmc.checkpoints import WorldModels, load_checkpoint, load_controller
    from vmc.dream import load_dream
    from vmc.evaluate import reference_laps
    from vmc.racing import racing_pool
    from vmc.sim.env import EnvConfig

    base = evolve.EvolveConfig(run=a.run, eval_rollouts=a.eval_seeds)
    models = {k: str(base.path(k)) for k in ("vae", "mdn", "latents")}
    rows = []
    for tau in a.temperatures:
        out = Path(a.out) / f"tau-{tau:g}"
        cfg = evolve.EvolveConfig(run=str(out), **models, dream=True, temperature=tau, init=a.init,
                                  popsize=a.popsize, rollouts=a.rollouts, generations=a.generations,
                                  eval_every=a.generations, eval_rollouts=a.eval_seeds, workers=a.workers, sigma0=0.1,
                                  resume=(out / "controller" / "evolve.pt").exists())
        state = cfg.out / "evolve.pt"
        s = evolve.evolve(cfg, progress=False)
        h = load_checkpoint(state, "evolve")["history"]
        start, end = s["evals"][0], s["evals"][-1]
        rows.append((f"dream tau {tau:g}", end, start, sum(r["seconds"] for r in h)))

    world = WorldModels.load(base.path("vae"), base.path("mdn"))
    dream = load_dream(world.mdn(), base.path("latents"), 1.15, base.dream_steps, base.action_noise)
    track = base.tracks[0]
    real_controller = Path(a.real_controller or Path(a.run) / "controller" / "best.pt")
    with racing_pool(a.workers, world, EnvConfig(max_steps=base.max_steps), base.action_noise, name="vmc-bench") as pool:
        real = {}
        if real_controller.is_file():
            ck, ck_models = load_controller(real_controller)
            if ck_models.built_on() == world.built_on() and ck_models.still is None:
                real = evolve.evaluate_candidates(pool, base, {"real": ck["params"]}, dream)["real"]
            else:
                logging.warning("%s was evolved with other models than %s's or with the stillness input; not scored",
                                real_controller, a.run)
        laps = reference_laps(pool, [track])[track]
        refs = [laps["centreline"], laps["ai"]]

    print(f"\nlighthouse, {a.eval_seeds} seeds (action noise 0.1), dream scores at tau 1.15 unless the row's own\n")
    print(f"{'controller':<22} {'dream score':>15} {'real score':>15} {'no noise':>9} {'laps':>5} {'evolve s':>9} "
          f"{'start (real)':>13}")
    for name, ev, start, secs in rows:
        print(f"{name:<22} {ev['dream_mean']:8.1f} ± {ev['dream_std']:<5.1f} {ev['mean']:8.1f} ± {ev['std']:<5.1f} "
              f"{ev['noise_free']:9.1f} {ev['laps']:5d} {secs:9.0f} {start['mean']:13.1f}")
    if real:
        print(f"{'real-game evolved':<22} {real['dream_mean']:8.1f} ± {real['dream_std']:<5.1f} {real['mean']:8.1f} ± "
              f"{real['std']:<5.1f} {real['noise_free']:9.1f} {real['laps']:5d}")
    for name, r in zip(("centre-line driver", "game AI"), refs):
        print(f"{name:<22} {'-':>15} {r.score:8.1f} ± {0.0:<5.1f} {r.score:9.1f} {int(r.lap):5d}")
    print("\n(laps: over the noisy seeds plus the noise-free race; the reference drivers are deterministic: one race)")


if __name__ == "__main__":
    main()
