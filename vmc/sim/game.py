"""The one SuperTuxKart game of this process: renderer set-up, ``pystk2.init`` and race ownership.

pystk2 allows one ``init`` per process (with one resolution and renderer) and one race at a time, so
this module holds that state for the whole process and refuses, with a clear message, what pystk2
would crash on. A CPU-parallel design runs one long-lived process per worker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional

from vmc.sim.assets import ensure_assets

RENDERERS = ("llvmpipe", "softpipe", "system", "none")
"""``llvmpipe`` / ``softpipe``: Mesa's CPU rasterisers; ``system``: whatever OpenGL the machine has
(a GPU driver, say); ``none``: physics only, no images (``pystk2.GraphicsConfig.none()``)."""

GRAPHICS_PRESETS = ("ld", "sd", "hd")
"""pystk2's graphics presets (``GraphicsConfig.ld()`` etc.); ``ld`` is the cheapest."""


@dataclass(frozen=True)
class GraphicsSpec:
    """What ``pystk2.init`` was called with; fixed for the life of the process."""

    renderer: str
    """One of :data:`RENDERERS`."""
    width: int
    """Rendered image width in pixels."""
    height: int
    """Rendered image height in pixels."""
    preset: str
    """One of :data:`GRAPHICS_PRESETS`."""
    anisotropic: int = 0
    """STK's anisotropic filtering level (0 off; the game's default is 4, which stalls llvmpipe)."""
    threads: int = 0
    """llvmpipe rasteriser threads (``LP_NUM_THREADS``); 0 renders in the game's own thread, one core
    per process, which is what parallel workers want."""
    max_texture_size: int = 0
    """Textures are scaled down to this size when loaded (0: the game's default, 512)."""

    def __post_init__(self) -> None:
        if self.renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {self.renderer!r}; choose one of {', '.join(RENDERERS)}")
        if self.preset not in GRAPHICS_PRESETS:
            raise ValueError(f"unknown graphics preset {self.preset!r}; choose one of {', '.join(GRAPHICS_PRESETS)}")
        if not (8 <= self.width <= 4096 and 8 <= self.height <= 4096):
            raise ValueError(f"resolution {self.width}x{self.height} out of range 8..4096")
        if self.anisotropic not in (0, 2, 4, 8, 16):
            raise ValueError(f"anisotropic must be 0, 2, 4, 8 or 16, got {self.anisotropic}")
        if self.max_texture_size not in (0, 64, 128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_texture_size must be 0 (default) or a power of two 64..4096, got {self.max_texture_size}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


_spec: Optional[GraphicsSpec] = None
_race_owner: Optional[object] = None
_loaded = False


def _configure_renderer(spec: GraphicsSpec) -> None:
    # Must happen before the GL library is loaded, i.e. before pystk2.init creates the window.
    if spec.renderer in ("softpipe", "llvmpipe"):
        os.environ["GALLIUM_DRIVER"] = spec.renderer
        os.environ["LIBGL_ALWAYS_SOFTWARE"] = "1"
        os.environ["LP_NUM_THREADS"] = str(spec.threads)
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # quiets an SDL warning on headless machines


def init_game(spec: GraphicsSpec) -> Any:
    """Start the game for this process (once) and return the ``pystk2`` module.

    A second call with the same spec is free; with another spec it raises, since pystk2 cannot be
    initialised twice in one process.
    """
    global _spec
    if _spec is not None:
        if spec != _spec and not (spec.renderer == "none" and _spec.renderer == "none"):
            raise RuntimeError(
                f"this process already runs the game as {_spec}; pystk2 allows one set-up per process, "
                f"so {spec} needs another process"
            )
        import pystk2

        return pystk2
    ensure_assets()
    if spec.renderer != "none":
        from vmc.sim.display import ensure_display

        ensure_display()
    _configure_renderer(spec)
    import pystk2

    from vmc.sim.engine import set_anisotropic, set_max_texture_size

    set_anisotropic(pystk2, spec.anisotropic)
    if spec.max_texture_size:
        set_max_texture_size(pystk2, spec.max_texture_size)

    if spec.renderer == "none":
        cfg = pystk2.GraphicsConfig.none()
    else:
        cfg = getattr(pystk2.GraphicsConfig, spec.preset)()
        cfg.screen_width, cfg.screen_height = spec.width, spec.height
        cfg.display = False
    with _quiet_stdout():
        pystk2.init(cfg)
    # Registered after pystk2's own clean-up, so it runs before it: an env still open at exit stops
    # its race while the game (and its X display) still exist.
    atexit.register(_close_open_race)
    _spec = spec
    return pystk2


@contextlib.contextmanager
def _quiet_stdout():
    """Silence the engine's banner, which it prints on the C level (file descriptor 1)."""
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _close_open_race() -> None:
    owner = _race_owner
    if owner is not None and hasattr(owner, "close"):
        owner.close()


def claim_race(owner: object) -> None:
    """Make ``owner`` (an env) the holder of this process's single race.

    pystk2 runs one race at a time, so a previous holder is told to stop its race first (its
    ``_race_taken()``); that env raises a clear error if stepped and takes the race back on reset.
    """
    global _race_owner
    previous = _race_owner
    if previous is not None and previous is not owner:
        previous._race_taken()
    _race_owner = owner


def first_load() -> bool:
    """True at this process's first call (its first track load), False after."""
    global _loaded
    first, _loaded = not _loaded, True
    return first


def release_race(owner: object) -> None:
    """Give the race back (no-op if ``owner`` does not hold it)."""
    global _race_owner
    if _race_owner is owner:
        _race_owner = None
