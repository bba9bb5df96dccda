#!/usr/bin/env python3
"""Soak test for `cria serve` on loopback: for --minutes, a few client
threads send a mix of valid requests (chat and completions, streamed and
not), invalid ones (bad JSON, bad fields, n=2, too-long prompts) and
cancelled ones (a stream closed after its first token). Checks every valid
request is answered 200, every invalid one gets a 4xx, nothing gets a 5xx,
and records the server's resident memory (VmRSS) at the start and end.

  python3 scripts/soak.py --pid PID --url http://127.0.0.1:8080 --minutes 10
"""

import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.parse


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def post(host, port, path, body, timeout=120):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    return r.status, payload


def cancelled(host, port):
    """Starts a long stream, reads a little, hangs up."""
    s = socket.create_connection((host, port), timeout=60)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 500, "ignore_eos": True,
                       "stream": True})
    s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    while got.count(b"data:") < 2:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    s.close()
    return 200 if b" 200 " in got.split(b"\r\n", 1)[0] else 599


VALID = [
    lambda rnd: ("/v1/chat/completions", {"messages": [{"role": "user", "content": rnd.choice(
        ["Hi!", "Name a fruit.", "What is 3+4?", "Describe rain."])}], "max_tokens": rnd.randint(1, 24),
        "seed": rnd.randint(0, 1000)}),
    lambda rnd: ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Count to five."}],
        "max_tokens": 16, "stream": True, "logprobs": True, "top_logprobs": 2}),
    lambda rnd: ("/v1/completions", {"prompt": "The weather today", "max_tokens": rnd.randint(1, 24),
        "stop": [".", "\n"], "temperature": 0}),
    lambda rnd: ("/v1/completions", {"prompt": [1, 2, 3, 4], "max_tokens": 8, "stream": True}),
]

INVALID = [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", {"messages": [{"role": "alien", "content": "x"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 3}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": "x"}),
    ("/v1/completions", {"prompt": "word " * 5000}),
    ("/v1/completions", {"prompt": [10 ** 9]}),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}),
]


def has_error(payload):
    """An error reply: a JSON object with an "error" key, or an SSE stream
    with an error event. (Generated text may itself say "error".)"""
    lines = payload.split(b"\n")
    if any(l.startswith(b"data:") for l in lines):
        return any(l.startswith(b"data: {\"error\"") for l in lines)
    try:
        return "error" in json.loads(payload)
    except ValueError:
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--pid", type=int, required=True, help="the server's process id (for RSS)")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    if not (u.hostname in ("localhost", "::1") or (u.hostname or "").startswith("127.")):
        sys.exit("loopback only")
    host, port = u.hostname, u.port or 80
    start_rss = rss_kib(a.pid)
    end_at = time.time() + a.minutes * 60
    stats = {"valid": 0, "valid_ok": 0, "invalid": 0, "invalid_4xx": 0, "cancelled": 0,
             "5xx": 0, "429": 0, "other": []}
    lock = threading.Lock()

    def client(i):
        rnd = random.Random(i)
        while time.time() < end_at:
            kind = rnd.random()
            try:
                if kind < 0.55:
                    path, body = rnd.choice(VALID)(rnd)
                    status, payload = post(host, port, path, body)
                    with lock:
                        stats["valid"] += 1
                        if status == 200 and not has_error(payload):
                            stats["valid_ok"] += 1
                        elif status == 429:
                            stats["429"] += 1
                        else:
                            stats["other"].append((status, payload[-400:]))
                elif kind < 0.85:
                    path, body = rnd.choice(INVALID)
                    status, payload = post(host, port, path, body)
                    with lock:
                        stats["invalid"] += 1
                        if 400 <= status < 500:
                            stats["invalid_4xx"] += 1
                        else:
                            stats["other"].append((status, payload[:200]))
                else:
                    status = cancelled(host, port)
                    with lock:
                        stats["cancelled"] += 1
                        if status != 200:
                            stats["other"].append((status, b"cancelled stream"))
                if status >= 500:
                    with lock:
                        stats["5xx"] += 1
            except Exception as e:
                with lock:
                    stats["other"].append((0, str(e).encode()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    mid = []
    while any(t.is_alive() for t in threads):
        time.sleep(30)
        mid.append(rss_kib(a.pid))
    for t in threads:
        t.join()
    time.sleep(2)
    end_rss = rss_kib(a.pid)
    other = stats.pop("other")
    print(json.dumps({**stats, "unexpected": len(other), "first_unexpected": [
        (s, p.decode("utf-8", "replace")) for s, p in other[:5]],
        "rss_start_kib": start_rss, "rss_end_kib": end_rss, "rss_samples_kib": mid}))
    ok = not other and stats["5xx"] == 0 and stats["valid_ok"] + stats["429"] == stats["valid"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
