#!/usr/bin/env bash
# Installs the tools Klaxon's tests run beside cargo, each only when it is missing:
# - aiosmtpd (PyPI), the SMTP server that tests/support/smtp_sink.py runs for tests/notify_email.rs;
# - pagerduty (PyPI), PagerDuty's own Events API v2 client, which tests/support/pd_client.py drives.
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
