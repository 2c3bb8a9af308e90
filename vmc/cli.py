"""One way to make a command line: a stage's options are the fields of its config dataclass.

:func:`parse` builds the parser with `tyro <https://brentyi.github.io/tyro/>`_ (as CleanRL does), so each
field's docstring is its ``--help`` and nested dataclasses become ``--model.z-dim``-style options. Values are
checked by the config's ``validate()`` after parsing, and :func:`run` turns any :class:`vmc.errors.VmcError` or
``ValueError`` from the library into one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar

from vmc.errors import VmcError

T = TypeVar("T")
_parsing: contextvars.ContextVar[bool] = contextvars.ContextVar("vmc_parsing", default=False)

RUN_FLAGS = ("resume", "force")
"""Fields that say what to do with work on disk, not what the work is: never recorded or compared."""


class Config:
    """Base of the stage configs: ``validate()`` runs on construction (library use) and after parsing (CLI use)."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset()
    """Fields that may differ from the config of the work being resumed (targets such as ``epochs``, and
    settings that do not change results, such as ``workers``)."""

    def __post_init__(self) -> None:
        if not _parsing.get():
            self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with one line naming the option when a value is out of range."""

    def record(self) -> dict:
        """The resolved config as plain JSON-able data (what is saved beside checkpoints), without run flags."""
        return {k: v for k, v in plain(self).items() if k not in RUN_FLAGS}

    @classmethod
    def defaults(cls) -> dict:
        """:meth:`record` of this config with every field at its default: what work made before an option existed
        is taken to have used (:func:`vmc.runs.check_resume`)."""
        token = _parsing.set(True)  # the defaults need not make a valid run (no validation)
        try:
            return cls().record()
        finally:
            _parsing.reset(token)


def plain(obj: Any) -> Any:
    """Dataclasses, paths, tuples → dicts, strings and lists (JSON and ``torch.load(weights_only=True)`` safe)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` for the first of ``values`` (option name → value) below 1."""
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {v}")


def check_non_negative(**values: float) -> None:
    """Raise ``ValueError`` for the first of ``values`` (option name → value) below 0."""
    for name, v in values.items():
        if v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 0, got {v}")


def check_share(**values: float) -> None:
    """Raise ``ValueError`` for the first of ``values`` (option name → value) outside [0, 1]."""
    for name, v in values.items():
        if not 0 <= v <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1, got {v}")


def check_correlation(**values: float) -> None:
    """Raise ``ValueError`` for the first of ``values`` (option name → value) outside [0, 1): a step-to-step noise
    correlation, below 1 so that the noise keeps moving."""
    for name, v in values.items():
        if not 0 <= v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")


def parse(cls: type[T], argv: Optional[list[str]], prog: str) -> T:
    """``cls`` filled from ``argv`` (its docstring is the description, its fields' docstrings the options' help);
    a value out of range exits 2 with one line (``prog: error: ...``)."""
    import tyro

    token = _parsing.set(True)
    try:
        cfg = tyro.cli(cls, args=argv, prog=prog, description=cls.__doc__)
    finally:
        _parsing.reset(token)
    try:
        cfg.validate()
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(levelname)s %(message)s")


def run(prog: str, body: Callable[[], Optional[int]]) -> int:
    """Run a command's ``body``; user errors become one line on stderr and exit code 2, Ctrl-C exit 130."""
    try:
        return body() or 0
    except (VmcError, ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


__all__ = ["Config", "parse", "run", "plain", "check_positive", "check_non_negative", "setup_logging"]
