"""What a stage's process shows of its game workers' work: their log records in its own log, a progress bar.

Every stage that runs game workers makes its pool with :func:`watched_pool` (collect, and through
:func:`vmc.racing.racing_pool` evolve with its DAgger start and evaluations, evaluate, iterate and the main job's
reference laps; the lap video's races through :func:`vmc.play.drive_and_film`):

* **Logs.** Local workers are ``spawn`` processes: they inherit none of this process's logging. Each one sends
  its records (INFO and above) over one queue of this process (:func:`log_queue`, the logging cookbook's
  ``QueueHandler``/``QueueListener`` pair), and a thread here hands them to the same-named loggers of this
  process: they reach its handlers (a run's ``log.txt``, the console) and the progress bar's redirection, under
  the worker's process name. Ray workers send theirs back with each answer already (:mod:`vmc.cluster`).
* **Progress.** Each :meth:`WatchedPool.map` shows a bar over its tasks (races) while it runs, on a terminal only
  (``progress=None``) unless told otherwise, with log lines printed above it.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import multiprocessing as mp
import threading
from collections.abc import Callable, Iterable
from typing import Any, Optional

_lock = threading.Lock()
_queue: Any = None
_listener: Optional[logging.handlers.QueueListener] = None
_listening = False


class _Forward(logging.Handler):
    """Hands a worker's record to the same-named logger of this process (its level was checked in the worker)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def log_queue():
    """The queue this process's spawned workers send their log records to (made, and listened to, on first use)."""
    global _queue, _listener, _listening
    with _lock:
        if _queue is None:
            _queue = mp.get_context("spawn").Queue(-1)
            _listener = logging.handlers.QueueListener(_queue, _Forward())
            _listener.start()
            _listening = True
            atexit.register(flush_worker_logs, restart=False)
        return _queue


def flush_worker_logs(restart: bool = True) -> None:
    """Hand on every record already in the queue before returning (the workers that sent them have exited or
    flushed): the listener stops after the last one and starts again."""
    global _listening
    with _lock:
        if _listener is not None and _listening:
            _listener.stop()
            _listening = restart
            if restart:
                _listener.start()


def send_logs_to(queue) -> None:
    """In a worker: every log record of INFO and above goes to ``queue`` (the parent's :func:`log_queue`) only."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(logging.INFO)


def _logging_setup(queue, setup: Callable, setup_args: tuple):
    send_logs_to(queue)
    return setup(*setup_args)


def forward_logs(setup: Callable, setup_args: tuple, cluster: str = "local") -> tuple[Callable, tuple]:
    """``(setup, setup_args)`` for a pool whose local workers first send their log records here (Ray workers
    already do: unchanged for any other ``cluster``)."""
    if cluster != "local":
        return setup, setup_args
    return _logging_setup, (log_queue(), setup, setup_args)


class WatchedPool:
    """A pool (:func:`vmc.pool.make_pool`) whose :meth:`map` shows a progress bar, and whose :meth:`close` waits for
    its workers' last log records; everything else is the pool's own."""

    def __init__(self, pool, desc: str = "races", unit: str = "race", progress: Optional[bool] = None) -> None:
        self.pool, self.desc, self.unit, self.progress = pool, desc, unit, progress

    def map(self, tasks: Iterable[Any], on_result: Optional[Callable[[int, Any], None]] = None,
            stop: Optional[Callable[[], bool]] = None) -> list[Any]:
        """The pool's ``map``, with a bar counting the tasks done (``progress`` None: on a terminal only)."""
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        tasks = list(tasks)
        bar = tqdm(total=len(tasks), desc=self.desc, unit=self.unit, leave=False, dynamic_ncols=True,
                   disable=None if self.progress is None else not self.progress)

        def done(i: int, result: Any) -> None:
            bar.update(1)
            if on_result is not None:
                on_result(i, result)

        try:
            with logging_redirect_tqdm():
                return self.pool.map(tasks, on_result=done, stop=stop)
        finally:
            bar.close()

    def close(self) -> None:
        self.pool.close()
        flush_worker_logs()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    def __enter__(self) -> WatchedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def watched_pool(cluster: str, workers: int, setup: Callable, setup_args: tuple = (), task_timeout: float = 600.0,
                 name: str = "vmc-worker", desc: str = "races", unit: str = "race",
                 progress: Optional[bool] = None) -> WatchedPool:
    """:func:`vmc.pool.make_pool` with the workers' logs forwarded here and a progress bar per ``map``."""
    from vmc.pool import make_pool

    setup, setup_args = forward_logs(setup, setup_args, cluster)
    return WatchedPool(make_pool(cluster, workers, setup, setup_args, task_timeout, name=name), desc, unit, progress)
