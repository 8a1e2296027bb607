"""Every `stackube` command given bad arguments or files says what is wrong, exits
non-zero, and shows no Python traceback (the real console script, real files; the one
Keystone here is an address where nothing listens)."""

from __future__ import annotations

import datetime
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stackube.auth import login

pytestmark = pytest.mark.integration

STACKUBE = str(Path(sys.executable).with_name("stackube"))
# Under /proc: never there, and nothing can make it (not even root, as these run).
MISSING = "/proc/stackube-test"
# Loopback port 9 (discard): nothing listens, the connection is refused at once.
NO_KEYSTONE = "http://127.0.0.1:9/v3"
LOGIN = ["login", f"--auth-url={NO_KEYSTONE}", "--username=u", "--project-name=p"]
KUBECONFIG = ["kubeconfig", "--tenant=t", "--server=https://127.0.0.1:6443", "--auth-url=a"]

CASES = {
    "no command": ([], {}, "the following arguments are required: command"),
    "unknown devbox action": (["devbox", "bogus"], {}, "invalid choice: 'bogus'"),
    "kubeconfig, CA missing": (
        [*KUBECONFIG, f"--certificate-authority={MISSING}"],
        {},
        f"cannot read the API server's CA file {MISSING}: No such file or directory",
    ),
    "kubeconfig, output not writable": (
        [*KUBECONFIG, "--certificate-authority=/etc/hostname", f"--output={MISSING}/k"],
        {},
        f"cannot write {MISSING}/k",
    ),
    "login, nothing given": (["login"], {}, "no auth-url: pass --auth-url or set OS_AUTH_URL"),
    "login, no password": (LOGIN, {}, "no password: set OS_PASSWORD"),
    "login, Keystone unreachable": (
        LOGIN,
        {"OS_PASSWORD": "x"},
        f"stackube login: Keystone login at {NO_KEYSTONE}: Unable to establish connection",
    ),
    "controller, config missing": (
        ["controller", f"--config-dir={MISSING}"],
        {},
        f"cannot read the configuration directory {MISSING}",
    ),
    "cni-daemon, config missing": (
        ["cni-daemon", f"--config-dir={MISSING}"],
        {},
        f"cannot read the configuration directory {MISSING}",
    ),
    "auth-webhook, config missing": (
        ["auth-webhook", f"--config-dir={MISSING}", "--tls-cert=/x", "--tls-key=/y"],
        {},
        f"cannot read the configuration directory {MISSING}",
    ),
    "proxy, kubeconfig missing": (
        ["proxy", f"--kubeconfig={MISSING}"],
        {},
        f"no usable kubeconfig at {MISSING}",
    ),
    "cni-install, directory not writable": (
        ["cni-install", f"--bin-dir={MISSING}"],
        {},
        f"error: {MISSING}",
    ),
    "manifests, directory not writable": (
        ["manifests", f"--output={MISSING}"],
        {},
        f"error: {MISSING}",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_message_not_a_traceback(case: str, tmp_path: Path) -> None:
    args, extra_env, message = CASES[case]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), **extra_env}
    done = subprocess.run(
        [STACKUBE, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    assert message in done.stderr, output


def test_forgetting_a_keystone_drops_its_kept_tokens_only(tmp_path: Path) -> None:
    """What `devbox down --purge` does to the user's token cache (files, 0600)."""
    cache = login.TokenCache(tmp_path / "tokens")
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    cache.store("a", "token-a", expires, "http://127.0.0.1:5000/v3")
    cache.store("b", "token-b", expires, "http://keystone.example:5000/v3")
    (tmp_path / "tokens" / "old.json").write_text('{"token": "t", "expires_at": "x"}')
    assert stat.S_IMODE((tmp_path / "tokens" / "a.json").stat().st_mode) == 0o600
    assert cache.forget("http://127.0.0.1:5000/v3") == 1
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == ["b.json", "old.json"]
    assert cache.load("b", datetime.datetime.now(datetime.UTC)) == ("token-b", expires)
