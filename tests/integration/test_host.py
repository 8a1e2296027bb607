"""Host-level pieces of the devbox against the real kernel and tools."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from stackube.cni import plugin, spec
from stackube.devbox.process import ProcessSpec, ProcessTable
from stackube.devbox.service import Service, ServiceError, ensure_running
from tests.integration.conftest import unique
from tests.unit.test_cni_spec import CONFIG, ENV

pytestmark = pytest.mark.integration


def ebtables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ebtables-nft", "-t", "nat", *args], capture_output=True, text=True, check=False
    )


def test_ebtables_wrapper_deletes_among_src_rules_that_ebtables_nft_cannot() -> None:
    chain = unique("stkbit").replace("-", "")
    assert ebtables("-N", chain, "-P", "RETURN").returncode == 0
    try:
        rule = ["-i", "tapit", "--among-src", "fa:16:3e:0a:0b:0c,fa:16:3e:01:02:03", "-j", "RETURN"]
        assert ebtables("-A", chain, *rule).returncode == 0
        # The bug this wrapper exists for: deleting by specification fails.
        assert ebtables("-D", chain, *rule).returncode != 0
        wrapper = resources.files("stackube.devbox").joinpath("files/ebtables-wrapper.py")
        done = subprocess.run(
            [sys.executable, str(wrapper), "-t", "nat", "--concurrent", "-D", chain, *rule],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "--among-src" not in ebtables("-L", chain).stdout
    finally:
        ebtables("-F", chain)
        ebtables("-X", chain)
    assert chain not in ebtables("-L").stdout


def test_process_table_starts_finds_and_stops_by_pid(tmp_path: Path) -> None:
    base = tmp_path
    table = ProcessTable(base / "run", base / "log")
    name = unique("sleeper")
    pid = table.start(ProcessSpec(name, ["sh", "-c", "echo hello; exec sleep 60"]))
    assert table.pid(name) == pid
    deadline = time.monotonic() + 10
    while "hello" not in table.log_file(name).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert table.stop(name, timeout=5)
    assert table.pid(name) is None
    assert not table.pid_file(name).exists()
    assert "hello" in table.log_file(name).read_text()
    # A recorded PID whose start time differs (reused PID) is not ours.
    table.pid_file(name).write_text(f"{pid} 1\n")
    assert table.pid(name) is None


def test_an_unreachable_daemon_is_a_cni_error_not_a_traceback() -> None:
    send = plugin.unix_socket_sender("/nonexistent/stackube-test.sock", timeout=1)
    out, err = io.StringIO(), io.StringIO()
    code = plugin.run(ENV, CONFIG, out, err, send)
    assert code == 1
    assert json.loads(out.getvalue())["code"] == spec.DAEMON_UNREACHABLE
    assert "not reachable" in err.getvalue()


def test_a_service_that_dies_at_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path / "run", tmp_path / "log")
    broken = Service(
        name="broken",
        process=lambda: ProcessSpec("broken", ["sh", "-c", "echo cannot bind 127.0.0.1:1; exit 3"]),
        probe=lambda: False,
        start_timeout=5,
    )
    with pytest.raises(ServiceError) as failed:
        ensure_running(broken, table)
    assert failed.value.service == "broken"
    assert failed.value.reason == "exited during start-up"
    assert "cannot bind 127.0.0.1:1" in failed.value.log_tail


def test_the_netns_directory_is_made_a_shared_mount_before_any_namespace_is(
    tmp_path: Path,
) -> None:
    """In a mount namespace of its own (nothing leaks to the host), a plain directory
    becomes a shared bind mount, and a second call keeps it so; the devbox's own
    /run/netns is shared (a netns mounted before the directory became a mount would be
    hidden under it, and its pod stuck Terminating: "unlinkat ...: device or resource
    busy")."""
    directory = tmp_path / "netns"
    script = (
        "import sys; from pathlib import Path; import stackube.devbox.node as n; "
        "n.NETNS_DIR = Path(sys.argv[1]); n.shared_netns_dir(); n.shared_netns_dir()"
    )
    shell = (
        f"findmnt {directory} >/dev/null && echo mounted-before; "
        f'"{sys.executable}" -c "{script}" {directory} && '
        f"findmnt -rn -o PROPAGATION {directory}"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["shared"], done.stdout  # one mount, not before
    assert propagation(directory) == [], "the test's mount leaked to the host"
    assert propagation(Path("/run/netns"))[:1] == ["shared"]


def propagation(path: Path) -> list[str]:
    """findmnt's PROPAGATION of each mount at `path` ([]: not a mount point)."""
    done = subprocess.run(
        ["findmnt", "-rn", "-o", "PROPAGATION", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout.split()
