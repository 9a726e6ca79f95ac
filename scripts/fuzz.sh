#!/usr/bin/env bash
# The fuzz campaign at a larger budget than CI's 64 inputs per parser (tests/fuzz.rs):
#   CM3_FUZZ_CASES=5000 CM3_FUZZ_SEED=1 bash scripts/fuzz.sh
# Prints the inputs tried per parser; a panic fails with the input that caused it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CM3_FUZZ_CASES="${CM3_FUZZ_CASES:-5000}"
export CM3_FUZZ_SEED="${CM3_FUZZ_SEED:-1}"
cargo test -p cm3 --test fuzz -- --nocapture --test-threads 1 2>&1 | grep -E '^fuzz |test result|panicked|FAILED'
