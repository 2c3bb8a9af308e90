"""A headless X display for the game's OpenGL renderer, started on demand.

The game needs an X display even when it renders off screen. When ``DISPLAY`` is unset, the first
game in a process starts its own Xvfb and exports ``DISPLAY``, so processes spawned afterwards
reuse it. Xvfb picks a free display number itself (``-displayfd``), so many workers that each start
one never collide, and it is told to die with the process that started it (so call this from the
main thread: the kernel ties the signal to the thread that started the server).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a kill -9'd worker must not leave its Xvfb behind.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def ensure_display() -> str:
    """Return a usable ``DISPLAY``, starting Xvfb when there is none. Idempotent per process."""
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError("Xvfb not found and DISPLAY is unset: run `./run.sh setup` or `apt-get install xvfb`")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        raise RuntimeError("Xvfb did not start (no display number reported)")
    # No atexit stop: games close their races in their own exit hooks, which may run after ours;
    # the server goes when this process does (PR_SET_PDEATHSIG above).
    os.environ["DISPLAY"] = f":{number}"
    return os.environ["DISPLAY"]
