"""The `stackube` command line."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

from stackube.devbox.box import Devbox
from stackube.devbox.commands import StepError
from stackube.devbox.service import ServiceError
from stackube.devbox.settings import DevboxSettings


def _devbox_up(box: Devbox, _: argparse.Namespace) -> int:
    box.up()
    return 0


def _devbox_down(box: Devbox, args: argparse.Namespace) -> int:
    box.down(purge=args.purge)
    return 0


def _devbox_status(box: Devbox, _: argparse.Namespace) -> int:
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
    return 0 if all(r.healthy for r in rows) else 3


def _devbox_env(box: Devbox, _: argparse.Namespace) -> int:
    for key, value in box.env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stackube", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    devbox = commands.add_parser(
        "devbox", help="single-node Kubernetes + Keystone + Neutron for development and tests"
    )
    actions = devbox.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="install, build and start everything (idempotent)").set_defaults(
        handler=_devbox_up
    )
    down = actions.add_parser("down", help="stop everything and remove what it made on the host")
    down.add_argument("--purge", action="store_true", help="also delete the state directory")
    down.set_defaults(handler=_devbox_down)
    actions.add_parser("status", help="table of services and their health").set_defaults(
        handler=_devbox_status
    )
    actions.add_parser("env", help="print the exports (KUBECONFIG, OS_CLOUD, ...)").set_defaults(
        handler=_devbox_env
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    box = Devbox(DevboxSettings.from_env())
    try:
        return int(args.handler(box, args))
    except ServiceError as exc:
        print(f"error: service {exc.service} failed: {exc.reason}", file=sys.stderr)
        print(f"--- last lines of {box.table.log_file(exc.service)}:", file=sys.stderr)
        print(exc.log_tail, file=sys.stderr)
        return 1
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
