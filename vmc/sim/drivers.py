"""Reference drivers: the yardsticks for the learned agent, and the data-collection policies.

* :class:`CentreLineDriver` follows the centre line from privileged state (``info`` and the track's
  drive graph): it steers towards a point ahead on the centre line, brakes before sharp bends and
  backs up when blocked.
* The game's own AI is not a Python policy: build the env with ``controller='ai'`` and use
  :class:`GameAIDriver`, whose actions the env ignores (the AI's are reported in ``info['action']``).

A driver has ``reset(track, seed)`` and ``act(obs, info) -> (3,) float32 action``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from vmc.sim.track import CentreLine, Stretch, TrackGeometry, heading, wrap_angle


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
    return float(wrap_angle(heading(to) - heading(fwd)))


ROAD_AHEAD_M = (5.0, 10.0, 20.0, 40.0)
"""Distances (m) down the centre line at which :attr:`CentreLineDriver.road_angles` measures the road's direction."""


TURN_RADIUS = ((0.0, 2.0), (10.0, 7.5), (25.0, 15.0), (45.0, 30.0))
"""(speed m/s, turning radius m at full steering) of the game's karts (``kart_characteristics.xml``)."""


def bend_speed(radius: np.ndarray) -> np.ndarray:
    """Speed (m/s) at which full steering turns on ``radius`` metres (:data:`TURN_RADIUS`, extended linearly)."""
    v, r = np.array(TURN_RADIUS).T
    radius = np.asarray(radius, np.float64)
    return np.where(radius > r[-1], v[-1] + (radius - r[-1]) * (v[-1] - v[-2]) / (r[-1] - r[-2]), np.interp(radius, r, v))


