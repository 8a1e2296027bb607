"""The conformance tier's pure parts: which images stand in for which, and reading
e2e.test's junit report."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackube.devbox import conformance, images
from stackube.devbox.settings import DevboxSettings

pytestmark = pytest.mark.unit

JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" disabled="0" errors="0" failures="1" time="61.2">
  <testsuite name="Kubernetes e2e suite" tests="4" failures="1" errors="0" skipped="2">
    <testcase name="[It] [sig-network] DNS should provide DNS for the cluster [Conformance]"
              classname="Kubernetes e2e suite" status="passed" time="12.0"></testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint [Conformance]"
              classname="Kubernetes e2e suite" status="failed" time="30.0">
      <failure message="connection refused" type="failed">boom</failure>
    </testcase>
    <testcase name="[It] [sig-apps] Deployment should run [Conformance]"
              classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-network] HostPort validates [Conformance]"
              classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped - Requires at least 2 nodes"></skipped>
    </testcase>
  </testsuite>
</testsuites>
"""


def test_the_report_counts_only_specs_that_ran_or_skipped_themselves() -> None:
    result = conformance.parse_junit(JUNIT)
    assert (result.tests, result.passed, result.failures, result.skipped) == (3, 1, 1, 1)
    assert result.failed == ("[sig-network] Services should serve a basic endpoint [Conformance]",)


def test_a_failed_suite_setup_is_a_failure() -> None:
    text = JUNIT.replace(
        '<testcase name="[It] [sig-network] DNS',
        '<testcase name="[SynchronizedBeforeSuite]" status="failed"><failure/></testcase>'
        '<testcase name="[It] [sig-network] DNS',
    )
    result = conformance.parse_junit(text)
    assert (result.failures, result.tests, result.passed) == (2, 4, 1)


def test_the_ci_run_skips_the_listed_known_failures_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None is known to fail today (NodePort and hostPort came with issue #14).
    assert conformance.KNOWN_FAILURES == ()
    assert conformance.suite_skip(None, skip_known_failures=True) == ""
    known = (("Services should be able to create a functioning NodePort service", "why"),)
    monkeypatch.setattr(conformance, "KNOWN_FAILURES", known)
    assert conformance.suite_skip(None, skip_known_failures=False) == ""
    ci = conformance.suite_skip(None, skip_known_failures=True)
    assert "functioning NodePort service" in ci and "|" not in ci
    assert conformance.suite_skip("Slow", skip_known_failures=False) == "Slow"
    assert conformance.suite_skip("Slow", skip_known_failures=True).endswith("|Slow")


def test_e2e_images_stand_in_under_their_registry_k8s_io_names() -> None:
    devbox = [
        images.ImageSpec(
            "library/nginx",
            "latest",
            (),
            base_layers=(b"NGINX",),
            cmd=("nginx",),
            stop_signal="SIGQUIT",
        ),
        images.ImageSpec("library/busybox", "latest", (), cmd=("sh",)),
        images.ImageSpec("pause", "3.10", (), entrypoint=("sleep", "1")),
    ]
    references = [
        "registry.k8s.io/e2e-test-images/agnhost:2.66.1",
        "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1",
        "registry.k8s.io/e2e-test-images/nginx:1.27.0-2",
        "registry.k8s.io/pause:3.10.2",
        "registry.k8s.io/e2e-test-images/volume/nfs:1.4.0",  # not ours to stand in for
        "docker.io/library/nginx:1.0",  # another registry
    ]
    specs = conformance.e2e_images(references, b"ROOTFS", b"AGNHOST", devbox, (b"C", b"K"))
    by_name = {f"{s.repository}:{s.tag}": s for s in specs}
    assert sorted(by_name) == [
        "e2e-test-images/agnhost:2.66.1",
        "e2e-test-images/glibc-dns-testing:2.1.1",
        "e2e-test-images/nginx:1.27.0-2",
        "pause:3.10.2",
    ]
    agnhost = by_name["e2e-test-images/agnhost:2.66.1"]
    assert agnhost.base_layers == (b"ROOTFS",) and agnhost.entrypoint == ("/agnhost",)
    assert {f.path for f in agnhost.files} >= {"agnhost", "localhost.crt", "localhost.key"}
    nginx = by_name["e2e-test-images/nginx:1.27.0-2"]
    assert (nginx.base_layers, nginx.cmd, nginx.stop_signal) == ((b"NGINX",), ("nginx",), "SIGQUIT")
    assert by_name["pause:3.10.2"].entrypoint == ("sleep", "1")
    assert conformance.image_repository("registry.k8s.io/pause:3.10.2") == (
        "registry.k8s.io",
        "pause",
        "3.10.2",
    )


def test_the_suite_runs_under_the_ginkgo_cli_in_parallel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conformance, "kubectl", lambda: "/usr/bin/kubectl")
    settings = DevboxSettings(state_dir=Path("/state"), cache_dir=Path("/cache"))
    bin_dir = Path("/cache/bin")
    argv = conformance.suite_argv(settings, bin_dir, Path("/r"), "Conformance", "Slow", processes=4)
    # Ginkgo's own flags come before the binary, the e2e framework's after `--`.
    binary = argv.index(str(bin_dir / "e2e.test"))
    assert argv[0] == str(bin_dir / "ginkgo")
    assert {"--procs=4", "--focus=Conformance", "--skip=Slow"} <= set(argv[1:binary])
    assert argv[binary + 1] == "--"
    assert f"--report-dir={Path('/r')}" in argv[binary + 2 :]
    assert not [a for a in argv[binary:] if a.startswith("--ginkgo.")]
    assert "--skip=" not in " ".join(conformance.suite_argv(settings, bin_dir, Path("/r"), "x", ""))
    assert "ginkgo" in [p.name for p in conformance.E2E_PROGRAMS]
