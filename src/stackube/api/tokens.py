"""What Keystone says about a valid token (shared by the Keystone adapter and the
auth webhook)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenIdentity:
    user_id: str
    user_name: str
    user_domain: str
    project_id: str | None
    project_name: str | None
    project_domain: str | None
    roles: tuple[str, ...]
    expires_at: datetime.datetime
