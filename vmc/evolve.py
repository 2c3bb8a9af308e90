"""``python -m vmc.evolve``: evolve the controller (World Models' linear one, or with ``--controller-hidden`` units)
with CMA-ES, every candidate scored by real races (or, with ``--dream``, by the MDN-RNN's dream: ``vmc.dream``),
on one track or many.

The starting point (``--init dagger``, the default) imitates the centre-line driver (``vmc.dagger``). Fitness is
a candidate's mean score over ``--rollouts`` seeded races on each of the generation's tracks: all of
``--tracks``, or a seeded subset of ``--tracks-per-generation`` shared by every candidate of the generation, so
that candidates are compared on the same races. The game is deterministic, so a seed varies a race through
Gaussian noise on the controller's steering and throttle (``--action-noise``).

Every generation writes a log line, a row of ``<run>/controller/log.csv`` and ``evolve.pt`` (the CMA-ES state,
the best parameters so far, the history and the config), so ``--resume`` continues after Ctrl-C or kill -9 from
the last finished generation; ``best.pt`` is what ``vmc.play`` and ``vmc.evaluate`` load (the controller with its
VAE and MDN-RNN embedded). Every ``--eval-every`` generations the best candidate so far and the CMA-ES mean are
scored on more seeds on every training track in the real game (and in the dream with ``--dream``); ``best.pt``
is the best of those (with ``--keep mean``: the CMA-ES mean of the latest evaluation).

``evolve.pt`` holds the CMA-ES state as pickled bytes (``es.pickle_dumps()``): it is local resume state, loaded
with pickle on ``--resume`` only. Do not resume from a file someone else made; share ``best.pt``.
"""

from __future__ import annotations

import csv
import logging
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np

from vmc import cli, records
from vmc.checkpoints import WorldModels, load_checkpoint, load_controller, save_checkpoint, save_controller
from vmc.cli import Config, check_non_negative, check_positive, check_share, plain
from vmc.cluster import check_cluster
from vmc.errors import CheckpointError, VmcError
from vmc.evaluate import score_candidates
from vmc.models.controller import Stillness
from vmc.racing import AgentRace, racing_pool
from vmc.runs import RUNS, SEED_STRIDE, check_resume
from vmc.sim.env import EnvConfig, check_track
from vmc.training import plot_curves

log = logging.getLogger("vmc.evolve")
INITS = ("dagger", "fit", "zeros")


