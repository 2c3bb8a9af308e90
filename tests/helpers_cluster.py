"""Top-level functions for RayPool tests (Ray actors import them by name: tests/ is on their PYTHONPATH)."""

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("vmc.tests.cluster")


def setup_square(marker_dir: str):
    log.info("worker %d ready", os.getpid())

    def run(task):
        marker = Path(marker_dir) / str(task)
        if task in ("crash-once", "hang-once") and not marker.exists():
            marker.write_text("x")
            if task == "crash-once":
                os.kill(os.getpid(), signal.SIGKILL)  # what a segfaulting game looks like to the pool
            time.sleep(600)
        if task in ("crash-once", "hang-once"):
            return "survived"
        if task == "bug":
            raise ValueError("a bug in the task")
        log.info("squared %s", task)
        return task * task

    return run
