"""The main job, ``./run.sh``: the whole World Models pipeline on a preset, end to end, in one run folder.

Stages, each reading the previous stage's file and skipped when its output is already complete (so an
interrupted job continues where it stopped; a changed config is refused with the fields that differ):

1. reference laps: the centre-line driver and the game's AI drive one lap of each track (``reference_strip.png``);
2. collect: rollouts (mix policy, all cores) into ``data/<run name>`` (shared collections stay in ``data/``);
3. train_vae: ConvVAE → ``vae.pt`` and ``latents.h5``;
4. train_mdn: MDN-RNN → ``mdn.pt`` and ``dream.mp4``;
5. evolve: DAgger imitation of the centre-line driver as the starting point, then CMA-ES on real races →
   ``controller/best.pt``; with ``--teacher-free`` instead (and random driving as stage 2's data): rounds of
   ``vmc.iterate`` from a zero controller, CMA-ES in the dream and the controller's own races as new data →
   ``iterate/round-<k>/controller/best.pt``, ``iterate/rounds.csv``, ``iterate/dream_vs_real.png``;
6. play: the best controller's lap → ``best_lap.mp4`` (400x300) and ``best_lap.json``;
7. evaluate (presets with held-out tracks): ``vmc.evaluate`` on the training and held-out tracks.

Everything goes to ``runs/<name>/`` (name: ``--name``, else the track(s) and preset, e.g. ``lighthouse-small``),
with ``config.json`` (this config and the package version), ``summary.json`` and ``log.txt``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Optional

import numpy as np

from vmc import cli, records
from vmc.cli import Config, check_correlation, check_non_negative
from vmc.cluster import check_cluster
from vmc.pool import default_workers
from vmc.runs import RUNS, SEED_STRIDE, run_name, write_config
from vmc.sim.env import REVERSE, check_track

if TYPE_CHECKING:
    from vmc.iterate import IterateConfig

log = logging.getLogger("vmc.main")

TRAIN_TRACKS = ["lighthouse", "zengarden", "hacienda", "scotland", "cornfield_crossing", "snowmountain", "cocoa_temple",
                "candela_city"]
"""The multi-track preset's training tracks."""
HELD_OUT_TRACKS = ["snowtuxpeak", "abyss"]
"""Tracks the multi-track agent is evaluated on and never trained or tuned on."""


@dataclass(frozen=True)
class DreamSizes:
    """Sizes of the teacher-free recipe (``--teacher-free``): rounds of ``vmc.iterate`` from a zero controller."""

    rounds: int
    """Rounds of collect → retrain the MDN-RNN → evolve in the dream."""
    episodes: int
    """New real episodes per round, driven by the previous round's controller."""
    generations: int
    """CMA-ES generations per round."""
    popsize: int
    """CMA-ES population."""
    rollouts: int
    """Dream rollouts per candidate."""
    dream_steps: int
    """Steps of a dream rollout."""
    mdn_epochs: int
    """MDN-RNN epochs per round (from the previous round's weights)."""
    mdn_steps: int
    """MDN-RNN optimiser steps per epoch."""
    eval_seeds: int = 10
    """Noisy real-game seeds of each round's evaluation (plus one race without noise)."""
    done_weight: float = 10.0
    """Weight of episode endings in the MDN-RNN's done loss."""
    vae_epochs: int = 0
    """VAE epochs per round from round 2 on the grown collection (``vmc.iterate --vae-epochs``)."""
    short_rollouts: int = 64
    """Dream rollouts per candidate with ``--fitness short``."""
    short_steps: int = 50
    """Steps of those rollouts, each from a recorded state."""


