"""Races in worker processes: the typed tasks the stages send and the worker that drives them.

Every real-game stage (DAgger, CMA-ES fitness, evaluation, reference laps) hands tasks to a pool of game
processes (:class:`vmc.pool.GamePool`) whose workers are built by :func:`make_racer`: it loads the world models
once (sent as weights, not paths) and keeps one game, switching track or controller kind when a task needs it.

* :class:`AgentRace`: the World Models agent drives with a controller's flat parameters. The game is
  deterministic, so a seed varies a race through Gaussian noise on steering and throttle (``seed=None``: no
  noise); ``perturb`` replaces the controller's actions by that many steps of random actions from a seeded
  random step, to measure recovery.
* :class:`DaggerRace`: the agent drives with the centre-line driver taking over with probability ``beta`` and
  labelling every step (see ``vmc.dagger``).
* :class:`ReferenceRace`: the centre-line driver or the game's AI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch

from vmc.checkpoints import WorldModels
from vmc.models.controller import WorldModelAgent
from vmc.sim.drivers import CentreLineDriver, GameAIDriver, run_episode
from vmc.sim.env import EnvConfig, StartError, SuperTuxKartEnv, env_for

log = logging.getLogger("vmc.racing")

LOW, HIGH = np.array([-1.0, 0.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32)


@dataclass(frozen=True)
class AgentRace:
    """One race of the World Models agent."""

    params: np.ndarray
    """Flat controller parameters (:class:`vmc.models.controller.Controller`): (3 (Z + H) + 3,) for a linear one."""
    track: str
    """Race track."""
    seed: Optional[int] = None
    """Seed of the action noise (and of the perturbation); None: no noise, no perturbation."""
    perturb: int = 0
    """Steps of uniformly random actions replacing the controller's, from a random step of the race."""
    perturb_window: int = 300
    """The perturbation starts at a step drawn uniformly from [10, this)."""
    record: bool = False
    """Return the frames (for videos)."""


@dataclass(frozen=True)
class DaggerRace:
    """One DAgger race: the agent drives, the centre-line driver labels every step and takes over with
    probability ``beta``."""

    params: np.ndarray
    """Flat controller parameters."""
    track: str
    """Race track."""
    seed: int
    """Seed of the take-overs and the action noise."""
    beta: float
    """Probability that the centre-line driver's action is taken at a step."""
    perturb: int = 0
    """Steps of uniformly random actions (the driver still labels them) from a random step of the race, so that the
    fit also sees the driver bring the kart back from where random driving leaves it."""
    perturb_window: int = 400
    """The perturbation starts at a step drawn uniformly from [10, this)."""
    recover: bool = False
    """The centre-line driver takes the wheel while it backs up from being blocked, and the blocked steps before
    are labelled with its backing up (see :class:`DaggerDriver`)."""
    crash: bool = False
    """The spell is one steering held at full throttle (:class:`Perturbation`), not random actions."""
    spells: int = 1
    """Spells per race: above 1, one in each 150-step slice of the race (:class:`Perturbation`)."""
    start: float = 0.0
    """Lap fraction where the race starts, the kart at rest on the centre line (``reset(options={"start": ...})``);
    0: the line. Where the game cannot start a race there (:class:`vmc.sim.env.StartError`), it starts at the line."""


@dataclass(frozen=True)
class ReferenceRace:
    """One race of a reference driver (``centreline`` or ``ai``); the game is deterministic, so one is enough."""

    driver: str
    """``centreline`` (vmc's centre-line driver) or ``ai`` (the game's AI)."""
    track: str
    """Race track."""
    record: bool = False
    """Return the frames."""
    max_steps: int = 2000
    """Step limit of this race (a reference drives the whole lap, whatever the agents' limit)."""
    seed: Optional[int] = None
    """``centreline`` only: seed of the agent's :class:`Exploration` (noise and spell) to drive under; None: none."""
    noise: float = 0.0
    """Std of that exploration's noise on steering and throttle."""
    perturb: int = 0
    """Steps of that exploration's spell of random actions."""
    perturb_window: int = 300
    """The spell starts at a step drawn uniformly from [10, this)."""


Task = Union[AgentRace, DaggerRace, ReferenceRace]


