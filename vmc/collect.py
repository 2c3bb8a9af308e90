"""``python -m vmc.collect``: record driving episodes from parallel game processes to HDF5 shards.

Episode ``i`` of a collection is fully determined by the command: its track is ``tracks[i % n]``,
its seed ``seed + i``, its policy ``--policy``. Each worker process runs one long-lived game and
writes its own shard; the parent shows one progress bar, replaces workers that die or hang, and
writes ``manifest.json``. Re-running the same command continues up to ``--episodes`` (episodes on
disk are never recollected); Ctrl-C lets the episodes in progress finish and be written, a second
Ctrl-C abandons them (an episode is never half-written: see ``vmc.data.write_episode``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

import vmc
from vmc import cli, records
from vmc.cli import Config, check_positive
from vmc.cluster import check_cluster
from vmc.data import Episode, read_shard_index, shard_paths, write_episode, write_manifest
from vmc.errors import ShardError
from vmc.policies import POLICIES, make_policy
from vmc.pool import default_workers
from vmc.runs import check_resume
from vmc.sim.env import EnvConfig, check_track
from vmc.workers import watched_pool

log = logging.getLogger("vmc.collect")


@dataclass
class CollectConfig(Config):
    """Record driving episodes from parallel game processes to HDF5 shards."""

    out: str = "data/lighthouse"
    """Collection folder (shards + manifest.json)."""
    tracks: list[str] = field(default_factory=lambda: ["lighthouse"])
    """Tracks, used round-robin by episode index."""
    episodes: int = 200
    """Total episodes wanted in the folder (a re-run continues up to this count)."""
    workers: int = 0
    """Game processes at once (0: one per core this process may run on, or per CPU of the Ray cluster)."""
    cluster: str = "local"
    """Where the game workers run: ``local`` (processes on this machine), ``ray`` (join the running Ray cluster of
    ``RAY_ADDRESS`` or ``ray start``), ``ray-local`` (start a private Ray here) or a Ray address (``HOST:6379``,
    ``ray://HOST:10001``). On Ray, episodes come back to this process and go into its own shard."""
    policy: str = "mix"
    """Driving policy: ``mix`` (noisy centre-line driving with random spells), ``brownian`` (correlated random
    actions), ``centreline`` (noisy centre-line follower), ``ai`` (the game's AI) or ``controller`` (a trained
    controller, ``--controller``, with exploration noise)."""
    controller: str = ""
    """Controller checkpoint of the ``controller`` policy."""
    controller_noise: float = 0.1
    """Exploration noise (std on steering and throttle) of the ``controller`` policy."""
    controller_correlation: float = 0.0
    """That noise's correlation from one step to the next, in [0, 1): an AR(1) process with the same std (0.9 holds a
    deviation for about 10 steps, long enough to move the kart, where independent draws average out; 0: independent)."""
    seed: int = 0
    """Episode i is driven with seed ``seed + i``."""
    max_steps: int = 1000
    """Step limit per episode (truncation)."""
    renderer: str = "llvmpipe"
    """Renderer of the worker games."""
    reward: str = "best"
    """The reward recorded (``EnvConfig.reward``): ``best``, the lap's new best progress; ``signed``, the change of
    its progress, negative where a rescue takes the kart back."""
    size: int = 64
    """Frame width and height in pixels."""
    depth: bool = False
    """Also record each frame's depth buffer (``EnvConfig.depth``; the shards' ``depth``), a target for vision's
    auxiliary losses."""
    episode_timeout: float = 900.0
    """Seconds without news from a worker's episode before it is considered hung and replaced."""

    # A collection may grow with another controller (the iterative procedure's rounds): each episode records its own.
    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"episodes", "workers", "episode_timeout", "out", "cluster",
                                                       "controller"})

    def validate(self) -> None:
        check_positive(episodes=self.episodes, max_steps=self.max_steps)
        cli.check_non_negative(workers=self.workers, controller_noise=self.controller_noise)
        cli.check_correlation(controller_correlation=self.controller_correlation)
        check_cluster(self.cluster)
        if not self.tracks:
            raise ValueError("--tracks needs at least one track")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.policy == "controller" and not Path(self.controller).is_file():
            raise ValueError(f"--policy controller needs --controller CHECKPOINT (got {self.controller!r}: no such file)")
        for t in self.tracks:
            check_track(t)
        env_config_for(self, self.tracks[0])  # validates renderer and size before any process starts


