"""The shard format and reader on synthetic episodes (no game)."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from vmc.data import Episode, RolloutDataset, ShardError, is_validation, read_shard_index, write_episode, write_manifest


def fake_episode(index: int, steps: int, track: str = "lighthouse") -> Episode:
    rng = np.random.default_rng(index)
    return Episode(
        observations=rng.integers(0, 255, (steps + 1, 64, 64, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
        rewards=np.full(steps, -0.1, np.float32), terminations=np.eye(1, steps, steps - 1, dtype=bool)[0],
        truncations=np.zeros(steps, bool), distance=np.arange(steps + 1, dtype=np.float32),
        off_track=np.zeros(steps + 1, bool), speed=np.ones(steps + 1, np.float32),
        attrs={"track": track, "policy": "mix", "seed": index, "index": index, "score": 1.0, "end": "stuck"},
    )


def test_round_trip_keeps_every_array(tmp_path: Path):
    ep = fake_episode(3, 20)
    write_episode(tmp_path / "shard-a.h5", ep)
    with RolloutDataset(tmp_path) as ds:
        (ref,) = ds.episodes
        assert (ref.index, ref.length, ref.track, ref.seed) == (3, 20, "lighthouse", 3)
        with h5py.File(ref.shard) as f:
            g = f[ref.name]
            np.testing.assert_array_equal(g["observations"][()], ep.observations)
            np.testing.assert_array_equal(g["actions"][()], ep.actions)
            assert g["observations"].compression == "lzf" and g["observations"].chunks[0] <= 8


def test_depth_round_trips_and_its_absence_is_named(tmp_path: Path):
    ep = fake_episode(1, 12)
    ep.depth = np.random.default_rng(0).integers(0, 65535, (13, 64, 64), dtype=np.uint16)
    write_episode(tmp_path / "shard-a.h5", ep)
    with RolloutDataset(tmp_path) as ds:
        np.testing.assert_array_equal(ds.load_depth(), ep.depth)
    write_episode(tmp_path / "shard-a.h5", fake_episode(2, 5))
    with RolloutDataset(tmp_path) as ds, pytest.raises(ValueError, match="ep_0000002 has no depth"):
        ds.load_depth()
    ep.depth = ep.depth[:-1]
    with pytest.raises(ValueError, match="depth has 12 entries"):
        write_episode(tmp_path / "shard-b.h5", ep)


def test_t_plus_one_rule_is_enforced(tmp_path: Path):
    ep = fake_episode(0, 10)
    ep.observations = ep.observations[:-1]
    with pytest.raises(ValueError, match="observations"):
        write_episode(tmp_path / "s.h5", ep)


def test_half_written_episode_is_not_trusted(tmp_path: Path):
    path = tmp_path / "shard.h5"
    write_episode(path, fake_episode(0, 5))
    with h5py.File(path, "a") as f:  # what a kill during a write leaves behind
        f.create_group("tmp_ep_0000001").create_dataset("actions", data=np.zeros((3, 3)))
        g = f.create_group("ep_0000002")
        g.attrs["index"] = 2
    assert [r.index for r in read_shard_index(path)] == [0]


def test_corrupt_and_foreign_files_are_named(tmp_path: Path):
    bad = tmp_path / "shard-bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(ShardError, match="shard-bad.h5"):
        RolloutDataset(tmp_path)
    bad.unlink()
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ShardError, match="other.h5.*not a vmc rollout shard"):
        RolloutDataset(tmp_path)


def test_split_is_deterministic_and_disjoint(tmp_path: Path):
    for i in range(40):
        write_episode(tmp_path / f"shard-{i % 3}.h5", fake_episode(i, 4))
    train = RolloutDataset(tmp_path, "train", val_fraction=0.25)
    val = RolloutDataset(tmp_path, "val", val_fraction=0.25)
    again = RolloutDataset(tmp_path, "val", val_fraction=0.25)
    tr, va = {r.index for r in train.episodes}, {r.index for r in val.episodes}
    assert tr.isdisjoint(va) and len(tr | va) == 40 and 3 <= len(va) <= 20
    assert [r.index for r in again.episodes] == [r.index for r in val.episodes]
    assert all(is_validation(r, 0.25) for r in val.episodes)


def test_small_collections_keep_an_episode_on_each_side(tmp_path: Path):
    for i in range(3):
        write_episode(tmp_path / "shard.h5", fake_episode(i, 4))
    for frac in (0.01, 0.99):
        train, val = RolloutDataset(tmp_path, "train", frac), RolloutDataset(tmp_path, "val", frac)
        assert train.episodes and val.episodes and len(train.episodes) + len(val.episodes) == 3


def test_a_tracks_subset_keeps_each_episodes_side_of_the_split(tmp_path: Path):
    for i in range(40):
        write_episode(tmp_path / "shard.h5", fake_episode(i, 3, track="zengarden" if i % 2 else "lighthouse"))
    for split in ("all", "train", "val"):
        every = RolloutDataset(tmp_path, split, 0.25)
        one = RolloutDataset(tmp_path, split, 0.25, tracks=["zengarden"])
        assert one.episodes == [r for r in every.episodes if r.track == "zengarden"] and one.episodes
        assert one.num_frames == 4 * len(one.episodes) and len(one.load_frames()) == one.num_frames
    with pytest.raises(ValueError, match="no episodes of hacienda .it has lighthouse, zengarden"):
        RolloutDataset(tmp_path, "train", 0.25, tracks=["zengarden", "hacienda"])


def test_frames_and_sequences(tmp_path: Path):
    for i in range(3):
        write_episode(tmp_path / "shard.h5", fake_episode(i, 12 + i))
    with RolloutDataset(tmp_path) as ds:
        assert ds.num_frames == 13 + 14 + 15 and ds.num_steps == 39
        batches = list(ds.iter_frames(batch_size=16, shuffle=True, seed=1))
        assert sum(len(b) for b in batches) == ds.num_frames
        assert batches[0].shape == (16, 64, 64, 3) and batches[0].dtype == np.uint8
        np.testing.assert_array_equal(ds.frame(13), fake_episode(1, 13).observations[0])


def test_manifest_counts_what_is_on_disk(tmp_path: Path):
    write_episode(tmp_path / "a.h5", fake_episode(0, 5))
    write_episode(tmp_path / "b.h5", fake_episode(1, 7, track="zengarden"))
    import json

    m = json.loads(write_manifest(tmp_path, {"vmc_version": "x"}).read_text())
    assert (m["episodes"], m["steps"], m["tracks"], m["seeds"]) == (2, 12, ["lighthouse", "zengarden"], [0, 1])
    assert m["shards"] == {"a.h5": {"episodes": 1, "steps": 5}, "b.h5": {"episodes": 1, "steps": 7}}
