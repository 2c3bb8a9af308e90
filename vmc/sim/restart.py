"""A reset that does not load the track again, with the frames of a freshly loaded race (pystk2 0.7.4).

Loading a track is about 95 % of a fresh reset (0.3-3.7 s: texture decoding, meshes, Bullet's BVH). The game's
``race.restart()`` skips it, but ``World::reset(restart=true)`` leaves four things as the previous episode left
them, so frames differed from a fresh race's:

* scrolling textures (sky, water): ``Track::m_animated_textures`` is never reset;
* animated meshes (``CAnimatedMeshSceneNode`` / ``SP::SPMeshNode``): their frame number advances with each
  render and the renderer clock goes back to 0 at restart;
* the kart's wheel rotation: ``KartModel::reset()`` sets it from ``rand() % 360`` before pystk2 seeds ``rand``;
* the kart's track sector (``WorldWithRank::m_kart_track_sector``): ``info['distance']`` keeps the old value
  for a few steps.

:class:`RestartFix` copies those bytes right after a fresh ``race.start()`` (:meth:`~RestartFix.snapshot`) and
writes them back after ``race.restart()`` (:meth:`~RestartFix.restore`). It finds the objects through symbols
the library exports (``Track::m_current_track``, ``World::m_world``, ``World::getPlayerKart``) at field offsets
read with objdump from this build, so it is used only with pysupertuxkart2 0.7.4 (:func:`restart_fix`), checks
the kart model's back-pointer and each node's vtable before writing, and is tested per track
(``tests/test_env_game.py``): episodes after a restart are bit-identical to the race's first episode on 18 of
the 21 tracks; :data:`NOT_REPRODUCIBLE` lists the others, which load a new race every episode.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
from typing import Any, Optional

log = logging.getLogger(__name__)

VERSION = "0.7.4"
"""The pysupertuxkart2 build whose field offsets this module knows."""
NOT_REPRODUCIBLE = frozenset({"ravenbridge_mansion", "volcano_island"})
"""Tracks whose restarted races still differ: ravenbridge_mansion's script fires lightning on random timers that a
restart does not clear; volcano_island differs in one pixel after long episodes (cause not found)."""


def restart_fix(pystk2_module: Any) -> Optional[RestartFix]:
    """A :class:`RestartFix` for this process's game, or None where the build is not the one it knows."""
    try:
        version = importlib.metadata.version("pysupertuxkart2")
    except importlib.metadata.PackageNotFoundError:
        return None
    if version != VERSION:
        log.warning("pysupertuxkart2 %s, not %s: every reset loads the track again", version, VERSION)
        return None
    try:
        return RestartFix(pystk2_module)
    except (OSError, AttributeError, ValueError) as err:
        log.warning("this pystk2 build hides what a reproducible restart needs (%s): every reset loads the track", err)
        return None



_MT_VEC = 0x328            # Track::m_animated_textures (begin, end at +8)   [Track::updateGraphics]
_MT_FIELDS = 0x08          # MovingTexture: dx dy dt count(0x14) byStep(0x18) x(0x1c) y(0x20)
_MT_MATRIX, _MT_SPTM = 0x28, 0x30
_KART_MODEL = 0x220        # Kart::m_kart_model                              [Kart::updateGraphics]
_WHEEL_NODES = 0x100       # KartModel::m_wheel_node[4]                      [KartModel::reset]
_KM_KART = 0x2a8           # KartModel::m_kart
_NODE_ROT = 0x6c           # irr ISceneNode::RelativeRotation (vector3df)
_NODE_DIRTY = 0xee         # flag set by the inlined ISceneNode::setRotation


_AMSH_BOX = (0x140, 0x18)    # CAnimatedMeshSceneNode::Box
_AMSH_FRAME = (0x160, 0x20)  # StartFrame EndFrame FPS CurrentFrameNr Strength LastTimeMs TransitionTime Blend
_SECTORS, _SECTOR_SIZE = 0x160, 0x44  # WorldWithRank::m_kart_track_sector; TrackSector up to m_last_triggered_checkline
_ONANIMATE_SLOT = 0x28       # ISceneNode vtable slot of OnAnimate
_PARENT, _CHILD_DATA, _CHILD_USED = 0x88, 0x90, 0x9c   # ISceneNode::Parent, Children (core::array)


def _u32(a): return ctypes.c_uint32.from_address(a).value
def _u64(a): return ctypes.c_uint64.from_address(a).value


