"""A pool of long-lived game processes (``spawn``), fed tasks as they free up, that survives crashes.

Each worker builds its expensive state once (a game, models) with ``setup(*setup_args)``, which
returns a function ``run(task) -> result``; the pool then sends it one task at a time. A worker that
dies (the game can segfault) or says nothing for ``task_timeout`` seconds is killed, replaced, and its
task runs again; the caller only sees results. Every worker has its own pipe: a process killed in the
middle of a message cannot block the others (as it can with a shared ``multiprocessing.Queue``, whose
locks a killed process never releases).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import signal
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait
from typing import Any, Optional

log = logging.getLogger(__name__)


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


def replace_lost_worker(pool, slot, queue: collections.deque, why: str, detail: str, what: str) -> None:
    """What a pool (:class:`GamePool`, :class:`vmc.cluster.RayPool`) does once a lost worker is stopped: forget it,
    count it (giving up when workers keep dying at start-up or too many are lost), queue its task again and start
    another. ``what`` names the workers in messages (``processes``, ``actors``)."""
    del pool.slots[slot.wid]
    pool.restarts += 1
    log.error("%s %d %s (%s)%s; starting a new one", pool.name, slot.wid, why, detail,
              f" on task {slot.task}, which runs again" if slot.task is not None else "")
    if not slot.ready and pool.restarts > 3 and not any(s.ready for s in pool.slots.values()):
        raise RuntimeError(f"{pool.name} {what} die while starting ({detail}); see the log above")
    if pool.restarts > pool.max_restarts:
        raise RuntimeError(f"{pool.name}: {pool.restarts} workers lost, giving up")
    if slot.task is not None:
        queue.appendleft(slot.task)
    pool._spawn()


class _Slot:
    def __init__(self, wid: int, proc: mp.Process, conn: Connection) -> None:
        self.wid, self.proc, self.conn = wid, proc, conn
        self.ready = False
        self.task: Optional[int] = None
        self.since = 0.0


class GamePool:
    """``workers`` processes running ``setup(*setup_args)`` once, then tasks from :meth:`map`."""

    def __init__(self, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
                 name: str = "vmc-worker", max_restarts: int = 50) -> None:
        self.ctx = mp.get_context("spawn")
        self.setup, self.setup_args, self.task_timeout, self.name = setup, setup_args, task_timeout, name
        self.max_restarts = max_restarts
        self.slots: dict[int, _Slot] = {}
        self._next = 0
        self.restarts = 0
        for _ in range(max(1, workers)):
            self._spawn()

    def _spawn(self) -> None:
        parent, child = self.ctx.Pipe()
        wid = self._next
        self._next += 1
        p = self.ctx.Process(target=_worker, args=(self.setup, self.setup_args, child), name=f"{self.name}-{wid}",
                             daemon=True)
        p.start()
        child.close()
        self.slots[wid] = _Slot(wid, p, parent)

    def map(self, tasks: Iterable[Any], on_result: Optional[Callable[[int, Any], None]] = None,
            stop: Optional[Callable[[], bool]] = None) -> list[Any]:
        """Run every task once (on any worker); results in the order of ``tasks``.

        ``on_result(index, result)`` is called as results arrive. When ``stop()`` turns true, no new
        task is started; the running ones finish and the results so far are returned (None for the rest).
        """
        todo = list(tasks)
        queue = collections.deque(range(len(todo)))
        out: dict[int, Any] = {}
        while len(out) < len(todo):
            stopping = stop is not None and stop()
            for slot in self.slots.values():
                if slot.ready and slot.task is None and queue and not stopping:
                    slot.task, slot.since = queue.popleft(), time.monotonic()
                    slot.conn.send((slot.task, todo[slot.task]))
            if stopping and all(s.task is None for s in self.slots.values()):
                break
            conns = {s.conn: s for s in self.slots.values()}
            sentinels = {s.proc.sentinel: s for s in self.slots.values()}
            for ready in wait(list(conns) + list(sentinels), timeout=1.0):
                slot = conns.get(ready) or sentinels.get(ready)
                if slot.wid not in self.slots:
                    continue  # already replaced in this round
                if ready in conns:
                    try:
                        kind, value = slot.conn.recv()
                    except (EOFError, OSError):
                        self._replace(slot, queue, "died")
                        continue
                    if kind == "ready":
                        slot.ready = True
                    elif kind == "done":
                        tid, result = value
                        slot.task = None
                        if tid not in out:
                            out[tid] = result
                            if on_result is not None:
                                on_result(tid, result)
                    else:  # a Python exception is a bug, not a crash: retrying would hide it
                        raise RuntimeError(f"{self.name} {slot.wid} failed"
                                           f"{' to start' if kind == 'setup_error' else ''}:\n{value if kind == 'setup_error' else value[1]}")
                elif not slot.proc.is_alive():
                    self._replace(slot, queue, "died")
            now = time.monotonic()
            for slot in list(self.slots.values()):
                if slot.task is not None and now - slot.since > self.task_timeout:
                    self._replace(slot, queue, "hung")
        return [out.get(t) for t in range(len(todo))]

    def _replace(self, slot: _Slot, queue: collections.deque, why: str) -> None:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(5)
        detail = f"exit code {slot.proc.exitcode}" if why == "died" else f"silent for {self.task_timeout:.0f} s"
        replace_lost_worker(self, slot, queue, why, detail, "processes")

    def close(self) -> None:
        """Stop the workers (they finish their current task first)."""
        for slot in self.slots.values():
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for slot in self.slots.values():
            slot.proc.join(30)
            if slot.proc.is_alive():
                slot.proc.terminate()
        self.slots.clear()

    def __enter__(self) -> GamePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_pool(cluster: str, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
              name: str = "vmc-worker"):
    """The pool every stage uses: a :class:`GamePool` for ``cluster='local'`` (``workers`` 0: one per core), else a
    :class:`vmc.cluster.RayPool` on that Ray cluster (``workers`` 0: one per CPU of the cluster); see
    :data:`vmc.cluster.CLUSTER_HELP`."""
    if cluster == "local":
        import os

        return GamePool(workers or os.cpu_count() or 1, setup, setup_args, task_timeout, name=name)
    from vmc.cluster import RayPool, connect

    connect(cluster)
    return RayPool(workers, setup, setup_args, task_timeout, name=name)


def default_workers(cluster: str) -> int:
    """What ``--workers 0`` means on ``cluster``: this machine's cores, or the Ray cluster's CPUs (connecting to it)."""
    if cluster == "local":
        import os

        return os.cpu_count() or 1
    from vmc.cluster import cluster_cpus, connect

    connect(cluster)
    return cluster_cpus()
