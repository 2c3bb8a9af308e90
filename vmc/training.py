"""What the training stages share: device choice, epoch checkpoints and their resume, loss curves, prefetching."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Optional

import torch

from vmc.checkpoints import load_checkpoint, save_checkpoint
from vmc.cli import Config
from vmc.errors import VmcError
from vmc.pool import usable_cores
from vmc.runs import check_resume

log = logging.getLogger("vmc.training")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; or an explicit torch device name. On CUDA, cuDNN picks its
    fastest kernels for the (fixed) shapes and float32 products run on TF32 tensor cores."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return device


def busy_cores(interval: float = 0.2) -> Optional[float]:
    """How many of the cores this process may run on (its affinity) were busy with anything but the calling thread
    over the next ``interval`` seconds (other processes, other threads of this one, time taken by the hypervisor),
    from ``/proc/stat``'s per-core lines; None where those cannot be read."""
    def times() -> dict[int, list[int]]:
        with open("/proc/stat") as f:
            rows = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
        return {int(r[0][3:]): [int(v) for v in r[1:9]] for r in rows if len(r) >= 9}
    try:
        cores = os.sched_getaffinity(0)
        before = times()
        time.sleep(interval)
        after = times()
    except (OSError, ValueError, AttributeError):
        return None
    busy, seen = 0.0, 0
    for core in cores & before.keys() & after.keys():
        delta = [b - a for a, b in zip(before[core], after[core])]
        total = sum(delta)  # user..steal; guest time is already inside user and nice
        if total > 0:
            busy += 1 - (delta[3] + delta[4]) / total  # idle + iowait
            seen += 1
    return busy if seen else None


def use_all_cores(threads: int = 0, warn: bool = True) -> int:
    """Intra-op threads for CPU training (0: one per core this process may run on, :func:`vmc.pool.usable_cores`);
    returns the number set. With 0 and ``warn``, warns when other processes hold those cores: torch's threads wait on
    each other at every operation, and one descheduled thread stalls them all (docs/performance.md, Training speed:
    the ConvVAE beside two game workers on 2 cores trained at 62-135 frames/s with 2 threads, 347 with 1). The count
    itself is left alone, so that a run's arithmetic does not depend on what else the machine was doing."""
    n = threads or usable_cores()
    torch.set_num_threads(n)
    busy = busy_cores() if warn and not threads and n > 1 else None
    fewer = max(1, n - int(busy + 0.5)) if busy is not None else n  # a core counts as held from half busy
    if fewer < n:
        log.warning("other processes keep %.1f of the %d cores busy: torch's %d threads will wait on each other; "
                    "--threads %d may train several times faster", busy, n, n, fewer)
    return n


def adam(params: Iterable[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with its fused kernel on CPUs and CUDA: one pass over all weights instead of a loop of tensor ops per
    parameter (the same update up to float rounding). The ConvVAE's optimiser step alone took 30-43 ms with the
    loop and 5-11 ms fused on 2 busy CPU cores; whole training epochs measured no faster within one run's noise
    (docs/performance.md, Training speed)."""
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bfloat16 autocast on ``device`` (``auto``: on CPUs with bfloat16 units; not
    on CUDA, where float32 with TF32 measured faster on an H100 for both models: docs/performance.md, Training speed)."""
    if precision == "auto":
        if device.type == "cuda":
            return False
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return precision == "bf16"


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


def resume_point(last: Path, kind: str, cfg: Config, built_on: dict, resume: bool, force: bool) -> Optional[dict]:
    """The last checkpoint to go on from, or None to start afresh.

    An existing one is refused unless ``resume`` or ``force``; with ``resume`` it must have been made with the
    same config (but for ``cfg.RESUME_FREE``) and on the same inputs (``built_on``: fingerprints, sizes)."""
    if not last.exists():
        if resume and not force:
            raise VmcError(f"--resume given but {last} does not exist")
        return None
    if force:
        return None
    if not resume:
        raise VmcError(f"{last} exists: pass --resume to continue that run or --force to start over")
    ckpt = load_checkpoint(last, kind)
    check_resume(last, {**ckpt["config"], "built_on": ckpt.get("built_on", {})}, {**cfg.record(), "built_on": built_on},
                 cfg.RESUME_FREE, cfg.defaults())
    return ckpt


def restore(ckpt: Optional[dict], model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[list[dict], int]:
    """Load model and optimiser state from a last checkpoint (:func:`resume_point`); returns (history, epoch), or
    an empty history and epoch 0 for a fresh start (``ckpt`` None)."""
    if ckpt is None:
        return [], 0
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    log.info("resuming after epoch %d", ckpt["epoch"])
    return ckpt["history"], ckpt["epoch"]


def save_epoch(out: Path, kind: str, config: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               history: list[dict], best: float, built_on: dict) -> float:
    """After an epoch: the last checkpoint always, the best one (``out``) when ``val_loss`` improved.
    Returns the best validation loss so far."""
    row = history[-1]
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": row["epoch"], "history": history,
               "built_on": built_on}
    if row["val_loss"] < best:
        best = row["val_loss"]
        save_checkpoint(out, kind, payload, config)
    save_checkpoint(last_checkpoint(out), kind, payload, config)
    return best
