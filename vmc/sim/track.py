"""Track geometry (the centre line from pystk2 path nodes) and the lap-progress score.

Nothing here touches the renderer: :class:`TrackGeometry` is plain numpy built once per race from
``pystk2.Track``, :class:`CentreLine` is what a driver makes of it (where the kart is on the drive graph,
what lies ahead), and :class:`LapProgress` is the reward bookkeeping, unit-tested without the game.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional

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


def reversible_tracks(data_dir: Path) -> list[str]:
    """The race tracks of :func:`race_tracks` that the game can race the other way round (``reverse="Y"`` in their
    ``track.xml``, what the game's ``Track::reverseAvailable`` reads), sorted."""
    return [n for n in race_tracks(data_dir)
            if re.search(_FLAG.format("reverse"), (data_dir / "tracks" / n / "track.xml").read_text(errors="replace"))]


@dataclass(frozen=True)
class TrackGeometry:
    """The drivable centre line of a track as N straight segments.

    Attributes:
        name: track name.
        length: lap length in metres (the game's ``Track.length``).
        start: (N, 3) segment start points (x, y, z; y is up).
        end: (N, 3) segment end points.
        width: (N,) drivable width of each segment in metres.
        distance: (N, 2) distance down the track at each segment's start and end. On tracks with
            several paths, each alternative path is numbered on from where it leaves the main loop, so
            distances jump where paths of different lengths meet again.
        successors: for each segment, the segments that may follow it (the game's drive graph); None
            for a single loop (each segment followed by the next, the last by the first). In the game
            the main loop is segments 0..M in order and each alternative path comes after it.
    """

    name: str
    length: float
    start: np.ndarray
    end: np.ndarray
    width: np.ndarray
    distance: np.ndarray
    successors: Optional[tuple[tuple[int, ...], ...]] = None

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
            successors=tuple(tuple(int(j) for j in nxt) for nxt in track.successors),
        )

    @cached_property
    def loop(self) -> np.ndarray:
        """:meth:`main_loop`, computed once."""
        return self.main_loop()

    def main_loop(self) -> np.ndarray:
        """Indices of the segments of the main loop, in driving order: from segment 0, always the first
        successor, until back at 0 (all segments in order when the graph is unknown or does not close)."""
        n = len(self.start)
        if self.successors is None:
            return np.arange(n)
        loop, i, seen = [0], 0, {0}
        while True:
            nxt = self.successors[i]
            if not nxt:
                return np.arange(n)
            i = nxt[0]
            if i == 0:
                return np.array(loop)
            if i in seen:
                return np.arange(n)
            loop.append(i)
            seen.add(i)

    def point_at(self, d: float) -> np.ndarray:
        """(3,) centre-line point at distance ``d`` down the track (wraps around the lap), on the main loop."""
        d = float(d) % self.length
        loop = self.loop  # alternative paths have their own distances, out of order
        ends = self.distance[loop, 1]
        i = loop[min(int(np.searchsorted(ends, d, side="right")), len(loop) - 1)]
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


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles (rad) wrapped into [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def heading(vector: np.ndarray) -> np.ndarray:
    """Heading (rad) of ground-plane direction(s) ``(..., 3)`` (x, y, z; y up), in the game's steering sense."""
    v = np.asarray(vector, dtype=np.float64)
    return np.arctan2(v[..., 0], v[..., 2])


@dataclass(frozen=True)
class Stretch:
    """The centre line around one segment, resampled every metre or so, as a driver sees it: from a little
    behind the segment's start to far ahead, following the drive graph (first successors).

    Attributes:
        s: (M,) arc length of each point, metres from the segment's start (negative behind it).
        points: (M, 3) points.
        width: (M,) drivable width (m) at each point.
        curvature: (M,) signed curvature (rad/m; positive where positive steering turns) averaged over
            the ``bend_window`` metres centred on each point.
    """

    s: np.ndarray
    points: np.ndarray
    width: np.ndarray
    curvature: np.ndarray

    def index(self, s: float) -> int:
        """Index of the point at or just before arc length ``s`` (clipped to the stretch)."""
        return int(np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.s) - 1))

    def point_at(self, s: float) -> np.ndarray:
        """(3,) point at arc length ``s`` (clipped to the stretch)."""
        return np.array([np.interp(s, self.s, self.points[:, k]) for k in range(3)])


