"""How a controller's dream races end: the done head, the stuck rule, a lap, or the step limit.

For each folder given (a run folder, or a ``vmc.iterate`` round folder ``<run>/iterate/round-<k>``), its
``controller/best.pt`` is dreamed in that folder's ``mdn.pt`` from the starts of ``latents.h5``: ``--races`` whole
races from the race start, ``--steps`` steps, temperature ``--temperature``, action noise 0.1 and the real env's
stuck rule (60 steps), as ``vmc.iterate`` scores its picks. A dream whose done head never fires pays a crashed kart
as if it drove on; this says how often each rule ends the races.

    python benchmarks/dream_ends.py runs/lighthouse-small-teacher-free/iterate/round-4 [more folders]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders with mdn.pt, latents.h5 and controller/best.pt")
    p.add_argument("--races", type=int, default=200)
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--temperature", type=float, default=1.15)
    p.add_argument("--stuck-steps", type=int, default=60)
    a = p.parse_args()

    from vmc.checkpoints import load_controller, load_mdn
    from vmc.dream import DreamEnv, DreamStarts
    from vmc.evolve import PICK_DRAWS

    torch.set_num_threads(1)
    print(f"\n{a.races} dream races from the start, {a.steps} steps, temperature {a.temperature}\n")
    print("| folder | dream score | done head | stuck rule | lap | step limit |")
    print("|---|---|---|---|---|---|")
    for folder in map(Path, a.folders):
        mdn = load_mdn(folder / "mdn.pt")
        ck, _ = load_controller(folder / "controller" / "best.pt")
        env = DreamEnv(mdn, DreamStarts.from_latents(folder / "latents.h5", mdn), temperature=a.temperature,
                       max_steps=a.steps, stuck_steps=a.stuck_steps)
        res = env.run(np.asarray(ck["params"])[None], env.noise(PICK_DRAWS, a.races, race_start=1.0))
        s, done, stuck, lap = res.scores[0], res.done[0], res.stuck[0], res.lap[0]
        head = done & ~stuck & ~lap
        print(f"| {folder} | {s.mean():.1f} ± {s.std():.1f} | {int(head.sum())} | {int(stuck.sum())} | {int(lap.sum())} "
              f"| {int((~done).sum())} |")


if __name__ == "__main__":
    main()
