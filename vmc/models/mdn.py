"""MDN-RNN of World Models: an LSTM over (z_t, a_t) with a mixture-density head predicting z_{t+1},
plus reward and done heads so that the model can serve as a dream environment."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

State = tuple[torch.Tensor, torch.Tensor]


@dataclass
class MDNRNNConfig:
    """Architecture of the MDN-RNN."""

    z_dim: int = 32
    """Latent size (must match the VAE)."""
    action_dim: int = 3
    """Action size (steer, acceleration, brake)."""
    hidden: int = 256
    """LSTM hidden units."""
    gaussians: int = 5
    """Mixture components per latent dimension."""


class MDNRNN(nn.Module):
    """One LSTM used both over whole sequences and one step at a time (same weights, same results)."""

    def __init__(self, config: Optional[MDNRNNConfig] = None) -> None:
        super().__init__()
        self.config = config = config or MDNRNNConfig()
        self.lstm = nn.LSTM(config.z_dim + config.action_dim, config.hidden, batch_first=True)
        self.mdn = nn.Linear(config.hidden, 3 * config.gaussians * config.z_dim)
        self.reward = nn.Linear(config.hidden, 1)
        self.done = nn.Linear(config.hidden, 1)

    @staticmethod
    def applied(a: torch.Tensor) -> torch.Tensor:
        """Actions (..., A) as the game applies them, which is what the LSTM reads: steering and acceleration as
        given, the brake (and any further switch: nitro, drift, fire) as 0 or 1, on above 0.5 as
        :class:`vmc.sim.env.SuperTuxKartEnv` sets it. A controller's brake of 0.45 and one of 0.55 then differ to
        the model as they differ to the kart (off and on), and 0.55 and 0.95 do not."""
        return torch.cat([a[..., :2], (a[..., 2:] > 0.5).to(a.dtype)], dim=-1)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        """Zero (h, c), each (1, B, hidden)."""
        h = torch.zeros(1, batch, self.config.hidden, device=device)
        return h, h.clone()

    def _heads(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        k, z = self.config.gaussians, self.config.z_dim
        p = self.mdn(out).view(*out.shape[:-1], 3, k, z)
        return {
            "log_pi": F.log_softmax(p[..., 0, :, :], dim=-2),  # (..., K, Z)
            "mu": p[..., 1, :, :],
            "log_sigma": p[..., 2, :, :].clamp(-7.0, 5.0),
            "reward": self.reward(out).squeeze(-1),
            "done_logit": self.done(out).squeeze(-1),
            "h": out,
        }

    def forward(self, z: torch.Tensor, a: torch.Tensor, state: Optional[State] = None) -> tuple[dict[str, torch.Tensor], State]:
        """z (B, T, Z), a (B, T, A) → heads over T: ``log_pi``/``mu``/``log_sigma`` (B, T, K, Z) for
        z_{t+1}, ``reward`` and ``done_logit`` (B, T) for step t, ``h`` (B, T, hidden); and the state."""
        out, state = self.lstm(torch.cat([z, self.applied(a)], dim=-1), state)
        return self._heads(out), state

    def step(self, z: torch.Tensor, a: torch.Tensor, state: Optional[State] = None) -> tuple[dict[str, torch.Tensor], State]:
        """One step: z (B, Z), a (B, A) → heads without the T axis, and the new state."""
        heads, state = self.forward(z.unsqueeze(1), a.unsqueeze(1), state)
        return {k: v.squeeze(1) for k, v in heads.items()}, state

    def cell(self) -> nn.LSTMCell:
        """An ``nn.LSTMCell`` with a copy of the LSTM's weights: the same step for one sequence at a time, a fraction
        of ``nn.LSTM``'s per-call cost (what a driving agent uses, :class:`vmc.models.controller.WorldModelAgent`).
        It takes [z, a] with ``a`` already as :meth:`applied` gives it."""
        cell = nn.LSTMCell(self.lstm.input_size, self.lstm.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(self.lstm, f"{name}_l0"))
        return cell.to(self.lstm.weight_ih_l0.device).eval()

    def step_state(self, z: torch.Tensor, a: torch.Tensor, state: Optional[State] = None) -> State:
        """One LSTM step without the heads: z (B, Z), a (B, A) → the new state. What a driving agent needs (it
        reads h, never the mixture), at a fraction of :meth:`step`'s cost."""
        return self.lstm(torch.cat([z, self.applied(a)], dim=-1).unsqueeze(1), state)[1]

    @staticmethod
    def mdn_nll(heads: dict[str, torch.Tensor], target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean negative log-likelihood per latent dimension of ``target`` (B, T, Z) under the mixture
        (log-sum-exp over components), over the steps of ``mask`` (B, T) if given."""
        t = target.unsqueeze(-2)  # (B, T, 1, Z)
        log_sigma = heads["log_sigma"]
        log_prob = -0.5 * ((t - heads["mu"]) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
        return _mean(-torch.logsumexp(heads["log_pi"] + log_prob, dim=-2).mean(-1), mask)

    def loss(self, heads: dict[str, torch.Tensor], z_next: torch.Tensor, reward: torch.Tensor,
             done: torch.Tensor, done_weight: float = 1.0, mask: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """MDN NLL of z_{t+1} (B, T, Z), squared error of reward (B, T) and BCE of done (B, T), whose done steps
        weigh ``done_weight`` times the others; each a mean over the steps of ``mask`` (B, T) bool if given (a
        window's padding left out), else over all."""
        nll = self.mdn_nll(heads, z_next, mask)
        r = _mean((heads["reward"] - reward) ** 2, mask)
        weight = None if done_weight == 1.0 else torch.tensor(done_weight, device=done.device)
        d = _mean(F.binary_cross_entropy_with_logits(heads["done_logit"], done.float(), pos_weight=weight,
                                                     reduction="none"), mask)
        return {"loss": nll + r + d, "nll": nll, "reward": r, "done": d}

    @staticmethod
    def sample(heads: dict[str, torch.Tensor], temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Sample z_{t+1} (..., Z) at ``temperature`` (see :meth:`sample_with`), drawing from ``generator``."""
        shape, dev = heads["mu"].shape[:-2] + heads["mu"].shape[-1:], heads["mu"].device
        u = torch.rand(shape, generator=generator, device=dev)
        eps = torch.randn(shape, generator=generator, device=dev, dtype=heads["mu"].dtype)
        return MDNRNN.sample_with(heads, temperature, u, eps)

    @staticmethod
    def sample_with(heads: dict[str, torch.Tensor], temperature: float, u: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z_{t+1} (..., Z) from given draws: per dimension a component from ``log_pi / tau`` by inverting its
        CDF at the uniform ``u`` (..., Z), then its Gaussian with sigma scaled by ``sqrt(tau)`` (as in World
        Models) at the standard normal ``eps`` (..., Z)."""
        probs = F.softmax(heads["log_pi"] / max(temperature, 1e-6), dim=-2)  # (..., K, Z)
        k = probs.shape[-2]
        idx = (probs.cumsum(-2) < u.unsqueeze(-2)).sum(-2, keepdim=True).clamp_(max=k - 1)  # (..., 1, Z)
        mu = heads["mu"].gather(-2, idx).squeeze(-2)
        sigma = heads["log_sigma"].gather(-2, idx).squeeze(-2).exp() * math.sqrt(max(temperature, 0.0))
        return mu + sigma * eps


def _mean(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``x`` (B, T) over the True steps of ``mask`` (B, T), or over all of them without one."""
    return x.mean() if mask is None else x[mask].mean()
