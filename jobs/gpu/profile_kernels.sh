#!/usr/bin/env bash
# jobs/gpu/profile_kernels.sh — where a GPU run's time goes, kernel by kernel: each named case runs one
# `kvscope bench` under Nsight Systems (CUDA trace, the kernels inside CUDA graphs one by one) and prints the
# kernels that took most of the GPU time, with their share, total, launches and mean. On a GPU machine after
# jobs/gpu/run_gpu.sh built build-gpu (or KS_BUILD_DIR):
#
#   bash jobs/gpu/profile_kernels.sh [CASE...]       # default: kivi estimation batch
#
#   kivi        KIVI-2 and KIVI-4 at 128K (prefill, then 16 decode steps each) beside FullKV
#   estimation  one layer's XAttention and FlexPrefill estimation at 128K, and the sparse kernel at 10%
#   batch       the 4K RULER sweep (40 samples) decoded in batches of 16
#
# Each case's kernel table lands in $OUT (default $KS_BUILD_DIR-prof) as CASE.csv (nsys stats'
# cuda_gpu_kern_sum) and CASE.log (the bench's own output). Needs nsys (Nsight Systems: the CUDA toolkit's
# bin/ or /opt/nvidia/nsight-systems) and python3.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD="${KS_BUILD_DIR:-build-gpu}"
OUT="${OUT:-$BUILD-prof}"
K="$BUILD/kvscope"
# shellcheck source=jobs/gpu/env.sh
source jobs/gpu/env.sh > /dev/null 2>&1
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
NSYS=$(command -v nsys || find /usr/local/cuda/bin /opt/nvidia -name nsys -type f 2> /dev/null | head -1)
[ -n "$NSYS" ] || { echo "profile_kernels: no nsys (install Nsight Systems or put it on PATH)"; exit 1; }
[ -x "$K" ] || { echo "profile_kernels: no $K (run jobs/gpu/run_gpu.sh first)"; exit 1; }
mkdir -p "$OUT"

case_args() {
  case "$1" in
    kivi) echo "--lengths 131072 --repeat 1 --decode_steps 16 --acceleration KIVI
                --acceleration KIVI:k_bits=4:v_bits=4" ;;
    estimation) echo "--lengths 4096 --repeat 1 --decode_steps 1 --attention_lengths 131072 --sparse_densities 0.1" ;;
    batch) echo "--sweep configs/benchmarks/RULER_nodata_4k8k.yaml --lengths 4096 --limit 4 --batch 16
                 --tokenizer tests/fixtures/tokenizer/llama3_1/tokenizer.json --output $OUT/batch-results" ;;
    *) return 1 ;;
  esac
}

RC=0
for c in "${@:-kivi estimation batch}"; do
  for name in $c; do
    args=$(case_args "$name") || { echo "profile_kernels: unknown case '$name' (kivi, estimation, batch)"; exit 2; }
    echo "[profile_kernels] $name: kvscope bench $args"
    # shellcheck disable=SC2086 # the case's arguments are words
    if ! "$NSYS" profile -o "$OUT/$name" -t cuda --cuda-graph-trace=node -f true "$K" bench $args \
      > "$OUT/$name.log" 2>&1; then
      tail -5 "$OUT/$name.log"
      RC=1
      continue
    fi
    "$NSYS" stats -q -r cuda_gpu_kern_sum -f csv -o "$OUT/$name" "$OUT/$name.nsys-rep" > /dev/null 2>&1
    if ! mv -f "$OUT/${name}_cuda_gpu_kern_sum.csv" "$OUT/$name.csv" 2> /dev/null; then
      echo "  no kernel table"
      RC=1
      continue
    fi
    python3 - "$OUT/$name.csv" << 'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
total = sum(float(r["Total Time (ns)"]) for r in rows) or 1.0
print("  share     total (ms)  launches   mean (us)  kernel")
for r in rows[:15]:
    t = float(r["Total Time (ns)"])
    print("  %6.2f%% %12.3f %9d %11.1f  %s" % (100 * t / total, t / 1e6, int(r["Instances"]),
                                             float(r["Avg (ns)"]) / 1e3, r["Name"][:110]))
PY
  done
done
exit $RC
