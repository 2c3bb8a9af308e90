"""Shared fixtures. Tests marked ``game`` run the real SuperTuxKart (pystk2 + Xvfb + Mesa llvmpipe).

pystk2 allows one set-up per process, so every in-process game test uses the default set-up (64x64,
llvmpipe); tests of other set-ups start their own processes.
"""

import os
import subprocess
import sys
import textwrap

import pytest


@pytest.fixture
def lighthouse_env():
    import gymnasium

    import vmc

    env = gymnasium.make(vmc.ENV_ID, track="lighthouse")
    yield env
    env.close()


def run_python(code: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a fresh game); fails the test on a non-zero exit."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
