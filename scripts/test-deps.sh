#!/usr/bin/env bash
# Installs the tools Klaxon's tests run beside cargo, each only when it is missing:
# - aiosmtpd (PyPI), the SMTP server that tests/support/smtp_sink.py runs for tests/notify_email.rs;
# - pagerduty (PyPI), PagerDuty's own Events API v2 client, which tests/support/pd_client.py drives;
# - icalendar (PyPI), the iCalendar parser tests/support/ics_parse.py reads schedule feeds with;
# - prometheus-alertmanager (Debian), the Alertmanager that tests/support/alertmanager.py runs.
set -euo pipefail

pip_install() {
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet "$@"
}

if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    pip_install aiosmtpd
fi

if ! python3 -c 'import pagerduty' 2>/dev/null; then
    pip_install pagerduty
fi

if ! python3 -c 'import icalendar' 2>/dev/null; then
    pip_install icalendar
fi

if ! command -v prometheus-alertmanager >/dev/null; then
    # apt and dpkg chatter even when all goes well: show what they said only if it failed.
    if ! log=$( (apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            prometheus-alertmanager) 2>&1); then
        printf '%s\n' "$log" >&2
        exit 1
    fi
    # The package starts its own Alertmanager, on every address at 9093 and 9094, wherever the
    # init system lets it. The tests start theirs on free loopback ports; keep this one off.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now --quiet prometheus-alertmanager
    elif [ -x /etc/init.d/prometheus-alertmanager ]; then
        /etc/init.d/prometheus-alertmanager stop >/dev/null
        update-rc.d prometheus-alertmanager disable >/dev/null
    fi
fi
