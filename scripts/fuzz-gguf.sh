#!/usr/bin/env bash
# Fuzz the GGUF parser with libFuzzer for N seconds (default 60). Not part of
# CI. Needs `cargo install cargo-fuzz` and a nightly toolchain. The corpus
# starts from the small vocab-only GGUF fixtures and grows in fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
mkdir -p corpus/gguf_parse
cp -n ../crates/tokenizer/tests/fixtures/ggml-vocab-llama-spm.gguf corpus/gguf_parse/ 2>/dev/null || true
cargo +nightly fuzz run gguf_parse corpus/gguf_parse -- -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048