@dataclass(frozen=True)
class Preset:
    """Sizes of each stage."""

    episodes: int
    """Episodes to collect."""
    max_steps: int
    """Step limit of collected episodes."""
    vae_epochs: int
    """ConvVAE epochs."""
    mdn_epochs: int
    """MDN-RNN epochs."""
    mdn_steps: int
    """MDN-RNN optimiser steps per epoch."""
    popsize: int
    """CMA-ES population."""
    rollouts: int
    """Races per candidate and track."""
    generations: int
    """CMA-ES generations."""
    race_steps: int
    """Step limit of a scored race."""
    dagger_rounds: int
    """DAgger rounds of the controller's starting point."""
    dagger_episodes: int
    """Races per DAgger round."""
    tracks: tuple[str, ...] = ()
    """Training tracks of the preset (empty: ``--tracks``)."""
    held_out: tuple[str, ...] = ()
    """Tracks evaluated at the end besides the training tracks (none: no evaluation stage)."""
    tracks_per_generation: int = 0
    """Tracks per CMA-ES generation (0: all)."""
    eval_episodes: int = 20
    """Episodes per track of the final evaluation."""
    teacher_weight: float = 0.0
    """The VAE's teacher loss (``vmc.train_vae --teacher-weight``; never with ``--teacher-free``)."""
    dagger_perturb: int = 0
    """Steps of random actions in each DAgger race (``vmc.evolve --dagger-perturb``)."""
    dagger_recover: bool = False
    """The centre-line driver takes the wheel in DAgger races while it backs up (``vmc.evolve --dagger-recover``)."""
    controller_hidden: int = 0
    """Hidden tanh units of the controller (0: World Models' linear controller; ``vmc.evolve --controller-hidden``)."""
    controller_still: bool = False
    """The controller also sees how long the picture has stood still (``vmc.evolve --controller-still``)."""
    reverse: bool = False
    """Train on each training track raced both ways (``<track>-reverse`` as well: the game's reverse mode); the
    evaluation stays on the tracks as named."""
    dream: DreamSizes = DreamSizes(rounds=4, episodes=16, generations=20, popsize=64, rollouts=16, dream_steps=400,
                                   mdn_epochs=4, mdn_steps=100, vae_epochs=2)
    """The teacher-free recipe's sizes."""


PRESETS = {
    "small": Preset(episodes=40, max_steps=400, vae_epochs=6, mdn_epochs=8, mdn_steps=100, popsize=16, rollouts=1,
                    generations=12, race_steps=700, dagger_rounds=6, dagger_episodes=4),
    "debug": Preset(episodes=6, max_steps=60, vae_epochs=1, mdn_epochs=1, mdn_steps=10, popsize=4, rollouts=1,
                    generations=2, race_steps=60, dagger_rounds=2, dagger_episodes=2,
                    dream=DreamSizes(rounds=2, episodes=2, generations=1, popsize=4, rollouts=2, dream_steps=20,
                                     mdn_epochs=1, mdn_steps=5, eval_seeds=1, vae_epochs=1, short_rollouts=4,
                                     short_steps=10)),
    "tracks": Preset(episodes=160, max_steps=600, vae_epochs=8, mdn_epochs=10, mdn_steps=150, popsize=16, rollouts=1,
                     generations=6, race_steps=1000, dagger_rounds=8, dagger_episodes=16, tracks=tuple(TRAIN_TRACKS),
                     held_out=tuple(HELD_OUT_TRACKS), tracks_per_generation=4, teacher_weight=500.0,
                     dagger_perturb=10),
    "tracks-both-ways": Preset(episodes=240, max_steps=600, vae_epochs=8, mdn_epochs=10, mdn_steps=150, popsize=16,
                               rollouts=1, generations=2, race_steps=1000, dagger_rounds=8, dagger_episodes=16,
                               tracks=tuple(TRAIN_TRACKS), held_out=tuple(HELD_OUT_TRACKS), tracks_per_generation=4,
                               teacher_weight=500.0, dagger_perturb=10, dagger_recover=True, controller_hidden=64,
                               reverse=True),
}


