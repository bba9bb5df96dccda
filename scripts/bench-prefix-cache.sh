#!/usr/bin/env bash
# Time to first token of a request sharing a ~2k-token prefix with an
# earlier one, after a server restart, with --prefix-cache, against the
# same request on a server without it (issue 14, item 4: at most 1/10).
#
#   scripts/bench-prefix-cache.sh [MODEL]            # default: the default model
#   R=5 THREADS=2 CTX=4096 scripts/bench-prefix-cache.sh
#
# Each of R rounds, with a fresh cache directory:
#   1. `cria serve --prefix-cache DIR`: request A (prefix + question A),
#      streamed; then SIGTERM (the server drains and finishes its writes).
#   2. A new `cria serve --prefix-cache DIR` (the restart): request B
#      (the same prefix + question B): the warm TTFT.
#   3. `cria serve` without the cache: request B: the cold TTFT.
# TTFT is from sending the request to the first streamed token, on the
# client; every request is greedy with 8 tokens, one slot, -t THREADS.
# Prints each round and the medians; the prefix's token count is checked
# with /tokenize. Environment: CRIA (binary), R, THREADS, CTX.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CRIA=${CRIA:-$HERE/target/release/cria}
MODEL=${1:-$("$CRIA" pull)}
R=${R:-3}
THREADS=${THREADS:-2}
CTX=${CTX:-4096}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "model $MODEL, ctx $CTX, $THREADS threads, $R rounds; $(lscpu | grep 'Model name' | sed 's/  */ /g')"
echo "load before: $(uptime | sed 's/.*load average: //')"

PID=
start() {  # extra flags...; sets PORT and PID
    "$CRIA" serve --port 0 -m "$MODEL" -c "$CTX" -t "$THREADS" --parallel 1 "$@" \
        > "$WORK/out" 2> "$WORK/err" &
    PID=$!
    for _ in $(seq 200); do
        PORT=$(grep -o '127.0.0.1:[0-9]*' "$WORK/out" 2>/dev/null | head -1 | cut -d: -f2 || true)
        if [[ -n $PORT ]] && curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; then return; fi
        sleep 0.1
    done
    echo "server did not start: $(cat "$WORK/err")" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }

ttft() {  # question -> seconds to the first streamed token
    python3 - "$PORT" "$1" <<'PY'
import json, sys, time, urllib.request
port, question = sys.argv[1], sys.argv[2]
text = open("/usr/share/common-licenses/GPL-3").read()
prefix = text[:9600]
body = {"prompt": prefix + "\n\n" + question, "max_tokens": 8, "temperature": 0, "stream": True}
t0 = time.perf_counter()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                             data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req) as r:
    for line in r:
        if line.startswith(b"data: {"):
            c = json.loads(line[6:])
            if c["choices"] and c["choices"][0]["text"]:
                print(f"{time.perf_counter() - t0:.4f}")
                break
PY
}

prefix_tokens() {
    python3 - "$PORT" <<'PY'
import json, sys, urllib.request
text = open("/usr/share/common-licenses/GPL-3").read()[:9600]
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/tokenize",
                             data=json.dumps({"content": text}).encode(), headers={"Content-Type": "application/json"})
print(len(json.load(urllib.request.urlopen(req))["tokens"]))
PY
}

cold=(); warm=()
for r in $(seq "$R"); do
    rm -rf "$WORK/cache"
    start --prefix-cache "$WORK/cache"
    [[ $r == 1 ]] && echo "shared prefix: $(prefix_tokens) tokens"
    first=$(ttft "Question A: what does this license say about warranties?")
    stop
    start --prefix-cache "$WORK/cache"
    w=$(ttft "Question B: may I sell copies of the program?")
    restored=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^cria_prefix_cache_restored_tokens_total/ {print $2}')
    stop
    start
    c=$(ttft "Question B: may I sell copies of the program?")
    stop
    echo "round $r: first request (cold, writes) ${first}s; after restart: warm ${w}s (${restored} tokens restored), cold ${c}s"
    cold+=("$c"); warm+=("$w")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mc=$(median "${cold[@]}"); mw=$(median "${warm[@]}")
echo "median TTFT: cold ${mc}s, warm after restart ${mw}s, warm/cold $(awk -v w="$mw" -v c="$mc" 'BEGIN {printf "%.3f (1/%.1f)", w/c, c/w}')"
echo "load after: $(uptime | sed 's/.*load average: //')"
