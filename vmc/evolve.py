"""``python -m vmc.evolve``: evolve the linear controller with CMA-ES, every candidate scored by real races
(or, with ``--dream``, by the MDN-RNN's dream: ``vmc.dream``).

The starting point (``--init dagger``, the default) imitates the centre-line driver: DAgger rounds in the
real game, a ridge regression of the driver's actions on the controller's inputs [z, h] after each.

Each worker process (``vmc.pool.GamePool``) loads the VAE and MDN-RNN once, keeps one game running and
drives races for parameter vectors it is sent: frame → z → action from [z, h] → MDN-RNN step → h. The
game is deterministic, so a rollout's seed varies it through Gaussian noise on the controller's
steering and throttle (``--action-noise``); every candidate of a generation gets the same seeds.

Every generation writes a log line, a row of ``<out>/log.csv`` and ``<out>/evolve.pt`` (the CMA-ES state
from ``es.pickle_dumps()``, the best parameters so far, the history and the config), so ``--resume``
continues after Ctrl-C or kill -9 from the last finished generation, and ``<out>/best.pt`` (what
``vmc.play`` loads). Every ``--eval-every`` generations the best so far and the CMA-ES mean are scored on
more seeds in the real game (and in the dream when ``--dream``); ``best.pt`` is the best of those.
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
    """Latent file: the least-squares start (``init='fit'``, also DAgger's round-0 controller) and the dream's
    start states."""
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
    sigma0: float = 0.02
    """Initial CMA-ES step size."""
    init: str = "dagger"
    """Initial mean: ``dagger`` (imitate the centre-line driver with DAgger in the real game), ``fit`` (least
    squares of the recorded actions on [z, h]), ``zeros``, or a controller checkpoint (``best.pt``) to go on from."""
    dagger_rounds: int = 6
    """DAgger rounds for ``init='dagger'`` (round 0: the centre-line driver drives; then the controller does)."""
    dagger_episodes: int = 4
    """Races per DAgger round."""
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
    dream: bool = False
    """Score candidates in the MDN-RNN's dream (``vmc.dream``) instead of real races; evaluations stay real."""
    temperature: float = 1.15
    """Sampling temperature of the dream."""
    dream_steps: int = 500
    """Steps of a dream rollout (the done head may end it earlier)."""
    dream_starts_every: int = 10
    """Dream start states: every episode's first step and every this many steps of the training episodes."""
    dream_device: str = "auto"
    """Where the dream's tensors live: ``auto`` (CUDA when present, else CPU threads), ``cpu``, ``cuda``..."""
    race_start: float = 0.5
    """Share of dream rollouts that start at a race start (the rest start anywhere in the recorded episodes)."""
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
            z, h = agent.observe(obs)
            a = controller(z, h)[0].numpy()
            if self.rng is not None and action_noise > 0:
                a[:2] += self.rng.normal(0.0, action_noise, 2).astype(np.float32)
                a = np.clip(a, [-1, 0, 0], [1, 1, 1]).astype(np.float32)
            agent.advance(z, a)  # the MDN-RNN models what was done, as in the dream
            return a

    class DaggerDriver:
        """Drives with the expert's action with probability ``beta``, else the controller's (plus noise), and
        records the controller's inputs [z_t, h_t] with the expert's action as label."""

        def __init__(self, seed: int, beta: float) -> None:
            self.rng, self.beta, self.expert = np.random.default_rng(seed), beta, CentreLineDriver()
            self.x: list[np.ndarray] = []
            self.y: list[np.ndarray] = []

        def reset(self, track, seed=None) -> None:
            agent.reset()
            self.expert.reset(track, seed)

        def act(self, obs, info):
            z, h = agent.observe(obs)
            label = self.expert.act(obs, info)
            a = label.copy() if self.rng.random() < self.beta else controller(z, h)[0].numpy()
            if action_noise > 0:
                a[:2] += self.rng.normal(0.0, action_noise, 2).astype(np.float32)
            a = np.clip(a, [-1, 0, 0], [1, 1, 1]).astype(np.float32)
            agent.advance(z, a)
            self.x.append(torch.cat([z, h], 1)[0].numpy())
            self.y.append(label)
            return a

    def run(task: dict) -> dict:
        kind = task["kind"]
        if kind == "dagger":
            controller.set_flat(task["params"])
            driver = DaggerDriver(task["seed"], task["beta"])
            with torch.no_grad():
                r = run_episode(env_with("player"), driver, seed=task["seed"])
            return {"score": r.score, "steps": r.steps, "end": r.end, "lap_fraction": r.lap_fraction,
                    "x": np.stack(driver.x), "y": np.stack(driver.y)}
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


def ridge_fit(x: np.ndarray, actions: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Flat controller parameters whose pre-squash outputs best match ``actions`` (N, 3) from inputs
    ``x`` (N, Z+H) in least squares (ridge on the weights, not the bias): arctanh of the steering,
    logits of acceleration and brake, clipped so that saturated actions give finite targets."""
    x, y = np.asarray(x, np.float64), np.asarray(actions, np.float64)
    pedals = np.clip(y[:, 1:], 0.05, 0.95)
    target = np.concatenate([np.arctanh(np.clip(y[:, :1], -0.95, 0.95)), np.log(pedals / (1 - pedals))], 1)
    xb = np.concatenate([x, np.ones((len(x), 1))], 1)
    reg = ridge * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    sol = np.linalg.solve(xb.T @ xb + reg, xb.T @ target)  # (Z+H+1, 3)
    return np.concatenate([sol[:-1].T.ravel(), sol[-1]])  # LinearController's flat layout: W row-major, then b


def dagger_initial_mean(pool, cfg: EvolveConfig, x0: np.ndarray) -> np.ndarray:
    """Imitate the centre-line driver (DAgger, Ross et al. 2011): in round 0 the driver races and the
    controller's inputs are recorded with its actions; from round 1 the controller fitted so far races
    (with the driver taking over with probability 0.5^round) while the driver labels every step, so the
    fit also learns to come back from the controller's own mistakes. Returns the last fit."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    params = x0
    for r in range(cfg.dagger_rounds):
        beta = 0.5 ** r
        seeds = [cfg.seed * 1_000_003 + 500_000 + r * cfg.dagger_episodes + k for k in range(cfg.dagger_episodes)]
        res = pool.map([{"kind": "dagger", "params": params, "seed": s, "beta": beta} for s in seeds])
        xs += [x["x"] for x in res]
        ys += [x["y"] for x in res]
        params = ridge_fit(np.concatenate(xs), np.concatenate(ys))
        log.info("DAgger round %d (expert share %.2f): scores %s, laps %d; refit on %d steps", r, beta,
                 " ".join(f"{x['score']:.0f}" for x in res), sum(x["end"] == "lap" for x in res), sum(len(x) for x in xs))
    return params


def initial_mean(cfg: EvolveConfig, pool, n_params: int) -> np.ndarray:
    """CMA-ES's starting mean for ``cfg.init`` (see :class:`EvolveConfig`)."""
    if cfg.init == "zeros":
        return np.zeros(n_params)
    if cfg.init not in ("fit", "dagger"):
        params = np.asarray(load_checkpoint(Path(cfg.init), "controller")["params"], np.float64)
        if params.shape != (n_params,):
            raise CheckpointError(f"{cfg.init}: {params.shape[0]} controller parameters, these models need {n_params}")
        return params
    x0 = fit_initial_mean(Path(cfg.latents), Path(cfg.mdn))
    return dagger_initial_mean(pool, cfg, x0) if cfg.init == "dagger" else x0


def fit_initial_mean(latents: Path, mdn_path: Path, ridge: float = 1.0) -> np.ndarray:
    """Least-squares controller: regress the recorded actions (pre-squash) on [z, h], where h comes from
    running the MDN-RNN over each recorded episode. A starting point near the data's driving."""
    import h5py
    import torch

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
    return ridge_fit(np.concatenate(xs), np.concatenate(ys), ridge)


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
    dream = None
    if cfg.dream:
        from vmc.dream import load_dream
        from vmc.training import use_all_cores

        use_all_cores(0)  # the dream is tensor work in this process; the game workers idle meanwhile
        dream = load_dream(Path(cfg.mdn), Path(cfg.latents), cfg.temperature, cfg.dream_steps, cfg.action_noise,
                           every=cfg.dream_starts_every, race_start=cfg.race_start, device=cfg.dream_device)
        log.info("dream: %d start states from %s, temperature %.2f, %d steps, on %s", len(dream.starts), cfg.latents,
                 cfg.temperature, cfg.dream_steps, dream.device)
    # Real races are needed to score candidates, to evaluate them and for DAgger; a dream run without
    # evaluations from a non-DAgger start never starts a game.
    needs_game = not cfg.dream or cfg.eval_every > 0 or (cfg.init == "dagger" and not resume)
    env_config = asdict(EnvConfig(track=cfg.track, renderer=cfg.renderer, max_steps=cfg.max_steps))
    pool = GamePool(cfg.workers, _setup_racer, (cfg.vae, cfg.mdn, env_config, cfg.action_noise), cfg.task_timeout,
                    name="vmc-evolve-worker") if needs_game else None
    try:
        if resume:
            ck = load_checkpoint(state_path, "evolve")
            es = __import__("pickle").loads(ck["es"])
            history, evals = ck["history"], ck["evals"]
            best_params, best_fitness, gen0 = ck["best_params"], ck["best_fitness"], ck["generation"]
            best_eval = ck.get("best_eval", -np.inf)
            log.info("resuming %s after generation %d (best %.1f)", state_path, gen0, best_fitness)
        else:
            x0 = initial_mean(cfg, pool, n_params)
            es = cma.CMAEvolutionStrategy(x0, cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9})
            best_params, best_fitness, gen0 = x0, -np.inf, 0
            best_eval = -np.inf
            if cfg.eval_every:  # the starting point is a candidate for best.pt too (DAgger's often drives laps)
                ev = evaluate_candidates(pool, cfg, {"initial": x0}, dream)["initial"]
                best_eval = ev["mean"]
                evals.append({"generation": 0, "which": "initial", **{k: v for k, v in ev.items() if k != "params"}})
                save_best(out, cfg, x0, best_eval, 0, z_dim, h_dim)
                log.info("initial mean (%s): %s", cfg.init, _describe(ev, cfg))
            # Saved before the first generation, so that an interrupted run resumes without redoing the set-up.
            _save_state(state_path, cfg, es, 0, best_params, best_fitness, best_eval, history, evals)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    bar = tqdm(total=cfg.generations, initial=gen0, unit="gen", disable=not progress, dynamic_ncols=True)
    try:
        with logging_redirect_tqdm():
            for gen in range(gen0 + 1, cfg.generations + 1):
                t0 = time.perf_counter()
                solutions = es.ask()
                scores, steps, ended, laps = score_generation(cfg, np.asarray(solutions), gen, pool, dream)
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
                       "ended": ended, "laps": laps, "steps_per_s": steps / seconds, "seconds": seconds,
                       "real_eval": None, "dream_eval": None}
                history.append(row)
                if cfg.eval_every and (gen % cfg.eval_every == 0 or gen == cfg.generations):
                    # The best fitness is one lucky draw of the noise; best.pt is chosen on more seeds, between
                    # that candidate and the CMA-ES mean, in the real game.
                    ev = evaluate_candidates(pool, cfg, {"best": best_params, "mean": np.asarray(es.result.xfavorite)}, dream)
                    name = max(ev, key=lambda k: ev[k]["mean"])
                    evals.append({"generation": gen, "which": name, **{k: v for k, v in ev[name].items() if k != "params"}})
                    row["real_eval"], row["dream_eval"] = ev[name]["mean"], ev[name].get("dream_mean")
                    if ev[name]["mean"] > best_eval:
                        best_eval = ev[name]["mean"]
                        save_best(out, cfg, ev[name]["params"], best_eval, gen, z_dim, h_dim)
                    log.info("generation %d evaluation: best candidate %s; CMA-ES mean %s; %s kept", gen,
                             _describe(ev["best"], cfg), _describe(ev["mean"], cfg), name)
                log.info("generation %d: best %.1f mean %.1f worst %.1f (best so far %.1f), sigma %.4f, %d of %d "
                         "rollouts ended early%s, %.0f steps/s, %.1f s", gen, row["best"], row["mean"], row["worst"],
                         best_fitness, row["sigma"], ended, scores.size, "" if laps is None else f" ({laps} laps)",
                         row["steps_per_s"], seconds)
                _save_state(state_path, cfg, es, gen, best_params, best_fitness, best_eval, history, evals)
                _write_log(out, history, evals)
                bar.update(1)
                bar.set_postfix(best=f"{best_fitness:.0f}", sigma=f"{es.sigma:.3f}")
    finally:
        bar.close()
        if pool is not None:
            pool.close()
    return {"generation": history[-1]["generation"] if history else gen0, "best_fitness": best_fitness, "evals": evals}


