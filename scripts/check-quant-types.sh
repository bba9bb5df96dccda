#!/usr/bin/env bash
# Every tensor type on real weights: requantize the default model with
# llama-quantize, write a KL-divergence base file with llama-perplexity, and
# score cria against it. Prints one line per type: mean KLD, same-top share.
#
#   scripts/check-quant-types.sh [CHUNKS] [TYPES...]
#
# Needs llama.cpp from ../shared/tools/llama-cpp-anchor.sh. Work files go to
# ${CRIA_QUANT_DIR:-/tmp/cria-quant}.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(../shared/tools/llama-cpp-anchor.sh --bin)
CHUNKS=${1:-4}; shift || true
TYPES=("$@")
[[ ${#TYPES[@]} -gt 0 ]] || TYPES=(F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K IQ4_NL IQ4_XS)
DIR=${CRIA_QUANT_DIR:-/tmp/cria-quant}
TEXT=${CRIA_QUANT_TEXT:-/usr/share/common-licenses/GPL-3}
mkdir -p "$DIR"
cargo build --release -q
BASE=$(target/release/cria pull)
printf '%-8s %-12s %-10s %-10s %s\n' type "ppl(cria)" "mean KLD" "same top" "tensor types"
for t in "${TYPES[@]}"; do
  f=$DIR/smollm2-$t.gguf
  [[ -f $f ]] || "$BIN/llama-quantize" --allow-requantize "$BASE" "$f" "$t" >/dev/null 2>&1
  kld=$DIR/smollm2-$t.kld
  [[ -f $kld ]] || "$BIN/llama-perplexity" -m "$f" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t 2 \
      --kl-divergence-base "$kld" >/dev/null 2>&1
  out=$(target/release/cria perplexity -m "$f" --kl-divergence --kl-divergence-base "$kld" 2>&1)
  ppl=$(grep -E '^Mean PPL\(Q\) ' <<<"$out" | awk '{print $4}')
  mean=$(grep -E '^Mean +KLD' <<<"$out" | awk '{print $3}')
  top=$(grep -E '^Same top p' <<<"$out" | awk '{print $4}')
  types=$(target/release/cria inspect -m "$f" --json | python3 -c \
      'import json,sys; print(" ".join("%s:%s" % (t["type"], t["count"]) for t in json.load(sys.stdin)["tensor_types"]))')
  printf '%-8s %-12s %-10s %-10s %s\n' "$t" "$ppl" "$mean" "$top%" "$types"
done
