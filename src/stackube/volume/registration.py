"""kubelet's plugin registration (pluginregistration.v1, k8s.io/kubelet's api.proto), for
the CSI node plugin: what node-driver-registrar does, in-process (the Go module proxy
here refuses that sidecar: docs/decisions/0014). kubelet finds
`<kubelet root>/plugins_registry/<driver>-reg.sock`, asks GetInfo, and reports whether
it registered the driver's endpoint.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from stackube.volume.registration_api import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

CSI_PLUGIN = "CSIPlugin"
SUPPORTED_VERSIONS = ("1.0.0",)


class RegistrationServicer(api_pb2_grpc.RegistrationServicer):
    def __init__(self, driver: str, endpoint: str) -> None:
        """`endpoint`: the CSI socket's path as kubelet sees it."""
        self.driver = driver
        self.endpoint = endpoint
        self.registered: bool | None = None
        self.error = ""

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return api_pb2.PluginInfo(
            type=CSI_PLUGIN,
            name=self.driver,
            endpoint=self.endpoint,
            supported_versions=list(SUPPORTED_VERSIONS),
        )

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.registered = bool(request.plugin_registered)
        self.error = str(request.error)
        if self.registered:
            log.info("kubelet registered CSI driver %s at %s", self.driver, self.endpoint)
        else:
            log.error("kubelet refused CSI driver %s: %s", self.driver, self.error)
        return api_pb2.RegistrationStatusResponse()