@dataclass
class EvolveConfig(Config):
    """Evolve the controller on [z, h] with CMA-ES, scored by real races or the MDN-RNN's dream."""

    run: str = str(RUNS / "lighthouse-small")
    """Run folder: its ``vae.pt``, ``mdn.pt`` and ``latents.h5`` are used; ``controller/`` is written there."""
    vae: str = ""
    """VAE checkpoint (default: the run's ``vae.pt``)."""
    mdn: str = ""
    """MDN-RNN checkpoint (default: the run's ``mdn.pt``)."""
    latents: str = ""
    """Latent file (default: the run's ``latents.h5``): the least-squares start and the dream's start states."""
    tracks: list[str] = field(default_factory=lambda: ["lighthouse"])
    """Training tracks."""
    tracks_per_generation: int = 0
    """Tracks each generation's candidates race on: a seeded subset shared by all candidates (0: all of them)."""
    workers: int = 0
    """Game processes (0: one per core this process may run on)."""
    cluster: str = "local"
    """Where the game workers run: ``local`` (processes on this machine), ``ray`` (join the running Ray cluster of
    ``RAY_ADDRESS`` or ``ray start``), ``ray-local`` (start a private Ray here) or a Ray address (``HOST:6379``,
    ``ray://HOST:10001``); on Ray, ``--workers 0`` is one worker per CPU of the cluster."""
    popsize: int = 64
    """CMA-ES population."""
    rollouts: int = 4
    """Races per candidate and track; fitness is the mean score."""
    generations: int = 300
    """Generations to reach (a resumed run continues up to this number)."""
    sigma0: float = 0.02
    """Initial CMA-ES step size."""
    controller_hidden: int = 0
    """Hidden tanh units of the controller (0: World Models' linear controller on [z, h]). With hidden units, DAgger
    and ``--init fit`` fit it by AdamW instead of least squares, and CMA-ES adapts a diagonal covariance (sep-CMA:
    a full one over thousands of parameters costs more than the races)."""
    controller_still: bool = False
    """The controller also takes a stillness input: how long the picture has barely moved (the VAE mean's step
    under a fifth of its median step over the latent file, decaying; ``vmc.models.controller.Stillness``). A
    blocked kart sees the same picture step after step: with ``--dagger-recover`` it is what backing up can be
    learnt from. Real-game fitness only (the dream does not model it)."""
    init: str = "dagger"
    """Initial mean: ``dagger`` (imitate the centre-line driver with DAgger in the real game), ``fit`` (least
    squares of the recorded actions on [z, h]), ``zeros``, or a controller checkpoint (``best.pt``) to go on from."""
    dagger_rounds: int = 6
    """DAgger rounds for ``init='dagger'`` (round 0: the centre-line driver drives; then the controller does)."""
    dagger_episodes: int = 4
    """Races per DAgger round (tracks in turn)."""
    dagger_perturb: int = 0
    """Steps of random actions in each DAgger race, from a random step (the centre-line driver labels them and the
    way back): data on recovering from being knocked off the line (``vmc.evaluate --perturb``)."""
    dagger_recover: bool = False
    """In DAgger races the centre-line driver takes the wheel while it backs up from being blocked, and the blocked
    steps before are labelled with its backing up: data in which blocked means back up (``vmc.racing.DaggerDriver``)."""
    dagger_crash: bool = False
    """DAgger's spells (``--dagger-perturb``) hold one random steering at full throttle instead of random actions:
    the kart ends against walls and off the road more often (1.8x the backing-up steps in one measurement), and
    the driver labels the way back."""
    dagger_spells: int = 1
    """Spells of ``--dagger-perturb`` steps in each DAgger race: 1, from a random step of the first 400; more, one in
    each 150-step slice of the race (at least 40 steps apart), so that each race holds that many times the data on
    the way back for the same races."""
    dagger_focus: int = 1
    """Races in the next DAgger round for each track whose DAgger race did not lap in a round (the other tracks
    share what is left, in turn); 1: every track in turn, one race each, as without it."""
    dagger_focus_before: float = 0.0
    """With ``--dagger-focus`` above 1, those races start this lap fraction before where the track's failed race
    ended, at rest on the centre line (``reset(options={"start": ...})``), so that their steps are spent where the
    controller failed; 0: from the line. A place the game cannot start a race at (``vmc.sim.env.StartError``) gets a
    race from the line."""
    dagger_recover_weight: int = 1
    """Times each step labelled with backing up counts in DAgger's fits (1: once, like every other step)."""
    action_noise: float = 0.1
    """Std of the Gaussian noise on steering and throttle in seeded rollouts."""
    dream_noise: Optional[float] = None
    """In a ``--dream`` run, the std of that noise in the dream rollouts that score CMA-ES's candidates (None:
    ``--action-noise``). Above it, a candidate scores only if it stays on the road through larger slips than the
    real races' ``--action-noise``: where most candidates lap in the dream, robustness is what sets them apart.
    Evaluations' dream races keep ``--action-noise``, to be compared with the real ones."""
    max_steps: int = 1000
    """Step limit of a race."""
    eval_every: int = 10
    """Score the best parameters on ``eval_rollouts`` more seeds every this many generations (0: never)."""
    eval_rollouts: int = 8
    """Seeds per track of the periodic evaluation."""
    seed: int = 0
    """Seed of CMA-ES, of the rollout seeds and of the track subsets."""
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
    dream_stuck_steps: int = 60
    """The real env's ``stuck`` rule in the dream: a rollout ends when its predicted progress (reward plus the
    0.1 step cost) adds up to less than ``--dream-min-progress`` in this many steps (0: only the done head ends
    rollouts)."""
    dream_min_progress: float = 2.0
    """Predicted progress (score points, 1000 a lap) a dream rollout must make every ``--dream-stuck-steps``."""
    dream_done: Literal["head", "stuck"] = "head"
    """What ends a dream race before its lap: ``head``, the MDN-RNN's done head (its probability above 0.5) or the
    stuck rule; ``stuck``, the stuck rule alone. Trained with ``--done-weight`` 10, the head fires wherever about
    one recorded step in eleven ended an episode, and over the rounds that is where earlier controllers failed:
    it ended half the dream races of controllers that lap in the game (docs/teacher-free.md)."""
    dream_eval_rollouts: int = 0
    """Dream races per candidate at each evaluation of a ``--dream`` run, whose best dream score picks ``best.pt``
    under ``--keep best`` without ``--dream-pick-steps`` (0: ``--eval-rollouts``); dream races are cheap where real
    ones are not, and a pick on few of them is luck."""
    dream_check_rollouts: int = 100
    """Dream races on fresh draws for the picked candidate's reported dream score (``dream_check`` in ``evolve.pt``'s
    evaluations; 0: none): the draws that picked it among the candidates flatter it, by 119-140 points a round on
    average in two teacher-free runs (docs/teacher-free.md)."""
    dream_pick_steps: int = 0
    """Under ``--keep best`` in a ``--dream`` run, pick ``best.pt`` by ``--dream-pick-rollouts`` dream rollouts of
    this many steps from anywhere in the recorded episodes, scored by their mean summed reward head (progress less
    the step cost, cut by the done head or a lap; the stuck rule only acts from ``--dream-stuck-steps`` steps on;
    ``dream_pick`` in the evaluations), instead of by whole dream races from the start (0). Short rollouts carry
    less of the MDN-RNN's compounding error: over two teacher-free runs' rounds, 20-step ones ranked a round's
    candidates at r 0.29 and 0.11 against 0.07 and 0.06 for the recorded whole races (10 a candidate; 60 ranked no
    better, r 0.10) (``benchmarks/dream_ranking.py``; docs/teacher-free.md); yet a run picking by 20-step ones
    drove no lap in 12 rounds where the default lapped in 4 (one seed). Needs ``--dream`` and
    ``--eval-every``; under ``--keep mean`` it is only reported."""
    dream_pick_rollouts: int = 300
    """Rollouts per candidate of ``--dream-pick-steps`` (the same draws for every candidate)."""
    keep: Literal["best", "mean"] = "best"
    """What ``best.pt`` holds: ``best``, the evaluated candidate with the highest score at any evaluation (the
    dream's score in a ``--dream`` run: ``dream_pick`` with ``--dream-pick-steps``); ``mean``, the CMA-ES mean of
    the latest evaluation, whatever the scores say. In the dream the scores rank a round's candidates no better than
    chance (docs/teacher-free.md), so a pick among them is a draw, while the mean is the weighted average of
    the last generation's better half, which no single dream score picked. Needs ``--eval-every``."""
    eval_population: int = 0
    """At each evaluation, also score this many candidates of the last generation (spread over its ranks) in the
    real game and the dream: points for the dream-vs-real correlation (``evals`` in ``evolve.pt``, with each
    candidate's parameters)."""
    task_timeout: float = 600.0
    """Seconds before a silent race counts as hung (its worker is replaced and the race re-run)."""
    resume: bool = False
    """Continue the run's ``controller/evolve.pt`` (same config and models required)."""
    force: bool = False
    """Start over even if the run folder holds an evolution."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"run", "generations", "workers", "task_timeout", "dream_device", "cluster",
                                                       "vae", "mdn", "latents", "renderer"})

    def validate(self) -> None:
        check_positive(popsize=self.popsize, rollouts=self.rollouts, generations=self.generations,
                       max_steps=self.max_steps, eval_rollouts=self.eval_rollouts, dream_steps=self.dream_steps,
                       dream_starts_every=self.dream_starts_every)
        check_non_negative(workers=self.workers, controller_hidden=self.controller_hidden, eval_every=self.eval_every,
                           dagger_rounds=self.dagger_rounds,
                           action_noise=self.action_noise, dream_noise=self.dream_noise or 0.0,
                           tracks_per_generation=self.tracks_per_generation,
                           dream_stuck_steps=self.dream_stuck_steps, dream_min_progress=self.dream_min_progress,
                           eval_population=self.eval_population, dagger_perturb=self.dagger_perturb,
                           dream_eval_rollouts=self.dream_eval_rollouts, dream_check_rollouts=self.dream_check_rollouts,
                           dream_pick_steps=self.dream_pick_steps)
        check_positive(dagger_recover_weight=self.dagger_recover_weight, dagger_spells=self.dagger_spells,
                       dagger_focus=self.dagger_focus, dream_pick_rollouts=self.dream_pick_rollouts)
        check_share(race_start=self.race_start, dagger_focus_before=self.dagger_focus_before)
        if self.dagger_focus_before and self.dagger_focus < 2:
            raise ValueError("--dagger-focus-before places the races of --dagger-focus: it needs --dagger-focus 2 or more")
        if self.dream_noise is not None and not self.dream:
            raise ValueError("--dream-noise is the dream's fitness noise: it needs --dream")
        if self.dream_done != "head" and not (self.dream and self.dream_stuck_steps):
            raise ValueError("--dream-done stuck ends dream races by the stuck rule alone: it needs --dream and "
                             "--dream-stuck-steps above 0")
        if self.dream_pick_steps and not (self.dream and self.eval_every):
            raise ValueError("--dream-pick-steps picks among evaluated candidates by the dream: it needs --dream and "
                             "--eval-every above 0")
        if self.popsize < 2:
            raise ValueError(f"--popsize must be at least 2, got {self.popsize}")
        if self.sigma0 <= 0:
            raise ValueError(f"--sigma0 must be positive, got {self.sigma0}")
        if not self.tracks:
            raise ValueError("--tracks needs at least one track")
        check_cluster(self.cluster)
        if self.init == "dagger" and self.dagger_rounds and self.dagger_episodes < 1:
            raise ValueError(f"--dagger-episodes must be at least 1, got {self.dagger_episodes}")
        if self.init not in INITS and not Path(self.init).is_file():
            raise ValueError(f"--init must be {', '.join(INITS)} or a controller checkpoint (no such file: {self.init})")
        if self.keep not in ("best", "mean"):
            raise ValueError(f"--keep must be best or mean, got {self.keep!r}")
        if self.keep == "mean" and not self.eval_every:
            raise ValueError("--keep mean keeps the mean of the latest evaluation: it needs --eval-every above 0")
        if self.controller_still and self.dream:
            raise ValueError("--controller-still needs real-game fitness: the dream does not model the stillness input")
        for t in self.tracks:
            check_track(t)

    def path(self, name: str) -> Path:
        """``vae``, ``mdn`` or ``latents``: the given file, else the run's."""
        given = getattr(self, name)
        return Path(given) if given else Path(self.run) / {"vae": "vae.pt", "mdn": "mdn.pt", "latents": "latents.h5"}[name]

    @property
    def out(self) -> Path:
        return Path(self.run) / "controller"


