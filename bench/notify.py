#!/usr/bin/env python3
"""Notification benchmark (SPEC §7, "time to page"): dispatcher throughput and due-to-delivery
delay, to a local webhook receiver and to a real SMTP server.

For each backend (sqlite, postgres), on fresh databases, with one `klaxon worker` (whose
dispatcher sends what its escalation worker executes):

- webhook storm: N escalations, each telling one webhook, all due at once; notifications
  delivered per second, from the first post received to the last;
- webhook trickle: escalations due evenly over a few seconds; for each, the delay from its due
  time (scheduled_at) to its post reaching the receiver; p50, p99, max;
- SMTP storm and trickle: the same with one email per escalation to one user, through aiosmtpd;
  the delay runs from the due time to the end of the mail's DATA at the server;
- SMS storm and trickle: one text per escalation to one user's phone, through a
  Twilio-compatible `Messages.json` endpoint served by the same receiver (it answers 201 with a
  sid at once); the delay runs from the due time to the request reaching it. SPEC §7 sets no
  target for texts: the figures show what the dispatcher adds before a provider's own delay.

Escalations are seeded in bulk with SQL (as bench/escalation.py does), so the measure starts at
the engine. The receivers run in this process: an asyncio HTTP/1.1 server answering 200 at once,
and aiosmtpd (installed by scripts/test-deps.sh). Prints Markdown tables with the targets beside
the figures. Needs Python 3.11, aiosmtpd, `psql` and PostgreSQL as bench/escalation.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from escalation import Bench, Database, Scenario, now_ms, percentile, revision
from ingest import KLAXON, REPO, Processes, free_port, machine, tail, warning_lines

# SPEC §7 targets.
TARGET_WEBHOOK_PER_S = 2_000.0
TARGET_WEBHOOK_P99_MS = 50.0
TARGET_SMTP_P99_MS = 250.0

# Seeded storms fall due this long after seeding, so the worker is up and idle when they do.
STORM_LEAD_MS = 3_000
# Trickles start this long after seeding and are spread over `--trickle-seconds`.
TRICKLE_LEAD_MS = 3_000
# How long to wait for every notification to arrive.
DELIVERY_TIMEOUT_S = 180.0

WEBHOOK_POLICY = '[{"level":1,"delay":300000,"channels":["webhook"],"webhooks":["bench"]}]'
EMAIL_POLICY = '[{"level":1,"delay":300000,"channels":["email"]}]'
SMS_POLICY = '[{"level":1,"delay":300000,"channels":["sms"]}]'


class Arrivals:
    """What a receiver got: the wall-clock millisecond each message arrived, by incident id (webhook)
    or notification id (mail)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at_ms: dict[str, float] = {}
        self.duplicates = 0

    def record(self, key: str) -> None:
        at = time.time() * 1000
        with self.lock:
            if key in self.at_ms:
                self.duplicates += 1
            else:
                self.at_ms[key] = at

    def count(self) -> int:
        with self.lock:
            return len(self.at_ms)

    def reset(self) -> None:
        with self.lock:
            self.at_ms.clear()
            self.duplicates = 0


class Receivers(threading.Thread):
    """A webhook receiver and an SMTP server on an asyncio loop of their own."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.webhook_port, self.smtp_port = free_port(), free_port()
        self.posts, self.mails, self.texts = Arrivals(), Arrivals(), Arrivals()
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self.serve())

    async def serve(self) -> None:
        from aiosmtpd.smtp import SMTP

        server = await asyncio.start_server(self.webhook, "127.0.0.1", self.webhook_port)
        mails = self.mails

        class Handler:
            async def handle_DATA(self, _server, _session, envelope):
                content = envelope.content.decode("utf-8", "replace")
                for line in content.splitlines():
                    if line.lower().startswith("message-id:"):
                        mails.record(line.split("<", 1)[1].split("@", 1)[0])
                        break
                return "250 OK"

        loop = asyncio.get_running_loop()
        smtp = await loop.create_server(lambda: SMTP(Handler()), "127.0.0.1", self.smtp_port)
        self.ready.set()
        async with server, smtp:
            await asyncio.Event().wait()

    async def webhook(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive: reads each request whole. A webhook post is answered 200 and
        its incident id (the generic payload carries it) recorded; a text (`…/Messages.json`) is
        answered 201 with a new sid, which is recorded."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if head.split(b" ", 2)[1].endswith(b"/Messages.json"):
                    sid = f"SM{uuid.uuid4().hex}"
                    self.texts.record(sid)
                    answer = json.dumps({"sid": sid, "status": "queued"}).encode()
                    writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                                 + f"content-length: {len(answer)}\r\n\r\n".encode() + answer)
                else:
                    incident = json.loads(body)["notifications"][0]["incident"]["id"]
                    self.posts.record(incident)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@dataclass
class Result:
    backend: str
    channel: str
    storm_count: int = 0
    storm_per_s: float = 0.0
    trickle_delays_ms: list[float] = field(default_factory=list)
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)


def config_file(workdir: Path, receivers: Receivers) -> Path:
    path = workdir / "klaxon.toml"
    path.write_text(f"""
