#!/usr/bin/env python3
"""Load test for an OpenAI-compatible server on loopback (cria serve or
llama-server): streaming chat requests from 1 client, then from N
concurrent clients; prints aggregate generated tokens/s, the speedup, and
p50/p99 time to first token.

Bounded: each client sends --requests requests of --max-tokens tokens
(ignore_eos, so every request generates exactly that many), and the whole
run stops after --deadline seconds. Only loopback URLs are accepted.

  python3 scripts/load.py --url http://127.0.0.1:8080 --clients 8
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle to a child.",
    "What are the benefits of reading books?",
    "Give me advice for a first job interview.",
    "Describe a walk through a forest in autumn.",
    "How do airplanes stay in the air?",
    "Tell me about the history of bread.",
]


def one_request(host, port, prompt, max_tokens, deadline, api_key):
    """Returns (ttft seconds, tokens generated, seconds) for one streamed request."""
    body = json.dumps({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    })
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    conn = http.client.HTTPConnection(host, port, timeout=max(1.0, deadline - time.time()))
    t0 = time.time()
    conn.request("POST", "/v1/chat/completions", body, headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    ttft = None
    chunks = 0
    usage = None
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        obj = json.loads(data)
        if "error" in obj:
            raise RuntimeError(f"stream error: {obj['error']}")
        if obj.get("usage"):
            usage = obj["usage"]
        for c in obj.get("choices", []):
            if c.get("delta", {}).get("content"):
                if ttft is None:
                    ttft = time.time() - t0
                chunks += 1
        if time.time() > deadline:
            break
    conn.close()
    n = usage["completion_tokens"] if usage else chunks
    return (ttft if ttft is not None else time.time() - t0), n, time.time() - t0


def phase(host, port, clients, requests, max_tokens, deadline, api_key):
    results, errors = [], []
    lock = threading.Lock()

    def client(i):
        for r in range(requests):
            if time.time() > deadline:
                return
            prompt = PROMPTS[(i + r) % len(PROMPTS)]
            try:
                res = one_request(host, port, prompt, max_tokens, deadline, api_key)
                with lock:
                    results.append(res)
            except Exception as e:  # report, keep going
                with lock:
                    errors.append(str(e))

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    tokens = sum(n for _, n, _ in results)
    ttfts = sorted(t for t, _, _ in results)
    def pct(p):
        if not ttfts:
            return float("nan")
        return ttfts[min(len(ttfts) - 1, int(round(p / 100 * (len(ttfts) - 1))))]
    return {
        "clients": clients,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "ttft_p50_s": round(pct(50), 3),
        "ttft_p99_s": round(pct(99), 3),
        "ttft_mean_s": round(statistics.mean(ttfts), 3) if ttfts else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--deadline", type=float, default=600, help="seconds for the whole run")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1") and not (u.hostname or "").startswith("127."):
        sys.exit(f"refusing {a.url}: the load test only targets loopback")
    if a.clients < 1 or a.clients > 64 or a.requests < 1 or a.requests > 100:
        sys.exit("--clients must be 1..64 and --requests 1..100")
    deadline = time.time() + a.deadline
    # Warm up (page in the weights) with one short request.
    one_request(u.hostname, u.port or 80, "Hi", 4, deadline, a.api_key)
    single = phase(u.hostname, u.port or 80, 1, a.requests, a.max_tokens, deadline, a.api_key)
    multi = phase(u.hostname, u.port or 80, a.clients, a.requests, a.max_tokens, deadline, a.api_key)
    speedup = multi["tokens_per_s"] / single["tokens_per_s"] if single["tokens_per_s"] else float("nan")
    out = {"label": a.label, "single": single, "multi": multi, "speedup": round(speedup, 2)}
    if a.json:
        print(json.dumps(out))
        return
    for name, r in (("1 client", single), (f"{a.clients} clients", multi)):
        print(f"{a.label} {name}: {r['requests']} requests, {r['errors']} errors, {r['tokens']} tokens "
              f"in {r['wall_s']} s = {r['tokens_per_s']} tokens/s; TTFT p50 {r['ttft_p50_s']} s, "
              f"p99 {r['ttft_p99_s']} s")
        if r["first_error"]:
            print(f"  first error: {r['first_error']}")
    print(f"{a.label} aggregate speedup {a.clients} vs 1 client: {speedup:.2f}x")


if __name__ == "__main__":
    main()
