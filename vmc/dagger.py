"""The controller's starting points: least squares on the recorded data, and DAgger on the centre-line driver.

* :func:`fit_initial_mean`: regress the recorded actions (pre-squash) on [z, h], where h comes from running the
  MDN-RNN over each recorded episode of the latent file: a controller near the data's driving. The linear
  controller is fitted by least squares, one with hidden units by AdamW (:func:`fit_controller`).
* :func:`carry_over`: a controller moved onto a retrained MDN-RNN's h (the iterative procedure's rounds).
* :func:`dagger`: imitate the centre-line driver (DAgger, Ross et al. 2011) in the real game. In round 0 the
  driver races and the controller's inputs are recorded with its actions; from round 1 the controller fitted
  so far races (the driver taking over with probability 0.5^round) while the driver labels every step, so the
  fit also learns to come back from the controller's own mistakes. Races go round the given tracks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vmc.errors import CheckpointError
from vmc.latents import read_latents
from vmc.models.controller import Controller, Stillness, controller_hidden
from vmc.models.mdn import MDNRNN
from vmc.racing import DaggerRace
from vmc.runs import SEED_STRIDE

log = logging.getLogger("vmc.dagger")


def ridge_solve(x: np.ndarray, target: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Flat linear-controller parameters (W row-major, then b) whose pre-squash outputs best match ``target``
    (N, 3) from inputs ``x`` (N, Z+H) in least squares, with a ridge on the weights (not the bias)."""
    xb = np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], 1)
    reg = ridge * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    sol = np.linalg.solve(xb.T @ xb + reg, xb.T @ np.asarray(target, np.float64))  # (Z+H+1, 3)
    return np.concatenate([sol[:-1].T.ravel(), sol[-1]])


