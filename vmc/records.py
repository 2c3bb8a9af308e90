"""TensorBoard records of a run folder: ``tensorboard --logdir runs/`` shows every experiment side by side.

The stages call the functions here with their run folder; each folder gets one
``torch.utils.tensorboard.SummaryWriter`` per process, made on first use and closed at the end (:func:`close`,
also at exit), so a process writes one event file per run folder (``events.out.tfevents.*``, beside
``config.json``). A stage run again adds another event file; TensorBoard reads them all.

Tags: ``vae/step/*`` and ``mdn/step/*`` (every optimiser step), ``vae/epoch/*`` and ``mdn/epoch/*`` (the
history rows), ``vae/reconstruction`` (image, per epoch), ``evolve/*`` (CMA-ES per generation), ``evolve/eval/*``
(real and dream evaluations of the best candidates), ``collect/*`` (frames/s against frames collected, when the
collection is given a run folder: the main job's is), ``eval/<track>/*`` (``vmc.evaluate``, into the controller's
run folder; ``eval-perturb<K>/`` likewise), texts ``config/<stage>`` and ``eval/table``, and the main job's config as
hyperparameters (HPARAMS tab) with ``summary/*`` (lap score and steps, best fitness, wall time) as their metrics.

A run of ``None`` (no run folder) writes nothing; without the ``tensorboard`` package the functions warn once
and write nothing.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

log = logging.getLogger("vmc.records")

RunPath = Optional[Union[str, Path]]

_writers: dict[Path, Any] = {}
_unavailable: list[str] = []


def writer(run: RunPath):
    """The run folder's ``SummaryWriter`` (made on first use), or None for no run folder or no tensorboard."""
    if run is None or str(run) == "" or _unavailable:
        return None
    key = Path(run).resolve()
    w = _writers.get(key)
    if w is None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # a broken install must not stop training
            _unavailable.append(str(err))
            log.warning("no TensorBoard records (%s); install the tensorboard package", err)
            return None
        key.mkdir(parents=True, exist_ok=True)
        w = _writers[key] = SummaryWriter(log_dir=str(key), flush_secs=20)
    return w


def _number(v: Any) -> Optional[float]:
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v)):
        return float(v)
    return None


STEP_KEYS = frozenset({"epoch", "generation"})
"""Keys of history rows that are the step itself, not written as scalars."""


def scalars(run: RunPath, prefix: str, values: Mapping[str, Any], step: int) -> None:
    """``prefix/key`` for each finite number in ``values`` (None, NaN, non-numbers and :data:`STEP_KEYS` are
    skipped)."""
    w = writer(run)
    if w is None:
        return
    for k, v in values.items():
        x = None if k in STEP_KEYS else _number(v)
        if x is not None:
            w.add_scalar(f"{prefix}/{k}", x, step)


def image(run: RunPath, tag: str, picture: np.ndarray, step: int) -> None:
    """An (H, W, 3) uint8 picture."""
    w = writer(run)
    if w is not None:
        w.add_image(tag, np.asarray(picture), step, dataformats="HWC")


def text(run: RunPath, tag: str, content: Union[str, Mapping], step: int = 0) -> None:
    """Markdown text (a dict is written as indented JSON in a code block)."""
    w = writer(run)
    if w is None:
        return
    if not isinstance(content, str):
        content = "```\n" + json.dumps(content, indent=2, default=str) + "\n```"
    w.add_text(tag, content, step)


def flatten(config: Mapping, prefix: str = "") -> dict[str, Union[float, str, bool]]:
    """A nested config as ``a.b`` keys with numbers, booleans or strings (what the hparams plugin takes)."""
    out: dict[str, Union[float, str, bool]] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v)):
            out[key] = v
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v, default=str)
    return out


def hparams(run: RunPath, config: Mapping, metrics: Mapping[str, Any]) -> None:
    """The run's config as hyperparameters (TensorBoard's HPARAMS tab) with ``metrics`` (written as scalars too),
    in the run folder itself (``SummaryWriter.add_hparams`` would make a sub-run per call)."""
    w = writer(run)
    if w is None:
        return
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    metrics = {k: x for k, v in metrics.items() if (x := _number(v)) is not None}
    exp, ssi, sei = hparams_summary(flatten(config), metrics)
    fw = w._get_file_writer()  # the documented add_hparams does the same into a sub-folder
    for s in (exp, ssi, sei):
        fw.add_summary(s)
    for k, v in metrics.items():
        w.add_scalar(k, v, 0)


def flush(run: RunPath = None) -> None:
    """Write what is pending (one run folder, or all)."""
    for key, w in list(_writers.items()):
        if run is None or key == Path(run).resolve():
            w.flush()


def close(run: RunPath = None) -> None:
    """Close the writer of one run folder (or all); a later record opens a new event file."""
    for key in list(_writers):
        if run is None or key == Path(run).resolve():
            _writers.pop(key).close()


atexit.register(close)


def run_of_controller(controller: Union[str, Path]) -> Optional[Path]:
    """The run folder of a controller checkpoint in a run's ``controller/`` folder, else None."""
    p = Path(controller)
    return p.parent.parent if p.parent.name == "controller" else None
