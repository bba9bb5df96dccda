#!/usr/bin/env bash
# cria vs llama.cpp on the same file, threads and sizes, interleaved.
#
#   scripts/bench-vs-llamacpp.sh MODEL [THREADS]      # THREADS: e.g. 1,2 (default)
#   P=512 N=128 R=5 scripts/bench-vs-llamacpp.sh MODEL 1,2
#   D=0,4096 CTK=q8_0 CTV=q8_0 P=0 N=128 scripts/bench-vs-llamacpp.sh MODEL 1,2
#
# For each thread count and test (pp$P, tg$N) it runs llama-bench and
# `cria bench` back to back (alternating which goes first), R repetitions
# each, and prints mean t/s and the ratio cria / llama.cpp. Then peak RSS
# (/usr/bin/time -v, a tg16 run of each) and load-to-first-token (wall time
# of a process that loads the model and generates one token: llama-simple
# vs `cria run --raw -n 1`). P=0 or N=0 skips that test.
# D: depths (llama-bench -d: tokens already in the cache; comma-separated),
# CTK/CTV: cache types of both engines (-ctk/-ctv; default f16), FA:
# llama-bench's -fa (default 1: flash attention, which llama.cpp needs for
# a quantized V cache). EXTRAS=0 skips the RSS and first-token lines.
# Environment: LLAMA_BIN (dir with llama-bench, llama-simple), CRIA (binary).
set -euo pipefail
MODEL=${1:?usage: $0 MODEL [THREADS]}
THREADS=${2:-1,2}
P=${P:-512}
N=${N:-128}
R=${R:-5}
D=${D:-0}
CTK=${CTK:-f16}
CTV=${CTV:-f16}
FA=${FA:-1}
EXTRAS=${EXTRAS:-1}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CRIA=${CRIA:-$HERE/target/release/cria}
if [[ -z ${LLAMA_BIN:-} ]]; then
  LLAMA_BIN=$("$HERE/../shared/tools/llama-cpp-anchor.sh" --bin 2>/dev/null ||
    echo "$HOME/.cache/cria-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin")
fi
[[ -x $LLAMA_BIN/llama-bench ]] || { echo "no llama-bench in $LLAMA_BIN (set LLAMA_BIN)" >&2; exit 1; }
[[ -x $CRIA ]] || { echo "no cria binary at $CRIA (cargo build --release, or set CRIA)" >&2; exit 1; }

avg() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f %.2f" % (d[0]["avg_ts"], d[0]["stddev_ts"]))'; }
llama() { "$LLAMA_BIN/llama-bench" -m "$MODEL" -t "$1" -p "$2" -n "$3" -d "$4" -ctk "$CTK" -ctv "$CTV" -fa "$FA" -r "$R" -o json 2>/dev/null | avg; }
cria() { "$CRIA" bench -m "$MODEL" -t "$1" -p "$2" -n "$3" -d "$4" -ctk "$CTK" -ctv "$CTV" -r "$R" --json 2>/dev/null | avg; }

echo "model: $MODEL"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cache: K $CTK, V $CTV (llama-bench -fa $FA)"
echo
echo "| threads | test | llama.cpp t/s | cria t/s | cria / llama.cpp |"
echo "|---:|---|---:|---:|---:|"
order=0
for t in ${THREADS//,/ }; do
  for d in ${D//,/ }; do
    for test in pp tg; do
      if [[ $test == pp ]]; then p=$P; n=0; else p=0; n=$N; fi
      [[ $p == 0 && $n == 0 ]] && continue
      if (( order % 2 == 0 )); then l=$(llama "$t" "$p" "$n" "$d"); c=$(cria "$t" "$p" "$n" "$d")
      else c=$(cria "$t" "$p" "$n" "$d"); l=$(llama "$t" "$p" "$n" "$d"); fi
      order=$((order + 1))
      read -r lm ls <<<"$l"; read -r cm cs <<<"$c"
      ratio=$(python3 -c "print('%.2f' % ($cm / $lm))")
      name="$test$((p + n))"
      [[ $d != 0 ]] && name="$name @ d$d"
      echo "| $t | $name | $lm ± $ls | $cm ± $cs | ${ratio}x |"
    done
  done
done
[[ $EXTRAS == 0 ]] && exit 0

echo
t1=${THREADS%%,*}
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}'; }
if [[ -x /usr/bin/time ]]; then
  lr=$(rss "$LLAMA_BIN/llama-bench" -m "$MODEL" -t "$t1" -p 0 -n 16 -r 1)
  cr=$(rss "$CRIA" bench -m "$MODEL" -t "$t1" -p 0 -n 16 -r 1)
  echo "peak RSS (tg16, $t1 thread(s)): llama.cpp $((lr / 1024)) MiB, cria $((cr / 1024)) MiB"
fi
ftt() {
  local best=
  for _ in 1 2 3; do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    best=$(python3 -c "b='$best'; v=$e-$s; print('%.3f' % (v if not b else min(v, float(b))))")
  done
  echo "$best"
}
lf=$(ftt "$LLAMA_BIN/llama-simple" -m "$MODEL" -n 1 "Hello")
cf=$(ftt "$CRIA" run -m "$MODEL" --raw -p "Hello" -n 1 -t "$t1")
echo "load to first token (best of 3, whole process): llama-simple ${lf} s, cria run ${cf} s"
