"""Game workers on a Ray cluster: :class:`RayPool`, the :class:`vmc.pool.GamePool` interface on Ray actors.

Each worker is a Ray actor (``num_cpus=1``), that is its own process holding one long-lived game (pystk2 allows
one per process), built once by ``setup(*setup_args)``; ``setup_args`` (models as weights) go to the object store
once (``ray.put``) and every actor reads them from there. :meth:`RayPool.map` (the scheduler of
:class:`vmc.pool.WorkerPool`, the local pool's own: this module only moves tasks and answers) hands tasks out as actors
free up and returns results in task order. An actor that dies (a game segfault, a lost node) or stays silent past
``task_timeout`` is killed, replaced, and its task runs again on whichever actor frees up first; a Python exception
in a task is raised here with the remote traceback, not retried.

Log records of a worker travel back with each result (and with the set-up's answer) and go through this process's
own logging under the worker's name (``vmc-evolve-worker-3@10.0.0.5``), so they reach its handlers (a run's
``log.txt``) and the progress bar's redirection; what the game prints on stdout/stderr comes through Ray's
``log_to_driver``.

Which cluster a stage uses is its ``--cluster`` option (:data:`CLUSTER_HELP`, checked by :func:`check_cluster`).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from vmc.pool import Event, Slot, WorkerPool, usable_cores

log = logging.getLogger(__name__)

CLUSTER_HELP = """Where the game workers run: ``local`` (processes on this machine, the default), ``ray`` (join a running
Ray cluster: the one in ``RAY_ADDRESS``, else the one ``ray start`` made this machine part of), ``ray-local`` (start
a private Ray on this machine, mostly for trying it out), or a Ray address to join (``HOST:6379``, or
``ray://HOST:10001`` for Ray Client). On Ray, ``--workers 0`` means one worker per CPU of the cluster."""


def check_cluster(value: str) -> None:
    """Raise ``ValueError`` (one line) for a ``--cluster`` value that is none of the forms of :data:`CLUSTER_HELP`."""
    if value in ("local", "ray", "auto", "ray-local") or value.startswith("ray://"):
        return
    host, _, port = value.rpartition(":")
    if host and port.isdigit():
        return
    raise ValueError(f"--cluster must be local, ray, ray-local, HOST:PORT or ray://HOST:PORT, got {value!r}")


def connect(cluster: str) -> None:
    """Make this process a Ray driver of ``cluster`` (a ``--cluster`` value other than ``local``); a process that
    is already connected stays on its cluster."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--cluster {cluster} needs Ray: pip install -e '.[cluster]' (./run.sh setup installs it)") from None
    if ray.is_initialized():
        return
    common = {"log_to_driver": True, "logging_level": logging.WARNING}
    if cluster == "ray-local":
        ray.init(num_cpus=usable_cores(), include_dashboard=False, **common)
    else:
        address = (os.environ.get("RAY_ADDRESS") or "auto") if cluster in ("ray", "auto") else cluster
        try:
            ray.init(address=address, **common)
        except ConnectionError as err:
            raise ValueError(f"--cluster {cluster}: no Ray cluster to join at {address} ({err}); start one with "
                             f"`ray start --head` (see the README) or use --cluster ray-local") from None
    res = ray.cluster_resources()
    log.info("Ray cluster: %d nodes, %d CPUs", len([n for n in ray.nodes() if n.get("Alive")]), int(res.get("CPU", 0)))


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class _Records:
    """A queue for :class:`logging.handlers.QueueHandler` that is a list: records wait here for the next answer."""

    def __init__(self) -> None:
        self.items: list[logging.LogRecord] = []

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.items.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.items = self.items, []
        return out


class _Worker:
    """The actor: ``setup(*setup_args)`` once, then ``run(task)`` per call. Answers are ``(kind, value, records)``
    with kind ``ready``/``setup_error``/``done``/``error``, never an exception (a raise would read as a crash)."""

    def __init__(self, setup: Callable, setup_args: tuple, name: str) -> None:
        import socket

        self.records = _Records()
        root = logging.getLogger()
        root.handlers[:] = [logging.handlers.QueueHandler(self.records)]  # type: ignore[arg-type]
        root.setLevel(logging.INFO)
        self.name = f"{name}@{socket.gethostname()}"
        # Arrays in tasks arrive read-only (Ray's zero-copy reads); workers only read them, so torch's warning is noise.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        try:
            import torch

            torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
        except ImportError:
            pass
        self.run: Optional[Callable] = None
        self.setup_error: Optional[str] = None
        try:
            self.run = setup(*setup_args)
        except BaseException:
            self.setup_error = traceback.format_exc()

    def _answer(self, kind: str, value: Any) -> tuple:
        records = self.records.take()
        for r in records:
            r.processName = self.name
        return kind, value, records

    def ready(self) -> tuple:
        if self.setup_error is not None:
            return self._answer("setup_error", self.setup_error)
        return self._answer("ready", os.getpid())

    def call(self, task: Any) -> tuple:
        try:
            return self._answer("done", self.run(task))
        except BaseException:
            return self._answer("error", traceback.format_exc())


def _emit(records: list[logging.LogRecord]) -> None:
    """A worker's log records, through this process's logging (its handlers: a run's ``log.txt``, the console)."""
    for r in records:
        logger = logging.getLogger(r.name)
        if logger.isEnabledFor(r.levelno):
            logger.handle(r)


@dataclass
class _Actor:
    actor: Any
    pending: Any  # the ObjectRef awaited: the set-up's answer, then each task's; None while idle


class _ActorTransport:
    """:class:`vmc.pool.Transport` of :class:`RayPool`: :class:`_Worker` actors, whose answers carry their log
    records (emitted here as each answer is handled)."""

    what = "actors"

    def __init__(self, setup: Callable, setup_args: tuple) -> None:
        import ray

        self.ray = ray
        self.setup = setup
        self.args_ref = ray.put(tuple(setup_args))  # once: every actor reads the models from the object store
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Worker)

    def start(self, name: str) -> _Actor:
        actor = self.actor_class.options(name=None).remote(self.setup, self.args_ref, name)
        return _Actor(actor, actor.ready.remote())

    def send(self, slot: Slot[_Actor], tid: int, task: Any) -> None:
        slot.handle.pending = slot.handle.actor.call.remote(task)

    def events(self, slots: dict[int, Slot[_Actor]], timeout: float) -> Iterator[Event]:
        ray = self.ray
        by_ref = {s.handle.pending: s for s in slots.values() if s.handle.pending is not None}
        done, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        if done:  # everything else that is done too
            done, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        for ref in done:
            slot = by_ref[ref]
            if slot.wid not in slots:
                continue
            slot.handle.pending = None
            try:
                kind, value, records = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the answer could not be made or read: a bug
                kind, value, records = "error", str(err), []
            except ray.exceptions.RayError as err:  # the actor (or its node) is gone
                kind, value, records = "died", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", []
            _emit(records)
            yield Event(slot, kind, (slot.task, value) if kind == "done" else value)  # an actor's task is the slot's

    def kill(self, slot: Slot[_Actor]) -> str:
        try:
            self.ray.kill(slot.handle.actor, no_restart=True)
        except Exception:  # already gone
            pass
        return ""

    def close(self, slots: list[Slot[_Actor]]) -> None:
        for slot in slots:
            self.kill(slot)


class RayPool(WorkerPool[_Actor]):
    """``workers`` Ray actors running ``setup(*setup_args)`` once, then tasks from :meth:`map` (0: one per CPU of
    the cluster). The process must be connected to Ray (:func:`connect`). :meth:`close` ends the actors (their
    processes and games); the Ray connection stays for other pools."""

    def __init__(self, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
                 name: str = "vmc-worker", max_restarts: int = 50) -> None:
        transport = _ActorTransport(setup, setup_args)
        cpus = cluster_cpus()
        workers = workers or cpus
        if workers > cpus:
            log.warning("%s: %d workers asked for, the Ray cluster has %d CPUs; the rest wait for CPUs", name, workers, cpus)
        super().__init__(transport, workers, task_timeout, name, max_restarts)
