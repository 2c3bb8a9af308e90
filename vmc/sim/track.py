"""Track geometry (the centre line from pystk2 path nodes) and the lap-progress score.

Nothing here touches the renderer: :class:`TrackGeometry` is plain numpy built once per race from
``pystk2.Track``, and :class:`LapProgress` is the reward bookkeeping, unit-tested without the game.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FLAG = r'{}\s*=\s*"[yY]'


def race_tracks(data_dir: Path) -> list[str]:
    """Names of the race tracks in an asset ``data/`` folder, sorted.

    The same rule as the game's ``Track::isRaceTrack`` (what ``pystk2.list_tracks(NORMAL_RACE)``
    returns), read from each ``track.xml`` so that a name can be checked before the game starts.
    """
    names = []
    for xml in sorted((data_dir / "tracks").glob("*/track.xml")):
        head = xml.read_text(errors="replace")
        head = head[: head.find(">", head.find("<track")) + 1]
        if not any(re.search(_FLAG.format(flag), head) for flag in ("internal", "arena", "soccer", "cutscene")):
            names.append(xml.parent.name)
    return names


@dataclass(frozen=True)
class TrackGeometry:
    """The drivable centre line of a track as N straight segments.

    Attributes:
        name: track name.
        length: lap length in metres (the game's ``Track.length``).
        start: (N, 3) segment start points (x, y, z; y is up).
        end: (N, 3) segment end points.
        width: (N,) drivable width of each segment in metres.
        distance: (N, 2) distance down the track at each segment's start and end.
    """

    name: str
    length: float
    start: np.ndarray
    end: np.ndarray
    width: np.ndarray
    distance: np.ndarray

    @classmethod
    def from_pystk(cls, name: str, track) -> TrackGeometry:
        """From an updated ``pystk2.Track``."""
        nodes = np.asarray(track.path_nodes, dtype=np.float64)  # (N, 2, 3)
        return cls(
            name=name,
            length=float(track.length),
            start=nodes[:, 0].copy(),
            end=nodes[:, 1].copy(),
            width=np.asarray(track.path_width, dtype=np.float64).reshape(-1),
            distance=np.asarray(track.path_distance, dtype=np.float64).reshape(-1, 2),
        )

    def point_at(self, d: float) -> np.ndarray:
        """(3,) centre-line point at distance ``d`` down the track (wraps around the lap)."""
        d = float(d) % self.length
        i = int(np.searchsorted(self.distance[:, 1], d, side="right"))
        i = min(i, len(self.start) - 1)
        d0, d1 = self.distance[i]
        t = 0.0 if d1 <= d0 else float(np.clip((d - d0) / (d1 - d0), 0.0, 1.0))
        return self.start[i] + t * (self.end[i] - self.start[i])

    def lateral_offset(self, location: np.ndarray) -> tuple[float, int]:
        """Distance (m, ground plane) from ``location`` (3,) to the nearest centre segment, and its index."""
        p = np.asarray(location, dtype=np.float64)[[0, 2]]
        a, b = self.start[:, [0, 2]], self.end[:, [0, 2]]
        ab = b - a
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-9), 0.0, 1.0)
        # Height matters too: on tracks that cross themselves, the nearest segment in the plane
        # may be a bridge above; a vertical gap counts as distance.
        closest = self.start + t[:, None] * (self.end - self.start)
        dist = np.hypot(np.linalg.norm(closest[:, [0, 2]] - p, axis=1), 0.5 * (closest[:, 1] - location[1]))
        i = int(np.argmin(dist))
        return float(dist[i]), i

    def beyond_road(self, dist: float, segment: int, margin: float) -> bool:
        """True when ``dist`` metres from the centre of ``segment`` is more than ``margin`` metres
        outside its drivable width (``dist, segment`` as :meth:`lateral_offset` returns them)."""
        return dist > 0.5 * self.width[segment] + margin

    def is_off_track(self, location: np.ndarray, margin: float) -> bool:
        """True when ``location`` is more than ``margin`` metres outside the drivable width."""
        return self.beyond_road(*self.lateral_offset(location), margin)


class LapProgress:
    """Reward bookkeeping in the spirit of CarRacing.

    Progress is the lap fraction covered, in [0, 1]. Each step earns ``lap_reward`` times the *new*
    progress (beyond the best so far, so driving backwards and forwards again earns nothing twice)
    minus ``step_cost``. A whole lap is worth ``lap_reward``.

    The game measures distance by the nearest piece of road, so a kart far off the road (or on a
    shortcut) can appear to jump tens or hundreds of metres ahead in one step. Progress therefore
    follows the game's distance step by step: a forward jump of more than ``max_gain_m`` in one step
    is not followed, and a backward jump (a rescue, or the end of such a glitch) moves progress back
    to the game's distance only if that is behind it.
    """

    def __init__(self, length: float, lap_reward: float = 1000.0, step_cost: float = 0.1, max_gain_m: float = 10.0) -> None:
        if length <= 0:
            raise ValueError(f"track length must be positive, got {length}")
        self.length = float(length)
        self.lap_reward = float(lap_reward)
        self.step_cost = float(step_cost)
        self.max_gain_m = float(max_gain_m)
        self.reset()

    def reset(self) -> None:
        """Start a new episode: no progress, no score, no steps."""
        self.best = 0.0
        self.current = 0.0
        self._last_raw = 0.0  # karts start on (or just behind) the line
        self.score = 0.0
        self.steps = 0
        self.steps_since_progress = 0

    def update(self, overall_distance: float, min_gain_m: float = 0.05) -> float:
        """Account for one step that ended at the game's ``overall_distance`` (m, negative before
        the start line); returns the step's reward.

        ``min_gain_m`` is how much new progress resets the stuck counter, so that creeping forward
        by millimetres against a wall does not count as moving.
        """
        raw = max(0.0, float(overall_distance))
        delta = raw - self._last_raw
        if abs(delta) <= self.max_gain_m:
            self.current = max(0.0, self.current + delta)
        elif delta < 0:  # a rescue, or back on the road after a glitch: never ahead of where we were
            self.current = min(self.current, raw)
        self._last_raw = raw
        frac = min(1.0, self.current / self.length)
        gain = max(0.0, frac - self.best)
        self.best += gain
        reward = self.lap_reward * gain - self.step_cost
        self.score += reward
        self.steps += 1
        self.steps_since_progress = 0 if gain * self.length >= min_gain_m else self.steps_since_progress + 1
        return reward

    @property
    def lap_done(self) -> bool:
        """True once the whole lap has been covered."""
        return self.best >= 1.0