PICK_DRAWS = 10**9
"""Seed of the dream races every candidate of an evaluation is scored on (the same for all: under ``--keep best`` they
pick best.pt), whole races or ``--dream-pick-steps`` ones."""
CHECK_DRAWS = PICK_DRAWS + 1
"""Seed of the fresh dream races the picked candidate is scored on again (``dream_check``)."""


def rollout_seeds(cfg: EvolveConfig, generation: int) -> list[int]:
    """The seeds every candidate of ``generation`` is scored on."""
    return [cfg.seed * SEED_STRIDE + generation * cfg.rollouts + r for r in range(cfg.rollouts)]


def generation_tracks(cfg: EvolveConfig, generation: int) -> list[str]:
    """The tracks of ``generation``: all, or a seeded subset of ``tracks_per_generation``, the same for every candidate."""
    k = cfg.tracks_per_generation
    if not k or k >= len(cfg.tracks):
        return list(cfg.tracks)
    pick = np.random.default_rng([cfg.seed, generation, 17]).choice(len(cfg.tracks), size=k, replace=False)
    return [cfg.tracks[i] for i in sorted(pick)]


def eval_seeds(cfg: EvolveConfig) -> list[Optional[int]]:
    """Seeds of the periodic evaluation (disjoint from training seeds), and None: once without noise."""
    return [10**9 + k for k in range(cfg.eval_rollouts)] + [None]


