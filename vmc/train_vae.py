"""``python -m vmc.train_vae``: train the ConvVAE on collected frames, then encode them to latents.

Writes ``--out`` (the best model by validation loss), ``<out>.last.pt`` (model, optimiser, epoch and
history, for ``--resume``), ``<out>.json`` (the resolved config and package version), and beside them
``vae_recon_epochNNN.png`` (validation frames over their reconstructions), ``vae_loss.png``.
Finally every frame of the collection is encoded once to ``--latents`` (mu and logvar per frame with
the episode's actions, rewards and ends), which the Memory stage trains on.
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

from vmc.data import RolloutDataset, ShardError, validation_set
from vmc.models.vae import ConvVAE, VAEConfig
from vmc.training import (CheckpointError, existing_run_guard, last_checkpoint, load_checkpoint, pick_device, plot_curves, prefetch,
                          restore, save_epoch, use_all_cores)

log = logging.getLogger("vmc.train_vae")
LATENTS_FORMAT = "vmc-latents-1"


@dataclass
class TrainVAEConfig:
    """What ``python -m vmc.train_vae`` does; saved with the checkpoint."""

    data: str = "data/lighthouse"
    """Collection folder (shards from ``vmc.collect``)."""
    out: str = "checkpoints/vae.pt"
    """Best checkpoint; ``<out>.last.pt`` and pictures go beside it."""
    latents: str = ""
    """Latent file to write after training (default: ``latents.h5`` beside ``out``: latents belong to a VAE)."""
    epochs: int = 10
    """Passes over the training frames."""
    batch_size: int = 64
    """Frames per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate."""
    val_fraction: float = 0.1
    """Share of episodes held out for validation (deterministic split by episode)."""
    seed: int = 0
    """Seed of initialisation, shuffling and sampling."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``..."""
    threads: int = 0
    """CPU threads for torch (0: one per core)."""
    model: VAEConfig = field(default_factory=VAEConfig)
    """The architecture."""

    @property
    def latents_path(self) -> Path:
        return Path(self.latents) if self.latents else Path(self.out).parent / "latents.h5"


def _recon_grid(model: ConvVAE, frames: np.ndarray, device: torch.device) -> np.ndarray:
    """(2*64, n*64, 3) uint8: frames on top, reconstructions (from mu) below."""
    with torch.no_grad():
        x = ConvVAE.to_input(torch.from_numpy(frames)).to(device)
        mu, _ = model.encode(x)
        rec = ConvVAE.to_frames(model.decode(mu)).cpu().numpy()
    return np.concatenate([np.concatenate(list(frames), axis=1), np.concatenate(list(rec), axis=1)], axis=0)


def evaluate(model: ConvVAE, ds: RolloutDataset, batch_size: int, device: torch.device, seed: int = 0) -> dict:
    """Mean loss terms over every frame of ``ds`` (sampling with a fixed seed, so epochs compare)."""
    model.eval()
    totals, n = {"loss": 0.0, "recon": 0.0, "kl": 0.0}, 0
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for frames in ds.iter_frames(batch_size, shuffle=False):
            x = ConvVAE.to_input(torch.from_numpy(frames)).to(device)
            mu, logvar = model.encode(x)
            z = mu + torch.randn(mu.shape, generator=g).to(device) * torch.exp(0.5 * logvar)
            terms = model.loss(x, model.decode(z), mu, logvar)
            for k in totals:
                totals[k] += terms[k].item() * len(frames)
            n += len(frames)
    return {k: v / max(n, 1) for k, v in totals.items()}


