#!/usr/bin/env bash
# jobs/gpu/run_methods.sh — the KV-method measurements on a GPU machine (docs/performance.md "KV-cache methods",
# docs/results.md):
#
#   bash jobs/gpu/run_methods.sh run      # all steps below
#   bash jobs/gpu/run_methods.sh tests    # steps 1 and 2 only
#
# Each step runs under a time limit so that the whole run ends within BUDGET_S seconds (default 540) with what
# it has:
#   1. configure and build kvscope and the gpu tests (the -dev packages of the README, or KS_DEBS_DIR:
#      jobs/gpu/env.sh);
#   2. the gpu tests gpu_methods and gpu_forward (gpu_kernels at the end);
#   3. kvscope bench --acceleration: FullKV and the six methods (budget 2048) at 32K and 128K on the
#      Llama-3.1-8B shape (H2O's default all-query scoring is attention-sized work: step 5);
#   4. SmolLM2 through configs/benchmarks/RULER_nodata_4k8k.yaml on cuda, FullKV and SnapKV (EVAL_LIMIT samples
#      per task and length, default all), then `kvscope report` on both files; the GGUF is $KS_SMOLLM2_GGUF,
#      else the pip package jobs/setup.sh installs (without either the step is left out and says so);
#   5. H2O's default at 32K and 128K, then gpu_kernels.
# Knobs (environment): KS_TESTS (the gpu tests to run), KS_BENCH_METHODS (the --acceleration entries),
# KS_BENCH=0 (skip step 3), KS_BENCH_REPEAT (its --repeat, 32K and below; default 1), KS_H2O_DEFAULT=0 (skip
# step 5), EVAL_LIMIT, BUDGET_S.
# Everything lands in $OUT: bench_methods.{md,json}, bench_h2o.{md,json}, eval/*.h5, report.md, wall times in
# eval_times.txt, and logs.tgz (build and test logs).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${KS_BUILD_DIR:-build-gpu-meth}"
OUT="${OUT:-$BUILD-out}"
T0=$(date +%s)
say() { echo "[run_methods $(date +%T) +$(($(date +%s) - T0))s] $*"; }
left() { echo $((${BUDGET_S:-540} - ($(date +%s) - T0))); }
# runs "$@" for at most min(cap, time left - reserve) seconds
limited() {
  local cap=$1 reserve=$2 t
  shift 2
  t=$(left)
  t=$((t - reserve < cap ? t - reserve : cap))
  if [ "$t" -lt 5 ]; then say "skipped (no time left): $*"; return 124; fi
  timeout "$t" "$@"
}
mkdir -p "$OUT/logs"
case "${1:-}" in
  run | tests) ;;
  *) echo "usage: run_methods.sh run|tests" >&2; exit 2 ;;
esac
source jobs/gpu/env.sh
trap 'tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"' EXIT
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- 1. build --------------------------------------------------------------------------------------------
GEN=""
command -v ninja > /dev/null && GEN="-G Ninja"
say "configure and build ($BUILD)"
cmake -S . -B "$BUILD" $GEN -DKS_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$OUT/logs/configure.log" 2>&1 ||
  { tail -30 "$OUT/logs/configure.log"; say "configure FAILED"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target kvscope gpu_methods gpu_forward gpu_kernels > "$OUT/logs/build.log" 2>&1 ||
  { grep -E "error" "$OUT/logs/build.log" | head -20; say "build FAILED"; exit 1; }
say "built"

# ---- 2. gpu tests (gpu_kernels, which the methods do not use, runs last) ------------------------------------
RC=0
gpu_test() { # name, cap in seconds, seconds to leave for what follows
  limited "$2" "$3" "$BUILD/tests/$1" > "$OUT/logs/$1.log" 2>&1
  local rc=$?
  [ $rc = 0 ] || RC=1
  say "$1: exit $rc — $(grep -E '^[0-9]+%: Checks' "$OUT/logs/$1.log" | tail -1)"
  grep -E ":[EF]:|seed" "$OUT/logs/$1.log" | head -8
}
TESTS="${KS_TESTS:-gpu_methods gpu_forward gpu_kernels}"
for t in $TESTS; do [ "$t" = gpu_kernels ] || gpu_test "$t" 120 "${KS_TEST_RESERVE:-60}"; done
if [ "$1" = tests ]; then # the build and the tests only
  case " $TESTS " in *" gpu_kernels "*) gpu_test gpu_kernels 120 0 ;; esac
  exit $RC