def initial_mean(cfg: EvolveConfig, models: WorldModels, pool, start: Optional[dict] = None) -> np.ndarray:
    """CMA-ES's starting mean for ``cfg.init`` (see :class:`EvolveConfig`); ``start``: the checkpoint ``cfg.init``
    names, if already loaded."""
    from vmc.dagger import dagger, fit_initial_mean

    n_params = models.n_params(cfg.controller_hidden)
    if cfg.init == "zeros":
        return np.zeros(n_params)
    if cfg.init not in INITS:
        ck = start if start is not None else load_controller(Path(cfg.init))[0]
        if ck["params"].shape != (n_params,):
            raise CheckpointError(f"{cfg.init}: {ck['params'].shape[0]} controller parameters, these models with "
                                  f"--controller-hidden {cfg.controller_hidden}"
                                  f"{' --controller-still' if cfg.controller_still else ''} need {n_params}")
        return ck["params"]
    x0 = fit_initial_mean(cfg.path("latents"), models.mdn(), hidden=cfg.controller_hidden, still=models.still)
    if cfg.init == "dagger" and cfg.dagger_rounds:
        return dagger(pool, cfg.tracks, x0, cfg.dagger_rounds, cfg.dagger_episodes, cfg.seed, perturb=cfg.dagger_perturb,
                      recover=cfg.dagger_recover, recover_weight=cfg.dagger_recover_weight, crash=cfg.dagger_crash,
                      spells=cfg.dagger_spells, focus=cfg.dagger_focus, focus_before=cfg.dagger_focus_before)
    return x0


