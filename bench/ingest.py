#!/usr/bin/env python3
"""Ingest benchmark (SPEC §7): durable `POST /message` and `POST /v2/enqueue` (PagerDuty's Events
API v2) against Alertmanager's `POST /api/v2/alerts`.

Builds klaxon in release mode, then, one target at a time and with the same wrk settings:
klaxon on SQLite, klaxon on a fresh PostgreSQL database, and Prometheus Alertmanager (in memory).
Each target gets a warm-up run and a measured run; the script prints a Markdown table with
requests/s, p50, p99, errors (non-2xx answers and socket errors) and klaxon's ratio to
Alertmanager. Every process it starts is stopped before it exits, on error too.

Run `bench/setup.sh` once first (installs wrk and prometheus-alertmanager). Python stdlib only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
# cargo builds into $CARGO_TARGET_DIR when it is set.
KLAXON = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "klaxon"
ALERTMANAGER = "prometheus-alertmanager"
TARGETS = ("sqlite", "postgres", "sqlite-enqueue", "postgres-enqueue", "alertmanager")

# SPEC §7: durable ingest at least this many times Alertmanager's rate, with this p99.
TARGET_RATIO = 1.2
TARGET_P99_MS = 20.0

# How long a server may take to answer its readiness check after it starts.
READY_TIMEOUT_S = 60.0
# How long a stopped server may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
# wrk's per-request timeout; a request slower than this counts as a socket error.
WRK_TIMEOUT = "2s"
# Headroom beyond the wrk duration before the script gives up on wrk itself.
WRK_GRACE_S = 30.0
# The unit of the CPU times in /proc/<pid>/stat.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# How many distinct warning lines of a server's log the summary shows.
WARNINGS_SHOWN = 3

ALERTMANAGER_CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


@dataclass
class Result:
    target: str
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    # The server process's CPU use during the measured run, in cores (1.0 = one core busy).
    server_cpu: float
    # The share of all cores busy during the measured run (wrk, the server, and anything else).
    machine_busy: float
    warnings: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def error_detail(self) -> str:
        parts = [f"{n}×{s}" for s, n in sorted(self.statuses.items()) if not 200 <= s < 300]
        parts += [f"{n}×{kind}" for kind, n in self.socket_errors.items() if n]
        return ", ".join(parts)


class Processes:
    """Every child process the benchmark starts, so that all of them are stopped on any exit."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        try:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        except ProcessLookupError:
            pass
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)


def parse_duration(text: str) -> int:
    """wrk's duration syntax (`10s`, `2m`, `1h`, or plain seconds) to seconds."""
    match = re.fullmatch(r"(\d+)([smh]?)", text)
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 10s or 2m")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def parse_only(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(TARGETS)}")
    return [name for name in TARGETS if name in names]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}:\n{tail(log)}")
        try:
            if http_status(url) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {READY_TIMEOUT_S:.0f}s:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def warning_lines(path: Path) -> list[str]:
    """The log lines at WARN or ERROR level, without colours and leading timestamps."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", path.read_text(errors="replace"))
    return [re.sub(r"^\S*\d{2}:\d{2}:\d{2}\S*\s+", "", line).strip() for line in text.splitlines()
            if re.search(r"\b(WARN|ERROR|level=(warn|error))\b", line)]


def run_wrk(processes: Processes, args, url: str, script: str, script_args: list[str],
            seconds: int, log: Path) -> dict:
    argv = ["wrk", f"--threads={args.threads}", f"--connections={args.connections}",
            f"--duration={seconds}s", f"--timeout={WRK_TIMEOUT}", "--latency",
            f"--script={BENCH / script}", url, "--", *script_args]
    with log.open("a") as out:
        out.write(f"$ {shlex.join(argv[:-len(script_args)] + ['…'])}\n")
        out.flush()
        wrk = processes.start(argv, stdout=subprocess.PIPE, stderr=out, text=True)
        try:
            stdout, _ = wrk.communicate(timeout=seconds + WRK_GRACE_S)
        finally:
            processes.stop(wrk)
        out.write(stdout)
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk exited with {wrk.returncode}; see {log}")
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.removeprefix("BENCH_RESULT "))
    raise RuntimeError(f"wrk printed no BENCH_RESULT line; see {log}")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu() -> tuple[int, int]:
    """Busy and total jiffies of all cores since boot (idle and iowait count as not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    return total - values[3] - values[4], total


def measure(processes: Processes, args, target: str, server: subprocess.Popen, url: str,
            script: str, script_args: list[str], nonce: str, log: Path) -> tuple[Result, int]:
    """Warms up, then measures. Returns the result and the 2xx answers of both runs.

    The script's last argument is a nonce, different for each run, that keeps bodies unique."""
    warm = run_wrk(processes, args, url, script, script_args + [f"{nonce}w"], args.warmup, log)
    server_before, (busy_before, total_before) = process_cpu_s(server.pid), machine_cpu()
    raw = run_wrk(processes, args, url, script, script_args + [f"{nonce}m"], args.duration, log)
    server_after, (busy_after, total_after) = process_cpu_s(server.pid), machine_cpu()
    result = Result(
        target=target,
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        statuses={int(status): n for status, n in raw["statuses"].items()},
        socket_errors=raw["socket_errors"],
        server_cpu=(server_after - server_before) / (raw["duration_us"] / 1e6),
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
    )
    warm_ok = sum(n for status, n in warm["statuses"].items() if 200 <= int(status) < 300)
    return result, warm_ok + result.ok


def service_key(base: str, token: str) -> str:
    """Makes a service that does not escalate on arrival (so that an event does what a message
    does: one incident, OPEN) and returns a new integration key of it."""
    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{base}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)
    service = post("/services", {"name": "bench", "auto_escalate": False})
    return post(f"/services/{service['id']}/integration-keys", {"name": "bench"})["key"]


