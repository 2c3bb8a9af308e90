"""The Controller of World Models and the agent that chains Vision, Memory and Controller."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from vmc.models.mdn import MDNRNN, State
from vmc.models.vae import ConvVAE


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

    def get_flat(self) -> np.ndarray:
        """The parameters as a flat float64 vector (CMA-ES's format)."""
        return torch.nn.utils.parameters_to_vector(self.parameters()).detach().double().numpy()


class WorldModelAgent:
    """frame → z (VAE mean) → action from [z, h] → MDN-RNN step → next h. No I/O."""

    def __init__(self, vae: ConvVAE, mdn: MDNRNN, controller: LinearController) -> None:
        self.vae, self.mdn, self.controller = vae.eval(), mdn.eval(), controller.eval()
        self.state: Optional[State] = None

    def reset(self) -> None:
        """Forget the episode (h back to zeros)."""
        self.state = self.mdn.initial_state(1)

    @torch.no_grad()
    def observe(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(64, 64, 3) uint8 frame → the controller's inputs z (1, Z) (VAE mean) and h (1, H)."""
        if self.state is None:
            self.reset()
        z, _ = self.vae.encode(ConvVAE.to_input(torch.from_numpy(np.ascontiguousarray(obs))[None]))
        return z, self.state[0][0]

    @torch.no_grad()
    def advance(self, z: torch.Tensor, action: np.ndarray | torch.Tensor) -> None:
        """Step the MDN-RNN with the action actually taken (which may differ from the controller's)."""
        a = torch.as_tensor(np.asarray(action, np.float32)).view(1, -1)
        self.state = self.mdn.step_state(z, a, self.state)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """(64, 64, 3) uint8 frame → (3,) float32 action; advances the MDN-RNN state."""
        z, h = self.observe(obs)
        action = self.controller(z, h)
        self.state = self.mdn.step_state(z, action, self.state)
        return action[0].numpy().astype(np.float32)
