"""The two kinds of failure that drive retries everywhere in Stackube.

Adapters translate library errors into these (chained with `raise ... from exc`):
temporary ones are retried with backoff (honouring Retry-After); permanent ones are
reported in status and Events and not retried until the object changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class StackubeError(Exception):
    """Base of every error Stackube raises on purpose."""


class TemporaryError(StackubeError):
    """Worth retrying: a service is down, overloaded, timed out or racing with us."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(StackubeError):
    """Retrying will not help until someone changes the spec or the cloud."""


class NotFoundError(PermanentError):
    """The thing asked for does not exist (callers often treat this as 'already gone')."""


Translator = Callable[[Exception, str], StackubeError]


def translating_with(
    translate: Translator, what: str, library: tuple[type[Exception], ...]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an adapter function so that its library errors (instances of `library`)
    come out as ours, classified by `translate` and chained (`raise ... from exc`).
    Anything else (a KeyError, a TypeError) is a bug and propagates unchanged: retrying
    it as "temporary" would hide it."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except StackubeError:
                raise
            except library as exc:
                raise translate(exc, what) from exc

        return wrapper

    return decorate
