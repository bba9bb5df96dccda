#!/usr/bin/env bash
# Perplexity of the same files in llama.cpp and cria, paired token by token.
#
#   scripts/ppl-gap.sh TEXT FILE.gguf...
#
# Per file: `llama-perplexity -c 512 -t 2` and `cria perplexity -c 512 -t 2`
# on TEXT, each writing its --kl-divergence-base file (every scored token's
# log-probabilities), then scripts/ppl-pair.py on the two: both PPLs, the
# relative gap and its standard error from per-chunk differences. The base
# files are large (~100 KB per scored token with a 49k vocabulary) and are
# deleted after each file. Extra llama-perplexity flags go in
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
  # shellcheck disable=SC2086
  "$BIN/llama-perplexity" -m "$f" -f "$TEXT" -c 512 -t 2 ${LLAMA_PPL_FLAGS:-} \
      --kl-divergence-base "$DIR/$name.llama.kld" > "$DIR/$name.llama.log" 2>&1
  grep -E 'Final estimate' "$DIR/$name.llama.log" | sed 's/^/llama.cpp: /'
  "$CRIA" perplexity -m "$f" -f "$TEXT" -c 512 -t 2 \
      --kl-divergence-base "$DIR/$name.cria.kld" > "$DIR/$name.cria.log" 2>&1
  grep -E 'Final estimate' "$DIR/$name.cria.log" | sed 's/^/cria:      /'
  python3 scripts/ppl-pair.py "$DIR/$name.llama.kld" "$DIR/$name.cria.kld"
  rm -f "$DIR/$name.llama.kld" "$DIR/$name.cria.kld"
done
