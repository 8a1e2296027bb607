"""gVisor on a node, pure parts: the shim's configuration, containerd's runtime table,
the build's OOM-score adjustment, the shim's start answer, and a Tenant's runtime."""

from __future__ import annotations

import select
import socket
import threading
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from stackube.api.crds import tenant_crd
from stackube.api.manifests import admission_policies, runtime_classes
from stackube.api.types import (
    LABEL_RUNTIME_CLASS,
    LABEL_RUNTIME_CLASS_POLICY,
    SpecError,
    parse_tenant,
    runtime_class_labels,
)
from stackube.cni import portforward, probe_relay
from stackube.devbox import gobuild, gvisor, node
from stackube.devbox.settings import DevboxSettings
from stackube.host.runsc import Runsc
from stackube.runtime.shim import BootstrapError, bootstrap_address

pytestmark = pytest.mark.unit

SETTINGS = DevboxSettings(state_dir=Path("/state"), cache_dir=Path("/cache"), node_name="n1")
PATHS = node.NodePaths(SETTINGS.node_dir)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def tenant(**spec: str) -> dict[str, object]:
    return {"metadata": {"name": "acme"}, "spec": {"username": "u", "password": "p", **spec}}


def test_containerd_runs_runsc_through_gvisors_shim_with_its_config_file() -> None:
    config = tomllib.loads(node.containerd_config(SETTINGS, PATHS))
    runtimes = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert runtimes["runsc"] == {
        "runtime_type": "io.containerd.runsc.v1",
        "options": {
            "TypeUrl": "io.containerd.runsc.v1.options",
            "ConfigPath": "/state/node/containerd/runsc.toml",
        },
    }
    # runc stays the default: system pods and soft tenants keep it.
    assert (
        config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["default_runtime_name"]
        == "runc"
    )
    assert node.containerd_path(PATHS, "/usr/bin:/bin") == "/state/node/runtime/bin:/usr/bin:/bin"


def test_the_shim_config_names_the_pinned_runsc_its_platform_and_per_sandbox_logs() -> None:
    shim = tomllib.loads(gvisor.shim_config(SETTINGS, PATHS.runsc_root))
    assert shim["binary_name"] == f"/cache/gvisor/{SETTINGS.gvisor_version}/bin/runsc"
    assert shim["root"] == "/state/node/containerd/runsc"
    assert shim["log_path"] == "/state/log/runsc/%ID%/shim.log"
    assert shim["runsc_config"]["platform"] == "systrap"
    kvm = DevboxSettings.from_env(
        {"STACKUBE_DEVBOX_DIR": "/s", "STACKUBE_DEVBOX_GVISOR_PLATFORM": "kvm"}
    )
    assert tomllib.loads(gvisor.shim_config(kvm, Path("/r")))["runsc_config"]["platform"] == "kvm"
    with pytest.raises(ValueError, match="STACKUBE_DEVBOX_GVISOR_PLATFORM='xen'"):
        DevboxSettings.from_env({"STACKUBE_DEVBOX_GVISOR_PLATFORM": "xen"})


def test_the_wrapper_runs_the_real_shim_behind_the_start_translation() -> None:
    text = gvisor.shim_wrapper(SETTINGS, "/venv/bin/python3")
    assert text.startswith("#!/bin/sh\n")
    assert (
        f"exec /venv/bin/python3 -m stackube.runtime.shim "
        f'/cache/gvisor/{SETTINGS.gvisor_version}/bin/containerd-shim-runsc-v1 "$@"'
    ) in text


def test_capability_bits_are_read_from_the_bounding_set() -> None:
    status = "Name:\tx\nCapEff:\t000001ffffffffff\nCapBnd:\t000001fffeffffff\n"
    assert not gvisor.has_capability(status, gvisor.CAP_SYS_RESOURCE)  # bit 24 cleared
    assert gvisor.has_capability(status, 23)
    assert gvisor.has_capability("CapBnd:\t0000000001000000\n", gvisor.CAP_SYS_RESOURCE)
    assert not gvisor.has_capability("Name:\tno caps line\n", 0)


def test_the_shim_oom_adjustment_changes_exactly_upstreams_line_or_refuses() -> None:
    source = "const (\n\toomScoreMax = -999\n)\nfunc f() { sys.SetOOMScore(pid, oomScoreMax) }\n"
    adjusted = gvisor.shim_oom_overlay(source)
    assert adjusted == source.replace("oomScoreMax = -999", "oomScoreMax = 0")
    for changed in (source.replace("-999", "-998"), source + "\toomScoreMax = -999\n"):
        with pytest.raises(gobuild.BuildError, match="expected one 'oomScoreMax = -999'"):
            gvisor.shim_oom_overlay(changed)


