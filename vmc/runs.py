"""Experiments on disk: one folder per run, and resumes that check what they resume.

A run folder (``runs/<name>/``) holds everything one experiment makes: ``config.json`` (the main job's resolved
config and the package version), the VAE, latent file, MDN-RNN, controller, logs, curves, pictures and videos.
Collections stay in ``data/`` and are referenced by path.

A stage that finds its own work in a folder (a ``last`` checkpoint, ``evolve.pt``...) resumes it only if it was
made with the same config: :func:`check_resume` compares the stored record with the new one, field by field,
and raises :class:`vmc.errors.ConfigMismatch` naming the file and the fields that differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import vmc
from vmc.errors import ConfigMismatch

RUNS = Path("runs")
"""Where run folders go by default."""

SEED_STRIDE = 1_000_003
"""Run seed ``s`` draws its race seeds from ``s * SEED_STRIDE`` on (each stage at its own offset below the
stride), so that two seeds of one recipe never race the same seeds."""


def run_name(tracks: Iterable[str], preset: str) -> str:
    """The default name of a main-job run: its tracks and preset (``lighthouse-small``, ``3tracks-debug``)."""
    tracks = list(tracks)
    return f"{tracks[0] if len(tracks) == 1 else f'{len(tracks)}tracks'}-{preset}"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def differences(old: dict, new: dict, free: Iterable[str] = (), defaults: Optional[dict] = None) -> list[str]:
    """``field: old → new`` for every (nested, dotted) field that differs, except those in ``free`` and fields that
    ``old`` lacks while ``new`` holds their value in ``defaults`` (options added to vmc since that work was made,
    left at a default that changes nothing)."""
    a, b, d = _flatten(old), _flatten(new), _flatten(defaults or {})
    skip = set(free)
    return [f"{k}: {a.get(k, '(absent)')!r} → {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
            if k.split(".")[0] not in skip and k not in skip and a.get(k) != b.get(k)
            and not (k not in a and k in d and b.get(k) == d[k])]


def check_resume(path: Path, old: dict, new: dict, free: Iterable[str] = (), defaults: Optional[dict] = None) -> None:
    """Raise :class:`ConfigMismatch` when the work at ``path`` was made with another config (ignoring ``free``, and
    new options at their ``defaults``)."""
    diff = differences(old, new, free, defaults)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise ConfigMismatch(f"{path} was made with a different config ({shown}): pass --force to start over, "
                             "or use another run folder")


def write_config(folder: Path, record: dict, free: Iterable[str] = (), force: bool = False,
                 defaults: Optional[dict] = None) -> Path:
    """Write ``folder/config.json`` (``record`` plus the package version); if one is there, it must match
    (:func:`check_resume`) unless ``force``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    if path.exists() and not force:
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ConfigMismatch(f"{path}: corrupt config file; pass --force to start over") from None
        check_resume(path, old.get("config", {}), record, free, defaults)
    tmp = path.with_name("config.json.tmp")
    tmp.write_text(json.dumps({"vmc_version": vmc.__version__, "config": record}, indent=2))
    tmp.replace(path)
    return path
