"""The World Models networks: pure ``nn.Module``s, no I/O."""

from vmc.models.mdn import MDNRNN, MDNRNNConfig
from vmc.models.vae import ConvVAE, VAEConfig

__all__ = ["ConvVAE", "VAEConfig", "MDNRNN", "MDNRNNConfig"]
