"""``python -m vmc.evolve``: evolve the linear controller with CMA-ES, every candidate scored by real races.

Each worker process (``vmc.pool.GamePool``) loads the VAE and MDN-RNN once, keeps one game running and
drives races for parameter vectors it is sent: frame → z → action from [z, h] → MDN-RNN step → h. The
game is deterministic, so a rollout's seed varies it through Gaussian noise on the controller's
steering and throttle (``--action-noise``); every candidate of a generation gets the same seeds.

Every generation writes a log line, a row of ``<out>/log.csv`` and ``<out>/evolve.pt`` (the CMA-ES state
from ``es.pickle_dumps()``, the best parameters so far, the history and the config), so ``--resume``
continues after Ctrl-C or kill -9 from the last finished generation, and ``<out>/best.pt`` (what
``vmc.play`` loads). Every ``--eval-every`` generations the best so far is scored on more seeds.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vmc.training import CheckpointError, load_checkpoint, plot_curves, save_checkpoint

log = logging.getLogger("vmc.evolve")


@dataclass
class EvolveConfig:
    """What ``python -m vmc.evolve`` does; saved with every checkpoint."""

    vae: str = "checkpoints/vae.pt"
    """VAE checkpoint."""
    mdn: str = "checkpoints/mdn.pt"
    """MDN-RNN checkpoint."""
    latents: str = "checkpoints/latents.h5"
    """Latent file, for the least-squares initial mean (``init='fit'``)."""
    out: str = "checkpoints/controller"
    """Output folder (evolve.pt, best.pt, log.csv, curve.png)."""
    track: str = "lighthouse"
    """Race track."""
    workers: int = max(1, os.cpu_count() or 1)
    """Game processes (default: the number of cores)."""
    popsize: int = 64
    """CMA-ES population."""
    rollouts: int = 4
    """Races per candidate; fitness is their mean score."""
    generations: int = 300
    """Generations to reach (a resumed run continues up to this number)."""
    sigma0: float = 0.1
    """Initial CMA-ES step size."""
    init: str = "fit"
    """Initial mean: ``fit`` (least squares of the recorded actions on [z, h]) or ``zeros``."""
    action_noise: float = 0.1
    """Std of the Gaussian noise on steering and throttle in seeded rollouts."""
    max_steps: int = 1000
    """Step limit of a race."""
    eval_every: int = 10
    """Score the best parameters on ``eval_rollouts`` more seeds every this many generations (0: never)."""
    eval_rollouts: int = 8
    """Seeds of the periodic evaluation."""
    seed: int = 0
    """Seed of CMA-ES and of the rollout seeds."""
    renderer: str = "llvmpipe"
    """Renderer of the worker games."""
    task_timeout: float = 600.0
    """Seconds before a silent race counts as hung (its worker is replaced and the race re-run)."""


def _setup_racer(vae_path: str, mdn_path: str, env_config: dict, action_noise: float):
    """Worker set-up: models and one env, loaded once. Returns ``run(task) -> dict``."""
    import torch

    from vmc.drivers import CentreLineDriver, GameAIDriver, run_episode
    from vmc.env import EnvConfig, SuperTuxKartEnv, env_for
    from vmc.models.controller import LinearController, WorldModelAgent
    from vmc.train_mdn import load_mdn
    from vmc.train_vae import load_vae

    vae, mdn = load_vae(Path(vae_path)), load_mdn(Path(mdn_path))
    controller = LinearController(vae.config.z_dim, mdn.config.hidden)
    agent = WorldModelAgent(vae, mdn, controller)
    env: Optional[SuperTuxKartEnv] = None

    def env_with(controller_kind: str) -> SuperTuxKartEnv:
        nonlocal env
        env = env_for(env, EnvConfig(**{**env_config, "controller": controller_kind}))
        return env

    class AgentDriver:
        def __init__(self, seed: Optional[int]) -> None:
            self.rng = np.random.default_rng(seed) if seed is not None else None

        def reset(self, track, seed=None) -> None:
            agent.reset()

        def act(self, obs, info):
            a = agent.act(obs)
            if self.rng is not None and action_noise > 0:
                a[:2] += self.rng.normal(0.0, action_noise, 2).astype(np.float32)
            return a

    def run(task: dict) -> dict:
        kind = task["kind"]
        if kind == "controller":
            controller.set_flat(task["params"])
            driver, race = AgentDriver(task["seed"]), env_with("player")
        elif kind == "centreline":
            driver, race = CentreLineDriver(), env_with("player")
        else:
            driver, race = GameAIDriver(), env_with("ai")
        with torch.no_grad():
            r = run_episode(race, driver, seed=task.get("seed"))
        return {"score": r.score, "steps": r.steps, "end": r.end, "lap_fraction": r.lap_fraction}

    return run


def fit_initial_mean(latents: Path, mdn_path: Path, ridge: float = 1.0) -> np.ndarray:
    """Least-squares controller: regress the recorded actions (pre-squash) on [z, h], where h comes from
    running the MDN-RNN over each recorded episode. A starting point near the data's driving."""
    import h5py
    import torch

    from vmc.models.controller import LinearController
    from vmc.train_mdn import load_mdn

    mdn = load_mdn(mdn_path)
    xs, ys = [], []
    with h5py.File(latents, "r") as f, torch.no_grad():
        for name in f:
            g = f[name]
            mu, actions = torch.from_numpy(g["mu"][()][:-1]), torch.from_numpy(g["actions"][()])
            heads, _ = mdn(mu[None], actions[None])
            h = torch.cat([torch.zeros(1, mdn.config.hidden), heads["h"][0, :-1]])  # h_t before step t
            xs.append(torch.cat([mu, h], 1).numpy())
            ys.append(actions.numpy())
    x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
    target = np.stack([np.arctanh(np.clip(y[:, 0], -0.95, 0.95)),
                       np.log(np.clip(y[:, 1], 0.05, 0.95) / (1 - np.clip(y[:, 1], 0.05, 0.95))),
                       np.log(np.clip(y[:, 2], 0.05, 0.95) / (1 - np.clip(y[:, 2], 0.05, 0.95)))], 1)
    xb = np.concatenate([x, np.ones((len(x), 1))], 1)
    reg = ridge * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    sol = np.linalg.solve(xb.T @ xb + reg, xb.T @ target)  # (Z+H+1, 3)
    ctrl = LinearController(mu.shape[1], mdn.config.hidden)
    ctrl.linear.weight.data = torch.from_numpy(sol[:-1].T.copy()).float()
    ctrl.linear.bias.data = torch.from_numpy(sol[-1].copy()).float()
    return ctrl.get_flat()


