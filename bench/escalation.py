#!/usr/bin/env python3
"""Escalation engine benchmark (SPEC §7): lag, storm throughput, memory, restart after kill -9.

Builds klaxon in release mode, then, for each scenario (sqlite, sqlite+redis, postgres,
postgres+redis), each on fresh databases, measures:

- lag: with N escalations pending far in the future (seeded in bulk with SQL), a stream of probe
  escalations created through the HTTP API of `klaxon serve` (whose worker is woken in-process);
  lag = executed_at − scheduled_at of each probe, read from the database; p50, p99, max; and,
  from a reader polling the database meanwhile, bounds on when each execution was committed;
- storm: N escalations all overdue before a `klaxon worker` starts; executed per second;
- memory: VmRSS of a `klaxon worker` idle on an empty database, and with the largest N pending;
- restart: N overdue, a worker killed with SIGKILL after its first batch, a new worker started;
  the time from that restart until all are executed, and that none executed twice.

Every klaxon process runs a copy of the binary taken after the build, so that others rebuilding
target/release meanwhile do not change what is measured.

It prints one Markdown table per group, with the SPEC §7 targets beside the figures. Every process
it starts is stopped before it exits, on error too; every PostgreSQL database it creates is dropped
(unless --keep). Needs Python 3.11 (standard library only), `psql`, PostgreSQL at 127.0.0.1:5432
with trust authentication for user `postgres`, and Redis at 127.0.0.1:6379 for the +redis scenarios.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

# The ingest benchmark's helpers: process bookkeeping, readiness, logs, machine description.
from ingest import (KLAXON, READY_TIMEOUT_S, REPO, Processes, machine, process_cpu_s, psql, tail,
                    wait_ready, warning_lines, with_database)

SCENARIOS = ("sqlite", "sqlite+redis", "postgres", "postgres+redis")

# SPEC §7 targets.
TARGET_LAG_P99_MS = {100_000: 5.0, 1_000_000: 5.0}
TARGET_STORM_PER_S = 25_000.0
TARGET_RSS_IDLE_MB = 64.0
TARGET_RSS_PENDING_MB = 256.0
TARGET_RESTART_S = 2.0

# The one-level policy snapshot seeded escalations carry: executing one schedules nothing more.
SEED_POLICY = '[{"level":1,"delay":300000,"channels":["in_app"]}]'
# Seeded pending escalations fall due this far in the future, spread evenly over as long again:
# never during a run.
SEED_DUE_AFTER_MS = 6 * 3600 * 1000
# Storm and restart escalations were due within this window before seeding.
OVERDUE_WINDOW_MS = 60 * 1000
# The level-1 delay of the policy `klaxon serve` gives probes (a humantime string).
PROBE_DELAY = "1s"
PROBE_DELAY_MS = 1000

# The sorted set klaxon keeps in Redis for a deployment without `redis_prefix`, named after the
# installation id its database keeps (docs/engine.md, "Redis").
REDIS_PENDING_KEY = "{installation}:escalations:pending"
# How long an idle worker runs before its memory is read.
IDLE_SETTLE_S = 5.0
# How long a worker with the pending escalations runs, after its Redis index is rebuilt, before
# its memory is read.
PENDING_SETTLE_S = 5.0
# How long a Redis index rebuild may take before the run counts it as failed.
REBUILD_TIMEOUT_S = 600.0
# How long a storm or a restart may take to drain before the run counts it as failed.
DRAIN_TIMEOUT_S = 300.0
# How long after the last probe is due the run waits for every probe to execute: beyond the
# safety-net scan (5 s by default), a probe has been missed.
PROBE_GRACE_S = 30.0
# Between two looks of the commit observer at the probes (see `CommitObserver`).
OBSERVE_INTERVAL_S = 0.005
# The observer rereads probes executed this long before the latest it saw: a batch stamps
# executed_at before it commits, so rows can appear out of executed_at order.
OBSERVE_SLACK_MS = 2000
# Between two reads of a count while waiting for a drain.
POLL_INTERVAL_S = 0.05
# The page cache of the SQLite connection that seeds, in KiB.
SEED_CACHE_KIB = 256 * 1024
# The numbers 0 to $last, for SQLite's bulk inserts.
SQLITE_SERIES = ("with recursive series (n) as"
                 " (select 0 union all select n + 1 from series where n < $last)")
# How long one `psql` may run (seeding a million rows included).
PSQL_TIMEOUT_S = 600.0


@dataclass
class Scenario:
    name: str

    @property
    def backend(self) -> str:
        return self.name.split("+")[0]

    @property
    def redis(self) -> bool:
        return self.name.endswith("+redis")


@dataclass
class LagResult:
    scenario: str
    pending: int
    probes: int
    lags_ms: list[float]
    # For each executed probe, bounds on when its execution was committed − scheduled_at: the
    # start of the observer's last read that did not see it EXECUTED, and of the first that did.
    committed_ms: list[tuple[float, float]]
    # Probe escalations not EXECUTED when the run stopped waiting, and HTTP answers not 2xx.
    missing: int
    http_errors: Counter
    # Seconds from `klaxon serve` start until its Redis index held every pending escalation.
    rebuild_s: float | None
    warnings: list[str] = field(default_factory=list)


@dataclass
class StormResult:
    scenario: str
    count: int
    executed: int
    # Seconds from the worker's start until the last executed_at, and between the first and last.
    drain_s: float
    span_s: float
    worker_cpu_s: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class MemoryResult:
    scenario: str
    idle_kib: int = 0
    pending: int = 0
    pending_kib: int = 0
    pending_peak_kib: int = 0
    rebuild_s: float | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class RestartResult:
    scenario: str
    count: int
    executed_before_kill: int
    # Seconds from the second worker's start until the last executed_at; None if it never drained.
    drain_s: float | None
    executed: int
    statuses: dict[str, int]
    executed_entries: int
    executed_distinct: int
    warnings: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.executed_entries - self.executed_distinct


class Redis:
    """Just enough of the Redis protocol for this benchmark: one short connection per command."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.db = int(parts.path.strip("/") or 0)

    def command(self, *args):
        with socket.create_connection(self.address, timeout=10) as sock, \
                sock.makefile("rb") as reader:
            reply = None
            for command in (("SELECT", self.db), args):
                words = [str(a).encode() for a in command]
                sock.sendall(b"*%d\r\n" % len(words)
                             + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
                reply = read_reply(reader)
            return reply


def read_reply(reader):
    line = reader.readline()
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2].decode()
    if kind == b"*":
        return [read_reply(reader) for _ in range(int(rest))]
    raise RuntimeError(f"redis: unexpected reply {line!r}")