class CentreLine:
    """The centre line of a track as a driver follows it: where a kart is on the drive graph, and what
    lies ahead of it. Ahead means the first successor at every fork: the main loop, or on an alternative
    path that path until it meets the main loop again.

    Args:
        track: the geometry (with its ``successors``; without, the segments form one loop).
        spacing: metres between the points of a :class:`Stretch`.
        behind: metres of centre line before a segment's start in its stretch.
        ahead: metres of centre line after a segment's start in its stretch.
        bend_window: metres over which curvature is averaged (smooths the kinks between path nodes).
    """

    def __init__(self, track: TrackGeometry, spacing: float = 1.0, behind: float = 10.0, ahead: float = 120.0,
                 bend_window: float = 10.0) -> None:
        self.track = track
        n = len(track.start)
        self.successors = track.successors if track.successors is not None else tuple(((i + 1) % n,) for i in range(n))
        # Before each segment: the one whose first successor it is (the path a driver came along), else any.
        pred: list[list[int]] = [[] for _ in range(n)]
        for i, nxt in enumerate(self.successors):
            for k, j in enumerate(nxt):
                if k == 0:
                    pred[j].insert(0, i)
                else:
                    pred[j].append(i)
        self.predecessors = tuple(tuple(p) for p in pred)
        self.spacing, self.behind, self.ahead, self.bend_window = spacing, behind, ahead, bend_window
        self._stretches: dict[int, Stretch] = {}
        self._near: dict[tuple[int, float], np.ndarray] = {}
        self._seg_len = np.linalg.norm(track.end - track.start, axis=1)

    def stretch(self, segment: int) -> Stretch:
        """The :class:`Stretch` around ``segment`` (computed once)."""
        if segment not in self._stretches:
            self._stretches[segment] = self._make_stretch(segment)
        return self._stretches[segment]

    def _make_stretch(self, segment: int) -> Stretch:
        t = self.track
        half = 0.5 * self.bend_window
        back, i, length = [], segment, 0.0
        while length < self.behind + half and self.predecessors[i]:
            i = self.predecessors[i][0]
            back.append(i)
            length += self._seg_len[i]
        fwd, i, length = [segment], segment, self._seg_len[segment]
        while length < self.ahead + half and self.successors[i]:
            i = self.successors[i][0]
            fwd.append(i)
            length += self._seg_len[i]
        order = back[::-1] + fwd
        corners = np.concatenate([t.start[order], t.end[order[-1:]]])
        corner_s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(corners, axis=0), axis=1))])
        corner_s -= corner_s[len(back)]  # 0 at the segment's start
        s = np.arange(np.ceil(corner_s[0] / self.spacing), np.floor(corner_s[-1] / self.spacing) + 1) * self.spacing
        points = np.stack([np.interp(s, corner_s, corners[:, k]) for k in range(3)], axis=1)
        piece = np.clip(np.searchsorted(corner_s, s, side="right") - 1, 0, len(order) - 1)
        hdg = heading(np.diff(points, axis=0))
        hdg = np.concatenate([hdg, hdg[-1:]])
        k = max(1, int(round(half / self.spacing)))
        turn = wrap_angle(hdg[np.minimum(np.arange(len(s)) + k, len(s) - 1)] - hdg[np.maximum(np.arange(len(s)) - k, 0)])
        return Stretch(s=s, points=points, width=t.width[np.array(order)[piece]], curvature=turn / (2 * k * self.spacing))

    def locate(self, location: np.ndarray, near: Optional[int] = None, reach: float = 40.0,
               height_weight: float = 1.0) -> tuple[int, float, float]:
        """The segment nearest ``location`` (3,), how far along it (m) and how far from it (m).

        With ``near`` (the segment where the kart was last), only the segments within ``reach`` metres
        of it along the graph, forwards and backwards, are searched, so that a kart is not moved to
        another part of the track that passes close by (a bridge above, the other side of a wall).
        Height differences count ``height_weight`` times.
        """
        t = self.track
        if near is None:
            idx = np.arange(len(t.start))
        else:
            if (near, reach) not in self._near:
                around = self._within(near, reach, self.successors) | self._within(near, reach, self.predecessors)
                self._near[near, reach] = np.array(sorted(around))
            idx = self._near[near, reach]
        a, b = t.start[idx], t.end[idx]
        p = np.asarray(location, dtype=np.float64)
        ab, ap = b - a, p - a
        u = np.clip((ap[:, 0] * ab[:, 0] + ap[:, 2] * ab[:, 2]) / np.maximum(ab[:, 0] ** 2 + ab[:, 2] ** 2, 1e-9), 0.0, 1.0)
        d = a + u[:, None] * ab - p
        dist = np.sqrt(d[:, 0] ** 2 + d[:, 2] ** 2 + (height_weight * d[:, 1]) ** 2)
        j = int(np.argmin(dist))
        return int(idx[j]), float(u[j] * self._seg_len[idx[j]]), float(dist[j])

    def _within(self, start: int, reach: float, links: tuple[tuple[int, ...], ...]) -> set[int]:
        """Segments reachable from ``start`` through ``links`` (successors or predecessors) until the lengths
        of the segments passed add up to ``reach`` metres."""
        found, todo = {start}, [(start, 0.0)]
        while todo:
            i, d = todo.pop()
            for j in links[i]:
                if j not in found and d < reach:
                    found.add(j)
                    todo.append((j, d + self._seg_len[j]))
        return found


