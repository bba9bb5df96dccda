#!/usr/bin/env python3
"""Replay model of speculative decoding on a task set (a script, not a test).

For every task of TASK_DIR, the greedy output of `cria run` (the same with
and without speculation) and its prompt are tokenized; the n-gram drafter
is replayed through a drafting policy, and every step is costed by
COST[rows] (a step of `rows` rows relative to a one-row step, e.g. the
on-CPU curve of crates/model/examples/verify_cost.rs). Prints the modelled
speedup (tokens over summed step costs) per task and in total.

    scripts/spec-replay.py TASK_DIR "1,1.071,1.128,..."   # COST for 1..17 rows
    scripts/spec-replay.py TASK_DIR 0.17                   # linear: 1 + c (rows - 1)

Policies:
- `old` (session 20): the latest earlier occurrence of the longest suffix
  of 4..1 tokens; start at 16 drafts, +2 on full acceptance, else one more
  than accepted; at most 7 at 2 threads.
- `latest` (sessions 22-25): the same lookup, with spec/cost.rs's draft
  length (best expected tokens per cost, up to 16, from the acceptance per
  match length, and since session 25 per whether the last draft was
  accepted whole).
- `vote` (the engine since session 26, spec.rs `ngram_draft`): the
  continuations of every earlier occurrence of the suffix vote, token by
  token among those still agreeing, ties to the latest; the same cost model.
The cost model's row cost c is (COST[8] - 1) / 7 for a curve.
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
    """Latest earlier occurrence of the longest suffix (4..1 tokens)."""
    n_len = len(h)
    for n in range(min(4, n_len - 1), 0, -1):
        key = h[n_len - n:]
        for i in range(n_len - n - 1, -1, -1):
            if h[i:i + n] == key:
                return h[i + n:min(i + n + k, n_len)], n
    return [], 0


def ngram_vote(h, k):
    """Every earlier occurrence's continuation votes (spec.rs ngram_draft)."""
    n_len = len(h)
    for n in range(min(4, n_len - 1), 0, -1):
        key = h[n_len - n:]
        # The latest 64 occurrences (spec.rs NGRAM_VOTERS).
        alive = [i + n for i in range(n_len - n - 1, -1, -1) if h[i:i + n] == key][:64]
        if not alive:
            continue
        d = []
        for j in range(k):
            votes = {}
            for rank, s in enumerate(alive):
                if s + j < n_len:
                    c, r = votes.get(h[s + j], (0, rank))
                    votes[h[s + j]] = (c + 1, min(r, rank))
            if not votes:
                break
            tok = max(votes, key=lambda t: (votes[t][0], -votes[t][1]))
            d.append(tok)
            alive = [s for s in alive if s + j < n_len and h[s + j] == tok]
        return d, n
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
    # Acceptance per (match length, last draft accepted whole).
    hits, tries, whole = [0] * 10, [0] * 10, False
    while i < len(out):
        h = prompt + out[:i + 1]
        room = len(out) - 1 - i
        if policy == "old":
            d, m = ngram(h, min(n_draft, 7, room))
        else:
            d, m = (ngram if policy == "latest" else ngram_vote)(h, min(16, room))
            src = m + 5 * whole
            d = d[:best_len((hits[src] + 1) / (tries[src] + 2), c, len(d))]
        v = 0
        while v < len(d) and i + 1 + v < len(out) and d[v] == out[i + 1 + v]:
            v += 1
        total += cost(1 + len(d))
        if d:
            if policy == "old":
                n_draft = min(n_draft + 2, 16) if v == len(d) else min(v + 1, 16)
            else:
                hits[src] += v
                tries[src] += v + (v < len(d))
                whole = v == len(d)
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
    policies = ("old", "latest", "vote")
    totals = {p: [0, 0.0] for p in policies}
    for t in tasks:
        text = open(os.path.join(task_dir, t)).read()
        gen = subprocess.run([CRIA, "run", "-m", model, "-f", os.path.join(task_dir, t),
                              "-t", "2", "-n", "256", "--temp", "0", "--seed", "1"],
                             capture_output=True, check=True).stdout.decode()
        prompt = ids(model, f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")
        out = ids(model, gen)
        row = [t[:-4]]
        for policy in policies:
            steps = replay(prompt, out, policy, cost, c)
            totals[policy][0] += len(out)
            totals[policy][1] += steps
            row.append(f"{policy} {len(out) / steps:.2f}x")
        print("  ".join(row))
    print("total  " + "  ".join(f"{p} {n / s:.2f}x" for p, (n, s) in totals.items()))


if __name__ == "__main__":
    main()
