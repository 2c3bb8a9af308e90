"""``vmc.collect`` on the real game: 2 workers, read back, seeds, resume, dead workers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from vmc.collect import CollectConfig, Collector
from vmc.data import RolloutDataset, read_shard_index, shard_paths

pytestmark = pytest.mark.game


def collect(out: Path, episodes: int, workers: int = 2, **kw) -> dict:
    cfg = CollectConfig(out=str(out), episodes=episodes, workers=workers, max_steps=kw.pop("max_steps", 25), **kw)
    return Collector(cfg).run(progress=False)


def test_collect_reads_back_and_seeds_reproduce(tmp_path: Path):
    m = collect(tmp_path / "a", episodes=3, workers=2)
    assert m["episodes"] == 3 and m["seeds"] == [0, 1, 2] and m["env_config"]["lighthouse"]["width"] == 64
    assert len(shard_paths(tmp_path / "a")) == 2  # one shard per worker
    with RolloutDataset(tmp_path / "a") as ds:
        assert sorted(r.index for r in ds.episodes) == [0, 1, 2]
        for ref in ds.episodes:
            with h5py.File(ref.shard) as f:
                g = f[ref.name]
                t = ref.length
                assert g["observations"].shape == (t + 1, 64, 64, 3) and g["observations"].dtype == np.uint8
                assert g["actions"].shape == (t, 3) and g["actions"].dtype == np.float32
                assert g["rewards"].shape == g["terminations"].shape == g["truncations"].shape == (t,)
                assert g["distance"].shape == g["speed"].shape == g["off_track"].shape == (t + 1,)
                assert g["terminations"][-1] or g["truncations"][-1]
                assert g["observations"][()].std() > 20
                # The mix policy's centre-line driver labels every step, random spells included.
                assert g["expert_actions"].shape == (t, 3) and np.isfinite(g["expert_actions"][()]).all()
                assert np.abs(g["expert_actions"][:, 0]).max() <= 1.0
                # and the road's direction ahead, which the driver steers by
                road, steer = g["road_angles"][()], g["expert_actions"][:, 0]
                assert road.shape == (t, 4) and np.isfinite(road).all() and np.abs(road).max() <= np.pi
                turning = np.abs(steer) > 0.3
                assert turning.any() and np.mean(np.sign(road[turning, 1]) == np.sign(steer[turning])) > 0.8
        first = {r.index: r for r in ds.episodes}[1]
        with h5py.File(first.shard) as f:
            actions_a, frames_a = f[first.name]["actions"][()], f[first.name]["observations"][()]
            rewards_a = f[first.name]["rewards"][()]

    # The same episode index collected again, alone, in another folder: same actions, same frames; with the signed
    # reward (--reward signed), which pays the change of progress where the default pays new best progress, and
    # each frame's depth buffer (--depth), which changes no frame.
    m = collect(tmp_path / "b", episodes=2, workers=1, reward="signed", depth=True)
    assert m["env_config"]["lighthouse"]["reward"] == "signed" and m["env_config"]["lighthouse"]["depth"]
    ref_b = {r.index: r for r in RolloutDataset(tmp_path / "b").episodes}[1]
    with h5py.File(ref_b.shard) as f:
        np.testing.assert_array_equal(f[ref_b.name]["actions"][()], actions_a)
        np.testing.assert_array_equal(f[ref_b.name]["observations"][()], frames_a)
        signed = f[ref_b.name]["rewards"][()]
        depth = f[ref_b.name]["depth"][()]
    assert depth.shape == (len(actions_a) + 1, 64, 64) and depth.dtype == np.uint16
    # the sky above is the far plane, the road under the kart's nose is near
    assert (depth[:, :4] == 65535).mean() > 0.5 and depth[:, -4:].max() < 65535
    with RolloutDataset(tmp_path / "b") as ds:
        assert ds.load_depth().shape == (ds.num_frames, 64, 64)
    # the signed sum is the progress where the kart is, never ahead of the best progress's sum, and both pay the kart
    # for leaving the line
    assert np.all(np.cumsum(signed) <= np.cumsum(rewards_a) + 1e-3)
    assert signed.sum() > 0 and rewards_a.sum() > 0


def test_rerun_continues_and_corrupt_shard_is_set_aside(tmp_path: Path):
    collect(tmp_path, episodes=2, workers=1)
    (tmp_path / "shard-broken.h5").write_bytes(b"not hdf5 at all")
    m = collect(tmp_path, episodes=3, workers=1)
    assert m["episodes"] == 3 and m["seeds"] == [0, 1, 2]
    assert (tmp_path / "shard-broken.h5.corrupt").exists()  # kept, not deleted
    before = sorted(p.name for p in shard_paths(tmp_path))
    m = collect(tmp_path, episodes=3, workers=1)  # nothing left to do
    assert m["episodes"] == 3 and sorted(p.name for p in shard_paths(tmp_path)) == before


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = []
    for c in map(int, out):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            kids.append(c)
    return kids


def _start(out: Path, episodes: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vmc.collect", "--out", str(out), "--episodes", str(episodes),
                             "--workers", "1", "--max-steps", "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_episodes(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        try:
            if sum(len(read_shard_index(p)) for p in shard_paths(out)) >= n:
                return
        except Exception:
            pass  # a shard being written right now
        time.sleep(0.1)
    raise AssertionError(f"{n} episodes never appeared in {out}")


def test_ctrl_c_keeps_episodes_and_rerun_finishes(tmp_path: Path):
    # Enough short episodes that the interrupt lands mid-collection however fast the machine is (4 could all be
    # written between two looks at the shards).
    episodes = 24
    proc = _start(tmp_path, episodes=episodes)
    _wait_for_episodes(tmp_path, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "interrupted" in err and "run the same command again" in err
    kept = {r.index for p in shard_paths(tmp_path) for r in read_shard_index(p)}
    assert 1 <= len(kept) < episodes
    proc = _start(tmp_path, episodes=episodes)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["episodes"] == episodes and m["seeds"] == list(range(episodes))


def test_dead_worker_is_reported_and_replaced(tmp_path: Path):
    proc = _start(tmp_path, episodes=3)
    _wait_for_episodes(tmp_path, 1, proc)
    victims = _children(proc.pid)
    assert victims, "no worker process found"
    os.kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "died (exit code -9)" in err
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["episodes"] == 3
