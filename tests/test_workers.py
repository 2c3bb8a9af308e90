"""vmc.workers: worker processes' log records reach the stage's own log (a run's log.txt), once each (no game)."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers_workers import setup_talker

from vmc.workers import watched_pool


def test_worker_log_records_reach_the_parent_log_file(tmp_path: Path):
    log_txt = tmp_path / "log.txt"
    handler = logging.FileHandler(log_txt)  # what the main job puts on the root logger
    handler.setFormatter(logging.Formatter("%(processName)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        with watched_pool("local", 2, setup_talker, ("hello",), name="vmc-talker", progress=False) as pool:
            assert pool.map([1, 2, 3]) == [2, 3, 4]
            assert pool.map([4]) == [5]
        # close() returns once the workers' records are handed on: no waiting here.
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    lines = log_txt.read_text().splitlines()
    assert sorted(x for x in lines if "from set-up" in x) == ["vmc-talker-0 INFO vmc.tests.workers hello from set-up",
                                                             "vmc-talker-1 INFO vmc.tests.workers hello from set-up"]
    tasks = [x.split(" ", 1)[1] for x in lines if " task " in x]
    assert sorted(tasks) == [f"WARNING vmc.tests.workers task {k}" for k in (1, 2, 3, 4)]
    assert all(x.startswith("vmc-talker-") for x in lines if "vmc.tests.workers" in x)
    assert not any("below INFO" in x for x in lines)