[email]
smtp_host = "127.0.0.1"
smtp_port = {receivers.smtp_port}
tls = "none"
from = "Klaxon bench <klaxon@example.com>"

[webhooks.bench]
url = "http://127.0.0.1:{receivers.webhook_port}/"
format = "generic"

[[sms.providers]]
name = "bench"
base_url = "http://127.0.0.1:{receivers.webhook_port}"
account_sid = "ACbench"
auth_token = "bench-token"
from = "+15550000001"

[notifications.rate_limits]
email = {{ count = 1000000, per = "1m" }}
webhook = {{ count = 1000000, per = "1m" }}
sms = [{{ count = 1000000, per = "1m" }}]
""")
    return path


def wait_for(arrivals: Arrivals, count: int, worker: subprocess.Popen, log: Path) -> bool:
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while arrivals.count() < count:
        if worker.poll() is not None:
            raise RuntimeError(f"klaxon worker exited with {worker.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def due_by_key(database: Database, channel: str) -> dict[str, float]:
    """Each delivered message's key (incident id for webhooks, notification id for mail, the
    provider's sid for texts) with the due time of the escalation it came from, in epoch
    milliseconds."""
    key = {"webhook": "n.incident_id", "email": "n.id", "sms": "n.provider_id"}[channel]
    sqlite_sql = (f"select {key}, e.scheduled_at from notifications n "
                  "join escalations e on e.id = n.escalation_id")
    postgres_sql = (f"select {key}, (extract(epoch from e.scheduled_at) * 1000)::bigint "
                    "from notifications n join escalations e on e.id = n.escalation_id")
    return {str(k): float(due) for k, due in database.rows(sqlite_sql, postgres_sql)}


def run_channel(bench: Bench, receivers: Receivers, config: Path, backend: str, channel: str
                ) -> Result:
    args = bench.args
    result = Result(backend, channel)
    arrivals = {"webhook": receivers.posts, "email": receivers.mails,
                "sms": receivers.texts}[channel]
    policy = {"webhook": WEBHOOK_POLICY, "email": EMAIL_POLICY, "sms": SMS_POLICY}[channel]
    storm = {"webhook": args.webhook_storm, "email": args.smtp_storm,
             "sms": args.sms_storm}[channel]
    scenario = Scenario(backend)
    for phase in ("storm", "trickle"):
        database = bench.database(scenario, f"{channel}_{phase}")
        try:
            if channel in ("email", "sms"):
                add_user = subprocess.run(
                    [str(args.binary), "--config", str(config), "user", "create", "--handle",
                     "oncall", "--name", "On Call", "--email", "oncall@example.com",
                     "--phone", "+14155550100"],
                    cwd=bench.workdir, env=bench_env(database), capture_output=True, text=True)
                if add_user.returncode != 0:
                    raise RuntimeError(f"klaxon user create: {add_user.stderr.strip()}")
            arrivals.reset()
            now = now_ms()
            if phase == "storm":
                count = storm
                database.seed(count, now + STORM_LEAD_MS, now + STORM_LEAD_MS, policy)
            else:
                count = args.trickle
                first = now + TRICKLE_LEAD_MS
                database.seed(count, first, first + int(args.trickle_seconds * 1000), policy)
            worker, log = bench.start(scenario, database, f"{backend}-{channel}-{phase}",
                                      ["--config", str(config), "worker"])
            delivered = wait_for(arrivals, count, worker, log)
            bench.processes.stop(worker)
            result.warnings += warning_lines(log)
            if not delivered:
                result.warnings.append(f"bench: {arrivals.count():,} of {count:,} {channel} "
                                       f"{phase} messages arrived within {DELIVERY_TIMEOUT_S:.0f}s")
            result.duplicates += arrivals.duplicates
            times = sorted(arrivals.at_ms.values())
            if phase == "storm" and len(times) > 1:
                result.storm_count = len(times)
                result.storm_per_s = (len(times) - 1) / ((times[-1] - times[0]) / 1000)
            if phase == "trickle":
                due = due_by_key(database, channel)
                result.trickle_delays_ms = [at - due[key] for key, at in arrivals.at_ms.items()
                                            if key in due]
        finally:
            bench.processes.stop_all()
            database.drop()
    return result


def bench_env(database: Database) -> dict[str, str]:
    from escalation import klaxon_env
    return klaxon_env(database.url)


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(results: list[Result]) -> str:
    rows = ["| backend | channel | storm: delivered/s | trickle: due → received p50 | p99 | max "
            "| target met | duplicates |",
            "|---|---|---:|---:|---:|---:|---|---:|"]
    for r in results:
        delays = r.trickle_delays_ms or [float("nan")]
        p99 = percentile(delays, 99)
        if r.channel == "webhook":
            ok = met(r.storm_per_s >= TARGET_WEBHOOK_PER_S and p99 <= TARGET_WEBHOOK_P99_MS)
        elif r.channel == "email":
            ok = met(p99 <= TARGET_SMTP_P99_MS)
        else:
            ok = "no target"
        rows.append(f"| {r.backend} | {r.channel} | {r.storm_per_s:,.0f} ({r.storm_count:,}) | "
                    f"{percentile(delays, 50):.1f} ms | {p99:.1f} ms | {max(delays):.1f} ms | "
                    f"{ok} | {r.duplicates} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="sqlite,postgres",
                        help="comma-separated backends (default sqlite,postgres)")
    parser.add_argument("--webhook-storm", type=int, default=20_000,
                        help="webhook notifications due at once (default 20000)")
    parser.add_argument("--smtp-storm", type=int, default=2_000,
                        help="mails due at once (default 2000)")
    parser.add_argument("--sms-storm", type=int, default=2_000,
                        help="texts due at once (default 2000)")
    parser.add_argument("--channels", default="webhook,email,sms",
                        help="comma-separated channels (default webhook,email,sms)")
    parser.add_argument("--trickle", type=int, default=1_000,
                        help="notifications due over --trickle-seconds (default 1000)")
    parser.add_argument("--trickle-seconds", type=float, default=10.0)
    parser.add_argument("--no-build", action="store_true", help="use the existing release build")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    backends = [b for b in args.only.split(",") if b]

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    machine_text = machine()
    print(f"machine: {machine_text}", file=sys.stderr)
    if not args.no_build:
        print("building klaxon (cargo build --release)…", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)

    receivers = Receivers()
    receivers.start()
    receivers.ready.wait(10)
    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="klaxon-notify-bench-"))
    args.binary = workdir / "klaxon"
    shutil.copy2(KLAXON, args.binary)
    config = config_file(workdir, receivers)
    started = datetime.datetime.now(datetime.timezone.utc)
    bench = Bench(args, processes, workdir, started.strftime("%Y%m%d%H%M%S"))
    results = []
    try:
        for backend in backends:
            for channel in [c for c in args.channels.split(",") if c]:
                print(f"{backend} {channel}…", file=sys.stderr)
                results.append(run_channel(bench, receivers, config, backend, channel))
    finally:
        processes.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    finished = datetime.datetime.now(datetime.timezone.utc)
    print(f"Notification benchmark, {started:%Y-%m-%d %H:%M}–{finished:%H:%M} UTC, klaxon "
          f"{revision()} (release build), one `klaxon worker` with RUST_LOG=warn.")
    print(f"Machine: {machine_text}.\n")
    print(f"Storm: {args.webhook_storm:,} webhook posts / {args.smtp_storm:,} mails / "
          f"{args.sms_storm:,} texts due at once. "
          f"Trickle: {args.trickle:,} due evenly over {args.trickle_seconds:.0f} s; the delay runs "
          "from each escalation's due time to the message reaching the receiver (the end of DATA "
          "for mail). Targets (SPEC §7): webhook ≥ 2,000/s and p99 ≤ 50 ms; SMTP p99 ≤ 250 ms.\n")
    print(table(results))
    for r in results:
        for warning in r.warnings[:5]:
            print(f"- {r.backend} {r.channel}: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
