"""TensorBoard records of a run folder: ``tensorboard --logdir runs/`` shows every experiment side by side.

Each stage writes into a TensorBoard run of its own inside the run folder, ``<run>/tb/<stage>/`` (``train_vae``,
``train_mdn``, ``evolve``, ``collect``, ``eval``..., ``main``; :func:`folder`), through one
``torch.utils.tensorboard.SummaryWriter`` per stage and process, made on first use and closed at the end
(:func:`close`, also at exit). The stage of a record is the first part of its tag (:func:`stage_of`).

Resumes write each step once. A stage that resumes redoes the steps after its last checkpoint, and an interrupted
run may have recorded some of them already. TensorBoard's answer is a writer with ``purge_step``: its event file
starts with a restart marker (``SessionLog.START`` at that step), and TensorBoard drops the stage's earlier events
at that step or later (the Rust data server of ``--load_fast`` keeps the last value written at a step, per tag).
That marker drops every tag of its folder, which is why each stage has a folder of its own and one step axis (the
per-epoch rows sit at the epoch's last optimiser step, with the epoch as a value). So:

* a resumable stage calls :func:`start` with the step it resumes at (0 for a fresh start): ``train_vae`` and
  ``train_mdn`` at the first optimiser step of the epoch they redo, ``evolve`` at the next generation;
* any other stage's first record in a process starts it at step 0: its records of an earlier process are replaced
  by this one's (``iterate`` writes every round's row again; ``main``, ``collect`` and ``evaluate`` write their
  records anew).

Tags: ``vae/step/*`` and ``mdn/step/*`` (every optimiser step), ``vae/epoch/*`` and ``mdn/epoch/*`` (the
history rows, at the epoch's last step), ``vae/reconstruction`` (image, per epoch, same step), ``evolve/*`` (CMA-ES
per generation), ``evolve/eval/*`` (real and dream evaluations of the best candidates), ``collect/*`` (frames/s
against frames collected, when the collection is given a run folder: the main job's is), ``eval/<track>/*``
(``vmc.evaluate``, into the controller's run folder; ``eval-perturb<K>/`` likewise), texts ``config/<stage>`` (at
the step the stage started from) and ``eval/table``, and the main job's config as hyperparameters (HPARAMS tab)
with ``summary/*`` (lap score and steps, best fitness, wall time) as their metrics.

A run of ``None`` (no run folder) writes nothing; without the ``tensorboard`` package the functions warn once
and write nothing.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

log = logging.getLogger("vmc.records")

RunPath = Optional[Union[str, Path]]

_writers: dict[Path, Any] = {}
_started: set[Path] = set()
_unavailable: list[str] = []

STAGE_OF_TAG = {"vae": "train_vae", "mdn": "train_mdn", "summary": "main"}
"""Tag prefixes whose stage has another name (others are their own stage: ``evolve``, ``iterate``, ``collect``,
``eval``...)."""


def stage_of(tag: str) -> str:
    """The stage a tag belongs to: ``config/<stage>`` is that stage's, else the tag's first part (renamed by
    :data:`STAGE_OF_TAG`)."""
    head, _, rest = tag.partition("/")
    if head == "config":
        return rest.partition("/")[0]
    return STAGE_OF_TAG.get(head, head)


def folder(run: Union[str, Path], stage: str) -> Path:
    """The TensorBoard run of ``stage`` in the run folder ``run``."""
    return Path(run).resolve() / "tb" / stage


def _after_existing_files(where: Path) -> None:
    """Event files are read in name order, and their names start with the second they were made in: wait (at most
    a second) until a new file's name sorts after every file there, so a restart marker comes after what it drops."""
    stamps = [int(m.group(1)) for p in where.glob("events.out.tfevents.*")
              if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", p.name))]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


def _open(where: Path, purge_step: Optional[int]):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # a broken install must not stop training
        _unavailable.append(str(err))
        log.warning("no TensorBoard records (%s); install the tensorboard package", err)
        return None
    where.mkdir(parents=True, exist_ok=True)
    if purge_step is not None:
        _after_existing_files(where)
    w = _writers[where] = SummaryWriter(log_dir=str(where), flush_secs=20, purge_step=purge_step)
    _started.add(where)
    return w


def start(run: RunPath, stage: str, step: int = 0) -> None:
    """``stage`` starts (``step`` 0) or resumes at ``step`` in this process: its records at ``step`` or later from
    an earlier run are dropped (see the module docstring). Call before the stage's first record."""
    if run is None or str(run) == "" or _unavailable:
        return
    where = folder(run, stage)
    if where in _writers:
        _writers.pop(where).close()
    _open(where, step)


def writer(run: RunPath, tag: str):
    """The ``SummaryWriter`` of the stage of ``tag``, or None for no run folder or no tensorboard."""
    return stage_writer(run, stage_of(tag))


def stage_writer(run: RunPath, stage: str):
    """The ``SummaryWriter`` of ``stage`` in ``run`` (made on first use: a stage not started in this process starts
    at step 0), or None for no run folder or no tensorboard."""
    if run is None or str(run) == "" or _unavailable:
        return None
    where = folder(run, stage)
    w = _writers.get(where)
    if w is None:
        w = _open(where, None if where in _started else 0)
    return w


def _number(v: Any) -> Optional[float]:
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v)):
        return float(v)
    return None


STEP_KEYS = frozenset({"generation"})
"""Keys of history rows that are the step itself, not written as scalars (an epoch is a value: the per-epoch
rows sit at the epoch's last optimiser step)."""


def scalars(run: RunPath, prefix: str, values: Mapping[str, Any], step: int) -> None:
    """``prefix/key`` for each finite number in ``values`` (None, NaN, non-numbers and :data:`STEP_KEYS` are
    skipped)."""
    w = writer(run, prefix)
    if w is None:
        return
    for k, v in values.items():
        x = None if k in STEP_KEYS else _number(v)
        if x is not None:
            w.add_scalar(f"{prefix}/{k}", x, step)


def image(run: RunPath, tag: str, picture: np.ndarray, step: int) -> None:
    """An (H, W, 3) uint8 picture."""
    w = writer(run, tag)
    if w is not None:
        w.add_image(tag, np.asarray(picture), step, dataformats="HWC")


def text(run: RunPath, tag: str, content: Union[str, Mapping], step: int = 0) -> None:
    """Markdown text (a dict is written as indented JSON in a code block)."""
    w = writer(run, tag)
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


def hparams(run: RunPath, config: Mapping, metrics: Mapping[str, Any], stage: str = "main") -> None:
    """The run's config as hyperparameters (TensorBoard's HPARAMS tab) with ``metrics`` (written as scalars too),
    in the stage's folder itself (``SummaryWriter.add_hparams`` would make a sub-run per call)."""
    w = stage_writer(run, stage)
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


def _within(key: Path, run: RunPath) -> bool:
    return run is None or key.is_relative_to(Path(run).resolve())


def flush(run: RunPath = None) -> None:
    """Write what is pending (the stages of one run folder and the folders inside it, or all)."""
    for key, w in list(_writers.items()):
        if _within(key, run):
            w.flush()


def close(run: RunPath = None) -> None:
    """Close the writers of one run folder and the folders inside it (or all); a later record of a stage opens a
    new event file (and drops nothing: the stage has started in this process)."""
    for key in list(_writers):
        if _within(key, run):
            _writers.pop(key).close()


atexit.register(close)


def run_of_controller(controller: Union[str, Path]) -> Optional[Path]:
    """The run folder of a controller checkpoint in a run's ``controller/`` folder, else None."""
    p = Path(controller)
    return p.parent.parent if p.parent.name == "controller" else None
