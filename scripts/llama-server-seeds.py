#!/usr/bin/env python3
"""Seeded draws side by side: the same /completion request (prompt, seed,
temperature 1, llama-server's default chain) to `cria serve` and to
llama-server on the same model, for many seeds; prints how many replies are
identical token for token, and where the others first differ.

    scripts/llama-server-seeds.py                 # 32 seeds, 32 tokens each
    SEEDS=64 N_PREDICT=16 scripts/llama-server-seeds.py

Both servers run one thread and one slot. The logits of the two engines
agree to float rounding, not bit for bit, so a draw that lands within that
rounding of a boundary between two tokens can differ, and the replies
diverge from there.

Environment: MODEL (default: the cached default model), CRIA_BIN (default:
target/release/cria), LLAMA_SERVER_BIN (default: the anchor build), SEEDS,
N_PREDICT, CRIA_PORT, LLAMA_PORT.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.path.expanduser("~")
MODEL = os.environ.get("MODEL", f"{HOME}/.cache/cria/models/SmolLM2-135M-Instruct.Q4_1.gguf")
CRIA = os.environ.get("CRIA_BIN", f"{ROOT}/target/release/cria")
LLAMA = os.environ.get(
    "LLAMA_SERVER_BIN",
    f"{HOME}/.cache/cria-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server",
)
SEEDS = int(os.environ.get("SEEDS", "32"))
N_PREDICT = int(os.environ.get("N_PREDICT", "32"))
CRIA_PORT = int(os.environ.get("CRIA_PORT", "18731"))
LLAMA_PORT = int(os.environ.get("LLAMA_PORT", "18831"))
PROMPTS = [
    "Write a very long book.",
    "The sky is blue and I love it.",
    "Once upon a time, in a small village,",
    "What is LLM?",
]


def post(port, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)


def wait(port, proc):
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"server on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"server on port {port} did not start")


def main():
    procs = [
        subprocess.Popen(
            [CRIA, "serve", "-m", MODEL, "--threads", "1", "--port", str(CRIA_PORT), "--parallel", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(
            [LLAMA, "-m", MODEL, "--threads", "1", "--port", str(LLAMA_PORT), "--parallel", "1",
             "--poll", "0", "--no-warmup"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait(CRIA_PORT, procs[0])
        wait(LLAMA_PORT, procs[1])
        same, first_diff = 0, []
        for seed in range(SEEDS):
            prompt = PROMPTS[seed % len(PROMPTS)]
            body = {"prompt": prompt, "seed": seed, "temperature": 1.0, "n_predict": N_PREDICT,
                    "return_tokens": True, "cache_prompt": False}
            ra, rb = post(CRIA_PORT, body), post(LLAMA_PORT, body)
            a, b = ra["tokens"], rb["tokens"]
            # llama-server lists the end-of-generation token it stopped on
            # in `tokens`; cria does not (it is not part of the reply).
            if rb.get("stop_type") == "eos" and b[:-1] == a:
                b = b[:-1]
            if a == b and ra["content"] == rb["content"]:
                same += 1
                print(f"seed {seed:3}: identical ({len(a)} tokens)")
            else:
                i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                first_diff.append(i)
                print(f"seed {seed:3}: first differs at token {i} (cria {a[i:i+3]}, llama-server {b[i:i+3]})")
        print(f"\n{same} of {SEEDS} replies identical ({N_PREDICT} tokens each, temperature 1)")
        if first_diff:
            print(f"the others first differ at tokens {sorted(first_diff)}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