def score_generation(cfg: EvolveConfig, solutions: np.ndarray, gen: int, pool, dream) -> tuple[np.ndarray, int, int, Optional[int]]:
    """Scores (P, tracks x rollouts) of a generation's candidates, in the dream when ``dream`` is given, else in
    real races on the pool; also total steps, rollouts that ended early, and laps driven (real races only)."""
    seeds = rollout_seeds(cfg, gen)
    if dream is not None:
        res = dream.run(solutions, dream.noise(seeds[0], len(seeds)), action_noise=cfg.dream_noise)
        return res.scores.double().numpy(), int(res.steps.sum()), int(res.done.sum()), None
    tracks = generation_tracks(cfg, gen)
    results = pool.map([AgentRace(x, t, s) for x in solutions for t in tracks for s in seeds])
    scores = np.array([r.score for r in results]).reshape(len(solutions), len(tracks) * len(seeds))
    return (scores, sum(r.steps for r in results), sum(r.end not in (None, "max_steps") for r in results),
            sum(r.lap for r in results))


def evaluate_candidates(pool, cfg: EvolveConfig, candidates: dict[str, np.ndarray], dream=None) -> dict[str, dict]:
    """Real-game scores of each candidate on every training track (:func:`vmc.evaluate.score_candidates`), and
    with ``dream`` the dream's on ``--dream-eval-rollouts`` (else as many) dream races from the start (``dream_mean``,
    ``dream_std``, ``dream_races``) and with ``--dream-pick-steps`` the mean score of ``--dream-pick-rollouts`` short
    rollouts from anywhere, the same draws for every candidate (``dream_pick``)."""
    out = score_candidates(pool, candidates, list(cfg.tracks), eval_seeds(cfg))
    if dream is not None:
        picks = (short_dream_scores(dream, np.stack(list(candidates.values())), PICK_DRAWS, cfg.dream_pick_rollouts,
                                    cfg.dream_pick_steps) if cfg.dream_pick_steps else None)
        for i, (name, params) in enumerate(candidates.items()):
            d = dream_races(dream, cfg, params, PICK_DRAWS, cfg.dream_eval_rollouts or cfg.eval_rollouts)
            out[name].update(dream_mean=float(d.mean()), dream_std=float(d.std()), dream_races=len(d))
            if picks is not None:
                out[name]["dream_pick"] = float(picks[i])
    return out


def dream_races(dream, cfg: EvolveConfig, params: np.ndarray, seed: int, races: int) -> np.ndarray:
    """Dream scores (races,) of one candidate in whole races from the start with the real race's step limit, so
    that dream and real scores measure the same thing; the same ``seed`` gives every candidate the same draws."""
    noise = dream.noise(seed, races, steps=cfg.max_steps, race_start=1.0)
    return dream.run(np.asarray(params)[None], noise).scores[0].double().numpy()


def short_dream_scores(dream, params: np.ndarray, seed: int, rollouts: int, steps: int) -> np.ndarray:
    """Mean dream score (P,) of each candidate of ``params`` (P, n_params) over ``rollouts`` rollouts of ``steps``
    steps from anywhere in the recorded episodes; the same ``seed`` gives every candidate the same draws."""
    noise = dream.noise(seed, rollouts, steps=steps, race_start=0.0)
    return dream.run(params, noise).scores.double().mean(1).numpy()


