"""Frames to pictures for people: PNG strips and MP4 files (through imageio's ffmpeg plugin)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def frame_strip(frames: Sequence[np.ndarray], n: int) -> np.ndarray:
    """(H, n*W, 3) uint8: ``n`` frames evenly spaced over ``frames`` (each (H, W, 3)), side by side."""
    if not frames:
        raise ValueError("no frames")
    idx = np.linspace(0, len(frames) - 1, num=min(n, len(frames))).round().astype(int)
    return np.concatenate([frames[i] for i in idx], axis=1)


def label(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` in a dark band at the top (PIL's default font)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(frame)
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, im.width, 16], fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 10, scale: int = 1) -> Path:
    """Write (H, W, 3) uint8 frames to an H.264 MP4, each pixel blown up ``scale`` times (nearest)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    # macro_block_size=1: odd sizes need no padding (imageio writes yuv420p, which every player shows).
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8) as writer:
        for f in frames:
            if scale > 1:
                f = np.repeat(np.repeat(f, scale, axis=0), scale, axis=1)
            writer.append_data(np.ascontiguousarray(f))
    tmp.replace(path)  # a reader never sees a half-written video
    return path