def train(cfg: TrainVAEConfig, resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Train (or continue), keep best/last checkpoints and pictures; returns the history's last row."""
    from tqdm import tqdm

    out = Path(cfg.out)
    start = existing_run_guard(last_checkpoint(out), resume, force)
    torch.manual_seed(cfg.seed)
    use_all_cores(cfg.threads)
    device = pick_device(cfg.device)
    train_ds = RolloutDataset(Path(cfg.data), "train", cfg.val_fraction)
    val_ds = RolloutDataset(Path(cfg.data), "val", cfg.val_fraction)
    if not train_ds.episodes or not val_ds.episodes:
        raise SystemExit(f"error: {cfg.data} needs episodes in both splits (train {len(train_ds.episodes)}, "
                         f"val {len(val_ds.episodes)}): collect more episodes or change --val-fraction")
    model = ConvVAE(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    epoch0 = 0
    if start is not None:
        history, epoch0 = restore(start, "vae", model, opt, device)
        log.info("resuming %s after epoch %d", start, epoch0)
    log.info("training on %d frames (%d episodes), validating on %d frames, device %s, %d threads",
             train_ds.num_frames, len(train_ds.episodes), val_ds.num_frames, device, torch.get_num_threads())
    rng = np.random.default_rng(cfg.seed)
    val_pick = np.sort(rng.choice(val_ds.num_frames, size=min(8, val_ds.num_frames), replace=False))
    val_frames = np.stack([val_ds.frame(int(i)) for i in val_pick])
    best = min((h["val_loss"] for h in history), default=float("inf"))
    for epoch in range(epoch0 + 1, cfg.epochs + 1):
        model.train()
        t0, seen, running = time.perf_counter(), 0, 0.0
        bar = tqdm(total=train_ds.num_frames, unit="frame", desc=f"vae epoch {epoch}/{cfg.epochs}", disable=not progress,
                   dynamic_ncols=True)
        for frames in prefetch(train_ds.iter_frames(cfg.batch_size, shuffle=True, seed=cfg.seed * 100003 + epoch)):
            x = ConvVAE.to_input(torch.from_numpy(frames)).to(device)
            recon, mu, logvar = model(x)
            terms = model.loss(x, recon, mu, logvar)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            seen += len(frames)
            running += terms["loss"].item() * len(frames)
            bar.update(len(frames))
            bar.set_postfix(loss=f"{terms['loss'].item():.1f}", recon=f"{terms['recon'].item():.1f}", kl=f"{terms['kl'].item():.1f}")
        bar.close()
        train_s = time.perf_counter() - t0
        val = evaluate(model, val_ds, cfg.batch_size, device)
        row = {"epoch": epoch, "train_loss": running / max(seen, 1), "val_loss": val["loss"], "val_recon": val["recon"],
               "val_kl": val["kl"], "frames_per_s": seen / train_s, "seconds": time.perf_counter() - t0}
        history.append(row)
        log.info("epoch %d: train %.1f, val %.1f (recon %.1f, kl %.1f), %.0f frames/s", epoch, row["train_loss"],
                 row["val_loss"], row["val_recon"], row["val_kl"], row["frames_per_s"])
        best = save_epoch(out, "vae", cfg, model, opt, history, best)
        from PIL import Image

        Image.fromarray(_recon_grid(model, val_frames, device)).save(out.parent / f"vae_recon_epoch{epoch:03d}.png")
        plot_curves(out.parent / "vae_loss.png", history, ["train_loss", "val_loss"], "ConvVAE loss per frame")
    train_ds.close()
    val_ds.close()
    return history[-1] if history else {}


def load_vae(path: Path, device: torch.device | str = "cpu") -> ConvVAE:
    """The ConvVAE stored in a checkpoint, in eval mode."""
    ckpt = load_checkpoint(Path(path), "vae", map_location=device)
    model_cfg = VAEConfig(**ckpt["config"]["model"])
    model = ConvVAE(model_cfg).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def encode_dataset(vae_path: Path, data: Path, latents: Path, val_fraction: float = 0.1, batch_size: int = 256,
                   device: str = "auto") -> Path:
    """Encode every frame of a collection to ``latents`` (HDF5, written atomically).

    One group per episode (same name as in the shards): ``mu`` and ``logvar`` (T+1, Z) float32,
    ``actions`` (T, 3), ``rewards`` (T,), ``terminations`` / ``truncations`` (T,); attributes ``track``,
    ``index``, ``seed``, ``policy``, ``length`` and ``split`` (train / val, the same split as training).
    """
    dev = pick_device(device)
    model = load_vae(vae_path, dev)
    latents = Path(latents)
    tmp = latents.with_name(latents.name + ".tmp")
    with RolloutDataset(Path(data), "all") as ds, h5py.File(tmp, "w") as f, torch.no_grad():
        val = validation_set(ds.episodes, val_fraction)
        f.attrs["vmc_format"] = LATENTS_FORMAT
        f.attrs["vae"] = str(vae_path)
        f.attrs["z_dim"] = model.config.z_dim
        f.attrs["data"] = str(data)
        for ref in ds.episodes:
            g_in = ds._group(ref)
            obs = g_in["observations"]
            mus, logvars = [], []
            for s in range(0, len(obs), batch_size):
                x = ConvVAE.to_input(torch.from_numpy(obs[s:s + batch_size])).to(dev)
                mu, logvar = model.encode(x)
                mus.append(mu.cpu().numpy())
                logvars.append(logvar.cpu().numpy())
            g = f.create_group(ref.name)  # indices are unique within a collection
            g.create_dataset("mu", data=np.concatenate(mus).astype(np.float32))
            g.create_dataset("logvar", data=np.concatenate(logvars).astype(np.float32))
            for k in ("actions", "rewards", "terminations", "truncations"):
                g.create_dataset(k, data=g_in[k][()])
            g.attrs.update({"track": ref.track, "index": ref.index, "seed": ref.seed, "policy": ref.policy,
                            "length": ref.length, "split": "val" if (ref.track, ref.index) in val else "train"})
    tmp.replace(latents)
    return latents


def parse_args(argv: Optional[list[str]] = None) -> tuple[TrainVAEConfig, argparse.Namespace]:
    d = TrainVAEConfig()
    p = argparse.ArgumentParser(prog="python -m vmc.train_vae", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=d.data, help="collection folder")
    p.add_argument("--out", default=d.out, help="best checkpoint path")
    p.add_argument("--latents", default=d.latents, help="latent file to write (default: latents.h5 beside --out)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0: all cores)")
    p.add_argument("--z-dim", type=int, default=d.model.z_dim, help="latent size")
    p.add_argument("--kl-tolerance", type=float, default=d.model.kl_tolerance, help="free bits per latent dimension")
    p.add_argument("--resume", action="store_true", help="continue from <out>.last.pt")
    p.add_argument("--force", action="store_true", help="start over even if <out>.last.pt exists")
    p.add_argument("--skip-encode", action="store_true", help="do not write the latent file")
    a = p.parse_args(argv)
    cfg = TrainVAEConfig(data=a.data, out=a.out, latents=a.latents, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                         val_fraction=a.val_fraction, seed=a.seed, device=a.device, threads=a.threads,
                         model=VAEConfig(z_dim=a.z_dim, kl_tolerance=a.kl_tolerance))
    return cfg, a


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg, a = parse_args(argv)
    try:
        train(cfg, resume=a.resume, force=a.force)
        if not a.skip_encode:
            t0 = time.perf_counter()
            path = encode_dataset(Path(cfg.out), Path(cfg.data), cfg.latents_path, cfg.val_fraction, device=cfg.device)
            log.info("encoded the collection to %s in %.0f s", path, time.perf_counter() - t0)
    except (ShardError, CheckpointError, FileNotFoundError) as err:
        print(f"vmc.train_vae: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
