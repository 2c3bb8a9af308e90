"""Top-level functions for GamePool tests (spawned workers import them by name)."""

import os
import signal
from pathlib import Path


def setup_square(marker_dir: str):
    def run(task):
        if task == "crash-once":
            marker = Path(marker_dir) / "crashed"
            if not marker.exists():
                marker.write_text("x")
                os.kill(os.getpid(), signal.SIGKILL)  # what a segfaulting game looks like to the pool
            return "survived"
        if task == "bug":
            raise ValueError("a bug in the task")
        return task * task

    return run
