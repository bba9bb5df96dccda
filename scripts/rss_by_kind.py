#!/usr/bin/env python3
"""Resident memory of a `cria serve` process while it answers one kind of
request over and over: tells a leak (RSS that keeps rising with the count)
from the allocator settling (rises that shrink). Loopback only.

  python3 scripts/rss_by_kind.py --pid PID --port 8080 --kind stream --requests 4000

Kinds: tokenize, invalid, completion, chat, stream (chat, streamed),
stream-logprobs, long (a prompt longer than the context), hangup (a stream
closed after its first token).
"""

import argparse
import http.client
import json
import threading

from soak import cancelled, rss_kib  # the soak's own hang-up and RSS reader

CHAT = {"messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 16}
KINDS = {
    "tokenize": ("/tokenize", {"content": "hello world"}),
    "invalid": ("/v1/completions", {"prompt": "x", "logprobs": 99}),
    "completion": ("/v1/completions", {"prompt": "The weather today", "max_tokens": 8}),
    "chat": ("/v1/chat/completions", CHAT),
    "stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "stream-logprobs": ("/v1/chat/completions",
                        {**CHAT, "stream": True, "logprobs": True, "top_logprobs": 2}),
    "long": ("/v1/completions", {"prompt": "word " * 5000}),
}


def post(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    c.getresponse().read()
    c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=[*KINDS, "hangup"], required=True)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    one = (lambda: cancelled("127.0.0.1", a.port)) if a.kind == "hangup" else (
        lambda: post(a.port, *KINDS[a.kind]))
    start = rss_kib(a.pid)
    per_round = a.requests // 4
    for r in range(4):
        threads = [threading.Thread(target=lambda: [one() for _ in range(per_round // a.threads)])
                   for _ in range(a.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"{a.kind}: after {(r + 1) * per_round} requests RSS {rss_kib(a.pid)} KiB "
              f"(start {start})", flush=True)


if __name__ == "__main__":
    main()