def score_generation(cfg: EvolveConfig, solutions: np.ndarray, gen: int, pool, dream) -> tuple[np.ndarray, int, int, Optional[int]]:
    """Scores (P, R) of a generation's candidates, in the dream when ``dream`` is given, else in real races
    on the pool; also total steps, rollouts that ended early, and laps driven (real races only)."""
    seeds = rollout_seeds(cfg, gen)
    if dream is not None:
        res = dream.run(solutions, dream.noise(seeds[0], len(seeds)))
        return res.scores.double().numpy(), int(res.steps.sum()), int(res.done.sum()), None
    results = pool.map([{"kind": "controller", "params": x, "seed": s} for x in solutions for s in seeds])
    scores = np.array([r["score"] for r in results]).reshape(len(solutions), len(seeds))
    return (scores, sum(r["steps"] for r in results), sum(r["end"] not in (None, "max_steps") for r in results),
            sum(r["end"] == "lap" for r in results))


def _describe(ev: dict, cfg: EvolveConfig) -> str:
    dream = f", dream {ev['dream_mean']:.1f} ± {ev['dream_std']:.1f}" if "dream_mean" in ev else ""
    return (f"real {ev['mean']:.1f} ± {ev['std']:.1f} over {cfg.eval_rollouts} seeds ({ev['laps']} laps), "
            f"{ev['noise_free']:.1f} without noise{dream}")


