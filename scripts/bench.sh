#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md: builds the claws, then runs the llm-call
# suite (cage start, open-loop llm-call overhead against dev-provider with a
# direct reqwest baseline, highest sustained rate, 1,000 waiting cages) in
# the release (bench) profile. `scripts/bench.sh all` also runs the
# micro-benchmarks (cage, custody, ledger).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2 \
  --manifest-path claws/Cargo.toml --target-dir claws/target

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p clawrun --bench llm_call
if [[ "${1:-}" == all ]]; then
  cargo bench -p clawrun --bench ledger
  cargo bench -p clawrun --bench custody
  cargo bench -p clawrun --bench cage
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
