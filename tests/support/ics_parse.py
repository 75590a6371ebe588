"""Parses an iCalendar feed with the `icalendar` package from PyPI (a parser other than the crate
that wrote it), for tests of GET /schedules/{id}/calendar.ics.

Usage: ics_parse.py < feed.ics

Prints one JSON line: {"name": X-WR-CALNAME, "events": [{"uid", "summary", "start", "end",
"stamp"}]}, times as RFC 3339 UTC (`2026-03-08T13:00:00Z`), events in the feed's order. Exits 1
with the parser's complaint if the feed does not parse, or if an event's times are not in UTC.
"""

import datetime
import json
import sys

import icalendar


def utc(value):
    moment = value.dt
    if not isinstance(moment, datetime.datetime) or moment.utcoffset() != datetime.timedelta(0):
        sys.exit(f"not a UTC date-time: {value.to_ical()!r}")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    calendar = icalendar.Calendar.from_ical(sys.stdin.buffer.read())
    events = [
        {
            "uid": str(event["UID"]),
            "summary": str(event["SUMMARY"]),
            "start": utc(event["DTSTART"]),
            "end": utc(event["DTEND"]),
            "stamp": utc(event["DTSTAMP"]),
        }
        for event in calendar.walk("VEVENT")
    ]
    print(json.dumps({"name": str(calendar.get("X-WR-CALNAME", "")), "events": events}))


if __name__ == "__main__":
    main()
