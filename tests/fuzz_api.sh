#!/usr/bin/env bash
# Checks the running API's OpenAPI document with openapi-spec-validator, then fuzzes the API
# against it with Schemathesis: thousands of generated requests, valid and not, checking that
# none gets a 5xx (SPEC §6.6: no client input produces a 500) and that every answer is one the
# document describes (its status code, content type, headers and schema). Both tools come from
# PyPI, installed when missing into a virtual environment of their own under
# ~/.cache/klaxon/fuzz-venv (XDG_CACHE_HOME), apart from the system's Python packages. `.ci/run`
# runs it for a minute; by hand:
#
#   tests/fuzz_api.sh [seconds]        # default 120
#
# It builds the release binary, serves it on a free port over a fresh SQLite file, and stops it
# when done. Exit status: Schemathesis's (non-zero if any check failed).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
token="fuzz-admin-token-$(date +%s%N)"

venv="${XDG_CACHE_HOME:-$HOME/.cache}/klaxon/fuzz-venv"
if [ ! -x "$venv/bin/st" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        schemathesis openapi-spec-validator
fi
cargo build --release --quiet
# Where cargo put it: CARGO_TARGET_DIR when set (as .ci/run sets it), else ./target.
binary="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/klaxon"
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(cd "$work" && KLAXON_ADMIN_TOKEN="$token" KLAXON_LISTEN="127.0.0.1:$port" RUST_LOG=warn \
    exec "$binary" serve >serve.out 2>serve.err) &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
done
if ! curl -sf "http://127.0.0.1:$port/health" >/dev/null; then
    echo "tests/fuzz_api.sh: $binary did not start serving on port $port:" >&2
    cat "$work/serve.err" >&2
    exit 1
fi
curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/openapi.json" >"$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
# Revoking tokens would lock the fuzzer out of its own session.
"$venv/bin/st" run "$work/openapi.json" --url "http://127.0.0.1:$port" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-time "$seconds" --workers 2 \
    --exclude-path '/tokens/{id}'
