#!/usr/bin/env bash
# Perplexity of the same files in llama.cpp and cria, paired token by token.
#
#   scripts/ppl-gap.sh TEXT FILE.gguf...
#
# Per file: `llama-perplexity -c 512 -t N` and `cria perplexity -c 512 -t N`
# on TEXT, then scripts/ppl-pair.py on their outputs: both PPLs, the
# relative gap and its standard error from per-chunk differences. With
# PPL_GAP_KLD=1 both also write --kl-divergence-base files and the pairing
# is per token (~100 KB per scored token with a 49k vocabulary, ~2.5 GB per
# engine for 100 chunks; deleted after each file). Extra llama-perplexity flags go in
# $LLAMA_PPL_FLAGS (e.g. "-fa off"). Work files: ${PPL_GAP_DIR:-/tmp/ppl-gap}.
#
# N is $PPL_GAP_THREADS (default 2). With PPL_GAP_PARALLEL=1 the two engines
# run at the same time (give each -t 1 on a 2-core machine): on a machine
# shared with other jobs this wastes no CPU in either engine's thread
# barriers. Both engines' values do not depend on the thread count (each
# output element is one thread's dot product); checked on 8 chunks of the
# Rust-books text for llama.cpp and 6 for cria, -t 1 against -t 2: identical.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LLAMA_BIN:-$(../shared/tools/llama-cpp-anchor.sh --bin)}
TEXT=${1:?usage: scripts/ppl-gap.sh TEXT FILE.gguf...}; shift
DIR=${PPL_GAP_DIR:-/tmp/ppl-gap}
CRIA=${CRIA:-target/release/cria}
THREADS=${PPL_GAP_THREADS:-2}
mkdir -p "$DIR"
for f in "$@"; do
  name=$(basename "$f" .gguf)
  echo "== $name ($f)"
  kl_l=(); kl_c=(); pair=("$DIR/$name.llama.log" "$DIR/$name.cria.log")
  if [[ ${PPL_GAP_KLD:-0} == 1 ]]; then
    kl_l=(--kl-divergence-base "$DIR/$name.llama.kld"); kl_c=(--kl-divergence-base "$DIR/$name.cria.kld")
    pair=("$DIR/$name.llama.kld" "$DIR/$name.cria.kld")
  fi
  # shellcheck disable=SC2086
  "$BIN/llama-perplexity" -m "$f" -f "$TEXT" -c 512 -t "$THREADS" ${LLAMA_PPL_FLAGS:-} \
      "${kl_l[@]}" > "$DIR/$name.llama.log" 2>&1 &
  llama=$!
  if [[ ${PPL_GAP_PARALLEL:-0} != 1 ]]; then wait "$llama"; fi
  "$CRIA" perplexity -m "$f" -f "$TEXT" -c 512 -t "$THREADS" "${kl_c[@]}" > "$DIR/$name.cria.log" 2>&1
  wait "$llama"
  grep -E 'Final estimate' "$DIR/$name.llama.log" | sed 's/^/llama.cpp: /'
  grep -E 'Final estimate' "$DIR/$name.cria.log" | sed 's/^/cria:      /'
  python3 scripts/ppl-pair.py "${pair[@]}"
  rm -f "$DIR/$name.llama.kld" "$DIR/$name.cria.kld"
done
