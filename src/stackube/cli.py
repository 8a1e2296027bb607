"""The `stackube` command line."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from stackube.api import helm_chart
from stackube.api.crds import all_crds
from stackube.api.manifests import (
    admission_policies,
    cluster_dns,
    cni_rbac,
    controller_rbac,
    csi,
    proxy_rbac,
    runtime_classes,
    seed_layout,
)
from stackube.auth.options import (
    add_kubeconfig_arguments,
    add_login_arguments,
    add_webhook_arguments,
)
from stackube.cni.options import add_arguments as add_cni_daemon_arguments
from stackube.controller.options import add_arguments
from stackube.devbox.box import Devbox
from stackube.devbox.commands import StepError
from stackube.devbox.service import ServiceError
from stackube.devbox.settings import DevboxSettings
from stackube.errors import StackubeError
from stackube.proxy.options import add_arguments as add_proxy_arguments
from stackube.volume.csi_options import add_arguments as add_csi_arguments


def _devbox(args: argparse.Namespace) -> int:
    box = Devbox(DevboxSettings.from_env())
    try:
        if args.action == "up":
            box.up()
        elif args.action == "down":
            box.down(purge=args.purge)
            if args.purge:
                _forget_tokens(box)
        elif args.action == "conformance":
            return _conformance(box, args)
        elif args.action == "image":
            return _image(box, args)
        elif args.action == "env":
            for key, value in box.env().items():
                print(f"export {key}={shlex.quote(value)}")
        else:
            return _print_status(box)
    except ServiceError as exc:
        print(f"error: service {exc.service} failed: {exc.reason}", file=sys.stderr)
        print(f"--- last lines of {box.table.log_file(exc.service)}:", file=sys.stderr)
        print(exc.log_tail, file=sys.stderr)
        return 1
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _forget_tokens(box: Devbox) -> None:
    """`stackube login` keeps tokens in the user's cache: those of the purged devbox's
    Keystone go with it."""
    from stackube.auth.login import TokenCache, default_cache_dir  # noqa: PLC0415

    dropped = TokenCache(default_cache_dir(os.environ)).forget(box.settings.keystone_url)
    if dropped:
        box.progress.say(f"removed {dropped} cached login token(s) of its Keystone")


def _conformance(box: Devbox, args: argparse.Namespace) -> int:
    from stackube.devbox import conformance  # noqa: PLC0415

    with box.progress.step("conformance: build, push images, run e2e.test"):
        result = conformance.run_suite(
            box.settings,
            box.progress.say,
            focus=args.focus,
            skip=args.skip,
            skip_known_failures=args.skip_known_failures,
            report_dir=args.report_dir,
            processes=args.processes,
        )
    print(
        f"conformance: {result.passed} passed, {result.failures} failed, "
        f"{result.skipped} skipped of {result.tests}"
    )
    for name in result.failed:
        print(f"  FAILED {name}")
    return 0 if result.failures == 0 and result.tests > 0 else 1


def _image(box: Devbox, args: argparse.Namespace) -> int:
    from stackube.devbox import images, stackube_image  # noqa: PLC0415

    started = time.monotonic()
    with box.progress.step("Stackube's image: Debian 12 + our wheel"):
        image = stackube_image.build(box.settings, box.progress.say)
    pulled, unpacked = stackube_image.size(image)
    if args.push:
        with box.progress.step("push it to the devbox registry"):
            images.push(image, box.settings.registry_url)
    print(stackube_image.reference(box.settings, image))
    print(
        f"{len(image.layers)} layers, {pulled / 2**20:.1f} MiB to pull, "
        f"{unpacked / 2**20:.1f} MiB unpacked, built in {time.monotonic() - started:.0f} s",
        file=sys.stderr,
    )
    return 0


def _print_status(box: Devbox) -> int:
    rows = box.status()
    width = max(len(r.name) for r in rows)
    print(f"{'SERVICE':<{width}}  {'PID':>7}  {'RSS MiB':>7}  HEALTH")
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        rss = f"{row.rss_bytes / 2**20:.0f}" if row.pid else "-"
        health = "healthy" if row.healthy else ("unhealthy" if row.pid else "stopped")
        print(f"{row.name:<{width}}  {pid:>7}  {rss:>7}  {health}")
    total = sum(r.rss_bytes for r in rows) / 2**20
    print(f"{'total':<{width}}  {'':>7}  {total:>7.0f}")
    print(f"logs: {box.settings.log_dir}/<service>.log (docs/devbox.md)")
    return 0 if all(r.healthy for r in rows) else 3


def _controller(args: argparse.Namespace) -> int:
    from stackube.controller.main import run  # noqa: PLC0415 - kopf is heavy; load on demand

    return run(args)


def _cni_daemon(args: argparse.Namespace) -> int:
    from stackube.cni.main import run  # noqa: PLC0415 - openstacksdk loads on demand

    return run(args)


def _cni_install(args: argparse.Namespace) -> int:
    from stackube.cni.install import install  # noqa: PLC0415

    for path in install(Path(args.bin_dir), Path(args.conf_dir), args.socket):
        print(f"wrote {path}")
    return 0


def _flexvolume_install(args: argparse.Namespace) -> int:
    from stackube.volume.install import install  # noqa: PLC0415

    config = Path(args.config) if args.config else None
    print(f"wrote {install(Path(args.plugin_dir), config=config)}")
    return 0


def _csi(args: argparse.Namespace) -> int:
    from stackube.volume.csi_main import run  # noqa: PLC0415 - grpc and openstacksdk on demand

    return run(args)


def _proxy(args: argparse.Namespace) -> int:
    from stackube.proxy.main import run  # noqa: PLC0415

    return run(args)


def _auth_webhook(args: argparse.Namespace) -> int:
    from stackube.auth.main import run_webhook  # noqa: PLC0415 - aiohttp loads on demand

    return run_webhook(args)


def _login(args: argparse.Namespace) -> int:
    from stackube.auth.main import run_login  # noqa: PLC0415 - keep kubectl's plugin quick

    return run_login(args)


def _kubeconfig(args: argparse.Namespace) -> int:
    from stackube.auth.main import run_kubeconfig  # noqa: PLC0415

    return run_kubeconfig(args)


def _manifests(args: argparse.Namespace) -> int:
    """CRDs and the RBAC of controller and CNI daemon, from the package (deploy/ holds copies)."""
    if not args.output:
        documents = [
            *all_crds(),
            *controller_rbac(),
            *admission_policies(),
            *cni_rbac(),
            *proxy_rbac(),
            *cluster_dns(),
            *csi(),
            *runtime_classes(),
        ]
        print(yaml.safe_dump_all(documents, sort_keys=False), end="")
        return 0
    root = Path(args.output)
    (root / "crds").mkdir(parents=True, exist_ok=True)
    (root / "controller").mkdir(parents=True, exist_ok=True)
    for crd in all_crds():
        path = root / "crds" / f"{crd['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(crd, sort_keys=False))
    rbac = yaml.safe_dump_all(controller_rbac(), sort_keys=False)
    (root / "controller" / "rbac.yaml").write_text(rbac)
    policies = yaml.safe_dump_all(admission_policies(), sort_keys=False)
    (root / "controller" / "admission-policies.yaml").write_text(policies)
    (root / "cni").mkdir(parents=True, exist_ok=True)
    (root / "cni" / "rbac.yaml").write_text(yaml.safe_dump_all(cni_rbac(), sort_keys=False))
    (root / "proxy").mkdir(parents=True, exist_ok=True)
    (root / "proxy" / "rbac.yaml").write_text(yaml.safe_dump_all(proxy_rbac(), sort_keys=False))
    (root / "cluster-dns").mkdir(parents=True, exist_ok=True)
    (root / "cluster-dns" / "cluster-dns.yaml").write_text(
        yaml.safe_dump_all(cluster_dns(), sort_keys=False)
    )
    (root / "csi").mkdir(parents=True, exist_ok=True)
    (root / "csi" / "csi.yaml").write_text(yaml.safe_dump_all(csi(), sort_keys=False))
    (root / "runtime").mkdir(parents=True, exist_ok=True)
    (root / "runtime" / "runtime-classes.yaml").write_text(
        yaml.safe_dump_all(runtime_classes(), sort_keys=False)
    )
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    layout = seed_layout(kustomization["resources"], lambda path: (root / path).read_text())
    resources = [(path, (root / path).read_text()) for path in kustomization["resources"]]
    chart = helm_chart.chart_files(resources)
    shutil.rmtree(root / helm_chart.CHART_DIR, ignore_errors=True)  # no stale templates
    for name, text in {**layout, **chart}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return 0


def _add_volume_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    flex_install = commands.add_parser(
        "flexvolume-install",
        help="install the FlexVolume driver cinder/flexvolume_driver for kubelet on a node",
    )
    flex_install.add_argument(
        "--plugin-dir", default="/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
    )
    flex_install.add_argument(
        "--config", default=None, help="cinder.conf to read (default /etc/kubernetes/cinder.conf)"
    )
    flex_install.set_defaults(handler=_flexvolume_install)
    csi = commands.add_parser("csi", help="run the CSI driver's controller or node plugin")
    add_csi_arguments(csi)
    csi.set_defaults(handler=_csi)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stackube", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    devbox = commands.add_parser(
        "devbox", help="single-node Kubernetes + Keystone + Neutron for development and tests"
    )
    devbox.set_defaults(handler=_devbox)
    actions = devbox.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="install, build and start everything (idempotent)")
    down = actions.add_parser("down", help="stop everything and remove what it made on the host")
    down.add_argument("--purge", action="store_true", help="also delete the state directory")
    actions.add_parser("status", help="table of services, memory and health")
    actions.add_parser("env", help="print the exports (KUBECONFIG, OS_CLOUD, ...)")
    image = actions.add_parser(
        "image", help="build Stackube's image (Debian 12 + our wheel); print its reference"
    )
    image.add_argument(
        "--push", action="store_true", help="push it to the devbox registry (devbox up)"
    )
    suite = actions.add_parser(
        "conformance",
        help="build e2e.test and its images, run the upstream conformance tests (sig-network)",
    )
    suite.add_argument("--focus", default=r"\[sig-network\].*\[Conformance\]")
    suite.add_argument("--skip", default=None, help="default: the documented skips")
    suite.add_argument(
        "--skip-known-failures",
        action="store_true",
        help="also skip the tests listed as failing for a feature still to come (CI)",
    )
    suite.add_argument("--report-dir", type=Path, default=None)
    suite.add_argument(
        "--processes",
        type=int,
        default=3,
        help="parallel Ginkgo processes (default: %(default)s)",
    )

    controller = commands.add_parser("controller", help="run stackube-controller")
    add_arguments(controller)
    controller.set_defaults(handler=_controller)

    cni_daemon = commands.add_parser("cni-daemon", help="run stackube-cni-daemon (one per node)")
    add_cni_daemon_arguments(cni_daemon)
    cni_daemon.set_defaults(handler=_cni_daemon)

    cni_install = commands.add_parser(
        "cni-install", help="install the kubestack plugin and its CNI configuration on a node"
    )
    cni_install.add_argument("--bin-dir", default="/opt/cni/bin")
    cni_install.add_argument("--conf-dir", default="/etc/cni/net.d")
    cni_install.add_argument("--socket", default="/run/stackube/cni.sock")
    cni_install.set_defaults(handler=_cni_install)

    _add_volume_commands(commands)

    proxy = commands.add_parser("proxy", help="run stackube-proxy (Services in tenant routers)")
    add_proxy_arguments(proxy)
    proxy.set_defaults(handler=_proxy)

    webhook = commands.add_parser("auth-webhook", help="run the Keystone TokenReview webhook")
    add_webhook_arguments(webhook)
    webhook.set_defaults(handler=_auth_webhook)

    login = commands.add_parser("login", help="kubectl exec credential plugin (Keystone)")
    add_login_arguments(login)
    login.set_defaults(handler=_login)

    kubeconfig = commands.add_parser("kubeconfig", help="write a kubeconfig for a tenant user")
    add_kubeconfig_arguments(kubeconfig)
    kubeconfig.set_defaults(handler=_kubeconfig)

    manifests = commands.add_parser("manifests", help="print (or write) CRDs and controller RBAC")
    manifests.add_argument("-o", "--output", help="deploy/ directory to write them into")
    manifests.set_defaults(handler=_manifests)
    return parser


# Libraries whose DEBUG lines carry secrets: the Kubernetes client's print response
# bodies (Secrets), urllib3's and requests' connection details, keystoneauth's and
# openstacksdk's requests and answers (tokens, catalogs, password bodies), kopf's
# per-object lines the whole object (a Tenant's spec.password).
SECRET_LOGGERS = (
    "kubernetes",
    "kubernetes.client.rest",
    "urllib3",
    "requests",
    "keystoneauth",
    "keystoneauth1",
    "openstack",
    "kopf.objects",
)


def quiet_secret_loggers(floor: int = logging.INFO) -> None:
    """Pin SECRET_LOGGERS to `floor` or the root logger's level, whichever is higher,
    so that no verbosity (-v) makes them log secrets."""
    level = max(floor, logging.getLogger().getEffectiveLevel())
    for name in SECRET_LOGGERS:
        logging.getLogger(name).setLevel(level)


def configure_logging(*, verbose: bool, long_running: bool) -> None:
    """The programs' logging: INFO for long-running ones, WARNING for the others, DEBUG
    with -v; the secret-carrying libraries never below INFO."""
    default_level = logging.INFO if long_running else logging.WARNING
    level = logging.DEBUG if verbose else default_level
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # basicConfig leaves an already configured root logger alone: the level, at least,
    # is ours to set.
    logging.getLogger().setLevel(level)
    quiet_secret_loggers()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Programs that run for long say what they do; the devbox shows its own progress.
    long_running = args.command in ("controller", "auth-webhook", "cni-daemon", "proxy", "csi")
    configure_logging(verbose=args.verbose, long_running=long_running)
    try:
        return int(args.handler(args))
    except StackubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A file or directory given on the command line (or its parent) is missing or
        # not ours to write: the user's to fix, so a message rather than a traceback.
        # A long-running program's OSError is no such thing: its traceback goes to the log.
        if long_running:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
