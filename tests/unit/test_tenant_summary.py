"""What a Tenant's pass tells the tenant's users on its default Network (status.tenant):
the controller's own texts, never a failure's (operator._tenant_pass with a stand-in
TenantReconciler: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest

from stackube.controller.operator import Reconcilers, _tenant_pass
from stackube.controller.tenant import TenantResult
from stackube.errors import PermanentError, StackubeError, TemporaryError

pytestmark = pytest.mark.unit

BODY = kopf.Body({"metadata": {"name": "test"}, "spec": {}})
SECRET_TEXT = "Keystone project p-123 of tenant other; Secret kube-system/x"


@dataclass
class StandIn:
    """reconcile() answers `result` or raises `error`; publish_summary() records."""

    result: TenantResult | None = None
    error: Exception | None = None
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    publish_error: Exception | None = None

    def reconcile(self, body: Any) -> TenantResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def publish_summary(self, tenant: str, summary: dict[str, Any]) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append((tenant, summary))


def run(stand_in: StandIn, wait_for_dns: bool = True) -> Any:
    reconcilers = Reconcilers(tenants=cast(Any, stand_in), networks=cast(Any, None))
    reconcilers.wait_for_dns = wait_for_dns
    return _tenant_pass(reconcilers, BODY)()


def result(network: str | None = "Active", dns_ready: bool = True) -> TenantResult:
    return TenantResult("p1", "u1", network, "", dns_ready, "waiting for the DNS server")


def test_active_and_waiting_passes_publish_their_state_and_dns_readiness() -> None:
    ready = StandIn(result())
    assert run(ready).state.value == "Active"
    ((tenant, summary),) = ready.published
    assert tenant == "test" and summary["state"] == "Active" and summary["dnsReady"] is True
    waiting = StandIn(result(dns_ready=False))
    run(waiting)
    assert waiting.published[0][1] == {
        "state": "Initializing",
        "message": "waiting for the DNS server",
        "dnsReady": False,
    }


@pytest.mark.parametrize(
    ("error", "state"),
    [(TemporaryError(SECRET_TEXT), "Pending"), (PermanentError(SECRET_TEXT), "Failed")],
)
def test_a_failure_is_published_without_its_text_and_still_raised(
    error: StackubeError, state: str
) -> None:
    stand_in = StandIn(error=error)
    with pytest.raises(type(error)):
        run(stand_in)
    ((_, summary),) = stand_in.published
    assert summary["state"] == state and summary["dnsReady"] is False
    assert SECRET_TEXT not in summary["message"]
    assert "Tenant" in summary["message"]  # where the operator finds the details


def test_a_summary_that_cannot_be_written_does_not_fail_the_pass() -> None:
    stand_in = StandIn(result(), publish_error=TemporaryError("apiserver down"))
    assert run(stand_in).state.value == "Active"
