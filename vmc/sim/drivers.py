"""Reference drivers: the yardsticks for the learned agent, and the data-collection policies.

* :class:`CentreLineDriver` follows the track's centre line from privileged state (``info``): it
  steers towards a point some metres ahead on the centre line and lifts off before sharp bends.
* The game's own AI is not a Python policy: build the env with ``controller='ai'`` and use
  :class:`GameAIDriver`, whose actions the env ignores (the AI's are reported in ``info['action']``).

A driver has ``reset(track, seed)`` and ``act(obs, info) -> (3,) float32 action``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from vmc.sim.track import TrackGeometry


class Driver(Protocol):
    """What :func:`run_episode` and the collectors drive with."""

    def reset(self, track: TrackGeometry, seed: Optional[int] = None) -> None:
        """Start an episode on ``track``."""

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """(3,) action (steer, acceleration, brake) for the current observation / state."""


def _heading_error(info: dict, target: np.ndarray) -> float:
    """Signed angle (rad, ground plane) from the kart's heading to ``target``, in the sense of the game's steering."""
    loc = np.asarray(info["location"], np.float64)
    fwd = np.asarray(info["front"], np.float64) - loc
    to = np.asarray(target, np.float64) - loc
    a = np.arctan2(fwd[0], fwd[2])
    b = np.arctan2(to[0], to[2])
    return float((b - a + np.pi) % (2 * np.pi) - np.pi)


@dataclass
class CentreLineDriver:
    """Pure-pursuit follower of the centre line (privileged: reads ``info``, not pixels)."""

    lookahead: float = 12.0
    """Metres ahead on the centre line to steer towards."""
    gain: float = 2.5
    """Steering per radian of heading error (saturates at +-1)."""
    brake_lookahead: float = 30.0
    """Metres ahead to look for bends to slow down for."""
    max_bend: float = 0.6
    """Heading change (rad) to the far point above which the driver lifts off at speed."""
    slow_speed: float = 14.0
    """m/s under which the driver never lifts off."""

    def __post_init__(self) -> None:
        self.track: Optional[TrackGeometry] = None

    def reset(self, track: TrackGeometry, seed: Optional[int] = None) -> None:
        self.track = track

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        if self.track is None:
            raise RuntimeError("CentreLineDriver.reset(track) first")
        d = info["distance"]
        err = _heading_error(info, self.track.point_at(d + self.lookahead))
        steer = float(np.clip(self.gain * err, -1.0, 1.0))
        bend = abs(_heading_error(info, self.track.point_at(d + self.brake_lookahead)))
        fast = info["speed"] > self.slow_speed
        accel = 0.3 if (fast and bend > self.max_bend) else 1.0
        return np.array([steer, accel, 0.0], np.float32)


class GameAIDriver:
    """Placeholder policy for an env built with ``controller='ai'``: the game's AI drives."""

    def reset(self, track: TrackGeometry, seed: Optional[int] = None) -> None:
        pass

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        return np.zeros(3, np.float32)


@dataclass
class EpisodeResult:
    """Summary of one episode."""

    score: float
    """Sum of rewards."""
    steps: int
    """Agent steps taken."""
    end: Optional[str]
    """Why it ended (``lap``, ``stuck``, ``off_track``, ``max_steps``)."""
    lap_fraction: float
    """Best progress in [0, 1]."""
    lap_time: float
    """Game time (s) since the start."""


def run_episode(env, driver: Driver, seed: Optional[int] = None, on_step=None, on_reset=None) -> EpisodeResult:
    """Drive one episode of ``env`` (an unwrapped or wrapped SuperTuxKartEnv) with ``driver``.

    ``on_reset(obs, info)`` is called after the reset, ``on_step(obs, action, reward, terminated, truncated, info)``
    after every step.
    """
    obs, info = env.reset(seed=seed)
    if on_reset is not None:
        on_reset(obs, info)
    driver.reset(env.unwrapped.track, seed)
    while True:
        action = driver.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        if on_step is not None:
            on_step(obs, action, reward, terminated, truncated, info)
        if terminated or truncated:
            return EpisodeResult(info["score"], info["steps"], info["end"], info["lap_fraction"], info["lap_time"])
