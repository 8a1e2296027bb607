"""openstacksdk and keystoneauth errors -> Stackube's temporary/permanent errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import requests
from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from stackube.errors import (
    NotFoundError,
    PermanentError,
    StackubeError,
    TemporaryError,
    translating_with,
)

P = ParamSpec("P")
R = TypeVar("R")

_TEMPORARY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _retry_after(exc: sdk.HttpException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def translate(exc: Exception, what: str) -> StackubeError:  # noqa: PLR0911 - a classifier
    """Classify one library error. Quota (409/413 "quota") is permanent; other conflicts
    are races with another writer and are worth a retry."""
    message = f"{what}: {exc}"
    if isinstance(exc, sdk.NotFoundException):
        return NotFoundError(message)
    if isinstance(exc, sdk.HttpException):
        status = exc.status_code
        text = str(exc).lower()
        if status is None or status in _TEMPORARY_STATUS:
            return TemporaryError(message, _retry_after(exc))
        if "quota" in text or status == 413:
            return PermanentError(message)
        if status == 409:
            return TemporaryError(message)
        return PermanentError(message)
    if isinstance(exc, ksa.Unauthorized):
        return PermanentError(f"{what}: OpenStack rejected Stackube's credentials: {exc}")
    # Unreachable, timed out, no endpoint, discovery failed: the cloud may come back.
    return TemporaryError(message)


# What openstacksdk and keystoneauth raise for a failed request: an answer, or the
# connection (requests' errors, OSError).
LIBRARY_ERRORS = (sdk.SDKException, ksa.ClientException, requests.RequestException, OSError)


def translating(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an adapter function so its library errors (LIBRARY_ERRORS) come out
    translated; other exceptions are bugs and propagate."""
    return translating_with(translate, what, LIBRARY_ERRORS)
