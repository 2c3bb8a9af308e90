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
        h = self.fc_decode(z).unsqueeze(-1).unsqueeze(-1)
        return self.decoder(h)

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
