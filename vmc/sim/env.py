"""``vmc/SuperTuxKart-v0``: one kart on a SuperTuxKart track, seen through its own camera.

Observation: the kart camera's image, ``Box(0, 255, (H, W, 3), uint8)`` (64x64 by default),
rendered by the game at that size (no resizing in Python), without the minimap overlay.

Action: ``Box([-1, 0, 0], [1, 1, 1])`` = (steer, acceleration, brake); brake is on above 0.5. With
``nitro``, ``drift`` or ``items`` turned on, one more entry each in that order, on above 0.5.

Reward: 1000 x the new fraction of the lap covered (progress along the centre line beyond the best
so far), minus 0.1 per step (0.1 s of game time); with ``EnvConfig.reward="signed"``, 1000 x the change of
that progress instead (negative where a rescue takes the kart back), which sums to the same for a lap;
``info['score']`` is the best-progress sum under both. Terminated when the lap is done, when the kart made
no progress for ``stuck_steps`` steps, or when it was far off the track for ``offtrack_steps`` steps;
truncated after ``max_steps``. ``reset`` runs the start countdown (about 5 s of game time) so that
the first observation is the moment the kart can drive.

``info`` carries privileged state for analysis only (see :meth:`SuperTuxKartEnv.step`).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np

from vmc.sim import game
from vmc.sim.assets import ensure_assets
from vmc.sim.engine import GameClock, SceneDraws
from vmc.sim.restart import NOT_REPRODUCIBLE, restart_fix
from vmc.sim.track import LapProgress, TrackGeometry, race_tracks, reversible_tracks

log = logging.getLogger(__name__)
CONTROLLERS = ("player", "ai")
REWARDS = ("best", "signed")


@dataclass
class EnvConfig:
    """Everything that defines an environment; saved with every dataset and checkpoint."""

    track: str = "lighthouse"
    """Race track name: any of :func:`list_tracks`, or one with the ``-reverse`` suffix (raced the other way)."""
    width: int = 64
    """Observation width in pixels; the game renders at this size."""
    height: int = 64
    """Observation height in pixels."""
    renderer: str = "llvmpipe"
    """OpenGL renderer: ``llvmpipe`` (Mesa's JIT rasteriser, the default and fastest on CPUs), ``softpipe``
    (Mesa's reference rasteriser, 3-7x slower), ``system`` (leave the GL choice alone, e.g. a GPU) or
    ``none`` (physics only: observations are black)."""
    anisotropic: int = 0
    """Anisotropic texture filtering level (0, 2, 4, 8, 16). 0 by default: llvmpipe stalls for seconds
    to minutes on some frames with it on (see ``vmc.sim.engine``)."""
    render_threads: int = 0
    """llvmpipe rasteriser threads; 0 renders in the game's thread (one core per env process)."""
    max_texture_size: int = 0
    """Textures are scaled down to this size (pixels) when the track loads; 0 keeps the game's 512."""
    action_repeat: int = 1
    """Game time per step is 0.1 s x this, with one frame rendered (the one the agent sees): the action is
    held for the whole step. Step limits and the step cost count agent steps."""
    graphics: str = "ld"
    """pystk2 graphics preset: ``ld``, ``sd`` or ``hd``."""
    controller: str = "player"
    """``player``: the action drives the kart; ``ai``: the game's own AI drives and actions are ignored
    (the AI's action is reported in ``info['action']``)."""
    max_steps: int = 1000
    """Episode is truncated after this many steps (0.1 s each)."""
    reward: str = "best"
    """What a step pays (:class:`vmc.sim.track.LapProgress`): ``best``, 1,000 times the lap's new best progress
    (CarRacing's rule: ground covered again pays nothing); ``signed``, 1,000 times the change of the lap's progress,
    negative when a rescue or reversing takes the kart back. Both minus 0.1 a step, both sum to the same for a lap,
    and ``info['score']`` is the ``best`` sum in both."""
    stuck_steps: int = 60
    """Terminate after this many consecutive steps without new progress (0 disables)."""
    offtrack_steps: int = 30
    """Terminate after this many consecutive steps far off the track (0 disables)."""
    offtrack_margin: float = 5.0
    """Metres beyond the drivable half-width at which the kart counts as far off the track."""
    nitro: bool = False
    """Add a nitro action entry (on above 0.5)."""
    drift: bool = False
    """Add a drift (skid) action entry (on above 0.5)."""
    items: bool = False
    """Add a fire-item action entry (on above 0.5)."""
    kart: str = ""
    """Kart model name (empty: the game's default)."""
    depth: bool = False
    """Also give the camera's depth buffer, ``info['depth']`` (H, W) uint16: the z-buffer in [0, 1] times 65,535
    (65,535: the far plane, e.g. the sky), aligned with the frame; -log(1 - z) grows as the log of the distance.
    For vision's auxiliary targets; off by default, since reading it back costs time."""
    reuse_race: bool = True
    """Reset with ``race.restart()`` instead of loading the track again (20-65 ms instead of 0.3-3.7 s), with the
    state a restart leaves behind put back (``vmc.sim.restart``), so that every episode's frames equal those of the
    race's first one. Tracks where that does not hold, the game's AI and other pystk2 builds load a new race."""

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {self.controller!r}; choose one of {', '.join(CONTROLLERS)}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARDS)}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 1 <= self.action_repeat <= 10:
            raise ValueError(f"action_repeat must be 1..10, got {self.action_repeat}")
        if self.depth and self.renderer == "none":
            raise ValueError("depth needs a renderer (renderer='none' draws nothing)")
        self.graphics_spec()  # validates renderer, preset and resolution

    def graphics_spec(self) -> game.GraphicsSpec:
        """The process-wide graphics set-up this config needs."""
        return game.GraphicsSpec(self.renderer, self.width, self.height, self.graphics, self.anisotropic, self.render_threads,
                                 self.max_texture_size)


