"""The dream: the MDN-RNN as an environment of its own, no game and no renderer.

A dream rollout starts from a latent state of a recorded real episode (the start of the race, or any
recorded step with the LSTM state reached there), feeds the controller's action to the MDN-RNN, samples
z_{t+1} from its mixture at temperature tau and takes the reward and done heads as the score. The whole
CMA-ES population and all its rollouts step together as one batch of tensor operations: population P
x rollouts R rows, every candidate seeing the same R starts and the same random draws (common random
numbers, as the real-game evolve gives every candidate the same seeds).

Randomness is drawn up front (:func:`dream_noise`), so a batched rollout can be checked against the same
rollouts stepped one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vmc import cli
from vmc.cli import Config
from vmc.errors import CheckpointError
from vmc.latents import read_latents
from vmc.models.controller import Controller
from vmc.models.mdn import MDNRNN


@dataclass
class DreamStarts:
    """Recorded latent states to start dreams from: z (S, Z), LSTM h and c (S, H) reached there, the step of its
    episode each is (S,) and the rewards recorded before it, summed (S,)."""

    z: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor
    steps: torch.Tensor
    reward: torch.Tensor

    @property
    def at_start(self) -> torch.Tensor:
        """(S,) bool: the first step of an episode (the race start)."""
        return self.steps == 0

    @classmethod
    def from_latents(cls, path: Path, mdn: MDNRNN, split: str = "train", every: int = 10) -> DreamStarts:
        """Starts from a latent file (``vmc.train_vae``): every episode's first step, and every ``every``-th step
        after it, with the LSTM state from running the MDN-RNN over the recorded (z, action) prefix."""
        zs, hs, cs, steps, rewards = [], [], [], [], []
        with torch.no_grad():
            for ep in read_latents(path, split, 1, ("mu", "actions", "rewards")):
                mu, actions = torch.from_numpy(ep["mu"]), torch.from_numpy(ep["actions"])
                picks = list(range(0, len(actions), every))
                state = mdn.initial_state(1)
                h_t, c_t = [state[0][0, 0]], [state[1][0, 0]]
                for t in range(max(picks)):  # the state *before* step t, for every picked t
                    state = mdn.step_state(mu[t:t + 1], actions[t:t + 1], state)
                    h_t.append(state[0][0, 0])
                    c_t.append(state[1][0, 0])
                zs.append(mu[picks])
                hs.append(torch.stack([h_t[t] for t in picks]))
                cs.append(torch.stack([c_t[t] for t in picks]))
                steps.append(torch.tensor(picks))
                before = np.concatenate([[0.0], np.cumsum(ep["rewards"], dtype=np.float64)])
                rewards.append(torch.tensor(before[picks], dtype=torch.float32))
        if not zs:
            raise CheckpointError(f"{path}: no {split} episode to start dreams from")
        return cls(torch.cat(zs), torch.cat(hs), torch.cat(cs), torch.cat(steps), torch.cat(rewards))

    def __len__(self) -> int:
        return len(self.z)

    def pick(self, n: int, generator: torch.Generator, race_start: float = 0.5) -> torch.Tensor:
        """Indices (n,): a ``race_start`` share from episodes' first steps, the rest from anywhere."""
        first = torch.nonzero(self.at_start).squeeze(1)
        anywhere = torch.randint(len(self), (n,), generator=generator)
        from_start = first[torch.randint(len(first), (n,), generator=generator)]
        use_start = torch.rand(n, generator=generator) < race_start
        return torch.where(use_start, from_start, anywhere)


def dream_noise(seed: int, rollouts: int, steps: int, z_dim: int, race_start: float, starts: DreamStarts,
                action_dims: int = 2) -> dict[str, torch.Tensor]:
    """Every random draw of ``rollouts`` dream rollouts of ``steps`` steps, from one seed: ``start`` (R,)
    indices into ``starts``, ``u`` (T, R, Z) uniforms picking mixture components, ``eps`` (T, R, Z) standard
    normals for the Gaussians, ``action`` (T, R, 2) standard normals for the steering/throttle noise."""
    g = torch.Generator().manual_seed(int(seed))
    return {"start": starts.pick(rollouts, g, race_start),
            "u": torch.rand(steps, rollouts, z_dim, generator=g),
            "eps": torch.randn(steps, rollouts, z_dim, generator=g),
            "action": torch.randn(steps, rollouts, action_dims, generator=g)}