@dataclass
class RaceResult:
    """What a race returns to the parent."""

    score: float
    """Sum of rewards."""
    steps: int
    """Agent steps."""
    end: Optional[str]
    """``lap``, ``stuck``, ``off_track`` or ``max_steps``."""
    lap_fraction: float
    """Best progress in [0, 1]."""
    track: str = ""
    """The race's track."""
    start: float = 0.0
    """The lap fraction the race started at (0: the line; see :attr:`DaggerRace.start`)."""
    x: Optional[np.ndarray] = None
    """DAgger: the controller's inputs [z, h] at every step, (T, Z + H)."""
    y: Optional[np.ndarray] = None
    """DAgger: the centre-line driver's action at every step, (T, 3)."""
    backing_up: Optional[np.ndarray] = None
    """DAgger: whether each step's label is the driver backing up (or, with ``recover``, a blocked step relabelled
    with it), (T,) bool."""
    frames: list = field(default_factory=list)
    """Recorded frames, (H, W, 3) uint8 each, the first after reset (when asked for)."""
    actions: Optional[np.ndarray] = None
    """The actions driven, (T, 3) (for the agent: after noise and perturbation)."""

    @property
    def lap(self) -> bool:
        return self.end == "lap"


class Perturbation:
    """A seeded spell of ``steps`` uniformly random actions from a step drawn uniformly from [10, ``window``); no
    spell when ``seed`` is None or ``steps`` 0. The same seed gives the same spell (evaluations compare). With
    ``crash``, the spell is one steering drawn uniformly from [-1, 1] held at full throttle without brake: it drives
    the kart into a wall or off the road more often than random actions, which mostly cancel out.

    With ``spells`` above 1 (DAgger's ``--dagger-spells``), one spell in each :attr:`PERIOD`-step slice of the race
    instead, from a step drawn uniformly from the slice's [10, ``PERIOD`` - ``steps`` - 30), so that at least 40 steps
    of the way back separate two spells of 10 steps; ``window`` is then unused."""

    PERIOD = 150

    def __init__(self, seed: Optional[int], steps: int, window: int, crash: bool = False, spells: int = 1) -> None:
        self.spells: list[range] = []
        self.held: Optional[np.ndarray] = None  # the crash spell's one action
        if steps and seed is not None:
            draw = np.random.default_rng([seed, 7])
            if spells == 1:
                starts = [int(draw.integers(10, max(11, window)))]
            else:
                offsets = draw.integers(10, max(11, self.PERIOD - steps - 30), size=spells)
                starts = [k * self.PERIOD + int(o) for k, o in enumerate(offsets)]
            self.spells = [range(s, s + steps) for s in starts]
            self.rng = np.random.default_rng([seed, 8])
            if crash:  # drawn only then, so that the random spells of a seed stay what they were
                self.held = np.array([self.rng.uniform(-1.0, 1.0), 1.0, 0.0], np.float32)

    @property
    def at(self) -> range:
        """The first spell's steps (empty without a spell)."""
        return self.spells[0] if self.spells else range(0)

    def action(self, t: int) -> Optional[np.ndarray]:
        """The random action (3,) replacing step ``t``'s, or None outside the spells."""
        if not any(t in spell for spell in self.spells):
            return None
        return self.held.copy() if self.held is not None else self.rng.uniform(LOW, HIGH).astype(np.float32)


class Exploration:
    """What an evaluation race adds to a driver's actions: seeded Gaussian noise on steering and throttle (independent
    per step, or correlated from step to step for exploring: ``correlation``) and an optional :class:`Perturbation`
    spell that replaces them (no noise is drawn during the spell). The agent and the centre-line driver share it, so
    that with the same seed both meet the same spell."""

    def __init__(self, noise: float, seed: Optional[int], perturb: int = 0, perturb_window: int = 300,
                 correlation: float = 0.0) -> None:
        if not 0.0 <= correlation < 1.0:
            raise ValueError(f"the noise's correlation must be in [0, 1), got {correlation}")
        self.noise, self.correlation = noise, correlation
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.perturb = Perturbation(seed, perturb, perturb_window)
        self.drift: Optional[np.ndarray] = None

    def _draw(self) -> np.ndarray:
        """This step's noise on steering and throttle (2,): independent draws, or with ``correlation`` an AR(1)
        process of the same std, ``n_t = c n_(t-1) + sqrt(1 - c^2) e_t``, started from its stationary spread."""
        e = self.rng.normal(0.0, self.noise, 2)
        if self.correlation:
            c = self.correlation
            self.drift = e if self.drift is None else c * self.drift + np.sqrt(1.0 - c * c) * e
            return self.drift
        return e

    def __call__(self, t: int, action: np.ndarray) -> np.ndarray:
        """Step ``t``'s action (3,): the spell's, or the driver's ``action`` (3,) with noise."""
        a = self.perturb.action(t)
        if a is None:
            a = action
            if self.rng is not None and self.noise > 0:
                a = a.copy()
                a[:2] += self._draw().astype(np.float32)
                a = np.clip(a, LOW, HIGH).astype(np.float32)
        return a


