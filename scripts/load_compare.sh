#!/usr/bin/env bash
# Same load (scripts/load.py) against `cria serve --parallel 8` and
# `llama-server -np 8` on the default model, one after the other, on
# loopback. Usage: scripts/load_compare.sh [requests-per-client] [max-tokens]
# (env: MODEL, THREADS, PORT_CRIA, PORT_LLAMA, LLAMA_SERVER)
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=${1:-2}
TOK=${2:-64}
MODEL=${MODEL:-$HOME/.cache/cria/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_SERVER=${LLAMA_SERVER:-$HOME/.cache/cria-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server}
THREADS=${THREADS:-2}
# Ports (set them when another server on the machine holds the defaults).
PORT_CRIA=${PORT_CRIA:-8391}
PORT_LLAMA=${PORT_LLAMA:-8392}
cargo build --release -q
wait_ready() {
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "server on port $1 not ready" >&2; return 1
}

./target/release/cria serve -m "$MODEL" --port "$PORT_CRIA" --parallel 8 -c 1024 -t "$THREADS" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
wait_ready "$PORT_CRIA"
python3 scripts/load.py --url http://127.0.0.1:$PORT_CRIA --clients 8 --requests "$REQ" --max-tokens "$TOK" --label cria
kill $PID; wait $PID 2>/dev/null || true

LD_LIBRARY_PATH="$(dirname "$LLAMA_SERVER")" "$LLAMA_SERVER" -m "$MODEL" --port "$PORT_LLAMA" -np 8 -c 8192 -t "$THREADS" >/dev/null 2>&1 &
PID=$!
wait_ready "$PORT_LLAMA"
python3 scripts/load.py --url http://127.0.0.1:$PORT_LLAMA --clients 8 --requests "$REQ" --max-tokens "$TOK" --label llama-server
kill $PID; wait $PID 2>/dev/null || true
