"""Sends one Events API v2 event to Klaxon through PagerDuty's own Python client, for tests of
POST /v2/enqueue.

Usage:
  pd_client.py --url BASE --routing-key KEY [--no-retry] trigger --summary S --source SRC
               [--severity critical|error|warning|info] [--dedup-key K]
               [--payload JSON] [--links JSON] [--images JSON]
  pd_client.py --url BASE --routing-key KEY [--no-retry] acknowledge --dedup-key K
  pd_client.py --url BASE --routing-key KEY [--no-retry] resolve --dedup-key K

The client is `pagerduty.EventsApiV2Client` from the PyPI package `pagerduty` (the successor of
pdpyras; scripts/test-deps.sh installs it). It posts the event to BASE/v2/enqueue. `--payload`
is merged into the trigger's payload (timestamp, component, group, class, custom_details).

Prints one JSON line: {"dedup_key": ...}, what the client returned; or, exiting 1,
{"error": ..., "status": ..., "body": ...} with the HTTP status and the body of the answer that
failed (both null when no answer came).

Left to itself the client retries a 429 without limit, a 5xx up to six times and a refused
connection three times, sleeping 3 s, 6 s, 12 s … in between: `--no-retry` makes it report the
first answer, so that a test of an error answer does not wait minutes for it.
"""

import argparse
import json
import sys

import pagerduty

SEVERITIES = ("critical", "error", "warning", "info")
RETRIED_STATUSES = (429, 500, 502, 503, 504)


class EventsClient(pagerduty.EventsApiV2Client):
    """The package's client, allowed a plain-http base URL.

    Its `url` setter refuses anything but https://, and tests reach Klaxon over loopback without
    TLS. The body, the headers, the retries and the reading of the answer stay the package's.
    """

    @property
    def url(self):
        return self._url

    @url.setter
    def url(self, base_url):
        self._url = base_url


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="Klaxon's base URL: http://127.0.0.1:PORT")
    parser.add_argument("--routing-key", required=True, help="the integration key")
    parser.add_argument("--no-retry", action="store_true", help="report the first answer")
    actions = parser.add_subparsers(dest="action", required=True)

    trigger = actions.add_parser("trigger")
    trigger.add_argument("--summary", required=True)
    trigger.add_argument("--source", required=True)
    trigger.add_argument("--severity", choices=SEVERITIES, default="critical")
    trigger.add_argument("--dedup-key")
    trigger.add_argument("--payload", type=json.loads, help="JSON object merged into the payload")
    trigger.add_argument("--links", type=json.loads, help='JSON list of {"href", "text"}')
    trigger.add_argument("--images", type=json.loads, help='JSON list of {"src", "href", "alt"}')

    for action in ("acknowledge", "resolve"):
        actions.add_parser(action).add_argument("--dedup-key", required=True)
    return parser.parse_args(argv)


def send(client, args):
    if args.action == "trigger":
        return client.trigger(
            args.summary,
            args.source,
            dedup_key=args.dedup_key,
            severity=args.severity,
            payload=args.payload,
            links=args.links,
            images=args.images,
        )
    if args.action == "acknowledge":
        return client.acknowledge(args.dedup_key)
    return client.resolve(args.dedup_key)


def answer_body(response):
    try:
        return response.json()
    except ValueError:
        return response.text


def main(argv):
    args = parse_args(argv)
    client = EventsClient(args.routing_key, base_url=args.url)
    if args.no_retry:
        # The client retries a status n times only while its attempts so far exceed neither n nor
        # max_http_attempts, and a refused connection while its count stays within
        # max_network_attempts: with these it returns, or raises on, the first answer.
        client.retry = {status: 1 for status in RETRIED_STATUSES}
        client.max_http_attempts = -1
        client.max_network_attempts = 0
    try:
        dedup_key = send(client, args)
    except pagerduty.Error as error:
        response = error.response
        print(
            json.dumps(
                {
                    "error": str(error),
                    "status": response.status_code if response is not None else None,
                    "body": answer_body(response) if response is not None else None,
                }
            )
        )
        return 1
    print(json.dumps({"dedup_key": dedup_key}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