def env_config_for(cfg: CollectConfig, track: str) -> EnvConfig:
    """The env a worker drives for an episode on ``track``."""
    return EnvConfig(track=track, width=cfg.size, height=cfg.size, renderer=cfg.renderer, max_steps=cfg.max_steps,
                     controller="ai" if cfg.policy == "ai" else "player", reward=cfg.reward, depth=cfg.depth)


def record_episode(env, policy_name: str, seed: int, index: int, controller: str = "", noise: float = 0.1,
                   correlation: float = 0.0) -> Episode:
    """Drive one episode and return it in memory."""
    policy = make_policy(policy_name, controller, noise, correlation)
    obs, info = env.reset(seed=seed)
    policy.reset(env.track, seed)
    frames, actions, rewards, terms, truncs, experts, roads = [obs], [], [], [], [], [], []
    dist, off, speed = [info["distance"]], [info["off_track"]], [info["speed"]]
    depth = [info["depth"]] if "depth" in info else None
    while True:
        action = policy.act(obs, info)
        experts.append(getattr(policy, "expert", None))  # the centre-line driver's own action, where it drives
        roads.append(getattr(policy, "expert_road", None))
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)
        actions.append(info["action"])  # what the kart did (the AI's own action under controller='ai')
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        dist.append(info["distance"])
        off.append(info["off_track"])
        speed.append(info["speed"])
        if depth is not None:
            depth.append(info["depth"])
        if terminated or truncated:
            break
    return Episode(
        observations=np.stack(frames), actions=np.asarray(actions, np.float32), rewards=np.asarray(rewards, np.float32),
        terminations=np.asarray(terms, bool), truncations=np.asarray(truncs, bool), distance=np.asarray(dist, np.float32),
        off_track=np.asarray(off, bool), speed=np.asarray(speed, np.float32),
        expert_actions=None if any(e is None for e in experts) else np.asarray(experts, np.float32),
        road_angles=None if any(r is None for r in roads) else np.asarray(roads, np.float32),
        depth=None if depth is None else np.stack(depth),
        attrs={"track": env.config.track, "policy": policy_name, "seed": seed, "index": index,
               **({"controller": controller} if policy_name == "controller" else {}),
               "score": float(info["score"]), "end": str(info["end"])},
    )


def _setup_collector(cfg: CollectConfig, shard_prefix: Optional[str], controller: Optional[bytes] = None):
    """Worker set-up (one game per process); returns ``run((index, track, seed)) -> (index, steps, score)``, the
    episode written to the worker's own shard; without ``shard_prefix`` (on Ray) the episode is returned as a fourth
    item, for the parent to write. ``controller``: the controller checkpoint's bytes (on Ray, where the parent's
    path may not exist), kept in a file of the worker's own."""
    if controller is not None:
        import copy
        import tempfile

        fd, path = tempfile.mkstemp(prefix="vmc-controller-", suffix=".pt")
        with os.fdopen(fd, "wb") as f:
            f.write(controller)
        cfg = copy.copy(cfg)
        cfg.controller = path
    from vmc.sim.env import env_for

    shard = Path(f"{shard_prefix}-p{os.getpid()}.h5") if shard_prefix else None  # one shard per worker process
    env = None

    def run(task: tuple[int, str, int]) -> tuple:
        nonlocal env
        index, track, seed = task
        env = env_for(env, env_config_for(cfg, track))
        episode = record_episode(env, cfg.policy, seed, index, cfg.controller, cfg.controller_noise,
                                 cfg.controller_correlation)
        if shard is None:
            return index, episode.length, float(episode.attrs["score"]), episode
        write_episode(shard, episode)
        log.debug("wrote episode %d (%s, %d steps, score %.1f) to %s", index, track, episode.length,
                  episode.attrs["score"], shard.name)
        return index, episode.length, float(episode.attrs["score"])

    return run


