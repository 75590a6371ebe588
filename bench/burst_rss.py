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
# cargo builds into $CARGO_TARGET_DIR when it is set.
KLAXON = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "klaxon"
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


class Burst:
    """Counts the connections in: each one sends its request once all are open, and closes once
    all are answered, so that all 3,000 are open at once."""

    def __init__(self, connections: int) -> None:
        self.connections = connections
        self.opened = 0
        self.answered = 0
        self.all_open = asyncio.Event()
        self.all_answered = asyncio.Event()

    def _arrived(self, event: asyncio.Event, count: int) -> int:
        count += 1
        if count == self.connections:
            event.set()
        return count

    async def one(self, port: int) -> bool:
        """A connection that fails still counts as opened and answered, so none waits forever."""
        head = b""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            self.opened = self._arrived(self.all_open, self.opened)
        try:
            await self.all_open.wait()
            writer.write(b"GET /health HTTP/1.1\r\nhost: bench\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        finally:
            self.answered = self._arrived(self.all_answered, self.answered)
        await self.all_answered.wait()
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return head.startswith(b"HTTP/1.1 200")


async def burst(port: int, connections: int, pid: int) -> tuple[int, float]:
    """Returns how many were answered 200, and the peak RSS while they were open."""
    burst = Burst(connections)
    peak = 0.0

    async def watch() -> None:
        nonlocal peak
        while not burst.all_answered.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.05)
        peak = max(peak, rss_mb(pid))

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(
        *(burst.one(port) for _ in range(connections)), return_exceptions=True
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
