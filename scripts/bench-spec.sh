#!/usr/bin/env bash
# Speculative decoding on the input-grounded task set (bench/spec-tasks):
# for every task, cria run without speculation and with it, same model,
# threads, seed and token limit; checks that the two outputs are
# byte-identical and prints generated tokens, t/s, acceptance and speedup,
# then the totals (tokens over summed generation time).
#
#   scripts/bench-spec.sh                          # default model, n-gram drafting
#   SPEC="-md draft.gguf" scripts/bench-spec.sh target.gguf   # a draft model
#   T=1 N=256 R=3 TEMP=0 scripts/bench-spec.sh [MODEL] [TASK_DIR]
#
# T threads (2), N max tokens (256), R rounds (the median t/s of each is
# kept; 1), TEMP temperature (0; with a seed otherwise), SEED (1),
# SPEC the speculation flags ("--spec-type ngram").
# Environment: CRIA (binary; default target/release/cria).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CRIA=${CRIA:-$HERE/target/release/cria}
MODEL=${1:-$("$CRIA" pull)}
TASKS=${2:-$HERE/bench/spec-tasks}
T=${T:-2}
N=${N:-256}
R=${R:-1}
TEMP=${TEMP:-0}
SEED=${SEED:-1}
SPEC=${SPEC:---spec-type ngram}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "# $(uptime | sed 's/.*load/load/') | $(lscpu | grep 'Model name' | sed 's/ \+/ /g')"
echo "# model $MODEL, -t $T, -n $N, --temp $TEMP --seed $SEED, rounds $R, spec: $SPEC"

# run OUT ERR [flags...]: one cria run of the current task.
run() {
    local out=$1 err=$2
    shift 2
    "$CRIA" run -m "$MODEL" -f "$task" -t "$T" -n "$N" --temp "$TEMP" --seed "$SEED" "$@" >"$out" 2>"$err"
}
# tokens and t/s from a summary line: "generated 123 tokens, 45.6 t/s"
gen() { grep -o 'generated [0-9]* tokens, [0-9.]* t/s' "$1" | awk '{print $2, $4}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-24s %6s %9s %9s %8s %8s %7s %s\n' task tokens 'base t/s' 'spec t/s' drafted accepted speedup identical
tot_tok=0 tot_base=0 tot_spec=0 tot_d=0 tot_a=0 all_same=yes
for task in "$TASKS"/*.txt; do
    name=$(basename "$task" .txt)
    : >"$TMP/b.rates"
    : >"$TMP/s.rates"
    same=yes
    for _ in $(seq "$R"); do
        run "$TMP/b.out" "$TMP/b.err"
        # shellcheck disable=SC2086
        run "$TMP/s.out" "$TMP/s.err" $SPEC
        cmp -s "$TMP/b.out" "$TMP/s.out" || same=NO
        read -r tok b < <(gen "$TMP/b.err")
        read -r tok2 s < <(gen "$TMP/s.err")
        [[ $tok == "$tok2" ]] || same=NO
        echo "$b" >>"$TMP/b.rates"
        echo "$s" >>"$TMP/s.rates"
    done
    b=$(median <"$TMP/b.rates")
    s=$(median <"$TMP/s.rates")
    read -r d a < <(grep -o 'speculative: [0-9]* drafted, [0-9]* accepted' "$TMP/s.err" | awk '{print $2, $4}')
    [[ $same == yes ]] || all_same=NO
    printf '%-24s %6d %9.1f %9.1f %8d %8d %6.2fx %s\n' "$name" "$tok" "$b" "$s" "$d" "$a" \
        "$(echo "$s / $b" | bc -l)" "$same"
    # Generation time of the tokens after the first, for the totals.
    tot_tok=$((tot_tok + tok - 1))
    tot_base=$(echo "$tot_base + ($tok - 1) / $b" | bc -l)
    tot_spec=$(echo "$tot_spec + ($tok - 1) / $s" | bc -l)
    tot_d=$((tot_d + d))
    tot_a=$((tot_a + a))
done
printf '%-24s %6d %9.1f %9.1f %8d %8d %6.2fx %s\n' TOTAL "$tot_tok" \
    "$(echo "$tot_tok / $tot_base" | bc -l)" "$(echo "$tot_tok / $tot_spec" | bc -l)" \
    "$tot_d" "$tot_a" "$(echo "$tot_base / $tot_spec" | bc -l)" "$all_same"
echo "# acceptance $(echo "100 * $tot_a / ($tot_d + ($tot_d == 0))" | bc -l | xargs printf '%.1f')%"
[[ $all_same == yes ]] || { echo "outputs differ with speculation" >&2; exit 1; }