def rollout_seeds(cfg: EvolveConfig, generation: int) -> list[int]:
    """The seeds every candidate of ``generation`` is scored on."""
    return [cfg.seed * 1_000_003 + generation * cfg.rollouts + r for r in range(cfg.rollouts)]


def save_best(out: Path, cfg: EvolveConfig, params: np.ndarray, fitness: float, generation: int, z_dim: int, h_dim: int) -> None:
    """``best.pt``: what ``vmc.play`` needs to drive (parameters and where the models are)."""
    save_checkpoint(out / "best.pt", "controller",
                    {"params": np.asarray(params), "fitness": fitness, "generation": generation, "z_dim": z_dim,
                     "h_dim": h_dim, "vae": cfg.vae, "mdn": cfg.mdn, "track": cfg.track, "max_steps": cfg.max_steps}, cfg)


def evolve(cfg: EvolveConfig, resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Run CMA-ES up to ``cfg.generations``; returns the final state summary."""
    import cma
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from vmc.env import EnvConfig, check_track
    from vmc.pool import GamePool
    from vmc.train_mdn import load_mdn
    from vmc.train_vae import load_vae

    check_track(cfg.track)
    out = Path(cfg.out)
    state_path = out / "evolve.pt"
    if state_path.exists() and not (resume or force):
        raise SystemExit(f"error: {state_path} exists: pass --resume to continue that run or --force to start over")
    if resume and not state_path.exists():
        raise SystemExit(f"error: --resume given but {state_path} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    z_dim, h_dim = load_vae(Path(cfg.vae)).config.z_dim, load_mdn(Path(cfg.mdn)).config.hidden
    n_params = (z_dim + h_dim) * 3 + 3

    history: list[dict] = []
    evals: list[dict] = []
    if resume:
        ck = load_checkpoint(state_path, "evolve")
        es = __import__("pickle").loads(ck["es"])
        history, evals = ck["history"], ck["evals"]
        best_params, best_fitness, gen0 = ck["best_params"], ck["best_fitness"], ck["generation"]
        best_eval = ck.get("best_eval", -np.inf)
        log.info("resuming %s after generation %d (best %.1f)", state_path, gen0, best_fitness)
    else:
        x0 = fit_initial_mean(Path(cfg.latents), Path(cfg.mdn)) if cfg.init == "fit" else np.zeros(n_params)
        es = cma.CMAEvolutionStrategy(x0, cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9})
        best_params, best_fitness, gen0 = x0, -np.inf, 0
        best_eval = -np.inf

    env_config = asdict(EnvConfig(track=cfg.track, renderer=cfg.renderer, max_steps=cfg.max_steps))
    pool = GamePool(cfg.workers, _setup_racer, (cfg.vae, cfg.mdn, env_config, cfg.action_noise), cfg.task_timeout,
                    name="vmc-evolve-worker")
    bar = tqdm(total=cfg.generations, initial=gen0, unit="gen", disable=not progress, dynamic_ncols=True)
    try:
        with logging_redirect_tqdm():
            for gen in range(gen0 + 1, cfg.generations + 1):
                t0 = time.perf_counter()
                solutions = es.ask()
                seeds = rollout_seeds(cfg, gen)
                tasks = [{"kind": "controller", "params": np.asarray(x), "seed": s} for x in solutions for s in seeds]
                results = pool.map(tasks)
                scores = np.array([r["score"] for r in results]).reshape(len(solutions), len(seeds))
                fitness = scores.mean(axis=1)
                es.tell(solutions, list(-fitness))  # pycma minimises
                i = int(np.argmax(fitness))
                if fitness[i] > best_fitness:
                    best_fitness, best_params = float(fitness[i]), np.asarray(solutions[i])
                    if best_eval == -np.inf:  # until the first evaluation, best.pt follows the fitness
                        save_best(out, cfg, best_params, best_fitness, gen, z_dim, h_dim)
                seconds = time.perf_counter() - t0
                row = {"generation": gen, "best": float(fitness.max()), "mean": float(fitness.mean()),
                       "worst": float(fitness.min()), "best_so_far": best_fitness, "sigma": float(es.sigma),
                       "laps": int(sum(r["end"] == "lap" for r in results)),
                       "steps_per_s": sum(r["steps"] for r in results) / seconds, "seconds": seconds}
                history.append(row)
                if cfg.eval_every and (gen % cfg.eval_every == 0 or gen == cfg.generations):
                    # The best fitness is one lucky draw of the noise; best.pt is chosen on more seeds, between
                    # that candidate and the CMA-ES mean.
                    ev = evaluate_candidates(pool, cfg, {"best": best_params, "mean": np.asarray(es.result.xfavorite)})
                    name = max(ev, key=lambda k: ev[k]["mean"])
                    evals.append({"generation": gen, "which": name, **ev[name]})
                    if ev[name]["mean"] > best_eval:
                        best_eval = ev[name]["mean"]
                        save_best(out, cfg, ev[name]["params"], best_eval, gen, z_dim, h_dim)
                    evals[-1].pop("params")
                    log.info("generation %d evaluation: best candidate %.1f ± %.1f, CMA-ES mean %.1f ± %.1f over %d seeds; "
                             "%s kept (%.1f without noise)", gen, ev["best"]["mean"], ev["best"]["std"], ev["mean"]["mean"],
                             ev["mean"]["std"], cfg.eval_rollouts, name, ev[name]["noise_free"])
                log.info("generation %d: best %.1f mean %.1f worst %.1f (best so far %.1f), sigma %.4f, %d laps, "
                         "%.0f steps/s, %.0f s", gen, row["best"], row["mean"], row["worst"], best_fitness, row["sigma"],
                         row["laps"], row["steps_per_s"], seconds)
                save_checkpoint(state_path, "evolve", {"es": es.pickle_dumps(), "generation": gen, "best_params": best_params,
                                                       "best_fitness": best_fitness, "best_eval": best_eval, "history": history,
                                                       "evals": evals}, cfg)
                _write_log(out, history, evals)
                bar.update(1)
                bar.set_postfix(best=f"{best_fitness:.0f}", sigma=f"{es.sigma:.3f}")
    finally:
        bar.close()
        pool.close()
    return {"generation": history[-1]["generation"] if history else gen0, "best_fitness": best_fitness, "evals": evals}


def evaluate_candidates(pool, cfg: EvolveConfig, candidates: dict[str, np.ndarray]) -> dict[str, dict]:
    """Score each parameter vector on ``eval_rollouts`` noisy seeds (disjoint from training seeds) and once
    without noise; returns per name: mean, std, noise_free, laps, params."""
    seeds = [10**9 + k for k in range(cfg.eval_rollouts)] + [None]
    tasks = [{"kind": "controller", "params": p, "seed": s} for p in candidates.values() for s in seeds]
    res = pool.map(tasks)
    out = {}
    for j, (name, params) in enumerate(candidates.items()):
        r = res[j * len(seeds):(j + 1) * len(seeds)]
        noisy = [x["score"] for x in r[:-1]]
        out[name] = {"mean": float(np.mean(noisy)), "std": float(np.std(noisy)), "noise_free": r[-1]["score"],
                     "laps": int(sum(x["end"] == "lap" for x in r)), "params": params}
    return out


def _write_log(out: Path, history: list[dict], evals: list[dict]) -> None:
    # Rewritten whole every generation, so a resumed run never has duplicated rows.
    tmp = out / "log.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    tmp.replace(out / "log.csv")
    plot_curves(out / "curve.png", [{"epoch": h["generation"], **h} for h in history], ["best", "mean", "best_so_far"],
                "CMA-ES fitness (mean score over rollouts)")


def reference_scores(track: str, seeds: list[int], workers: int = 2, max_steps: int = 1000,
                     renderer: str = "llvmpipe", vae: str = "", mdn: str = "") -> dict[str, list[float]]:
    """Scores of the centre-line driver and the game's AI on ``seeds`` (they ignore the seed: the game is
    deterministic, so every seed gives the same race)."""
    from vmc.env import EnvConfig
    from vmc.pool import GamePool

    env_config = asdict(EnvConfig(track=track, renderer=renderer, max_steps=max_steps))
    with GamePool(workers, _setup_racer, (vae, mdn, env_config, 0.0), name="vmc-reference") as pool:
        tasks = [{"kind": k, "seed": s} for k in ("centreline", "ai") for s in seeds]
        res = pool.map(tasks)
    return {"centreline": [r["score"] for r in res[:len(seeds)]], "ai": [r["score"] for r in res[len(seeds):]]}


def parse_args(argv: Optional[list[str]] = None) -> tuple[EvolveConfig, argparse.Namespace]:
    d = EvolveConfig()
    p = argparse.ArgumentParser(prog="python -m vmc.evolve", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in ("vae", "mdn", "latents", "out", "track", "renderer", "init"):
        p.add_argument(f"--{f}", default=getattr(d, f))
    for f in ("workers", "popsize", "rollouts", "generations", "max_steps", "eval_every", "eval_rollouts", "seed"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(d, f))
    for f in ("sigma0", "action_noise", "task_timeout"):
        p.add_argument(f"--{f.replace('_', '-')}", type=float, default=getattr(d, f))
    p.add_argument("--resume", action="store_true", help="continue from <out>/evolve.pt")
    p.add_argument("--force", action="store_true", help="start over even if <out>/evolve.pt exists")
    a = p.parse_args(argv)
    cfg = EvolveConfig(**{k: v for k, v in vars(a).items() if k not in ("resume", "force")})
    if cfg.init not in ("fit", "zeros"):
        p.error("--init must be fit or zeros")
    return cfg, a


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg, a = parse_args(argv)
    try:
        summary = evolve(cfg, resume=a.resume, force=a.force)
    except (CheckpointError, ValueError) as err:
        print(f"vmc.evolve: error: {err}", file=sys.stderr)
        return 1
    refs = reference_scores(cfg.track, [10**9 + k for k in range(2)], workers=min(cfg.workers, 2), max_steps=cfg.max_steps,
                            renderer=cfg.renderer, vae=cfg.vae, mdn=cfg.mdn)
    print(f"\n{cfg.track}: evolved controller best fitness {summary['best_fitness']:.1f}"
          + (f", last evaluation {summary['evals'][-1]['mean']:.1f} ± {summary['evals'][-1]['std']:.1f}"
             f" (noise-free {summary['evals'][-1]['noise_free']:.1f})" if summary["evals"] else "")
          + f"; centre-line driver {np.mean(refs['centreline']):.1f}; game AI {np.mean(refs['ai']):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
