"""How well the VAE's teacher read-out predicts the centre-line driver's steering, per track: does z hold the road's
direction on tracks the VAE never saw?

Collects ``--episodes`` ``mix`` episodes (the centre-line driver with noise and random spells; its own action is
recorded with every frame) on ``--tracks`` into ``--data`` unless they are there, encodes every frame with the run's
``vae.pt`` (``--model.teacher-outputs 3``) and prints, per track: frames, the read-out's steering error (mean
squared), its correlation with the driver's steering, how often it steers to the same side where the driver
steers by more than 0.2, and the throttle's mean squared error. A measurement, not training: the frames of
held-out tracks are never trained on.

    python benchmarks/readout_probe.py --vae runs/8tracks-tracks/vae.pt \\
        [--tracks snowtuxpeak abyss lighthouse cocoa_temple --episodes 24 --data data/readout-probe]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", required=True, help="a vae.pt trained with the teacher read-out")
    p.add_argument("--tracks", nargs="+", default=["snowtuxpeak", "abyss", "lighthouse", "cocoa_temple"])
    p.add_argument("--episodes", type=int, default=24, help="episodes in all, round-robin over the tracks")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=5000, help="episode i's seed is seed + i (away from training seeds)")
    p.add_argument("--data", default="data/readout-probe")
    a = p.parse_args()

    # vmc.collect resumes a folder and refuses one collected with other settings, so this is a no-op on a re-run
    subprocess.run([sys.executable, "-m", "vmc.collect", "--out", a.data, "--tracks", *a.tracks, "--episodes",
                    str(a.episodes), "--max-steps", str(a.max_steps), "--seed", str(a.seed), "--policy", "mix"],
                   check=True)

    import torch

    from vmc.checkpoints import load_vae
    from vmc.data import RolloutDataset
    from vmc.models.vae import ConvVAE

    vae = load_vae(Path(a.vae))
    if vae.teacher is None:
        raise SystemExit(f"{a.vae} has no teacher read-out (trained without --teacher-weight)")
    pred: dict[str, list[np.ndarray]] = defaultdict(list)
    truth: dict[str, list[np.ndarray]] = defaultdict(list)
    with RolloutDataset(Path(a.data)) as ds, torch.no_grad():
        for ref in ds.episodes:
            g = ds.group(ref)
            frames = torch.from_numpy(g["observations"][:-1])
            mu, _ = vae.encode(ConvVAE.to_input(frames))
            pred[ref.track].append(vae.teacher(mu).numpy())
            truth[ref.track].append(g["expert_actions"][()])

    print(f"\n**{a.vae}: teacher read-out against the centre-line driver's action, `mix` episodes**\n")
    print("| track | frames | steering MSE | steering correlation | same side (driver \\|steer\\| > 0.2) | throttle MSE |")
    print("|---|---|---|---|---|---|")
    for track in a.tracks:
        if track not in pred:
            continue
        p_, t_ = np.concatenate(pred[track]), np.concatenate(truth[track])
        s = steering_agreement(p_[:, 0], t_[:, 0])
        print(f"| {track} | {len(p_)} | {s['mse']:.3f} | {s['r']:.2f} | {s['side']:.2f} "
              f"| {np.mean((p_[:, 1] - t_[:, 1]) ** 2):.3f} |")


def steering_agreement(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """A read-out's steering (N,) against the driver's (N,): mean squared error, correlation, and the share of
    frames where the driver turns (|steer| > 0.2) on which the read-out steers to the same side."""
    turning = np.abs(truth) > 0.2
    return {"mse": float(np.mean((pred - truth) ** 2)), "r": float(np.corrcoef(pred, truth)[0, 1]),
            "side": float(np.mean(np.sign(pred[turning]) == np.sign(truth[turning])))}


if __name__ == "__main__":
    main()
