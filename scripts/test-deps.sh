#!/usr/bin/env bash
# Installs the tools Klaxon's tests run beside cargo: aiosmtpd, the SMTP server that
# tests/support/smtp_sink.py runs for tests/notify_email.rs. Does nothing when they are there.
set -euo pipefail

if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet aiosmtpd
fi
