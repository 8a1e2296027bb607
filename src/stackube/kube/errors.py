"""Kubernetes client errors -> Stackube's temporary/permanent errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

from stackube.errors import (
    NotFoundError,
    PermanentError,
    StackubeError,
    TemporaryError,
    translating_with,
)

P = ParamSpec("P")
R = TypeVar("R")


def translate(exc: Exception, what: str) -> StackubeError:
    if isinstance(exc, ApiException):
        message = f"{what}: {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
        if exc.status == 404:
            return NotFoundError(message)
        if exc.status in (409, 429) or exc.status >= 500:
            retry = exc.headers.get("Retry-After") if exc.headers else None
            return TemporaryError(message, float(retry) if retry and retry.isdigit() else None)
        return PermanentError(message)
    return TemporaryError(f"{what}: {exc}")  # urllib3's HTTPError, OSError: LIBRARY_ERRORS


# What the Kubernetes client raises for a failed request: its answer, or the connection.
LIBRARY_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


def translating(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an adapter function so its library errors (LIBRARY_ERRORS) come out
    translated; other exceptions are bugs and propagate."""
    return translating_with(translate, what, LIBRARY_ERRORS)
