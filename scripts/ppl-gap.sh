#!/usr/bin/env bash
# Perplexity of the same files in llama.cpp and cria, paired token by token.
#
#   scripts/ppl-gap.sh TEXT FILE.gguf...
#
# Per file: `llama-perplexity -c 512 -t 2` and `cria perplexity -c 512 -t 2`
# on TEXT, then scripts/ppl-pair.py on their outputs: both PPLs, the
# relative gap and its standard error from per-chunk differences. With
# PPL_GAP_KLD=1 both also write --kl-divergence-base files and the pairing
# is per token (~100 KB per scored token with a 49k vocabulary, ~2.5 GB per
# engine for 100 chunks; deleted after each file). Extra llama-perplexity flags go in
# $LLAMA_PPL_FLAGS (e.g. "-fa off"). Work files: ${PPL_GAP_DIR:-/tmp/ppl-gap}.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LLAMA_BIN:-$(../shared/tools/llama-cpp-anchor.sh --bin)}
TEXT=${1:?usage: scripts/ppl-gap.sh TEXT FILE.gguf...}; shift
DIR=${PPL_GAP_DIR:-/tmp/ppl-gap}
CRIA=${CRIA:-target/release/cria}
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
  "$BIN/llama-perplexity" -m "$f" -f "$TEXT" -c 512 -t 2 ${LLAMA_PPL_FLAGS:-} \
      "${kl_l[@]}" > "$DIR/$name.llama.log" 2>&1
  grep -E 'Final estimate' "$DIR/$name.llama.log" | sed 's/^/llama.cpp: /'
  "$CRIA" perplexity -m "$f" -f "$TEXT" -c 512 -t 2 "${kl_c[@]}" > "$DIR/$name.cria.log" 2>&1
  grep -E 'Final estimate' "$DIR/$name.cria.log" | sed 's/^/cria:      /'
  python3 scripts/ppl-pair.py "${pair[@]}"
  rm -f "$DIR/$name.llama.kld" "$DIR/$name.cria.kld"
done
