"""Background processes with a pid file and a log file each, stopped by their own PID.

No systemd here: the devbox starts every daemon itself, in its own session (so the
whole process group can be signalled), and records `pid starttime` so that a PID
reused by an unrelated process is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


# What would point a program at another cloud or cluster than the devbox's (an
# operator's shell often has them): the devbox's programs get their own files instead.
AMBIENT_CLIENT_VARIABLES = ("KUBECONFIG",)
AMBIENT_CLIENT_PREFIXES = ("OS_",)


def service_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the devbox gives the programs it runs: the caller's, without
    OS_* and KUBECONFIG (pure when `environ` is given)."""
    source = os.environ if environ is None else environ
    return {
        k: v
        for k, v in source.items()
        if k not in AMBIENT_CLIENT_VARIABLES and not k.startswith(AMBIENT_CLIENT_PREFIXES)
    }


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # Configuration files the process reads at start: a change to them restarts it.
    inputs: tuple[Path, ...] = ()

    @property
    def identity(self) -> list[str]:
        """What a running process is compared with: its command line, plus a digest of
        its input files when it has any."""
        if not self.inputs:
            return list(self.argv)
        digest = hashlib.sha256()
        for path in self.inputs:
            digest.update(path.read_bytes() if path.exists() else b"")
        return [*self.argv, f"#inputs:{digest.hexdigest()[:16]}"]


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: the process start time in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    state = fields[0]
    if state in ("Z", "X"):
        return None
    return fields[19]


class ProcessTable:
    """The pid and log files of the devbox's processes."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def argv_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.argv"

    def started_with(self, name: str) -> list[str] | None:
        """The identity (command line, inputs digest) our process `name` was started
        with, if recorded."""
        try:
            return list(json.loads(self.argv_file(name).read_text()))
        except (OSError, ValueError):
            return None

    def pid(self, name: str) -> int | None:
        """The PID of our process `name` if it is alive, else None."""
        try:
            pid_text, start = self.pid_file(name).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _start_time(pid) == start else None

    def start(self, spec: ProcessSpec) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**service_environ(), **spec.env}
        with self.log_file(spec.name).open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {spec.name}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                # Not the caller's directory: a service outlives it (a removed checkout
                # left the kubelet's CNI plugin calls failing in getcwd).
                cwd=spec.cwd or self.run_dir,
                start_new_session=True,
            )
        start = _start_time(proc.pid)
        self.pid_file(spec.name).write_text(f"{proc.pid} {start}\n")
        self.argv_file(spec.name).write_text(json.dumps(spec.identity))
        log.info("started %s (pid %d)", spec.name, proc.pid)
        return proc.pid

    def stop(self, name: str, timeout: float = 15.0) -> bool:
        """Stop `name` and its process group: SIGTERM, then SIGKILL. True if it ran."""
        pid = self.pid(name)
        if pid is None:
            self.pid_file(name).unlink(missing_ok=True)
            return False
        terminate_group(pid, timeout)
        self.pid_file(name).unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", name, pid)
        return True

    def tail(self, name: str, lines: int = 25) -> str:
        try:
            text = self.log_file(name).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    # Our own children must be reaped, or they linger as zombies.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def terminate_group(pid: int, timeout: float = 15.0) -> None:
    start = _start_time(pid)
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if _start_time(pid) != start or start is None:
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    time.sleep(0.2)
    _reap(pid)


def pids_mentioning(needle: str, commands: tuple[str, ...]) -> list[int]:
    """PIDs of processes named like `commands` (prefixes of /proc/<pid>/comm) whose
    command line mentions `needle` (our state dir): helpers that daemonized away from
    our process groups, such as dnsmasq or privsep helpers. The name filter spares a
    person's `tail -f` of one of our logs."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if comm.startswith(commands) and needle.encode() in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every live process in process group `pgid` (the service and
    the helpers it forked without leaving its group)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the command name: state ppid pgrp ... rss is field 24 overall.
        if int(fields[2]) == pgid and fields[0] != "Z":
            total += int(fields[21]) * page
    return total
