#!/usr/bin/env bash
# The files of the perplexity-gap table (BENCHMARKS.md, issue 11), made by
# cria from the default model:
#
#   scripts/ppl-files.sh OUT_DIR
#
# OUT_DIR/hf: the default model dequantized to an F32 Hugging Face folder
# (tests/fixtures/import/make_golden.py with NO_FORWARD=1; needs numpy,
# safetensors, tokenizers and transformers, and llama.cpp's gguf-py from the
# anchor's source tree). Then `cria convert hf conv.T.gguf --outtype T` for
# T = f32, f16, bf16, q8_0, and `cria quantize conv.f32.gguf quant.T.gguf T`
# for T = Q4_0, Q6_K, IQ4_XS, Q4_K_M, Q2_K, Q3_K_M (~1.8 GB in all).
# Then, for example:
#   PPL_GAP_THREADS=1 PPL_GAP_PARALLEL=1 scripts/ppl-gap.sh TEXT OUT_DIR/*.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/ppl-files.sh OUT_DIR}
CRIA=${CRIA:-target/release/cria}
BIN=${LLAMA_BIN:-$(../shared/tools/llama-cpp-anchor.sh --bin)}
SRC=$(dirname "$(dirname "$BIN")")
MODEL=${MODEL:-$("$CRIA" pull)}
mkdir -p "$OUT"
NO_FORWARD=1 python3 tests/fixtures/import/make_golden.py "$MODEL" "$SRC" "$OUT" > "$OUT/prompt.json"
for t in f32 f16 bf16 q8_0; do
  "$CRIA" convert "$OUT/hf" "$OUT/conv.$t.gguf" --outtype "$t"
done
for t in Q4_0 Q6_K IQ4_XS Q4_K_M Q2_K Q3_K_M; do
  "$CRIA" quantize "$OUT/conv.f32.gguf" "$OUT/quant.$t.gguf" "$t" -t 2
done
