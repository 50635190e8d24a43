#!/usr/bin/env bash
# jobs/gpu/run_gpu.sh — on a GPU machine, in one go: configure and build with CUDA, run the tests labelled `gpu`
# (optionally under compute-sanitizer), the kernel benchmark, `kvscope bench` (the Llama-3.1-8B-shaped model)
# and the PyTorch + transformers baseline on the same GPU, and print both side by side with the physical floor
# (the numbers of docs/performance.md and docs/kernels.md).
#
#   bash jobs/gpu/run_gpu.sh [--quick] [--sanitize] [--kernel-bench] [--no-torch]
#
#   --quick         a validation run: kvscope bench at 4K/32K/128K with one prefill each, a short torch run
#   --sanitize      also run gpu_kernels and gpu_methods under compute-sanitizer memcheck/racecheck and
#                   gpu_forward under memcheck
#   --kernel-bench  also run build-gpu/tests/bench_kernels (docs/kernels.md)
#   --no-torch      skip the PyTorch baseline (jobs/bench_torch.py needs torch and transformers)
#
# Needs the -dev packages of the README's "On a GPU machine", or their .debs in KS_DEBS_DIR (jobs/gpu/env.sh,
# jobs/gpu/fetch_debs.sh). The `gpu;model` test (gpu_forward_smollm2) and the generate comparison need the
# SmolLM2 GGUF: $KS_SMOLLM2_GGUF, else the pip package jobs/setup.sh installs (jobs/smollm2_path.sh); without
# it they are left out and the run says so. Environment: KS_BUILD_DIR (default build-gpu), OUT (logs and JSON,
# default $KS_BUILD_DIR-out: kvscope.json, torch.json, logs.tgz). The last lines printed are the test summary
# and the tables.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${KS_BUILD_DIR:-build-gpu}"
OUT="${OUT:-$BUILD-out}" # git-ignored (build-*/) like the build itself
QUICK=0 SANITIZE=0 KBENCH=0 TORCH=1
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --sanitize) SANITIZE=1 ;;
    --kernel-bench) KBENCH=1 ;;
    --no-torch) TORCH=0 ;;
    *) echo "run_gpu.sh: unknown option '$a' (use --quick, --sanitize, --kernel-bench, --no-torch)"; exit 2 ;;
  esac
done
LOG="$OUT/logs" # tarred into $OUT/logs.tgz at the end
mkdir -p "$LOG"
trap 'tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOG"' EXIT
say() { echo "[run_gpu $(date +%T)] $*"; }

# ---- 1. what the machine has ------------------------------------------------------------------------------
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -1
  cmake --version | head -1
  grep PRETTY_NAME /etc/os-release
  for t in pkg-config ninja mpicc compute-sanitizer; do printf '%s: %s\n' "$t" "$(command -v $t || echo missing)"; done
  for m in yaml-0.1 check libcjson libutf8proc libpcre2-8 openblas; do
    printf 'system %s: %s\n' "$m" "$(pkg-config --modversion $m 2>/dev/null || echo missing)"
  done
  ls -d /usr/include/hdf5/serial 2>/dev/null || echo "hdf5 serial headers: missing"
} > "$LOG/env.log" 2>&1
say "environment:"; sed 's/^/  /' "$LOG/env.log"

# ---- 2. the .debs of $KS_DEBS_DIR, if any, into a private prefix; pkg-config; NCCL (jobs/gpu/env.sh) --------
source jobs/gpu/env.sh

# ---- 3. configure and build --------------------------------------------------------------------------------
GEN=""
command -v ninja > /dev/null && GEN="-G Ninja"
rm -rf "$BUILD"
say "configure ($BUILD)"
if ! cmake -S . -B "$BUILD" $GEN -DKS_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$LOG/configure.log" 2>&1; then
  tail -40 "$LOG/configure.log"; say "configure FAILED"; exit 1
fi
grep -E "kvscope:|Found" "$LOG/configure.log" | sed 's/^/  /'
say "build"
# The GPU targets first, then everything, past other targets' errors.
cmake --build "$BUILD" -j"$(nproc)" --target gpu_kernels bench_kernels gpu_forward kvscope > "$LOG/build.log" 2>&1
cmake --build "$BUILD" -j"$(nproc)" -- $([ -n "$GEN" ] && echo -k0 || echo -k) >> "$LOG/build.log" 2>&1 ||
  { grep -E "error|Error" "$LOG/build.log" | head -20; say "build had errors (see build.log)"; }
for t in tests/gpu_kernels tests/gpu_forward kvscope; do
  [ -x "$BUILD/$t" ] || { grep -E "error" "$LOG/build.log" | head -20; say "$t was not built"; exit 1; }
