#!/usr/bin/env bash
# Constrained generation speed, cria vs llama.cpp, same file, threads,
# schema and token count, interleaved.
#
#   scripts/bench-grammar.sh MODEL [THREADS]        # THREADS: e.g. 1,2 (default)
#   N=96 R=3 scripts/bench-grammar.sh MODEL 1,2
#   G=grammars/json.gbnf scripts/bench-grammar.sh MODEL   # a GBNF file instead
#
# For each thread count, R rounds of: cria unconstrained, cria with the
# JSON schema below, llama-completion unconstrained, llama-completion with
# `-j` (the same schema, which llama.cpp turns into a GBNF grammar). Every
# run generates exactly N tokens (unconstrained runs ignore EOS; the schema
# needs more than N tokens to complete). Prints the median generation t/s
# of each, constrained / unconstrained per engine, and cria / llama.cpp
# constrained. Also the schema compile time (CRIA_GRAMMAR_STATS).
# Environment: LLAMA_BIN (dir with llama-completion), CRIA (binary).
set -euo pipefail
MODEL=${1:?usage: $0 MODEL [THREADS]}
THREADS=${2:-1,2}
N=${N:-96}
R=${R:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CRIA=${CRIA:-$HERE/target/release/cria}
LLAMA_BIN=${LLAMA_BIN:-$HOME/.cache/cria-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
[[ -x $LLAMA_BIN/llama-completion ]] || { echo "no llama-completion in $LLAMA_BIN" >&2; exit 1; }
SCHEMA='{"type":"array","items":{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false},"minItems":40}'
PROMPT="List forty people as JSON."
if [[ -n ${G:-} ]]; then CON=(--grammar-file "$G"); else CON=(-j "$SCHEMA"); fi

cria_ts() {  # threads, extra args...
  local t=$1; shift
  "$CRIA" run -m "$MODEL" -t "$t" -n "$N" --temp 0.8 --seed 1 "$@" "$PROMPT" 2>&1 >/dev/null |
    sed -n 's/.*generated \([0-9]*\) tokens, \([0-9.]*\) t\/s.*/\1 \2/p'
}
llama_ts() {
  local t=$1; shift
  "$LLAMA_BIN/llama-completion" -m "$MODEL" -t "$t" -n "$N" --temp 0.8 --seed 1 -no-cnv -p "$PROMPT" "$@" 2>&1 </dev/null |
    sed -n 's/.*eval time = .*\/ *\([0-9]*\) runs.*, *\([0-9.]*\) tokens per second.*/\1 \2/p' | tail -1
}
median() { python3 -c 'import sys,statistics; print("%.1f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

echo "model: $MODEL; $N tokens; constraint: ${G:-$SCHEMA}"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
compile=$(CRIA_GRAMMAR_STATS=1 "$CRIA" run -m "$MODEL" -n 1 "${CON[@]}" "x" 2>&1 >/dev/null | sed -n 's/.*compiled in \([0-9.]*\) ms.*/\1/p')
echo "cria grammar compile: $compile ms"
echo
echo "| threads | cria t/s | cria + schema | ratio | llama.cpp t/s | llama.cpp + schema | ratio | cria / llama.cpp, with schema |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in ${THREADS//,/ }; do
  cp=(); cs=(); lp=(); ls=()
  for _ in $(seq "$R"); do
    read -r n v <<<"$(cria_ts "$t" --ignore-eos)"; cp+=("$v")
    read -r n v <<<"$(cria_ts "$t" "${CON[@]}")"; cs+=("$v")
    [[ $n == "$N" ]] || echo "note: cria constrained run ended at $n tokens (grammar complete)" >&2
    read -r n v <<<"$(llama_ts "$t" --ignore-eos)"; lp+=("$v")
    read -r n v <<<"$(llama_ts "$t" "${CON[@]}")"; ls+=("$v")
    [[ $n == "$((N - 1))" || $n == "$N" ]] || echo "note: llama.cpp constrained run ended at $n tokens" >&2
  done
  a=$(median "${cp[@]}"); b=$(median "${cs[@]}"); c=$(median "${lp[@]}"); d=$(median "${ls[@]}")
  python3 - "$t" "$a" "$b" "$c" "$d" <<'PY'
import sys
t, a, b, c, d = sys.argv[1], *map(float, sys.argv[2:])
print(f"| {t} | {a:.1f} | {b:.1f} | {b/a:.2f} | {c:.1f} | {d:.1f} | {d/c:.2f} | {b/d:.2f}x |")
PY
done
