"""Data-collection policies, each fully determined by its seed.

A purely random driver never gets past the first bend, so the Vision and Memory models would never
see most of the track. The default ``mix`` therefore drives with a noisy centre-line follower and
hands the wheel to a random ("brownian") driver for short spells, so the data also holds the kart
leaving the road and coming back.

* ``brownian``: temporally correlated random actions (Ornstein-Uhlenbeck processes per entry).
* ``centreline``: :class:`vmc.sim.drivers.CentreLineDriver` with correlated noise on steering and throttle.
* ``mix``: switches between the two within an episode.
* ``ai``: the game's own AI (the env is built with ``controller='ai'``; actions come from ``info``).
* ``controller``: a trained controller (``vmc.evolve``'s ``best.pt``) with Gaussian noise on steering and
  throttle: the data of World Models' iterative procedure (``vmc.iterate``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vmc.sim.drivers import CentreLineDriver, GameAIDriver
from vmc.sim.track import TrackGeometry

POLICIES = ("mix", "brownian", "centreline", "ai", "controller")


class OUNoise:
    """Ornstein-Uhlenbeck process, one value per entry, one step per call (dt = 1 step)."""

    def __init__(self, mean: np.ndarray, theta: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> None:
        self.mean, self.theta, self.sigma, self.rng = mean, theta, sigma, rng
        self.x = mean.copy()

    def __call__(self) -> np.ndarray:
        self.x = self.x + self.theta * (self.mean - self.x) + self.sigma * self.rng.standard_normal(self.x.shape)
        return self.x


@dataclass
class BrownianPolicy:
    """Random driving with actions that drift smoothly (correlated over about 1/theta steps)."""

    theta: float = 0.15
    """Pull back to the mean per step (0..1)."""
    sigma: float = 0.3
    """Noise per step."""

    def reset(self, track: Optional[TrackGeometry], seed: int) -> None:
        self.noise = OUNoise(np.array([0.0, 0.7, -0.2]), np.full(3, self.theta), np.array([1.5, 1.0, 1.0]) * self.sigma,
                             np.random.default_rng(seed))

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        a = self.noise()
        return np.array([np.clip(a[0], -1, 1), np.clip(a[1], 0, 1), float(a[2] > 0.5)], np.float32)


@dataclass
class NoisyCentreLinePolicy:
    """The centre-line driver with correlated noise on steering and throttle."""

    steer_sigma: float = 0.12
    """Noise per step on steering (OU, theta 0.2)."""
    throttle_sigma: float = 0.1
    """Noise per step on throttle (OU, theta 0.2)."""

    def reset(self, track: Optional[TrackGeometry], seed: int) -> None:
        self.driver = CentreLineDriver()
        self.driver.reset(track, seed)
        self.noise = OUNoise(np.zeros(2), np.full(2, 0.2), np.array([self.steer_sigma, self.throttle_sigma]),
                             np.random.default_rng(seed))

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        a = self.driver.act(obs, info)
        self.expert, self.expert_road = a.copy(), self.driver.road_angles
        n = self.noise()
        a[0] = np.clip(a[0] + n[0], -1, 1)
        a[1] = np.clip(a[1] + n[1], 0, 1)
        return a


@dataclass
class MixPolicy:
    """Noisy centre-line driving interrupted by random spells, so the data holds recoveries."""

    follow_steps: tuple[int, int] = (20, 80)
    """Range of the length of a centre-line spell, in steps."""
    random_steps: tuple[int, int] = (4, 15)
    """Range of the length of a random spell, in steps."""

    def reset(self, track: Optional[TrackGeometry], seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rng = np.random.default_rng(rng.integers(2**32))
        self.follow, self.random = NoisyCentreLinePolicy(), BrownianPolicy()
        self.follow.reset(track, int(rng.integers(2**32)))
        self.random.reset(track, int(rng.integers(2**32)))
        self.following = True
        self.left = int(self.rng.integers(*self.follow_steps))

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        if self.left <= 0:
            self.following = not self.following
            self.left = int(self.rng.integers(*(self.follow_steps if self.following else self.random_steps)))
        self.left -= 1
        # Both run every step so that each one's noise stays a smooth process across hand-overs.
        follow, random = self.follow.act(obs, info), self.random.act(obs, info)
        self.expert, self.expert_road = self.follow.expert, self.follow.expert_road
        return follow if self.following else random


class AIPolicy(GameAIDriver):
    """The game's AI (env built with ``controller='ai'``); the seed is unused, the AI is deterministic."""


@functools.lru_cache(maxsize=2)
def _agent(path: str):
    from vmc.checkpoints import load_agent

    return load_agent(Path(path))


@dataclass
class ControllerPolicy:
    """A trained controller driving from the frames, with noise on steering and throttle for exploration."""

    path: str = ""
    """Controller checkpoint (``best.pt``); its VAE and MDN-RNN are loaded once per process."""
    noise: float = 0.1
    """Std of the Gaussian noise on steering and throttle."""
    correlation: float = 0.0
    """The noise's correlation from one step to the next (:class:`vmc.racing.Exploration`; 0: independent)."""

    def reset(self, track: Optional[TrackGeometry], seed: int) -> None:
        from vmc.racing import AgentDriver  # the evaluation races' driver: the same noise for the same seed

        self.driver = AgentDriver(_agent(self.path), self.noise, seed, correlation=self.correlation)
        self.driver.reset(track)

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        return self.driver.act(obs, info)


def make_policy(name: str, controller: str = "", noise: float = 0.1, correlation: float = 0.0):
    """A fresh policy by name (one of :data:`POLICIES`); ``controller``, ``noise`` and ``correlation`` are the
    checkpoint and the exploration noise of the ``controller`` policy."""
    table = {"mix": MixPolicy, "brownian": BrownianPolicy, "centreline": NoisyCentreLinePolicy, "ai": AIPolicy,
             "controller": lambda: ControllerPolicy(controller, noise, correlation)}
    if name not in table:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    if name == "controller" and not controller:
        raise ValueError("the controller policy needs a controller checkpoint (--controller)")
    return table[name]()