def pg_ms(column: str) -> str:
    """A PostgreSQL timestamptz expression as integer epoch milliseconds."""
    return f"(extract(epoch from {column}) * 1000)::bigint"


def pg_at(millis: int) -> str:
    """Epoch milliseconds as an exact PostgreSQL timestamptz literal expression."""
    return f"(timestamptz 'epoch' + {int(millis)} * interval '1 millisecond')"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def seed_id_prefix(millis: int) -> str:
    """The first three groups of a UUIDv7 for `millis`; seeded ids add a kind and a counter, so
    they are unique, sort by creation like klaxon's own, and go into the indexes in order."""
    hex_ms = f"{millis:012x}"
    return f"{hex_ms[:8]}-{hex_ms[8:]}-7000"


class Database:
    """One fresh database for one measurement: a SQLite file or a PostgreSQL database, with its
    schema made by `klaxon migrate` and rows seeded in bulk."""

    def __init__(self, args, workdir: Path, backend: str, name: str) -> None:
        self.args, self.backend, self.name = args, backend, name
        if backend == "sqlite":
            self.path = workdir / f"{name}.db"
            self.url = f"sqlite://{self.path}"
        else:
            self.url = with_database(args.postgres, name)

    def create(self, workdir: Path) -> None:
        if self.backend == "postgres":
            psql(self.args.postgres, f"create database {self.name}")
        migrate = subprocess.run([str(self.args.binary), "migrate"], cwd=workdir,
                                 env=klaxon_env(self.url), capture_output=True, text=True,
                                 timeout=120)
        if migrate.returncode != 0:
            raise RuntimeError(f"klaxon migrate ({self.name}) exited with {migrate.returncode}: "
                               f"{migrate.stderr.strip()}")

    def drop(self) -> None:
        if self.args.keep:
            return
        if self.backend == "postgres":
            psql(self.args.postgres, f"drop database if exists {self.name} with (force)")
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def rows(self, sqlite_sql: str, postgres_sql: str, params: tuple = ()) -> list[tuple]:
        """Runs the statement for this backend. PostgreSQL statements are run by `psql`, so any
        value in them is a number this script made, formatted in."""
        if self.backend == "sqlite":
            uri = f"file:{self.path}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=30)) as connection:
                return connection.execute(sqlite_sql, params).fetchall()
        output = psql_run(self.url, postgres_sql)
        return [tuple(line.split("|")) for line in output.splitlines() if line]

    def scalar(self, sqlite_sql: str, postgres_sql: str, params: tuple = ()) -> int:
        value = self.rows(sqlite_sql, postgres_sql, params)[0][0]
        return int(value) if value not in (None, "") else 0

    def seed(self, count: int, first_due_ms: int, last_due_ms: int,
             policy: str = SEED_POLICY) -> float:
        """Seeds `count` incidents in ESCALATING under the policy snapshot `policy` (JSON), each
        with one PENDING level-1 escalation, due evenly from `first_due_ms` to `last_due_ms`, in
        one transaction. Returns seconds taken."""
        started = time.monotonic()
        now = now_ms()
        prefix = seed_id_prefix(now)
        step = (last_due_ms - first_due_ms) / max(1, count - 1)
        if self.backend == "sqlite":
            with closing(sqlite3.connect(self.path, isolation_level=None)) as connection:
                # The bulk load need not survive a power cut (the file is synced when it closes),
                # and a big page cache keeps the indexes it appends to in memory.
                connection.execute("pragma synchronous = off")
                connection.execute(f"pragma cache_size = -{SEED_CACHE_KIB}")
                connection.execute("begin")
                # The rows are generated by SQLite itself: binding a million rows one by one from
                # Python (`executemany`) took two to three times as long.
                connection.execute(
                    "insert into incidents (id, title, severity, status, event_count,"
                    " escalation_level, escalation_policy, created_at, updated_at)"
                    f" {SQLITE_SERIES}"
                    " select printf('%s-8001-%012x', $prefix, n), 'escalation bench seed ' || n,"
                    " 'error', 'ESCALATING', 0, 0, $policy, $now, $now from series",
                    {"last": count - 1, "prefix": prefix, "policy": policy, "now": now})
                connection.execute(
                    "insert into escalations (id, incident_id, escalation_level, status,"
                    " scheduled_at, created_at)"
                    f" {SQLITE_SERIES}"
                    " select printf('%s-8002-%012x', $prefix, n),"
                    " printf('%s-8001-%012x', $prefix, n), 1, 'PENDING',"
                    " $first_due + cast(round(n * $step) as integer), $now from series",
                    {"last": count - 1, "prefix": prefix, "first_due": first_due_ms, "step": step,
                     "now": now})
                connection.execute("commit")
                connection.execute("pragma wal_checkpoint(truncate)")
        else:
            incident_id = f"('{prefix}-8001-' || lpad(to_hex(g), 12, '0'))::uuid"
            psql_run(self.url, f"""
                begin;
                -- Skips the per-row foreign-key checks (a trigger each): the seeded rows are
                -- consistent by construction, and the check doubled the time of the load.
                set local session_replication_role = replica;
                insert into incidents (id, title, severity, status, event_count, escalation_level,
                                       escalation_policy, created_at, updated_at)
                select {incident_id}, 'escalation bench seed ' || g, 'error', 'ESCALATING', 0, 0,
                       '{policy}'::jsonb, {pg_at(now)}, {pg_at(now)}
                from generate_series(0, {count - 1}) g;
                insert into escalations (id, incident_id, escalation_level, status, scheduled_at,
                                         created_at)
                select ('{prefix}-8002-' || lpad(to_hex(g), 12, '0'))::uuid, {incident_id}, 1,
                       'PENDING',
                       {pg_at(first_due_ms)} + round(g * {step}) * interval '1 millisecond',
                       {pg_at(now)}
                from generate_series(0, {count - 1}) g;
                commit;
                vacuum analyze incidents;
                vacuum analyze escalations;
            """)
        return time.monotonic() - started

    def executed(self) -> int:
        sql = "select count(*) from escalations where status = 'EXECUTED'"
        return self.scalar(sql, sql)

    def pending(self) -> int:
        sql = "select count(*) from escalations where status = 'PENDING'"
        return self.scalar(sql, sql)

    def executed_span_ms(self) -> tuple[int, int]:
        """The first and last executed_at, in epoch milliseconds."""
        row = self.rows(
            "select min(executed_at), max(executed_at) from escalations where status = 'EXECUTED'",
            f"select {pg_ms('min(executed_at)')}, {pg_ms('max(executed_at)')}"
            " from escalations where status = 'EXECUTED'")[0]
        return int(row[0]), int(row[1])

    def statuses(self) -> dict[str, int]:
        sql = "select status, count(*) from escalations group by status order by status"
        return {status: int(n) for status, n in self.rows(sql, sql)}

    def probe_lags_ms(self, before_ms: int) -> tuple[list[float], int]:
        """The lags of the escalations due before `before_ms` (the probes) that executed, and how
        many of those escalations did not execute."""
        rows = self.rows(
            "select status, executed_at - scheduled_at from escalations where scheduled_at < ?",
            "select status, extract(epoch from executed_at - scheduled_at) * 1000"
            f" from escalations where scheduled_at < {pg_at(before_ms)}",
            (before_ms,))
        lags = [float(lag) for status, lag in rows if status == "EXECUTED"]
        return lags, len(rows) - len(lags)

    def probes_pending(self, before_ms: int) -> int:
        return self.scalar(
            "select count(*) from escalations where status = 'PENDING' and scheduled_at < ?",
            "select count(*) from escalations"
            f" where status = 'PENDING' and scheduled_at < {pg_at(before_ms)}",
            (before_ms,))

    def executed_entries(self) -> tuple[int, int]:
        """`escalation.executed` timeline entries, and the distinct escalations they name."""
        row = self.rows(
            "select count(*), count(distinct json_extract(detail, '$.escalation_id'))"
            " from timeline where kind = 'escalation.executed'",
            "select count(*), count(distinct detail->>'escalation_id')"
            " from timeline where kind = 'escalation.executed'")[0]
        return int(row[0]), int(row[1])


