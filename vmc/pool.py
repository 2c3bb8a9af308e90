"""A pool of long-lived game processes (``spawn``), fed tasks as they free up, that survives crashes.

Each worker builds its expensive state once (a game, models) with ``setup(*setup_args)``, which
returns a function ``run(task) -> result``; the pool then feeds it tasks one at a time. A worker that
dies (the game can segfault) or says nothing for ``task_timeout`` seconds is killed, replaced, and its
task is run again elsewhere; the caller only sees results.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import time
import traceback
from typing import Any, Callable, Iterable, Optional

log = logging.getLogger(__name__)


def _worker(wid: int, setup: Callable, setup_args: tuple, tasks, results) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    import torch

    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    try:
        run = setup(*setup_args)
    except BaseException:
        results.put(("setup_error", wid, None, traceback.format_exc()))
        return
    results.put(("ready", wid, None, None))
    while True:
        item = tasks.get()
        if item is None:
            return
        tid, task = item
        results.put(("start", wid, tid, None))
        try:
            results.put(("done", wid, tid, run(task)))
        except BaseException:
            results.put(("error", wid, tid, traceback.format_exc()))


class GamePool:
    """``workers`` processes running ``setup(*setup_args)`` once, then tasks from :meth:`map`."""

    def __init__(self, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
                 name: str = "vmc-worker") -> None:
        self.ctx = mp.get_context("spawn")
        self.setup, self.setup_args, self.task_timeout, self.name = setup, setup_args, task_timeout, name
        self.tasks, self.results = self.ctx.Queue(), self.ctx.Queue()
        self.procs: dict[int, mp.Process] = {}
        self._next = 0
        self.restarts = 0
        for _ in range(max(1, workers)):
            self._spawn()

    def _spawn(self) -> None:
        wid = self._next
        self._next += 1
        p = self.ctx.Process(target=_worker, args=(wid, self.setup, self.setup_args, self.tasks, self.results),
                             name=f"{self.name}-{wid}", daemon=True)
        p.start()
        self.procs[wid] = p

    def map(self, tasks: Iterable[Any], on_result: Optional[Callable[[int, Any], None]] = None) -> list[Any]:
        """Run every task once (in any order, on any worker); results in the order of ``tasks``."""
        pending = dict(enumerate(tasks))
        for tid, task in pending.items():
            self.tasks.put((tid, task))
        out: dict[int, Any] = {}
        running: dict[int, tuple[int, float]] = {}  # wid -> (task id, since)
        while len(out) < len(pending):
            try:
                kind, wid, tid, value = self.results.get(timeout=1.0)
            except queue.Empty:
                kind = None
            if kind == "start":
                running[wid] = (tid, time.monotonic())
            elif kind == "done":
                running.pop(wid, None)
                if tid not in out:
                    out[tid] = value
                    if on_result is not None:
                        on_result(tid, value)
            elif kind in ("error", "setup_error"):
                # A Python exception is a bug, not a crash: retrying would hide it.
                raise RuntimeError(f"{self.name} {wid} failed{' to start' if kind == 'setup_error' else ''}:\n{value}")
            self._supervise(running, pending, out)
        return [out[t] for t in range(len(pending))]

    def _supervise(self, running: dict, pending: dict, out: dict) -> None:
        now = time.monotonic()
        for wid, p in list(self.procs.items()):
            tid, since = running.get(wid, (None, now))
            hung = tid is not None and now - since > self.task_timeout
            if p.is_alive() and not hung:
                continue
            if hung:
                p.kill()
            p.join(5)
            del self.procs[wid]
            running.pop(wid, None)
            self.restarts += 1
            log.error("%s %d %s%s; starting a new one", self.name, wid,
                      "hung" if hung else f"died (exit code {p.exitcode})",
                      f" on task {tid}, which runs again" if tid is not None else "")
            if tid is not None and tid not in out:
                self.tasks.put((tid, pending[tid]))
            self._spawn()

    def close(self) -> None:
        """Stop the workers (after their current task)."""
        for _ in self.procs:
            self.tasks.put(None)
        for p in self.procs.values():
            p.join(10)
            if p.is_alive():
                p.terminate()
        self.procs.clear()

    def __enter__(self) -> "GamePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