@dataclass
class CentreLineDriver:
    """Follows the centre line from privileged state (reads ``info['location']``, ``info['front']`` and
    ``info['speed']``, and the :class:`TrackGeometry`; not pixels).

    * Where: the segment of the drive graph under the kart (:class:`CentreLine`), searched near where it
      was last, so that a bridge above or the other side of a wall is not taken for it. Ahead is the
      main loop, or on an alternative path that path until it meets the main loop again.
    * Steering: pure pursuit, towards the centre-line point ``lookahead_min + lookahead_time x speed``
      metres ahead (at most ``lookahead_max``).
    * Speed: a limit for every metre ahead from how sharply the centre line bends there (the speed at
      which the game's turning radius at full steering, :data:`TURN_RADIUS`, is ``turn_use`` times the
      bend's), lowered before each bend so that braking at ``brake_decel`` reaches it in time. Over the
      limit by ``brake_margin`` the driver brakes (brake entry 1), over it it coasts, under it it
      accelerates fully.
    * Recovery: slower than ``stuck_speed`` and moving less than 0.1 m per step for ``stuck_steps`` steps
      (against a wall), it backs up for ``reverse_steps`` steps at full lock (the first time turning its
      nose towards the centre line ahead, the next time away, and so on), then drives on.

    Deterministic: the same states give the same actions. :attr:`road_angles` says where the road goes from the
    last state it drove in.
    """

    lookahead_min: float = 6.0
    """Metres ahead on the centre line to steer towards when standing still."""
    lookahead_time: float = 0.4
    """Seconds of travel added to the look-ahead (speed x this)."""
    lookahead_max: float = 16.0
    """Longest look-ahead, metres."""
    gain: float = 3.0
    """Steering per radian of heading error to the look-ahead point (saturates at +-1)."""
    max_speed: float = 40.0
    """m/s: the limit on straight road (above the karts' top speed of about 23, reached on boost pads)."""
    turn_use: float = 1.2
    """Bend limits: the speed at which full steering turns on ``turn_use`` times the bend's radius (above 1
    counts on cutting corners)."""
    min_speed: float = 7.0
    """m/s: the lowest limit in any bend."""
    brake_decel: float = 12.0
    """m/s^2 of deceleration planned for when braking (the game gives about 18)."""
    brake_margin: float = 1.5
    """m/s over the limit at which the driver brakes rather than coasts."""
    bend_window: float = 10.0
    """Metres of centre line over which bends are measured (averages out kinks between path nodes)."""
    stuck_speed: float = 1.0
    """m/s under which the kart counts as blocked."""
    stuck_steps: int = 10
    """Blocked steps after which the driver backs up."""
    reverse_steps: int = 12
    """Steps of backing up."""

    def __post_init__(self) -> None:
        self.track: Optional[TrackGeometry] = None

    def reset(self, track: TrackGeometry, seed: Optional[int] = None) -> None:
        if track is not self.track:  # the same track again keeps what was worked out
            self.track = track
            self.line = CentreLine(track, bend_window=self.bend_window)
            self._limits: dict[int, np.ndarray] = {}
        self.segment: Optional[int] = None  # the segment under the kart
        self._blocked = 0  # steps blocked so far
        self._reversing = 0  # steps of backing up left
        self._reversals = 0  # times backed up
        self._backing_up = False
        self._last_location: Optional[np.ndarray] = None
        self._road: Optional[tuple[dict, Stretch, float]] = None  # (info, stretch, metres along it) of the last act

    @property
    def road_angles(self) -> np.ndarray:
        """(4,) signed angles (rad) from the kart's heading to the centre line :data:`ROAD_AHEAD_M` metres ahead, in
        the state last passed to :meth:`act` (zeros before it); worked out only when asked for (collections)."""
        if self._road is None:
            return np.zeros(len(ROAD_AHEAD_M), np.float32)
        info, st, along = self._road
        return np.array([_heading_error(info, st.point_at(along + d)) for d in ROAD_AHEAD_M], np.float32)

    @property
    def backing_up(self) -> bool:
        """Whether the last action was part of a backing-up manoeuvre."""
        return self._backing_up

    def speed_limits(self, segment: int) -> np.ndarray:
        """Speed limit (m/s) at each point of ``segment``'s stretch: the bend's own, lowered so that braking
        at ``brake_decel`` from any point gets down to the limit of every point after it in time."""
        if segment not in self._limits:
            st = self.line.stretch(segment)
            bend = np.clip(bend_speed(self.turn_use / np.maximum(np.abs(st.curvature), 1e-6)), self.min_speed, self.max_speed)
            # v_i^2 = min over j >= i of (bend_j^2 + 2 a (s_j - s_i))
            reach = bend**2 + 2 * self.brake_decel * st.s
            self._limits[segment] = np.sqrt(np.minimum.accumulate(reach[::-1])[::-1] - 2 * self.brake_decel * st.s)
        return self._limits[segment]

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        if self.track is None:
            raise RuntimeError("CentreLineDriver.reset(track) first")
        loc = np.asarray(info["location"], np.float64)
        seg, along, dist = self.line.locate(loc, near=self.segment)
        if dist > 0.5 * self.track.width[seg] + 3.0:  # off the road: rescued, fallen, or lost? Look everywhere.
            anywhere = self.line.locate(loc)
            if anywhere[2] < dist:
                seg, along, dist = anywhere
        self.segment = seg
        st = self.line.stretch(seg)
        speed = float(info["speed"])
        look = min(self.lookahead_max, self.lookahead_min + self.lookahead_time * max(speed, 0.0))
        err = _heading_error(info, st.point_at(along + look))
        self._road = (info, st, along)
        steer = float(np.clip(self.gain * err, -1.0, 1.0))

        # Blocked: slow and not moving. A kart thrown up by an exploding bomb (or lifted by a rescue)
        # stands still on the ground plane for over a second but moves up and down: not blocked.
        moved = np.inf if self._last_location is None else float(np.linalg.norm(loc - self._last_location))
        self._last_location = loc
        if self._reversing == 0:
            self._blocked = self._blocked + 1 if abs(speed) < self.stuck_speed and moved < 0.1 else 0
            if self._blocked >= self.stuck_steps:
                self._blocked, self._reversing = 0, self.reverse_steps
                self._reversals += 1
        self._backing_up = self._reversing > 0
        if self._reversing > 0:  # full lock: away from the target one time, towards it the next
            self._reversing -= 1
            side = -1.0 if self._reversals % 2 else 1.0
            return np.array([side * (np.sign(err) or 1.0), 0.0, 1.0], np.float32)

        limit = float(self.speed_limits(seg)[st.index(along)])
        if speed > limit + self.brake_margin:
            return np.array([steer, 0.0, 1.0], np.float32)
        return np.array([steer, 0.0 if speed > limit else 1.0, 0.0], np.float32)


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


def run_episode(env, driver: Driver, seed: Optional[int] = None, on_step=None, on_reset=None,
                options: Optional[dict] = None) -> EpisodeResult:
    """Drive one episode of ``env`` (an unwrapped or wrapped SuperTuxKartEnv) with ``driver``.

    ``on_reset(obs, info)`` is called after the reset, ``on_step(obs, action, reward, terminated, truncated, info)``
    after every step; ``options`` go to the reset (``{"start": f}``: a race from lap fraction ``f``).
    """
    obs, info = env.reset(seed=seed, options=options)
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