@dataclass
class MainConfig(Config):
    """The whole World Models pipeline on a preset: collect, VAE, MDN-RNN, controller, the best lap as a video."""

    tracks: list[str] = field(default_factory=lambda: ["lighthouse"])
    """Training tracks (the ``tracks`` preset brings its own eight)."""
    preset: Literal["small", "debug", "tracks", "tracks-both-ways"] = "small"
    """Sizes of the stages: ``small`` (the default, about 6 minutes on 2 cores), ``debug`` (every stage on a tiny
    budget), ``tracks`` (eight training tracks, two held out; about an hour on 2 cores), ``tracks-both-ways`` (those
    tracks raced both ways, a controller with 64 hidden units, DAgger with ``--dagger-recover``; about an hour)."""
    teacher_free: bool = False
    """World Models without a teacher: random (brownian) driving as the first data, then rounds of the controller's
    own races → MDN-RNN retrained → CMA-ES from zeros in the dream (``vmc.iterate``); no privileged state anywhere,
    real races only to collect and to evaluate."""
    keep: Literal["best", "mean"] = "best"
    """With ``--teacher-free``: which controller a round keeps and goes on from: ``best``, the candidate its dream scores
    best; ``mean``, the CMA-ES mean (``vmc.iterate --keep``)."""
    reward: Literal["best", "signed"] = "best"
    """With ``--teacher-free``: the reward the collections record and the MDN-RNN learns (``vmc.collect --reward``):
    ``best``, the lap's new best progress (CarRacing's rule); ``signed``, the change of the lap's progress, negative
    where a rescue puts the kart back, so that the dream does not pay again for road driven twice. Real scores and
    laps are the best progress's under both; dream scores are then the progress where the dream ended, the same as
    the real score for a lap and below it for a race that ends behind its best (the run folder gets ``-signed``)."""
    fitness: Literal["races", "short"] = "races"
    """With ``--teacher-free``: CMA-ES's fitness in the dream: ``races``, the preset's whole dream races, half of them
    from race starts; ``short``, 64 dream rollouts of 50 steps from states anywhere in the recorded episodes
    (``vmc.iterate --dream-steps 50 --race-start 0 --rollouts 64``: less of the MDN-RNN's compounding error to
    exploit; the run folder gets ``-short``). Each round's evaluation is whole dream races and real races either way."""
    dream_noise: Optional[float] = None
    """With ``--teacher-free``: the std of the action noise in the dream rollouts that score CMA-ES's candidates
    (None: the real races' exploration noise, 0.1; ``vmc.iterate --dream-noise``). Above it, a candidate scores in
    the dream only if it keeps to the road through larger slips than the real races': where most candidates lap in
    the dream, that is what sets them apart (the run folder gets ``-dream-noise<X>``)."""
    dream_done: Literal["head", "stuck"] = "head"
    """With ``--teacher-free``: what ends a dream race before its lap, in CMA-ES's fitness and the evaluations'
    dream races: ``head``, the MDN-RNN's done head or the stuck rule; ``stuck``, the stuck rule alone
    (``vmc.iterate --dream-done``; the run folder gets ``-dream-done-stuck``)."""
    collect_noise: Optional[float] = None
    """With ``--teacher-free``: the exploration noise's std in the rounds' collections of the controller's own races
    (None: 0.1, the evaluations' noise; ``vmc.iterate --collect-noise``; the run folder gets ``-collect-noise<X>``)."""
    collect_correlation: float = 0.0
    """With ``--teacher-free``: that noise correlated from step to step (``vmc.iterate --collect-correlation``; 0.9
    holds a deviation for about 10 steps, so that the races try other lines through a bend where the controller
    always fails; the run folder gets ``-corr<X>``)."""
    until_laps: int = 0
    """With ``--teacher-free``: stop after the first round whose controller laps in at least this many of its noisy
    evaluation races on every course (10 a course on the ``small`` preset, 1 on ``debug``) and in every noise-free one
    (``vmc.iterate --until-laps``; 0: all the rounds). A stopped run started again with a higher value (or 0) goes on
    from its last round."""
    rounds: int = 0
    """With ``--teacher-free``: rounds of ``vmc.iterate`` in all (0: the preset's). A finished run started again with
    more rounds goes on from its last round; the rest of its config must be the same."""
    episodes: int = 0
    """Episodes of stage 2's collection (0: the preset's; the teacher-free recipe's first, random data); the run and
    data folders get ``-episodes<N>``."""
    name: str = ""
    """Run folder name under ``--runs`` (default: the track(s) and the preset, e.g. ``lighthouse-small``, with
    ``-teacher-free`` for that recipe)."""
    runs: str = str(RUNS)
    """Where run folders go."""
    data: str = ""
    """Collection folder (default: ``data/<run name>``)."""
    workers: int = 0
    """Game processes (0: one per core this process may run on)."""
    cluster: str = "local"
    """Where the game workers of reference laps, collect, evolve and evaluate run: ``local`` (processes on this
    machine), ``ray`` (join the running Ray cluster of ``RAY_ADDRESS`` or ``ray start``), ``ray-local`` (start a
    private Ray here) or a Ray address (``HOST:6379``, ``ray://HOST:10001``); on Ray, ``--workers 0`` is one worker
    per CPU of the cluster. Training and play stay on this machine."""
    seed: int = 0
    """Seed of collection, training, DAgger, CMA-ES and the teacher-free rounds: another seed is another run of the
    same recipe (its run and data folders get ``-seed<N>``); the final evaluation keeps its seeds, so that runs
    are compared on the same races."""
    force: bool = False
    """Start every stage over even if the run folder holds work made with another config."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"workers", "runs", "cluster", "rounds", "until_laps"})

    def validate(self) -> None:
        check_non_negative(workers=self.workers, rounds=self.rounds)
        if self.keep not in ("best", "mean"):
            raise ValueError(f"--keep must be best or mean, got {self.keep!r}")
        if self.keep != "best" and not self.teacher_free:
            raise ValueError("--keep is the teacher-free recipe's (vmc.iterate --keep): use it with --teacher-free")
        if self.reward != "best" and not self.teacher_free:
            raise ValueError("--reward is the teacher-free recipe's (what its MDN-RNN learns): use it with --teacher-free")
        if self.fitness not in ("races", "short"):
            raise ValueError(f"--fitness must be races or short, got {self.fitness!r}")
        if self.fitness != "races" and not self.teacher_free:
            raise ValueError("--fitness is the teacher-free recipe's (its CMA-ES in the dream): use it with --teacher-free")
        if self.dream_noise is not None and not self.teacher_free:
            raise ValueError("--dream-noise is the teacher-free recipe's (its CMA-ES in the dream): use it with --teacher-free")
        check_non_negative(dream_noise=self.dream_noise or 0.0)
        if self.dream_done != "head" and not self.teacher_free:
            raise ValueError("--dream-done is the teacher-free recipe's (its CMA-ES in the dream): use it with --teacher-free")
        if (self.collect_noise is not None or self.collect_correlation) and not self.teacher_free:
            raise ValueError("--collect-noise and --collect-correlation are the teacher-free recipe's (its rounds' "
                             "collections): use them with --teacher-free")
        check_non_negative(collect_noise=self.collect_noise or 0.0)
        check_correlation(collect_correlation=self.collect_correlation)
        if self.until_laps and not self.teacher_free:
            raise ValueError("--until-laps is the teacher-free recipe's (when its rounds stop): use it with --teacher-free")
        if not 0 <= self.until_laps <= self.sizes.dream.eval_seeds:
            raise ValueError(f"--until-laps must be between 0 and the {self.preset} preset's "
                             f"{self.sizes.dream.eval_seeds} evaluation races a course, got {self.until_laps}")
        if self.rounds and not self.teacher_free:
            raise ValueError("--rounds is the teacher-free recipe's (vmc.iterate --rounds): use it with --teacher-free")
        check_non_negative(episodes=self.episodes)
        check_cluster(self.cluster)
        for t in self.training_tracks:
            check_track(t)

    @property
    def sizes(self) -> Preset:
        p = PRESETS[self.preset]
        return replace(p, episodes=self.episodes) if self.episodes else p

    @property
    def training_tracks(self) -> list[str]:
        return list(self.sizes.tracks) or list(self.tracks)

    @property
    def courses(self) -> list[str]:
        """What collection and the controller train on: the training tracks, and each one reversed with the
        preset's ``reverse``."""
        return self.training_tracks + ([t + REVERSE for t in self.training_tracks] if self.sizes.reverse else [])

    @property
    def run(self) -> Path:
        return Path(self.runs) / (self.name or run_name(self.training_tracks, self.preset)
                                  + ("-teacher-free" if self.teacher_free else "") + ("-signed" if self.reward == "signed" else "")
                                  + ("-short" if self.fitness == "short" else "")
                                  + (f"-dream-noise{self.dream_noise:g}" if self.dream_noise is not None else "")
                                  + (f"-dream-done-{self.dream_done}" if self.dream_done != "head" else "")
                                  + (f"-collect-noise{self.collect_noise:g}" if self.collect_noise is not None else "")
                                  + (f"-corr{self.collect_correlation:g}" if self.collect_correlation else "")
                                  + (f"-episodes{self.episodes}" if self.episodes else "")
                                  + (f"-seed{self.seed}" if self.seed else ""))

    @property
    def data_path(self) -> Path:
        return Path(self.data) if self.data else Path("data") / self.run.name

    def iterate_config(self, workers: int) -> IterateConfig:
        """The teacher-free recipe's rounds (``vmc.iterate``) on this config's preset, run and data folders."""
        from vmc.iterate import IterateConfig

        p, short = self.sizes, self.fitness == "short"
        d = p.dream
        return IterateConfig(
            run=str(self.run), rounds=self.rounds or d.rounds, data=str(self.data_path), start="zeros",
            tracks=self.courses, workers=workers, cluster=self.cluster, episodes=d.episodes, episode_steps=p.race_steps,
            mdn_epochs=d.mdn_epochs, mdn_steps=d.mdn_steps, mdn_seq_len=min(32, p.max_steps // 2),
            done_weight=d.done_weight, popsize=d.popsize, vae_epochs=d.vae_epochs,
            rollouts=d.short_rollouts if short else d.rollouts, generations=d.generations,
            dream_steps=d.short_steps if short else d.dream_steps, race_start=0.0 if short else IterateConfig.race_start,
            eval_seeds=d.eval_seeds, max_steps=p.race_steps, keep=self.keep, reward=self.reward, seed=self.seed,
            dream_noise=self.dream_noise, dream_done=self.dream_done, collect_noise=self.collect_noise,
            collect_correlation=self.collect_correlation, until_laps=self.until_laps, force=self.force)


def stage(name: str) -> None:
    print(f"\n=== {name} ===", flush=True)


def reference_laps(tracks: list[str], run: Path, workers: int, cluster: str = "local") -> dict:
    """One lap per reference driver and track (``vmc.evaluate.reference_laps``), a strip of frames per track
    (``reference_strip.png``: centre-line driver over game AI, tracks one below the other); scores."""
    from PIL import Image

    from vmc.evaluate import reference_laps as laps
    from vmc.racing import racing_pool
    from vmc.sim.env import EnvConfig
    from vmc.video import frame_strip

    cached = run / "references.json"
    if cached.exists():
        return json.loads(cached.read_text())
    with racing_pool(min(workers, 2 * len(tracks)), None, EnvConfig(), name="vmc-reference", cluster=cluster) as pool:
        res = laps(pool, tracks, record=True)
    strips = [frame_strip(res[t][d].frames, 12) for t in tracks for d in ("centreline", "ai")]
    Image.fromarray(np.concatenate(strips, axis=0)).save(run / "reference_strip.png")
    rows = {t: {d: {"score": r.score, "steps": r.steps, "end": r.end} for d, r in res[t].items()} for t in tracks}
    print(f"{'track':<20} {'driver':<11} {'score':>7} {'steps':>6} {'end':>9}")
    for t, by in rows.items():
        for d, r in by.items():
            print(f"{t:<20} {d:<11} {r['score']:7.1f} {r['steps']:6d} {str(r['end']):>9}")
    cached.write_text(json.dumps(rows, indent=2))
    return rows


def run_main(cfg: MainConfig) -> dict:
    """The pipeline; returns the summary (also in ``summary.json``)."""
    from vmc import evolve, iterate, train_mdn, train_vae
    from vmc.collect import CollectConfig, Collector
    from vmc.evaluate import EvaluateConfig, evaluate
    from vmc.models import VAEConfig
    from vmc.play import play

    p, tracks, courses, run, data = cfg.sizes, cfg.training_tracks, cfg.courses, cfg.run, cfg.data_path
    workers = cfg.workers or default_workers(cfg.cluster)
    write_config(run, cfg.record(), cfg.RESUME_FREE, cfg.force, cfg.defaults())
    records.text(run, "config/main", cfg.record())
    handler = logging.FileHandler(run / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    print(f"run folder {run}, data {data}, tracks {' '.join(courses)}, preset {cfg.preset}, {workers} workers")

    stage("1/6 reference laps")
    t0 = time.perf_counter()
    refs = reference_laps(tracks, run, workers, cfg.cluster)
    timings["reference"] = time.perf_counter() - t0

    stage("2/6 collect")
    t0 = time.perf_counter()
    m = Collector(CollectConfig(out=str(data), tracks=courses, episodes=p.episodes, workers=workers, cluster=cfg.cluster,
                                max_steps=p.max_steps, policy="brownian" if cfg.teacher_free else "mix",
                                seed=cfg.seed * SEED_STRIDE, reward=cfg.reward)).run(record_to=run)
    print(f"{m['episodes']} episodes, {m['steps']} steps in {data}")
    timings["collect"] = time.perf_counter() - t0

    stage("3/6 train_vae")
    t0 = time.perf_counter()
    teacher = 0.0 if cfg.teacher_free else p.teacher_weight
    vae_cfg = train_vae.TrainVAEConfig(data=str(data), run=str(run), epochs=p.vae_epochs, force=cfg.force, seed=cfg.seed,
                                       teacher_weight=teacher, model=VAEConfig(teacher_outputs=3 if teacher else 0),
                                       resume=(run / "vae.last.pt").exists() and not cfg.force)
    train_vae.train(vae_cfg)
    train_vae.encode(vae_cfg)
    timings["train_vae"] = time.perf_counter() - t0

    stage("4/6 train_mdn")
    t0 = time.perf_counter()
    mdn_cfg = train_mdn.TrainMDNConfig(run=str(run), epochs=p.mdn_epochs, steps_per_epoch=p.mdn_steps,
                                       seq_len=min(32, p.max_steps // 2), force=cfg.force, seed=cfg.seed,
                                       done_weight=p.dream.done_weight if cfg.teacher_free else 1.0,
                                       resume=(run / "mdn.last.pt").exists() and not cfg.force)
    train_mdn.train(mdn_cfg)
    if cfg.force or not (run / "dream.mp4").exists() or (run / "dream.mp4").stat().st_mtime < mdn_cfg.out.stat().st_mtime:
        train_mdn.dream_video(mdn_cfg.vae_path, mdn_cfg.out, mdn_cfg.latents_path, run / "dream.mp4", steps=100)
    timings["train_mdn"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if cfg.teacher_free:
        stage("5/6 iterate (teacher-free: CMA-ES in the dream, rounds of the controller's own races)")
        rounds = iterate.iterate(cfg.iterate_config(workers))
        iterate.print_table(rounds)
        best, fitness = Path(rounds[-1]["controller"]), rounds[-1]["dream"]
    else:
        stage("5/6 evolve")
        ev_cfg = evolve.EvolveConfig(run=str(run), tracks=courses, workers=workers, cluster=cfg.cluster, popsize=p.popsize,
                                     rollouts=p.rollouts, generations=p.generations, max_steps=p.race_steps,
                                     eval_every=max(1, p.generations // 3), eval_rollouts=4, dagger_rounds=p.dagger_rounds,
                                     dagger_episodes=p.dagger_episodes, dagger_perturb=p.dagger_perturb,
                                     dagger_recover=p.dagger_recover, controller_hidden=p.controller_hidden,
                                     controller_still=p.controller_still,
                                     tracks_per_generation=p.tracks_per_generation, seed=cfg.seed,
                                     force=cfg.force, resume=(run / "controller" / "evolve.pt").exists() and not cfg.force)
        best, fitness = ev_cfg.out / "best.pt", evolve.evolve(ev_cfg)["best_fitness"]
    timings["evolve"] = time.perf_counter() - t0

    stage("6/6 play")
    t0 = time.perf_counter()
    video, played = run / "best_lap.mp4", run / "best_lap.json"
    lap = json.loads(played.read_text()) if video.exists() and played.exists() and not cfg.force else None
    # Played again when the controller is another (a teacher-free run looked at with fewer --rounds) or newer.
    if lap is None or lap.get("controller") != str(best) or video.stat().st_mtime < best.stat().st_mtime:
        lap = play(best, video, track=tracks[0])
    timings["play"] = time.perf_counter() - t0

    rows = None
    if p.held_out:
        stage("7/7 evaluate")
        t0 = time.perf_counter()
        rows = evaluate(EvaluateConfig(controller=str(best), tracks=tracks + list(p.held_out), episodes=p.eval_episodes,
                                       workers=workers, cluster=cfg.cluster, out=str(run / "eval")))
        timings["evaluate"] = time.perf_counter() - t0

    stage("summary")
    wall = time.perf_counter() - t_all
    first = refs[tracks[0]]
    print(f"run {run}: tracks {' '.join(tracks)}, preset {cfg.preset}, {workers} workers, {wall:.0f} s in all")
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"{tracks[0]}: centre-line driver {first['centreline']['score']:.1f}, game AI {first['ai']['score']:.1f}, "
          f"evolved controller {lap['score']:.1f} ({lap['end']} after {lap['steps']} steps; best fitness "
          f"{fitness:.1f})")
    print(f"wrote {video}, {run / 'dream.mp4'}, {run / 'reference_strip.png'}")
    result = {"timings": timings, "wall_s": wall, "references": refs, "lap": lap, "preset": cfg.preset, "workers": workers,
              "evaluation": rows}
    (run / "summary.json").write_text(json.dumps(result, indent=2))
    records.scalars(run, "summary/seconds", timings, 0)
    records.hparams(run, cfg.record(), {"summary/lap_score": lap["score"], "summary/lap_steps": lap["steps"],
                                        "summary/best_fitness": fitness, "summary/wall_s": wall})
    records.close(run)
    from vmc.report import write_report

    print(f"wrote {write_report(run)}")
    return result


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(MainConfig, argv, "python -m vmc.main")
    return cli.run("vmc.main", lambda: run_main(cfg) and None)


if __name__ == "__main__":
    raise SystemExit(main())
