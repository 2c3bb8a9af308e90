"""Fast unit tests of set-up errors, configs, video writing and the advice on training threads (no game)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vmc.pool import usable_cores
from vmc.sim import assets
from vmc.sim.env import EnvConfig
from vmc.training import busy_cores, use_all_cores
from vmc.video import frame_strip, write_video


def test_missing_art_says_how_to_fix(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VMC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VMC_STK_ART", str(tmp_path / "no-art"))
    with pytest.raises(assets.AssetError, match="supertuxkart-data"):
        assets.ensure_assets()


def test_complete_folder_needs_marker_and_art(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VMC_STK_ART", str(tmp_path / "art"))
    root = tmp_path / "stk"
    (root / "data").mkdir(parents=True)
    (root / "data" / "stk_config.xml").write_text("<x/>")
    for d in assets.ART_DIRS:
        (root / "data" / d).mkdir()
    assert not assets.is_complete(root)  # no marker yet: a half-built folder is not trusted
    (root / assets.MARKER).write_text("built by vmc")
    assert not assets.is_complete(root)  # built with the old layout (mines unpatched): rebuilt
    (root / assets.MARKER).write_text(f"built by vmc ({assets.LAYOUT})")
    assert not assets.is_complete(root)  # no art named: which art it links to is not known
    (root / assets.MARKER).write_text(f"built by vmc from x.tar.gz and {tmp_path / 'art'} ({assets.LAYOUT})\n")
    assert assets.is_complete(root)
    monkeypatch.setenv("VMC_STK_ART", str(tmp_path / "other-art"))
    assert not assets.is_complete(root)  # other art asked for through the same cache: built again


def test_tracks_are_linked_with_mines_fade_out_billboards_turned_off(tmp_path: Path):
    art = tmp_path / "art"
    for track, files in {"lighthouse": ["scene.xml", "track.xml"], "mines": ["scene.xml", "graph.xml"]}.items():
        (art / track).mkdir(parents=True)
        for f in files:
            (art / track / f).write_text(f'<billboard fadeout="true" start="1"/> {track}/{f}')
    assets._link_tracks(art, tmp_path / "tracks")
    tracks = tmp_path / "tracks"
    assert (tracks / "lighthouse").is_symlink() and 'fadeout="true"' in (tracks / "lighthouse" / "scene.xml").read_text()
    mines = tracks / "mines"
    assert not mines.is_symlink() and (mines / "graph.xml").is_symlink()
    assert not (mines / "scene.xml").is_symlink()
    assert (mines / "scene.xml").read_text() == '<billboard fadeout="false" start="1"/> mines/scene.xml'
    assert 'fadeout="true"' in (art / "mines" / "scene.xml").read_text()  # the art itself is untouched
    (art / "mines" / "scene.xml").write_text("<scene/>")
    with pytest.raises(assets.AssetError, match="scene.xml"):
        assets._link_tracks(art, tmp_path / "tracks2")


@pytest.mark.parametrize("bad", [{"renderer": "vulkan9"}, {"controller": "robot"}, {"graphics": "ultra"},
                                 {"width": 2}, {"max_steps": 0}, {"anisotropic": 3}, {"render_threads": -1},
                                 {"max_texture_size": 100}, {"action_repeat": 0}, {"renderer": "none", "depth": True}])
def test_env_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        EnvConfig(**bad)


def test_video_decodes_to_the_frames(tmp_path: Path):
    import imageio.v2 as imageio

    frames = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(8)]
    path = write_video(tmp_path / "v.mp4", frames, fps=10, scale=4)
    back = imageio.mimread(path)
    assert len(back) == 8 and back[0].shape == (64, 64, 3)
    assert abs(int(back[5].mean()) - 50) <= 3
    assert frame_strip(frames, 4).shape == (16, 64, 3)


def test_generation_tracks_are_a_seeded_subset_shared_by_every_candidate():
    from vmc.evolve import EvolveConfig, generation_tracks

    tracks = ["lighthouse", "zengarden", "hacienda", "scotland", "cornfield_crossing"]
    cfg = EvolveConfig(tracks=tracks, tracks_per_generation=2)
    picks = [generation_tracks(cfg, g) for g in range(1, 21)]
    assert all(len(p) == 2 and set(p) <= set(tracks) for p in picks)
    assert picks == [generation_tracks(cfg, g) for g in range(1, 21)]  # the same for the same generation
    assert len({t for p in picks for t in p}) == 5  # every track comes up over the generations
    assert generation_tracks(EvolveConfig(tracks=tracks), 3) == tracks  # 0: all of them


def test_core_counts_follow_the_cpu_affinity():
    """A process confined to one core (``taskset``, a cpuset, a batch scheduler's allocation) trains on one thread
    and starts one game worker by default, however many cores the machine has."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from vmc.pool import default_workers, usable_cores\n"
            "from vmc.training import use_all_cores\n"
            "print(usable_cores(), use_all_cores(0, warn=False), default_workers('local'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1", "1"]


def test_training_warns_when_other_processes_hold_the_cores(caplog):
    if usable_cores() < 2:
        pytest.skip("one core: torch runs one thread and there is nothing to advise")
    if busy_cores(0.05) is None:
        pytest.skip("no per-core /proc/stat to read")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cores(0.5) >= 0.4  # one core spinning, whatever else the machine does
        with caplog.at_level("WARNING", logger="vmc.training"):
            assert use_all_cores(0) == usable_cores()
        assert "busy" in caplog.text and "--threads" in caplog.text
        caplog.clear()
        with caplog.at_level("WARNING", logger="vmc.training"):
            assert use_all_cores(1) == 1  # a count the user chose: no advice
        assert "--threads" not in caplog.text
    finally:
        spinner.kill()
        spinner.wait()
        use_all_cores(0, warn=False)
