#!/usr/bin/env bash
# Kept for old notes: the GGUF parser fuzzer, through scripts/fuzz.sh.
exec "$(dirname "$0")/fuzz.sh" gguf_parse "${1:-60}"
