#!/usr/bin/env bash
# Quick start: build clawrun and the example claws, start the development
# provider on loopback, store a (fake) key, deploy the `summarize` claw,
# run it on README.md and print the usage table. Needs only Rust (rustup).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
echo "==> building clawrun and the example claws (the first build takes a few minutes)"
cargo build --quiet -p clawrun
cargo build --quiet --release --target wasm32-wasip2 \
  --manifest-path claws/Cargo.toml --target-dir claws/target
# Wherever cargo puts its output (CARGO_TARGET_DIR, or a config's target-dir).
target="$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="$target/debug/clawrun"
claws=claws/target/wasm32-wasip2/release

export CLAWRUN_DATA_DIR="${CLAWRUN_DATA_DIR:-$(mktemp -d /tmp/clawrun-quickstart.XXXXXX)}"
"$bin" init

log=$(mktemp)
"$bin" dev-provider --listen 127.0.0.1:0 >"$log" 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.05; done
addr=$(sed -n 's|^dev-provider listening on http://||p' "$log")
echo "==> dev-provider on $addr"

# The key is read from stdin, never from the command line. dev-provider
# accepts any key; a real one goes in the same way.
echo "sk-quickstart-not-a-real-key-0000" |
  "$bin" keys add dev --provider openai --base-url "http://$addr/v1"
"$bin" claws deploy "$claws/summarize.wasm" --name summarize
"$bin" claws assign summarize --key dev --model gpt-4o-mini

echo "==> clawrun run summarize < README.md"
"$bin" run summarize --conversation quickstart < README.md
echo
echo "==> clawrun usage --by conversation"
"$bin" usage --by conversation
echo
echo "data directory: $CLAWRUN_DATA_DIR (remove it when done)"
