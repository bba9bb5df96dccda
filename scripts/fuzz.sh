#!/usr/bin/env bash
# Fuzz one target with libFuzzer for N seconds (default 60). Not part of CI.
#
#   scripts/fuzz.sh TARGET [SECONDS]
#
# Targets (fuzz/fuzz_targets/): gguf_parse, model_load, tokenizer_load,
# chat_template, grammar, import_parse (pickles, tokenizer.model),
# prefix_cache_entry (a prefix cache entry: header, parse, import), lora_load
# (adapters). Needs `cargo install cargo-fuzz`; runs on the stable
# toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z sanitizer flags).
# Corpora grow in fuzz/corpus/TARGET, seeded by the `seeds` program (a tiny
# model, tiny vocabularies, real chat templates) and, for gguf_parse, the
# head of a real vocabulary file. Crashes land in fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
secs=${2:-60}
export RUSTC_BOOTSTRAP=1
[[ -d corpus/$target ]] || cargo run --release --quiet --bin seeds
mkdir -p "corpus/$target"  # targets without seeds start empty
if [[ $target == gguf_parse && ! -f corpus/gguf_parse/seed-spm ]]; then
    head -c 65536 ../crates/tokenizer/tests/fixtures/ggml-vocab-llama-spm.gguf > corpus/gguf_parse/seed-spm
fi
# Vocabulary seeds need room to grow; the others stay small.
max_len=65536
[[ $target == tokenizer_load ]] && max_len=262144
# Leaks are findings (chat_template found namespace cycles this way),
# except for model_load: its loads start scoped threads, and LeakSanitizer
# reports std's bookkeeping of threads that have just exited.
leaks=1
[[ $target == model_load ]] && leaks=0
export ASAN_OPTIONS=detect_leaks=$leaks
cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=2048 -timeout=20 \
    -detect_leaks=$leaks
