"""Where the MDN-RNN's reward head pays what the game does not: teacher-forced on real races.

Two measurements, no dream sampling (each step is fed the real z and action, so what differs from the game is the
heads' own error, not the dream's drift):

* ``--controller``: the controller's noise-free real race (``vmc.play``'s, 64x64) encoded by its VAE and fed to its
  MDN-RNN step by step: the game's reward and the predicted one summed over ``--window`` steps, and the done head's
  highest probability there, window by window;
* ``--round``: a run folder (a round of ``vmc.iterate``, with ``mdn.pt`` and ``latents.h5``) whose recorded
  episodes are fed the same way: the predicted progress (reward + the 0.1 step cost) over 60-step windows where the
  real kart made no progress, where it did, and over the last 60 steps of episodes that ended ``stuck``, against
  the dream's stuck threshold (``vmc.evolve --dream-min-progress``).

    python benchmarks/reward_head.py --controller runs/<run>/iterate/round-8/controller/best.pt
    python benchmarks/reward_head.py --round runs/<run>/iterate/round-12
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

STEP_COST = 0.1


def predicted_rewards(mdn, z: torch.Tensor, actions: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The reward head and the done head's probability (T,) along a recorded episode: z (T+1, Z) or (T, Z),
    actions (T, 3), fed step by step from a zero state."""
    state, rewards, dones = mdn.initial_state(1), [], []
    with torch.no_grad():
        for t in range(len(actions)):
            heads, state = mdn.step(z[t:t + 1], actions[t:t + 1], state)
            rewards.append(float(heads["reward"][0]))
            dones.append(float(torch.sigmoid(heads["done_logit"][0])))
    return np.array(rewards), np.array(dones)


def race(controller: Path, window: int) -> None:
    from vmc.checkpoints import load_dream_controller
    from vmc.models.vae import ConvVAE
    from vmc.play import drive_and_film

    ck, models = load_dream_controller(controller)
    drive, film = drive_and_film(controller, ck["track"], "llvmpipe", ck["max_steps"], None, 64, 64)
    with torch.no_grad():
        z = models.vae().encode(ConvVAE.to_input(torch.from_numpy(np.ascontiguousarray(np.stack(film["frames"])))))[0]
    actions = torch.from_numpy(np.asarray(drive["actions"], np.float32))
    pred, done = predicted_rewards(models.mdn(), z, actions)
    real = np.diff([0.0] + [i["score"] for i in film["infos"][1:]])
    distance = [i["distance"] for i in film["infos"]]
    print(f"\n{controller}: {ck['track']}, ended {drive['end']} at {drive['score']:.1f} after {len(actions)} steps\n")
    print("| steps | game's reward | predicted | highest done probability | distance at the end (m) |")
    print("|---|---|---|---|---|")
    for s in range(0, len(actions), window):
        e = min(s + window, len(actions))
        print(f"| {s}-{e} | {real[s:e].sum():.1f} | {pred[s:e].sum():.1f} | {done[s:e].max():.2f} | {distance[e]:.1f} |")


def recorded(folder: Path, threshold: float) -> None:
    from vmc.checkpoints import load_mdn
    from vmc.latents import read_latents

    mdn = load_mdn(folder / "mdn.pt")
    still, moving, ends = [], [], []
    episodes = read_latents(folder / "latents.h5", None, 0, ("mu", "actions", "rewards"))
    for ep in episodes:
        pred, _ = predicted_rewards(mdn, torch.from_numpy(ep["mu"]), torch.from_numpy(ep["actions"]))
        pred, real = pred + STEP_COST, ep["rewards"] + STEP_COST
        for s in range(0, len(real) - 59, 20):
            (still if real[s:s + 60].sum() < 0.5 else moving).append(pred[s:s + 60].sum())
        if len(real) >= 60 and real[-60:].sum() < 0.5:
            ends.append(pred[-60:].sum())
    print(f"\n{folder}: {len(episodes)} episodes, predicted progress (reward + {STEP_COST}) over 60 steps\n")
    print(f"| windows | count | percentiles 10 / 25 / 50 / 75 / 90 | below {threshold:g} |")
    print("|---|---|---|---|")
    for name, w in (("no real progress", still), ("real progress", moving), ("last 60 steps of `stuck` endings", ends)):
        w = np.asarray(w)
        cells = " / ".join(f"{np.percentile(w, q):.1f}" for q in (10, 25, 50, 75, 90)) if len(w) else "-"
        share = f"{np.mean(w < threshold):.0%}" if len(w) else "-"
        print(f"| {name} | {len(w)} | {cells} | {share} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controller", type=Path, help="a controller checkpoint trained in a dream (vmc.iterate's)")
    p.add_argument("--round", type=Path, help="a folder with mdn.pt and latents.h5 (an iterate round)")
    p.add_argument("--window", type=int, default=20, help="steps per row of the race table")
    p.add_argument("--threshold", type=float, default=2.0, help="the dream's stuck threshold (--dream-min-progress)")
    a = p.parse_args()
    if not (a.controller or a.round):
        p.error("give --controller, --round or both")
    if a.controller:
        race(a.controller, a.window)
    if a.round:
        recorded(a.round, a.threshold)


if __name__ == "__main__":
    main()
