"""``python -m vmc.train_mdn``: train the MDN-RNN on the latent file written by ``vmc.train_vae``.

Trains on random fixed-length windows of (z_t, a_t) → (z_{t+1}, r_t, done_t), with z drawn from each
frame's N(mu, sigma) every time (as in World Models). Writes ``--out`` (best by validation loss),
``<out>.last.pt`` (for ``--resume``), ``<out>.json``, ``mdn_loss.png`` and, at the end, ``dream.mp4``:
a validation episode's real frames beside the MDN-RNN's dream of it (start from the real first frame,
then the recorded actions only), decoded by the VAE.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from vmc.models.mdn import MDNRNN, MDNRNNConfig
from vmc.models.vae import ConvVAE
from vmc.training import (CheckpointError, existing_run_guard, last_checkpoint, load_checkpoint, pick_device, plot_curves, restore,
                          save_epoch, use_all_cores)

log = logging.getLogger("vmc.train_mdn")


@dataclass
class TrainMDNConfig:
    """What ``python -m vmc.train_mdn`` does; saved with the checkpoint."""

    latents: str = "checkpoints/latents.h5"
    """Latent file from ``vmc.train_vae``."""
    vae: str = "checkpoints/vae.pt"
    """VAE checkpoint (for the dream video)."""
    out: str = "checkpoints/mdn.pt"
    """Best checkpoint; ``<out>.last.pt`` and pictures go beside it."""
    epochs: int = 10
    """Training epochs."""
    steps_per_epoch: int = 200
    """Optimiser steps per epoch."""
    seq_len: int = 32
    """Window length in steps."""
    batch_size: int = 32
    """Windows per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    temperature: float = 1.0
    """Sampling temperature of the dream video."""
    seed: int = 0
    """Seed of initialisation and window sampling."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``..."""
    threads: int = 0
    """CPU threads for torch (0: one per core)."""
    init: str = ""
    """MDN-RNN checkpoint whose weights a new run starts from (the iterative procedure's previous round)."""
    model: MDNRNNConfig = field(default_factory=MDNRNNConfig)
    """The architecture."""


class LatentSequences:
    """Episodes of one split of a latent file, in memory, sampled as fixed-length windows."""

    def __init__(self, path: Path, split: str, seq_len: int) -> None:
        path = Path(path)
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("vmc_format") != "vmc-latents-1":
                    raise CheckpointError(f"{path}: not a vmc latent file")
                self.data_folder = str(f.attrs.get("data", ""))
                self.episodes = []
                for name, g in f.items():
                    if g.attrs["split"] != split or int(g.attrs["length"]) < seq_len:
                        continue
                    self.episodes.append({"name": name, **{k: g[k][()] for k in ("mu", "logvar", "actions", "rewards", "terminations")}})
        except (OSError, KeyError) as err:
            raise CheckpointError(f"{path}: unreadable latent file ({type(err).__name__}: {err})") from None
        self.seq_len = seq_len
        if not self.episodes:
            raise CheckpointError(f"{path}: no {split} episode with at least {seq_len} steps (lower --seq-len?)")
        lengths = np.array([len(e["actions"]) for e in self.episodes], float)
        self.weights = (lengths - seq_len + 1) / (lengths - seq_len + 1).sum()  # every window equally likely

    def sample(self, batch: int, rng: np.random.Generator, sample_z: bool = True) -> dict[str, torch.Tensor]:
        """z (B, L+1, Z), actions (B, L, A), rewards (B, L), dones (B, L)."""
        L = self.seq_len
        out: dict[str, list] = {"z": [], "actions": [], "rewards": [], "dones": []}
        for e in rng.choice(len(self.episodes), size=batch, p=self.weights):
            ep = self.episodes[e]
            s = int(rng.integers(len(ep["actions"]) - L + 1))
            mu, logvar = ep["mu"][s:s + L + 1], ep["logvar"][s:s + L + 1]
            z = mu + rng.standard_normal(mu.shape).astype(np.float32) * np.exp(0.5 * logvar) if sample_z else mu
            out["z"].append(z)
            out["actions"].append(ep["actions"][s:s + L])
            out["rewards"].append(ep["rewards"][s:s + L])
            out["dones"].append(ep["terminations"][s:s + L])
        return {k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in out.items()}


