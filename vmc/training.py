"""What the training stages share: device choice, checkpoints on disk, loss curves, prefetching."""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch

import vmc


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or of the wrong kind; the message names the file."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; or an explicit torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_all_cores(threads: int = 0) -> int:
    """Intra-op threads for CPU training (0: one per core); returns the number set."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {k: _plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_checkpoint(path: Path, kind: str, payload: dict, config: Any) -> None:
    """Write ``payload`` (state dicts, epoch, history...) atomically, with ``kind``, the resolved config
    and the package version inside, and the same config as JSON beside it (``<name>.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "vmc_version": vmc.__version__, "config": _plain(config)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**payload, **meta}, tmp)
    tmp.replace(path)
    side = path.with_suffix(".json")
    side.with_name(side.name + ".tmp").write_text(json.dumps({**meta, "checkpoint": path.name}, indent=2))
    side.with_name(side.name + ".tmp").replace(side)


def load_checkpoint(path: Path, kind: str, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a {kind} checkpoint (found {found!r})")
    return ckpt


def plot_curves(path: Path, history: list[dict], keys: Iterable[str], title: str) -> None:
    """Loss curves (one line per key, by epoch) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    for k in keys:
        ax.plot(epochs, [h[k] for h in history], marker="o", label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prefetch(it: Iterable, depth: int = 4) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead, so that reading and decompressing
    batches overlaps the model's compute (h5py and torch release the GIL for their heavy parts)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    error: list[BaseException] = []

    def run() -> None:
        try:
            for item in it:
                q.put(item)
        except BaseException as err:  # surfaced in the consumer
            error.append(err)
        finally:
            q.put(done)

    threading.Thread(target=run, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            if error:
                raise error[0]
            return
        yield item


def last_checkpoint(out: Path) -> Path:
    """``<name>.last.pt`` beside the best checkpoint ``<name>.pt``: the run to resume."""
    return out.with_name(out.stem + ".last.pt")


def restore(start: Path, kind: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            device: torch.device) -> tuple[list[dict], int]:
    """Load model and optimiser state from a last checkpoint; returns (history, epoch)."""
    ckpt = load_checkpoint(start, kind, map_location=device)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["history"], ckpt["epoch"]


def save_epoch(out: Path, kind: str, config: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               history: list[dict], best: float) -> float:
    """After an epoch: the last checkpoint always, the best one (``out``) when ``val_loss`` improved.
    Returns the best validation loss so far."""
    row = history[-1]
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": row["epoch"], "history": history}
    if row["val_loss"] < best:
        best = row["val_loss"]
        save_checkpoint(out, kind, payload, config)
    save_checkpoint(last_checkpoint(out), kind, payload, config)
    return best


def existing_run_guard(last: Path, resume: bool, force: bool) -> Optional[Path]:
    """What to do with a previous run's last checkpoint: resume it, start over, or refuse (one line)."""
    if last.exists() and not (resume or force):
        raise SystemExit(f"error: {last} exists: pass --resume to continue that run or --force to start over")
    if last.exists() and resume:
        return last
    if resume:
        raise SystemExit(f"error: --resume given but {last} does not exist")
    return None
