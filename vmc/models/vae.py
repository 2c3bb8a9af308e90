"""ConvVAE of World Models (Ha & Schmidhuber 2018): a 64x64 RGB frame to a latent z and back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class VAEConfig:
    """Architecture and loss of the ConvVAE."""

    z_dim: int = 32
    """Size of the latent z."""
    channels: tuple[int, int, int, int] = (32, 64, 128, 256)
    """Channels of the four 4x4 stride-2 encoder convolutions (the decoder mirrors them)."""
    kl_tolerance: float = 0.5
    """Free bits per latent dimension: the KL term is ``max(KL, kl_tolerance * z_dim)`` as in the original."""
    image_size: int = 64
    """Input height and width (the architecture is built for 64)."""
    teacher_outputs: int = 0
    """Outputs of a linear read-out of the mean latent, trained to predict the teacher's action (``vmc.train_vae
    --teacher-weight``): 0, World Models' VAE; 3, steering, acceleration and brake; 7, those and the angles to
    the centre line 5, 10, 20 and 40 m ahead (``road_angles`` of the collection)."""

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.image_size != 64:
            raise ValueError(f"the World Models ConvVAE is built for 64x64 frames, got {self.image_size}")
        if len(self.channels) != 4:
            raise ValueError(f"channels must have 4 entries, got {self.channels}")


class ConvVAE(nn.Module):
    """Encoder: four 4x4 stride-2 convolutions (64→31→14→6→2), then mean and log-variance of z.
    Decoder: a dense layer to a 1x1 map, four transposed convolutions (kernels 5, 5, 6, 6; 1→5→13→30→64)
    and a sigmoid."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VAEConfig()
        c1, c2, c3, c4 = config.channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c2, c3, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c3, c4, 4, stride=2), nn.ReLU(),
            nn.Flatten(),
        )
        flat = c4 * 2 * 2
        self.fc_mu = nn.Linear(flat, config.z_dim)
        self.fc_logvar = nn.Linear(flat, config.z_dim)
        self.fc_decode = nn.Linear(config.z_dim, 4 * c4)
        self.teacher = nn.Linear(config.z_dim, config.teacher_outputs) if config.teacher_outputs else None
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * c4, c3, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c3, c2, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c1, 3, 6, stride=2), nn.Sigmoid(),
        )

    @staticmethod
    def to_input(frames: torch.Tensor) -> torch.Tensor:
        """(B, 64, 64, 3) uint8 frames → (B, 3, 64, 64) float in [0, 1]."""
        return frames.permute(0, 3, 1, 2).float().div_(255.0)

    @staticmethod
    def to_frames(x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [0, 1] → (B, 64, 64, 3) uint8 frames (inverse of :meth:`to_input`)."""
        return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 64, 64) in [0, 1] → mu, logvar, each (B, z_dim)."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) → (B, 3, 64, 64) in [0, 1]."""
        # The first transposed convolution sees a 1x1 map, so it is exactly a matrix product; as one it runs several
        # times faster on CPUs than the convolution kernel does (same weights, same outputs to float rounding).
        first = self.decoder[0]
        h = self.fc_decode(z) @ first.weight.flatten(1)
        h = h.view(-1, first.out_channels, *first.kernel_size) + first.bias.view(1, -1, 1, 1)
        return self.decoder[1:](h.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, 64, 64) → reconstruction (B, 3, 64, 64), mu (B, z), logvar (B, z); z is sampled."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    def loss(self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> dict[str, torch.Tensor]:
        """Squared error summed over pixels plus KL with free bits, both averaged over the batch."""
        rec = F.mse_loss(recon, x, reduction="none").sum(dim=(1, 2, 3)).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        kl_floor = torch.clamp(kl, min=self.config.kl_tolerance * self.config.z_dim)
        return {"loss": rec + kl_floor, "recon": rec, "kl": kl}

    def teacher_loss(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error of the linear read-out of ``mu`` (B, z) against the teacher's actions ``target``
        (B, teacher_outputs), summed over outputs and averaged over the rows without NaN."""
        known = ~torch.isnan(target).any(dim=1)
        if not known.any():
            return mu.new_zeros(())
        return (self.teacher(mu[known]) - target[known]).pow(2).sum(dim=1).mean()


class FrameEncoder(nn.Module):
    """The VAE's encoder as a driving agent uses it: uint8 frames (B, 64, 64, 3) → mu (B, Z), no sampling.

    :meth:`fast` builds a traced, frozen, channels-last graph of it for one-frame inference on a CPU (oneDNN's
    fused convolutions; one frame in 0.43 ms against 1.0 ms for the plain eager modules on this project's 2-core
    machine, same outputs to 1e-6)."""

    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.encoder, self.fc_mu = vae.encoder, vae.fc_mu

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 64, 64, 3) uint8 → (B, Z)."""
        x = frames.permute(0, 3, 1, 2).float().div(255.0).contiguous(memory_format=torch.channels_last)
        return self.fc_mu(self.encoder(x))

    @classmethod
    @torch.no_grad()
    def fast(cls, vae: ConvVAE) -> nn.Module:
        """The traced, frozen graph (weights copied in: later changes to ``vae`` are not seen); where TorchScript is
        not available (it is deprecated in favour of ``torch.compile``, which costs seconds of compilation per
        process and a C++ compiler), the channels-last eager module (about 1.4x slower, still 1.6x the plain one)."""
        import copy
        import warnings

        module = cls(copy.deepcopy(vae)).eval().to(memory_format=torch.channels_last)
        example = torch.zeros(1, vae.config.image_size, vae.config.image_size, 3, dtype=torch.uint8)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.optimize_for_inference(torch.jit.trace(module, example))
        except (RuntimeError, AttributeError):
            return module

