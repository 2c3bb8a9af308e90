"""Game workers on a Ray cluster: :class:`RayPool`, the :class:`vmc.pool.GamePool` interface on Ray actors.

Each worker is a Ray actor (``num_cpus=1``), that is its own process holding one long-lived game (pystk2 allows
one per process), built once by ``setup(*setup_args)``; ``setup_args`` (models as weights) go to the object store
once (``ray.put``) and every actor reads them from there. :meth:`RayPool.map` hands tasks out as actors free up and
returns results in task order. An actor that dies (a game segfault, a lost node) or stays silent past
``task_timeout`` is killed, replaced, and its task runs again on whichever actor frees up first; a Python exception
in a task is raised here with the remote traceback, not retried.

Log records of a worker travel back with each result (and with the set-up's answer) and go through this process's
own logging under the worker's name (``vmc-evolve-worker-3@10.0.0.5``), so they reach its handlers (a run's
``log.txt``) and the progress bar's redirection; what the game prints on stdout/stderr comes through Ray's
``log_to_driver``.

Which cluster a stage uses is its ``--cluster`` option (:data:`CLUSTER_HELP`, checked by :func:`check_cluster`).
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Optional

from vmc.pool import replace_lost_worker

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
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **common)
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


class _Slot:
    def __init__(self, wid: int, actor: Any, pending: Any) -> None:
        self.wid, self.actor, self.pending = wid, actor, pending  # pending: the ObjectRef awaited (ready or a task)
        self.ready = False
        self.pid: Optional[int] = None
        self.task: Optional[int] = None
        self.since = 0.0


class RayPool:
    """``workers`` Ray actors running ``setup(*setup_args)`` once, then tasks from :meth:`map` (0: one per CPU of
    the cluster). The process must be connected to Ray (:func:`connect`)."""

    def __init__(self, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
                 name: str = "vmc-worker", max_restarts: int = 50) -> None:
        import ray

        self.ray = ray
        self.setup, self.task_timeout, self.name, self.max_restarts = setup, task_timeout, name, max_restarts
        self.args_ref = ray.put(tuple(setup_args))  # once: every actor reads the models from the object store
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Worker)
        cpus = cluster_cpus()
        workers = workers or cpus
        if workers > cpus:
            log.warning("%s: %d workers asked for, the Ray cluster has %d CPUs; the rest wait for CPUs", name, workers, cpus)
        self.slots: dict[int, _Slot] = {}
        self._next = 0
        self.restarts = 0
        for _ in range(max(1, workers)):
            self._spawn()

    def _spawn(self) -> None:
        wid = self._next
        self._next += 1
        name = f"{self.name}-{wid}"
        actor = self.actor_class.options(name=None).remote(self.setup, self.args_ref, name)
        self.slots[wid] = _Slot(wid, actor, actor.ready.remote())

    @staticmethod
    def _emit(records: list[logging.LogRecord]) -> None:
        for r in records:
            logger = logging.getLogger(r.name)
            if logger.isEnabledFor(r.levelno):
                logger.handle(r)

    def map(self, tasks: Iterable[Any], on_result: Optional[Callable[[int, Any], None]] = None,
            stop: Optional[Callable[[], bool]] = None) -> list[Any]:
        """Run every task once (on any actor); results in the order of ``tasks``.

        ``on_result(index, result)`` is called as results arrive. When ``stop()`` turns true, no new
        task is started; the running ones finish and the results so far are returned (None for the rest).
        """
        ray = self.ray
        todo = list(tasks)
        queue = collections.deque(range(len(todo)))
        out: dict[int, Any] = {}
        while len(out) < len(todo):
            stopping = stop is not None and stop()
            for slot in self.slots.values():
                if slot.ready and slot.task is None and queue and not stopping:
                    slot.task, slot.since = queue.popleft(), time.monotonic()
                    slot.pending = slot.actor.call.remote(todo[slot.task])
            if stopping and all(s.task is None for s in self.slots.values()):
                break
            by_ref = {s.pending: s for s in self.slots.values() if s.pending is not None}
            done, _ = ray.wait(list(by_ref), num_returns=1, timeout=1.0)
            if done:  # everything else that is done too
                done, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
            for ref in done:
                slot = by_ref[ref]
                if slot.wid not in self.slots:
                    continue
                slot.pending = None
                try:
                    kind, value, records = ray.get(ref)
                except ray.exceptions.RayTaskError as err:  # the answer could not be made or read: a bug
                    raise RuntimeError(f"{self.name} {slot.wid} failed:\n{err}") from None
                except ray.exceptions.RayError as err:  # the actor (or its node) is gone
                    self._replace(slot, queue, "died", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                    continue
                self._emit(records)
                if kind == "ready":
                    slot.ready, slot.pid = True, value
                elif kind == "done":
                    tid = slot.task
                    slot.task = None
                    if tid is not None and tid not in out:
                        out[tid] = value
                        if on_result is not None:
                            on_result(tid, value)
                else:  # a Python exception is a bug, not a crash: retrying would hide it
                    raise RuntimeError(f"{self.name} {slot.wid} failed{' to start' if kind == 'setup_error' else ''}:\n{value}")
            now = time.monotonic()
            for slot in list(self.slots.values()):
                if slot.task is not None and now - slot.since > self.task_timeout:
                    self._replace(slot, queue, "hung", f"silent for {self.task_timeout:.0f} s")
        return [out.get(t) for t in range(len(todo))]

    def _replace(self, slot: _Slot, queue: collections.deque, why: str, detail: str) -> None:
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone
            pass
        replace_lost_worker(self, slot, queue, why, detail, "actors")

    def close(self) -> None:
        """Stop the actors (their processes and games end; the Ray connection stays for other pools)."""
        for slot in self.slots.values():
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:
                pass
        self.slots.clear()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