class LapProgress:
    """Reward bookkeeping in the spirit of CarRacing.

    Progress is the lap fraction covered, in [0, 1]. Each step earns ``lap_reward`` times the *new*
    progress (beyond the best so far, so driving backwards and forwards again earns nothing twice)
    minus ``step_cost``. A whole lap is worth ``lap_reward``.

    Progress follows the game's distance down the track, step by step. The game measures that distance
    from the piece of road under the kart; off the road (or in the air) it takes a nearby piece, so the
    distance can jump by tens or hundreds of metres in one step, and back. So, with ``on_road`` the
    game's word on whether the kart is on the road at the end of each step:

    * between two steps on the road, progress follows the game's distance, jumps included: those are
      where two paths of the track meet again (each alternative path is numbered on from where it
      leaves the main loop, so paths of different lengths meet with a jump of up to 75 m); but not a
      change of more than half a lap, which is the game's distance counting a whole lap for one step
      as the kart crosses the line (seen on scotland in reverse: -0.5, 1328.7, 0.5 m);
    * back on the road after steps off it (a rescue, a jump, a glitch of the distance), progress is
      where it was at the last step on the road plus the game's change of distance since, but at most
      ``max_gain_m`` per step;
    * off the road, changes of up to ``max_gain_m`` per step are followed; a larger jump forward is not,
      and one backward (a rescue, or the end of a jump) moves progress back to the game's distance
      only if that is behind it.

    Without ``on_road`` (False, the default) only the last rule applies.

    With ``signed``, a step's reward is instead ``lap_reward`` times the change of that progress (minus
    ``step_cost``): negative where a rescue puts the kart back down the track or it drives backwards, and the same
    again when it drives forwards over that ground. A lap sums to the same either way, and :attr:`score`,
    :attr:`best`, the stuck rule and :attr:`lap_done` stay those of the best progress. What the signed reward pays
    depends on where the kart is, not on how far it once got, which a world model sees from frames (a rescue) but
    not from a best-so-far it never saw (the game's reward after a rescue is 0 for as long as the kart re-drives).
    """

    def __init__(self, length: float, lap_reward: float = 1000.0, step_cost: float = 0.1, max_gain_m: float = 10.0,
                 signed: bool = False) -> None:
        if length <= 0:
            raise ValueError(f"track length must be positive, got {length}")
        self.signed = bool(signed)
        self.length = float(length)
        self.lap_reward = float(lap_reward)
        self.step_cost = float(step_cost)
        self.max_gain_m = float(max_gain_m)
        self.reset()

    def reset(self, start: float = 0.0) -> None:
        """Start a new episode: no score, no steps, and the progress of a kart ``start`` metres down the track (0: on
        or just behind the line; more for a race started mid-track, whose lap ends at the line)."""
        if not 0.0 <= start < self.length:
            raise ValueError(f"start must be in [0, {self.length:.1f}) m, got {start}")
        self.best = start / self.length
        self.current = float(start)
        self._frac = self.best  # the lap fraction of ``current`` at the last step, for the signed reward
        self._last_raw = float(start)
        self._on_road = (float(start), float(start), 0)  # game distance, progress and step count the last time on the road
        self._last_on_road = start > 0.0  # a mid-track start puts the kart on the road
        self.score = 0.0
        self.steps = 0
        self.steps_since_progress = 0

    def update(self, overall_distance: float, min_gain_m: float = 0.05, on_road: bool = False) -> float:
        """Account for one step that ended at the game's ``overall_distance`` (m, negative before
        the start line); returns the step's reward.

        ``min_gain_m`` is how much new progress resets the stuck counter, so that creeping forward
        by millimetres against a wall does not count as moving. ``on_road``: the game had the kart on
        the road at the end of the step (its ``is_on_road``); False, the default, trusts no jump.
        """
        raw = max(0.0, float(overall_distance))
        delta = raw - self._last_raw
        if on_road and self._last_on_road and abs(delta) > 0.5 * self.length:
            raw, delta = self._last_raw, 0.0  # the lap counted for one step at the line: the reading is dropped
        if on_road and self._last_on_road:
            self.current = max(0.0, self.current + delta)  # small steps, and where two paths meet
        elif on_road:  # back on the road: from where we were when we left it
            raw0, current0, step0 = self._on_road
            self.current = max(0.0, current0 + min(raw - raw0, self.max_gain_m * (self.steps - step0 + 1)))
        elif abs(delta) <= self.max_gain_m:
            self.current = max(0.0, self.current + delta)
        elif delta < 0:  # off the road, a rescue or back from a jump: never ahead of the game
            self.current = min(self.current, raw)
        if on_road:
            self._on_road = (raw, self.current, self.steps + 1)
        self._last_raw = raw
        self._last_on_road = bool(on_road)
        frac = min(1.0, self.current / self.length)
        gain = max(0.0, frac - self.best)
        self.best += gain
        self.score += self.lap_reward * gain - self.step_cost
        change, self._frac = frac - self._frac, frac
        reward = self.lap_reward * (change if self.signed else gain) - self.step_cost
        self.steps += 1
        self.steps_since_progress = 0 if gain * self.length >= min_gain_m else self.steps_since_progress + 1
        return reward

    @property
    def lap_done(self) -> bool:
        """True once the whole lap has been covered."""
        return self.best >= 1.0
