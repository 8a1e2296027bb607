"""The system network's Kubernetes side: the Network `kube-system/system` from the
configuration's `user-cidr`/`user-gateway` (docs/decisions/0010). The Network reconciler
makes its Neutron network, subnet and router under the system project like any other;
this keeper only makes sure the object exists, and says when it differs from the
configuration (a change of range needs the operator: pods hold addresses in it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from stackube.api.types import LABEL_MANAGED_BY, MANAGED_BY, SYSTEM_NAMESPACE, SYSTEM_NETWORK
from stackube.config import ControllerConfig
from stackube.errors import StackubeError
from stackube.kube import resources as kube
from stackube.kube.client import ApiClient

log = logging.getLogger(__name__)

KEEP_SECONDS = 60.0


def system_network_spec(config: ControllerConfig) -> dict[str, str]:
    return {"cidr": config.user_cidr, "gateway": config.user_gateway}


def spec_drift(network: Mapping[str, Any], config: ControllerConfig) -> str | None:
    """How the system Network's spec differs from the configuration (None: it does not)."""
    spec = network.get("spec") or {}
    wanted = system_network_spec(config)
    found = {k: spec.get(k) for k in wanted}
    if found == wanted:
        return None
    return (
        f"Network {SYSTEM_NAMESPACE}/{SYSTEM_NETWORK} has cidr {found['cidr']} gateway "
        f"{found['gateway']}, the configuration says user-cidr {wanted['cidr']} user-gateway "
        f"{wanted['gateway']}: kept as it is (its pods hold addresses in it); delete the "
        "Network to remake it"
    )


def ensure_system_network(api: ApiClient, config: ControllerConfig) -> bool:
    """Create the system Network if it is missing (True if created)."""
    network = kube.get_network(api, SYSTEM_NAMESPACE, SYSTEM_NETWORK)
    if network is None:
        kube.create_network(
            api,
            SYSTEM_NAMESPACE,
            SYSTEM_NETWORK,
            system_network_spec(config),
            {LABEL_MANAGED_BY: MANAGED_BY},
        )
        log.info(
            "created the system Network %s/%s (%s)",
            SYSTEM_NAMESPACE,
            SYSTEM_NETWORK,
            config.user_cidr,
        )
        return True
    drift = spec_drift(network, config)
    if drift:
        log.warning("%s", drift)
    return False


def keep_system_network(
    api: ApiClient, config: ControllerConfig, done: threading.Event, period: float = KEEP_SECONDS
) -> None:
    """Until `done`: the system Network exists (made again if someone deletes it).
    Failures are logged and retried; the thread never dies of one."""
    while True:
        try:
            ensure_system_network(api, config)
        except StackubeError as exc:
            log.warning("system Network: %s (retrying)", exc)
        except Exception:  # a bug must not end the keeper: log it, try again later
            log.exception("system Network: unexpected error (retrying)")
        if done.wait(period):
            return
