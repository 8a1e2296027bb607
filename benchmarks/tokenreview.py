"""TokenReviews per second and latency: stackube-auth cached, uncached, and Keystone
validating the same tokens directly, side by side in one run.

Run (root, devbox up):  python3 -m benchmarks.tokenreview [--seconds 10] [--concurrency 16]

Two webhook processes are started on free ports with the devbox's certificates: one
as deployed (cache TTL 20 s), one with its cache off (every review asks Keystone).
The client keeps HTTPS connections alive, as kube-apiserver does, and presents the
apiserver's client certificate. Client and servers share the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from secrets import token_hex, token_urlsafe

import aiohttp
from tests.integration.controller_harness import free_port

from benchmarks.live import with_live_tenant
from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.openstack.cloud import Credentials, connect_cloud
from stackube.openstack.tokens import TokenValidator, issue_token


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_webhook(
    devbox: Devbox, port: int, cache_ttl: float, log: Path
) -> subprocess.Popen[bytes]:
    root, pki = devbox.settings.state_dir / "stackube", devbox.settings.pki_dir
    argv = [
        sys.executable,
        "-m",
        "stackube",
        "auth-webhook",
        f"--config-dir={root / 'config'}",
        f"--secret-dir={root / 'secret'}",
        f"--tls-cert={pki / 'stackube-auth.crt'}",
        f"--tls-key={pki / 'stackube-auth.key'}",
        f"--client-ca={pki / 'ca.crt'}",
        "--bind-address=127.0.0.1",
        f"--port={port}",
        f"--cache-ttl={cache_ttl}",
        f"--negative-cache-ttl={cache_ttl}",
    ]
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def client_tls(devbox: Devbox) -> ssl.SSLContext:
    pki = devbox.settings.pki_dir
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(
        str(pki / "apiserver-webhook-client.crt"), str(pki / "apiserver-webhook-client.key")
    )
    return context


def wait_healthy(port: int, context: ssl.SSLContext) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"webhook on {port} not healthy")


async def hammer(
    call: Callable[[str], Awaitable[bool]], tokens: list[str], seconds: float, concurrency: int
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            ok = await call(tokens[i % len(tokens)])
            latencies.append(time.perf_counter() - start)
            if not ok:
                raise AssertionError("a valid token was refused")
            i += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return len(latencies), latencies


async def via_webhook(
    port: int, context: ssl.SSLContext, tokens: list[str], seconds: float, concurrency: int
) -> tuple[int, list[float]]:
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(token: str) -> bool:
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }
            async with session.post(f"https://127.0.0.1:{port}/authenticate", json=body) as resp:
                return bool((await resp.json())["status"]["authenticated"])

        for token in tokens:  # warm: every token once (fills the cache where there is one)
            await call(token)
        return await hammer(call, tokens, seconds, concurrency)


async def via_keystone(
    validator: TokenValidator, tokens: list[str], seconds: float, concurrency: int
) -> tuple[int, list[float]]:
    pool = ThreadPoolExecutor(concurrency)
    loop = asyncio.get_running_loop()

    async def call(token: str) -> bool:
        return await loop.run_in_executor(pool, validator.validate, token) is not None

    return await hammer(call, tokens, seconds, concurrency)


def line(label: str, count: int, latencies: list[float], seconds: float) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"| {label} | {count / seconds:,.0f} | {statistics.median(ms):.2f} | "
        f"{percentile(ms, 0.99):.2f} |"
    )


@with_live_tenant
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=50)
    args = parser.parse_args()

    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    secrets = json.loads(devbox.settings.secrets_file.read_text())
    # The webhook takes project-scoped tokens of the tenants' domain only: a tenant
    # user's, as kubectl sends them.
    conn = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    domain = conn.identity.find_domain("stackube")
    name, password = f"bench-tokens-{token_hex(3)}", token_urlsafe(16)
    project = conn.identity.create_project(name=name, domain_id=domain.id)
    user = conn.identity.create_user(name=name, password=password, domain_id=domain.id)
    conn.identity.assign_project_role_to_user(project, user, conn.identity.find_role("member"))
    try:
        tenant = Credentials(
            devbox.settings.keystone_url, name, password, name,
            user_domain="stackube", project_domain="stackube",
        )  # fmt: skip
        tokens = [issue_token(tenant)[0] for _ in range(args.tokens)]
        return measure(devbox, args, secrets, tokens)
    finally:
        conn.identity.delete_user(user)
        conn.identity.delete_project(project)


def measure(
    devbox: Devbox, args: argparse.Namespace, secrets: dict[str, str], tokens: list[str]
) -> int:
    service = Credentials(
        devbox.settings.keystone_url, "stackube", secrets["stackube_service"], "service"
    )
    context = client_tls(devbox)
    work = Path(devbox.settings.state_dir / "bench")
    work.mkdir(exist_ok=True)
    cached_port, uncached_port = free_port(), free_port()
    procs = [
        start_webhook(devbox, cached_port, 20.0, work / "webhook-cached.log"),
        start_webhook(devbox, uncached_port, 0.0, work / "webhook-uncached.log"),
    ]
    try:
        wait_healthy(cached_port, context)
        wait_healthy(uncached_port, context)
        s, c = args.seconds, args.concurrency
        cached = asyncio.run(via_webhook(cached_port, context, tokens, s, c))
        uncached = asyncio.run(via_webhook(uncached_port, context, tokens, s, c))
        direct = asyncio.run(via_keystone(TokenValidator(service), tokens, s, c))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    print(
        f"{args.tokens} tokens, {args.concurrency} concurrent clients, {args.seconds:.0f} s each\n"
    )
    print("| path | reviews/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    print(line("stackube-auth, cached", *cached, args.seconds))
    print(line("stackube-auth, cache off (each asks Keystone)", *uncached, args.seconds))
    print(line("Keystone directly (GET /v3/auth/tokens)", *direct, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