class Collector:
    """The parent: plans episodes, runs them on a pool of game workers (:func:`vmc.workers.watched_pool`: their log
    records reach this process's log), writes the manifest."""

    def __init__(self, cfg: CollectConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.run_id = time.strftime("%Y%m%dT%H%M%S")

    def done_indices(self) -> set[int]:
        """Episode indices already complete on disk; corrupt shards are set aside, named, and redone."""
        done: set[int] = set()
        for path in shard_paths(self.out):
            try:
                done.update(r.index for r in read_shard_index(path))
            except ShardError as err:
                aside = path.with_suffix(".h5.corrupt")
                path.rename(aside)
                log.error("%s; moved to %s and its episodes will be collected again", err, aside.name)
        return done

    def manifest_extra(self) -> dict:
        return {"vmc_version": vmc.__version__, "collect_config": self.cfg.record(),
                "env_config": {t: asdict(env_config_for(self.cfg, t)) for t in self.cfg.tracks}}

    def run(self, progress: bool = True, record_to: Optional[Path] = None) -> dict:
        """Collect until ``episodes`` are on disk (or Ctrl-C); returns the manifest dict. ``record_to``: a run folder
        for TensorBoard records of the collection's speed (``vmc.records``)."""
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = self.out / "manifest.json"
        if manifest.exists():  # a collection goes on only with the same episodes: same policy, tracks, sizes...
            try:
                old = json.loads(manifest.read_text()).get("collect_config", {})
            except json.JSONDecodeError:
                old = None
                log.warning("%s is corrupt; it will be written again", manifest)
            if old is not None:
                check_resume(manifest, old, cfg.record(), cfg.RESUME_FREE, cfg.defaults())
        done = self.done_indices()
        todo = [i for i in range(cfg.episodes) if i not in done]
        if not todo:
            log.info("%s already holds %d episodes; nothing to do", self.out, cfg.episodes)
            write_manifest(self.out, self.manifest_extra())
            return self._manifest()
        workers = min(cfg.workers or default_workers(cfg.cluster), len(todo))
        log.info("collecting %d episodes (%d already on disk) with %d workers%s into %s", len(todo), len(done), workers,
                 "" if cfg.cluster == "local" else f" on Ray ({cfg.cluster})", self.out)

        tasks = [(i, cfg.tracks[i % len(cfg.tracks)], cfg.seed + i) for i in todo]
        steps, t0 = 0, time.monotonic()
        bar = tqdm(total=cfg.episodes, initial=len(done), unit="ep", disable=not progress, dynamic_ncols=True)
        interrupts = []

        def on_sigint(signum, frame):
            interrupts.append(time.monotonic())
            if len(interrupts) > 1:
                raise KeyboardInterrupt
            log.warning("interrupted: finishing the episodes in progress (Ctrl-C again to abandon them)")

        def on_result(_: int, result: tuple) -> None:
            nonlocal steps
            if len(result) == 4:  # from Ray: written here, into this run's own shard (atomically, as workers do)
                write_episode(self.out / f"shard-{self.run_id}-ray.h5", result[3])
            steps += result[1]
            bar.update(1)
            records.scalars(record_to, "collect", {"frames_per_s": steps / (time.monotonic() - t0), "score": result[2],
                                                   "episode_steps": result[1]}, steps)  # x axis: frames so far
            bar.set_postfix(frames_per_s=f"{steps / (time.monotonic() - t0):.1f}", score=f"{result[2]:.0f}")

        previous = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
        if cfg.cluster == "local":
            args = (cfg, str(self.out / f"shard-{self.run_id}"))
        else:  # Ray actors get no local path: the controller goes as bytes, episodes come back
            args = (cfg, None, Path(cfg.controller).read_bytes() if cfg.policy == "controller" else None)
        pool = watched_pool(cfg.cluster, workers, _setup_collector, args, cfg.episode_timeout, name="vmc-collect-worker",
                            progress=False)  # the episodes' bar above counts the work
        try:
            with logging_redirect_tqdm():
                pool.map(tasks, on_result=on_result, stop=lambda: bool(interrupts))
        finally:
            pool.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            bar.close()
        interrupted = bool(interrupts)
        manifest = write_manifest(self.out, self.manifest_extra())
        m = self._manifest()
        elapsed = time.monotonic() - t0
        records.scalars(record_to, "collect/run", {"frames_per_s": steps / max(elapsed, 1e-9), "steps": steps, "seconds": elapsed}, 0)
        log.info("%s: %d episodes, %d steps on disk; this run %d steps in %.0f s (%.1f frames/s)%s", manifest,
                 m["episodes"], m["steps"], steps, elapsed, steps / max(elapsed, 1e-9),
                 "; run the same command again to continue" if interrupted else "")
        return m

    def _manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(CollectConfig, argv, "python -m vmc.collect")
    return cli.run("vmc.collect", lambda: Collector(cfg).run() and None)


if __name__ == "__main__":
    raise SystemExit(main())