done

# ---- 4. tests ----------------------------------------------------------------------------------------------
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SKIP=""
if gguf=${KS_SMOLLM2_GGUF:-$(bash jobs/smollm2_path.sh 2> /dev/null)} && [ -f "$gguf" ]; then
  export KS_SMOLLM2_GGUF="$gguf"
  say "SmolLM2 GGUF: $gguf"
else
  SKIP="-E gpu_forward_smollm2"
  say "no SmolLM2 GGUF (KS_SMOLLM2_GGUF, or jobs/setup.sh's pip package): gpu_forward_smollm2 left out"
fi
say "tests (label gpu)"
ctest --test-dir "$BUILD" -L gpu $SKIP --output-on-failure -V > "$LOG/test.log" 2>&1
TEST_RC=$?
[ -n "${KS_SMOLLM2_GGUF:-}" ] && bash jobs/gpu/run_smollm2.sh --generate-only
if [ "$SANITIZE" = 1 ] && command -v compute-sanitizer > /dev/null; then
  # gpu_methods' kernel cases only (CK_RUN_CASE): its method runs under racecheck take many minutes
  for run in "memcheck gpu_kernels" "racecheck gpu_kernels" "memcheck gpu_methods" "racecheck gpu_methods" \
    "memcheck gpu_forward"; do
    set -- $run
    say "compute-sanitizer --tool $1 $2"
    only=() # an empty CK_RUN_CASE would select no case at all
    [ "$2" = gpu_methods ] && only=(CK_RUN_CASE=kernels)
    env "${only[@]}" KS_SEED=${KS_SEED:-1} timeout 300 compute-sanitizer --tool "$1" --error-exitcode 9 \
      "$BUILD/tests/$2" > "$LOG/sanitize_$1_$2.log" 2>&1
    echo "  $1 $2: exit $? — $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG/sanitize_$1_$2.log" | tail -1)"
    # cuBLAS's own kernels (nvjet_*) synchronise through mbarriers, which racecheck reports as races.
    grep -oE 'Race reported between .* at [A-Za-z0-9_]+' "$LOG/sanitize_$1_$2.log" | grep -oE '[A-Za-z0-9_]+$' |
      sort | uniq -c | sed 's/^/    reported in: /'
  done
fi

# ---- 5. benchmarks -----------------------------------------------------------------------------------------
if [ "$KBENCH" = 1 ]; then
  say "bench_kernels"
  "$BUILD/tests/bench_kernels" $([ "$QUICK" = 1 ] && echo --quick) > "$LOG/bench_kernels.log" 2>&1 ||
    say "bench_kernels FAILED"
fi
if [ "$QUICK" = 1 ]; then
  KS_ARGS="--lengths 4096,32768,131072 --repeat 1 --decode_steps 16 --attention_lengths 32768"
  TORCH_ARGS="--lengths 4096 --attention_lengths 4096 --decode_steps 4 --repeat 1"
else
  KS_ARGS="" TORCH_ARGS=""
fi
say "kvscope bench $KS_ARGS"
"$BUILD/kvscope" bench $KS_ARGS --out "$OUT/kvscope.json" > "$LOG/kvscope_bench.log" 2>&1 ||
  { tail -5 "$LOG/kvscope_bench.log"; say "kvscope bench FAILED"; }
if [ "$TORCH" = 1 ]; then
  say "PyTorch baseline $TORCH_ARGS"
  PYTHONUNBUFFERED=1 python3 jobs/bench_torch.py $TORCH_ARGS --out "$OUT/torch.json" > /dev/null \
    2> "$LOG/torch_bench.log" || { tail -5 "$LOG/torch_bench.log"; say "PyTorch baseline FAILED"; }
fi

# ---- 6. summary (printed last) ------------------------------------------------------------------------------
echo
say "gpu test details:"
grep -E "^[0-9]+: ( |gpu_[a-z]+:|[0-9]+%:|.*:F:|.*:E:)" "$LOG/test.log" | sed 's/^[0-9]*: //' | tail -60
echo
say "ctest summary:"; grep -E "tests passed|tests failed|Total Test time|\*\*\*Failed|Not Run" "$LOG/test.log"
[ "$KBENCH" = 1 ] && { echo; tail -20 "$LOG/bench_kernels.log"; }
echo; say "kvscope bench:"; grep -v '^\[kvscope\]' "$LOG/kvscope_bench.log" | tail -20
if [ -f "$OUT/torch.json" ]; then
  echo; say "side by side (python3 jobs/bench_torch.py --compare torch.json kvscope.json):"
  python3 jobs/bench_torch.py --compare "$OUT/torch.json" "$OUT/kvscope.json"
fi
exit $TEST_RC
