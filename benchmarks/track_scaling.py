"""How far a steering read-out learnt on N tracks carries to tracks it never saw, inside the training split.

Leave-tracks-out on a ``mix`` collection of the eight training tracks (default: the ``tracks`` preset's own,
``data/8tracks-tracks``; the held-out and kept-aside tracks are never read): ``--left-out`` tracks (default
cocoa_temple and candela_city) are set aside, and each model learns the centre-line driver's action from the
frames of the first N of the other six (``--sizes``, in the order given and, with ``--both-orders``, reversed;
``--pool`` names other tracks to learn from, e.g. the six and their ``<track>-reverse``),
for the same ``--steps`` optimiser steps whatever N. The table gives the steering read-out's correlation with the
driver on held-in validation episodes of the N tracks and on each left-out track, and the share of frames where
the driver turns (|steer| > 0.2) on which it steers to the same side. Models (``--models``):

* ``vae``: the ConvVAE with its linear teacher read-out of mu, reconstruction and teacher loss as
  ``vmc.train_vae --teacher-weight`` (the ``tracks`` preset's weight, 500);
* ``encoder``: the same network trained on the teacher loss alone (no decoder, no KL): a supervised CNN;
* ``keypoints``: a conv stack to a 16x16 map, a spatial softmax (32 keypoints, Levine et al. 2016) and a linear
  read-out, whose only features are where things are in the picture.

``--random-conv F`` shows that share of the training frames to every model through a random convolution
(``vmc.train_vae --random-conv``). Other options change what the models see (``--view``, ``--mask-top``; temporal
inputs, ``--temporal stack|diff --gap K``: the frame beside the one K steps earlier or its change since), how they
are augmented, regularised or sized, add a self-supervised objective (``--inverse W``: inverse dynamics; ``--forward W``: forward dynamics), a
domain-adversarial track classifier (``--adversary W``) or depth prediction (``--depth W``, from a collection
recorded with ``vmc.collect --depth``), or take the frames learnt from from other collections of the same tracks
(``--train-data``, e.g. recorded with other textures: ``benchmarks/texture_variants.py``). A screen for vision
ideas that needs no held-out track, and a measure of how much more tracks would help.

    python benchmarks/track_scaling.py [--data data/8tracks-tracks --sizes 1 2 3 4 6 --models encoder vae]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from readout_probe import steering_agreement
from torch import nn
from torch.nn import functional as F

from vmc.data import RolloutDataset
from vmc.main import TRAIN_TRACKS
from vmc.models.vae import ConvVAE, VAEConfig
from vmc.train_vae import Augment
from vmc.training import use_all_cores, use_bf16


class Keypoints(nn.Module):
    """(B, 3, 64, 64) → action (B, 3) through the expected x and y of 32 softmaxed feature maps (B, 64)."""

    def __init__(self, keypoints: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, keypoints, 1))
        self.head = nn.Linear(2 * keypoints, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x).float()
        b, k, h, w = f.shape
        p = F.softmax(f.reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
        xs, ys = torch.linspace(-1, 1, w), torch.linspace(-1, 1, h)
        return self.head(torch.cat([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=1))


DEPTH_CELLS = 16
"""The depth target's grid (``--depth``): the frame's log-depth averaged over 4x4-pixel cells."""
LOG_DEPTH_MAX = float(-np.log(1e-4))
"""-log(1 - z) is clipped here (9.2, beyond the far plane's sky) and the target divided by it, to [0, 1]."""


def log_depth(depth: np.ndarray) -> np.ndarray:
    """Depth buffers (N, 64, 64) uint16 (``EnvConfig.depth``: the z-buffer x 65,535) → -log(1 - z), which grows as
    the log of the distance, divided by ``LOG_DEPTH_MAX``: (N, 64, 64) float32 in [0, 1]."""
    return -np.log(np.clip(1 - depth.astype(np.float32) / 65535, 1e-4, 1)) / LOG_DEPTH_MAX


def depth_target(depth: np.ndarray) -> np.ndarray:
    """Depth buffers (N, 64, 64) uint16 → the target (N, 256): :func:`log_depth` averaged over 4x4 cells."""
    scaled = log_depth(depth)
    n, h, w = scaled.shape
    cells = scaled.reshape(n, DEPTH_CELLS, h // DEPTH_CELLS, DEPTH_CELLS, w // DEPTH_CELLS).mean((2, 4))
    return cells.reshape(n, DEPTH_CELLS * DEPTH_CELLS)


def load(folder: Path, split: str, tracks: list[str], gap: int = 0,
         taken: bool = False, depth: bool = False, see_depth: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (N, 64, 64, 3), the driver's actions (N, 3) and track names (N,) of the split's labelled frames; with
    ``gap`` > 0 each frame is followed by the one ``gap`` steps earlier in its episode (the episode's first frame
    where there is none that early), (N, 64, 64, 6); with ``taken``, the action the collection took into each frame
    follows the driver's (N, 6; NaN at an episode's first frame); with ``depth``, the frame's log-depth target
    follows them (``depth_target``, N, 3 + 256); with ``see_depth`` ``instead``, the frames are the log-depth instead
    (N, 64, 64, 3), -log(1 - z) / ``LOG_DEPTH_MAX`` in every channel as uint8: the scene's shape without its colours;
    ``beside``, the log-depth follows the frame as a fourth channel (N, 64, 64, 4)."""
    with RolloutDataset(folder, split, tracks=tracks) as ds:
        frames, labels = ds.load_frames(), ds.load_expert_actions()
        if see_depth:
            image = np.round(log_depth(ds.load_depth()) * 255).astype(np.uint8)[..., None]
            frames = np.concatenate([frames, image], -1) if see_depth == "beside" else np.repeat(image, 3, axis=-1)
        lengths = [r.length + 1 for r in ds.episodes]
        names = np.repeat([r.track for r in ds.episodes], lengths)
        if gap:
            starts = np.repeat(np.cumsum([0] + lengths)[:-1], lengths)
            frames = np.concatenate([frames, frames[np.maximum(np.arange(len(frames)) - gap, starts)]], axis=-1)
        if taken:
            nan = np.full((1, 3), np.nan, np.float32)
            before = np.concatenate([np.concatenate([nan, ds.group(r)["actions"][:].astype(np.float32)])
                                     for r in ds.episodes]) if ds.episodes else np.empty((0, 3), np.float32)
            before[:, 2] = np.where(np.isnan(before[:, 2]), np.nan, before[:, 2] > 0.5)  # the game brakes above 0.5
            labels = np.concatenate([labels, before], axis=1)
        if depth:
            labels = np.concatenate([labels, depth_target(ds.load_depth())], axis=1)
    known = ~np.isnan(labels[:, :3]).any(axis=1)
    return frames[known], labels[known], names[known]


class View:
    """What the models see of a frame (B, 3, 64, 64) in [0, 1], in training and in evaluation alike: the frame
    (``rgb``), its luminance in all three channels (``gray``), or each channel shifted and scaled to the frame's own
    mean 0.5 and standard deviation 0.25 (``norm``), the frame at 16x16 scaled back up (``blur``: no fine texture),
    or the luminance's horizontal and vertical Sobel gradients and their magnitude (``edges``: no colour or
    brightness), or the log-depth in place of the frame (``depth``: ``load``'s ``see_depth``, no colour or
    texture); ``mask_top`` rows from the top (the sky and the scenery above the horizon, about row 28) set to 0.
    Temporal inputs (B, 6, 64, 64), the frame and an earlier one (``load``'s ``gap``): ``stack`` shows both,
    ``diff`` the frame and its change since then, (now - then) / 2 + 0.5."""

    def __init__(self, kind: str = "rgb", mask_top: int = 0, temporal: str = "none") -> None:
        self.kind, self.mask_top, self.temporal = kind, mask_top, temporal

    @staticmethod
    def luma(x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → the luminance (B, 1, H, W)."""
        return (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal == "diff":
            x = torch.cat([x[:, :3], (x[:, :3] - x[:, 3:]) * 0.5 + 0.5], dim=1)
        if self.kind == "gray":
            x = self.luma(x).expand_as(x)
        elif self.kind == "norm":
            mean, std = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True).clamp_min(1e-3)
            x = ((x - mean) / std * 0.25 + 0.5).clamp(0, 1)
        elif self.kind == "blur":
            x = F.interpolate(F.avg_pool2d(x, 4), size=x.shape[-2:], mode="bilinear", align_corners=False)
        elif self.kind == "edges":
            sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
            g = F.conv2d(F.pad(self.luma(x), [1] * 4, mode="replicate"), torch.stack([sobel, sobel.T])[:, None])
            x = torch.cat([g * 2 + 0.5, g.norm(dim=1, keepdim=True) * 2], dim=1).clamp(0, 1)
        if self.mask_top:
            x = x.clone()
            x[:, :, :self.mask_top] = 0
        return x.contiguous(memory_format=torch.channels_last)


class ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward (Ganin et al. 2016's gradient reversal layer)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


class DepthNet(nn.Module):
    """(B, 3, 64, 64) → log-depth (B, 1, 32, 32), as ``load``'s depth channel scaled to [0, 1]: a small U-Net (down to
    8x8 and back up to 32x32, each level beside the encoder's map of its size), fully convolutional, so that each
    cell's depth comes from the picture around it (the ground plane, the horizon, what stands on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU())  # 32x32
        self.e2 = nn.Sequential(nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU())  # 16x16
        self.e3 = nn.Sequential(nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())  # 8x8
        self.u2 = nn.Sequential(nn.Conv2d(96, 32, 3, padding=1), nn.ReLU())
        self.u1 = nn.Sequential(nn.Conv2d(48, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.e1(x)
        b = self.e2(a)
        up = self.u2(torch.cat([F.interpolate(self.e3(b), scale_factor=2), b], 1))
        return self.u1(torch.cat([F.interpolate(up, scale_factor=2), a], 1))


def depth_net(frames: np.ndarray, steps: int, batch: int, seed: int) -> DepthNet:
    """A :class:`DepthNet` learnt for ``steps`` optimiser steps from frames with their log-depth (N, 64, 64, 4)."""
    torch.manual_seed(seed)
    model = DepthNet().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    bf16 = use_bf16("auto", torch.device("cpu"))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = ConvVAE.to_input(torch.from_numpy(frames[np.sort(rng.choice(len(frames), batch, replace=False))]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            guess = model(x[:, :3].contiguous(memory_format=torch.channels_last)).float()
        loss = (guess - F.avg_pool2d(x[:, 3:], 2)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def predicted_depth(model: DepthNet, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames' predicted log-depth at 64x64 in every channel as uint8 (N, 64, 64, 3), what ``--view
    depth-predicted`` shows the models, and each frame's mean squared error against its own (N,)."""
    out, errors = [], []
    with torch.no_grad():
        for s in range(0, len(frames), 512):
            x = ConvVAE.to_input(torch.from_numpy(frames[s:s + 512]))
            guess = model(x[:, :3].contiguous(memory_format=torch.channels_last)).float().clamp(0, 1)
            errors.append((guess - F.avg_pool2d(x[:, 3:], 2)).pow(2).mean((1, 2, 3)))
            image = F.interpolate(guess, scale_factor=2, mode="bilinear", align_corners=False)
            out.append((image * 255).round().to(torch.uint8)[:, 0, :, :, None].expand(-1, -1, -1, 3))
    return torch.cat(out).numpy(), torch.cat(errors).numpy()


def predict(model: nn.Module, frames: np.ndarray, view: View) -> np.ndarray:
    """The model's steering for each frame (N,)."""
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(frames), 512):
            x = view(ConvVAE.to_input(torch.from_numpy(frames[s:s + 512])))
            out.append(model(x) if isinstance(model, Keypoints) else model.teacher(model.encode(x)[0]))
    model.train()
    return torch.cat(out)[:, 0].float().numpy()


def train(kind: str, frames: np.ndarray, labels: np.ndarray, steps: int, batch: int, seed: int,
          augment: Augment, view: View, weight_decay: float = 0.0, vae: VAEConfig | None = None,
          inverse: float = 0.0, tracks: np.ndarray | None = None, adversary: float = 0.0,
          depth: float = 0.0, forward: float = 0.0) -> nn.Module:
    """``kind`` learnt for ``steps`` optimiser steps on the frames (N, 64, 64, C) and the driver's actions (N, 3),
    each batch through ``augment`` (``vmc.train_vae``'s; with ``random_conv`` the VAE still reconstructs the frame as
    it was) and ``view``; AdamW's ``weight_decay``; ``vae``: the ConvVAE's architecture (the preset's with a
    3-output read-out if None). ``inverse`` > 0 (the encoder): frames are pairs (N, 64, 64, 6, the frame and the one
    before) and labels (N, 6) add the action taken between them, which a linear head on both frames' mu (B, 2 z)
    learns at that weight beside the read-out (inverse dynamics, as in Pathak et al. 2017: features of what the
    kart's own actions change); the model still reads one frame. ``forward`` > 0 (the encoder, same pairs and
    labels): an MLP learns the frame's mu from the one before's and the action taken between them (B, z + 3) → (B,
    z) at that weight, the target's gradient stopped (forward dynamics in latent space, as the self-predictive
    representations of Schwarzer et al. 2021: features that say where the kart goes next). ``adversary`` > 0 (the
    encoder): a classifier (B, z) → (B, tracks) learns which track each frame (``tracks``: its index, (N,)) comes from, through a gradient
    reversal layer that pays the encoder at that weight for making it fail (domain-adversarial training, Ganin et
    al. 2016: features that do not tell the tracks apart); the weight ramps up as 2 / (1 + exp(-10 p)) - 1 over
    the fraction p of the steps, as there. ``depth`` > 0 (the encoder): labels (N, 3 + 256) add the frame's log-depth
    on a 16x16 grid (``depth_target``), which an MLP on mu (B, z) → (B, 256) learns at that weight beside the
    read-out (depth prediction as an auxiliary task, as in Mirowski et al. 2017: the scene's shape, whatever its
    textures)."""
    torch.manual_seed(seed)
    model = Keypoints() if kind == "keypoints" else ConvVAE(vae or VAEConfig(teacher_outputs=3))
    if inverse:
        model.inverse = nn.Linear(2 * model.config.z_dim, 3)
    elif forward:
        z = model.config.z_dim
        model.forward_model = nn.Sequential(nn.Linear(z + 3, 256), nn.ReLU(), nn.Linear(256, z))
    elif depth:
        model.depth = nn.Sequential(nn.Linear(model.config.z_dim, 256), nn.ReLU(), nn.Linear(256, DEPTH_CELLS ** 2))
    elif adversary:
        model.adversary = nn.Sequential(nn.Linear(model.config.z_dim, 64), nn.ReLU(), nn.Linear(64, int(tracks.max()) + 1))
    elif frames.shape[-1] != 3:  # temporal inputs: the first convolution reads every channel
        first = model.encoder[0]
        model.encoder[0] = nn.Conv2d(frames.shape[-1], first.out_channels, first.kernel_size, first.stride)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=weight_decay)
    bf16 = use_bf16("auto", torch.device("cpu"))
    rng = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    tally = 0.0  # over the last 100 steps: the adversary's right guesses, or depth's error
    for step in range(steps):
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(len(frames))])
        i, order = np.sort(order[:batch]), order[batch:]
        raw, y = augment(ConvVAE.to_input(torch.from_numpy(frames[i])), torch.from_numpy(labels[i]))
        x = view(raw)
        seen = view(augment.encoder_input(raw)) if augment.random_conv else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if kind == "keypoints":
                loss = (model(seen).float() - y).pow(2).sum(dim=1).mean()
            elif inverse or forward:
                mu = model.encode(torch.cat([seen[:, :3], seen[:, 3:]]))[0].float()
                now, before = mu[:len(y)], mu[len(y):]
                known = ~torch.isnan(y[:, 3:]).any(dim=1)
                if inverse:
                    aux = inverse * (model.inverse(torch.cat([now, before], dim=1)[known]) - y[known, 3:]).pow(2)
                else:
                    guess = model.forward_model(torch.cat([before[known], y[known, 3:]], dim=1)).float()
                    aux = forward * (guess - now[known].detach()).pow(2)
                loss = model.teacher_loss(now, y[:, :3]) + aux.sum(dim=1).mean()
            elif depth:
                mu = model.encode(seen)[0].float()
                depth_loss = (model.depth(mu).float() - y[:, 3:]).pow(2).sum(dim=1).mean()
                loss = model.teacher_loss(mu, y[:, :3]) + depth * depth_loss
                if step >= steps - 100:
                    tally += float(depth_loss.detach())
            elif adversary:
                mu = model.encode(seen)[0].float()
                scale = adversary * (2 / (1 + np.exp(-10 * step / steps)) - 1)
                guess = model.adversary(ReverseGradient.apply(mu, scale))
                target = torch.from_numpy(tracks[i]).long()
                loss = model.teacher_loss(mu, y) + F.cross_entropy(guess, target)
                if step >= steps - 100:  # how well the classifier still tells the tracks apart at the end
                    tally += int((guess.argmax(1) == target).sum())
            elif kind == "encoder":
                loss = model.teacher_loss(model.encode(seen)[0].float(), y)
            else:
                recon, mu, logvar = model(seen)
        if kind == "vae":
            loss = model.loss(x, recon.float(), mu.float(), logvar.float())["loss"] + 500 * model.teacher_loss(mu.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if adversary:
        model.adversary_accuracy = tally / (min(100, steps) * batch)
    if depth:
        model.depth_error = tally / min(100, steps)
        model.depth_spread = float(np.nansum(labels[:, 3:].var(axis=0)))  # the error of always guessing the mean
    return model


def augment_asked(a: argparse.Namespace) -> bool:
    return bool(a.random_conv or a.flip or a.colour_jitter or a.shift)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/8tracks-tracks", help="a mix collection of the training tracks")
    p.add_argument("--train-data", nargs="+", default=None,
                   help="collections whose frames of the tracks learnt from train the models and give the held-in "
                        "validation (default: --data; the left-out tracks always come from --data), e.g. one "
                        "recorded on the same tracks with other textures")
    p.add_argument("--left-out", nargs="+", default=["cocoa_temple", "candela_city"])
    p.add_argument("--pool", nargs="+", default=None,
                   help="the tracks learnt from, in order (default: the training tracks not left out; `<track>-reverse` "
                        "names count as tracks of their own)")
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 2, 3, 4, 6], help="numbers of tracks learnt from")
    p.add_argument("--both-orders", action="store_true", help="also take the first N tracks in reverse order")
    p.add_argument("--models", nargs="+", default=["encoder"], choices=["encoder", "vae", "keypoints"])
    p.add_argument("--steps", type=int, default=1500, help="optimiser steps of every model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-conv", type=float, default=0.0,
                   help="share of training frames seen through a random convolution (train_vae --random-conv)")
    p.add_argument("--flip", type=float, default=0.0, help="share of training frames mirrored, steering negated")
    p.add_argument("--colour-jitter", type=float, default=0.0, help="train_vae --colour-jitter")
    p.add_argument("--shift", type=int, default=0, help="train_vae --shift")
    p.add_argument("--view", default="rgb", choices=["rgb", "gray", "norm", "blur", "edges", "depth", "depth-predicted"],
                   help="what the models see (View; depth: the log-depth instead of the frame, from collections recorded "
                        "with `vmc.collect --depth`; depth-predicted: a DepthNet's from the frame, learnt first for "
                        "--steps on the tracks learnt from)")
    p.add_argument("--mask-top", type=int, default=0, help="rows from the top the models do not see")
    p.add_argument("--temporal", default="none", choices=["none", "stack", "diff"],
                   help="the frame with the one --gap steps earlier (View; encoder model, rgb view, no random "
                        "convolutions or colour jitter; mirroring and shifts move both frames alike)")
    p.add_argument("--gap", type=int, default=1, help="steps between the frame and the earlier one of --temporal")
    p.add_argument("--inverse", type=float, default=0.0,
                   help="weight of an inverse-dynamics loss beside the read-out (train's inverse; encoder model, "
                        "no augmentation)")
    p.add_argument("--forward", type=float, default=0.0,
                   help="weight of a forward-dynamics loss in latent space beside the read-out (train's forward; "
                        "encoder model, no augmentation, not with --inverse)")
    p.add_argument("--adversary", type=float, default=0.0,
                   help="weight of a domain-adversarial track classifier on mu (train's adversary; encoder model, "
                        "without --inverse or --temporal, two tracks or more learnt from)")
    p.add_argument("--depth", type=float, default=0.0,
                   help="weight of a log-depth prediction (16x16 cells) from mu beside the read-out (train's depth; "
                        "encoder model on rgb frames, no augmentation; --data and --train-data collected with "
                        "`vmc.collect --depth`)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's, for every model")
    p.add_argument("--channels", nargs=4, type=int, default=[32, 64, 128, 256], help="the ConvVAE's (VAEConfig)")
    p.add_argument("--z-dim", type=int, default=32, help="the ConvVAE's latent size (VAEConfig)")
    a = p.parse_args()
    if a.temporal != "none" and (a.models != ["encoder"] or a.view != "rgb" or a.random_conv or a.colour_jitter):
        raise SystemExit("--temporal: the encoder model on the rgb view, without random convolutions or colour jitter")
    if a.temporal != "none" and a.gap < 1:
        raise SystemExit(f"--gap must be at least 1, got {a.gap}")
    gap = a.gap if a.temporal != "none" else 0
    if (a.inverse or a.forward) and (a.models != ["encoder"] or a.temporal != "none" or a.view != "rgb"
                                     or augment_asked(a) or (a.inverse and a.forward)):
        raise SystemExit("--inverse, --forward: one of them, the encoder model on single rgb frames, without augmentation")
    pairs = bool(a.inverse or a.forward)
    if a.adversary and (a.models != ["encoder"] or pairs or a.temporal != "none"):
        raise SystemExit("--adversary: the encoder model, without --inverse, --forward or --temporal")
    if a.adversary < 0 or (a.adversary and min(a.sizes) < 2):
        raise SystemExit("--adversary: a weight of 0 or more, and two tracks or more to tell apart (--sizes)")
    if a.depth and (a.models != ["encoder"] or pairs or a.adversary or a.temporal != "none" or a.view != "rgb"
                    or augment_asked(a)):
        raise SystemExit("--depth: the encoder model on single rgb frames, without augmentation, --inverse, --forward or "
                         "--adversary")
    if a.depth < 0:
        raise SystemExit(f"--depth: a weight of 0 or more, got {a.depth}")
    vae = VAEConfig(z_dim=a.z_dim, channels=tuple(a.channels), teacher_outputs=3)
    augment, view = Augment(a.flip, a.colour_jitter, a.shift, 64, a.random_conv), View(a.view, a.mask_top, a.temporal)
    use_all_cores()
    pool = a.pool or [t for t in TRAIN_TRACKS if t not in a.left_out]
    shared = set(pool) & set(a.left_out)
    if shared:
        raise SystemExit(f"--pool and --left-out share {', '.join(sorted(shared))}")
    if max(a.sizes) > len(pool):
        raise SystemExit(f"--sizes: at most {len(pool)} tracks are left to learn from")
    see_depth = {"depth": "instead", "depth-predicted": "beside"}.get(a.view, "")
    out_frames, out_labels, out_names = load(Path(a.data), "all", a.left_out, gap, see_depth=see_depth)
    sources = a.train_data or [a.data]
    orders = [pool] + ([pool[::-1]] if a.both_orders else [])
    rows = []
    for size in a.sizes:
        for order in orders:
            tracks = order[:size]
            if size == len(pool) and order is not orders[0]:
                continue  # all of them: the same set either way
            # once per set of tracks, whatever the models
            x, y, names = (np.concatenate(parts) for parts in zip(*(
                load(Path(f), "train", tracks, 1 if pairs else gap, taken=pairs, depth=bool(a.depth),
                     see_depth=see_depth)
                for f in sources)))
            track_index = np.searchsorted(np.array(sorted(tracks)), names)
            xv, yv, _ = (np.concatenate(parts) for parts in zip(*(load(Path(f), "val", tracks, gap, see_depth=see_depth)
                                                            for f in sources)))
            seen_out = out_frames
            if a.view == "depth-predicted":  # the frames' depth as a DepthNet learnt from these tracks sees it
                t0 = time.perf_counter()
                net = depth_net(x, a.steps, a.batch, a.seed)
                cells = F.avg_pool2d(ConvVAE.to_input(torch.from_numpy(xv[..., 3:])), 2)
                spread = float(cells.var(0).mean())  # the error of guessing each cell's mean
                (x, train_err), (xv, val_err), (seen_out, out_err) = (predicted_depth(net, f) for f in (x, xv, out_frames))
                print(f"depth net on {', '.join(tracks)}: {time.perf_counter() - t0:.0f} s, mean squared error of the "
                      f"log-depth {train_err.mean():.4f} on the frames learnt from, {val_err.mean():.4f} held-in "
                      f"(each cell's mean: {spread:.4f}), "
                      + ", ".join(f"{out_err[out_names == t].mean():.4f} on {t}" for t in a.left_out), flush=True)
            for model_kind in a.models:
                t0 = time.perf_counter()
                model = train(model_kind, x, y, a.steps, a.batch, a.seed, augment, view, a.weight_decay, vae, a.inverse,
                              track_index, a.adversary, a.depth, a.forward)
                row = {"model": model_kind, "tracks": tracks, "frames": len(x),
                       "val": steering_agreement(predict(model, xv, view), yv[:, 0])}
                pred = predict(model, seen_out, view)
                for t in a.left_out:
                    m = out_names == t
                    row[t] = steering_agreement(pred[m], out_labels[m, 0])
                rows.append(row)
                told = (f", the adversary tells the track in {model.adversary_accuracy:.0%} of the last 100 batches' frames"
                        if a.adversary else f", depth's squared error {model.depth_error:.3f} over the last 100 batches "
                        f"(the mean's: {model.depth_spread:.3f})"
                        if a.depth else "")
                print(f"{model_kind} on {', '.join(tracks)}: {time.perf_counter() - t0:.0f} s{told}", flush=True)

    shown = {k: " ".join(map(str, v)) if isinstance(v := getattr(a, k), list) else v for k in vars(a)}
    changes = [f"{k.replace('_', '-')} {shown[k]}" for k in ("train_data", "random_conv", "flip", "colour_jitter", "shift",
               "view", "mask_top", "temporal", "gap", "inverse", "forward", "adversary", "depth", "weight_decay", "channels", "z_dim")
               if getattr(a, k) != p.get_default(k) and (k != "gap" or a.temporal != "none")]
    print(f"\n**Steering read-out on tracks not learnt from** ({a.data}, {a.steps} steps of {a.batch} frames, seed "
          f"{a.seed}, {', '.join(changes) or 'frames as they are'}; r: "
          "correlation with the centre-line driver's steering, side: same side where it turns)\n")
    print("| model | tracks learnt from | frames | held-in validation r | "
          + " | ".join(f"{t} r, side" for t in a.left_out) + " | left-out mean r |")
    print("|---|---|---|---|" + "---|" * (len(a.left_out) + 1))
    for r in rows:
        mean = np.mean([r[t]["r"] for t in a.left_out])
        print(f"| {r['model']} | {len(r['tracks'])}: {', '.join(r['tracks'])} | {r['frames']} | {r['val']['r']:.2f} | "
              + " | ".join(f"{r[t]['r']:.2f}, {r[t]['side']:.2f}" for t in a.left_out) + f" | {mean:.2f} |")


if __name__ == "__main__":
    main()
