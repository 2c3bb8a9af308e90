"""Rollout shards on disk: the HDF5 schema, an atomic episode writer and the reader the training
stages use.

A collection folder holds ``shard-*.h5`` files (one per worker process and run) and ``manifest.json``.
Each shard has a root attribute ``vmc_format`` and one group per episode, ``ep_<index>``:

========================  ==========================  ==========================================
dataset                   shape / dtype               meaning
========================  ==========================  ==========================================
``observations``          (T+1, H, W, 3) uint8        frames; [0] is the frame after ``reset``
``actions``               (T, 3) float32              steer, acceleration, brake taken at t
``rewards``               (T,) float32                reward for step t
``terminations``          (T,) bool                   ``terminated`` after step t
``truncations``           (T,) bool                   ``truncated`` after step t
``distance``              (T+1,) float32              privileged: metres down the track
``off_track``             (T+1,) bool                 privileged: far off the road
``speed``                 (T+1,) float32              privileged: m/s
``expert_actions``        (T, 3) float32              privileged, ``mix``/``centreline``: the driver's action
``road_angles``           (T, 4) float32              privileged, ``mix``/``centreline``: rad from the kart's
                                                      heading to the centre line 5, 10, 20, 40 m ahead
``depth``                 (T+1, H, W) uint16          ``collect --depth``: each frame's z-buffer x 65,535
                                                      (``EnvConfig.depth``)
========================  ==========================  ==========================================

Group attributes: ``track``, ``policy``, ``seed``, ``index``, ``score``, ``length`` (T), ``end``,
``complete`` (written last). Frames are stored losslessly (lzf) in chunks of a few frames, so random
frames and random windows read fast.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from vmc.errors import ShardError

FORMAT = "vmc-rollouts-1"
"""Value of the root attribute ``vmc_format`` of every shard."""
FRAME_CHUNK = 8
"""Frames per HDF5 chunk: small enough that one random frame reads little, big enough to compress."""
STEP_ARRAYS = ("actions", "rewards", "terminations", "truncations", "distance", "off_track", "speed")
"""The datasets every episode has beside ``observations``."""
TEACHER_ARRAYS = ("expert_actions", "road_angles")
"""The optional per-step datasets the centre-line driver labels (``mix`` and ``centreline`` policies)."""




@dataclass
class Episode:
    """One recorded episode in memory (see the module docstring for shapes)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    distance: np.ndarray
    off_track: np.ndarray
    speed: np.ndarray
    attrs: dict = field(default_factory=dict)
    expert_actions: Optional[np.ndarray] = None
    road_angles: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None

    @property
    def length(self) -> int:
        """T, the number of steps."""
        return len(self.actions)

    def validate(self) -> None:
        """Raise ``ValueError`` unless the arrays follow the schema (T+1 frames for T actions)."""
        t = self.length
        want = {"observations": t + 1, "rewards": t, "terminations": t, "truncations": t,
                "distance": t + 1, "off_track": t + 1, "speed": t + 1}
        for name in TEACHER_ARRAYS:
            if getattr(self, name) is not None:
                want[name] = t
        if self.depth is not None:
            want["depth"] = t + 1
        for name, n in want.items():
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected {n} for {t} steps")
        if self.observations.dtype != np.uint8 or self.observations.ndim != 4:
            raise ValueError(f"observations must be (T+1, H, W, 3) uint8, got {self.observations.shape} {self.observations.dtype}")


def episode_name(index: int) -> str:
    """Group name of episode ``index``."""
    return f"ep_{index:07d}"


def write_episode(path: Path, episode: Episode) -> None:
    """Append ``episode`` to the shard at ``path`` (created if needed), atomically for readers.

    The group is written under a temporary name, renamed, marked ``complete`` and the file closed,
    so a reader never trusts a half-written episode; a kill during the write can at worst leave a
    temporary group (ignored) or a damaged file (reported by name).
    """
    episode.validate()
    name = episode_name(int(episode.attrs["index"]))
    with h5py.File(path, "a") as f:
        f.attrs.setdefault("vmc_format", FORMAT)
        if name in f:
            raise ShardError(f"{path}: episode {name} already exists")
        tmp = f"tmp_{name}"
        if tmp in f:
            del f[tmp]
        g = f.create_group(tmp)
        for key in ("observations", "depth"):
            if (images := getattr(episode, key)) is not None:
                g.create_dataset(key, data=images, chunks=(min(FRAME_CHUNK, len(images)),) + images.shape[1:], compression="lzf")
        for key in STEP_ARRAYS + TEACHER_ARRAYS:
            if getattr(episode, key) is not None:
                g.create_dataset(key, data=getattr(episode, key))
        for k, v in episode.attrs.items():
            g.attrs[k] = v
        g.attrs["length"] = episode.length
        f.move(tmp, name)
        f[name].attrs["complete"] = True