class AgentDriver:
    """The World Models agent as a driver: frame → z → action from [z, h] → MDN-RNN step, with seeded noise on
    steering and throttle and an optional spell of random actions (:class:`Exploration`)."""

    def __init__(self, agent: WorldModelAgent, noise: float, seed: Optional[int], perturb: int = 0,
                 perturb_window: int = 300, correlation: float = 0.0) -> None:
        self.agent = agent
        self.explore = Exploration(noise, seed, perturb, perturb_window, correlation)
        self.t = 0

    def reset(self, track, seed=None) -> None:
        self.agent.reset()
        self.t = 0

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        z, _, own = self.agent.observe(obs)
        a = self.explore(self.t, own)
        self.agent.advance(z, a)  # the MDN-RNN models what was done, as in the dream
        self.t += 1
        return a


class ExploringDriver:
    """A reference driver under the agent's :class:`Exploration` (its noise and spell for the same seed)."""

    def __init__(self, driver, explore: Exploration) -> None:
        self.driver, self.explore = driver, explore
        self.t = 0

    def reset(self, track, seed=None) -> None:
        self.driver.reset(track, seed)
        self.t = 0

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        own = self.driver.act(obs, info)  # asked at every step, so that its own bookkeeping also sees the spell
        a = self.explore(self.t, own)
        self.t += 1
        return a


class DaggerDriver:
    """Drives with the expert's action with probability ``beta``, else the controller's (plus noise), or random
    actions during an optional :class:`Perturbation`; records the controller's inputs ([z_t, h_t], and s_t with
    the stillness input) with the expert's action as label at every step.

    With ``recover``, the expert also takes the wheel whenever it backs up (it does after ``stuck_steps`` blocked
    steps), as a safety driver would (HG-DAgger, Kelly et al. 2019), and the blocked steps before are labelled
    with its first backing-up action. Without it the labels of a kart pushing against a wall alternate between
    pushing on (the expert waits ``stuck_steps`` steps) and backing up (for ``reverse_steps``) for the same
    picture, and the fit learns neither; with it, blocked means back up."""

    def __init__(self, agent: WorldModelAgent, noise: float, seed: int, beta: float, perturb: int = 0,
                 perturb_window: int = 400, recover: bool = False, crash: bool = False, spells: int = 1) -> None:
        self.agent, self.noise, self.beta, self.recover = agent, noise, beta, recover
        self.rng, self.expert = np.random.default_rng(seed), CentreLineDriver()
        self.perturb = Perturbation(seed, perturb, perturb_window, crash, spells)
        self.t = 0
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.backing_up: list[bool] = []

    def reset(self, track, seed=None) -> None:
        self.agent.reset()
        self.expert.reset(track, seed)
        self.t = 0

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        z, h, own = self.agent.observe(obs)
        label = self.expert.act(obs, info)
        a = label.copy() if self.rng.random() < self.beta else own
        if self.recover and self.expert.backing_up:
            if not (self.backing_up and self.backing_up[-1]):  # its first step: the blocked steps before were the time
                first = max(0, len(self.y) - self.expert.stuck_steps)
                self.y[first:] = [label.copy() for _ in self.y[first:]]
                self.backing_up[first:] = [True] * len(self.backing_up[first:])
            a = label.copy()
        if self.noise > 0:
            a[:2] += self.rng.normal(0.0, self.noise, 2).astype(np.float32)
        spell = self.perturb.action(self.t)  # after the noise draw, so the race's random stream is the same with a spell
        a = np.clip(a if spell is None else spell, LOW, HIGH).astype(np.float32)
        self.agent.advance(z, a)
        self.x.append(self.agent.inputs(z, h))
        self.y.append(label)
        self.backing_up.append(self.expert.backing_up)
        self.t += 1
        return a


