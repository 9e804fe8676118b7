#!/usr/bin/env bash
# Runs each libFuzzer target under fuzz/ for a bounded time (default 30 s
# each; FUZZ_SECONDS to change it). Needs a nightly toolchain (libFuzzer's
# sanitizer flags) and cargo-fuzz, which it installs from crates.io when
# missing. Without nightly it says so and exits 0: the same target functions
# also run on stable, for a bounded number of inputs, in `cargo test`
# (runtime/src/fuzzing.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: no nightly toolchain here; skipped (cargo test runs the stable harness)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# The fuzz crate has its own target directory: its instrumented build
# shares nothing with the host's.
for target in deploy llm_request sse; do
  echo "fuzz.sh: $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096
done