def batch_loss(model: MDNRNN, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Loss terms of one batch of windows."""
    z = batch["z"].to(device)
    heads, _ = model(z[:, :-1], batch["actions"].to(device))
    return model.loss(heads, z[:, 1:], batch["rewards"].to(device), batch["dones"].to(device))


def train(cfg: TrainMDNConfig, resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Train (or continue); keeps best/last checkpoints and the loss curve. Returns the last history row."""
    from tqdm import tqdm

    out = Path(cfg.out)
    start = existing_run_guard(last_checkpoint(out), resume, force)
    torch.manual_seed(cfg.seed)
    use_all_cores(cfg.threads)
    device = pick_device(cfg.device)
    train_set = LatentSequences(Path(cfg.latents), "train", cfg.seq_len)
    val_set = LatentSequences(Path(cfg.latents), "val", cfg.seq_len)
    z_dim = train_set.episodes[0]["mu"].shape[1]
    if z_dim != cfg.model.z_dim:
        raise CheckpointError(f"{cfg.latents}: latents have {z_dim} dimensions, the model expects {cfg.model.z_dim}")
    model = MDNRNN(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    epoch0 = 0
    if start is not None:
        history, epoch0 = restore(start, "mdn", model, opt, device)
        log.info("resuming %s after epoch %d", start, epoch0)
    elif cfg.init:
        model.load_state_dict(load_checkpoint(Path(cfg.init), "mdn", map_location=device)["model"])
        log.info("starting from the weights of %s", cfg.init)
    val_batch = val_set.sample(max(cfg.batch_size, 64), np.random.default_rng(12345), sample_z=False)
    best = min((h["val_loss"] for h in history), default=float("inf"))
    for epoch in range(epoch0 + 1, cfg.epochs + 1):
        rng = np.random.default_rng([cfg.seed, epoch])  # an epoch's windows do not depend on earlier runs
        model.train()
        t0, total = time.perf_counter(), 0.0
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"mdn epoch {epoch}/{cfg.epochs}", disable=not progress, dynamic_ncols=True)
        for _ in bar:
            terms = batch_loss(model, train_set.sample(cfg.batch_size, rng), device)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += terms["loss"].item()
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}", nll=f"{terms['nll'].item():.3f}")
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            val = {k: float(v) for k, v in batch_loss(model, val_batch, device).items()}
        row = {"epoch": epoch, "train_loss": total / cfg.steps_per_epoch, "val_loss": val["loss"], "val_nll": val["nll"],
               "val_reward": val["reward"], "val_done": val["done"],
               "steps_per_s": cfg.steps_per_epoch * cfg.batch_size * cfg.seq_len / seconds, "seconds": seconds}
        history.append(row)
        log.info("epoch %d: train %.3f, val %.3f (nll %.3f, reward %.4f, done %.4f), %.0f sequence steps/s", epoch,
                 row["train_loss"], row["val_loss"], row["val_nll"], row["val_reward"], row["val_done"], row["steps_per_s"])
        best = save_epoch(out, "mdn", cfg, model, opt, history, best)
        plot_curves(out.parent / "mdn_loss.png", history, ["train_loss", "val_loss"], "MDN-RNN loss")
    return history[-1] if history else {}


def load_mdn(path: Path, device: torch.device | str = "cpu") -> MDNRNN:
    """The MDN-RNN stored in a checkpoint, in eval mode."""
    ckpt = load_checkpoint(Path(path), "mdn", map_location=device)
    model = MDNRNN(MDNRNNConfig(**ckpt["config"]["model"])).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def dream_video(vae_path: Path, mdn_path: Path, latents: Path, out: Path, temperature: float = 1.0,
                steps: int = 100, seed: int = 0) -> Path:
    """Real frames (left) beside the dream (right): the MDN-RNN rolled from the real first latent on the
    recorded actions, each sampled z decoded by the VAE. Written to ``out`` (mp4, 4x upscaled)."""
    from vmc.data import RolloutDataset, load_episode
    from vmc.train_vae import load_vae
    from vmc.video import write_video

    vae, mdn = load_vae(vae_path), load_mdn(mdn_path)
    seqs = LatentSequences(latents, "val", seq_len=1)
    ep = max(seqs.episodes, key=lambda e: len(e["actions"]))
    with h5py.File(latents, "r") as f:
        data = Path(str(f.attrs["data"]))
    ref = next(r for r in RolloutDataset(data).episodes if r.name == ep["name"])
    real = load_episode(ref).observations
    n = min(steps, len(ep["actions"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.from_numpy(ep["mu"][:1])
        state = None
        zs = [z]
        for t in range(n):
            heads, state = mdn.step(z, torch.from_numpy(ep["actions"][t:t + 1]), state)
            z = MDNRNN.sample(heads, temperature, generator=g)
            zs.append(z)
        dream = ConvVAE.to_frames(vae.decode(torch.cat(zs))).numpy()
    frames = [np.concatenate([real[t], dream[t]], axis=1) for t in range(n + 1)]
    return write_video(out, frames, fps=10, scale=4)


def parse_args(argv: Optional[list[str]] = None) -> tuple[TrainMDNConfig, argparse.Namespace]:
    d = TrainMDNConfig()
    p = argparse.ArgumentParser(prog="python -m vmc.train_mdn", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--latents", default=d.latents, help="latent file from vmc.train_vae")
    p.add_argument("--vae", default=d.vae, help="VAE checkpoint (for the dream video)")
    p.add_argument("--out", default=d.out, help="best checkpoint path")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature of the dream video")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--init", default=d.init, help="checkpoint whose weights a new run starts from")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--hidden", type=int, default=d.model.hidden, help="LSTM units")
    p.add_argument("--gaussians", type=int, default=d.model.gaussians, help="mixture components")
    p.add_argument("--z-dim", type=int, default=d.model.z_dim, help="latent size (must match the VAE)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.last.pt")
    p.add_argument("--force", action="store_true", help="start over even if <out>.last.pt exists")
    p.add_argument("--no-video", action="store_true", help="skip the dream video")
    a = p.parse_args(argv)
    cfg = TrainMDNConfig(latents=a.latents, vae=a.vae, out=a.out, epochs=a.epochs, steps_per_epoch=a.steps_per_epoch,
                         seq_len=a.seq_len, batch_size=a.batch_size, lr=a.lr, temperature=a.temperature, seed=a.seed, init=a.init,
                         device=a.device, threads=a.threads,
                         model=MDNRNNConfig(z_dim=a.z_dim, hidden=a.hidden, gaussians=a.gaussians))
    return cfg, a


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg, a = parse_args(argv)
    try:
        train(cfg, resume=a.resume, force=a.force)
        if not a.no_video:
            path = dream_video(Path(cfg.vae), Path(cfg.out), Path(cfg.latents), Path(cfg.out).parent / "dream.mp4",
                               cfg.temperature)
            log.info("wrote %s", path)
    except CheckpointError as err:
        print(f"vmc.train_mdn: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
