"""``python -m vmc.train_mdn``: train the MDN-RNN on the latent file written by ``vmc.train_vae``.

Trains on random fixed-length windows of (z_t, a_t) → (z_{t+1}, r_t, done_t), with z drawn from each
frame's N(mu, sigma) every time (as in World Models). Writes into the run folder ``--run``: ``mdn.pt`` (best by
validation loss), ``mdn.last.pt`` (for ``--resume``), ``mdn.json``, ``mdn_loss.png`` and, at the end, ``dream.mp4``:
a validation episode's real frames beside the MDN-RNN's dream of it (start from the real first frame,
then the recorded actions only), decoded by the VAE.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
import torch

from vmc import cli, records
from vmc.checkpoints import load_checkpoint, load_mdn, load_vae
from vmc.cli import Config, check_positive
from vmc.errors import CheckpointError
from vmc.latents import episode_names, latents_info, read_latents
from vmc.models.mdn import MDNRNN, MDNRNNConfig
from vmc.models.vae import ConvVAE
from vmc.runs import RUNS
from vmc.training import adam, last_checkpoint, pick_device, plot_curves, restore, resume_point, save_epoch, use_all_cores, use_bf16

log = logging.getLogger("vmc.train_mdn")


@dataclass
class TrainMDNConfig(Config):
    """Train the MDN-RNN on the run's latent file."""

    run: str = str(RUNS / "lighthouse-small")
    """Run folder: reads ``latents.h5`` and ``vae.pt`` there, writes ``mdn.pt``, ``mdn.last.pt``, ``dream.mp4``."""
    latents: str = ""
    """Latent file to train on (default: the run's ``latents.h5``)."""
    vae: str = ""
    """VAE checkpoint for the dream video (default: the run's ``vae.pt``)."""
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
    done_weight: float = 1.0
    """Weight of the steps where an episode ended (``stuck``, ``off_track``) in the done head's loss, against 1
    for the others: an episode ends once in hundreds of steps, and a dream whose done head never fires lets a
    controller drive off the road unpunished."""
    temperature: float = 1.0
    """Sampling temperature of the dream video."""
    seed: int = 0
    """Seed of initialisation and window sampling."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``..."""
    threads: int = 0
    """CPU threads for torch (0: one per core this process may run on, with a warning when other processes keep cores busy: beside them
    fewer threads train faster, e.g. 1 beside two game workers on 2 cores)."""
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    """Arithmetic of the forward pass: ``bf16`` autocast (``auto``: where the CPU or GPU has bfloat16 units) or
    ``fp32``. Weights, optimiser and loss stay in float32."""
    init: str = ""
    """MDN-RNN checkpoint whose weights a new run starts from (the iterative procedure's previous round)."""
    model: MDNRNNConfig = field(default_factory=MDNRNNConfig)
    """The architecture."""
    video: bool = True
    """Write ``dream.mp4`` after training."""
    resume: bool = False
    """Continue the run's ``mdn.last.pt`` (it must have been made with the same config and latents)."""
    force: bool = False
    """Start over even if the run folder holds an MDN-RNN."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"run", "epochs", "device", "threads", "video", "vae", "temperature", "precision"})

    def validate(self) -> None:
        check_positive(epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, seq_len=self.seq_len,
                       batch_size=self.batch_size)
        for name in ("lr", "done_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    @property
    def out(self) -> Path:
        """The best checkpoint."""
        return Path(self.run) / "mdn.pt"

    @property
    def latents_path(self) -> Path:
        return Path(self.latents) if self.latents else Path(self.run) / "latents.h5"

    @property
    def vae_path(self) -> Path:
        return Path(self.vae) if self.vae else Path(self.run) / "vae.pt"


class LatentSequences:
    """Episodes of one split of a latent file, in memory, sampled as windows of up to ``seq_len`` steps.

    A window starts at any step of any episode with the same chance, so every step but an episode's first
    ``seq_len - 1`` ends as many windows: the steps just before an episode ends (its crash, its getting stuck, its
    lap) are trained on as often as any other. Windows that would run past the end stop there and are padded;
    ``mask`` leaves the padding out of the loss. (Windows that had to fit inside an episode saw its last step in one
    window of every ``seq_len``, so the done head learnt endings at a fraction of their rate, and episodes shorter
    than a window, the quickest crashes, not at all.)"""

    def __init__(self, path: Path, split: str, seq_len: int) -> None:
        self.episodes = read_latents(path, split, 1, ("mu", "logvar", "actions", "rewards", "terminations"))
        self.seq_len = seq_len
        if not self.episodes:
            raise CheckpointError(f"{path}: no {split} episode")
        lengths = np.array([len(e["actions"]) for e in self.episodes], float)
        self.weights = lengths / lengths.sum()  # every start step equally likely

    def sample(self, batch: int, rng: np.random.Generator, sample_z: bool = True) -> dict[str, torch.Tensor]:
        """z (B, L+1, Z), actions (B, L, A), rewards (B, L), dones (B, L), mask (B, L): the window's own steps
        (True) and the padding after an episode's end (False, zeros in the other arrays)."""
        L, first = self.seq_len, self.episodes[0]
        out = {"z": np.zeros((batch, L + 1, first["mu"].shape[1]), np.float32),
               "actions": np.zeros((batch, L, first["actions"].shape[1]), np.float32),
               "rewards": np.zeros((batch, L), np.float32), "dones": np.zeros((batch, L), np.float32),
               "mask": np.zeros((batch, L), bool)}
        for i, e in enumerate(rng.choice(len(self.episodes), size=batch, p=self.weights)):
            ep = self.episodes[e]
            s = int(rng.integers(len(ep["actions"])))
            n = min(L, len(ep["actions"]) - s)
            mu, logvar = ep["mu"][s:s + n + 1], ep["logvar"][s:s + n + 1]
            out["z"][i, :n + 1] = mu + rng.standard_normal(mu.shape).astype(np.float32) * np.exp(0.5 * logvar) if sample_z else mu
            out["actions"][i, :n] = ep["actions"][s:s + n]
            out["rewards"][i, :n] = ep["rewards"][s:s + n]
            out["dones"][i, :n] = ep["terminations"][s:s + n]
            out["mask"][i, :n] = True
        return {k: torch.from_numpy(v) for k, v in out.items()}