def regress(x: np.ndarray, target: np.ndarray, hidden: int, init: Optional[np.ndarray] = None, steps: int = 3000,
            batch: int = 512, lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0) -> np.ndarray:
    """Flat parameters of a controller with ``hidden`` tanh units whose pre-squash outputs match ``target`` (N, 3)
    from ``x`` (N, Z+H) in mean squared error: ``steps`` AdamW steps on minibatches, from ``init`` when given
    (DAgger's rounds go on from the last fit) else a seeded initialisation. Deterministic for a given seed."""
    xs, ys = torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(target), dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Controller(xs.shape[1], 0, ys.shape[1], hidden=hidden)
        if init is not None:
            model.set_flat(init)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        params = list(model.parameters())
        for _ in range(steps):
            idx = torch.randint(len(xs), (min(batch, len(xs)),), generator=g)
            loss = torch.nn.functional.mse_loss(Controller.raw_with(params, xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            loss = torch.nn.functional.mse_loss(Controller.raw_with(params, xs), ys)
    log.info("controller with %d hidden units fitted on %d steps: mean squared error %.4f", hidden, len(xs), float(loss))
    return torch.cat([p.detach().reshape(-1) for p in params]).double().numpy()


def fit_controller(x: np.ndarray, target: np.ndarray, hidden: int = 0, ridge: float = 1.0,
                   init: Optional[np.ndarray] = None) -> np.ndarray:
    """Flat controller parameters whose pre-squash outputs match ``target`` (N, 3) from ``x`` (N, Z+H): least
    squares with a ridge for the linear controller (``hidden`` 0), :func:`regress` from ``init`` with hidden units."""
    return ridge_solve(x, target, ridge) if not hidden else regress(x, target, hidden, init)


def squash_targets(actions: np.ndarray) -> np.ndarray:
    """The pre-squash targets (N, 3) of ``actions`` (N, 3): arctanh of the steering, logits of acceleration and
    brake, clipped so that saturated actions give finite targets."""
    y = np.asarray(actions, np.float64)
    pedals = np.clip(y[:, 1:], 0.05, 0.95)
    return np.concatenate([np.arctanh(np.clip(y[:, :1], -0.95, 0.95)), np.log(pedals / (1 - pedals))], 1)


def fit_actions(x: np.ndarray, actions: np.ndarray, hidden: int = 0, ridge: float = 1.0,
                init: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`fit_controller` on the pre-squash targets of ``actions`` (N, 3) (:func:`squash_targets`)."""
    return fit_controller(x, squash_targets(actions), hidden, ridge, init)


def controller_inputs(latents: Path, mdn: MDNRNN, names: Optional[set[str]] = None,
                      still: Optional[Stillness] = None) -> tuple[np.ndarray, np.ndarray]:
    """The controller's inputs [z_t, h_t] (N, Z+H), or [z_t, h_t, s_t] (N, Z+H+1) with the ``still`` input, at every
    step of every episode of a latent file (of those named ``names`` if given, in the file's order), h_t being the
    MDN-RNN's state before step t, and the recorded actions (N, 3)."""
    xs, ys = [], []
    with torch.no_grad():
        for ep in read_latents(latents, fields=("mu", "actions")):
            if names is not None and ep["name"] not in names:
                continue
            mu, actions = torch.from_numpy(ep["mu"][:-1]), torch.from_numpy(ep["actions"])
            heads, _ = mdn(mu[None], actions[None])
            h = torch.cat([torch.zeros(1, mdn.config.hidden), heads["h"][0, :-1]])  # h_t before step t
            x = torch.cat([mu, h], 1).numpy()
            xs.append(x if still is None else np.concatenate([x, still.sequence(ep["mu"][:-1])], 1))
            ys.append(actions.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def stillness_for(latents: Path, fraction: float = 0.2) -> Stillness:
    """The :class:`Stillness` input for the VAE of a latent file: still is a step of the VAE mean under ``fraction``
    of its median step over the file (the same rule for any VAE, whatever the scale of its latents). Measured on
    the 16-course collection of ``--preset tracks-both-ways`` and its VAE: the median step is 0.83; a fifth of it
    is over the steps of a kart moving at 3 m/s or more but 1 in 1,000, and under 62 % of those of a kart
    blocked against a wall (frames that differ by under 1/255 on average: the VAE mean still moves with them),
    so s climbs to about 0.5 in 10 blocked steps. A kart lifted by the rescue stands still, but its picture
    moves."""
    steps = np.concatenate([np.linalg.norm(np.diff(ep["mu"], axis=0), axis=1)
                            for ep in read_latents(latents, fields=("mu",))] + [np.zeros(0)])
    if not len(steps):
        raise CheckpointError(f"{latents}: no episode of two frames or more to set the stillness threshold from")
    return Stillness(threshold=float(fraction * np.median(steps)))


def fit_initial_mean(latents: Path, mdn: MDNRNN, ridge: float = 1.0, hidden: int = 0,
                     still: Optional[Stillness] = None) -> np.ndarray:
    """The controller (linear, or with ``hidden`` units; on the ``still`` input too if given) fitted to every episode
    of a latent file (see the module docstring)."""
    return fit_actions(*controller_inputs(latents, mdn, still=still), hidden, ridge)


def carry_over(params: np.ndarray, old: MDNRNN, new: MDNRNN, latents: Path, new_latents: Optional[Path] = None,
               ridge: float = 1.0) -> np.ndarray:
    """The controller ``params`` (on [z, h] of the ``old`` MDN-RNN) moved onto the ``new`` one's h: the linear
    controller whose pre-squash outputs on [z, h_new] best match the old controller's on [z, h_old], over every
    step of ``latents``. Retraining the MDN-RNN changes what h means, and a controller kept as it is loses most
    of its driving; this keeps its behaviour without any teacher but itself. When the VAE was retrained too, z_new
    and h_new come from ``new_latents`` (a latent file of the new VAE holding ``latents``' episodes, and maybe
    more, which are left out). A controller with hidden units is refitted with as many, from its own weights."""
    x_old, _ = controller_inputs(latents, old)
    names = None if new_latents is None else {ep["name"] for ep in read_latents(latents, fields=())}
    x_new, _ = controller_inputs(new_latents or latents, new, names)
    flat = torch.as_tensor(np.asarray(params), dtype=torch.float64)[None]
    with torch.no_grad():
        raw = Controller.batched_raw(flat, torch.as_tensor(x_old, dtype=torch.float64)[None])[0].numpy()
    return fit_controller(x_new, raw, controller_hidden(x_old.shape[1], flat.shape[1]), ridge, params)


def repeat_rows(x: np.ndarray, y: np.ndarray, chosen: np.ndarray, times: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, D) and targets (N, 3) with the ``chosen`` rows ((N,) bool) appended ``times - 1`` more times: a
    weight of ``times`` for them in a least-squares or minibatch fit. Backing up is rare in DAgger's data (4 steps
    in a thousand) and a fit that counts it once averages it away."""
    extra = np.repeat(np.flatnonzero(chosen), max(times, 1) - 1)
    return np.concatenate([x, x[extra]]), np.concatenate([y, y[extra]])


def focus_picks(failed: list[str], episodes: int, focus: int) -> list[str]:
    """The focus races at the head of a round (:func:`round_tracks`): ``focus`` for each track in ``failed``, as many
    as fit in ``episodes``; none when ``focus`` is 1."""
    return [t for t in failed for _ in range(focus)][:episodes] if focus > 1 else []


def round_tracks(tracks: list[str], episodes: int, r: int, failed: list[str], focus: int) -> list[str]:
    """The tracks of DAgger round ``r``'s ``episodes`` races: ``focus`` races for each track in ``failed`` (those
    whose races did not lap in the round before), as many as fit, then the other tracks in turn (all of them, in
    turn, when ``focus`` is 1 or nothing failed)."""
    picks = focus_picks(failed, episodes, focus)
    rest = [t for t in tracks if t not in picks] or tracks
    return picks + [rest[(r * episodes + k) % len(rest)] for k in range(episodes - len(picks))]


def focus_starts(picks: list[str], failed_at: dict[str, float], focus: int, before: float) -> list[float]:
    """The lap fraction each of a round's races (``picks``, as :func:`round_tracks` gives them) starts at: ``before``
    ahead of where its track's race failed (``failed_at``: track → lap fraction reached) for the focus races at the
    head of ``picks``, the line (0) for the others and without ``before``."""
    n_focus = len(focus_picks(list(failed_at), len(picks), focus)) if before > 0 else 0
    return [max(0.0, failed_at[t] - before) if k < n_focus else 0.0 for k, t in enumerate(picks)]


def dagger(pool, tracks: list[str], start: np.ndarray, rounds: int, episodes: int, seed: int, perturb: int = 0,
           recover: bool = False, recover_weight: int = 1, crash: bool = False, spells: int = 1,
           focus: int = 1, focus_before: float = 0.0) -> np.ndarray:
    """DAgger from the controller ``start``: ``rounds`` rounds of ``episodes`` races each (tracks in turn) on
    ``pool`` (a pool of :func:`vmc.racing.make_racer` workers), each race with ``perturb`` steps of random actions
    from a random step (``spells`` of them, one per 150 steps, above 1; with ``crash`` one steering held at full
    throttle, :class:`vmc.racing.Perturbation`), and
    with ``recover`` the driver taking the wheel to back up (:class:`vmc.racing.DaggerDriver`); each step labelled
    with backing up counts ``recover_weight`` times in the fit. Returns the last fit (as many hidden units as
    ``start`` has). With ``focus`` above 1, each track whose race failed in a round gets that many of the next
    round's races (:func:`round_tracks`), which with ``focus_before`` start that lap fraction before where it failed
    (:func:`focus_starts`)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    backs: list[np.ndarray] = []
    params = start
    failed_at: dict[str, float] = {}
    for r in range(rounds):
        beta = 0.5 ** r
        seeds = [seed * SEED_STRIDE + 500_000 + r * episodes + k for k in range(episodes)]
        picks = round_tracks(tracks, episodes, r, list(failed_at), focus)
        res = pool.map([DaggerRace(params, track, s, beta, perturb, recover=recover, crash=crash, spells=spells,
                                   start=at)
                        for track, s, at in zip(picks, seeds, focus_starts(picks, failed_at, focus, focus_before))])
        failed_at = {}
        for x in res:  # the first failed race of each track says where the next round's focus races go
            if not x.lap:
                failed_at.setdefault(x.track, x.lap_fraction)
        xs += [x.x for x in res]
        ys += [x.y for x in res]
        backs += [x.backing_up for x in res]
        back = np.concatenate(backs)
        x, y = repeat_rows(np.concatenate(xs), np.concatenate(ys), back, recover_weight)
        params = fit_actions(x, y, controller_hidden(x.shape[1], np.asarray(start).size), init=params)
        log.info("DAgger round %d (expert share %.2f): scores %s, laps %d; refit on %d steps (%d backing up)", r, beta,
                 " ".join(f"{x.track}{f'@{x.start:.2f}' if x.start else ''}:{x.score:.0f}" for x in res),
                 sum(x.lap for x in res), len(back), int(back.sum()))
    return params
