"""The latent file: every frame of a collection encoded once by the VAE, what the Memory stage trains on.

One HDF5 file, root attributes ``vmc_format`` (:data:`FORMAT`), ``vae`` (the VAE's fingerprint), ``z_dim``,
``data`` (the collection folder) and ``episodes``; one group per episode (same name as in the shards):
``mu`` and ``logvar`` (T+1, Z) float32, ``actions`` (T, 3), ``rewards`` (T,), ``terminations`` /
``truncations`` (T,) and attributes ``track``, ``index``, ``seed``, ``policy``, ``length`` and ``split``
(``train`` / ``val``, the same split as VAE training). :func:`write_latents` is its one writer,
:func:`read_latents` its one reader.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from vmc.data import EpisodeRef, RolloutDataset, validation_set
from vmc.errors import CheckpointError
from vmc.models.vae import ConvVAE

FORMAT = "vmc-latents-1"
"""Value of the root attribute ``vmc_format``."""
FIELDS = ("mu", "logvar", "actions", "rewards", "terminations", "truncations")


def episode_names(refs: list[EpisodeRef]) -> dict[str, EpisodeRef]:
    """The name of each episode of a collection in its latent file: its own name, unique within one collection; a
    folder that puts two together (shards linked from both) can hold a name twice, and those are named with their
    shard too (``ep_0000003@shard-…``)."""
    seen = Counter(ref.name for ref in refs)
    return {ref.name if seen[ref.name] == 1 else f"{ref.name}@{ref.shard.stem}": ref for ref in refs}


def write_latents(vae: ConvVAE, vae_fingerprint: str, data: Path, path: Path, val_fraction: float = 0.1,
                  batch_size: int = 256) -> Path:
    """Encode every frame of the collection ``data`` with ``vae`` to ``path`` (written atomically); a progress bar
    counts the episodes on a terminal."""
    from tqdm import tqdm

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    dev = next(vae.parameters()).device
    with RolloutDataset(Path(data), "all") as ds, h5py.File(tmp, "w") as f, torch.no_grad():
        val = validation_set(ds.episodes, val_fraction)
        f.attrs.update({"vmc_format": FORMAT, "vae": vae_fingerprint, "z_dim": vae.config.z_dim, "data": str(data),
                        "episodes": len(ds.episodes)})
        for name, ref in tqdm(episode_names(ds.episodes).items(), desc="encode", unit="ep", leave=False, disable=None,
                              dynamic_ncols=True):
            g_in = ds.group(ref)
            obs = g_in["observations"]
            mus, logvars = [], []
            for s in range(0, len(obs), batch_size):
                mu, logvar = vae.encode(ConvVAE.to_input(torch.from_numpy(obs[s:s + batch_size])).to(dev))
                mus.append(mu.cpu().numpy())
                logvars.append(logvar.cpu().numpy())
            g = f.create_group(name)
            g.create_dataset("mu", data=np.concatenate(mus).astype(np.float32))
            g.create_dataset("logvar", data=np.concatenate(logvars).astype(np.float32))
            for k in FIELDS[2:]:
                g.create_dataset(k, data=g_in[k][()])
            g.attrs.update({"track": ref.track, "index": ref.index, "seed": ref.seed, "policy": ref.policy,
                            "length": ref.length, "split": "val" if (ref.track, ref.index) in val else "train"})
    tmp.replace(path)
    return path


def latents_info(path: Path) -> dict:
    """The root attributes of a latent file (``vae`` fingerprint, ``z_dim``, ``data``, ``episodes``)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("vmc_format") != FORMAT:
                raise CheckpointError(f"{path}: not a vmc latent file")
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except OSError as err:
        raise CheckpointError(f"{path}: unreadable latent file ({type(err).__name__}: {err})") from None


def read_latents(path: Path, split: Optional[str] = None, min_length: int = 0,
                 fields: tuple[str, ...] = FIELDS) -> list[dict]:
    """The episodes of a latent file (of one ``split`` if given, at least ``min_length`` steps), in memory: per
    episode its ``name``, ``track``, ``length`` and the arrays in ``fields``."""
    path = Path(path)
    latents_info(path)
    out = []
    try:
        with h5py.File(path, "r") as f:
            for name, g in f.items():
                if (split is not None and g.attrs["split"] != split) or int(g.attrs["length"]) < min_length:
                    continue
                out.append({"name": name, "track": str(g.attrs["track"]), "length": int(g.attrs["length"]),
                            **{k: g[k][()] for k in fields}})
    except (OSError, KeyError) as err:
        raise CheckpointError(f"{path}: unreadable latent file ({type(err).__name__}: {err})") from None
    return out