def evaluate_candidates(pool, cfg: EvolveConfig, candidates: dict[str, np.ndarray], dream=None) -> dict[str, dict]:
    """Score each parameter vector in real races on ``eval_rollouts`` noisy seeds (disjoint from training
    seeds) and once without noise, and in the dream when given on as many dream seeds; returns per name:
    mean, std, noise_free, laps, params (and dream_mean, dream_std)."""
    seeds = [10**9 + k for k in range(cfg.eval_rollouts)] + [None]
    tasks = [{"kind": "controller", "params": p, "seed": s} for p in candidates.values() for s in seeds]
    res = pool.map(tasks)
    out = {}
    for j, (name, params) in enumerate(candidates.items()):
        r = res[j * len(seeds):(j + 1) * len(seeds)]
        noisy = [x["score"] for x in r[:-1]]
        out[name] = {"mean": float(np.mean(noisy)), "std": float(np.std(noisy)), "noise_free": r[-1]["score"],
                     "laps": int(sum(x["end"] == "lap" for x in r)), "params": params}
        if dream is not None:
            d = dream.run(np.asarray(params)[None], dream.noise(10**9, cfg.eval_rollouts)).scores[0].double().numpy()
            out[name].update(dream_mean=float(d.mean()), dream_std=float(d.std()))
    return out


