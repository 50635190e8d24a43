#!/usr/bin/env bash
# jobs/gpu/run_gpu.sh — on a GPU machine, in one go: configure and build with CUDA, run the tests labelled
# `gpu`, check them under compute-sanitizer, and run the kernel benchmark (numbers for docs/gpu-notes.md).
#
#   here (Debian, apt):  bash jobs/gpu/fetch_debs.sh                  # the -dev packages the GPU image lacks
#   GPU machine:         bash jobs/gpu/run_gpu.sh [--quick] [--no-sanitize] [--no-bench]
#                        (through the device tool: carry [".gpudeps"])
#
# The GPU image (Ubuntu 24.04, CUDA 13) has no package registry; the carried .debs are unpacked into a
# private prefix (never into /) and found through PKG_CONFIG_PATH; NCCL comes from wherever the image has
# it (system, or the PyTorch environment's wheel). Logs go to $OUT (the device tool's output folder) or
# ./build-gpu-out; the last lines printed are the environment, the test summary and the benchmark table.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${KS_BUILD_DIR:-build-gpu}"
OUT="${OUT:-$BUILD-out}" # git-ignored (build-*/) like the build itself
P=/tmp/ks-prefix
QUICK="" SANITIZE=1 BENCH=1
for a in "$@"; do
  case "$a" in
    --quick) QUICK=--quick ;;
    --no-sanitize) SANITIZE=0 ;;
    --no-bench) BENCH=0 ;;
    *) echo "run_gpu.sh: unknown option '$a' (use --quick, --no-sanitize, --no-bench)"; exit 2 ;;
  esac
done
mkdir -p "$OUT"
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
} > "$OUT/env.log" 2>&1
say "environment:"; sed 's/^/  /' "$OUT/env.log"

# ---- 2. the carried .debs into a private prefix ------------------------------------------------------------
rm -rf "$P" && mkdir -p "$P/bin"
if ls .gpudeps/*.deb > /dev/null 2>&1; then
  for f in .gpudeps/*.deb; do dpkg -x "$f" "$P"; done
else
  say "no .gpudeps/*.deb (run jobs/gpu/fetch_debs.sh here and carry .gpudeps); using the system only"
fi
L="$P/usr/lib/x86_64-linux-gnu"
# The .pc files say /usr; point them at the prefix. Debian selects OpenBLAS's variant through
# update-alternatives, which dpkg -x does not run: use the pthread variant's own .pc and library directly.
find "$P" -name '*.pc' -exec sed -i "s|=/usr|=$P/usr|g" {} +
export PKG_CONFIG_PATH="$L/pkgconfig:$L/openblas-pthread/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
RUNTIME_LIBS="$L:$L/openblas-pthread"
if ! command -v pkg-config > /dev/null && [ -x "$P/usr/bin/pkgconf" ]; then
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$L" "$P/usr/bin/pkgconf" > "$P/bin/pkg-config"
  chmod +x "$P/bin/pkg-config"
  export PATH="$P/bin:$PATH"
fi
# NCCL: the CUDA image may carry it only inside PyTorch's environment (nvidia-nccl wheel, libnccl.so.2).
if [ ! -e /usr/include/nccl.h ] && [ ! -e /usr/local/cuda/include/nccl.h ] && [ -z "${NCCL_ROOT:-}" ]; then
  inc=$(find /usr /opt -name nccl.h -path '*nccl*' 2> /dev/null | head -1)
  lib=$(find /usr /opt -name 'libnccl.so*' 2> /dev/null | head -1)
  if [ -n "$inc" ] && [ -n "$lib" ]; then
    mkdir -p "$P/nccl/lib" && ln -s "$(dirname "$inc")" "$P/nccl/include"
    ln -sf "$lib" "$P/nccl/lib/libnccl.so" && ln -sf "$lib" "$P/nccl/lib/libnccl.so.2"
    export NCCL_ROOT="$P/nccl"
    RUNTIME_LIBS="$RUNTIME_LIBS:$P/nccl/lib"
    say "NCCL from $lib"
  else
    say "NCCL not found on this machine (configure will say so)"
  fi
fi

# ---- 3. configure and build --------------------------------------------------------------------------------
GEN=""
command -v ninja > /dev/null && GEN="-G Ninja"
rm -rf "$BUILD"
say "configure ($BUILD)"
if ! cmake -S . -B "$BUILD" $GEN -DKS_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$OUT/configure.log" 2>&1; then
  tail -40 "$OUT/configure.log"; say "configure FAILED"; exit 1
fi
grep -E "kvscope:|Found" "$OUT/configure.log" | sed 's/^/  /'
say "build"
# The GPU targets first (they need only the kernels), then everything, past other targets' errors.
cmake --build "$BUILD" -j"$(nproc)" --target gpu_kernels bench_kernels > "$OUT/build.log" 2>&1
cmake --build "$BUILD" -j"$(nproc)" -- $([ -n "$GEN" ] && echo -k0 || echo -k) >> "$OUT/build.log" 2>&1 ||
  { grep -E "error|Error" "$OUT/build.log" | head -20; say "build had errors (see build.log)"; }
for t in tests/gpu_kernels tests/bench_kernels; do
  [ -x "$BUILD/$t" ] || { say "$t was not built"; exit 1; }
done

# ---- 4. tests ----------------------------------------------------------------------------------------------
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "tests (label gpu)"
ctest --test-dir "$BUILD" -L gpu --output-on-failure -V > "$OUT/test.log" 2>&1
TEST_RC=$?
if [ "$SANITIZE" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    say "compute-sanitizer --tool $tool gpu_kernels"
    KS_SEED=${KS_SEED:-1} timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 \
      "$BUILD/tests/gpu_kernels" > "$OUT/sanitize_$tool.log" 2>&1
    echo "  $tool: exit $? — $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_$tool.log" | tail -1)"
    # cuBLAS's own kernels (nvjet_*) synchronise through mbarriers, which racecheck reports as races;
    # (excluding them with --kernel-name-exclude made the sanitizer crash): list where the reports are.
    grep -oE 'Race reported between .* at [A-Za-z0-9_]+' "$OUT/sanitize_$tool.log" | grep -oE '[A-Za-z0-9_]+$' |
      sort | uniq -c | sed 's/^/    reported in: /'
    grep -E '^[^=].*(F:|Checks:)' "$OUT/sanitize_$tool.log" | sed 's/^/    /'
  done
fi

# ---- 5. benchmark ------------------------------------------------------------------------------------------
if [ "$BENCH" = 1 ]; then
  say "bench_kernels $QUICK"
  "$BUILD/tests/bench_kernels" $QUICK > "$OUT/bench.log" 2>&1 || say "bench_kernels FAILED"
fi

# ---- 6. summary (the device tool returns the end of the output) -----------------------------------------
echo
say "gpu test details:"
grep -E "^[0-9]+: ( |gpu_kernels:|[0-9]+%:|.*:F:)" "$OUT/test.log" | sed 's/^[0-9]*: //' | tail -70
echo
say "ctest summary:"; grep -E "tests passed|tests failed|Total Test time" "$OUT/test.log"
[ "$BENCH" = 1 ] && { echo; tail -20 "$OUT/bench.log"; }
exit $TEST_RC
