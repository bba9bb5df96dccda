#!/usr/bin/env bash
# The family fixtures (tests/fixtures/import/families: Llama 1, 2, 3, 3.1,
# 3.2, Mistral v0.1 and v0.2, TinyLlama) through `cria convert` and into
# llama.cpp: llama-perplexity runs the converted F32 file and writes a
# KL-divergence base; cria scores the Hugging Face folder itself against it
# (mean KLD, same-top share), and both perplexities are printed.
#
#   scripts/check-families-llamacpp.sh [FAMILY ...]
#
# Needs llama.cpp from ../shared/tools/llama-cpp-anchor.sh. Work files go
# to ${CRIA_FAMILIES_DIR:-/tmp/cria-families} (about 60 MB a family).
# mistral-v0.1's fixture has a 16-position sliding window: llama.cpp ignores
# it (full attention), so it is scored with -c 16, where both agree, and
# with -c 64 to show where they part.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(../shared/tools/llama-cpp-anchor.sh --bin)
DIR=${CRIA_FAMILIES_DIR:-/tmp/cria-families}
TEXT=${CRIA_FAMILIES_TEXT:-/usr/share/common-licenses/GPL-3}
FAMILIES=("$@")
[[ ${#FAMILIES[@]} -gt 0 ]] || FAMILIES=(llama1 llama2 llama3 llama3.1 llama3.2 mistral-v0.1 mistral-v0.2 tinyllama)
mkdir -p "$DIR"
cargo build --release -q -p cria
cargo build --release -q -p cria-import --example family_folder
printf '%-13s %-4s %-12s %-12s %-10s %s\n' family ctx "ppl(llama)" "ppl(cria)" "mean KLD" "same top"
for f in "${FAMILIES[@]}"; do
  hf=$DIR/$f
  [[ -f $hf/model.safetensors ]] || target/release/examples/family_folder "$f" "$hf"
  gguf=$DIR/$f.f32.gguf
  [[ -f $gguf ]] || target/release/cria convert "$hf" "$gguf" --outtype f32 >/dev/null 2>&1
  ctxs=(64)
  [[ $f == mistral-v0.1 ]] && ctxs=(16 64)
  for c in "${ctxs[@]}"; do
    kld=$DIR/$f.c$c.kld
    lout=$("$BIN/llama-perplexity" -m "$gguf" -f "$TEXT" -c "$c" -b "$c" --chunks $((1024 / c)) -t 2 \
        --kl-divergence-base "$kld" 2>&1)
    lppl=$(grep -oE 'Final estimate: PPL = [0-9.]+' <<<"$lout" | awk '{print $5}')
    out=$(target/release/cria perplexity -m "$hf" --kl-divergence --kl-divergence-base "$kld" -t 2 2>&1)
    ppl=$(grep -E '^Mean PPL\(Q\) ' <<<"$out" | awk '{print $4}')
    mean=$(grep -E '^Mean +KLD' <<<"$out" | awk '{print $3}')
    top=$(grep -E '^Same top p' <<<"$out" | awk '{print $4}')
    printf '%-13s %-4s %-12s %-12s %-10s %s\n' "$f" "$c" "$lppl" "$ppl" "$mean" "$top%"
  done
done
