"""The Controller of World Models and the agent that chains Vision, Memory and Controller."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from vmc.models.mdn import MDNRNN
from vmc.models.runtime import ExportedGraph
from vmc.models.vae import ConvVAE, FrameEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stillness:
    """An optional controller input that says the picture has stopped moving, from the agent's own latents:
    s_t = decay s_{t-1} + (1 - decay) [||mu_t - mu_{t-1}|| < threshold], s_0 = 0. A kart blocked against a wall
    sees the same picture step after step; from z_t and h_t alone a controller cannot tell that apart from a
    kart at rest on a straight, and backing up, 4 labels in a thousand, is never learnt. The decay keeps s up
    while the kart backs up (the picture moves again) so that the manoeuvre can be carried through."""

    threshold: float
    """||mu_t - mu_{t-1}|| under which a step counts as still."""
    decay: float = 0.85
    """How much of s_{t-1} carries over (0.85: 10 still steps from 0 give 0.80, 12 moving steps after it 0.11)."""

    def step(self, s: torch.Tensor, z: torch.Tensor, z_prev: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """s (B, 1) before the step, z and z_prev (B, Z), first (B, 1) bool (no previous step: s is 0) → s (B, 1)."""
        still = (torch.linalg.vector_norm(z - z_prev, dim=-1, keepdim=True) < self.threshold).to(s.dtype)
        return torch.where(first, torch.zeros_like(s), self.decay * s + (1 - self.decay) * still)

    def sequence(self, mu: np.ndarray) -> np.ndarray:
        """s_t (T, 1) float32 along one episode's latents mu (T, Z), as :meth:`step` gives them one at a time."""
        still = np.linalg.norm(np.diff(mu, axis=0), axis=1) < self.threshold
        s = np.zeros((len(mu), 1), np.float32)
        keep, add = np.float32(self.decay), np.float32(1 - self.decay)
        for t in range(1, len(mu)):
            s[t] = keep * s[t - 1] + add * np.float32(still[t - 1])
        return s


