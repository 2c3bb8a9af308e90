"""GamePool: order of results, replacement of dead workers, bugs surface (no game)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_pool import setup_square

from vmc.pool import GamePool


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