fi

# ---- 3. method bench (Llama-3.1-8B shape, random weights) ------------------------------------------------
K="$BUILD/kvscope"
[ "${KS_BENCH:-1}" = 1 ] && say "kvscope bench --acceleration (32K, 128K)"
METHODS="${KS_BENCH_METHODS:-SnapKV:max_capacity_prompt=2048 PyramidKV:max_capacity_prompt=2048
  StreamingLLM:start_size=4:recent_size=2044 L2Compress:max_capacity_prompt=2048 CakeKV:cache_size=2048
  H2O:score_window=32:heavy_budget=1024:recent_budget=1024 H2O:variant=loom:max_capacity_prompt=2048}"
ACCEL=()
for a in $METHODS; do ACCEL+=(--acceleration "$a"); done
[ "${KS_BENCH:-1}" = 1 ] && limited 330 "${KS_EVAL_RESERVE:-60}" "$K" bench --lengths 32768,131072 \
  --repeat "${KS_BENCH_REPEAT:-1}" --decode_steps 32 "${ACCEL[@]}" \
  --out "$OUT/bench_methods.json" 2> "$OUT/logs/bench_methods.log" | tee "$OUT/bench_methods.md"

# ---- 4. SmolLM2 through RULER 4K/8K on cuda --------------------------------------------------------------
if gguf=${KS_SMOLLM2_GGUF:-$(bash jobs/smollm2_path.sh 2> /dev/null)} && [ -f "$gguf" ]; then
  mkdir -p "$OUT/eval"
  CFG=configs/benchmarks/RULER_nodata_4k8k.yaml
  for meth in FullKV SnapKV; do
    say "eval SmolLM2 RULER 4K/8K $meth"
    s=$(date +%s.%N)
    limited 200 45 "$K" eval --model_path "$gguf" --cfg_path "$CFG" \
      --device cuda --acceleration $meth --output "$OUT/eval" --limit "${EVAL_LIMIT:--1}" \
      > "$OUT/logs/eval_$meth.log" 2>&1
    rc=$?
    awk -v m=$meth -v rc=$rc -v s="$s" -v e="$(date +%s.%N)" 'BEGIN { printf "%s exit %d wall %.1f s\n", m, rc, e - s }' | tee -a "$OUT/eval_times.txt"
    tail -4 "$OUT/logs/eval_$meth.log"
  done
  "$K" report "$OUT"/eval/*.h5 > "$OUT/report.md" 2> "$OUT/logs/report.log"
  cat "$OUT/report.md"
else
  say "no SmolLM2 GGUF (KS_SMOLLM2_GGUF, or jobs/setup.sh's pip package): eval left out"
fi

# ---- 5. H2O's default (all queries score) at 32K and 128K ------------------------------------------------
[ "${KS_H2O_DEFAULT:-1}" = 1 ] && say "kvscope bench --acceleration H2O (default) at 32K and 128K" &&
  limited 150 5 "$K" bench --lengths 32768,131072 --repeat 1 --decode_steps 16 --acceleration H2O \
  --out "$OUT/bench_h2o.json" 2> "$OUT/logs/bench_h2o.log" | tee "$OUT/bench_h2o.md"
case " $TESTS " in *" gpu_kernels "*) gpu_test gpu_kernels 120 0 ;; esac
say "done"
exit $RC
