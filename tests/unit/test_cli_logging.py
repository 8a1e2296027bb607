"""Logging set-up of the programs: -v never lets the libraries that log secrets
(response bodies, headers, whole objects) go below INFO."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from stackube import cli

pytestmark = pytest.mark.unit


@pytest.fixture
def restore_levels() -> Iterator[None]:
    names = [None, *cli.SECRET_LOGGERS, "stackube.auth"]
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restore_levels")
def test_verbose_logging_keeps_secret_carrying_loggers_at_info() -> None:
    cli.configure_logging(verbose=True, long_running=True)
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("stackube.auth").isEnabledFor(logging.DEBUG)
    for name in [*cli.SECRET_LOGGERS, "urllib3.connectionpool", "keystoneauth.session"]:
        logger = logging.getLogger(name)
        assert logger.getEffectiveLevel() >= logging.INFO, name
        assert not logger.isEnabledFor(logging.DEBUG), name
    for required in ("kubernetes.client.rest", "urllib3", "keystoneauth", "openstack"):
        assert required in cli.SECRET_LOGGERS


@pytest.mark.usefixtures("restore_levels")
def test_quiet_programs_stay_quiet_and_the_floor_never_lowers_a_level() -> None:
    cli.configure_logging(verbose=False, long_running=False)
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING
    # Pinning to INFO must not make urllib3 chattier than the root logger.
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.WARNING
    logging.getLogger().setLevel(logging.DEBUG)
    cli.quiet_secret_loggers()
    assert logging.getLogger("kubernetes.client.rest").getEffectiveLevel() == logging.INFO
