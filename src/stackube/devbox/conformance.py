"""The upstream Kubernetes conformance suite against the devbox (docs/conformance.md).

`e2e.test` and `agnhost` are built from k8s.io/kubernetes at the devbox's version (the
same throwaway module as the control plane), the e2e images from a Debian 12 root file
system (`mmdebstrap`: curl, netcat-openbsd, dig, iproute2 are what the tests exec in
them) plus our builds, pushed to the devbox's registry under the registry.k8s.io names
`e2e.test --list-images` prints (containerd mirrors registry.k8s.io there). Everything
built is cached under the cache directory; a second run only pushes what is missing.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stackube.devbox import gobuild, images, nginx_image, rootfs
from stackube.devbox.commands import StepError, run
from stackube.devbox.node import NodeDevbox
from stackube.devbox.pki import CertSpec, PkiStore
from stackube.devbox.settings import DevboxSettings

E2E_PROGRAMS = (
    gobuild.GoProgram("e2e.test", f"{gobuild.KUBERNETES_MODULE}/test/e2e", test=True),
    gobuild.GoProgram("agnhost", f"{gobuild.KUBERNETES_MODULE}/test/images/agnhost"),
    # The Ginkgo CLI at the version k8s.io/kubernetes requires: it runs e2e.test's specs
    # in parallel processes and merges their reports (as hack/ginkgo-e2e.sh does).
    gobuild.GoProgram("ginkgo", "github.com/onsi/ginkgo/v2/ginkgo"),
)
# Parallel Ginkgo processes: the specs mostly wait for pods and the network, so three
# finish in about half the time of one on two cores; none of the 47 is [Serial].
PROCESSES = 3
# What the tests exec inside agnhost and glibc-dns-testing (sh, curl, nc -v -t/-u -w,
# nslookup, dig, getent, seq), as Debian 12 packages; upstream builds agnhost on Alpine.
ROOTFS_PACKAGES = (
    "bash",
    "curl",
    "netcat-openbsd",
    "bind9-dnsutils",
    "iproute2",
    "procps",
    "ca-certificates",
)
# The sig-network conformance tests (47 in v1.37.2). A skip needs a reason written down
# here; none of the 47 needs a second node, so none is skipped.
FOCUS = r"\[sig-network\].*\[Conformance\]"
SKIPS: tuple[tuple[str, str], ...] = ()
# Failing today for a feature another issue brings; `--skip-known-failures` (the CI
# run) leaves them out so that CI tells regressions apart. docs/conformance.md.
KNOWN_FAILURES: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SuiteResult:
    tests: int
    failures: int
    skipped: int
    failed: tuple[str, ...]

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.skipped


def e2e_dir(settings: DevboxSettings) -> Path:
    return settings.kube_cache_dir / "e2e"


def build_programs(settings: DevboxSettings, say: Callable[[str], None]) -> Path:
    """e2e.test and agnhost (static, CGO off) in the cache; built once per version."""
    bin_dir = e2e_dir(settings) / "bin"
    names = [p.name for p in E2E_PROGRAMS]
    if not gobuild.missing_programs(bin_dir, names):
        return bin_dir
    builder = gobuild.GoBuilder(settings.cache_dir / "go-build-modules")
    go_mod = builder.module_go_mod(gobuild.KUBERNETES_MODULE, settings.kubernetes_version)
    plan = gobuild.kubernetes_plan(settings.kubernetes_version, go_mod, commands=())
    plan = gobuild.BuildPlan(plan.go_mod, E2E_PROGRAMS, plan.ldflags)
    builder.build(
        f"kubernetes-e2e-{settings.kubernetes_version}",
        plan,
        bin_dir,
        on_program=lambda name: say(f"  go build {name} (minutes, once)"),
    )
    return bin_dir


def debian_rootfs(settings: DevboxSettings, say: Callable[[str], None]) -> Path:
    """A Debian 12 root file system with ROOTFS_PACKAGES (a tar, cached); the user and
    group agnhost's image has."""
    hooks = [
        'chroot "$1" groupadd -g 50000 group-defined-in-image',
        'chroot "$1" useradd -u 1000 -g 50000 -M user-defined-in-image',
        'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*',
    ]
    out = e2e_dir(settings) / f"rootfs-{rootfs.SUITE}.tar"
    return rootfs.debian_rootfs(out, ROOTFS_PACKAGES, hooks, say)


