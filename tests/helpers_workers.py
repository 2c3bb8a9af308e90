"""Top-level worker set-ups for tests/test_workers.py (spawned workers import them by name)."""

import logging

log = logging.getLogger("vmc.tests.workers")


def setup_talker(greeting: str):
    log.info("%s from set-up", greeting)

    def run(task):
        log.warning("task %s", task)
        log.debug("not sent: below INFO")
        return task + 1

    return run
