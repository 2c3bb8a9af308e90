"""Pools of long-lived game workers, fed tasks as they free up, that survive crashes.

Each worker builds its expensive state once (a game, models) with ``setup(*setup_args)``, which
returns a function ``run(task) -> result``; the pool then sends it one task at a time. A worker that
dies (the game can segfault) or says nothing for ``task_timeout`` seconds is killed, replaced, and its
task runs again; the caller only sees results.

The scheduling is one loop, :meth:`WorkerPool.map`, whatever runs the workers, so that results, failures,
timeouts and restarts behave the same on every backend; a backend only starts, feeds, hears from and stops its
workers (a :class:`Transport`). Here :class:`GamePool`: local ``spawn`` processes, each with its own pipe, so that a
process killed in the middle of a message cannot block the others (as it can with a shared
``multiprocessing.Queue``, whose locks a killed process never releases). :class:`vmc.cluster.RayPool`: Ray actors.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Generic, Literal, NamedTuple, Optional, Protocol, TypeVar

log = logging.getLogger(__name__)

H = TypeVar("H")  # a backend's handle on one worker
P = TypeVar("P", bound="WorkerPool")


@dataclass(eq=False)
class Slot(Generic[H]):
    """One worker as the scheduler sees it. ``wid`` is never reused: a slot no longer in :attr:`WorkerPool.slots`
    was replaced, and whatever still arrives from it is ignored."""

    wid: int
    handle: H  # the backend's: a process and its pipe, an actor and the answer awaited
    ready: bool = False  # set-up done: it takes tasks
    pid: Optional[int] = None  # its process, where the backend tells (Ray's actors do: to find it from outside)
    task: Optional[int] = None  # index of the task it runs
    since: float = 0.0  # when that task was sent (time.monotonic): the task timeout counts from here


class Event(NamedTuple):
    """News of one worker, as a backend gives it to the scheduler (``value`` by ``kind``):

    * ``ready``: the set-up is done; its pid, or None where the backend does not say
    * ``done``: ``(task index, result)``
    * ``error`` / ``setup_error``: the traceback of a Python exception in a task / in the set-up
    * ``died``: the worker is gone; how (one line), or None where only stopping it tells (:meth:`Transport.kill`)
    """

    slot: Slot
    kind: Literal["ready", "done", "error", "setup_error", "died"]
    value: Any


class Transport(Protocol[H]):
    """What a backend does for :class:`WorkerPool`: start, feed, hear from and stop workers. It decides nothing
    (which task goes where, what an answer means, when a worker is given up), so that no backend can differ there."""

    what: str  # the workers, in messages: "processes", "actors"

    def start(self, name: str) -> H:
        """Start a worker called ``name``; it runs its set-up, then answers ``ready`` or ``setup_error``."""

    def send(self, slot: Slot[H], tid: int, task: Any) -> None:
        """Hand task ``tid`` to the ready, idle worker of ``slot``."""

    def events(self, slots: dict[int, Slot[H]], timeout: float) -> Iterator[Event]:
        """Wait up to ``timeout`` s for news of the workers in ``slots``, then yield all there is. Lazily, one event at
        a time: handling an event can replace a worker (skip a slot once it has left ``slots``) or raise."""

    def kill(self, slot: Slot[H]) -> str:
        """Stop a lost worker for good; return how it ended where the backend knows (an exit code), else ``""``."""

    def close(self, slots: list[Slot[H]]) -> None:
        """Stop the workers: the pool is done with them."""


class WorkerPool(Generic[H]):
    """``workers`` workers started through ``transport``, then tasks from :meth:`map`: the one scheduler of every
    backend (:class:`GamePool`, :class:`vmc.cluster.RayPool`)."""

    def __init__(self, transport: Transport[H], workers: int, task_timeout: float = 600.0, name: str = "vmc-worker",
                 max_restarts: int = 50, task_losses: int = 3) -> None:
        self.transport, self.task_timeout, self.name, self.max_restarts = transport, task_timeout, name, max_restarts
        self.task_losses = task_losses  # a task that loses this many workers crashes the game every time
        self._todo: list[Any] = []
        self._losses: collections.Counter[int] = collections.Counter()
        self.slots: dict[int, Slot[H]] = {}
        self._next = 0
        self.restarts = 0
        for _ in range(max(1, workers)):
            self._start()

    def _start(self) -> None:
        wid = self._next
        self._next += 1
        self.slots[wid] = Slot(wid, self.transport.start(f"{self.name}-{wid}"))

    def map(self, tasks: Iterable[Any], on_result: Optional[Callable[[int, Any], None]] = None,
            stop: Optional[Callable[[], bool]] = None) -> list[Any]:
        """Run every task once (on any worker); results in the order of ``tasks``.

        ``on_result(index, result)`` is called as results arrive. When ``stop()`` turns true, no new
        task is started; the running ones finish and the results so far are returned (None for the rest).
        """
        todo = self._todo = list(tasks)
        self._losses.clear()
        queue = collections.deque(range(len(todo)))
        out: dict[int, Any] = {}
        while len(out) < len(todo):
            stopping = stop is not None and stop()
            for slot in self.slots.values():
                if slot.ready and slot.task is None and queue and not stopping:
                    slot.task, slot.since = queue.popleft(), time.monotonic()
                    self.transport.send(slot, slot.task, todo[slot.task])
            if stopping and all(s.task is None for s in self.slots.values()):
                break
            for slot, kind, value in self.transport.events(self.slots, timeout=1.0):
                if kind == "ready":
                    slot.ready, slot.pid = True, value
                elif kind == "done":
                    tid, result = value
                    slot.task = None
                    if tid is not None and tid not in out:
                        out[tid] = result
                        if on_result is not None:
                            on_result(tid, result)
                elif kind == "died":
                    self._replace(slot, queue, "died", value)
                else:  # a Python exception is a bug, not a crash: retrying would hide it
                    raise RuntimeError(f"{self.name} {slot.wid} failed{' to start' if kind == 'setup_error' else ''}:\n{value}")
            now = time.monotonic()
            for slot in list(self.slots.values()):
                if slot.task is not None and now - slot.since > self.task_timeout:
                    self._replace(slot, queue, "hung", f"silent for {self.task_timeout:.0f} s")
        return [out.get(t) for t in range(len(todo))]

    def _replace(self, slot: Slot[H], queue: collections.deque, why: str, detail: Optional[str]) -> None:
        """Stop a lost worker, forget it, count it (giving up when workers keep dying at start-up or too many are
        lost), queue its task again and start another. ``detail`` None: what stopping it tells."""
        ended = self.transport.kill(slot)
        detail = ended if detail is None else detail
        del self.slots[slot.wid]
        self.restarts += 1
        log.error("%s %d %s (%s)%s; starting a new one", self.name, slot.wid, why, detail,
                  f" on task {slot.task}, which runs again" if slot.task is not None else "")
        if not slot.ready and self.restarts > 3 and not any(s.ready for s in self.slots.values()):
            raise RuntimeError(f"{self.name} {self.transport.what} die while starting ({detail}); see the log above")
        if self.restarts > self.max_restarts:
            raise RuntimeError(f"{self.name}: {self.restarts} workers lost, giving up")
        if slot.task is not None:
            self._losses[slot.task] += 1
            if self._losses[slot.task] >= self.task_losses:
                raise RuntimeError(f"{self.name}: task {slot.task} ({self._todo[slot.task]!r:.120}) lost "
                                   f"{self._losses[slot.task]} workers ({detail}); it fails every time, see the log above")
            queue.appendleft(slot.task)
        self._start()

    def close(self) -> None:
        """Stop the workers (the backend says how: a local process finishes its current task first)."""
        self.transport.close(list(self.slots.values()))
        self.slots.clear()

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _worker(setup: Callable, setup_args: tuple, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        import torch

        torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    except ImportError:
        pass
    try:
        run = setup(*setup_args)
    except BaseException:
        conn.send(("setup_error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            item = conn.recv()
        except EOFError:  # the parent is gone
            return
        if item is None:
            return
        tid, task = item
        try:
            conn.send(("done", (tid, run(task))))
        except BaseException:
            conn.send(("error", (tid, traceback.format_exc())))


@dataclass
class _Process:
    proc: BaseProcess
    conn: Connection  # the parent's end of its pipe


class _ProcessTransport:
    """:class:`Transport` of :class:`GamePool`: ``spawn`` processes running :func:`_worker`, a pipe each."""

    what = "processes"

    def __init__(self, setup: Callable, setup_args: tuple) -> None:
        self.ctx = mp.get_context("spawn")
        self.setup, self.setup_args = setup, setup_args

    def start(self, name: str) -> _Process:
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(self.setup, self.setup_args, child), name=name, daemon=True)
        p.start()
        child.close()
        return _Process(p, parent)

    def send(self, slot: Slot[_Process], tid: int, task: Any) -> None:
        slot.handle.conn.send((tid, task))

    def events(self, slots: dict[int, Slot[_Process]], timeout: float) -> Iterator[Event]:
        # A pipe tells answers, a process's sentinel its end: one that dies without a word (SIGKILL) closes no pipe.
        conns = {s.handle.conn: s for s in slots.values()}
        sentinels = {s.handle.proc.sentinel: s for s in slots.values()}
        for ready in wait(list(conns) + list(sentinels), timeout=timeout):
            slot = conns.get(ready) or sentinels[ready]
            if slot.wid not in slots:
                continue  # already replaced in this round
            if ready in conns:
                try:
                    kind, value = slot.handle.conn.recv()
                except (EOFError, OSError):
                    kind, value = "died", None
                yield Event(slot, kind, value[1] if kind == "error" else value)  # an error is (tid, traceback)
            elif not slot.handle.proc.is_alive():
                yield Event(slot, "died", None)

    def kill(self, slot: Slot[_Process]) -> str:
        proc = slot.handle.proc
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        return f"exit code {proc.exitcode}"

    def close(self, slots: list[Slot[_Process]]) -> None:
        for slot in slots:
            try:
                slot.handle.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for slot in slots:
            slot.handle.proc.join(30)
            if slot.handle.proc.is_alive():
                slot.handle.proc.terminate()


class GamePool(WorkerPool[_Process]):
    """``workers`` local processes running ``setup(*setup_args)`` once, then tasks from :meth:`map`."""

    def __init__(self, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
                 name: str = "vmc-worker", max_restarts: int = 50) -> None:
        super().__init__(_ProcessTransport(setup, setup_args), workers, task_timeout, name, max_restarts)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which ``taskset``, a container's cpuset or a batch
    scheduler's allocation (SLURM, PBS) narrow below the machine's ``os.cpu_count()``; one process or thread per
    core beyond them only takes turns on the same cores."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def make_pool(cluster: str, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
              name: str = "vmc-worker"):
    """The pool every stage uses: a :class:`GamePool` for ``cluster='local'`` (``workers`` 0: :func:`usable_cores`), else a
    :class:`vmc.cluster.RayPool` on that Ray cluster (``workers`` 0: one per CPU of the cluster); see
    :data:`vmc.cluster.CLUSTER_HELP`."""
    if cluster == "local":
        return GamePool(workers or usable_cores(), setup, setup_args, task_timeout, name=name)
    from vmc.cluster import RayPool, connect

    connect(cluster)
    return RayPool(workers, setup, setup_args, task_timeout, name=name)


def default_workers(cluster: str) -> int:
    """What ``--workers 0`` means on ``cluster``: the cores this process may run on, or the Ray cluster's CPUs (connecting to it)."""
    if cluster == "local":
        return usable_cores()
    from vmc.cluster import cluster_cpus, connect

    connect(cluster)
    return cluster_cpus()