@pytest.mark.parametrize(
    ("output", "address"),
    [
        (
            '{"version":2,"address":"unix:///run/containerd/s/ab","protocol":"ttrpc"}\n',
            "unix:///run/containerd/s/ab",
        ),
        ("unix:///run/containerd/s/cd\n", "unix:///run/containerd/s/cd"),
        ('{"version":2,"address":"unix:///run/x"}', "unix:///run/x"),
    ],
)
def test_the_start_answer_becomes_the_address_containerd_16_dials(
    output: str, address: str
) -> None:
    assert bootstrap_address(output) == address


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ('{"version":3,"address":"unix:///x","protocol":"ttrpc"}', "answered version 3"),
        ('{"version":2,"address":"unix:///x","protocol":"grpc"}', "over 'grpc'"),
        ('{"version":2}', "answered version 2"),
        ("{not json", "unreadable JSON"),
    ],
)
def test_a_start_answer_containerd_16_cannot_use_is_an_error(output: str, error: str) -> None:
    with pytest.raises(BootstrapError, match=error):
        bootstrap_address(output)


def test_a_tenants_runtime_class_and_policy_become_namespace_labels() -> None:
    hard = parse_tenant(tenant(runtimeClassName="gvisor"))
    assert (hard.runtime_class_name, hard.runtime_class_policy) == ("gvisor", "Enforce")
    assert runtime_class_labels(hard) == {
        LABEL_RUNTIME_CLASS: "gvisor",
        LABEL_RUNTIME_CLASS_POLICY: "Enforce",
    }
    preferred = parse_tenant(tenant(runtimeClassName="gvisor", runtimeClassPolicy="Default"))
    assert runtime_class_labels(preferred)[LABEL_RUNTIME_CLASS_POLICY] == "Default"
    # A soft tenant (or one whose runtime was removed) has neither label: None removes.
    soft = parse_tenant(tenant(runtimeClassPolicy="Default"))
    assert runtime_class_labels(soft) == {
        LABEL_RUNTIME_CLASS: None,
        LABEL_RUNTIME_CLASS_POLICY: None,
    }


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"runtimeClassName": "G Visor"}, "spec.runtimeClassName must name a RuntimeClass"),
        ({"runtimeClassName": "gvisor", "runtimeClassPolicy": "Always"}, "one of Enforce, Default"),
    ],
)
def test_bad_runtime_fields_name_the_field(spec: dict[str, str], error: str) -> None:
    with pytest.raises(SpecError, match=error):
        parse_tenant(tenant(**spec))


