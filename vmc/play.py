"""``python -m vmc.play``: render the evolved controller's lap for people to watch.

The controller sees what it was trained on (64x64 frames) in one game process; a second game process
at a watchable size (400x300 by default) replays the same actions. The game is deterministic and its
physics do not depend on the resolution, so both drive the same lap (checked step by step). Frames
get a small overlay (score, lap time, speed) and go to an MP4; the score goes to a JSON file beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from vmc.training import CheckpointError, load_checkpoint

log = logging.getLogger("vmc.play")


def load_agent(path: Path):
    """The :class:`vmc.models.controller.WorldModelAgent` of a controller checkpoint (with its VAE and MDN-RNN)."""
    from vmc.models.controller import LinearController, WorldModelAgent
    from vmc.train_mdn import load_mdn
    from vmc.train_vae import load_vae

    ck = load_checkpoint(Path(path), "controller")
    vae, mdn = load_vae(Path(ck["vae"])), load_mdn(Path(ck["mdn"]))
    controller = LinearController(ck["z_dim"], ck["h_dim"])
    controller.set_flat(ck["params"])
    return WorldModelAgent(vae, mdn, controller)


def _setup_driver(ckpt_path: str, env_config: dict):
    """Worker: the controller at 64x64. ``run(seed) -> dict`` with the actions and per-step state."""
    import torch

    from vmc.env import EnvConfig, SuperTuxKartEnv

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
    from vmc.env import EnvConfig, SuperTuxKartEnv

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


def overlay(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` in a dark band at the top (PIL's default font)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(frame)
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, im.width, 16], fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def play(controller: Path, out: Path, width: int = 400, height: int = 300, seed: Optional[int] = None,
         renderer: str = "llvmpipe") -> dict:
    """Drive, replay at ``width`` x ``height``, write ``out`` (mp4) and ``out`` .json; returns the summary."""
    from vmc.env import EnvConfig
    from vmc.pool import GamePool
    from vmc.video import write_video

    ck = load_checkpoint(controller, "controller")
    base = EnvConfig(track=ck["track"], renderer=renderer, max_steps=ck["max_steps"])
    with GamePool(1, _setup_driver, (str(controller), asdict(base)), name="vmc-play-driver") as pool:
        (drive,) = pool.map([seed])
    big = asdict(EnvConfig(**{**asdict(base), "width": width, "height": height, "max_steps": len(drive["actions"])}))
    with GamePool(1, _setup_camera, (big,), name="vmc-play-camera") as pool:
        (film,) = pool.map([drive["actions"]])
    replay_distance = np.array([i["distance"] for i in film["infos"][1:]])
    n = min(len(replay_distance), len(drive["distance"]))
    drift = float(np.abs(replay_distance[:n] - drive["distance"][:n]).max()) if n else 0.0
    if drift > 1.0:
        log.warning("the %dx%d replay drifted %.1f m from the 64x64 race; the video may differ from the scored lap",
                    width, height, drift)
    frames = [overlay(f, f"score {i['score']:6.1f}  time {i['lap_time']:5.1f} s  speed {i['speed'] * 3.6:5.1f} km/h")
              for f, i in zip(film["frames"], [{"score": 0.0, "lap_time": 0.0, "speed": 0.0, **film["infos"][0]}] + film["infos"][1:])]
    write_video(out, frames, fps=10)
    summary = {"track": ck["track"], "score": drive["score"], "steps": drive["steps"], "end": drive["end"],
               "lap_time": drive["lap_time"], "replay_drift_m": drift, "video": str(out), "controller": str(controller)}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    p = argparse.ArgumentParser(prog="python -m vmc.play", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--controller", default="checkpoints/controller/best.pt")
    p.add_argument("--out", default="best_lap.mp4")
    p.add_argument("--width", type=int, default=400)
    p.add_argument("--height", type=int, default=300)
    p.add_argument("--seed", type=int, default=None, help="rollout seed (default: no action noise)")
    p.add_argument("--renderer", default="llvmpipe")
    a = p.parse_args(argv)
    try:
        s = play(Path(a.controller), Path(a.out), a.width, a.height, a.seed, a.renderer)
    except CheckpointError as err:
        print(f"vmc.play: error: {err}", file=sys.stderr)
        return 1
    print(f"{s['track']}: score {s['score']:.1f} in {s['steps']} steps ({s['end']}); wrote {s['video']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
