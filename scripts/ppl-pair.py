#!/usr/bin/env python3
"""Paired perplexity gap between two engines on the same text and file.

  scripts/ppl-pair.py A.kld B.kld     (per token)
  scripts/ppl-pair.py A.log B.log     (per chunk)

A and B are `--kl-divergence-base` files written by `llama-perplexity` and
`cria perplexity` (same text, same -c), or those commands' output. A base
file stores every scored token's log-probabilities (16 bits per vocabulary
entry, at most 1.2e-4 nats of rounding; this reads only each token's own
entry; both engines' stored values sit ~0.06 % below their printed PPL,
alike). From the output alone, chunk i's mean log-likelihood is
i ln PPL_i - (i-1) ln PPL_(i-1) of the running values "[i]PPL_i" (printed
to 4 decimals: under 5e-4 nats of error per chunk at 100 chunks, against
chunk-to-chunk differences of ~7e-3 between the engines). If one output
has fewer chunks (a run stopped early), the chunks both have are paired and
the output says so.

Prints both perplexities from the stored values, the relative gap
PPL(B)/PPL(A) - 1, and its standard error two ways: from per-token log-prob
differences (tokens taken as independent, as llama-perplexity's
ln(PPL(Q)/PPL(base)) line does) and from per-chunk differences (chunks
independent, tokens inside a chunk not), plus the t value and a split by
position inside the scored half (first/second 128 tokens).
"""
import re
import sys

import numpy as np


def load(path):
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(raw[:8]) != b"_logits_":
        sys.exit(f"{path}: not a llama-perplexity base file")
    n_ctx, n_vocab, n_chunk = (int(v) for v in np.frombuffer(raw[8:20], dtype="<i4"))
    tokens = np.frombuffer(raw[20:20 + 4 * n_ctx * n_chunk], dtype="<i4").reshape(n_chunk, n_ctx)
    first = n_ctx // 2
    n_scored = n_ctx - 1 - first
    nv = 2 * ((n_vocab + 1) // 2) + 4
    start = 20 + 4 * n_ctx * n_chunk
    want = start + 2 * nv * n_scored * n_chunk
    if raw.size != want:
        sys.exit(f"{path}: {raw.size} bytes, header says {want}")
    rows = np.memmap(path, dtype="<u2", mode="r", offset=start,
                     shape=(n_chunk, n_scored, nv))
    head = np.ascontiguousarray(rows[:, :, :4]).view("<f4")  # scale, min_log_prob
    tgt = tokens[:, first + 1:first + 1 + n_scored]
    q = np.take_along_axis(rows[:, :, 4:], tgt[:, :, None].astype(np.int64), axis=2)[:, :, 0]
    logp = head[:, :, 0].astype(np.float64) * q + head[:, :, 1]
    return (n_ctx, n_vocab, n_chunk), tokens, -logp


def chunk_nll(path):
    """Per-chunk mean nll from a perplexity run's output."""
    vals = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+),", open(path, errors="replace").read())]
    if len(vals) < 2:
        sys.exit(f"{path}: no running perplexity values ([1]x,[2]y,...) found")
    s = np.arange(1, len(vals) + 1) * np.log(vals)
    return np.diff(np.concatenate([[0.0], s]))


def main_logs(a, b):
    ca, cb = chunk_nll(a), chunk_nll(b)
    if len(ca) != len(cb):
        # A run stopped early: chunks are scored independently, so the first
        # k chunks of both runs still pair exactly.
        n = min(len(ca), len(cb))
        print(f"A has {len(ca)} chunks, B {len(cb)}: pairing the first {n}")
        ca, cb = ca[:n], cb[:n]
    d = cb - ca
    se = d.std(ddof=1) / np.sqrt(len(d))
    print(f"chunks {len(d)}: PPL A {np.exp(ca.mean()):.4f}  PPL B {np.exp(cb.mean()):.4f}"
          f"  gap B/A-1 {100 * np.expm1(d.mean()):+.4f} %")
    print(f"mean ln(B/A) {d.mean():+.6f}  se(chunks) {se:.6f}  t {d.mean() / se:+.2f}"
          f"  chunks with B above A: {(d > 0).sum()} of {len(d)}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        if f.read(8) != b"_logits_":
            return main_logs(sys.argv[1], sys.argv[2])
    ha, ta, nll_a = load(sys.argv[1])
    hb, tb, nll_b = load(sys.argv[2])
    if ha != hb or not np.array_equal(ta, tb):
        sys.exit("the two files score different tokens (header or token ids differ)")
    n_chunk, n_scored = nll_a.shape
    d = nll_b - nll_a  # per token: ln of B's perplexity contribution over A's
    n = d.size
    mean = d.mean()
    se_tok = d.std(ddof=1) / np.sqrt(n)
    per_chunk = d.mean(axis=1)
    se_chunk = per_chunk.std(ddof=1) / np.sqrt(n_chunk)
    ppl_a, ppl_b = np.exp(nll_a.mean()), np.exp(nll_b.mean())
    print(f"chunks {n_chunk} x {n_scored} scored = {n} tokens, n_ctx {ha[0]}, n_vocab {ha[1]}")
    print(f"PPL A {ppl_a:.4f}  PPL B {ppl_b:.4f}  gap B/A-1 {100 * (ppl_b / ppl_a - 1):+.4f} %")
    print(f"mean ln(B/A) {mean:+.6f}  se(tokens) {se_tok:.6f}  se(chunks) {se_chunk:.6f}"
          f"  t(chunks) {mean / se_chunk:+.2f}")
    h = n_scored // 2
    for name, part in (("first half", d[:, :h]), ("second half", d[:, h:])):
        pc = part.mean(axis=1)
        print(f"  {name}: mean ln(B/A) {pc.mean():+.6f} se(chunks) {pc.std(ddof=1) / np.sqrt(n_chunk):.6f}")
    print(f"  chunks with B above A: {(per_chunk > 0).sum()} of {n_chunk};"
          f" per-token |d| mean {np.abs(d).mean():.5f}, sd {d.std(ddof=1):.5f}")


if __name__ == "__main__":
    main()