def bench_klaxon(processes: Processes, args, target: str, workdir: Path, nonce: str) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(24)
    database = None
    enqueue = target.endswith("-enqueue")
    target = target.removesuffix("-enqueue")
    if target == "sqlite":
        db_path = workdir / f"klaxon-{'enqueue' if enqueue else 'message'}.db"
        database_url = f"sqlite://{db_path}"
    else:
        database = f"klaxon_bench_{nonce}"
        psql(args.postgres, f"create database {database}")
        database_url = with_database(args.postgres, database)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("KLAXON_") and key != "RUST_LOG"}
    env.update(KLAXON_LISTEN=f"127.0.0.1:{port}", KLAXON_DATABASE_URL=database_url,
               KLAXON_ADMIN_TOKEN=token, RUST_LOG="warn")
    log = workdir / f"klaxon-{target}.log"
    server = None
    try:
        with log.open("w") as out:
            # The work directory holds no `.env`, so only the variables above configure it.
            # No per-key throttle: the benchmark measures what the store takes.
            config = workdir / "klaxon.toml"
            config.write_text('[integrations]\nrate_limit = { count = 1000000000, per = "1m" }\n')
            server = processes.start([str(KLAXON), "--config", str(config), "serve"], cwd=workdir,
                                     env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_ready(server, f"{base}/health", log)
        first = json.dumps({"text": f"bench {nonce}: first message"}).encode()
        status = http_status(f"{base}/message", first, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        if status != 201:
            raise RuntimeError(f"klaxon ({target}) answered {status} to a first message:\n{tail(log)}")
        wrk_log = workdir / f"wrk-{target}{'-enqueue' if enqueue else ''}.log"
        if enqueue:
            result, accepted = measure(processes, args, f"klaxon ({target}) /v2/enqueue", server,
                                       base, "enqueue.lua", [service_key(base, token)], nonce,
                                       wrk_log)
        else:
            result, accepted = measure(processes, args, f"klaxon ({target}) /message", server,
                                       base, "message.lua", [token], nonce, wrk_log)
        processes.stop(server)
        result.warnings = warning_lines(log)
        stored = count_events(target, db_path if target == "sqlite" else None, args.postgres, database)
        # More may be stored than wrk counted: it drops the answers to requests in flight when it
        # stops. Fewer would mean acknowledged messages were lost.
        if stored < accepted + 1:
            result.warnings.append(
                f"bench: {accepted + 1} messages were answered 2xx but only {stored} events are stored")
        return result
    finally:
        if server is not None:
            processes.stop(server)
        if database and not args.keep:
            psql(args.postgres, f"drop database if exists {database} with (force)")


def count_events(target: str, db_path: Path | None, admin_url: str, database: str | None) -> int:
    if target == "sqlite":
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
            return connection.execute("select count(*) from events").fetchone()[0]
    return int(psql(with_database(admin_url, database), "select count(*) from events"))


def with_database(url: str, database: str) -> str:
    """The same PostgreSQL URL, naming another database."""
    return urllib.parse.urlsplit(url)._replace(path=f"/{database}").geturl()


def psql(url: str, sql: str) -> str:
    done = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def bench_alertmanager(processes: Processes, args, workdir: Path, nonce: str) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = workdir / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG)
    storage = workdir / "alertmanager-data"
    storage.mkdir()
    log = workdir / "alertmanager.log"
    server = None
    try:
        with log.open("w") as out:
            server = processes.start(
                [ALERTMANAGER, f"--config.file={config}", f"--storage.path={storage}",
                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                 "--log.level=warn"],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        wait_ready(server, f"{base}/-/ready", log)
        wrk_log = workdir / "wrk-alertmanager.log"
        result, _ = measure(processes, args, "Alertmanager (in memory)", server, base,
                            "alert.lua", [], nonce, wrk_log)
        processes.stop(server)
        result.warnings = warning_lines(log)
        return result
    finally:
        if server is not None:
            processes.stop(server)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (f"{os.cpu_count()} cores, {model}, {mem_kib / 1024 / 1024:.1f} GiB, "
            f"Linux {platform.release()}; load average at start {' '.join(load)}")


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def table(results: list[Result]) -> str:
    reference = next((r for r in results if r.target.startswith("Alertmanager")), None)
    lines = ["| target | requests/s | p50 | p99 | errors | × Alertmanager |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if r is reference:
            ratio = "1.00 (reference)"
        elif reference is not None:
            ratio = f"{r.rate / reference.rate:.2f}"
        else:
            ratio = "not measured"
        lines.append(f"| {r.target} | {r.rate:,.0f} | {ms(r.p50_ms)} | {ms(r.p99_ms)} "
                     f"| {r.errors:,} | {ratio} |")
    return "\n".join(lines)


def verdicts(results: list[Result]) -> list[str]:
    reference = next((r for r in results if r.target.startswith("Alertmanager")), None)
    lines = []
    for r in results:
        if r is reference:
            continue
        parts = []
        if reference is not None:
            ratio = r.rate / reference.rate
            parts.append(f"{ratio:.2f}× Alertmanager (target ≥ {TARGET_RATIO}×: "
                         f"{'met' if ratio >= TARGET_RATIO else 'missed'})")
        parts.append(f"p99 {ms(r.p99_ms)} (target ≤ {TARGET_P99_MS:.0f} ms: "
                     f"{'met' if r.p99_ms <= TARGET_P99_MS else 'missed'})")
        lines.append(f"- {r.target}: " + "; ".join(parts))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=parse_duration, default="10s",
                        help="measured run per target, wrk syntax (default 10s)")
    parser.add_argument("--warmup", type=parse_duration, default="3s",
                        help="warm-up run per target, not measured (default 3s)")
    parser.add_argument("--connections", type=int, default=64, help="open connections (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--only", type=parse_only, default=list(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)} (default all)")
    parser.add_argument("--no-build", action="store_true", help="use the existing release build")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/test",
                        help="a database URL for creating and dropping the fresh bench database")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, SQLite file) and the PostgreSQL database")
    args = parser.parse_args()
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")

    needed = ["wrk"] + ([ALERTMANAGER] if "alertmanager" in args.only else []) \
        + (["psql"] if "postgres" in args.only else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)}: run bench/setup.sh first", file=sys.stderr)
        return 2

    # SIGTERM and SIGHUP unwind like Ctrl-C, so the `finally` blocks stop every child.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)

    machine_text = machine()
    print(f"machine: {machine_text}", file=sys.stderr)
    if not args.no_build and any(t != "alertmanager" for t in args.only):
        print("building klaxon (cargo build --release)…", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)

    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="klaxon-bench-"))
    now = datetime.datetime.now(datetime.timezone.utc)
    nonce = now.strftime("%Y%m%d%H%M%S")
    results = []
    try:
        for target in args.only:
            print(f"{target}: {args.warmup}s warm-up, {args.duration}s measured…", file=sys.stderr)
            if target == "alertmanager":
                results.append(bench_alertmanager(processes, args, workdir, nonce))
            else:
                results.append(bench_klaxon(processes, args, target, workdir, nonce))
    finally:
        processes.stop_all()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"Ingest benchmark, {now:%Y-%m-%d %H:%M} UTC: wrk, {args.threads} threads, {args.connections} "
          f"connections, {args.duration}s per target after a {args.warmup}s warm-up.")
    print(f"Machine: {machine_text}.\n")
    print(table(results))
    print()
    print("\n".join(verdicts(results)))
    for r in results:
        print(f"- {r.target}: server process used {r.server_cpu:.2f} of {os.cpu_count()} cores; "
              f"the machine was {r.machine_busy:.0%} busy during the measured run")
    for r in results:
        if r.errors:
            print(f"- {r.target} errors: {r.error_detail()}")
        if r.warnings:
            print(f"- {r.target} logged {len(r.warnings)} warning or error lines:")
            for line, count in Counter(r.warnings).most_common(WARNINGS_SHOWN):
                print(f"  - {count}× `{line[:300]}`")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("ingest: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
    except (RuntimeError, subprocess.SubprocessError) as error:
        print(f"ingest: {error}", file=sys.stderr)
        sys.exit(1)