def batch_loss(model: MDNRNN, batch: dict[str, torch.Tensor], device: torch.device, bf16: bool = False,
               done_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Loss terms of one batch of windows (the forward pass in bfloat16 autocast when ``bf16``), over the steps
    of ``batch['mask']``."""
    z = batch["z"].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        heads, _ = model(z[:, :-1], batch["actions"].to(device))
    heads = {k: v.float() for k, v in heads.items()}
    return model.loss(heads, z[:, 1:], batch["rewards"].to(device), batch["dones"].to(device), done_weight,
                      batch["mask"].to(device))


def train(cfg: TrainMDNConfig, progress: bool = True) -> dict:
    """Train (or continue); keeps best/last checkpoints and the loss curve. Returns the last history row."""
    from tqdm import tqdm

    out = cfg.out
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    use_all_cores(cfg.threads, warn=device.type == "cpu")
    info = latents_info(cfg.latents_path)
    built_on = {"vae": info.get("vae"), "data_episodes": info.get("episodes")}
    start = resume_point(last_checkpoint(out), "mdn", cfg, built_on, cfg.resume, cfg.force)
    train_set = LatentSequences(cfg.latents_path, "train", cfg.seq_len)
    val_set = LatentSequences(cfg.latents_path, "val", cfg.seq_len)
    z_dim = train_set.episodes[0]["mu"].shape[1]
    if z_dim != cfg.model.z_dim:
        raise CheckpointError(f"{cfg.latents_path}: latents have {z_dim} dimensions, the model expects {cfg.model.z_dim} "
                              "(--model.z-dim)")
    model = MDNRNN(cfg.model).to(device)
    opt = adam(model.parameters(), cfg.lr, device)
    bf16 = use_bf16(cfg.precision, device)
    history, epoch0 = restore(start, model, opt)
    if start is None and cfg.init:
        model.load_state_dict(load_checkpoint(Path(cfg.init), "mdn", map_location=device)["model"])
        log.info("starting from the weights of %s", cfg.init)
    if epoch0 >= cfg.epochs:
        return history[-1]
    val_batch = val_set.sample(max(cfg.batch_size, 64), np.random.default_rng(12345), sample_z=False)
    best = min((h["val_loss"] for h in history), default=float("inf"))
    records.start(cfg.run, "train_mdn", epoch0 * cfg.steps_per_epoch)  # drops what an interrupted run wrote from there
    records.text(cfg.run, "config/train_mdn", cfg.record(), epoch0 * cfg.steps_per_epoch)
    for epoch in range(epoch0 + 1, cfg.epochs + 1):
        rng = np.random.default_rng([cfg.seed, epoch])  # an epoch's windows do not depend on earlier runs
        model.train()
        t0, total = time.perf_counter(), 0.0
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"mdn epoch {epoch}/{cfg.epochs}", disable=not progress, dynamic_ncols=True)
        for i in bar:
            terms = batch_loss(model, train_set.sample(cfg.batch_size, rng), device, bf16, cfg.done_weight)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += terms["loss"].item()
            records.scalars(cfg.run, "mdn/step", {k: v.item() for k, v in terms.items()}, (epoch - 1) * cfg.steps_per_epoch + i)
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}", nll=f"{terms['nll'].item():.3f}")
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            val = {k: float(v) for k, v in batch_loss(model, val_batch, device, done_weight=cfg.done_weight).items()}
        row = {"epoch": epoch, "train_loss": total / cfg.steps_per_epoch, "val_loss": val["loss"], "val_nll": val["nll"],
               "val_reward": val["reward"], "val_done": val["done"],
               "steps_per_s": cfg.steps_per_epoch * cfg.batch_size * cfg.seq_len / seconds, "seconds": seconds}
        history.append(row)
        records.scalars(cfg.run, "mdn/epoch", row, epoch * cfg.steps_per_epoch - 1)  # at the epoch's last step
        log.info("epoch %d: train %.3f, val %.3f (nll %.3f, reward %.4f, done %.4f), %.0f sequence steps/s", epoch,
                 row["train_loss"], row["val_loss"], row["val_nll"], row["val_reward"], row["val_done"], row["steps_per_s"])
        best = save_epoch(out, "mdn", cfg, model, opt, history, best, built_on)
        plot_curves(out.parent / "mdn_loss.png", history, ["train_loss", "val_loss"], "MDN-RNN loss")
    return history[-1]


def dream_video(vae_path: Path, mdn_path: Path, latents: Path, out: Path, temperature: float = 1.0,
                steps: int = 100, seed: int = 0) -> Path:
    """Real frames (left) beside the dream (right): the MDN-RNN rolled from the real first latent on the
    recorded actions, each sampled z decoded by the VAE. Written to ``out`` (mp4, 4x upscaled)."""
    from vmc.data import RolloutDataset, load_episode
    from vmc.video import write_video

    vae, mdn = load_vae(vae_path), load_mdn(mdn_path)
    ep = max(read_latents(latents, "val", 1, ("mu", "actions")), key=lambda e: e["length"])
    data = Path(str(latents_info(latents)["data"]))
    with RolloutDataset(data) as ds:
        ref = episode_names(ds.episodes)[ep["name"]]
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


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(TrainMDNConfig, argv, "python -m vmc.train_mdn")

    def body() -> None:
        train(cfg)
        if cfg.video:
            log.info("wrote %s", dream_video(cfg.vae_path, cfg.out, cfg.latents_path, cfg.out.parent / "dream.mp4",
                                             cfg.temperature))

    return cli.run("vmc.train_mdn", body)


if __name__ == "__main__":
    raise SystemExit(main())
