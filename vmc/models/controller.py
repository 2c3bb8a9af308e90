"""The Controller of World Models and the agent that chains Vision, Memory and Controller."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vmc.models.mdn import MDNRNN
from vmc.models.vae import ConvVAE, FrameEncoder


class LinearController(nn.Module):
    """a_t = squash(W [z_t, h_t] + b): tanh for steering, sigmoid for acceleration and brake.

    With z=32, h=256 and 3 actions that is 867 parameters, the vector CMA-ES searches.
    """

    def __init__(self, z_dim: int = 32, h_dim: int = 256, action_dim: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(z_dim + h_dim, action_dim)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """z (B, Z), h (B, H) → actions (B, 3): steer in [-1, 1], acceleration and brake in [0, 1]."""
        raw = self.linear(torch.cat([z, h], dim=-1))
        return torch.cat([torch.tanh(raw[..., :1]), torch.sigmoid(raw[..., 1:])], dim=-1)

    def set_flat(self, params: np.ndarray) -> None:
        """Load a flat parameter vector (``num_params``,): W row-major, then b."""
        torch.nn.utils.vector_to_parameters(torch.as_tensor(np.asarray(params), dtype=torch.float32), self.parameters())


class WorldModelAgent:
    """frame → z (VAE mean) → action from [z, h] → LSTM step → next h, one frame at a time. No I/O.

    The encoder runs as a traced, frozen graph (:meth:`vmc.models.vae.FrameEncoder.fast`) and the MDN-RNN as an
    ``nn.LSTMCell`` without its heads (a driver reads h, never the mixture), both with the models' weights as they
    were when the agent was built; only the controller's parameters change afterwards (``controller.set_flat``)."""

    def __init__(self, vae: ConvVAE, mdn: MDNRNN, controller: LinearController) -> None:
        self.vae, self.mdn, self.controller = vae.eval(), mdn.eval(), controller.eval()
        self.encode = FrameEncoder.fast(self.vae)
        self.cell = mdn.cell()
        self.h = self.c = torch.zeros(1, mdn.config.hidden)

    def reset(self) -> None:
        """Forget the episode (h and c back to zeros)."""
        self.h = self.c = torch.zeros(1, self.mdn.config.hidden)

    @torch.no_grad()
    def observe(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(64, 64, 3) uint8 frame → the controller's inputs z (1, Z) (VAE mean) and h (1, H)."""
        return self.encode(torch.from_numpy(np.ascontiguousarray(obs))[None]), self.h

    @torch.no_grad()
    def advance(self, z: torch.Tensor, action: np.ndarray | torch.Tensor) -> None:
        """Step the LSTM with the action actually taken (which may differ from the controller's)."""
        a = torch.as_tensor(np.asarray(action, np.float32)).view(1, -1)
        self.h, self.c = self.cell(torch.cat([z, a], dim=-1), (self.h, self.c))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """(64, 64, 3) uint8 frame → (3,) float32 action; advances the LSTM state."""
        z, h = self.observe(obs)
        action = self.controller(z, h)
        self.advance(z, action)
        return action[0].numpy().astype(np.float32)