def test_the_crd_validates_the_runtime_fields_as_the_controller_does() -> None:
    props = tenant_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    spec = props["spec"]["properties"]
    assert spec["runtimeClassPolicy"]["enum"] == ["Enforce", "Default"]
    assert spec["runtimeClassPolicy"]["default"] == "Enforce"
    assert spec["runtimeClassName"]["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def test_runtime_classes_and_the_runtime_policies_are_shipped() -> None:
    classes = {c["metadata"]["name"]: c for c in runtime_classes()}
    assert classes["gvisor"]["handler"] == gvisor.HANDLER
    assert set(classes["gvisor"]["overhead"]["podFixed"]) == {"cpu", "memory"}
    assert classes["runc"]["handler"] == "runc"
    shipped = [
        d
        for d in yaml.safe_load_all((DEPLOY / "runtime" / "runtime-classes.yaml").read_text())
        if d
    ]
    assert shipped == runtime_classes(), f"regenerate with `stackube manifests -o {DEPLOY}`"
    kinds = {(d["kind"], d["metadata"]["name"]) for d in admission_policies()}
    assert ("MutatingAdmissionPolicy", "stackube-tenant-runtime") in kinds
    assert ("ValidatingAdmissionPolicy", "stackube-tenant-runtime") in kinds
    mutation = next(d for d in admission_policies() if d["kind"] == "MutatingAdmissionPolicy")
    # Kubernetes' RuntimeClass admission must run again to add the class's overhead.
    assert mutation["spec"]["reinvocationPolicy"] == "IfNeeded"
    assert "runtime/runtime-classes.yaml" in (DEPLOY / "kustomization.yaml").read_text()


# ---- probes and port-forward into gVisor pods (cni/portforward.py, host/runsc.py) -------


def test_the_node_daemon_knows_runsc_as_containerds_shim_runs_it() -> None:
    argv = node.cni_daemon_argv(SETTINGS, PATHS)
    assert f"--runsc={SETTINGS.gvisor_bin_dir / 'runsc'}" in argv
    # The shim's runsc.toml root, then containerd's namespace of the CRI's containers.
    config = tomllib.loads(gvisor.shim_config(SETTINGS, PATHS.runsc_root))
    assert f"--runsc-root={Path(config['root']) / 'k8s.io'}" in argv


def test_a_gvisor_sandbox_is_known_by_runscs_state_file(tmp_path: Path) -> None:
    runsc = Runsc("runsc", tmp_path)
    sandbox, container = "a" * 64, "b" * 64
    (tmp_path / f"{container}_sandbox:{sandbox}.state").touch()  # a container in it
    assert not runsc.runs(sandbox)
    (tmp_path / f"{sandbox}_sandbox:{sandbox}.state").touch()
    assert runsc.runs(sandbox) and not runsc.runs(container)


def test_port_forward_rules_send_loopback_tcp_to_the_listener_but_its_own_port() -> None:
    text = portforward.render_rules(65535)
    assert text.splitlines() == [
        "*nat",
        ":STKB-PORT-FORWARD - [0:0]",
        "-F STKB-PORT-FORWARD",
        "-A STKB-PORT-FORWARD -d 127.0.0.1/32 -p tcp -m tcp ! --dport 65535 "
        "-j REDIRECT --to-ports 65535",
        "COMMIT",
    ]


def _answering_upstream(half_close: bool) -> probe_relay.Upstream:
    """An upstream that answers its request 0.2 s later. One that can be half-closed
    answers after the client's EOF; one that cannot (gVisor's stream) ends the
    connection without an answer when EOF arrives first."""
    ours, theirs = socket.socketpair()

    def serve() -> None:
        request = theirs.recv(100)
        if half_close:
            while theirs.recv(100):
                pass
        else:
            readable, _, _ = select.select([theirs], [], [], 0.2)
            if readable and not theirs.recv(100):
                theirs.close()  # EOF: gVisor's stream ends here
                return
        theirs.sendall(b"answer to " + request)
        theirs.close()

    threading.Thread(target=serve, daemon=True).start()
    return probe_relay.Upstream(lambda: ours, "test", half_close=half_close)


@pytest.mark.parametrize("half_close", [True, False])
def test_a_relayed_client_that_half_closes_still_gets_its_answer(half_close: bool) -> None:
    upstream = _answering_upstream(half_close)
    client, relayed = socket.socketpair()
    worker = threading.Thread(target=probe_relay.relay, args=(relayed, upstream, "test"))
    worker.start()
    client.sendall(b"GET")
    client.shutdown(socket.SHUT_WR)
    client.settimeout(5)
    received = b""
    while data := client.recv(100):
        received += data
    worker.join(5)
    assert received == b"answer to GET"
    assert not worker.is_alive()


def test_a_relayed_connection_lives_while_either_direction_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The idle limit counts bytes either way: a long answer to a silent client is not
    cut (the client's own direction idles longer than the limit)."""
    monkeypatch.setattr(probe_relay, "POLL", 0.05)
    ours, theirs = socket.socketpair()

    def stream() -> None:
        for _ in range(8):  # 0.8 s of answer, a chunk every 0.1 s
            theirs.sendall(b"x")
            time.sleep(0.1)
        theirs.close()

    threading.Thread(target=stream, daemon=True).start()
    upstream = probe_relay.Upstream(lambda: ours, "test", idle_timeout=0.3)
    client, relayed = socket.socketpair()
    worker = threading.Thread(target=probe_relay.relay, args=(relayed, upstream, "test"))
    worker.start()
    client.settimeout(5)
    received = b""
    while data := client.recv(100):
        received += data
    assert received == b"x" * 8
    client.close()
    worker.join(5)
    assert not worker.is_alive()


def test_a_refused_upstream_resets_the_client() -> None:
    def refuse() -> socket.socket:
        raise ConnectionRefusedError("nothing listens")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        relayed, _ = listener.accept()
    started = time.monotonic()
    probe_relay.relay(relayed, probe_relay.Upstream(refuse, "test"), "test")
    assert time.monotonic() - started < 1 and relayed.fileno() != -1  # the caller closes it
    relayed.close()
    with pytest.raises(ConnectionResetError):
        client.recv(10)
    client.close()
