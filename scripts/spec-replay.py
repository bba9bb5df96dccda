#!/usr/bin/env python3
"""Replay model of speculative decoding on a task set (a script, not a test).

For every task of TASK_DIR, the greedy output of `cria run` (the same with
and without speculation) and its prompt are tokenized; the n-gram drafter
(the engine's: latest earlier occurrence of the longest suffix of 4..1
tokens) is replayed through a drafting policy, and every step is costed
by COST[rows] (a step of `rows` rows relative to a one-row step, e.g. the
on-CPU curve of crates/model/examples/verify_cost.rs). Prints the modelled
speedup (tokens over summed step costs) per task and in total.

    scripts/spec-replay.py TASK_DIR "1,1.071,1.128,..."   # COST for 1..17 rows
    scripts/spec-replay.py TASK_DIR 0.13                   # linear: 1 + c (rows - 1)

Policies: `old` (session 20: start at 16, +2 on full acceptance, else one
more than accepted; at most 7 drafts at 2 threads) and `cost` (spec/cost.rs:
per match-length acceptance, best expected tokens per cost, up to 16),
the latter with the row cost c taken from COST[8] as (COST[8] - 1) / 7.
Environment: CRIA (binary; target/release/cria), MODEL (default model).
Uses the chat template's plain form (no system prompt), so counts differ
slightly from the engine's.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRIA = os.environ.get("CRIA", os.path.join(HERE, "target/release/cria"))


def ids(model, text):
    out = subprocess.run([CRIA, "tokenize", "-m", model, "--ids", "--no-bos"],
                         input=text.encode(), capture_output=True, check=True)
    return json.loads(out.stdout)


def ngram(h, k):
    n_len = len(h)
    for n in range(min(4, n_len - 1), 0, -1):
        key = h[n_len - n:]
        for i in range(n_len - n - 1, -1, -1):
            if h[i:i + n] == key:
                return h[i + n:min(i + n + k, n_len)], n
    return [], 0


def best_len(p, c, k_max):
    best, rate, tokens, reach = 0, 1.0, 1.0, 1.0
    for k in range(1, k_max + 1):
        reach *= p
        tokens += reach
        r = tokens / (1 + c * k)
        if r > rate:
            best, rate = k, r
    return best


def replay(prompt, out, policy, cost, c):
    i, total = 0, 0.0
    n_draft = 16
    hits, tries = [0] * 5, [0] * 5
    while i < len(out):
        h = prompt + out[:i + 1]
        room = len(out) - 1 - i
        if policy == "old":
            d, m = ngram(h, min(n_draft, 7, room))
        else:
            d, m = ngram(h, min(16, room))
            d = d[:best_len((hits[m] + 1) / (tries[m] + 2), c, len(d))]
        v = 0
        while v < len(d) and i + 1 + v < len(out) and d[v] == out[i + 1 + v]:
            v += 1
        total += cost(1 + len(d))
        if d:
            if policy == "old":
                n_draft = min(n_draft + 2, 16) if v == len(d) else min(v + 1, 16)
            hits[m] += v
            tries[m] += v + (v < len(d))
        i += v + 1
    return total


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    task_dir, spec = sys.argv[1], sys.argv[2]
    if "," in spec:
        curve = [float(x) for x in spec.split(",")]
        cost = lambda n: curve[min(n, len(curve)) - 1]  # noqa: E731
        c = (curve[7] - 1) / 7 if len(curve) >= 8 else 0.13
    else:
        c = float(spec)
        cost = lambda n: 1 + c * (n - 1)  # noqa: E731
    model = os.environ.get("MODEL") or subprocess.run(
        [CRIA, "pull"], capture_output=True, text=True, check=True).stdout.strip()
    tasks = sorted(f for f in os.listdir(task_dir) if f.endswith(".txt"))
    totals = {"old": [0, 0.0], "cost": [0, 0.0]}
    for t in tasks:
        text = open(os.path.join(task_dir, t)).read()
        gen = subprocess.run([CRIA, "run", "-m", model, "-f", os.path.join(task_dir, t),
                              "-t", "2", "-n", "256", "--temp", "0", "--seed", "1"],
                             capture_output=True, check=True).stdout.decode()
        prompt = ids(model, f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")
        out = ids(model, gen)
        row = [t[:-4]]
        for policy in ("old", "cost"):
            steps = replay(prompt, out, policy, cost, c)
            totals[policy][0] += len(out)
            totals[policy][1] += steps
            row.append(f"{policy} {len(out) / steps:.2f}x")
        print("  ".join(row))
    print("total  " + "  ".join(f"{p} {n / s:.2f}x" for p, (n, s) in totals.items()))


if __name__ == "__main__":
    main()
