"""``python -m vmc.evaluate``: the standard evaluation of a controller, per track, beside the reference drivers.

Every track gets ``--episodes`` races of the World Models agent with Gaussian noise ``--noise`` on steering and
throttle (episode k's seed is ``seed + k`` on every track, so the same command gives the same table), and,
with ``--perturb K``, K steps of random actions from a random (seeded) step of each race, to measure recovery.
The centre-line driver and the game's AI drive each track once (the game is deterministic); with ``--perturb``,
the centre-line driver also drives every episode under that episode's noise and spell, and its laps are a column
of the table: the recovery that a driver reading the kart's true position manages from the same spells.

Writes into ``--out`` (default: ``eval/`` beside the controller's folder): ``table.md`` (the table printed at the
end), ``episodes.json`` and ``episodes.csv`` (every episode), ``grid.mp4`` (one tile per track: the first
episode of each, side by side) and ``grid.png`` (frames of it).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from vmc import cli, records
from vmc.checkpoints import load_controller
from vmc.cli import Config, check_non_negative, check_positive
from vmc.cluster import check_cluster
from vmc.racing import AgentRace, Perturbation, RaceResult, ReferenceRace, racing_pool
from vmc.sim.env import EnvConfig, check_track

log = logging.getLogger("vmc.evaluate")


@dataclass
class EvaluateConfig(Config):
    """Evaluate a controller on tracks: laps, scores, lap steps against the game's AI, how races ended."""

    controller: str = "runs/lighthouse-small/controller/best.pt"
    """Controller checkpoint (``best.pt``; it carries its VAE and MDN-RNN)."""
    tracks: list[str] = field(default_factory=list)
    """Tracks to race on (default: the tracks the controller was trained on)."""
    episodes: int = 20
    """Races per track."""
    noise: float = 0.1
    """Std of the Gaussian noise on steering and throttle (0: none)."""
    perturb: int = 0
    """Steps of random actions from a random step of each race (0: none)."""
    seed: int = 0
    """Episode k of every track uses seed ``seed + k``."""
    max_steps: int = 1000
    """Step limit of a race."""
    workers: int = 0
    """Game processes (0: one per core this process may run on)."""
    cluster: str = "local"
    """Where the game workers run: ``local`` (processes on this machine), ``ray`` (join the running Ray cluster of
    ``RAY_ADDRESS`` or ``ray start``), ``ray-local`` (start a private Ray here) or a Ray address (``HOST:6379``,
    ``ray://HOST:10001``); on Ray, ``--workers 0`` is one worker per CPU of the cluster."""
    renderer: str = "llvmpipe"
    """Renderer of the worker games."""
    out: str = ""
    """Output folder (default: ``eval`` beside the controller's folder, or ``eval-perturb<K>``)."""
    video: bool = True
    """Write the grid video and picture."""

    def validate(self) -> None:
        check_positive(episodes=self.episodes, max_steps=self.max_steps)
        check_non_negative(noise=self.noise, perturb=self.perturb, workers=self.workers)
        check_cluster(self.cluster)
        for t in self.tracks:
            check_track(t)

    @property
    def out_path(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path(self.controller).parent.parent / (f"eval-perturb{self.perturb}" if self.perturb else "eval")


def reference_laps(pool, tracks: list[str], record: bool = False) -> dict[str, dict[str, RaceResult]]:
    """One lap of each reference driver (``centreline``, ``ai``) per track on ``pool``: ``{track: {driver: result}}``."""
    tasks = [ReferenceRace(d, t, record) for t in tracks for d in ("centreline", "ai")]
    out: dict[str, dict[str, RaceResult]] = {}
    for task, r in zip(tasks, pool.map(tasks)):
        out.setdefault(task.track, {})[task.driver] = r
    return out


def score_candidates(pool, candidates: dict[str, np.ndarray], tracks: list[str], seeds: list[Optional[int]]) -> dict[str, dict]:
    """Race each parameter vector on every track and seed; per name: ``mean``, ``std`` (over the noisy seeds),
    ``noise_free`` (mean of the ``None`` seeds), ``laps`` (of all ``races``), ``noise_free_laps`` (of the ``None``
    seeds' races), ``noisy_laps_per_track``, ``per_track`` means and the ``params``."""
    tasks = [AgentRace(p, t, s) for p in candidates.values() for t in tracks for s in seeds]
    res = pool.map(tasks)
    n = len(tracks) * len(seeds)
    out = {}
    for j, (name, params) in enumerate(candidates.items()):
        rows = list(zip(tasks[j * n:(j + 1) * n], res[j * n:(j + 1) * n]))
        noisy = [r.score for t, r in rows if t.seed is not None]
        clean = [r.score for t, r in rows if t.seed is None]
        out[name] = {"mean": float(np.mean(noisy)) if noisy else float(np.mean(clean)),
                     "std": float(np.std(noisy)) if noisy else 0.0,
                     "noise_free": float(np.mean(clean)) if clean else float("nan"),
                     "laps": int(sum(r.lap for _, r in rows)), "races": len(rows),
                     "noise_free_laps": int(sum(r.lap for t, r in rows if t.seed is None)),
                     "noisy_laps_per_track": {tr: int(sum(r.lap for t, r in rows if t.track == tr and t.seed is not None))
                                              for tr in tracks},
                     "per_track": {t: float(np.mean([r.score for tk, r in rows if tk.track == t])) for t in tracks},
                     "params": params}
    return out


def summarise(track: str, results: list[RaceResult], refs: dict[str, RaceResult],
              spelled: Optional[list[RaceResult]] = None) -> dict:
    """One table row: laps, score mean ± std, median lap steps, the AI's lap steps and the ratio, endings; with
    ``spelled`` (the centre-line driver under the same episodes' noise and spells) its laps."""
    scores = np.array([r.score for r in results])
    lap_steps = [r.steps for r in results if r.lap]
    ai = refs["ai"]
    median = float(np.median(lap_steps)) if lap_steps else None
    ends: dict[str, int] = {}
    for r in results:
        ends[str(r.end)] = ends.get(str(r.end), 0) + 1
    return {"track": track, "laps": len(lap_steps), "episodes": len(results), "mean": float(scores.mean()),
            "std": float(scores.std()), "median_lap_steps": median, "ai_steps": ai.steps if ai.lap else None,
            "ai_end": ai.end, "ratio": (median / ai.steps) if (median and ai.lap) else None,
            "centreline": refs["centreline"].score, "centreline_end": refs["centreline"].end, "ai_score": ai.score,
            "ends": ends, "centreline_spelled_laps": sum(r.lap for r in spelled) if spelled else None}


def markdown_table(rows: list[dict], title: str) -> str:
    """The evaluation table in Markdown (with spells, a column of the centre-line driver's laps under them)."""
    spells = any(r.get("centreline_spelled_laps") is not None for r in rows)
    lines = [f"**{title}**", "",
             "| track | laps | score | median lap steps | game AI steps | ratio | centre-line driver | game AI | ends |"
             + (" centre-line driver, same spells |" if spells else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if spells else "")]
    for r in rows:
        med = f"{r['median_lap_steps']:.0f}" if r["median_lap_steps"] is not None else "-"
        ai = f"{r['ai_steps']}" if r["ai_steps"] is not None else f"- ({r['ai_end']})"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        ends = ", ".join(f"{k} {v}" for k, v in sorted(r["ends"].items()))
        lines.append(f"| {r['track']} | {r['laps']}/{r['episodes']} | {r['mean']:.1f} ± {r['std']:.1f} | {med} | {ai} | "
                     f"{ratio} | {r['centreline']:.1f} ({r['centreline_end']}) | {r['ai_score']:.1f} ({r['ai_end']}) | {ends} |"
                     + (f" {r['centreline_spelled_laps']}/{r['episodes']} laps |" if spells else ""))
    return "\n".join(lines) + "\n"


def grid_frames(tiles: list[list[np.ndarray]], labels: list[str], scale: int = 3) -> list[np.ndarray]:
    """Frames of a grid video: tile i shows ``tiles[i]`` (frames, (H, W, 3) uint8) under ``labels[i]``; a race that
    ended holds its last frame."""
    from vmc.video import label

    n = len(tiles)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    length = max(len(t) for t in tiles)
    h, w = tiles[0][0].shape[:2]
    out = []
    for k in range(length):
        canvas = np.zeros((rows * (h * scale + 14), cols * w * scale, 3), np.uint8)
        for i, (frames, name) in enumerate(zip(tiles, labels)):
            f = np.repeat(np.repeat(frames[min(k, len(frames) - 1)], scale, 0), scale, 1)
            tile = label(f, name)
            r, c = divmod(i, cols)
            canvas[r * tile.shape[0]:(r + 1) * tile.shape[0], c * tile.shape[1]:(c + 1) * tile.shape[1]] = tile
        out.append(canvas)
    return out


def evaluate(cfg: EvaluateConfig, progress: bool = True) -> list[dict]:
    """Run the evaluation and write its files; returns the table's rows."""

    from PIL import Image

    from vmc.video import frame_strip, write_video

    ck, models = load_controller(Path(cfg.controller))
    tracks = cfg.tracks or list(ck.get("tracks") or [ck.get("track", "lighthouse")])
    for t in tracks:
        check_track(t)
    env = EnvConfig(renderer=cfg.renderer, max_steps=cfg.max_steps)
    out = cfg.out_path
    out.mkdir(parents=True, exist_ok=True)
    with racing_pool(cfg.workers, models, env, cfg.noise, name="vmc-evaluate", cluster=cfg.cluster, progress=progress) as pool:
        refs = reference_laps(pool, tracks)  # the pool's bar counts the races (and its workers' logs reach ours)
        window = {t: max(20, int(0.8 * (refs[t]["ai"].steps or 300))) for t in tracks}
        tasks = [AgentRace(ck["params"], t, cfg.seed + k, cfg.perturb, perturb_window=window[t], record=cfg.video and k == 0)
                 for t in tracks for k in range(cfg.episodes)]
        # With a spell, the centre-line driver meets each episode's noise and spell too: how many of them a driver
        # that reads the kart's true position gets over is the recovery a controller can hope for.
        spelled = [ReferenceRace("centreline", t, max_steps=cfg.max_steps, seed=cfg.seed + k, noise=cfg.noise,
                                 perturb=cfg.perturb, perturb_window=window[t])
                   for t in tracks for k in range(cfg.episodes)] if cfg.perturb else []
        results = pool.map(tasks + spelled)
        results, teacher = results[:len(tasks)], results[len(tasks):] or [None] * len(tasks)
    rows = [summarise(t, [r for task, r in zip(tasks, results) if task.track == t], refs[t],
                      [r for task, r in zip(tasks, teacher) if task.track == t and r is not None]) for t in tracks]
    title = (f"{cfg.controller}: {cfg.episodes} episodes per track, action noise {cfg.noise}"
             + (f", {cfg.perturb} random steps per race" if cfg.perturb else ""))
    table = markdown_table(rows, title)
    (out / "table.md").write_text(table)
    run = records.run_of_controller(cfg.controller)  # TensorBoard records go to the controller's run folder
    records.text(run, f"{out.name}/table", table)
    for r in rows:
        records.scalars(run, f"{out.name}/{r['track']}", {k: r[k] for k in ("mean", "std", "laps", "median_lap_steps", "ratio")}, 0)
    episodes = [{"track": task.track, "seed": task.seed, "score": r.score, "steps": r.steps, "end": r.end,
                 "lap_fraction": r.lap_fraction,
                 "perturb_at": Perturbation(task.seed, task.perturb, task.perturb_window).at.start if task.perturb else None,
                 "centreline_end": c.end if c is not None else None,
                 # brake on, throttle off: what backs a stopped kart up (does the controller ever free itself?)
                 "brake_steps": int(((r.actions[:, 2] > 0.5) & (r.actions[:, 1] < 0.5)).sum())}
                for task, r, c in zip(tasks, results, teacher)]
    (out / "episodes.json").write_text(json.dumps({"config": cfg.record(), "rows": rows, "episodes": episodes}, indent=2))
    with open(out / "episodes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(episodes[0]))
        w.writeheader()
        w.writerows(episodes)
    if cfg.video:
        tiles = [r.frames for task, r in zip(tasks, results) if task.record]
        labels = [f"{task.track} {r.score:.0f} ({r.end})" for task, r in zip(tasks, results) if task.record]
        frames = grid_frames(tiles, labels)
        write_video(out / "grid.mp4", frames, fps=10)
        Image.fromarray(frame_strip(frames, 4)).save(out / "grid.png")
    print(table)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(EvaluateConfig, argv, "python -m vmc.evaluate")
    return cli.run("vmc.evaluate", lambda: evaluate(cfg) and None)


if __name__ == "__main__":
    raise SystemExit(main())