@dataclass(frozen=True)
class EpisodeRef:
    """Where one complete episode lives, and its attributes."""

    shard: Path
    name: str
    length: int
    index: int
    track: str
    policy: str
    seed: int
    score: float


def read_shard_index(path: Path) -> list[EpisodeRef]:
    """The complete episodes in one shard; raises :class:`ShardError` naming the file if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("vmc_format") != FORMAT:
                raise ShardError(f"{path}: not a vmc rollout shard (vmc_format={f.attrs.get('vmc_format')!r})")
            refs = []
            for name, g in f.items():
                if not name.startswith("ep_") or not g.attrs.get("complete", False):
                    continue
                a = g.attrs
                refs.append(EpisodeRef(Path(path), name, int(a["length"]), int(a["index"]), str(a["track"]),
                                       str(a["policy"]), int(a["seed"]), float(a["score"])))
            return refs
    except ShardError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise ShardError(f"{path}: unreadable or corrupt HDF5 shard ({type(err).__name__}: {err})") from None


def shard_paths(folder: Path) -> list[Path]:
    """The shard files of a collection folder, sorted."""
    return sorted(Path(folder).glob("*.h5"))


def load_episode(ref: EpisodeRef) -> Episode:
    """Read a whole episode into memory."""
    with h5py.File(ref.shard, "r") as f:
        g = f[ref.name]
        arrays = {k: g[k][()] for k in ("observations", *STEP_ARRAYS)}
        return Episode(**arrays, attrs=dict(g.attrs))


def _split_hash(ref: EpisodeRef) -> float:
    return zlib.crc32(f"{ref.track}/{ref.index}".encode()) / 2**32


def is_validation(ref: EpisodeRef, val_fraction: float) -> bool:
    """Deterministic split by episode (its track and index), stable across machines and runs."""
    return _split_hash(ref) < val_fraction


def validation_set(refs: list[EpisodeRef], val_fraction: float) -> set[tuple[str, int]]:
    """(track, index) of the validation episodes: :func:`is_validation`, except that a collection of two
    or more episodes always keeps at least one episode on each side (the lowest hash goes to validation)."""
    val = {(r.track, r.index) for r in refs if is_validation(r, val_fraction)}
    if val_fraction > 0 and not val and len(refs) >= 2:
        low = min(refs, key=_split_hash)
        val = {(low.track, low.index)}
    if len(val) == len(refs) and len(refs) >= 2:
        high = max(refs, key=_split_hash)
        val.discard((high.track, high.index))
    return val


class RolloutDataset:
    """All complete episodes of a collection folder, split into train / validation by episode.

    Shard files stay open for fast random reads; use as a context manager or call :meth:`close`.
    """

    def __init__(self, folder: Path, split: str = "all", val_fraction: float = 0.1,
                 tracks: Optional[Iterable[str]] = None) -> None:
        """``tracks``: only these tracks' episodes (None: all; a track the collection lacks is an error, one without
        episodes on this side of the split is not); each episode stays on its side of the split."""
        if split not in ("all", "train", "val"):
            raise ValueError(f"split must be all, train or val, got {split!r}")
        self.folder = Path(folder)
        paths = shard_paths(self.folder)
        if not paths:
            raise FileNotFoundError(f"no shards (*.h5) in {self.folder}")
        refs = [r for p in paths for r in read_shard_index(p)]
        wanted = None if tracks is None else set(tracks)
        if wanted is not None:
            have = {r.track for r in refs}
            if wanted - have:
                raise ValueError(f"{self.folder} has no episodes of {', '.join(sorted(wanted - have))} "
                                 f"(it has {', '.join(sorted(have))})")
        if split != "all":
            val = validation_set(refs, val_fraction)
            refs = [r for r in refs if ((r.track, r.index) in val) == (split == "val")]
        if wanted is not None:
            refs = [r for r in refs if r.track in wanted]
        self.episodes: list[EpisodeRef] = sorted(refs, key=lambda r: (r.track, r.index))
        self._files: dict[Path, h5py.File] = {}
        self._starts = np.cumsum([0] + [r.length + 1 for r in self.episodes])

    def __enter__(self) -> RolloutDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the open shard files."""
        for f in self._files.values():
            f.close()
        self._files.clear()

    def group(self, ref: EpisodeRef) -> h5py.Group:
        """The HDF5 group of an episode of this dataset (its shard stays open until :meth:`close`)."""
        if ref.shard not in self._files:
            self._files[ref.shard] = h5py.File(ref.shard, "r")
        return self._files[ref.shard][ref.name]

    @property
    def num_frames(self) -> int:
        """Frames in the split (T+1 per episode)."""
        return int(self._starts[-1])

    @property
    def num_steps(self) -> int:
        """Steps (actions) in the split."""
        return sum(r.length for r in self.episodes)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of the split, (H, W, 3) uint8, counting the T+1 frames of each episode in order."""
        e = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.group(self.episodes[e])["observations"][i - self._starts[e]]

    def load_frames(self) -> np.ndarray:
        """Every frame of the split, (num_frames, H, W, 3) uint8, in the order :meth:`frame` counts them."""
        return self._load_per_frame("observations", np.uint8, (64, 64, 3))

    def _load_per_frame(self, key: str, dtype: type, empty: tuple[int, ...], missing: str = "") -> np.ndarray:
        """Every episode's per-frame dataset ``key`` in one array (num_frames, ...) of ``dtype``, read straight into
        place; ``empty`` is a frame's shape where the split has no episode. An episode without it is a
        ``ValueError`` naming it, ``missing`` added."""
        out = None
        for e, ref in enumerate(self.episodes):
            g = self.group(ref)
            if key not in g:
                raise ValueError(f"{ref.shard}: episode {ref.name} has no {key}{missing}")
            if out is None:
                out = np.empty((self.num_frames, *g[key].shape[1:]), dtype)
            g[key].read_direct(out, dest_sel=np.s_[self._starts[e]:self._starts[e + 1]])
        return out if out is not None else np.empty((0, *empty), dtype)

    def load_expert_actions(self, road: bool = False) -> np.ndarray:
        """The teacher's action for every frame of the split (num_frames, 3) float32, aligned with
        :meth:`load_frames`: ``expert_actions[t]`` for frame t, NaN for each episode's last frame and for
        episodes recorded without a teacher (``brownian``, ``ai``, ``controller`` policies). With ``road``, the
        four ``road_angles`` follow (num_frames, 7); NaN where an episode was recorded without them."""
        keys = TEACHER_ARRAYS if road else TEACHER_ARRAYS[:1]
        out = np.full((self.num_frames, 7 if road else 3), np.nan, np.float32)
        for e, ref in enumerate(self.episodes):
            g = self.group(ref)
            if all(k in g for k in keys):
                out[self._starts[e]:self._starts[e + 1] - 1] = np.concatenate([g[k][:] for k in keys], axis=1)
        return out

    def load_depth(self) -> np.ndarray:
        """Every frame's depth buffer (num_frames, H, W) uint16, aligned with :meth:`load_frames`; a
        ``ValueError`` naming the first episode recorded without it (``collect --depth``)."""
        return self._load_per_frame("depth", np.uint16, (64, 64), " (collect it with --depth)")

    def iter_frames(self, batch_size: int, shuffle: bool = True, seed: int = 0) -> Iterator[np.ndarray]:
        """Batches (B, H, W, 3) uint8 over every frame once. Shuffling is by chunk and within the
        batch, so reads stay sequential inside HDF5 chunks."""
        rng = np.random.default_rng(seed)
        blocks = [(e, s) for e, r in enumerate(self.episodes) for s in range(0, r.length + 1, FRAME_CHUNK)]
        if shuffle:
            rng.shuffle(blocks)
        buf: list[np.ndarray] = []
        for e, s in blocks:
            obs = self.group(self.episodes[e])["observations"]
            buf.extend(obs[s:s + FRAME_CHUNK])
            while len(buf) >= batch_size:
                batch = np.stack(buf[:batch_size])
                buf = buf[batch_size:]
                if shuffle:
                    batch = batch[rng.permutation(len(batch))]
                yield batch
        if buf:
            yield np.stack(buf)


def write_manifest(folder: Path, extra: dict, refs: Optional[list[EpisodeRef]] = None) -> Path:
    """Write ``manifest.json`` (shards, episodes, steps, tracks, policies, seeds + ``extra``) atomically."""
    folder = Path(folder)
    if refs is None:
        refs = [r for p in shard_paths(folder) for r in read_shard_index(p)]
    shards: dict[str, dict] = {}
    for r in refs:
        s = shards.setdefault(r.shard.name, {"episodes": 0, "steps": 0})
        s["episodes"] += 1
        s["steps"] += r.length
    manifest = {
        **extra,
        "episodes": len(refs),
        "steps": sum(r.length for r in refs),
        "tracks": sorted({r.track for r in refs}),
        "policies": sorted({r.policy for r in refs}),
        "seeds": sorted(r.seed for r in refs),
        "mean_score": float(np.mean([r.score for r in refs])) if refs else None,
        "shards": shards,
    }
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(folder / "manifest.json")
    return folder / "manifest.json"
