"""The CNI request parser: what containerd sends, what it must refuse, and a fuzz that
it never raises anything but a CNI error."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackube.cni import spec

pytestmark = pytest.mark.unit

CONFIG = json.dumps({"cniVersion": "1.0.0", "name": "stackube", "type": "kubestack"}).encode()
# As containerd invokes a plugin (seen in TESTBED.md).
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/var/run/netns/cni-1234",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=test;K8S_POD_NAME=nginx;"
    "K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1",
}


def test_containerd_add_parses() -> None:
    req = spec.parse_request(ENV, CONFIG)
    assert (req.command, req.container_id, req.netns, req.ifname) == (
        "ADD",
        "abc123",
        "/var/run/netns/cni-1234",
        "eth0",
    )
    assert req.pod == spec.PodRef("test", "nginx", "u-1", "abc123")
    assert req.cni_version == "1.0.0"


def test_the_second_del_has_no_netns_and_no_prev_result() -> None:
    req = spec.parse_request({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, CONFIG)
    assert req.netns == "" and req.prev_result is None


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_older_configs_are_accepted(version: str) -> None:
    config = json.dumps({"cniVersion": version, "name": "n", "type": "kubestack"}).encode()
    assert spec.parse_request(ENV, config).cni_version == version


@pytest.mark.parametrize(
    ("env", "stdin", "code"),
    [
        ({**ENV, "CNI_COMMAND": "FROB"}, CONFIG, spec.INVALID_ENVIRONMENT),
        (ENV, b"{not json", spec.DECODE_FAILURE),
        (ENV, b"[1, 2]", spec.DECODE_FAILURE),
        (ENV, b'{"name": "n"}', spec.INVALID_NETWORK_CONFIG),
        (ENV, b'{"cniVersion": "9.9.9"}', spec.INCOMPATIBLE_VERSION),
        (
            {k: v for k, v in ENV.items() if k != "CNI_CONTAINERID"},
            CONFIG,
            spec.INVALID_ENVIRONMENT,
        ),
        ({**ENV, "CNI_NETNS": ""}, CONFIG, spec.INVALID_ENVIRONMENT),
        ({**ENV, "CNI_IFNAME": "a-very-long-interface-name"}, CONFIG, spec.INVALID_ENVIRONMENT),
        ({**ENV, "CNI_ARGS": "K8S_POD_NAMESPACE"}, CONFIG, spec.INVALID_ENVIRONMENT),
        ({**ENV, "CNI_ARGS": "IgnoreUnknown=1"}, CONFIG, spec.INVALID_ENVIRONMENT),
    ],
)
def test_bad_input_gets_the_specs_error_code(env: dict[str, str], stdin: bytes, code: int) -> None:
    with pytest.raises(spec.CniError) as failed:
        spec.parse_request(env, stdin)
    assert failed.value.code == code
    doc = failed.value.to_json()
    assert doc["code"] == code and doc["msg"] and doc["cniVersion"] == "1.0.0"


def test_version_needs_no_config() -> None:
    assert spec.parse_request({"CNI_COMMAND": "VERSION"}, b"").command == "VERSION"
    assert "1.0.0" in spec.version_result()["supportedVersions"]


@settings(max_examples=400, deadline=None)
@given(
    env=st.dictionaries(
        st.sampled_from(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"]),
        st.one_of(st.sampled_from(["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"]), st.text()),
    ),
    stdin=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda d: json.dumps(d).encode(),
            st.dictionaries(
                st.sampled_from(["cniVersion", "name", "type", "prevResult"]),
                st.one_of(
                    st.text(), st.integers(), st.none(), st.sampled_from(spec.SUPPORTED_VERSIONS)
                ),
            ),
        ),
    ),
)
def test_fuzz_the_parser_only_ever_raises_cni_errors(env: dict[str, str], stdin: bytes) -> None:
    try:
        spec.parse_request(env, stdin)
    except spec.CniError as exc:
        assert isinstance(exc.code, int) and exc.msg
