#!/usr/bin/env bash
# llama.cpp on the speculative task set (bench/spec-tasks): llama-completion
# against llama-lookup (its prompt-lookup speculation), same file, threads
# and token limit, greedy. Each task is rendered with SmolLM2's chat
# template (ChatML with its default system message), as `cria run -f`
# renders it. Prints each one's generation t/s, llama-lookup's decode t/s
# and acceptance.
#
#   scripts/bench-spec-llama.sh [MODEL] [TASK_DIR]
# Environment: LLAMA_BIN, T (2), N (256), DRAFT (16).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
LLAMA_BIN=${LLAMA_BIN:-$HOME/.cache/cria-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
MODEL=${1:-$HOME/.cache/cria/models/SmolLM2-135M-Instruct.Q4_1.gguf}
TASKS=${2:-$HERE/bench/spec-tasks}
T=${T:-2}
N=${N:-256}
DRAFT=${DRAFT:-16}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "# $(uptime | sed 's/.*load/load/') | $(lscpu | grep 'Model name' | sed 's/ \+/ /g')"
printf '%-24s %9s %10s %8s %8s\n' task 'base t/s' 'lookup t/s' drafted accepted
for task in "$TASKS"/*.txt; do
    name=$(basename "$task" .txt)
    {
        printf '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n'
        cat "$task"
        printf '<|im_end|>\n<|im_start|>assistant\n'
    } >"$TMP/p.txt"
    base=$("$LLAMA_BIN/llama-completion" -m "$MODEL" -f "$TMP/p.txt" -n "$N" --temp 0 -t "$T" -no-cnv \
        </dev/null 2>&1 | grep 'eval time' | grep -v prompt | grep -oE '[0-9.]+ tokens per second' | awk '{print $1}')
    "$LLAMA_BIN/llama-lookup" -m "$MODEL" -f "$TMP/p.txt" -n "$N" --temp 0 -t "$T" \
        --spec-draft-n-max "$DRAFT" </dev/null >"$TMP/l.txt" 2>&1
    lk=$(grep -oE 'decoded .* speed: +[0-9.]+' "$TMP/l.txt" | awk '{print $NF}')
    d=$(grep -oE 'n_drafted += [0-9]+' "$TMP/l.txt" | awk '{print $NF}')
    a=$(grep -oE 'n_accept += [0-9]+' "$TMP/l.txt" | awk '{print $NF}')
    printf '%-24s %9s %10s %8s %8s\n' "$name" "$base" "$lk" "$d" "$a"
done