def _save_state(path: Path, cfg: EvolveConfig, es, generation: int, best_params: np.ndarray, best_fitness: float,
                best_eval: float, history: list[dict], evals: list[dict]) -> None:
    """``evolve.pt``: everything ``--resume`` needs (CMA-ES state through ``es.pickle_dumps()``)."""
    save_checkpoint(path, "evolve", {"es": es.pickle_dumps(), "generation": generation, "best_params": best_params,
                                     "best_fitness": best_fitness, "best_eval": best_eval, "history": history,
                                     "evals": evals}, cfg)


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
    for f in ("vae", "mdn", "latents", "out", "track", "renderer", "init", "dream_device"):
        p.add_argument(f"--{f.replace('_', '-')}", default=getattr(d, f))
    for f in ("workers", "popsize", "rollouts", "generations", "max_steps", "eval_every", "eval_rollouts", "seed",
              "dagger_rounds", "dagger_episodes", "dream_steps", "dream_starts_every"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(d, f))
    for f in ("sigma0", "action_noise", "task_timeout", "temperature", "race_start"):
        p.add_argument(f"--{f.replace('_', '-')}", type=float, default=getattr(d, f))
    p.add_argument("--dream", action="store_true", help="score candidates in the MDN-RNN's dream, not real races")
    p.add_argument("--resume", action="store_true", help="continue from <out>/evolve.pt")
    p.add_argument("--force", action="store_true", help="start over even if <out>/evolve.pt exists")
    a = p.parse_args(argv)
    cfg = EvolveConfig(**{k: v for k, v in vars(a).items() if k not in ("resume", "force")})
    if cfg.init not in ("dagger", "fit", "zeros") and not Path(cfg.init).is_file():
        p.error(f"--init must be dagger, fit, zeros or a controller checkpoint (no such file: {cfg.init})")
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
