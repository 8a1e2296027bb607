"""Crash points for tests of crash safety: with STACKUBE_CRASH_AFTER=<step>, the
process exits abruptly right after that external step succeeded, as a
`kill -9` at the worst moment would; with <step>@<name>, only while a pass over an
object of that name (a Tenant, or a Network, by metadata.name) runs (see `acting_on`).
Inert unless the variable is set."""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

ENV = "STACKUBE_CRASH_AFTER"
CRASH_EXIT_CODE = 86

_OBJECT: contextvars.ContextVar[str | None] = contextvars.ContextVar("crash_object", default=None)


@contextmanager
def acting_on(name: str) -> Iterator[None]:
    """Steps run inside are done for the object `name` (threads started inside must
    run in a copy of the context to inherit it: contextvars.copy_context().run)."""
    token = _OBJECT.set(name)
    try:
        yield
    finally:
        _OBJECT.reset(token)


def matches(setting: str | None, step: str, name: str | None) -> bool:
    """Whether STACKUBE_CRASH_AFTER's value `setting` names this step (of this object)."""
    if not setting:
        return False
    wanted, _, target = setting.partition("@")
    return wanted == step and (not target or target == name)


def checkpoint(step: str) -> None:
    if matches(os.environ.get(ENV), step, _OBJECT.get()):
        log.error("crash point %s reached: exiting now (fault injection)", step)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
