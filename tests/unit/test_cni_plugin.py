"""The kubestack executable's logic with the daemon replaced at the wire."""

import io
import json
from typing import Any

import pytest

from stackube.cni import plugin, spec
from tests.unit.test_cni_spec import CONFIG, ENV

pytestmark = pytest.mark.unit


def invoke(
    env: dict[str, str], stdin: bytes, reply: dict[str, Any] | Exception
) -> tuple[int, dict[str, Any], str, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def send(message: dict[str, Any]) -> dict[str, Any]:
        sent.append(message)
        if isinstance(reply, Exception):
            raise reply
        return reply

    out, err = io.StringIO(), io.StringIO()
    code = plugin.run(env, stdin, out, err, lambda _path: send)
    return code, json.loads(out.getvalue() or "{}"), err.getvalue(), sent


def test_add_is_forwarded_and_the_result_printed() -> None:
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": []}
    code, printed, _, sent = invoke(ENV, CONFIG, {"result": result})
    assert code == 0 and printed == result
    assert sent[0]["command"] == "ADD" and sent[0]["args"]["K8S_POD_NAME"] == "nginx"


def test_daemon_errors_become_cni_error_objects_and_are_logged() -> None:
    reply = {"error": {"code": spec.NO_TENANT_NETWORK, "msg": "namespace test has no Network"}}
    code, printed, logged, _ = invoke(ENV, CONFIG, reply)
    assert code == 1
    assert printed == {"cniVersion": "1.0.0", "code": 100, "msg": "namespace test has no Network"}
    assert "namespace test has no Network" in logged


def test_version_is_answered_without_the_daemon() -> None:
    code, printed, _, sent = invoke({"CNI_COMMAND": "VERSION"}, b"", RuntimeError("no"))
    assert code == 0 and sent == [] and "1.0.0" in printed["supportedVersions"]


def test_bad_input_never_reaches_the_daemon() -> None:
    config = json.dumps({"cniVersion": "0.4.0", "name": "n"}).encode()
    code, printed, _, sent = invoke({**ENV, "CNI_IFNAME": ""}, config, {"result": {}})
    assert code == 1 and sent == []
    assert printed["code"] == spec.INVALID_ENVIRONMENT


def test_the_socket_comes_from_env_then_the_network_configuration() -> None:
    assert plugin.socket_path({}, {}) == plugin.DEFAULT_SOCKET
    assert plugin.socket_path({}, {"socket": "/run/x.sock"}) == "/run/x.sock"
    assert plugin.socket_path({plugin.SOCKET_ENV: "/tmp/y"}, {"socket": "/run/x"}) == "/tmp/y"
    assert plugin.socket_path({}, {"socket": 7}) == plugin.DEFAULT_SOCKET


def test_the_daemon_revalidates_exactly_what_the_plugin_parsed() -> None:
    request = spec.parse_request(ENV, CONFIG)
    again = spec.parse_request(*spec.from_message(spec.to_message(request)))
    assert again == request
