#!/usr/bin/env python3
"""Memory after a burst (SPEC §7, RSS ≤ 64 MB idle; issue 7 point 4).

Starts the release binary (`target/release/klaxon`, build it first) on a fresh SQLite database,
reads its VmRSS idle, opens CONNECTIONS concurrent connections that each send `GET /health` and
read the answer while all of them stay open, closes them, and then reads VmRSS every second for
SETTLE_S seconds. Prints one Markdown row. Exits 1 if RSS after the burst stays above the limit.
Python stdlib only; extra environment for the server (MALLOC_ARENA_MAX=2, say) is passed through
with --env KEY=VALUE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KLAXON = REPO / "target" / "release" / "klaxon"
# How many connections the burst opens at once.
CONNECTIONS = 3000
# SPEC §7: resident memory of an idle server.
LIMIT_MB = 64.0
# How long after the burst RSS is watched.
SETTLE_S = 10
# How long the server may take to listen.
READY_TIMEOUT_S = 30.0
ADMIN_TOKEN = "bench-burst-admin-token-0123456789"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("klaxon did not start listening")


async def one(port: int, opened: asyncio.Event, all_open: asyncio.Event, counter: list) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    counter[0] += 1
    if counter[0] == counter[1]:
        all_open.set()
    await all_open.wait()
    writer.write(b"GET /health HTTP/1.1\r\nhost: bench\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    ok = head.startswith(b"HTTP/1.1 200")
    counter[2] += 1
    if counter[2] == counter[1]:
        opened.set()
    await opened.wait()
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return ok


async def burst(port: int, connections: int, pid: int) -> tuple[int, float]:
    answered, all_open = asyncio.Event(), asyncio.Event()
    counter = [0, connections, 0]
    peak = 0.0

    async def watch() -> None:
        nonlocal peak
        while not answered.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.05)
        peak = max(peak, rss_mb(pid))

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(
        *(one(port, answered, all_open, counter) for _ in range(connections)),
        return_exceptions=True,
    )
    await watcher
    return sum(1 for r in results if r is True), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--binary", type=Path, default=KLAXON)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 1024)), hard))

    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLAXON_")}
        env.update(
            KLAXON_LISTEN=f"127.0.0.1:{port}",
            KLAXON_DATABASE_URL=f"sqlite://{work}/klaxon.db",
            KLAXON_ADMIN_TOKEN=ADMIN_TOKEN,
            RUST_LOG="warn",
        )
        env.update(kv.split("=", 1) for kv in args.env)
        server = subprocess.Popen(
            [str(args.binary), "serve"], env=env, stdout=subprocess.DEVNULL, cwd=work
        )
        try:
            wait_ready(port)
            time.sleep(1)
            idle = rss_mb(server.pid)
            ok, peak = asyncio.run(burst(port, args.connections, server.pid))
            after = []
            for _ in range(SETTLE_S):
                time.sleep(1)
                after.append(rss_mb(server.pid))
        finally:
            server.terminate()
            server.wait(timeout=10)
    settled = after[-1]
    print("| connections | answered 200 | RSS idle | RSS peak | after 1 s | after 3 s | after 10 s | env |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.connections:,} | {ok:,} | {idle:.1f} MB | {peak:.1f} MB | {after[0]:.1f} MB "
        f"| {after[2]:.1f} MB | {settled:.1f} MB | {' '.join(args.env) or '-'} |"
    )
    return 0 if settled <= LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
