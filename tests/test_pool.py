"""GamePool: order of results, replacement of dead workers, bugs surface (no game); the scheduler that every pool
shares (:class:`vmc.pool.WorkerPool`) on a fake transport: restarts, task timeouts, stop, errors."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_pool import setup_square

from vmc.pool import Event, GamePool, Slot, WorkerPool


def test_results_in_task_order_and_dead_worker_replaced(tmp_path: Path, caplog):
    with GamePool(2, setup_square, (str(tmp_path),), task_timeout=60) as pool:
        assert pool.map([1, 2, 3, 4, 5]) == [1, 4, 9, 16, 25]
        with caplog.at_level("ERROR"):
            assert pool.map([6, "crash-once", 7]) == [36, "survived", 49]
        assert pool.restarts == 1
        assert "died (exit code -9)" in caplog.text
        assert pool.map([8]) == [64]  # the replacement works


def test_exception_in_a_task_is_raised_not_retried(tmp_path: Path):
    with GamePool(1, setup_square, (str(tmp_path),)) as pool:
        with pytest.raises(RuntimeError, match="a bug in the task"):
            pool.map(["bug"])


class FakeTransport:
    """Workers inside this process, for the scheduler alone (:class:`vmc.pool.WorkerPool`): what a worker answers
    is news at the next :meth:`events`, which never waits. ``hang-once`` never answers (the first time),
    ``die-once`` dies (the first time), ``bug`` raises; ``broken``: every worker dies while starting; ``setup_error``:
    every set-up raises."""

    what = "fakes"

    def __init__(self, broken: bool = False, setup_error: bool = False) -> None:
        self.broken, self.setup_error = broken, setup_error
        self.news: list[tuple[str, str, object]] = []
        self.seen: set[str] = set()
        self.killed: list[str] = []

    def start(self, name: str) -> str:
        if self.broken:
            self.news.append((name, "died", "gone at start"))
        else:
            self.news.append((name, "setup_error", "Traceback: no game") if self.setup_error else (name, "ready", None))
        return name

    def send(self, slot: Slot[str], tid: int, task) -> None:
        first = task not in self.seen
        self.seen.add(task)
        if task == "hang-once" and first:
            return
        if (task == "die-once" and first) or task == "die-always":
            self.news.append((slot.handle, "died", "gone"))
        elif task == "bug":
            self.news.append((slot.handle, "error", "Traceback: ValueError: a bug"))
        else:
            self.news.append((slot.handle, "done", (tid, "survived" if isinstance(task, str) else task * task)))

    def events(self, slots: dict[int, Slot[str]], timeout: float) -> Iterator[Event]:
        by_name = {s.handle: s for s in slots.values()}
        news, self.news = self.news, []
        for name, kind, value in news:
            slot = by_name.get(name)
            if slot is not None and slot.wid in slots:
                yield Event(slot, kind, value)

    def kill(self, slot: Slot[str]) -> str:
        self.killed.append(slot.handle)
        return "killed"

    def close(self, slots: list[Slot[str]]) -> None:
        pass


def test_scheduler_order_restarts_and_stop(caplog):
    # task_timeout 0: a task not answered in the round it was sent is hung; the fake answers the others at once
    with caplog.at_level("ERROR"), WorkerPool(FakeTransport(), 2, task_timeout=0, name="fake") as pool:
        got = []
        assert pool.map([1, "die-once", 3, "hang-once", 5], on_result=lambda i, r: got.append(i)) == [1, "survived", 9, "survived", 25]
        assert sorted(got) == [0, 1, 2, 3, 4] and pool.restarts == 2
        assert pool.transport.killed == ["fake-1", "fake-2"]  # fake-2 replaced fake-1, then got task 3
        assert "fake 1 died (gone) on task 1, which runs again" in caplog.text
        assert "fake 2 hung (silent for 0 s) on task 3, which runs again" in caplog.text
        # stop() turns true with the first results: no task is started after them, the rest are None
        done = []
        assert pool.map([6, 7, 8, 9], on_result=lambda i, r: done.append(i), stop=lambda: bool(done)) == [36, 49, None, None]


def test_scheduler_raises_bugs_and_gives_up_on_workers_that_cannot_start():
    with WorkerPool(FakeTransport(), 1, name="fake") as pool:
        with pytest.raises(RuntimeError, match=r"^fake 0 failed:\nTraceback: ValueError: a bug$"):
            pool.map([1, "bug"])
    with WorkerPool(FakeTransport(), 2, name="fake") as pool:  # a task that kills every worker it runs on
        with pytest.raises(RuntimeError, match=r"^fake: task 1 \('die-always'\) lost 3 workers \(gone\); it fails every time"):
            pool.map([1, "die-always", 3])
        assert pool.restarts == 3
    with WorkerPool(FakeTransport(setup_error=True), 1, name="fake") as pool:
        with pytest.raises(RuntimeError, match=r"^fake 0 failed to start:\nTraceback: no game$"):
            pool.map([1])
    with WorkerPool(FakeTransport(broken=True), 2, name="fake") as pool:
        with pytest.raises(RuntimeError, match=r"^fake fakes die while starting \(gone at start\); see the log above$"):
            pool.map([1])
        assert pool.restarts == 4
