"""Exact answers on val.jsonl with llama.cpp's llama-completion (greedy),
with or without --lora: prompts rendered as SmolLM2's chat template does."""
import json, subprocess, sys
BIN, MODEL, VAL = sys.argv[1], sys.argv[2], sys.argv[3]
lora = sys.argv[4:] and ["--lora", sys.argv[4]] or []
ok = n = 0
for line in open(VAL):
    r = json.loads(line)
    *ctx, want = r["messages"]
    p = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    for m in ctx:
        p += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    p += "<|im_start|>assistant\n"
    out = subprocess.run([f"{BIN}/llama-completion", "-m", MODEL, *lora, "-p", p, "-n", "6", "--temp", "0",
                          "-t", "2", "-no-cnv", "--no-display-prompt", "--no-warmup"],
                         capture_output=True, text=True).stdout
    got = out.split("<|im_end|>")[0].replace("[end of text]", "").strip()
    n += 1
    ok += got == want["content"].strip()
print(f"exact answers: {ok}/{n}")
