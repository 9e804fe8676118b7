#!/usr/bin/env bash
# The whole test suite: formatting, lints (host, claws and hostile claws),
# unit tests (the fuzz targets' stable harness among them), end-to-end tests
# against real components and dev-provider, doc tests, the benchmarks run
# once each in test mode, the dashboard in headless Chromium, and a bounded
# property-based fuzz of the HTTP API. The libFuzzer runs are scripts/fuzz.sh
# (nightly).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all --check
cargo fmt --all --check --manifest-path claws/Cargo.toml
cargo fmt --all --check --manifest-path tests/hostile/Cargo.toml

cargo build --release --target wasm32-wasip2 \
  --manifest-path claws/Cargo.toml --target-dir claws/target
cargo clippy --release --target wasm32-wasip2 \
  --manifest-path claws/Cargo.toml --target-dir claws/target -- -D warnings
# The hostile claws share the claws' target directory (and dependencies).
cargo build --release --target wasm32-wasip2 \
  --manifest-path tests/hostile/Cargo.toml --target-dir claws/target
cargo clippy --release --target wasm32-wasip2 \
  --manifest-path tests/hostile/Cargo.toml --target-dir claws/target -- -D warnings
cargo clippy --workspace --all-targets -- -D warnings

cargo test --workspace --doc
cargo test --workspace --all-targets

bash scripts/browser-test.sh
bash scripts/api-fuzz.sh "${CLAWRUN_API_FUZZ_SECONDS:-60}"
