"""Drive the renderer's animation clock by game time, so equal episodes render equal frames.

The game animates trees, grass, water and wind from Irrlicht's *virtual timer*, which follows the
wall clock: two runs of the same episode then differ in a few pixels per frame (and animations run
at the speed of the renderer, not of the game). The timer's state lives in static members that
pystk2's library exports, so vmc stops the timer and sets its time itself before every step. This
touches no game logic: physics already runs on the fixed 0.1 s step.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional

_STOP_COUNTER = "_ZN3irr2os5Timer23VirtualTimerStopCounterE"  # irr::os::Timer::VirtualTimerStopCounter
_LAST_TIME = "_ZN3irr2os5Timer15LastVirtualTimeE"  # irr::os::Timer::LastVirtualTime (ms)


class GameClock:
    """Setter for the renderer's animation time, or a no-op where the symbols are not exported."""

    def __init__(self, pystk2_module: Any) -> None:
        self._stop: Optional[ctypes.c_int32] = None
        self._time: Optional[ctypes.c_uint32] = None
        try:
            lib = ctypes.CDLL(pystk2_module.__file__)  # the already-loaded library: same handle
            self._stop = ctypes.c_int32.in_dll(lib, _STOP_COUNTER)
            self._time = ctypes.c_uint32.in_dll(lib, _LAST_TIME)
        except (OSError, ValueError, AttributeError):
            pass

    @property
    def available(self) -> bool:
        """True when the renderer's clock can be set (pystk2 builds that export Irrlicht's timer)."""
        return self._time is not None

    def set_ms(self, ms: int) -> None:
        """Freeze the animation clock at ``ms`` milliseconds (a stopped timer returns this time)."""
        if self._time is None:
            return
        if self._stop.value >= 0:  # Irrlicht counts stop() calls: negative means stopped
            self._stop.value = -1
        self._time.value = int(ms) & 0xFFFFFFFF