def listed_images(e2e_test: Path) -> list[str]:
    """The image references this e2e.test uses (`--list-images`)."""
    return [
        line.strip()
        for line in run([str(e2e_test), "--list-images"]).stdout.splitlines()
        if line.strip()
    ]


def image_repository(reference: str) -> tuple[str, str, str]:
    """registry.k8s.io/e2e-test-images/agnhost:2.66.1 -> (registry.k8s.io,
    e2e-test-images/agnhost, 2.66.1)."""
    name, _, tag = reference.rpartition(":")
    registry, _, repository = name.partition("/")
    return registry, repository, tag


def e2e_images(
    references: Sequence[str],
    rootfs: bytes,
    agnhost: bytes,
    devbox: Sequence[images.ImageSpec],
    porter_cert: tuple[bytes, bytes],
) -> list[images.ImageSpec]:
    """The images of `references` (registry.k8s.io only) this devbox can stand in for:
    agnhost and glibc-dns-testing on the Debian root file system, nginx, busybox and pause
    as the devbox's own (Debian's nginx, busybox, a sleeping busybox)."""
    by_repository = {spec.repository: spec for spec in devbox}
    cert, key = porter_cert
    wanted = []
    for reference in references:
        registry, repository, tag = image_repository(reference)
        if registry != "registry.k8s.io":
            continue
        base = repository.rsplit("/", 1)[-1]
        if base == "agnhost":
            files = (
                images.File("agnhost", agnhost, mode=0o755),
                images.File("agnhost-2", link_to="/agnhost"),
                images.File("localhost.crt", cert),
                images.File("localhost.key", key, mode=0o600),
                images.File("uploads", directory=True, mode=0o777),
            )
            wanted.append(
                images.ImageSpec(
                    repository,
                    tag,
                    files,
                    base_layers=(rootfs,),
                    entrypoint=("/agnhost",),
                    cmd=("pause",),
                    exposed_ports=("80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"),
                )
            )
        elif base == "glibc-dns-testing":
            wanted.append(
                images.ImageSpec(repository, tag, (), base_layers=(rootfs,), cmd=("bash",))
            )
        elif base in ("nginx", "busybox") or repository == "pause":
            source = by_repository["pause" if repository == "pause" else f"library/{base}"]
            wanted.append(dataclasses.replace(source, repository=repository, tag=tag))
    return wanted