def make_racer(models: Optional[WorldModels], env_config: dict, action_noise: float = 0.1) -> Callable[[Task], RaceResult]:
    """Worker set-up: the agent (when ``models`` are given) and one game, built once; returns ``run(task)``.

    ``env_config`` is an :class:`EnvConfig` as a dict; each task's track (and, for the AI, controller kind)
    replace its own, and the game is only rebuilt when they change."""
    agent = models.agent() if models is not None else None
    env: Optional[SuperTuxKartEnv] = None

    def env_with(track: str, controller: str = "player", max_steps: Optional[int] = None) -> SuperTuxKartEnv:
        nonlocal env
        limit = {"max_steps": max_steps} if max_steps else {}
        t0, first = time.perf_counter(), env is None
        env = env_for(env, EnvConfig(**{**env_config, "track": track, "controller": controller, **limit}))
        if first:  # one line per worker, in the stage's log (vmc.workers)
            log.info("game started on %s in %.1f s", track, time.perf_counter() - t0)
        return env

    def run(task: Task) -> RaceResult:
        frames: list[np.ndarray] = []
        actions: list[np.ndarray] = []
        record = getattr(task, "record", False)

        def on_step(obs, action, *_) -> None:
            actions.append(action)
            if record:
                frames.append(obs)

        if isinstance(task, ReferenceRace):
            race = env_with(task.track, "ai" if task.driver == "ai" else "player", task.max_steps)
            driver = GameAIDriver() if task.driver == "ai" else CentreLineDriver()
            if task.seed is not None:
                if task.driver == "ai":
                    raise ValueError("the game's AI drives itself: it cannot race under noise or a spell")
                driver = ExploringDriver(driver, Exploration(task.noise, task.seed, task.perturb, task.perturb_window))
            seed = None
        else:
            if agent is None:
                raise ValueError(f"{type(task).__name__} needs a racer built with world models")
            agent.set_params(task.params)
            race, seed = env_with(task.track), task.seed
            if isinstance(task, DaggerRace):
                driver = DaggerDriver(agent, action_noise, task.seed, task.beta, task.perturb, task.perturb_window,
                                      task.recover, task.crash, task.spells)
            else:
                driver = AgentDriver(agent, action_noise, task.seed, task.perturb, task.perturb_window)

        def race_from(start: float):
            return run_episode(race, driver, seed=seed, on_step=on_step, options={"start": start} if start else None,
                               on_reset=(lambda o, _: frames.append(o)) if record else None)

        start = getattr(task, "start", 0.0)
        with torch.no_grad():
            try:
                r = race_from(start)
            except StartError as err:  # raised by the reset, before the driver's first step
                log.warning("%s: this race starts at the line", err)
                start = 0.0
                r = race_from(start)
        result = RaceResult(r.score, r.steps, r.end, r.lap_fraction, task.track, start=start, frames=frames,
                            actions=np.asarray(actions, np.float32).reshape(-1, 3))
        if isinstance(driver, DaggerDriver):
            result.x, result.y = np.stack(driver.x), np.stack(driver.y)
            result.backing_up = np.asarray(driver.backing_up, bool)
        return result

    return run


def racing_pool(workers: int, models: Optional[WorldModels], env_config: EnvConfig, action_noise: float = 0.1,
                task_timeout: float = 600.0, name: str = "vmc-racer", cluster: str = "local",
                progress: Optional[bool] = None):
    """A pool (:func:`vmc.pool.make_pool`: local processes or Ray actors) of :func:`make_racer` workers (the models go
    to each worker once, as weights); ``workers`` 0: one per core or per CPU of the Ray cluster. The workers' log
    records reach this process's log, and each ``map`` shows a bar over its races (``progress`` None: on a terminal
    only; :func:`vmc.workers.watched_pool`)."""
    from dataclasses import asdict

    from vmc.workers import watched_pool

    return watched_pool(cluster, workers, make_racer, (models, asdict(env_config), action_noise), task_timeout,
                        name=name, progress=progress)
