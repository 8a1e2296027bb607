"""The CNI spec's side of kubestack: parsing what the runtime hands a plugin (env and
stdin) and rendering results and error objects (CNI spec 1.0; 0.3.1 and 0.4.0 configs
accepted). Standard library only: the plugin executable imports this on every call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
RESULT_VERSION = "1.0.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# Error codes of the CNI spec (1.0 section "Error"), plus our own (100+).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
NO_TENANT_NETWORK = 100
DAEMON_UNREACHABLE = 101


class CniError(Exception):
    """An error the plugin prints as a CNI error object and exits non-zero with."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = RESULT_VERSION) -> dict[str, Any]:
        doc: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            doc["details"] = self.details
        return doc


# NamedTuples, not dataclasses: the plugin imports this on every call, and dataclasses
# pulls in `inspect` (~5 ms).
class PodRef(NamedTuple):
    """Who the runtime says the sandbox is for (from CNI_ARGS, as containerd sends it)."""

    namespace: str
    name: str
    uid: str = ""
    infra_container_id: str = ""


class Request(NamedTuple):
    command: str
    container_id: str
    netns: str
    ifname: str
    config: Mapping[str, Any]
    cni_version: str
    pod: PodRef | None = None
    args: Mapping[str, str] = {}

    @property
    def prev_result(self) -> Mapping[str, Any] | None:
        prev = self.config.get("prevResult")
        return prev if isinstance(prev, dict) else None


def parse_cni_args(text: str) -> dict[str, str]:
    """`IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;...` -> a dict; malformed pairs are errors."""
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, "CNI_ARGS is malformed", f"bad pair {item!r}")
        pairs[key] = value
    return pairs


def _version(config: Mapping[str, Any]) -> str:
    version = config.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(INVALID_NETWORK_CONFIG, "network configuration has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return version


def parse_config(stdin: bytes) -> dict[str, Any]:
    try:
        config = json.loads(stdin.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniError(DECODE_FAILURE, "network configuration is not valid JSON", str(exc)) from exc
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "network configuration is not a JSON object")
    return config


def parse_request(env: Mapping[str, str], stdin: bytes) -> Request:
    """Validate env + stdin for any command; raises CniError with the spec's codes."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of {COMMANDS}")
    if command == "VERSION":
        return Request(command, "", "", "", {}, RESULT_VERSION)
    config = parse_config(stdin)
    version = _version(config)
    if command in ("STATUS", "GC"):
        return Request(command, "", "", "", config, version)
    container_id = env.get("CNI_CONTAINERID", "")
    if not container_id:
        raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is required")
    ifname = env.get("CNI_IFNAME", "")
    if not ifname or len(ifname) > 15 or "/" in ifname or ifname in (".", ".."):
        raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {ifname!r} is not a valid interface name")
    netns = env.get("CNI_NETNS", "")
    # DEL may come without a netns (the runtime's second DEL): everything else needs it.
    if not netns and command != "DEL":
        raise CniError(INVALID_ENVIRONMENT, f"CNI_NETNS is required for {command}")
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    pod = None
    if args.get("K8S_POD_NAMESPACE") and args.get("K8S_POD_NAME"):
        pod = PodRef(
            args["K8S_POD_NAMESPACE"],
            args["K8S_POD_NAME"],
            args.get("K8S_POD_UID", ""),
            args.get("K8S_POD_INFRA_CONTAINER_ID", ""),
        )
    elif command == "ADD":
        raise CniError(
            INVALID_ENVIRONMENT, "CNI_ARGS must name the pod (K8S_POD_NAMESPACE, K8S_POD_NAME)"
        )
    return Request(command, container_id, netns, ifname, config, version, pod, args)


def version_result() -> dict[str, Any]:
    return {"cniVersion": RESULT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


# ---- the plugin <-> daemon wire format (one JSON object per line each way) --------------
def to_message(request: Request) -> dict[str, Any]:
    return {
        "command": request.command,
        "containerID": request.container_id,
        "netns": request.netns,
        "ifname": request.ifname,
        "args": dict(request.args),
        "config": dict(request.config),
    }


def from_message(message: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """A forwarded request, back into the env + stdin it came from, so that the daemon
    validates exactly what a plugin would (the socket is a trust boundary too)."""
    args = message.get("args")
    env = {
        "CNI_COMMAND": str(message.get("command", "")),
        "CNI_CONTAINERID": str(message.get("containerID", "")),
        "CNI_NETNS": str(message.get("netns", "")),
        "CNI_IFNAME": str(message.get("ifname", "")),
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else "",
    }
    return env, json.dumps(message.get("config") or {}).encode()