def skip_expression(skips: Sequence[tuple[str, str]] = SKIPS) -> str:
    """A --ginkgo.skip regular expression matching the named tests ("" for none). Only
    metacharacters are escaped: Go's regexp refuses Python's escaped blanks."""
    return "|".join(re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", name) for name, _ in skips)


def suite_skip(extra: str | None, skip_known_failures: bool) -> str:
    """The --ginkgo.skip expression: SKIPS, KNOWN_FAILURES if asked, and `extra`."""
    listed = skip_expression(SKIPS + (KNOWN_FAILURES if skip_known_failures else ()))
    return "|".join(part for part in (listed, extra or "") if part)


def kubectl() -> str:
    """The kubectl the tests exec (`kubectl exec` into pods) and we run."""
    found = shutil.which("kubectl")
    if found is None:
        raise StepError("kubectl is not on PATH (the suite execs it)")
    return found


def suite_argv(
    settings: DevboxSettings,
    bin_dir: Path,
    report_dir: Path,
    focus: str,
    skip: str,
    *,
    processes: int = PROCESSES,
) -> list[str]:
    """The Ginkgo CLI running e2e.test in `processes` parallel processes: Ginkgo's flags
    before the binary, the e2e framework's after `--`. The framework's own
    ReportAfterSuite writes the merged junit_01.xml into `report_dir`."""
    argv = [
        str(bin_dir / "ginkgo"),
        f"--procs={processes}",
        f"--focus={focus}",
        "--timeout=2h",
        "--no-color",
    ]
    if skip:
        argv.append(f"--skip={skip}")
    return [
        *argv,
        str(bin_dir / "e2e.test"),
        "--",
        f"--kubeconfig={settings.admin_kubeconfig}",
        "--provider=local",
        f"--kubectl-path={kubectl()}",
        f"--report-dir={report_dir}",
        f"--dns-domain={settings.cluster_domain}",
    ]


def parse_junit(text: str) -> SuiteResult:
    """e2e.test's junit report (Ginkgo v2: one testcase per spec, with a `status`) ->
    counts of the specs that ran. Specs the focus left out are `skipped` with the bare
    message "skipped"; a spec that skipped itself says why ("skipped - <reason>"). A
    failed suite setup counts as a failure."""
    root = ET.fromstring(text)  # noqa: S314 - our own e2e.test's output
    tests = failures = skipped = 0
    failed = []
    for case in root.iter("testcase"):
        name = case.get("name", "")
        status = case.get("status", "")
        is_spec = name.startswith("[It]")
        if status == "skipped":
            element = case.find("skipped")
            message = element.get("message", "") if element is not None else ""
            if is_spec and message.strip() != "skipped":
                tests += 1
                skipped += 1
            continue
        if status in ("failed", "panicked", "interrupted", "aborted", "timedout"):
            tests += 1  # a failed suite setup counts as one failed test
            failures += 1
            failed.append(name.removeprefix("[It] ").strip())
        elif is_spec and status == "passed":
            tests += 1
    return SuiteResult(tests, failures, skipped, tuple(failed))


def timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def porter_certificate(settings: DevboxSettings) -> tuple[bytes, bytes]:
    """agnhost porter's TLS certificate and key for `localhost` (the apiserver's proxy
    does not verify them; upstream ships a self-signed pair in the image)."""
    store = PkiStore(settings.pki_dir)
    paths = store.ensure_leaf(
        CertSpec("e2e-porter", "localhost", dns_names=("localhost",), server=True)
    )
    return paths.cert.read_bytes(), paths.key.read_bytes()


def push_e2e_images(
    settings: DevboxSettings, bin_dir: Path, rootfs: Path, say: Callable[[str], None]
) -> list[str]:
    """Build and push the e2e images this devbox stands in for; returns their references."""
    nginx = nginx_image.image_spec(nginx_image.rootfs_tar(settings.cache_dir, say).read_bytes())
    specs = e2e_images(
        listed_images(bin_dir / "e2e.test"),
        rootfs.read_bytes(),
        (bin_dir / "agnhost").read_bytes(),
        [*NodeDevbox(settings).image_specs(), nginx],
        porter_certificate(settings),
    )
    for spec in specs:
        images.push(images.build(spec), settings.registry_url)
    return [f"registry.k8s.io/{spec.repository}:{spec.tag}" for spec in specs]


def run_suite(
    settings: DevboxSettings,
    say: Callable[[str], None],
    *,
    focus: str = FOCUS,
    skip: str | None = None,
    skip_known_failures: bool = False,
    report_dir: Path | None = None,
    processes: int = PROCESSES,
    timeout: float = 3 * 3600,
) -> SuiteResult:
    """Build what is missing, push the images, make the node take pods, run the suite;
    the junit report and e2e.test's log go to `report_dir`."""
    bin_dir = build_programs(settings, say)
    rootfs = debian_rootfs(settings, say)
    pushed = push_e2e_images(settings, bin_dir, rootfs, say)
    say(f"  images: {', '.join(pushed)}")
    report_dir = report_dir or settings.state_dir / "conformance" / timestamp()
    report_dir.mkdir(parents=True, exist_ok=True)
    # The suite wants every node schedulable (the integration tier cordons it).
    run([kubectl(), f"--kubeconfig={settings.admin_kubeconfig}", "uncordon", settings.node_name])
    argv = suite_argv(
        settings,
        bin_dir,
        report_dir,
        focus,
        suite_skip(skip, skip_known_failures),
        processes=processes,
    )
    say(f"  {' '.join(argv)}")
    log = report_dir / "e2e.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    junit = report_dir / "junit_01.xml"
    if not junit.exists():
        raise StepError(f"e2e.test exited {proc.returncode} without a report; see {log}")
    return parse_junit(junit.read_text())
