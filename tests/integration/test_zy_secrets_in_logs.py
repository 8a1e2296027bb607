"""After the other integration modules (it sorts just before the lifecycle module): no
log of any devbox service holds a password or token that the devbox generated or the
tests handed out (tenant passwords, Keystone tokens of tenant users)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from stackube.devbox.box import Devbox
from stackube.devbox.components import HOST_SERVICES
from tests.integration.tenant_users import SEEN_SECRETS

pytestmark = pytest.mark.integration


def leaks(logs: Iterable[Path], secrets: Iterable[str]) -> list[str]:
    """`<log file>: <which secret, by its first characters>` for every secret found."""
    wanted = [s for s in secrets if len(s) >= 8]
    found = []
    for path in logs:
        text = path.read_text(errors="replace")
        found += [f"{path.name}: {s[:4]}..." for s in wanted if s in text]
    return found


def test_no_devbox_log_holds_a_password_or_token(devbox: Devbox, tmp_path: Path) -> None:
    generated = dataclasses.asdict(devbox.openstack.secrets).values()
    secrets = {*generated, *SEEN_SECRETS}
    logs = sorted(devbox.settings.log_dir.glob("*.log"))
    assert len(logs) >= 10, logs  # every service of the devbox logs there
    # Stackube's components, when they run as Pods: their pods' logs (kubectl logs).
    for name in sorted(HOST_SERVICES) if devbox.pods_mode else []:
        text = devbox.service_log(name)
        assert text.strip(), f"{name}: no log"
        (tmp_path / f"{name}.pod.log").write_text(text)
        logs.append(tmp_path / f"{name}.pod.log")
    # The scan itself can fail: a log holding one of the secrets is reported.
    planted = tmp_path / "planted.log"
    secret = next(s for s in secrets if len(s) >= 8)
    planted.write_text(json.dumps({"msg": f"connecting with {secret}"}))
    assert leaks([planted], secrets) == [f"planted.log: {secret[:4]}..."]
    assert leaks(logs, secrets) == []
