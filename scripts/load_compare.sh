#!/usr/bin/env bash
# Same load (scripts/load.py) against `cria serve --parallel 8` and
# `llama-server -np 8` on the default model, one after the other, on
# loopback. Usage: scripts/load_compare.sh [requests-per-client] [max-tokens]
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=${1:-2}
TOK=${2:-64}
MODEL=${MODEL:-$HOME/.cache/cria/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_SERVER=${LLAMA_SERVER:-$HOME/.cache/cria-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server}
THREADS=${THREADS:-2}
cargo build --release -q
wait_ready() {
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "server on port $1 not ready" >&2; return 1
}

./target/release/cria serve -m "$MODEL" --port 8391 --parallel 8 -c 1024 -t "$THREADS" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
wait_ready 8391
python3 scripts/load.py --url http://127.0.0.1:8391 --clients 8 --requests "$REQ" --max-tokens "$TOK" --label cria
kill $PID; wait $PID 2>/dev/null || true

LD_LIBRARY_PATH="$(dirname "$LLAMA_SERVER")" "$LLAMA_SERVER" -m "$MODEL" --port 8392 -np 8 -c 8192 -t "$THREADS" >/dev/null 2>&1 &
PID=$!
wait_ready 8392
python3 scripts/load.py --url http://127.0.0.1:8392 --clients 8 --requests "$REQ" --max-tokens "$TOK" --label llama-server
kill $PID; wait $PID 2>/dev/null || true
