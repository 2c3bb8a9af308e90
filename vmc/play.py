"""``python -m vmc.play``: render the evolved controller's lap for people to watch.

The controller sees what it was trained on (64x64 frames) in one game process; a second game process
at a watchable size (400x300 by default) replays the same actions. The game is deterministic and its
physics do not depend on the resolution, so both drive the same lap (checked step by step). Frames
get a small overlay (score, lap time, speed) and go to an MP4; the score goes to a JSON file beside it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vmc import cli
from vmc.checkpoints import load_agent, load_controller
from vmc.cli import Config
from vmc.sim.env import EnvConfig, check_track

log = logging.getLogger("vmc.play")


@dataclass
class PlayConfig(Config):
    """Render a controller's lap for people to watch."""

    controller: str = "runs/lighthouse-small/controller/best.pt"
    """Controller checkpoint (it carries its VAE and MDN-RNN)."""
    out: str = ""
    """Video file (default: ``best_lap.mp4`` in the controller's run folder); a JSON summary goes beside it."""
    track: str = ""
    """Track (default: the controller's first training track)."""
    width: int = 400
    """Width of the replay in pixels."""
    height: int = 300
    """Height of the replay in pixels."""
    seed: Optional[int] = None
    """Seed of the action noise (default: no noise)."""
    renderer: str = "llvmpipe"
    """Renderer of both games."""

    def validate(self) -> None:
        if self.track:
            check_track(self.track)
        EnvConfig(width=self.width, height=self.height, renderer=self.renderer)  # checks size and renderer

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.controller).parent.parent / "best_lap.mp4"


def _setup_driver(ckpt_path: str, env_config: dict):
    """Worker: the controller at 64x64. ``run(seed) -> dict`` with the actions and per-step state."""
    import torch

    from vmc.sim.env import SuperTuxKartEnv

    agent = load_agent(Path(ckpt_path))
    env = SuperTuxKartEnv(config=EnvConfig(**env_config))

    def run(seed: Optional[int]) -> dict:
        obs, info = env.reset(seed=seed)
        agent.reset()
        actions, distance = [], []
        with torch.no_grad():
            while True:
                a = agent.act(obs)
                obs, _, terminated, truncated, info = env.step(a)
                actions.append(a)
                distance.append(info["distance"])
                if terminated or truncated:
                    break
        return {"actions": np.stack(actions), "distance": np.array(distance), "score": info["score"],
                "steps": info["steps"], "end": info["end"], "lap_time": info["lap_time"]}

    return run


def _setup_camera(env_config: dict):
    """Worker: the same race at a watchable size, replaying actions. ``run(actions) -> dict``."""
    from vmc.sim.env import SuperTuxKartEnv

    env = SuperTuxKartEnv(config=EnvConfig(**env_config))

    def run(actions: np.ndarray) -> dict:
        obs, info = env.reset(seed=0)
        frames, infos = [obs], [info]
        for a in actions:
            obs, _, terminated, truncated, info = env.step(a)
            frames.append(obs)
            infos.append({k: info[k] for k in ("score", "lap_time", "speed", "distance")})
            if terminated or truncated:
                break
        return {"frames": frames, "infos": infos}

    return run


def drive_and_film(controller: Path, track: str, renderer: str, max_steps: int, seed: Optional[int], width: int,
                   height: int) -> tuple[dict, dict]:
    """The controller's race at 64x64 (actions, per-step distance, score) and its replay at ``width`` x ``height``
    (frames and per-step info), each in a game process of its own."""
    from vmc.workers import watched_pool

    base = EnvConfig(track=track, renderer=renderer, max_steps=max_steps)
    with watched_pool("local", 1, _setup_driver, (str(controller), asdict(base)), name="vmc-play-driver") as pool:
        (drive,) = pool.map([seed])
    big = asdict(EnvConfig(**{**asdict(base), "width": width, "height": height, "max_steps": len(drive["actions"])}))
    with watched_pool("local", 1, _setup_camera, (big,), name="vmc-play-camera") as pool:
        (film,) = pool.map([drive["actions"]])
    return drive, film


def play(controller: Path, out: Path, width: int = 400, height: int = 300, seed: Optional[int] = None,
         renderer: str = "llvmpipe", track: str = "") -> dict:
    """Drive, replay at ``width`` x ``height``, write ``out`` (mp4) and ``out`` .json; returns the summary."""
    from vmc.video import label, write_video

    ck, _ = load_controller(controller)
    track = track or ck["track"]
    drive, film = drive_and_film(controller, track, renderer, ck["max_steps"], seed, width, height)
    replay_distance = np.array([i["distance"] for i in film["infos"][1:]])
    n = min(len(replay_distance), len(drive["distance"]))
    drift = float(np.abs(replay_distance[:n] - drive["distance"][:n]).max()) if n else 0.0
    if drift > 1.0:
        log.warning("the %dx%d replay drifted %.1f m from the 64x64 race; the video may differ from the scored lap",
                    width, height, drift)
    frames = [label(f, f"score {i['score']:6.1f}  time {i['lap_time']:5.1f} s  speed {i['speed'] * 3.6:5.1f} km/h")
              for f, i in zip(film["frames"], [{"score": 0.0, "lap_time": 0.0, "speed": 0.0, **film["infos"][0]}] + film["infos"][1:])]
    write_video(out, frames, fps=10)
    summary = {"track": track, "score": drive["score"], "steps": drive["steps"], "end": drive["end"],
               "lap_time": drive["lap_time"], "replay_drift_m": drift, "video": str(out), "controller": str(controller)}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    cli.setup_logging()
    cfg = cli.parse(PlayConfig, argv, "python -m vmc.play")

    def body() -> None:
        s = play(Path(cfg.controller), cfg.out_path, cfg.width, cfg.height, cfg.seed, cfg.renderer, cfg.track)
        print(f"{s['track']}: score {s['score']:.1f} in {s['steps']} steps ({s['end']}); wrote {s['video']}")

    return cli.run("vmc.play", body)


if __name__ == "__main__":
    raise SystemExit(main())
