#!/usr/bin/env bash
# The dashboard in Debian's headless Chromium, driven by playwright-core
# (tests/browser/dashboard.test.mjs). Installs Chromium from Debian's packages
# and playwright-core from npm when missing; never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is missing: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
cargo build -p clawrun --quiet
# Wherever cargo puts its output (CARGO_TARGET_DIR, or a config's target-dir).
target="$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
export CLAWRUN_BIN="$target/debug/clawrun"
cd tests/browser
if [ ! -d node_modules/playwright-core ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
node dashboard.test.mjs
