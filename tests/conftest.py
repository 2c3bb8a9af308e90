"""Shared fixtures. Tests marked ``game`` run the real SuperTuxKart (pystk2 + Xvfb + Mesa llvmpipe).

pystk2 allows one set-up per process, so every in-process game test uses the default set-up (64x64,
llvmpipe); tests of other set-ups start their own processes.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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


def tiny_collection(folder: Path, episodes: int = 12, steps: int = 20, expert: bool = False) -> Path:
    """A synthetic collection (no game): a bar that moves across the frame, something to encode and to predict;
    with ``expert``, a teacher's action per step that steers towards the bar (a function of the frame), and road
    angles towards it."""
    from vmc.data import Episode, write_episode

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        rng = np.random.default_rng(i)
        obs = np.zeros((steps + 1, 64, 64, 3), np.uint8)
        for t in range(steps + 1):
            obs[t, :, (i + 3 * t) % 60:(i + 3 * t) % 60 + 4] = (200, 120, 40)
            obs[t, 40:] += np.uint8(60)
        write_episode(folder / f"shard-{i % 2}.h5", Episode(
            observations=obs, actions=rng.uniform(0, 1, (steps, 3)).astype(np.float32),
            rewards=np.full(steps, 0.5, np.float32), terminations=np.eye(1, steps, steps - 1, dtype=bool)[0],
            truncations=np.zeros(steps, bool), distance=np.zeros(steps + 1, np.float32),
            off_track=np.zeros(steps + 1, bool), speed=np.zeros(steps + 1, np.float32),
            expert_actions=np.array([[((i + 3 * t) % 60) / 30 - 1, 1.0, 0.0] for t in range(steps)], np.float32)
            if expert else None,
            road_angles=np.array([[((i + 3 * t) % 60) / 60 - 0.5] * 4 for t in range(steps)], np.float32) if expert else None,
            attrs={"track": "lighthouse", "policy": "mix", "seed": i, "index": i, "score": 0.0, "end": "lap"}))
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder with a tiny real collection, VAE, MDN-RNN and one generation of evolve."""
    from vmc import evolve, train_mdn, train_vae
    from vmc.collect import CollectConfig, Collector
    from vmc.models import MDNRNNConfig, VAEConfig

    root = tmp_path_factory.mktemp("tiny")
    run = root / "run"
    Collector(CollectConfig(out=str(root / "data"), episodes=4, workers=2, max_steps=30)).run(progress=False)
    vcfg = train_vae.TrainVAEConfig(data=str(root / "data"), run=str(run), epochs=1,
                                    model=VAEConfig(z_dim=8, channels=(8, 16, 16, 32)))
    train_vae.train(vcfg, progress=False)
    train_vae.encode(vcfg)
    train_mdn.train(train_mdn.TrainMDNConfig(run=str(run), epochs=1, steps_per_epoch=3, seq_len=8, batch_size=4,
                                             model=MDNRNNConfig(z_dim=8, hidden=16, gaussians=2)), progress=False)
    evolve.evolve(evolve.EvolveConfig(run=str(run), workers=2, popsize=4, rollouts=1, generations=1, max_steps=20,
                                      eval_every=0, init="fit"), progress=False)
    return root
