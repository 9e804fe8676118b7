#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API from outside: validates the OpenAPI
# document `clawrun serve` publishes, then lets schemathesis generate requests
# from it for a bounded time and fails on any 5xx answer or any answer that
# does not match the document.
#
#   scripts/api-fuzz.sh [SECONDS]     (default 60; needs python3 and pip)
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"
# Wherever cargo puts its output (CARGO_TARGET_DIR, or a config's target-dir).
target="$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="$target/debug/clawrun"
[ -x "$bin" ] || cargo build -p clawrun

venv="${CLAWRUN_FUZZ_VENV:-$target/api-fuzz-venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'schemathesis==4.32.5' 'openapi-spec-validator==0.7.2'
fi

work="$(mktemp -d)"
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export CLAWRUN_DATA_DIR="$work/data" CLAWRUN_LOG=warn
unset CLAWRUN_MASTER_KEY
"$bin" init >/dev/null
token="$("$bin" orgs create fuzz | tail -n 1)"
# A second organisation whose objects the fuzzer must never reach.
"$bin" orgs create bystander >/dev/null

"$bin" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 100); do
  addr="$(sed -n 's|^clawrun serving on http://||p' "$work/serve.out")"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "serve did not start"; cat "$work/serve.err"; exit 1; }

curl -fsS "http://$addr/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

"$venv/bin/schemathesis" run "http://$addr/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
  --max-time "$budget" \
  --request-timeout 30 \
  --seed 7 \
  --no-color \
  --report-dir "$work/report"

if grep -q "panicked" "$work/serve.err"; then
  echo "the server panicked:"; grep -A5 panicked "$work/serve.err"; exit 1
fi
echo "api fuzz: no 5xx, every answer as documented"
