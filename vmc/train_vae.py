"""``python -m vmc.train_vae``: train the ConvVAE on collected frames, then encode them to latents.

Writes into the run folder ``--run``: ``vae.pt`` (the best model by validation loss), ``vae.last.pt`` (model,
optimiser, epoch and history, for ``--resume``), ``vae.json`` (the resolved config and package version),
``vae_recon_epochNNN.png`` (validation frames over their reconstructions) and ``vae_loss.png``. Finally every
frame of the collection is encoded once to ``latents.h5`` (``vmc.latents``), which the Memory stage trains on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from vmc import cli, records
from vmc.checkpoints import load_checkpoint, vae_from
from vmc.cli import Config, check_positive, check_share
from vmc.data import RolloutDataset
from vmc.errors import VmcError
from vmc.latents import latents_info, write_latents
from vmc.models.vae import ConvVAE, VAEConfig
from vmc.runs import RUNS
from vmc.training import adam, last_checkpoint, pick_device, plot_curves, prefetch, restore, resume_point, save_epoch, use_all_cores, use_bf16

log = logging.getLogger("vmc.train_vae")


@dataclass
class TrainVAEConfig(Config):
    """Train the ConvVAE on a collection's frames, then encode them to the run's latent file."""

    data: str = "data/lighthouse"
    """Collection folder (shards from ``vmc.collect``)."""
    run: str = str(RUNS / "lighthouse-small")
    """Run folder: ``vae.pt``, ``vae.last.pt``, pictures and ``latents.h5`` go there."""
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
    """CPU threads for torch (0: one per core this process may run on, with a warning when other processes keep cores busy: beside them
    fewer threads train faster, e.g. 1 beside two game workers on 2 cores)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Arithmetic of the forward pass: ``bf16`` autocast (``auto``: where the CPU or GPU has bfloat16 units) or
    ``fp32``. Weights, optimiser and loss stay in float32."""
    in_memory: bool = True
    """Decompress the training frames into memory once (about 12 KB a frame) instead of reading the shards every
    epoch."""
    model: VAEConfig = field(default_factory=VAEConfig)
    """The architecture."""
    teacher_weight: float = 0.0
    """Weight of the teacher loss: squared error of a linear read-out of the mean latent (``--model.teacher-outputs
    3``) against the centre-line driver's action recorded with each frame (``expert_actions`` of ``mix`` and
    ``centreline`` collections), so that z holds what steering needs and a linear controller can read it; with
    ``--model.teacher-outputs 7`` also against the road's direction 5-40 m ahead (``road_angles``).
    Privileged (the track's centre line); 0: World Models' VAE, as the teacher-free recipe must use."""
    flip: float = 0.0
    """Share of training frames mirrored left-right, drawn per frame, with the teacher's steering negated: a road
    bending left is one bending right, so z and the read-out cannot lean on which side the scenery is."""
    colour_jitter: float = 0.0
    """Colour jitter of each training frame (kornia's ``ColorJitter``, which is also the reconstruction target):
    brightness, contrast and saturation scaled by factors drawn in [1 - j, 1 + j], hue turned by up to j / 6 of a
    turn; 0: none. Validation frames and the latent file are never altered."""
    shift: int = 0
    """Random translation of each training frame by up to this many pixels in each direction (edges repeated, then
    cropped back to the frame's size: DrQ's and RAD's augmentation; kornia's ``RandomCrop``), also the
    reconstruction target: z and the read-out cannot lean on exactly where things are; 0: none."""
    random_conv: float = 0.0
    """Share of training frames the encoder sees through a random convolution (a fresh kernel per frame, 1x1, 3x3
    or 5x5 drawn per batch, the result rescaled to the frame's mean and spread: Lee et al. 2020's network
    randomisation, Xu et al. 2021's RandConv) while the decoder still reconstructs the frame as it was and the read-out is still held to the
    teacher: z must keep the road's shapes and lose its colours and textures; 0: none."""
    init: str = ""
    """A VAE checkpoint whose weights start the training (with a new optimiser; ``--model`` must be its
    architecture): fine-tuning on a collection that grew (``vmc.iterate --vae-epochs``). Empty: random weights."""
    encode: bool = True
    """Write the latent file after training."""
    resume: bool = False
    """Continue the run's ``vae.last.pt`` (it must have been made with the same config and data)."""
    force: bool = False
    """Start over even if the run folder holds a VAE."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"run", "epochs", "device", "threads", "encode", "in_memory", "precision"})

    def validate(self) -> None:
        check_positive(epochs=self.epochs, batch_size=self.batch_size)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.teacher_weight < 0:
            raise ValueError(f"--teacher-weight must be at least 0, got {self.teacher_weight}")
        check_share(flip=self.flip, random_conv=self.random_conv)
        if not 0 <= self.colour_jitter < 1:
            raise ValueError(f"--colour-jitter must be at least 0 and below 1, got {self.colour_jitter}")
        if self.shift < 0:
            raise ValueError(f"--shift must be at least 0, got {self.shift}")
        if self.teacher_weight and (self.model.teacher_outputs not in (3, 7) or not self.in_memory):
            raise ValueError("--teacher-weight needs --model.teacher-outputs 3 (or 7) and --in-memory")

    @property
    def out(self) -> Path:
        """The best checkpoint."""
        return Path(self.run) / "vae.pt"

    @property
    def latents(self) -> Path:
        """The latent file."""
        return Path(self.run) / "latents.h5"


def _recon_grid(model: ConvVAE, frames: np.ndarray, device: torch.device) -> np.ndarray:
    """(2*64, n*64, 3) uint8: frames on top, reconstructions (from mu) below."""
    with torch.no_grad():
        x = ConvVAE.to_input(torch.from_numpy(frames)).to(device)
        mu, _ = model.encode(x)
        rec = ConvVAE.to_frames(model.decode(mu)).cpu().numpy()
    return np.concatenate([np.concatenate(list(frames), axis=1), np.concatenate(list(rec), axis=1)], axis=0)


class Augment:
    """The training frames' augmentation (:attr:`TrainVAEConfig.flip`, :attr:`TrainVAEConfig.colour_jitter`,
    :attr:`TrainVAEConfig.shift`, :attr:`TrainVAEConfig.random_conv`); draws from torch's global generator, which
    ``train`` seeds."""

    KERNELS = (1, 3, 5)

    def __init__(self, flip: float, colour_jitter: float, shift: int = 0, size: int = 64, random_conv: float = 0.0) -> None:
        self.flip, self.jitter, self.shift, self.random_conv = flip, None, None, random_conv
        if shift:
            from kornia.augmentation import RandomCrop

            self.shift = RandomCrop((size, size), padding=shift, padding_mode="replicate", p=1.0)
        if colour_jitter:
            from kornia.augmentation import ColorJitter

            j = colour_jitter
            self.jitter = ColorJitter(j, j, j, j / 6, p=1.0)

    def __bool__(self) -> bool:
        return bool(self.flip) or self.jitter is not None or self.shift is not None or bool(self.random_conv)

    def __call__(self, x: torch.Tensor, teacher: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Frames (B, 3, 64, 64) in [0, 1] and the teacher's targets (B, 3) or (B, 7) or None → both augmented."""
        if self.flip:
            mirrored = torch.rand(len(x), device=x.device) < self.flip
            x = torch.where(mirrored.view(-1, 1, 1, 1), x.flip(-1), x)
            if teacher is not None:
                # steering (column 0) and the road's angles (3-6) change sign in a mirror; the pedals do not
                sided = torch.ones(teacher.shape[1], dtype=torch.bool, device=x.device)
                sided[1:3] = False
                teacher = torch.where(mirrored[:, None] & sided, -teacher, teacher)
        if self.shift is not None:
            x = self.shift(x)
        if self.jitter is not None:
            x = self.jitter(x).clamp_(0, 1)
        return x, teacher

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, H, W) in [0, 1] → what the encoder sees: :attr:`random_conv` of them through a random
        convolution each (one kernel size per batch), rescaled to each frame's own mean and standard deviation and
        clipped to [0, 1]; the others as they are."""
        if not self.random_conv:
            return x
        b, c, h, w = x.shape
        k = self.KERNELS[int(torch.randint(len(self.KERNELS), ()))]
        # He-style scale; the rescaling below makes it irrelevant except for numerical range
        weight = torch.randn(b * c, c, k, k, device=x.device) / (c * k * k) ** 0.5
        frames = x.reshape(1, b * c, h, w)  # one group per frame: its own kernel
        padded = F.pad(frames, [k // 2] * 4, mode="reflect") if k > 1 else frames
        y = F.conv2d(padded, weight, groups=b).reshape(b, c, h, w)
        dims = (1, 2, 3)
        y = (y - y.mean(dims, keepdim=True)) / y.std(dims, keepdim=True).clamp_min(1e-6)
        y = (y * x.std(dims, keepdim=True) + x.mean(dims, keepdim=True)).clamp_(0, 1)
        chosen = torch.rand(b, device=x.device) < self.random_conv
        return torch.where(chosen.view(-1, 1, 1, 1), y, x)


def evaluate(model: ConvVAE, ds: RolloutDataset, batch_size: int, device: torch.device, seed: int = 0) -> dict:
    """Mean loss terms over every frame of ``ds`` (sampling with a fixed seed, so epochs compare)."""
    model.eval()
    totals, n = {"loss": 0.0, "recon": 0.0, "kl": 0.0}, 0
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for frames in ds.iter_frames(batch_size, shuffle=False):
            x = ConvVAE.to_input(torch.from_numpy(frames)).to(device).contiguous(memory_format=torch.channels_last)
            mu, logvar = model.encode(x)
            z = mu + torch.randn(mu.shape, generator=g).to(device) * torch.exp(0.5 * logvar)
            terms = model.loss(x, model.decode(z), mu, logvar)
            for k in totals:
                totals[k] += terms[k].item() * len(frames)
            n += len(frames)
    return {k: v / max(n, 1) for k, v in totals.items()}


def data_identity(train_ds: RolloutDataset, val_ds: RolloutDataset) -> dict:
    """What a VAE is built on: the collection's size (a collection that grew is other data)."""
    return {"data_episodes": len(train_ds.episodes) + len(val_ds.episodes), "data_steps": train_ds.num_steps + val_ds.num_steps}


def train(cfg: TrainVAEConfig, progress: bool = True) -> dict:
    """Train (or continue), keep best/last checkpoints and pictures; returns the history's last row."""
    from PIL import Image
    from tqdm import tqdm

    out = cfg.out
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    use_all_cores(cfg.threads, warn=device.type == "cpu")
    with RolloutDataset(Path(cfg.data), "train", cfg.val_fraction) as train_ds, \
            RolloutDataset(Path(cfg.data), "val", cfg.val_fraction) as val_ds:
        if not train_ds.episodes or not val_ds.episodes:
            raise VmcError(f"{cfg.data} needs episodes in both splits (train {len(train_ds.episodes)}, "
                           f"val {len(val_ds.episodes)}): collect more episodes or change --val-fraction")
        built_on = data_identity(train_ds, val_ds)
        start = resume_point(last_checkpoint(out), "vae", cfg, built_on, cfg.resume, cfg.force)
        # Frames go in channels-last (oneDNN's fast layout); the weights stay contiguous: the fused Adam copies every
        # non-contiguous parameter at each step, and the decoder's first weight is used as a matrix.
        model = ConvVAE(cfg.model).to(device)
        opt = adam(model.parameters(), cfg.lr, device)
        bf16 = use_bf16(cfg.precision, device)
        history, epoch0 = restore(start, model, opt)
        if cfg.init and start is None:
            init = load_checkpoint(Path(cfg.init), "vae")
            if init["config"]["model"] != cfg.record()["model"]:
                raise VmcError(f"--init {cfg.init}: its architecture {init['config']['model']} is not --model's "
                               f"{cfg.record()['model']}")
            model.load_state_dict(init["model"])
        if epoch0 >= cfg.epochs:
            return history[-1]
        log.info("training on %d frames (%d episodes), validating on %d frames, device %s, %d threads",
                 train_ds.num_frames, len(train_ds.episodes), val_ds.num_frames, device, torch.get_num_threads())
        rng = np.random.default_rng(cfg.seed)
        val_pick = np.sort(rng.choice(val_ds.num_frames, size=min(8, val_ds.num_frames), replace=False))
        val_frames = np.stack([val_ds.frame(int(i)) for i in val_pick])
        best = min((h["val_loss"] for h in history), default=float("inf"))
        frames_in_memory = train_ds.load_frames() if cfg.in_memory else None
        road = cfg.model.teacher_outputs == 7
        labels = train_ds.load_expert_actions(road) if cfg.teacher_weight else None
        if labels is not None and np.isnan(labels).all():
            raise VmcError(f"{cfg.data} holds no teacher's actions (expert_actions{' and road_angles' if road else ''}) "
                           "for --teacher-weight: collect with --policy mix or centreline")

        def batches(epoch: int):
            """(frames (B, 64, 64, 3) uint8, the teacher's actions (B, 3) or None) per step."""
            seed = cfg.seed * 100003 + epoch
            if frames_in_memory is None:
                return ((f, None) for f in prefetch(train_ds.iter_frames(cfg.batch_size, shuffle=True, seed=seed)))
            order = np.random.default_rng(seed).permutation(len(frames_in_memory))
            return ((frames_in_memory[i], None if labels is None else labels[i])
                    for i in (order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)))

        augment = Augment(cfg.flip, cfg.colour_jitter, cfg.shift, cfg.model.image_size, cfg.random_conv)
        if augment:
            log.info("augmenting: %.0f %% of frames mirrored, colour jitter %.2f, shifts of up to %d pixels, "
                     "%.0f %% seen by the encoder through random convolutions",
                     100 * cfg.flip, cfg.colour_jitter, cfg.shift, 100 * cfg.random_conv)
        n_batches = -(-train_ds.num_frames // cfg.batch_size)  # TensorBoard step = (epoch - 1) * n_batches + batch
        records.start(cfg.run, "train_vae", epoch0 * n_batches)  # drops what an interrupted run wrote from there
        records.text(cfg.run, "config/train_vae", cfg.record(), epoch0 * n_batches)
        log.info("%s frames, %s, %s", "in memory" if cfg.in_memory else "streamed from the shards",
                 "bf16 autocast" if bf16 else "fp32", device)
        for epoch in range(epoch0 + 1, cfg.epochs + 1):
            model.train()
            t0, seen, running, running_teacher = time.perf_counter(), 0, 0.0, 0.0
            bar = tqdm(total=train_ds.num_frames, unit="frame", desc=f"vae epoch {epoch}/{cfg.epochs}",
                       disable=not progress, dynamic_ncols=True)
            for b, (frames, teacher) in enumerate(batches(epoch)):
                x = ConvVAE.to_input(torch.from_numpy(frames)).to(device)
                teacher = None if teacher is None else torch.from_numpy(teacher).to(device)
                if augment:
                    x, teacher = augment(x, teacher)
                x = x.contiguous(memory_format=torch.channels_last)
                seen_by_encoder = augment.encoder_input(x).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    recon, mu, logvar = model(seen_by_encoder)
                terms = model.loss(x, recon.float(), mu.float(), logvar.float())
                if teacher is not None:
                    terms["teacher"] = model.teacher_loss(mu.float(), teacher)
                    terms["loss"] = terms["loss"] + cfg.teacher_weight * terms["teacher"]
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                opt.step()
                seen += len(frames)
                running += terms["loss"].item() * len(frames)
                running_teacher += terms["teacher"].item() * len(frames) if "teacher" in terms else 0.0
                bar.update(len(frames))
                records.scalars(cfg.run, "vae/step", {k: v.item() for k, v in terms.items()}, (epoch - 1) * n_batches + b)
                bar.set_postfix(loss=f"{terms['loss'].item():.1f}", recon=f"{terms['recon'].item():.1f}",
                                kl=f"{terms['kl'].item():.1f}")
            bar.close()
            train_s = time.perf_counter() - t0
            val = evaluate(model, val_ds, cfg.batch_size, device)
            row = {"epoch": epoch, "train_loss": running / max(seen, 1), "val_loss": val["loss"], "val_recon": val["recon"],
                   "val_kl": val["kl"], "frames_per_s": seen / train_s, "seconds": time.perf_counter() - t0}
            if cfg.teacher_weight:
                row["train_teacher"] = running_teacher / max(seen, 1)
            history.append(row)
            records.scalars(cfg.run, "vae/epoch", row, epoch * n_batches - 1)  # at the epoch's last step
            log.info("epoch %d: train %.1f, val %.1f (recon %.1f, kl %.1f), %.0f frames/s%s", epoch, row["train_loss"],
                     row["val_loss"], row["val_recon"], row["val_kl"], row["frames_per_s"],
                     f", teacher read-out error {row['train_teacher']:.3f}" if cfg.teacher_weight else "")
            best = save_epoch(out, "vae", cfg, model, opt, history, best, built_on)
            grid = _recon_grid(model, val_frames, device)
            Image.fromarray(grid).save(out.parent / f"vae_recon_epoch{epoch:03d}.png")
            records.image(cfg.run, "vae/reconstruction", grid, epoch * n_batches - 1)
            plot_curves(out.parent / "vae_loss.png", history, ["train_loss", "val_loss"], "ConvVAE loss per frame")
    return history[-1]


def encode(cfg: TrainVAEConfig) -> Path:
    """The run's latent file from its best VAE, written unless one from the same VAE and data is there."""
    ckpt = load_checkpoint(cfg.out, "vae")
    latents = cfg.latents
    if latents.exists():
        try:
            info = latents_info(latents)
            if info.get("vae") == ckpt["fingerprint"] and info.get("episodes") == ckpt["built_on"]["data_episodes"]:
                return latents
        except VmcError as err:
            log.warning("%s; writing it again", err)
    t0 = time.perf_counter()
    write_latents(vae_from(ckpt, pick_device(cfg.device)), ckpt["fingerprint"], Path(cfg.data), latents, cfg.val_fraction)
    log.info("encoded %s to %s in %.0f s", cfg.data, latents, time.perf_counter() - t0)
    return latents


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(TrainVAEConfig, argv, "python -m vmc.train_vae")

    def body() -> None:
        train(cfg)
        if cfg.encode:
            encode(cfg)

    return cli.run("vmc.train_vae", body)


if __name__ == "__main__":
    raise SystemExit(main())