def batched_actions(params: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """P controllers at once (:class:`vmc.models.controller.Controller`, linear or with hidden units): params
    (P, n_params), z (P, R, Z), h (P, R, H) → actions (P, R, 3)."""
    return Controller.squash(Controller.batched_raw(params, torch.cat([z, h], -1)))


@dataclass
class DreamResult:
    """Scores of P candidates x R rollouts."""

    scores: torch.Tensor
    """(P, R) summed predicted rewards."""
    steps: torch.Tensor
    """(P, R) steps before the done head ended the rollout (or ``max_steps``)."""
    done: torch.Tensor
    """(P, R) whether the done head or the stuck rule ended the rollout."""
    stuck: torch.Tensor
    """(P, R) whether the stuck rule ended the rollout."""
    lap: torch.Tensor
    """(P, R) whether the rollout ended on a lap (its predicted progress, with the start's, reached a lap)."""


class DreamEnv:
    """Batched dream rollouts of linear controllers in a trained MDN-RNN. No I/O.

    Besides the done head, the real env's ``stuck`` rule can end a rollout (``stuck_steps`` > 0): the predicted
    progress (reward plus the step cost) must add up to ``min_progress`` within every ``stuck_steps`` steps. A
    dream that only ends where the done head fires lets a controller stand still or crawl along a wall for free,
    which the real game ends after 60 steps. Like a real race, a rollout also ends once its predicted progress
    adds up to a lap (``lap_reward``), counting the progress recorded before a start in the middle of a race: a
    dream cannot pay more than the game does."""

    def __init__(self, mdn: MDNRNN, starts: DreamStarts, temperature: float = 1.15, max_steps: int = 500,
                 action_noise: float = 0.1, done_threshold: float = 0.5, race_start: float = 0.5,
                 device: torch.device | str = "cpu", stuck_steps: int = 0, min_progress: float = 2.0,
                 step_cost: float = 0.1, lap_reward: float = 1000.0) -> None:
        self.device = torch.device(device)
        self.mdn, self.starts = mdn.eval().to(self.device), starts
        self.temperature, self.max_steps, self.action_noise = temperature, max_steps, action_noise
        self.done_threshold, self.race_start = done_threshold, race_start
        self.stuck_steps, self.min_progress, self.step_cost = stuck_steps, min_progress, step_cost
        self.lap_reward = lap_reward

    def noise(self, seed: int, rollouts: int, steps: Optional[int] = None,
              race_start: Optional[float] = None) -> dict[str, torch.Tensor]:
        """The draws of :meth:`run` for ``rollouts`` rollouts of ``steps`` steps (default ``max_steps``) from
        ``seed`` (see :func:`dream_noise`); ``race_start`` overrides the env's share of race starts (1: a dream
        of whole races, as a real evaluation drives)."""
        return dream_noise(seed, rollouts, steps or self.max_steps, self.mdn.config.z_dim,
                           self.race_start if race_start is None else race_start, self.starts)

    @torch.no_grad()
    def run(self, params: np.ndarray | torch.Tensor, noise: dict[str, torch.Tensor],
            action_noise: Optional[float] = None) -> DreamResult:
        """Dream every candidate of ``params`` (P, n_params) on every rollout of ``noise`` (R rollouts of T steps),
        the action noise's std ``action_noise`` (None: the env's).

        A rollout's score is the sum of the reward head over its steps until the done head's probability
        passes ``done_threshold`` or the stuck rule ends it (that step's reward counts, as a real ``terminated``
        step's does)."""
        dev = self.device
        sd = self.action_noise if action_noise is None else action_noise
        params = torch.as_tensor(np.asarray(params), dtype=torch.float32).to(dev)
        p, r = params.shape[0], noise["start"].shape[0]
        idx = noise["start"]
        z = self.starts.z[idx].to(dev).expand(p, r, -1).reshape(p * r, -1)
        state = (self.starts.h[idx].to(dev).expand(p, r, -1).reshape(1, p * r, -1).contiguous(),
                 self.starts.c[idx].to(dev).expand(p, r, -1).reshape(1, p * r, -1).contiguous())
        u, eps, act = (noise[k].to(dev) for k in ("u", "eps", "action"))  # drawn on the CPU: the same on any device
        low, high = torch.tensor([-1.0, 0.0, 0.0], device=dev), torch.tensor([1.0, 1.0, 1.0], device=dev)
        alive = torch.ones(p * r, dtype=torch.bool, device=dev)
        scores = torch.zeros(p * r, device=dev)
        steps = torch.zeros(p * r, dtype=torch.long, device=dev)
        done = torch.zeros(p * r, dtype=torch.bool, device=dev)
        stuck = torch.zeros(p * r, dtype=torch.bool, device=dev)
        lap = torch.zeros(p * r, dtype=torch.bool, device=dev)
        gained = torch.zeros(p * r, device=dev)  # predicted progress since the last time it reached min_progress
        before = (self.starts.reward[idx] + self.step_cost * self.starts.steps[idx]).to(dev).expand(p, r).reshape(-1)
        since = torch.zeros(p * r, dtype=torch.long, device=dev)
        for t in range(noise["u"].shape[0]):
            a = batched_actions(params, z.view(p, r, -1), state[0][0].view(p, r, -1)).reshape(p * r, -1)
            if sd > 0:
                a[:, :2] += sd * act[t].repeat(p, 1)
                a = torch.maximum(torch.minimum(a, high), low)
            heads, state = self.mdn.step(z, a, state)
            scores += torch.where(alive, heads["reward"], torch.zeros_like(scores))
            steps += alive.long()
            ends = alive & (torch.sigmoid(heads["done_logit"]) > self.done_threshold)
            if self.stuck_steps:
                gained += heads["reward"] + self.step_cost
                moved = gained >= self.min_progress
                gained = torch.where(moved, torch.zeros_like(gained), gained)
                since = torch.where(moved, torch.zeros_like(since), since + 1)
                stalled = alive & ~ends & (since >= self.stuck_steps)
                stuck |= stalled
                ends |= stalled
            if self.lap_reward:
                lapped = alive & ~ends & (before + scores + self.step_cost * steps >= self.lap_reward)
                lap |= lapped
                ends |= lapped
            done |= ends
            alive &= ~ends
            if not alive.any():
                break
            z = MDNRNN.sample_with(heads, self.temperature, u[t].repeat(p, 1), eps[t].repeat(p, 1))
        return DreamResult(*(x.cpu().view(p, r) for x in (scores, steps, done, stuck, lap)))


def load_dream(mdn: MDNRNN, latents: Path, temperature: float, max_steps: int, action_noise: float,
               split: str = "train", every: int = 10, race_start: float = 0.5, device: str = "cpu",
               stuck_steps: int = 0, min_progress: float = 2.0, done_head: bool = True) -> DreamEnv:
    """A dream env over an MDN-RNN, started from a latent file's states; ``device`` as
    :func:`vmc.training.pick_device` takes it (``auto``: CUDA when present); without ``done_head`` the done head
    ends no rollout (the stuck rule and the lap still do)."""
    from vmc.training import pick_device

    return DreamEnv(mdn, DreamStarts.from_latents(Path(latents), mdn, split, every), temperature, max_steps, action_noise,
                    done_threshold=0.5 if done_head else math.inf, race_start=race_start, device=pick_device(device),
                    stuck_steps=stuck_steps, min_progress=min_progress)


@torch.no_grad()
def dream_rollout(mdn: MDNRNN, params: np.ndarray, z0: torch.Tensor, steps: int, temperature: float,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """One dream from latent ``z0`` (Z,) with a zero LSTM state (a race start), no action noise: ``z`` (T+1, Z)
    latents (decode them to see the dream), ``reward`` (T,) and ``done`` (T,) probabilities of the heads."""
    g = torch.Generator().manual_seed(seed)
    p = torch.as_tensor(np.asarray(params), dtype=torch.float32)[None]
    z, state = z0.view(1, -1), mdn.initial_state(1)
    zs, rewards, dones = [z[0]], [], []
    for _ in range(steps):
        a = batched_actions(p, z[None], state[0][0][None])[0]
        heads, state = mdn.step(z, a, state)
        rewards.append(heads["reward"][0])
        dones.append(torch.sigmoid(heads["done_logit"][0]))
        z = MDNRNN.sample(heads, temperature, generator=g)
        zs.append(z[0])
    return {"z": torch.stack(zs), "reward": torch.stack(rewards), "done": torch.stack(dones)}


def dream_vs_real_video(controller: Path, out: Path, temperature: float = 1.15, steps: int = 0, seed: int = 0,
                        renderer: str = "llvmpipe") -> dict:
    """The controller's real race (left) beside its dream from the same first frame (right), both 64x64 blown
    up 4x, with each side's running score. Returns both scores; writes ``out`` (mp4)."""
    from vmc.checkpoints import load_dream_controller
    from vmc.models.vae import ConvVAE
    from vmc.play import drive_and_film
    from vmc.video import label, write_video

    ck, models = load_dream_controller(Path(controller))
    drive, film = drive_and_film(Path(controller), ck["track"], renderer, steps or ck["max_steps"], None, 64, 64)
    real = film["frames"]
    vae, mdn = models.vae(), models.mdn()
    with torch.no_grad():
        z0 = vae.encode(ConvVAE.to_input(torch.from_numpy(np.ascontiguousarray(real[0]))[None]))[0][0]
        d = dream_rollout(mdn, ck["params"], z0, len(real) - 1, temperature, seed)
        dream = ConvVAE.to_frames(vae.decode(d["z"])).numpy()
    dream_score = torch.cat([torch.zeros(1), d["reward"].cumsum(0)]).numpy()
    frames = []
    for t in range(len(real)):
        left = np.repeat(np.repeat(real[t], 4, 0), 4, 1)
        right = np.repeat(np.repeat(dream[t], 4, 0), 4, 1)
        score = film["infos"][t]["score"] if t else 0.0
        frames.append(np.concatenate([label(left, f"real  {score:6.1f}"),
                                      label(right, f"dream {dream_score[t]:6.1f}  tau {temperature:.2f}")], axis=1))
    write_video(out, frames, fps=10)
    return {"real_score": float(drive["score"]), "dream_score": float(dream_score[-1]), "steps": len(real) - 1,
            "video": str(out)}


@dataclass
class DreamVideoConfig(Config):
    """A controller's real race beside its dream, as a video."""

    controller: str = "runs/lighthouse-small/controller/best.pt"
    """Controller checkpoint."""
    out: str = ""
    """Video file (default: ``dream_vs_real.mp4`` in the controller's run folder)."""
    temperature: float = 1.15
    """Sampling temperature of the dream."""
    steps: int = 0
    """Race steps (0: the controller's ``max_steps``)."""
    seed: int = 0
    """Seed of the dream's sampling."""

    def validate(self) -> None:
        cli.check_non_negative(steps=self.steps, temperature=self.temperature)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m vmc.dream``: the dream-vs-real video of a controller."""
    cli.setup_logging()
    cfg = cli.parse(DreamVideoConfig, argv, "python -m vmc.dream")

    def body() -> None:
        out = Path(cfg.out) if cfg.out else Path(cfg.controller).parent.parent / "dream_vs_real.mp4"
        r = dream_vs_real_video(Path(cfg.controller), out, cfg.temperature, cfg.steps, cfg.seed)
        print(f"wrote {r['video']}: real score {r['real_score']:.1f}, dream score {r['dream_score']:.1f} over {r['steps']} steps")

    return cli.run("vmc.dream", body)


if __name__ == "__main__":
    raise SystemExit(main())
