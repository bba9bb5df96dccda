#!/usr/bin/env python3
"""Stands in for the llama-server binary in llama.cpp's server test suite
(tools/server/tests, which starts $LLAMA_SERVER_BIN_PATH with llama-server's
command line). It takes that command line and execs either

  - `cria serve` with the flags mapped (WRAP_TARGET=cria, CRIA_BIN), or
  - the real llama-server (WRAP_TARGET=llama-server, LLAMA_SERVER_BIN),

in both cases with the suite's hub model (--hf-repo/--hf-file/--model-url)
replaced by the local file WRAP_MODEL, so nothing is ever fetched from a
model hub and both servers run the same model.

Mapping for cria (every llama-server flag the suite's utils.py passes is
listed; one not listed makes the wrapper fail loudly rather than guess):
  same meaning, passed on:  --port --host --temp --seed --n-predict
      --parallel -ctk -ctv --threads --alias --tags --api-key --no-ui
      --metrics --slots --no-slots --cors-origins --pooling --reasoning
      --lora --model-draft --spec-type --spec-draft-n-max --spec-draft-n-min
      --verbose
  mapped:  --ctx-size N  ->  -c N/parallel (llama-server's is the total of
               all slots, cria's is per slot); with --kv-unified, -c N
           --context-shift  ->  --context-overflow shift
           --chat-template-file F  ->  --chat-template F
           --chat-template NAME  ->  --chat-template NAME
  dropped (no effect on what the suite observes, or nothing to set in cria):
      --offline --batch-size --ubatch-size --n-gpu-layers --cont-batching
      --embedding (cria always serves embeddings) --kv-unified --swa-full
      -fa --jinja --no-jinja (cria always renders Jinja)
      --reasoning-format --no-mmproj --cache-ram
      --no-cache-idle-slots --reranking (the suite starts every preset
      once; cria has no /rerank, and test_rerank is not in FILES)
      --backend_sampling (llama.cpp's sampling on the GPU backend; cria
      samples on the CPU, where the chain is the same: nothing to switch)
  added: --cors '*' when --cors-origins is not given (llama-server's
      default answers every origin; cria's answers none);
      --no-metrics when --metrics is not given (llama-server serves
      /metrics only with --metrics; cria by default)
  anything else: an error naming the flag (the test then fails, visibly).
"""

import os
import sys

HUB = {"--hf-repo", "--hf-file", "--model-url", "--model", "-m"}
PASS_VALUE = {
    "--port", "--host", "--temp", "--seed", "--n-predict", "--parallel",
    "-ctk", "-ctv", "--threads", "--alias", "--tags", "--api-key",
    "--cors-origins", "--pooling", "--lora", "--model-draft", "--spec-type",
    "--spec-draft-n-max", "--spec-draft-n-min", "--reasoning",
}
PASS_FLAG = {"--no-ui", "--metrics", "--slots", "--no-slots", "--verbose"}
DROP_VALUE = {
    "--batch-size", "--ubatch-size", "--n-gpu-layers", "-fa",
    "--reasoning-format", "--cache-ram",
}
DROP_FLAG = {
    "--offline", "--cont-batching", "--embedding", "--kv-unified",
    "--swa-full", "--jinja", "--no-jinja", "--no-mmproj",
    "--no-cache-idle-slots", "--reranking",
    # GPU-side sampling in llama.cpp: no meaning on a CPU engine.
    "--backend_sampling",
}


def die(msg):
    print(f"llama-server-wrap: {msg}", file=sys.stderr)
    sys.exit(2)


def pairs(argv):
    """(flag, value or None) in order; a value is taken for flags known to have one."""
    takes_value = HUB | PASS_VALUE | DROP_VALUE | {
        "--ctx-size", "--chat-template", "--chat-template-file",
        "--grp-attn-n", "--grp-attn-w", "--slot-save-path", "--models-dir",
        "--models-max", "--models-preset", "--media-path", "--mmproj-url",
        "--sleep-idle-seconds", "--tools", "--tools-runtime",
        "--mcp-servers-config", "--mcp-servers-json", "--spec-synth-len",
        "--spec-synth-rates",
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in takes_value:
            if i + 1 >= len(argv):
                die(f"{a} needs a value")
            yield a, argv[i + 1]
            i += 2
        else:
            yield a, None
            i += 1


def threads(argv):
    """WRAP_THREADS (default 1) threads for both servers unless the suite
    gives --threads: the suite checks replies, not speed, and on a shared
    machine fewer threads finish sooner."""
    if "--threads" in argv:
        return []
    return ["--threads", os.environ.get("WRAP_THREADS", "1")]


def for_llama_server(argv, model):
    # Threads wait without spinning: on a shared, loaded machine ggml's
    # busy-polling threads make every test many times slower.
    out, hub = ["--poll", "0"] + threads(argv), False
    for flag, value in pairs(argv):
        if flag in HUB:
            hub = True
            continue
        out.append(flag)
        if value is not None:
            out.append(value)
    return out + (["--model", model] if hub else [])


def for_cria(argv, model):
    out = ["serve", "-m", model] + threads(argv)
    ctx, parallel = None, 1
    for flag, value in pairs(argv):
        if flag == "--parallel":
            parallel = int(value)
    for flag, value in pairs(argv):
        if flag in HUB or flag in DROP_FLAG or flag in DROP_VALUE:
            continue
        if flag in PASS_VALUE:
            out += [flag, value]
        elif flag in PASS_FLAG:
            out.append(flag)
        elif flag == "--ctx-size":
            ctx = int(value)
        elif flag == "--context-shift":
            out += ["--context-overflow", "shift"]
        elif flag in ("--chat-template-file", "--chat-template"):
            # cria's --chat-template takes a file, Jinja text or a
            # built-in name (llama.cpp's names).
            out += ["--chat-template", value]
        else:
            die(f"no cria equivalent for the llama-server flag {flag}")
    if ctx is not None:
        # A unified cache lets one slot use all of it: cria gives each slot
        # that much (more memory, the same replies).
        per_slot = ctx if "--kv-unified" in argv else ctx // max(parallel, 1)
        out += ["-c", str(max(per_slot, 16))]
    # llama-server answers CORS for any origin unless told otherwise; cria
    # only when told.
    if "--cors-origins" not in argv:
        out += ["--cors", "*"]
    if "--metrics" not in argv:
        out.append("--no-metrics")
    return out


def main():
    target = os.environ.get("WRAP_TARGET", "cria")
    model = os.environ.get("WRAP_MODEL")
    if not model:
        die("set WRAP_MODEL to the GGUF file both servers run")
    argv = sys.argv[1:]
    if target == "llama-server":
        binary = os.environ.get("LLAMA_SERVER_BIN") or die("set LLAMA_SERVER_BIN")
        args = for_llama_server(argv, model)
    elif target == "cria":
        binary = os.environ.get("CRIA_BIN") or die("set CRIA_BIN")
        args = for_cria(argv, model)
    else:
        die(f"WRAP_TARGET={target!r}: give cria or llama-server")
    print(f"llama-server-wrap: {binary} {' '.join(args)}", file=sys.stderr, flush=True)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