def population_sample(solutions: np.ndarray, fitness: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """``n`` candidates of a generation spread evenly over its fitness ranks (best to worst), named by rank."""
    if n <= 0:
        return {}
    order = np.argsort(-fitness)
    ranks = sorted({int(round(i)) for i in np.linspace(0, len(order) - 1, min(n, len(order)))})
    return {f"rank{r + 1}": solutions[order[r]] for r in ranks}


def _describe(ev: dict, cfg: EvolveConfig) -> str:
    dream = f", dream {ev['dream_mean']:.1f} ± {ev['dream_std']:.1f}" if "dream_mean" in ev else ""
    if "dream_pick" in ev:
        dream += f", dream pick score {ev['dream_pick']:.2f}"
    per_track = (" [" + ", ".join(f"{t} {s:.0f}" for t, s in ev["per_track"].items()) + "]") if len(ev["per_track"]) > 1 else ""
    return (f"real {ev['mean']:.1f} ± {ev['std']:.1f} over {cfg.eval_rollouts} seeds x {len(cfg.tracks)} tracks "
            f"({ev['laps']}/{ev['races']} laps), {ev['noise_free']:.1f} without noise{per_track}{dream}")


class Evolution:
    """The CMA-ES run of one config: its state on disk (``evolve.pt``), ``best.pt``, ``log.csv`` and the curve."""

    def __init__(self, cfg: EvolveConfig, models: WorldModels) -> None:
        self.cfg, self.models, self.out = cfg, models, cfg.out
        self.state_path = self.out / "evolve.pt"
        self.history: list[dict] = []
        self.evals: list[dict] = []
        self.best_params: np.ndarray = np.zeros(0)  # the starting mean's, or evolve.pt's on a resume
        self.best_fitness = -np.inf
        self.best_eval = -np.inf
        self.generation = 0
        self.es = None

    def load(self) -> None:
        """Resume from ``evolve.pt`` (refused when made with another config or other models)."""
        ck = load_checkpoint(self.state_path, "evolve")
        check_resume(self.state_path, {**ck["config"], "built_on": ck.get("built_on", {})},
                     {**self.cfg.record(), "built_on": self.models.built_on()}, self.cfg.RESUME_FREE, self.cfg.defaults())
        self.es = pickle.loads(ck["es"])  # local resume state written by save() (see the module docstring)
        self.history, self.evals = ck["history"], ck["evals"]
        self.best_params, self.best_fitness = np.asarray(ck["best_params"], np.float64), ck["best_fitness"]
        self.generation, self.best_eval = ck["generation"], ck["best_eval"]
        if ck.get("still") is not None:  # the run's own threshold, whatever latent file a resume names
            self.models.still = Stillness(**ck["still"])

    def save(self) -> None:
        save_checkpoint(self.state_path, "evolve", {"es": self.es.pickle_dumps(), "generation": self.generation,
                                                    "best_params": self.best_params, "best_fitness": self.best_fitness,
                                                    "best_eval": self.best_eval, "history": self.history,
                                                    "evals": self.evals, "built_on": self.models.built_on(),
                                                    "still": plain(self.models.still)},
                        self.cfg)

    def save_best(self, params: np.ndarray, fitness: float) -> None:
        save_controller(self.out / "best.pt", self.models, params,
                        {"fitness": float(fitness), "generation": self.generation, "tracks": list(self.cfg.tracks),
                         "track": self.cfg.tracks[0], "max_steps": self.cfg.max_steps}, self.cfg)

    def write_log(self) -> None:
        # Rewritten whole every generation, so a resumed run never has duplicated rows.
        tmp = self.out / "log.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(self.history[0]))
            w.writeheader()
            w.writerows(self.history)
        tmp.replace(self.out / "log.csv")
        plot_curves(self.out / "curve.png", [{"epoch": h["generation"], **h} for h in self.history],
                    ["best", "mean", "best_so_far"], "CMA-ES fitness (mean score over rollouts)")

    def evaluate(self, pool, dream, candidates: dict[str, np.ndarray]) -> None:
        """Score ``candidates``; keep the best in ``best.pt`` when it beats the best evaluation so far (with
        ``--keep mean``: the CMA-ES mean, or the starting mean at generation 0, always). In the dream, "best" is the
        dream's score: the real races only report (the real game is never the fitness)."""
        ev = evaluate_candidates(pool, self.cfg, candidates, dream)
        key = "mean" if dream is None else "dream_pick" if self.cfg.dream_pick_steps else "dream_mean"
        keep_mean = self.cfg.keep == "mean"
        if keep_mean:  # the starting mean is the only candidate at generation 0
            name = "mean" if "mean" in ev else "initial"
        else:
            name = max(ev, key=lambda k: ev[k][key])
        self.evals.append({"generation": self.generation, "which": name,
                           **{k: v for k, v in ev[name].items() if k != "params"},
                           # Each candidate's parameters too, so that it can be scored again later (another
                           # dream, more seeds) without re-running the evolution.
                           "candidates": {k: {m: v[m] for m in ("mean", "std", "noise_free", "laps", "dream_mean",
                                                                        "dream_pick", "params")
                                              if m in v} for k, v in ev.items()}})
        if dream is not None and self.cfg.dream_check_rollouts:
            fresh = dream_races(dream, self.cfg, ev[name]["params"], CHECK_DRAWS, self.cfg.dream_check_rollouts)
            self.evals[-1].update(dream_check=float(fresh.mean()), dream_check_std=float(fresh.std()))
        records.scalars(self.cfg.run, "evolve/eval", {f"real_{k}" if k in ("mean", "std") else k: v
                                                      for k, v in self.evals[-1].items()
                                                      if k not in ("generation", "candidates")}, self.generation)
        if self.history:
            self.history[-1]["real_eval"], self.history[-1]["dream_eval"] = ev[name]["mean"], ev[name].get("dream_mean")
        saved = keep_mean or ev[name][key] > self.best_eval
        self.evals[-1]["saved"] = saved  # which evaluation's pick best.pt holds, for vmc.iterate's row
        if saved:
            self.best_eval = ev[name][key]
            self.save_best(ev[name]["params"], self.best_eval)
        check = self.evals[-1].get("dream_check")
        log.info("generation %d evaluation: %s; %s: %s%s, %s", self.generation,
                 "; ".join(f"{k} {_describe(v, self.cfg)}" for k, v in ev.items()),
                 "kept (--keep mean)" if keep_mean else "the best of these", name,
                 "" if check is None else f" (dream {check:.1f} on {self.cfg.dream_check_rollouts} fresh races)",
                 "now best.pt" if saved else f"below best.pt's {self.best_eval:.1f}, which stays")


def evolve(cfg: EvolveConfig, progress: bool = True) -> dict:
    """Run CMA-ES up to ``cfg.generations``; returns the final state summary."""
    import cma
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    models = WorldModels.load(cfg.path("vae"), cfg.path("mdn"))
    run = Evolution(cfg, models)
    resume = run.state_path.exists() and not cfg.force
    if resume and not cfg.resume:
        raise VmcError(f"{run.state_path} exists: pass --resume to continue that run or --force to start over")
    if cfg.resume and not cfg.force and not run.state_path.exists():
        raise VmcError(f"--resume given but {run.state_path} does not exist")
    if resume:
        run.load()  # with the run's own stillness input
        log.info("resuming %s after generation %d (best %.1f)", run.state_path, run.generation, run.best_fitness)
    start, start_models = load_controller(Path(cfg.init)) if cfg.init not in INITS and not resume else (None, None)
    if cfg.controller_still and models.still is None:
        from vmc.dagger import stillness_for

        # A controller to go on from keeps the threshold it was fitted with (on the same models).
        same = start_models is not None and start_models.still is not None and start_models.built_on() == models.built_on()
        models.still = start_models.still if same else stillness_for(cfg.path("latents"))
    if models.still is not None:
        log.info("stillness input: a step of the VAE mean under %.4f counts as still", models.still.threshold)
    cfg.out.mkdir(parents=True, exist_ok=True)
    first = run.generation + 1 if resume else 0  # TensorBoard step: the generation
    records.start(cfg.run, "evolve", first)  # drops what an interrupted run wrote from there
    records.text(cfg.run, "config/evolve", cfg.record(), first)
    dream = None
    if cfg.dream:
        from vmc.dream import load_dream
        from vmc.training import use_all_cores

        use_all_cores(0, warn=False)  # the dream is tensor work here while the game workers idle; no --threads to advise
        dream = load_dream(models.mdn(), cfg.path("latents"), cfg.temperature, cfg.dream_steps, cfg.action_noise,
                           every=cfg.dream_starts_every, race_start=cfg.race_start, device=cfg.dream_device,
                           stuck_steps=cfg.dream_stuck_steps, min_progress=cfg.dream_min_progress,
                           done_head=cfg.dream_done == "head")
        log.info("dream: %d start states from %s, temperature %.2f, %d steps, ended by %s, on %s", len(dream.starts),
                 cfg.path("latents"), cfg.temperature, cfg.dream_steps,
                 "the done head or the stuck rule" if cfg.dream_done == "head" else "the stuck rule", dream.device)
    # Real races are needed to score candidates, to evaluate them and for DAgger; a dream run without
    # evaluations from a non-DAgger start never starts a game.
    needs_game = not cfg.dream or cfg.eval_every > 0 or (cfg.init == "dagger" and not resume)
    pool = racing_pool(cfg.workers, models, EnvConfig(renderer=cfg.renderer, max_steps=cfg.max_steps), cfg.action_noise,
                       cfg.task_timeout, "vmc-evolve-worker", cfg.cluster) if needs_game else None
    bar = None
    try:
        if not resume:
            x0 = initial_mean(cfg, models, pool, start)
            run.es = cma.CMAEvolutionStrategy(x0, cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9,
                                                               "CMA_diagonal": bool(cfg.controller_hidden)})
            run.best_params = x0
            if cfg.eval_every:  # the starting point is a candidate for best.pt too (DAgger's often drives laps)
                run.evaluate(pool, dream, {"initial": x0})
            # Saved before the first generation, so that an interrupted run resumes without redoing the set-up.
            run.save()
        bar = tqdm(total=cfg.generations, initial=run.generation, unit="gen", disable=not progress, dynamic_ncols=True)
        with logging_redirect_tqdm():
            for gen in range(run.generation + 1, cfg.generations + 1):
                t0 = time.perf_counter()
                solutions = np.asarray(run.es.ask())
                scores, steps, ended, laps = score_generation(cfg, solutions, gen, pool, dream)
                fitness = scores.mean(axis=1)
                run.es.tell(list(solutions), list(-fitness))  # pycma minimises
                run.generation = gen
                i = int(np.argmax(fitness))
                if fitness[i] > run.best_fitness:
                    run.best_fitness, run.best_params = float(fitness[i]), solutions[i]
                    if run.best_eval == -np.inf:  # until the first evaluation, best.pt follows the fitness
                        run.save_best(run.best_params, run.best_fitness)
                seconds = time.perf_counter() - t0
                run.history.append({"generation": gen, "best": float(fitness.max()), "mean": float(fitness.mean()),
                                    "worst": float(fitness.min()), "best_so_far": run.best_fitness,
                                    "sigma": float(run.es.sigma), "ended": ended, "laps": laps,
                                    "steps_per_s": steps / seconds, "seconds": seconds, "real_eval": None,
                                    "dream_eval": None})
                if cfg.eval_every and (gen % cfg.eval_every == 0 or gen == cfg.generations):
                    # The best fitness is one lucky draw of the noise; best.pt is chosen by --keep on more seeds
                    # (the dream's with --dream), among that candidate, the CMA-ES mean and the sampled ones.
                    run.evaluate(pool, dream, {"best": run.best_params, "mean": np.asarray(run.es.result.xfavorite),
                                               **population_sample(solutions, fitness, cfg.eval_population)})
                row = run.history[-1]
                records.scalars(cfg.run, "evolve", row, gen)
                log.info("generation %d: best %.1f mean %.1f worst %.1f (best so far %.1f), sigma %.4f, %d of %d "
                         "rollouts ended early%s, %.0f steps/s, %.1f s", gen, row["best"], row["mean"], row["worst"],
                         run.best_fitness, row["sigma"], ended, scores.size, "" if laps is None else f" ({laps} laps)",
                         row["steps_per_s"], seconds)
                run.save()
                run.write_log()
                bar.update(1)
                bar.set_postfix(best=f"{run.best_fitness:.0f}", sigma=f"{run.es.sigma:.3f}")
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.close()
    return {"generation": run.generation, "best_fitness": run.best_fitness, "evals": run.evals}


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(EvolveConfig, argv, "python -m vmc.evolve")

    def body() -> None:
        summary = evolve(cfg)
        last = summary["evals"][-1] if summary["evals"] else None
        print(f"\n{', '.join(cfg.tracks)}: best fitness {summary['best_fitness']:.1f} after generation {summary['generation']}"
              + (f"; last evaluation {last['mean']:.1f} ± {last['std']:.1f} (noise-free {last['noise_free']:.1f}, "
                 f"{last['laps']}/{last['races']} laps)" if last else "") + f"; wrote {cfg.out / 'best.pt'}")

    return cli.run("vmc.evolve", body)


if __name__ == "__main__":
    raise SystemExit(main())