class Controller(nn.Module):
    """World Models' controller, a_t = squash(W [z_t, h_t] + b) (``hidden`` 0: 867 parameters with z=32, h=256
    and 3 actions, the vector CMA-ES searches), or with ``hidden`` tanh units between:
    a_t = squash(W2 tanh(W1 [z_t, h_t] + b1) + b2). Squash: tanh for steering, sigmoid for acceleration and brake.
    With ``still``, its inputs are [z_t, h_t, s_t], s_t the :class:`Stillness` input.

    Its flat parameter vector (each layer's W row-major, then its b) says which of the two it is: the number of
    parameters fixes ``hidden`` for given input sizes (:func:`controller_hidden`)."""

    def __init__(self, z_dim: int = 32, h_dim: int = 256, action_dim: int = 3, hidden: int = 0,
                 still: bool = False) -> None:
        super().__init__()
        sizes = self.layer_sizes(z_dim + h_dim + int(still), hidden, action_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.hidden, self.still = hidden, still

    @staticmethod
    def layer_sizes(n_in: int, hidden: int = 0, action_dim: int = 3) -> list[int]:
        """Widths from input to output: [n_in, action_dim], or [n_in, hidden, action_dim]."""
        return [n_in, *([hidden] if hidden else []), action_dim]

    @staticmethod
    def size(n_in: int, hidden: int = 0, action_dim: int = 3) -> int:
        """Parameters of a controller on ``n_in`` inputs with ``hidden`` units."""
        sizes = Controller.layer_sizes(n_in, hidden, action_dim)
        return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, z: torch.Tensor, h: torch.Tensor, s: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z (B, Z), h (B, H) and, with ``still``, s (B, 1) → actions (B, 3): steer in [-1, 1], acceleration and
        brake in [0, 1]."""
        return self.apply_params(list(self.parameters()), torch.cat([z, h, *([s] if self.still else [])], dim=-1))

    @staticmethod
    def apply_params(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The controller with the given layer tensors [W1, b1, (W2, b2)] on x (B, Z + H) → actions (B, 3)."""
        return Controller.squash(Controller.raw_with(params, x))

    @staticmethod
    def raw_with(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Pre-squash outputs of the controller with layer tensors ``params`` [W1 (out, in), b1 (out,), ...] on
        x (B, Z + H) → (B, 3); or of P controllers at once, with batched layers [W1 (P, out, in), b1 (P, out), ...]
        on x (P, R, Z + H) → (P, R, 3)."""
        for i in range(0, len(params), 2):
            w, b = params[i], params[i + 1]
            x = nn.functional.linear(x, w, b) if w.dim() == 2 else torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            if i + 2 < len(params):
                x = torch.tanh(x)
        return x

    @staticmethod
    def batched_raw(flat: torch.Tensor, x: torch.Tensor, action_dim: int = 3) -> torch.Tensor:
        """Pre-squash outputs of P controllers at once: flat (P, n_params), x (P, R, Z + H) → (P, R, 3)."""
        p, n_in = flat.shape[0], x.shape[-1]
        sizes = Controller.layer_sizes(n_in, controller_hidden(n_in, flat.shape[1], action_dim), action_dim)
        layers: list[torch.Tensor] = []
        offset = 0
        for a, b in zip(sizes, sizes[1:]):
            layers += [flat[:, offset:offset + a * b].view(p, b, a), flat[:, offset + a * b:offset + (a + 1) * b]]
            offset += (a + 1) * b
        return Controller.raw_with(layers, x)

    @staticmethod
    def squash(raw: torch.Tensor) -> torch.Tensor:
        """(B, 3) pre-activations → actions: tanh for steering, sigmoid for acceleration and brake."""
        return torch.cat([torch.tanh(raw[..., :1]), torch.sigmoid(raw[..., 1:])], dim=-1)

    def set_flat(self, params: np.ndarray) -> None:
        """Load a flat parameter vector (``num_params``,): each layer's W row-major, then its b. In place, so that
        views of the parameters (a :class:`WorldModelAgent`'s) see the new values."""
        flat = torch.as_tensor(np.asarray(params), dtype=torch.float32).reshape(-1)
        if flat.numel() != self.num_params:
            raise ValueError(f"expected {self.num_params} controller parameters, got {flat.numel()}")
        with torch.no_grad():
            offset = 0
            for p in self.parameters():
                p.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()


def controller_hidden(n_in: int, n_params: int, action_dim: int = 3) -> int:
    """The hidden units of a controller with ``n_params`` parameters on ``n_in`` inputs (0: linear). Unambiguous
    for 9 inputs or more (a linear controller's count is then no hidden controller's)."""
    if n_params == Controller.size(n_in, 0, action_dim):
        return 0
    hidden, rest = divmod(n_params - action_dim, n_in + 1 + action_dim)
    if hidden < 1 or rest:
        raise ValueError(f"{n_params} parameters fit no controller on {n_in} inputs (linear: "
                         f"{Controller.size(n_in, 0, action_dim)}; with H hidden units: {n_in + 1 + action_dim} H + {action_dim})")
    return hidden


_FIRST, _NEXT = np.ones((1, 1), bool), np.zeros((1, 1), bool)  # AgentStep's ``first``


class AgentStep(nn.Module):
    """One step of a driving agent as one graph: the LSTM takes in the previous step's z and action, then the new
    frame is encoded and the controller acts on [z, h]. The LSTM step is deferred to the next frame because the
    action taken may differ from the controller's (noise, DAgger's expert, a perturbation spell)."""

    def __init__(self, encoder: nn.Module, cell: nn.LSTMCell, action_dim: int, still: Optional[Stillness] = None) -> None:
        super().__init__()
        self.encoder, self.cell, self.action_dim, self.still = encoder, cell, action_dim, still

    def forward(self, frames: torch.Tensor, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, first: torch.Tensor,
                s: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """frames (1, S, S, 3) uint8; x (1, Z + A) the previous step's z and action taken; h, c (1, H) the state
        before it; first (1, 1) bool: no previous step (h and c are kept); s (1, 1) the previous step's
        :class:`Stillness` input (unused without one); params the controller's layers (W1 (3 or hidden, Z + H
        [+ 1]), b1, ...) → z (1, Z), action (1, 3), h, c (1, H), the state the action was chosen from, and s (1, 1)."""
        a = self.action_dim
        h_next, c_next = self.cell(torch.cat([x[:, :-a], MDNRNN.applied(x[:, -a:])], dim=-1), (h, c))
        h, c = torch.where(first, h, h_next), torch.where(first, c, c_next)
        z = self.encoder(frames)
        inputs = [z, h]
        if self.still is not None:
            s = self.still.step(s, z, x[:, :z.shape[1]], first)
            inputs.append(s)
        action = Controller.apply_params(list(params), torch.cat(inputs, dim=-1))
        return z, action, h, c, s


class WorldModelAgent:
    """frame → z (VAE mean) → action from [z, h] → LSTM step → next h, one frame at a time. No I/O.

    Each step is one :class:`AgentStep` graph (an ``nn.LSTMCell``: a driver reads h, never the mixture), run by
    ONNX Runtime (:mod:`vmc.models.runtime`) or, with ``runtime="torch"``, by torch with the traced encoder (the
    same outputs to 1e-5). The VAE's and MDN-RNN's weights are copied in when the agent is built; the controller's
    are read at every step from its parameters, which change in place (:meth:`set_params`).
    :meth:`observe` and :meth:`advance` alternate. With ``still`` the controller also takes the
    :class:`Stillness` input (the controller must have been built with ``still=True``)."""

    RUNTIMES = ("onnxruntime", "torch")

    def __init__(self, vae: ConvVAE, mdn: MDNRNN, controller: Controller, runtime: str = "onnxruntime",
                 still: Optional[Stillness] = None) -> None:
        if controller.still != (still is not None):
            raise ValueError("the controller takes the stillness input exactly when the agent is given one")
        if runtime not in self.RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(self.RUNTIMES)}")
        if runtime == "onnxruntime" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
            log.warning("onnx or onnxruntime is not installed: the agent runs in torch, about 3x slower per step")
            runtime = "torch"
        self.vae, self.mdn, self.runtime, self.still = vae.eval(), mdn.eval(), runtime, still
        self._build(controller)
        self.reset()

    def _build(self, controller: Controller) -> None:
        """The step graph for ``controller``'s architecture (the graph takes its layers as inputs)."""
        self.controller = controller.eval()
        self.params = [p.detach().numpy() for p in controller.parameters()]  # views: set_flat shows through
        size, cfg = self.vae.config.image_size, self.mdn.config
        if self.runtime == "onnxruntime":
            graph = AgentStep(FrameEncoder(self.vae), self.mdn.cell(), cfg.action_dim, self.still)
            state = torch.zeros(1, cfg.hidden)
            example = (torch.zeros(1, size, size, 3, dtype=torch.uint8), torch.zeros(1, cfg.z_dim + cfg.action_dim),
                       state, state, torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1), *controller.parameters())
            self.step = ExportedGraph(graph, example, ["frames", "x", "h", "c", "first", "s",
                                                      *(f"param{i}" for i in range(len(self.params)))],
                                      ["z", "action", "h_next", "c_next", "s_next"])
        else:
            module = AgentStep(FrameEncoder.fast(self.vae), self.mdn.cell(), cfg.action_dim, self.still)
            self.step = lambda *x: [t.numpy() for t in module(*map(torch.from_numpy, x))]

    def set_params(self, params: np.ndarray) -> None:
        """Drive with the controller of flat parameters ``params`` (linear or with hidden units, told apart by
        their number): in place when the architecture is the same, else the step graph is built anew."""
        cfg = self.mdn.config
        hidden = controller_hidden(self.controller.layers[0].in_features, np.asarray(params).size)
        if hidden != self.controller.hidden:
            self._build(Controller(cfg.z_dim, cfg.hidden, hidden=hidden, still=self.controller.still))
        self.controller.set_flat(params)

    def reset(self) -> None:
        """Forget the episode (h and c back to zeros)."""
        cfg = self.mdn.config
        self.h = self.c = np.zeros((1, cfg.hidden), np.float32)
        self.s = np.zeros((1, 1), np.float32)
        self.x: Optional[np.ndarray] = np.zeros((1, cfg.z_dim + cfg.action_dim), np.float32)  # ignored at the first step
        self.first = _FIRST

    @torch.no_grad()
    def observe(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(64, 64, 3) uint8 frame → z (1, Z) (VAE mean), h (1, H) and the controller's action (3,) float32 for
        them; the LSTM first takes in the previous step (:meth:`advance`)."""
        if self.x is None:
            raise RuntimeError("observe called twice without advance: the LSTM would take in the same step twice")
        z, action, self.h, self.c, self.s = self.step(np.ascontiguousarray(obs)[None], self.x, self.h, self.c,
                                                      self.first, self.s, *self.params)
        self.first, self.x = _NEXT, None
        return z, self.h, action[0]

    def inputs(self, z: np.ndarray, h: np.ndarray) -> np.ndarray:
        """The controller's inputs (Z + H [+ 1],) at the last :meth:`observe`, whose z and h (1, Z), (1, H) are given:
        [z, h], and s with the stillness input (what DAgger records with the driver's label)."""
        return np.concatenate([z[0], h[0], *([self.s[0]] if self.still is not None else [])])

    def advance(self, z: np.ndarray, action: np.ndarray) -> None:
        """The action actually taken for z (which may differ from the controller's): the LSTM takes it in at the next
        :meth:`observe`."""
        self.x = np.concatenate([z, np.asarray(action, np.float32).reshape(1, -1)], axis=1)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """(64, 64, 3) uint8 frame → (3,) float32 action."""
        z, _, action = self.observe(obs)
        self.advance(z, action)
        return action
