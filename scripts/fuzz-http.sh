#!/usr/bin/env bash
# Fuzzes `cria serve`'s HTTP edge with N random requests (default 20000):
# the property test of crates/cli/tests/fuzz_http.rs, run longer than in
# `cargo test`. Every reply must be 2xx or 4xx and the server must stay
# up; a failure prints the first request that broke it and the ones before it.
#   scripts/fuzz-http.sh 100000
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20000}"
CRIA_FUZZ_HTTP_CASES="$N" cargo test --release -p cria --test fuzz_http -- --nocapture