class RestartFix:
    """Snapshot of the state ``race.restart()`` does not reset, taken after a fresh start and written back after a
    restart (see the module docstring)."""

    def __init__(self, pystk2):
        lib = ctypes.CDLL(pystk2.__file__)
        self._track = ctypes.c_void_p.in_dll(lib, "_ZN5Track15m_current_trackE")
        self._world = ctypes.c_void_p.in_dll(lib, "_ZN5World7m_worldE")
        self._player_kart = lib._ZNK5World13getPlayerKartEj
        self._player_kart.restype, self._player_kart.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_uint]
        self._amsh = {ctypes.cast(getattr(lib, n), ctypes.c_void_p).value for n in
                      ("_ZN3irr5scene22CAnimatedMeshSceneNode9OnAnimateEj", "_ZN2SP10SPMeshNode9OnAnimateEj")}
        self.saved = None

    def _animated_nodes(self, start):
        root = start
        while _u64(root + _PARENT):
            root = _u64(root + _PARENT)
        out, stack = {}, [root]
        while stack:
            n = stack.pop()
            vt = _u64(n)
            if _u64(vt + _ONANIMATE_SLOT) in self._amsh:
                out[n] = vt
            data = _u64(n + _CHILD_DATA)
            stack.extend(_u64(data + 8 * i) for i in range(_u32(n + _CHILD_USED)))
        return out

    def _textures(self):
        t = self._track.value
        b, e = _u64(t + _MT_VEC), _u64(t + _MT_VEC + 8)
        return [_u64(b + 8 * i) for i in range((e - b) // 8)]

    def _wheels(self):
        kart = self._player_kart(self._world.value, 0)
        model = _u64(kart + _KART_MODEL)
        if _u64(model + _KM_KART) != kart:
            raise RuntimeError("KartModel layout mismatch")
        return [n for n in (_u64(model + _WHEEL_NODES + 8 * i) for i in range(4)) if n]

    @staticmethod
    def _mt_target(mt):
        m, sp = _u64(mt + _MT_MATRIX), _u64(mt + _MT_SPTM)
        return m + 8 * 4 if m else sp  # matrix4 M[8], M[9] (texture translation) or sp_tm[0..1]

    def zero_wheels(self) -> None:
        """Turn the kart's wheels to 0 degrees about their axles, right after a fresh ``race.start()``.

        The game draws each wheel's angle from C ``rand()``, and how many numbers it has drawn by then changes with
        the machine's load (with other games running, the same race's first frames differed in the wheels and the
        agent's scores in the 6th digit)."""
        for n in self._wheels():
            ctypes.c_float.from_address(n + _NODE_ROT).value = 0.0
            ctypes.c_uint8.from_address(n + _NODE_DIRTY).value = 1

    def snapshot(self) -> tuple[int, int, int, int]:
        """Save the state of the freshly started race; returns how many textures, wheels, meshes and sectors."""
        mts = []
        for mt in self._textures():
            tgt = self._mt_target(mt)
            mts.append((mt, ctypes.string_at(mt + 0x14, 0x10), tgt, ctypes.string_at(tgt, 8) if tgt else b""))
        wheels = [(n, ctypes.string_at(n + _NODE_ROT, 12)) for n in self._wheels()]
        nodes = self._animated_nodes(wheels[0][0])
        amsh = {n: (vt, ctypes.string_at(n + _AMSH_BOX[0], _AMSH_BOX[1]), ctypes.string_at(n + _AMSH_FRAME[0], _AMSH_FRAME[1]))
                for n, vt in nodes.items()}
        w = self._world.value
        b, e = _u64(w + _SECTORS), _u64(w + _SECTORS + 8)
        sectors = [(p, ctypes.string_at(p, _SECTOR_SIZE)) for p in (_u64(b + 8 * i) for i in range((e - b) // 8))]
        self.saved = (mts, wheels, amsh, sectors)
        return len(mts), len(wheels), len(amsh), len(sectors)

    def restore(self) -> None:
        """Write the saved state back, right after ``race.restart()``."""
        mts, wheels, amsh, sectors = self.saved
        for p, blob in sectors:
            ctypes.memmove(p, blob, len(blob))
        if [m for m, *_ in mts] != self._textures():
            raise RuntimeError("track changed since snapshot")
        for mt, fields, tgt, tm in mts:
            ctypes.memmove(mt + 0x14, fields, len(fields))   # m_count, m_isAnimatedByStep, m_x, m_y
            if tgt:
                ctypes.memmove(tgt, tm, 8)
        for n, rot in wheels:
            ctypes.memmove(n + _NODE_ROT, rot, 12)
            ctypes.c_uint8.from_address(n + _NODE_DIRTY).value = 1
        # Track scene nodes live as long as the race; the vtable check guards against a freed node.
        for n, (vt, box, frame) in amsh.items():
            if _u64(n) == vt:
                ctypes.memmove(n + _AMSH_BOX[0], box, _AMSH_BOX[1])
                ctypes.memmove(n + _AMSH_FRAME[0], frame, _AMSH_FRAME[1])
