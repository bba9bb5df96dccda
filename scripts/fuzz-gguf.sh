#!/usr/bin/env bash
# Fuzz the GGUF parser with libFuzzer for N seconds (default 60). Not part of
# CI. Needs `cargo install cargo-fuzz` and a nightly toolchain. The corpus
# starts from the small vocab-only GGUF fixtures and grows in fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
mkdir -p corpus/gguf_parse
# Seed: the first 64 KiB of a real vocab file (header, keys, a vocabulary).
[[ -f corpus/gguf_parse/seed-spm ]] || head -c 65536 ../crates/tokenizer/tests/fixtures/ggml-vocab-llama-spm.gguf > corpus/gguf_parse/seed-spm
cargo +nightly fuzz run gguf_parse corpus/gguf_parse -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048
