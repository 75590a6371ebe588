#!/usr/bin/env bash
# Installs what the benchmarks need from Debian's packages: wrk (the load tool) and
# prometheus-alertmanager (the reference the ingest benchmark compares against).
# Idempotent: installs only what is missing. It does not leave the Debian alertmanager service
# running; bench/ingest.py starts its own alertmanager on a free port and stops it afterwards.
set -euo pipefail

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -eq 0 ]; then
    echo "bench/setup.sh: wrk and prometheus-alertmanager are installed"
    exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

echo "bench/setup.sh: installing ${missing[*]}"
$sudo apt-get update -qq
# The package's postinst must not start the service (scripts/without-service-start.sh).
$sudo env DEBIAN_FRONTEND=noninteractive "$(dirname "$0")/../scripts/without-service-start.sh" \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Under systemd the unit may still have been enabled or started: turn it off.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true
fi
echo "bench/setup.sh: done"
