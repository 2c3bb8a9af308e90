"""Engine settings that pystk2 does not expose, set through symbols its library exports.

* The renderer's animation clock (Irrlicht's *virtual timer*: trees, grass, water, wind) follows the
  wall clock, so two runs of the same episode differ in a few pixels per frame and animations run at
  the renderer's speed. :class:`GameClock` sets the timer's speed to 0 and its time to game time before
  every step. (Stopping the timer instead would pause the race: the world's clock stands still while
  Irrlicht's timer is stopped.)
* STK's anisotropic filtering level (``UserConfigParams::m_anisotropic``, default 4). Mesa's llvmpipe
  (22.x) samples anisotropically in a JIT-compiled loop whose count comes from the texture-coordinate
  derivatives; on triangles seen edge-on or very close those are infinite, the count overflows, and one
  frame takes seconds to minutes (measured: up to 96 s). With the level at 0 the stalls are gone.
* STK's maximum texture size (``UserConfigParams::m_max_texture_size``, default 512): textures are
  scaled down to it when loaded. 64x64 frames sample small mipmap levels anyway; smaller textures
  mean less memory traffic for the CPU rasteriser.
* STK's random generator (``RandomGenerator::getGenerator()``, a thread-local ``std::mt19937``), from which a track
  draws, while it loads, the hue of each object whose material allows recolouring (scotland's sheep). It is seeded
  from ``std::random_device`` on its first use in a thread and re-seeded only when the static
  ``RandomGenerator::m_random_value`` changes, so the same track came out in other colours in each process and after
  each earlier load (a pixel of a sheep, then another lap). :class:`SceneDraws` re-seeds it before every load.

Where a pystk2 build does not export these symbols, the setters do nothing and say so.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Optional

log = logging.getLogger(__name__)

_SPEED = "_ZN3irr2os5Timer17VirtualTimerSpeedE"  # irr::os::Timer::VirtualTimerSpeed (f32)
_LAST_TIME = "_ZN3irr2os5Timer15LastVirtualTimeE"  # irr::os::Timer::LastVirtualTime (ms)
_ANISOTROPIC = "_ZN16UserConfigParams13m_anisotropicE"  # UserConfigParams::m_anisotropic
_MAX_TEXTURE_SIZE = "_ZN16UserConfigParams18m_max_texture_sizeE"  # UserConfigParams::m_max_texture_size
_RANDOM_VALUE = "_ZN15RandomGenerator14m_random_valueE"  # RandomGenerator::m_random_value (int)
_GET_GENERATOR = "_ZN15RandomGenerator12getGeneratorEv"  # RandomGenerator::getGenerator(): this thread's mt19937
_SCENE_SEED = 3141591  # the value m_random_value has when the library is loaded
_INT_PARAM_VALUE_OFFSET = 0x50  # IntUserConfigParam::m_value (its constructor stores the value there)


def _library(pystk2_module: Any) -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(pystk2_module.__file__)  # the already-loaded library: same handle
    except (OSError, AttributeError):
        return None


def _int_param(pystk2_module: Any, symbol: str, name: str) -> Optional[ctypes.c_int32]:
    """The value of an ``IntUserConfigParam`` exported as ``symbol``, or None (and a warning)."""
    lib = _library(pystk2_module)
    try:
        param = ctypes.addressof(ctypes.c_char.in_dll(lib, symbol))
    except (ValueError, TypeError):
        log.warning("this pystk2 build hides the %s setting; leaving it at the game's default", name)
        return None
    return ctypes.c_int32.from_address(param + _INT_PARAM_VALUE_OFFSET)


def set_anisotropic(pystk2_module: Any, level: int) -> bool:
    """Set STK's anisotropic filtering level (0 = off); call before ``pystk2.init``. True if set."""
    value = _int_param(pystk2_module, _ANISOTROPIC, "anisotropic filtering")
    if value is None:
        return False
    if value.value not in (0, 1, 2, 4, 8, 16):  # not the layout we know: touch nothing
        log.warning("unexpected anisotropic filtering value %d; leaving it alone", value.value)
        return False
    value.value = int(level)
    return True


def set_max_texture_size(pystk2_module: Any, size: int) -> bool:
    """Set the size (pixels) textures are scaled down to when loaded (STK's default 512 with HD textures
    off, which pystk2's presets leave off); call before ``pystk2.init``. True if set."""
    value = _int_param(pystk2_module, _MAX_TEXTURE_SIZE, "maximum texture size")
    if value is None:
        return False
    if value.value not in (64, 128, 256, 512, 1024, 2048, 4096):  # not the layout we know: touch nothing
        log.warning("unexpected maximum texture size %d; leaving it alone", value.value)
        return False
    value.value = int(size)
    return True


class GameClock:
    """Setter for the renderer's animation time, or a no-op where the symbols are not exported."""

    def __init__(self, pystk2_module: Any) -> None:
        self._speed: Optional[ctypes.c_float] = None
        self._time: Optional[ctypes.c_uint32] = None
        lib = _library(pystk2_module)
        try:
            self._speed = ctypes.c_float.in_dll(lib, _SPEED)
            self._time = ctypes.c_uint32.in_dll(lib, _LAST_TIME)
        except (ValueError, TypeError):
            log.warning("this pystk2 build hides Irrlicht's timer: frames follow the wall clock and are not reproducible")

    @property
    def available(self) -> bool:
        """True when the renderer's clock can be set (pystk2 builds that export Irrlicht's timer)."""
        return self._time is not None

    def set_ms(self, ms: int) -> None:
        """Set the animation clock to ``ms`` milliseconds until the next call.

        A running timer returns ``last + (now - start) * speed``; with speed 0 that is exactly ``ms``.
        """
        if self._time is None:
            return
        self._speed.value = 0.0
        self._time.value = int(ms) & 0xFFFFFFFF


class SceneDraws:
    """Re-seeds STK's random generator before a track loads, or does nothing (and says so) where the library does not
    export it. Call from the thread that loads the track (the generator is thread-local)."""

    def __init__(self, pystk2_module: Any) -> None:
        self._value: Optional[ctypes.c_int32] = None
        lib = _library(pystk2_module)
        try:
            self._value = ctypes.c_int32.in_dll(lib, _RANDOM_VALUE)
            self._generator = getattr(lib, _GET_GENERATOR)
        except (ValueError, TypeError, AttributeError):
            log.warning("this pystk2 build hides STK's random generator: objects' colours differ from load to load")
            self._value = None
            return
        self._generator.restype = ctypes.c_void_p

    def reseed(self) -> None:
        """Seed the calling thread's generator with the library's initial value, whatever it drew before."""
        if self._value is None:
            return
        # getGenerator() re-seeds only when m_random_value differs from the value it last saw: passing through
        # another value first forces the seed even where it was already _SCENE_SEED.
        self._value.value = _SCENE_SEED + 1
        self._generator()
        self._value.value = _SCENE_SEED
        self._generator()
