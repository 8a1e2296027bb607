"""Crash points for tests of crash safety: with STACKUBE_CRASH_AFTER=<step>, the
process exits abruptly right after that external step succeeded, as a
`kill -9` at the worst moment would. Inert unless the variable is set."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV = "STACKUBE_CRASH_AFTER"
CRASH_EXIT_CODE = 86


def checkpoint(step: str) -> None:
    if os.environ.get(ENV) == step:
        log.error("crash point %s reached: exiting now (fault injection)", step)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