class PsqlSession:
    """One `psql` kept open, for queries asked often: no connection set-up per query."""

    END = "__klaxon_bench_end__"

    def __init__(self, processes: Processes, url: str) -> None:
        self.processes = processes
        self.process = processes.start(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atq"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       bufsize=1)

    def rows(self, sql: str) -> list[tuple]:
        self.process.stdin.write(f"{sql};\n\\echo {self.END}\n")
        self.process.stdin.flush()
        rows = []
        while (line := self.process.stdout.readline()) != f"{self.END}\n":
            if not line:
                raise RuntimeError(f"psql exited with {self.process.wait()}")
            rows.append(tuple(line.rstrip("\n").split("|")))
        return rows

    def close(self) -> None:
        self.processes.stop(self.process)


class CommitObserver(threading.Thread):
    """Watches the probes from outside klaxon, to check what executed_at cannot show.

    A batch stamps executed_at when it starts, before it waits for a connection (on SQLite, for
    the one writer, which API requests also use) and before it commits. Every OBSERVE_INTERVAL_S
    this thread reads the probes that are EXECUTED. A probe first seen by one read was committed
    after the previous read started and before this one did: for each probe it records both
    bounds, − scheduled_at, one interval plus one read apart."""

    def __init__(self, database: Database, processes: Processes, before_ms: int) -> None:
        super().__init__(daemon=True)
        self.database, self.processes, self.before_ms = database, processes, before_ms
        self.committed_ms: dict[str, tuple[float, float]] = {}
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            if self.database.backend == "sqlite":
                uri = f"file:{self.database.path}?mode=ro"
                with closing(sqlite3.connect(uri, uri=True, timeout=30)) as connection:
                    self.watch(lambda since: connection.execute(
                        "select id, scheduled_at, executed_at from escalations"
                        " where status = 'EXECUTED' and scheduled_at < ? and executed_at >= ?",
                        (self.before_ms, since)).fetchall())
            else:
                session = PsqlSession(self.processes, self.database.url)
                try:
                    self.watch(lambda since: session.rows(
                        f"select id, {pg_ms('scheduled_at')}, {pg_ms('executed_at')}"
                        " from escalations where status = 'EXECUTED'"
                        f" and scheduled_at < {pg_at(self.before_ms)}"
                        f" and executed_at >= {pg_at(since)}"))
                finally:
                    session.close()
        except BaseException as error:  # reported by `stop`, in the main thread
            self.error = error

    def watch(self, executed_since) -> None:
        since, previous = 0, now_ms()
        while not self.stopping.is_set():
            looked = now_ms()
            for escalation_id, scheduled_at, executed_at in executed_since(since):
                if escalation_id not in self.committed_ms:
                    due = int(scheduled_at)
                    self.committed_ms[escalation_id] = (previous - due, looked - due)
                since = max(since, int(executed_at) - OBSERVE_SLACK_MS)
            previous = looked
            time.sleep(OBSERVE_INTERVAL_S)

    def stop(self) -> list[tuple[float, float]]:
        self.stopping.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the commit observer failed: {self.error}")
        return list(self.committed_ms.values())


def psql_run(url: str, sql: str) -> str:
    """Like ingest's `psql`, for scripts of several statements and with a longer timeout."""
    done = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atq"], input=sql,
                          capture_output=True, text=True, timeout=PSQL_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def klaxon_env(database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("KLAXON_") and key != "RUST_LOG"}
    env.update(KLAXON_DATABASE_URL=database_url, RUST_LOG="warn", **extra)
    if redis_url:
        env["KLAXON_REDIS_URL"] = redis_url
    return env


class Bench:
    """What every measurement shares: the arguments, child processes, work directory, Redis."""

    def __init__(self, args, processes: Processes, workdir: Path, nonce: str) -> None:
        self.args, self.processes, self.workdir, self.nonce = args, processes, workdir, nonce
        self.redis = Redis(args.redis)

    def database(self, scenario: Scenario, purpose: str) -> Database:
        name = f"klaxon_escbench_{self.nonce}_{scenario.name.replace('+', '_')}_{purpose}"
        database = Database(self.args, self.workdir, scenario.backend, name)
        database.create(self.workdir)
        return database

    def start(self, scenario: Scenario, database: Database, log_name: str, command: list[str],
              **extra_env: str) -> tuple[subprocess.Popen, Path]:
        """Starts `klaxon <command>` on `database` (and on a flushed Redis database, for +redis)."""
        redis_url = None
        if scenario.redis:
            self.redis.command("FLUSHDB")
            redis_url = self.redis.url
        log = self.workdir / f"{log_name}.log"
        with log.open("w") as out:
            # The work directory holds no `.env`, so only these variables configure klaxon.
            process = self.processes.start([str(self.args.binary), *command], cwd=self.workdir,
                                           env=klaxon_env(database.url, redis_url, **extra_env),
                                           stdout=out, stderr=subprocess.STDOUT)
        return process, log

    def wait_rebuilt(self, database: Database, process: subprocess.Popen, log: Path,
                     pending: int, started: float) -> float:
        """Waits until the Redis index of klaxon on `database` holds `pending` entries; returns
        the seconds since `started` (a `time.monotonic()` reading)."""
        sql = "select id from installation"
        key = REDIS_PENDING_KEY.format(installation=database.rows(sql, sql)[0][0])
        while self.redis.command("ZCARD", key) < pending:
            if process.poll() is not None:
                raise RuntimeError(f"klaxon exited with {process.returncode}:\n{tail(log)}")
            if time.monotonic() - started > REBUILD_TIMEOUT_S:
                raise RuntimeError(f"the Redis index did not reach {pending:,} entries within "
                                   f"{REBUILD_TIMEOUT_S:.0f}s:\n{tail(log)}")
            time.sleep(0.2)
        return time.monotonic() - started


def memory_kib(pid: int) -> tuple[int, int]:
    """The process's resident set size now and at its peak (VmRSS, VmHWM), in KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines)
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def wait_drained(database: Database, process: subprocess.Popen, log: Path, count: int) -> bool:
    """Polls until `count` escalations are EXECUTED; False if that takes over DRAIN_TIMEOUT_S."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while database.executed() < count:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def bench_storm(bench: Bench, scenario: Scenario, memory: MemoryResult) -> StormResult:
    """Idle memory on an empty database, then the storm on the same database."""
    count = bench.args.storm
    database = bench.database(scenario, "storm")
    try:
        worker, log = bench.start(scenario, database, f"{scenario.name}-idle-worker", ["worker"])
        time.sleep(IDLE_SETTLE_S)
        memory.idle_kib, _ = memory_kib(worker.pid)
        bench.processes.stop(worker)
        memory.warnings += warning_lines(log)

        now = now_ms()
        seeded = database.seed(count, now - OVERDUE_WINDOW_MS, now - 1)
        print(f"  storm: seeded {count:,} overdue in {seeded:.1f}s", file=sys.stderr)
        started_ms = now_ms()
        worker, log = bench.start(scenario, database, f"{scenario.name}-storm-worker", ["worker"])
        drained = wait_drained(database, worker, log, count)
        cpu = process_cpu_s(worker.pid)
        bench.processes.stop(worker)
        executed = database.executed()
        first, last = database.executed_span_ms() if executed else (started_ms, started_ms)
        result = StormResult(scenario.name, count, executed, (last - started_ms) / 1000,
                             (last - first) / 1000, cpu, warning_lines(log))
        if not drained:
            result.warnings.append(f"bench: only {executed:,} of {count:,} executed "
                                   f"within {DRAIN_TIMEOUT_S:.0f}s")
        return result
    finally:
        bench.processes.stop_all()
        database.drop()


def bench_restart(bench: Bench, scenario: Scenario) -> RestartResult:
    count = bench.args.restart
    database = bench.database(scenario, "restart")
    try:
        now = now_ms()
        database.seed(count, now - OVERDUE_WINDOW_MS, now - 1)
        first, log_first = bench.start(scenario, database, f"{scenario.name}-restart-first",
                                       ["worker"])
        # Killed as soon as its first batch is seen committed (or it exits: then the run fails).
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while database.executed() == 0:
            if first.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the first worker executed nothing:\n{tail(log_first)}")
            time.sleep(0.01)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        bench.processes.stop(first)
        before = database.executed()

        restarted_ms = now_ms()
        # Redis is not flushed: it survives a worker crash, with whatever the killed one left.
        redis_url = bench.redis.url if scenario.redis else None
        log = bench.workdir / f"{scenario.name}-restart-second.log"
        with log.open("w") as out:
            second = bench.processes.start([str(bench.args.binary), "worker"], cwd=bench.workdir,
                                           env=klaxon_env(database.url, redis_url),
                                           stdout=out, stderr=subprocess.STDOUT)
        drained = wait_drained(database, second, log, count)
        bench.processes.stop(second)
        _, last = database.executed_span_ms()
        entries, distinct = database.executed_entries()
        return RestartResult(
            scenario.name, count, before, (last - restarted_ms) / 1000 if drained else None,
            database.executed(), database.statuses(), entries, distinct,
            warning_lines(log_first) + warning_lines(log))
    finally:
        bench.processes.stop_all()
        database.drop()


def bench_lag(bench: Bench, scenario: Scenario, pending: int, memory: MemoryResult | None
              ) -> LagResult:
    """Lag of probes with `pending` escalations pending; with `memory`, also the memory of a
    worker with them pending."""
    database = bench.database(scenario, f"lag{pending}")
    try:
        first_due = now_ms() + SEED_DUE_AFTER_MS
        seeded = database.seed(pending, first_due, first_due + SEED_DUE_AFTER_MS)
        print(f"  lag: seeded {pending:,} pending in {seeded:.1f}s", file=sys.stderr)
        config = bench.workdir / "probe-policy.toml"
        config.write_text("[[escalation.levels]]\nlevel = 1\n"
                          f'delay = "{PROBE_DELAY}"\nchannels = ["in_app"]\n')
        token = secrets.token_urlsafe(24)
        started = time.monotonic()
        server, log = bench.start(scenario, database, f"{scenario.name}-lag{pending}-serve",
                                  ["serve", "--config", str(config)],
                                  KLAXON_LISTEN="127.0.0.1:0", KLAXON_ADMIN_TOKEN=token)
        port = listening_port(server, log)
        wait_ready(server, f"http://127.0.0.1:{port}/health", log)
        rebuild_s = (bench.wait_rebuilt(database, server, log, pending, started)
                     if scenario.redis else None)
        observer = CommitObserver(database, bench.processes, first_due)
        observer.start()
        try:
            try:
                probes, errors = send_probes(port, token, bench.args.probes,
                                             bench.args.probe_seconds,
                                             f"{bench.nonce} {scenario.name} {pending}")
            except OSError as error:
                exited = server.poll()
                state = "running" if exited is None else f"exited with {exited}"
                raise RuntimeError(f"sending probes to klaxon serve ({state}) failed: {error}\n"
                                   f"{tail(log)}") from error
            deadline = time.monotonic() + PROBE_DELAY_MS / 1000 + PROBE_GRACE_S
            while database.probes_pending(first_due) and time.monotonic() < deadline:
                time.sleep(0.2)
            # One more look, for the last batch committed after the observer's last read.
            time.sleep(OBSERVE_INTERVAL_S * 2)
        finally:
            committed = observer.stop()
        bench.processes.stop(server)
        lags, missing = database.probe_lags_ms(first_due)
        result = LagResult(scenario.name, pending, probes, lags, committed, missing, errors,
                           rebuild_s, warning_lines(log))
        if memory is not None:
            started = time.monotonic()
            worker, log = bench.start(scenario, database, f"{scenario.name}-rss{pending}-worker",
                                      ["worker"])
            memory.pending = database.pending()
            if scenario.redis:
                memory.rebuild_s = bench.wait_rebuilt(database, worker, log, memory.pending,
                                                      started)
            time.sleep(PENDING_SETTLE_S)
            memory.pending_kib, memory.pending_peak_kib = memory_kib(worker.pid)
            bench.processes.stop(worker)
            memory.warnings += warning_lines(log)
        return result
    finally:
        bench.processes.stop_all()
        database.drop()


def listening_port(server: subprocess.Popen, log: Path) -> int:
    """The port `klaxon serve` says it listens on: it binds port 0, so no other process can take
    the port between choosing it and binding it."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)",
                          log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if server.poll() is not None:
            raise RuntimeError(f"klaxon serve exited with {server.returncode}:\n{tail(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"klaxon serve did not say where it listens within {READY_TIMEOUT_S:.0f}s:\n"
                       f"{tail(log)}")


def send_probes(port: int, token: str, count: int, seconds: float, label: str
                ) -> tuple[int, Counter]:
    """Opens and escalates `count` incidents through the API, evenly over `seconds`, one at a
    time on one keep-alive connection. Returns how many were escalated and the failed answers."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    errors: Counter = Counter()

    def post(path: str, body: dict) -> tuple[int, dict]:
        connection.request("POST", path, json.dumps(body), headers)
        answer = connection.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else {}

    escalated = 0
    started = time.monotonic()
    try:
        for n in range(count):
            pause = started + n * seconds / count - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            status, body = post("/message", {"text": f"escalation bench {label} probe {n}"})
            if status != 201:
                errors[f"POST /message {status}"] += 1
                continue
            status, _ = post(f"/incidents/{body['incident']['id']}/escalate", {})
            if status != 200:
                errors[f"POST /incidents/{{id}}/escalate {status}"] += 1
                continue
            escalated += 1
    finally:
        connection.close()
    return escalated, errors


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MB"


def lag_table(results: list[LagResult]) -> str:
    lines = ["| scenario | pending | probes executed | p50 | p99 | max | target p99 | "
             "| committed: p50 | p99 | max |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in results:
        target = TARGET_LAG_P99_MS.get(r.pending)
        p99 = percentile(r.lags_ms, 99) if r.lags_ms else math.inf
        verdict = met(p99 <= target and not r.missing) if target else "no target at this size"
        lines.append(f"| {r.scenario} | {r.pending:,} | {len(r.lags_ms):,} of {r.probes:,} "
                     f"| {distribution(r.lags_ms)} | {f'≤ {target:.0f} ms' if target else '–'} "
                     f"| {verdict} | {bounds(r.committed_ms)} |")
    return "\n".join(lines)


def bounds(intervals: list[tuple[float, float]]) -> str:
    """p50 | p99 | max of intervals, each as the range from the lower to the upper bound."""
    if not intervals:
        return "– | – | –"
    lower, upper = [low for low, _ in intervals], [high for _, high in intervals]
    figures = [(percentile(lower, p), percentile(upper, p)) for p in (50, 99)]
    figures.append((max(lower), max(upper)))
    return " | ".join(f"{max(0.0, low):.0f}–{high:.0f} ms" for low, high in figures)


def distribution(values: list[float]) -> str:
    """p50 | p99 | max, in milliseconds."""
    if not values:
        return "– | – | –"
    return (f"{percentile(values, 50):.0f} ms | {percentile(values, 99):.0f} ms "
            f"| {max(values):,.0f} ms")


def storm_table(results: list[StormResult]) -> str:
    lines = ["| scenario | overdue | worker start → last executed | executed/s from start "
             "| executed/s first → last | worker CPU | target | |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        rate = r.executed / r.drain_s if r.drain_s > 0 else 0.0
        span_rate = r.executed / r.span_s if r.span_s > 0 else 0.0
        cores = r.worker_cpu_s / r.drain_s if r.drain_s > 0 else 0.0
        lines.append(f"| {r.scenario} | {r.executed:,} of {r.count:,} | {r.drain_s:.2f} s "
                     f"| {rate:,.0f} | {span_rate:,.0f} "
                     f"| {r.worker_cpu_s:.1f} s ({cores:.2f} cores) "
                     f"| ≥ {TARGET_STORM_PER_S:,.0f}/s "
                     f"| {met(rate >= TARGET_STORM_PER_S and r.executed == r.count)} |")
    return "\n".join(lines)


def memory_table(results: list[MemoryResult]) -> str:
    lines = ["| scenario | idle | target | pending | with them pending | peak (VmHWM) | target | |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        idle_ok = r.idle_kib / 1024 <= TARGET_RSS_IDLE_MB
        if r.pending:
            pending_ok = r.pending_kib / 1024 <= TARGET_RSS_PENDING_MB
            figures = f"{r.pending:,} | {mib(r.pending_kib)} | {mib(r.pending_peak_kib)}"
        else:
            pending_ok, figures = True, "– | – | –"
        lines.append(f"| {r.scenario} | {mib(r.idle_kib)} | ≤ {TARGET_RSS_IDLE_MB:.0f} MB "
                     f"| {figures} | ≤ {TARGET_RSS_PENDING_MB:.0f} MB @1,000,000 "
                     f"| {met(idle_ok and pending_ok)} |")
    return "\n".join(lines)


def restart_table(results: list[RestartResult]) -> str:
    lines = ["| scenario | overdue | executed before kill -9 | restart → all executed "
             "| executed twice | target | |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        drain = f"{r.drain_s:.2f} s" if r.drain_s is not None else "did not drain"
        ok = (r.drain_s is not None and r.drain_s <= TARGET_RESTART_S and r.duplicates == 0
              and r.executed == r.count)
        lines.append(f"| {r.scenario} | {r.count:,} | {r.executed_before_kill:,} | {drain} "
                     f"| {r.duplicates:,} | ≤ {TARGET_RESTART_S:.0f} s, none twice | {met(ok)} |")
    return "\n".join(lines)


def notes(lags, storms, memories, restarts) -> list[str]:
    lines = []
    for r in lags:
        if r.rebuild_s is not None:
            lines.append(f"- {r.scenario} @{r.pending:,}: the Redis index held every pending "
                         f"escalation {r.rebuild_s:.1f}s after `klaxon serve` started")
        if r.missing:
            lines.append(f"- {r.scenario} @{r.pending:,}: **{r.missing:,} probe escalations were "
                         f"not executed** {PROBE_GRACE_S:.0f}s after they were due")
        if r.http_errors:
            detail = ", ".join(f"{n}× {what}" for what, n in r.http_errors.items())
            lines.append(f"- {r.scenario} @{r.pending:,}: failed probe requests: {detail}")
    for r in memories:
        if r.rebuild_s is not None:
            lines.append(f"- {r.scenario}: the worker's Redis index held all {r.pending:,} pending "
                         f"escalations {r.rebuild_s:.1f}s after it started")
    for r in restarts:
        if r.executed != r.count or r.statuses.get("PENDING") or r.statuses.get("CANCELLED"):
            lines.append(f"- {r.scenario} restart: **escalations by status {r.statuses}**")
        lines.append(f"- {r.scenario} restart: {r.executed_entries:,} `escalation.executed` "
                     f"timeline entries naming {r.executed_distinct:,} distinct escalations")
    groups = [("lag", lags), ("storm", storms), ("memory", memories), ("restart", restarts)]
    for group, results in groups:
        for r in results:
            if r.warnings:
                pending = f" @{r.pending:,}" if group == "lag" else ""
                lines.append(f"- {r.scenario} {group}{pending}: {len(r.warnings)} warning or "
                             "error lines, most frequent:")
                for line, count in Counter(r.warnings).most_common(3):
                    lines.append(f"  - {count}× `{line[:300]}`")
    return lines


def parse_only(text: str) -> list[Scenario]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(SCENARIOS)}")
    return [Scenario(name) for name in SCENARIOS if name in names]


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(size.replace("_", "")) for size in text.split(",") if size.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(
            "expected comma-separated positive counts, like 10000,100000")
    return sizes


def positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def revision() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml",
                            "Cargo.lock"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return f"{head}{' with uncommitted changes in src/' if dirty else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=parse_only, default=[Scenario(s) for s in SCENARIOS],
                        help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)")
    parser.add_argument("--pending", type=parse_sizes, default=[100_000, 1_000_000],
                        help="pending escalations for the lag runs; memory is read with the "
                             "largest (default 100000,1000000)")
    parser.add_argument("--storm", type=positive, default=100_000,
                        help="escalations falling due at once (default 100000)")
    parser.add_argument("--restart", type=positive, default=10_000,
                        help="overdue escalations at the kill -9 restart (default 10000)")
    parser.add_argument("--probes", type=positive, default=2_000,
                        help="probe escalations per lag run (default 2000)")
    parser.add_argument("--probe-seconds", type=float, default=20.0,
                        help="over how long the probes are sent (default 20)")
    parser.add_argument("--no-build", action="store_true", help="use the existing release build")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/test",
                        help="a database URL for creating and dropping the fresh bench databases")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9",
                        help="the Redis database the +redis scenarios use; it is flushed "
                             "(default redis://127.0.0.1:6379/9)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, SQLite files) and the PostgreSQL "
                             "databases")
    args = parser.parse_args()

    if any(s.backend == "postgres" for s in args.only) and shutil.which("psql") is None:
        print("missing psql: install postgresql-client", file=sys.stderr)
        return 2

    # SIGTERM and SIGHUP unwind like Ctrl-C, so the `finally` blocks stop every child.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)

    machine_text = machine()
    print(f"machine: {machine_text}", file=sys.stderr)
    if not args.no_build:
        print("building klaxon (cargo build --release)…", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)

    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="klaxon-escalation-bench-"))
    # Others may rebuild target/release while this runs: every process runs this copy.
    args.binary = workdir / "klaxon"
    shutil.copy2(KLAXON, args.binary)
    built = revision()
    started = datetime.datetime.now(datetime.timezone.utc)
    bench = Bench(args, processes, workdir, started.strftime("%Y%m%d%H%M%S"))
    lags, storms, memories, restarts = [], [], [], []
    failed = True
    try:
        for scenario in args.only:
            print(f"{scenario.name}:", file=sys.stderr)
            memory = MemoryResult(scenario.name)
            storms.append(bench_storm(bench, scenario, memory))
            print(f"  storm: {storms[-1].drain_s:.2f}s", file=sys.stderr)
            restarts.append(bench_restart(bench, scenario))
            print(f"  restart: {restarts[-1].drain_s}s", file=sys.stderr)
            for pending in args.pending:
                largest = pending == args.pending[-1]
                lags.append(bench_lag(bench, scenario, pending, memory if largest else None))
                print(f"  lag @{pending:,}: {len(lags[-1].lags_ms):,} probes", file=sys.stderr)
            memories.append(memory)
        failed = False
    except KeyboardInterrupt:
        failed = False
        raise
    finally:
        processes.stop_all()
        if args.keep:
            print(f"kept {workdir} and the klaxon_escbench_{bench.nonce}_* databases",
                  file=sys.stderr)
        elif failed:
            print(f"kept {workdir} (logs) for the failure below", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    finished = datetime.datetime.now(datetime.timezone.utc)
    print(f"Escalation benchmark, {started:%Y-%m-%d %H:%M}–{finished:%H:%M} UTC, klaxon "
          f"{built} (release build), `klaxon worker` and `klaxon serve` with RUST_LOG=warn.")
    print(f"Machine: {machine_text}; load average at the end "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}.\n")
    print(f"Escalation lag (executed_at − scheduled_at) of {args.probes:,} probes created over "
          f"{args.probe_seconds:.0f} s through `klaxon serve`'s API, each due {PROBE_DELAY} after "
          "its escalate. *Committed*: when the probe's execution became visible − scheduled_at, "
          f"bounded by the reads of a poller looking every {OBSERVE_INTERVAL_S * 1000:.0f} ms "
          "(executed_at is stamped when the batch's transaction has its connection, before it "
          "commits):\n")
    print(lag_table(lags))
    print(f"\nStorm: {args.storm:,} escalations overdue when a `klaxon worker` starts:\n")
    print(storm_table(storms))
    print("\nResident memory of a `klaxon worker` (VmRSS):\n")
    print(memory_table(memories))
    print(f"\nRestart: {args.restart:,} overdue; the first worker is killed with SIGKILL once its "
          "first batch is committed, and a second one started:\n")
    print(restart_table(restarts))
    lines = notes(lags, storms, memories, restarts)
    if lines:
        print()
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("escalation: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        print(f"escalation: {error}", file=sys.stderr)
        sys.exit(1)
