#!/usr/bin/env bash
# The server with and without speculation under the same load
# (scripts/load.py: 1 client, then CLIENTS concurrent streaming clients,
# ignore_eos, greedy), interleaved ROUNDS times, so that a batch that
# already fills the cores is shown not to get slower with speculation on.
#
#   scripts/bench-spec-serve.sh [CLIENTS] [REQUESTS] [MAX_TOKENS]
#   SPEC="-md draft.gguf" MODEL=target.gguf scripts/bench-spec-serve.sh 8
# Environment: MODEL (default model), THREADS (2), ROUNDS (2), CRIA.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CRIA=${CRIA:-$HERE/target/release/cria}
MODEL=${MODEL:-$("$CRIA" pull)}
CLIENTS=${1:-8}
REQ=${2:-3}
TOK=${3:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
SPEC=${SPEC:---spec-type ngram}
PORT=8397
echo "# $(uptime | sed 's/.*load/load/') | $(lscpu | grep 'Model name' | sed 's/ \+/ /g')"
echo "# cria serve --parallel $CLIENTS -c 1024 -t $THREADS; load.py --clients $CLIENTS --requests $REQ --max-tokens $TOK; spec: $SPEC"
wait_ready() {
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "server not ready" >&2
    return 1
}
PID=
trap '[[ -n $PID ]] && kill $PID 2>/dev/null || true' EXIT
for round in $(seq "$ROUNDS"); do
    for label in off spec; do
        flags=()
        # shellcheck disable=SC2206
        [[ $label == spec ]] && flags=($SPEC)
        "$CRIA" serve -m "$MODEL" --port $PORT --parallel "$CLIENTS" -c 1024 -t "$THREADS" "${flags[@]}" >/dev/null 2>&1 &
        PID=$!
        wait_ready
        echo -n "round $round $label: "
        python3 "$HERE/scripts/load.py" --url "http://127.0.0.1:$PORT" --clients "$CLIENTS" \
            --requests "$REQ" --max-tokens "$TOK" --json
        if [[ $label == spec ]]; then
            curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^cria_spec_|^cria_effective' | tr '\n' ' '
            echo
        fi
        kill $PID
        wait $PID 2>/dev/null || true
        PID=
    done
done