def list_tracks() -> list[str]:
    """Names of all race tracks installed (what ``pystk2.list_tracks(NORMAL_RACE)`` returns)."""
    return race_tracks(ensure_assets() / "data")


REVERSE = "-reverse"
"""Suffix of a track name that races the track the other way round (``lighthouse-reverse``): the game's reverse
mode, same scenery, the start line crossed the other way. Everywhere a track name goes (``--tracks``, tables, data)
the suffixed name is a track of its own."""


def split_track(name: str) -> tuple[str, bool]:
    """``lighthouse`` → ``("lighthouse", False)``; ``lighthouse-reverse`` → ``("lighthouse", True)``."""
    return (name[: -len(REVERSE)], True) if name.endswith(REVERSE) else (name, False)


def check_track(name: str) -> None:
    """Raise ``ValueError`` naming the real tracks when ``name`` is not one (nor one the game races in reverse with
    the ``-reverse`` suffix)."""
    base, reverse = split_track(name)
    tracks = list_tracks()
    if base not in tracks:
        raise ValueError(f"unknown track {name!r}; race tracks are: {', '.join(tracks)} "
                         f"(add {REVERSE} to race one the other way round)")
    if reverse:
        reversible = reversible_tracks(ensure_assets() / "data")
        if base not in reversible:
            raise ValueError(f"the game does not race {base} in reverse; tracks it does: {', '.join(reversible)}")


_LIBC = ctypes.CDLL(None)
_GO_PHASES = ("GO_PHASE", "MUSIC_PHASE", "RACE_PHASE")
_COUNTDOWN_LIMIT = 300  # steps; the countdown takes about 51
_THROWAWAY_STEPS = 60
_HOP_FIRST_M = 5.0  # a mid-track start's first hop: past the line, where the game counts the lap as begun
_HOP_M = 8.0  # then hops along the centre line, each crossing at most the next check line
_DROP_M = 0.3  # the kart is put this far above the centre line and drops onto the road
_START_TOLERANCE_M = 16.0  # how far the game's distance after a mid-track start may be from the place asked for


class StartError(ValueError):
    """A mid-track start (``reset(options={"start": f})``) the game does not count as that far down the track."""


