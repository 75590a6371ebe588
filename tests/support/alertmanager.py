"""Runs a real Alertmanager whose one receiver is a webhook to Klaxon, and posts alerts to it, for
tests of POST /integrations/alertmanager.

Usage:
  alertmanager.py serve --webhook-url URL --key KEY [--group-by LABEL ...]
      Starts Alertmanager on a free loopback port and prints "ready PORT" once its API answers.
      Runs until it is stopped; Alertmanager stops with it, even when it is killed.
  alertmanager.py fire --alertmanager URL --label NAME=VALUE ... [--annotation NAME=VALUE ...]
      Posts one firing alert to Alertmanager's POST /api/v2/alerts.
  alertmanager.py resolve --alertmanager URL --label NAME=VALUE ... [--annotation NAME=VALUE ...]
      Posts the same alert again, ended a second ago: Alertmanager then sends it as resolved.

As a library:
  with Alertmanager(webhook_url, key) as alertmanager:
      alertmanager.fire({"alertname": "DiskFull"})
      alertmanager.resolve({"alertname": "DiskFull"})

Alertmanager posts its webhook payload (version "4") to URL with `Authorization: Bearer KEY`,
grouping alerts by --group-by (alertname unless given). The binary is Debian's
prometheus-alertmanager (scripts/test-deps.sh installs it) or upstream's alertmanager, whichever
is on PATH. It runs with clustering off and its state in a temporary directory, removed on stop.
"""

import argparse
import ctypes
import datetime
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARIES = ("prometheus-alertmanager", "alertmanager")
"""Debian's name for the binary, then upstream's."""

GROUP_WAIT = "1s"
"""How long a new group waits for more alerts before its first notification."""

GROUP_INTERVAL = "2s"
"""How long a group waits before it notifies of a change, a resolved alert included."""

REPEAT_INTERVAL = "1h"
"""How long before an unchanged group is notified again: longer than any test."""

READY_TIMEOUT = 10.0
"""Seconds Alertmanager gets to answer /-/ready after it starts."""

STOP_TIMEOUT = 5.0
"""Seconds Alertmanager gets to exit on SIGTERM before it is killed."""

PR_SET_PDEATHSIG = 1
"""prctl(2)'s option that names the signal a process gets when its parent dies (linux/prctl.h)."""


def config(webhook_url, key, group_by):
    """Alertmanager's configuration, as JSON, which its YAML parser reads."""
    return {
        "route": {
            "receiver": "klaxon",
            "group_by": list(group_by),
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [
            {
                "name": "klaxon",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": key}},
                    }
                ],
            }
        ],
    }


def post_alert(alertmanager_url, labels, annotations=None, ends_at=None):
    """Posts one alert to Alertmanager's API; Alertmanager sets its start to now."""
    alert = {"labels": labels, "annotations": annotations or {}}
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    request = urllib.request.Request(
        f"{alertmanager_url}/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=READY_TIMEOUT):
        pass


def fire(alertmanager_url, labels, annotations=None):
    post_alert(alertmanager_url, labels, annotations)


def resolve(alertmanager_url, labels, annotations=None):
    ended = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    post_alert(alertmanager_url, labels, annotations, ends_at=ended)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def die_with_parent():
    # A test that kills this helper, even with SIGKILL, must not leave Alertmanager running.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Alertmanager:
    def __init__(self, webhook_url, key, group_by=("alertname",)):
        self.webhook_url = webhook_url
        self.key = key
        self.group_by = group_by
        self.process = None
        self.workdir = None
        self.url = None

    def start(self):
        binary = next(filter(None, map(shutil.which, BINARIES)), None)
        if binary is None:
            raise RuntimeError("no Alertmanager on PATH: run scripts/test-deps.sh")
        self.workdir = Path(tempfile.mkdtemp(prefix="klaxon-alertmanager-"))
        config_file = self.workdir / "alertmanager.yml"
        config_file.write_text(json.dumps(config(self.webhook_url, self.key, self.group_by)))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            preexec_fn=die_with_parent,
        )
        self.wait_ready()
        return self

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Alertmanager exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError(f"Alertmanager not ready within {READY_TIMEOUT} s")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def fire(self, labels, annotations=None):
        fire(self.url, labels, annotations)

    def resolve(self, labels, annotations=None):
        resolve(self.url, labels, annotations)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def name_value(text):
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve")
    serve.add_argument("--webhook-url", required=True)
    serve.add_argument("--key", required=True, help="sent as Authorization: Bearer KEY")
    serve.add_argument("--group-by", action="append", help="a label to group by (repeatable)")

    for command in ("fire", "resolve"):
        alert = commands.add_parser(command)
        alert.add_argument("--alertmanager", required=True, help="Alertmanager's base URL")
        alert.add_argument("--label", type=name_value, action="append", required=True)
        alert.add_argument("--annotation", type=name_value, action="append", default=[])
    return parser.parse_args(argv)


def serve(args):
    # SIGTERM ends the helper as Ctrl-C does, through the `with` that stops Alertmanager.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with Alertmanager(args.webhook_url, args.key, args.group_by or ("alertname",)) as am:
            print("ready", am.url.rsplit(":", 1)[1], flush=True)
            return am.process.wait()
    except KeyboardInterrupt:
        return 0


def main(argv):
    args = parse_args(argv)
    if args.command == "serve":
        return serve(args)
    send = fire if args.command == "fire" else resolve
    send(args.alertmanager, dict(args.label), dict(args.annotation))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
