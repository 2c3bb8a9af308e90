"""The Controller of World Models and the agent that chains Vision, Memory and Controller."""

from __future__ import annotations

import importlib.util
import logging
from typing import Optional

import numpy as np
import torch
from torch import nn

from vmc.models.mdn import MDNRNN
from vmc.models.runtime import ExportedGraph
from vmc.models.vae import ConvVAE, FrameEncoder

log = logging.getLogger(__name__)


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
        return self.squash(self.linear(torch.cat([z, h], dim=-1)))

    @staticmethod
    def squash(raw: torch.Tensor) -> torch.Tensor:
        """(B, 3) pre-activations → actions: tanh for steering, sigmoid for acceleration and brake."""
        return torch.cat([torch.tanh(raw[..., :1]), torch.sigmoid(raw[..., 1:])], dim=-1)

    def set_flat(self, params: np.ndarray) -> None:
        """Load a flat parameter vector (``num_params``,): W row-major, then b. In place, so that views of the
        parameters (a :class:`WorldModelAgent`'s) see the new values."""
        flat = torch.as_tensor(np.asarray(params), dtype=torch.float32).reshape(-1)
        if flat.numel() != self.num_params:
            raise ValueError(f"expected {self.num_params} controller parameters, got {flat.numel()}")
        with torch.no_grad():
            offset = 0
            for p in self.parameters():
                p.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()


_FIRST, _NEXT = np.ones((1, 1), bool), np.zeros((1, 1), bool)  # AgentStep's ``first``


class AgentStep(nn.Module):
    """One step of a driving agent as one graph: the LSTM takes in the previous step's z and action, then the new
    frame is encoded and the controller acts on [z, h]. The LSTM step is deferred to the next frame because the
    action taken may differ from the controller's (noise, DAgger's expert, a perturbation spell)."""

    def __init__(self, encoder: nn.Module, cell: nn.LSTMCell) -> None:
        super().__init__()
        self.encoder, self.cell = encoder, cell

    def forward(self, frames: torch.Tensor, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, first: torch.Tensor,
                weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """frames (1, S, S, 3) uint8; x (1, Z + A) the previous step's z and action taken; h, c (1, H) the state
        before it; first (1, 1) bool: no previous step (h and c are kept); weight (3, Z + H) and bias (3,) the
        controller's → z (1, Z), action (1, 3), and h, c (1, H), the state the action was chosen from."""
        h_next, c_next = self.cell(x, (h, c))
        h, c = torch.where(first, h, h_next), torch.where(first, c, c_next)
        z = self.encoder(frames)
        action = LinearController.squash(nn.functional.linear(torch.cat([z, h], dim=-1), weight, bias))
        return z, action, h, c


class WorldModelAgent:
    """frame → z (VAE mean) → action from [z, h] → LSTM step → next h, one frame at a time. No I/O.

    Each step is one :class:`AgentStep` graph (an ``nn.LSTMCell``: a driver reads h, never the mixture), run by
    ONNX Runtime (:mod:`vmc.models.runtime`) or, with ``runtime="torch"``, by torch with the traced encoder (the
    same outputs to 1e-5). The VAE's and MDN-RNN's weights are copied in when the agent is built; the controller's
    are read at every step from its parameters, which change in place (``controller.set_flat``).
    :meth:`observe` and :meth:`advance` alternate."""

    RUNTIMES = ("onnxruntime", "torch")

    def __init__(self, vae: ConvVAE, mdn: MDNRNN, controller: LinearController, runtime: str = "onnxruntime") -> None:
        if runtime not in self.RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(self.RUNTIMES)}")
        if runtime == "onnxruntime" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
            log.warning("onnx or onnxruntime is not installed: the agent runs in torch, about 3x slower per step")
            runtime = "torch"
        self.vae, self.mdn, self.controller = vae.eval(), mdn.eval(), controller.eval()
        self.weight, self.bias = (p.detach().numpy() for p in (controller.linear.weight, controller.linear.bias))
        size, cfg = vae.config.image_size, mdn.config
        if runtime == "onnxruntime":
            graph = AgentStep(FrameEncoder(self.vae), mdn.cell())
            state = torch.zeros(1, cfg.hidden)
            example = (torch.zeros(1, size, size, 3, dtype=torch.uint8), torch.zeros(1, cfg.z_dim + cfg.action_dim),
                       state, state, torch.ones(1, 1, dtype=torch.bool), controller.linear.weight, controller.linear.bias)
            self.step = ExportedGraph(graph, example, ["frames", "x", "h", "c", "first", "weight", "bias"],
                                      ["z", "action", "h_next", "c_next"])
        else:
            module = AgentStep(FrameEncoder.fast(self.vae), mdn.cell())
            self.step = lambda *x: [t.numpy() for t in module(*map(torch.from_numpy, x))]
        self.reset()

    def reset(self) -> None:
        """Forget the episode (h and c back to zeros)."""
        cfg = self.mdn.config
        self.h = self.c = np.zeros((1, cfg.hidden), np.float32)
        self.x: Optional[np.ndarray] = np.zeros((1, cfg.z_dim + cfg.action_dim), np.float32)  # ignored at the first step
        self.first = _FIRST

    @torch.no_grad()
    def observe(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(64, 64, 3) uint8 frame → z (1, Z) (VAE mean), h (1, H) and the controller's action (3,) float32 for
        them; the LSTM first takes in the previous step (:meth:`advance`)."""
        if self.x is None:
            raise RuntimeError("observe called twice without advance: the LSTM would take in the same step twice")
        z, action, self.h, self.c = self.step(np.ascontiguousarray(obs)[None], self.x, self.h, self.c, self.first,
                                              self.weight, self.bias)
        self.first, self.x = _NEXT, None
        return z, self.h, action[0]

    def advance(self, z: np.ndarray, action: np.ndarray) -> None:
        """The action actually taken for z (which may differ from the controller's): the LSTM takes it in at the next
        :meth:`observe`."""
        self.x = np.concatenate([z, np.asarray(action, np.float32).reshape(1, -1)], axis=1)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """(64, 64, 3) uint8 frame → (3,) float32 action."""
        z, _, action = self.observe(obs)
        self.advance(z, action)
        return action