class SuperTuxKartEnv(gym.Env):
    """A Gymnasium env around one pystk2 race. One per process (pystk2's rule)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: Optional[str] = None, config: Optional[EnvConfig] = None, **kwargs: Any) -> None:
        """Build from an :class:`EnvConfig` or its fields as keyword arguments (``track='zengarden'``)."""
        if config is not None and kwargs:
            raise TypeError("pass either config= or keyword fields, not both")
        self.config = config if config is not None else EnvConfig(**kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        check_track(self.config.track)
        cfg = self.config
        self.observation_space = gym.spaces.Box(0, 255, (cfg.height, cfg.width, 3), np.uint8)
        n_extra = int(cfg.nitro) + int(cfg.drift) + int(cfg.items)
        low = np.array([-1.0, 0.0, 0.0] + [0.0] * n_extra, np.float32)
        self.action_space = gym.spaces.Box(low, np.ones_like(low), dtype=np.float32)

        self._pystk2 = game.init_game(cfg.graphics_spec())
        self._clock = GameClock(self._pystk2)
        self._draws = SceneDraws(self._pystk2)
        # Physics only has no scene to put back (and reloads are cheap without textures): a new race each episode.
        reusable = self.config.reuse_race and self.config.renderer != "none" and split_track(self.config.track)[0] not in NOT_REPRODUCIBLE
        self._restart = restart_fix(self._pystk2) if reusable else None
        self._game_steps = 0  # game steps since the race (re)started, countdown included
        self._race: Any = None
        self._needs_new_race = True
        self.track: Optional[TrackGeometry] = None
        self.progress: Optional[LapProgress] = None
        self._obs = np.zeros(self.observation_space.shape, np.uint8)
        self._offtrack = 0
        self._closed = False
        self._taken = False

    # -- race plumbing -------------------------------------------------------------------------
    def _new_race(self) -> None:
        pystk2 = self._pystk2
        self._stop_race()
        game.claim_race(self)
        rc = pystk2.RaceConfig()
        rc.track, rc.reverse = split_track(self.config.track)
        rc.num_kart = 1
        # Two laps in the game, one in the episode: a race the game considers finished cannot be
        # restarted properly, and the episode ends at the first crossing of the line anyway.
        rc.laps = 2
        rc.step_size = 0.1 * self.config.action_repeat  # the game renders once per step, whatever its length
        rc.mode = pystk2.RaceConfig.RaceMode.NORMAL_RACE
        rc.num_cameras = 0 if self.config.renderer == "none" else 1
        rc.overlay = False
        rc.seed = 0
        player = rc.players[0]
        player.controller = (
            pystk2.PlayerConfig.Controller.AI_CONTROL if self.config.controller == "ai" else pystk2.PlayerConfig.Controller.PLAYER_CONTROL
        )
        if self.config.kart:
            player.kart = self.config.kart
        if game.first_load() and self.config.renderer != "none":
            # A process's first rendered race showed some tracks' scenery (cocoa_temple's, cornfield_crossing's)
            # otherwise than later loads do, whatever was loaded before: that race is thrown away, after 60 game steps
            # with the renderer's clock held at 0 (why that matters is not known): stopped at once, or after its
            # countdown on the game clock, it corrupted the heap in 3-9 % of processes with max_texture_size 64.
            self._load(rc)
            idle = self._pystk2.Action()
            for _ in range(_THROWAWAY_STEPS):
                self._step_race(idle)
            self._stop_race()
        self._load(rc)
        track = pystk2.Track()
        track.update()
        self.track = TrackGeometry.from_pystk(self.config.track, track)
        self.progress = LapProgress(self.track.length, max_gain_m=10.0 * self.config.action_repeat,
                                    signed=self.config.reward == "signed")
        # The game's AI does not drive again after race.restart(); it gets a new race every episode.
        self._needs_new_race = self.config.controller == "ai" or self._restart is None
        if self._restart is not None:
            try:
                self._restart.zero_wheels()
                if not self._needs_new_race:
                    self._restart.snapshot()
            except (RuntimeError, IndexError, ValueError) as err:  # a scene this build's layout does not fit
                log.warning("%s: races would not be reproducible (%s); every reset loads the track", self.config.track, err)
                self._restart, self._needs_new_race = None, True

    def _race_taken(self) -> None:
        """Another env of this process is starting a race: stop ours (pystk2 runs one at a time)."""
        self._stop_race()
        self.progress = None
        self._taken = True

    def _load(self, rc: Any) -> None:
        """Load and start the race ``rc`` with the same draws from every random source the scene uses."""
        _LIBC.srand(0)  # the scene draws from C rand() while loading (wind): same draws every race
        self._draws.reseed()  # and from STK's generator (objects' colours): vmc.sim.engine
        # Scene animators take their start time from the renderer's clock when the track loads (the
        # lighthouse's rotating beams): at the previous race's end time they would start out of phase.
        self._clock.set_ms(0)
        self._race = self._pystk2.Race(rc)
        self._race.start()

    def _countdown(self) -> None:
        """Step the race, idle, from its (re)start until the kart may drive (about 51 steps)."""
        self._game_steps = 0
        idle = self._pystk2.Action()
        for _ in range(_COUNTDOWN_LIMIT):
            state, _ = self._kart_state()
            if state.phase.name in _GO_PHASES:
                break
            self._game_step(idle)

    def _stop_race(self) -> None:
        if self._race is not None:
            self._race.stop()
            self._race = None

    def _game_step(self, action: Optional[Any]) -> None:
        self._game_steps += 1
        self._clock.set_ms(100 * self.config.action_repeat * self._game_steps)  # the frame shows game time
        self._step_race(action)

    def _step_race(self, action: Any) -> None:
        if self.config.controller == "ai":
            self._race.step()  # the game's AI drives: the race takes no actions
        else:
            self._race.step(action)

    def _frame(self) -> np.ndarray:
        if self.config.renderer == "none":
            return np.zeros(self.observation_space.shape, np.uint8)
        return np.array(self._race.render_data[0].image, dtype=np.uint8, copy=True)

    def _depth(self) -> np.ndarray:
        """The frame's depth buffer (H, W) uint16 (``EnvConfig.depth``)."""
        return np.round(np.asarray(self._race.render_data[0].depth, np.float32) * 65535).astype(np.uint16)

    def _kart_state(self) -> tuple[Any, Any]:
        state = self._pystk2.WorldState()
        state.update()
        return state, state.karts[0]

    # -- Gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        """Put the kart back on the start line and run the countdown.

        Returns the first frame (the moment the kart can drive) and ``info``. The game's physics are
        deterministic, so ``seed`` only seeds ``self.np_random`` (for wrappers and policies).

        ``options={"start": f}`` starts the race mid-track instead: after the countdown the kart is put at rest on
        the centre line of the main loop, a lap fraction ``f`` in [0, 1) down the track, facing along it; the episode's
        progress starts there (``info['lap_fraction']`` is ``f``, the score 0) and its lap ends at the line. For
        training at the places where a controller fails; the game clock (``info['lap_time']``) also counts the
        moves that take the kart there (:meth:`_move_to`).
        """
        super().reset(seed=seed)
        if self._closed:
            raise RuntimeError("reset() on a closed environment")
        start = self._start_option(options)
        if self._race is None or self._needs_new_race:
            self._new_race()
            self._taken = False
        else:
            self._race.restart()
            self._restart.restore()
        self._countdown()
        try:
            start_m = self._move_to(start * self.track.length) if start > 0.0 else 0.0
        except StartError:
            self.progress, self._needs_new_race = None, True  # no episode until a reset succeeds
            raise
        self.progress.reset(start_m)
        self._offtrack = 0
        self._obs = self._frame()
        state, kart = self._kart_state()
        info = self._info(state, kart, np.zeros(3, np.float32), off_track=False, lateral=self.track.lateral_offset(kart.location)[0])
        return self._obs, info

    def _start_option(self, options: Optional[dict]) -> float:
        """The lap fraction ``options`` asks the race to start at (0: the start line); refuses what it cannot do."""
        options = dict(options or {})
        start = options.pop("start", 0.0) or 0.0
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; known: start")
        start = float(start)
        if not 0.0 <= start < 1.0:
            raise ValueError(f"options['start'] is a lap fraction in [0, 1), got {start}")
        if start > 0.0 and self.config.controller == "ai":
            raise ValueError("a mid-track start needs controller='player' (the game's AI drives from the line)")
        return start

    def _move_to(self, metres: float) -> float:
        """Put the kart at rest on the centre line ``metres`` down the track, facing along it; returns the game's
        distance down the track there.

        pystk2's ``set_kart_location`` moves the kart but not the game's lap state: its distance down the track stays
        at the line until the kart has triggered the lap line and every check line before the place (a far move
        crosses none), so the move is made in hops of ``_HOP_M`` metres along the centre line, one idle game step
        each (physics only: no frame is drawn), which cross them as driving would."""
        idle = self._pystk2.Action()
        d = min(_HOP_FIRST_M, metres)
        while True:
            self._place(d)
            self._game_step(idle)
            if d >= metres:
                break
            d = min(d + _HOP_M, metres)
        _, kart = self._kart_state()
        there = float(kart.overall_distance)
        if abs(there - metres) > _START_TOLERANCE_M:
            # A check structure the hops did not trigger as driving would (a cannon that flies the kart on, a check
            # line whose height the centre line misses): the game's distance, and so progress, would be wrong.
            raise StartError(f"{self.config.track}: cannot start {metres:.0f} m down the track (lap fraction "
                             f"{metres / self.track.length:.3f}): after the moves there the game counts the kart "
                             f"{there:.0f} m down it")
        return float(np.clip(there, 0.0, np.nextafter(self.track.length, 0.0)))

    def _place(self, metres: float) -> None:
        """Put the kart at rest on the centre line ``metres`` down the track, facing along it."""
        p, ahead = self.track.point_at(metres), self.track.point_at(metres + 1.0)
        yaw = np.arctan2(ahead[0] - p[0], ahead[2] - p[2])  # the kart's nose is +z, turned about the vertical y axis
        rotation = [0.0, float(np.sin(yaw / 2)), 0.0, float(np.cos(yaw / 2))]
        self._pystk2.WorldState.set_kart_location(0, [float(p[0]), float(p[1]) + _DROP_M, float(p[2])], rotation, 0.0)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Drive 0.1 s of game time (x ``action_repeat``).

        ``info`` holds, for analysis only: ``distance`` (m down the track this lap), ``lap_fraction``
        (best progress in [0, 1]), ``lap_time`` (s since the start), ``location`` (3,), ``velocity``
        (3,), ``speed`` (m/s), ``position`` (race rank), ``off_track`` (bool), ``lateral`` (m from the
        centre line), ``on_road`` (the game's flag), ``score`` (sum of rewards), ``steps``,
        ``action`` (the (3,) action the kart really took), ``end`` (why it ended: ``lap``,
        ``stuck``, ``off_track``, ``max_steps``, or None) and, with ``EnvConfig.depth``, ``depth`` (H, W).
        """
        if self.progress is None:
            if self._taken:
                raise RuntimeError("another environment in this process took the game's only race; call reset() to take it back")
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        a = np.clip(np.nan_to_num(a), self.action_space.low, self.action_space.high)
        pa = self._pystk2.Action()
        pa.steer, pa.acceleration, pa.brake = float(a[0]), float(a[1]), bool(a[2] > 0.5)
        extra = iter(a[3:])
        for flag, attr in ((self.config.nitro, "nitro"), (self.config.drift, "drift"), (self.config.items, "fire")):
            if flag:
                setattr(pa, attr, bool(next(extra) > 0.5))
        self._game_step(pa)

        state, kart = self._kart_state()
        taken = a[:3]
        if self.config.controller == "ai":
            ai = self._race.get_kart_action(0)
            taken = np.array([ai.steer, ai.acceleration, float(ai.brake)], np.float32)
        reward = self.progress.update(kart.overall_distance, on_road=bool(kart.is_on_road))
        lateral, seg = self.track.lateral_offset(kart.location)
        off_track = self.track.beyond_road(lateral, seg, self.config.offtrack_margin)
        self._offtrack = self._offtrack + 1 if off_track else 0

        cfg = self.config
        end = None
        if self.progress.lap_done:
            end = "lap"
        elif cfg.stuck_steps and self.progress.steps_since_progress >= cfg.stuck_steps:
            end = "stuck"
        elif cfg.offtrack_steps and self._offtrack >= cfg.offtrack_steps:
            end = "off_track"
        terminated = end is not None
        truncated = not terminated and self.progress.steps >= cfg.max_steps
        if truncated:
            end = "max_steps"
        self._obs = self._frame()
        info = self._info(state, kart, taken, off_track=off_track, lateral=lateral)
        info["end"] = end
        return self._obs, float(reward), terminated, truncated, info

    def _info(self, state: Any, kart: Any, action: np.ndarray, off_track: bool, lateral: float) -> dict:
        depth = {"depth": self._depth()} if self.config.depth else {}
        return {
            "distance": float(kart.distance_down_track),
            "lap_fraction": self.progress.best,
            "lap_time": float(state.time),
            "location": np.asarray(kart.location, np.float32),
            "front": np.asarray(kart.front, np.float32),
            "velocity": np.asarray(kart.velocity, np.float32),
            "speed": float(kart.speed),
            "position": int(kart.position),
            "off_track": bool(off_track),
            "lateral": float(lateral),
            "on_road": bool(kart.is_on_road),
            "score": self.progress.score,
            "steps": self.progress.steps,
            "action": np.asarray(action, np.float32),
            "end": None,
            **depth,
        }

    def render(self) -> Optional[np.ndarray]:
        """The latest frame (``rgb_array`` mode)."""
        if self.render_mode == "rgb_array":
            return self._obs.copy()
        return None

    def close(self) -> None:
        """Stop the race and free this process's race slot (the game itself stays initialised)."""
        if not self._closed:
            self._stop_race()
            game.release_race(self)
            self._closed = True

    def __del__(self) -> None:  # a forgotten env must not block the next one in the process
        try:
            self.close()
        except Exception:
            pass


def env_for(current: Optional[SuperTuxKartEnv], config: EnvConfig) -> SuperTuxKartEnv:
    """``current`` if it was built from ``config``, else a new env for it (``current`` is closed first:
    one race per process). What long-lived workers use when their next task needs another track."""
    if current is not None and current.config == config and not current._closed:
        return current
    if current is not None:
        current.close()
    return SuperTuxKartEnv(config=config)


__all__ = ["EnvConfig", "SuperTuxKartEnv", "list_tracks", "check_track", "env_for"]
