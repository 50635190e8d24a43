#!/usr/bin/env bash
# jobs/gpu/profile_decode.sh — where a decode step's time goes, on a GPU machine after jobs/gpu/run_gpu.sh built
# build-gpu (or KS_BUILD_DIR): `kvscope bench` decode ms/token at the given lengths with programmatic dependent
# launches and the held-op fusions on and off (KS_CUDA_NO_PDL, KS_CUDA_NO_FUSE), then, when nsys is installed,
# the per-kernel GPU time of a few decode steps (CUDA graph nodes traced one by one).
#
#   bash jobs/gpu/profile_decode.sh [LENGTHS] [extra kvscope bench args...]     # LENGTHS default 4096,32768
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${KS_BUILD_DIR:-build-gpu}"
LENGTHS="${1:-4096,32768}"
shift || true
source jobs/gpu/env.sh > /dev/null 2>&1
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
K="$BUILD/kvscope"
run() { # label, env assignments...
  local label=$1
  shift
  printf '%-22s ' "$label"
  env "$@" "$K" bench --lengths "$LENGTHS" --repeat 1 --decode_steps 32 --attention_lengths 4096 "${EXTRA[@]}" 2>/dev/null |
    awk -F'|' '/^\| [0-9]+K/ { printf "%s %s ms/tok  ", $2, $5 } END { print "" }'
}
EXTRA=("$@")
run "pdl+fuse"
run "no pdl" KS_CUDA_NO_PDL=1
run "no fuse" KS_CUDA_NO_FUSE=1
run "neither" KS_CUDA_NO_PDL=1 KS_CUDA_NO_FUSE=1
if command -v nsys > /dev/null; then
  P=/tmp/ks-decode-prof
  rm -f $P.nsys-rep $P.sqlite
  nsys profile -q -t cuda --cuda-graph-trace=node -o $P "$K" bench --lengths "${LENGTHS%%,*}" --repeat 1 \
    --decode_steps 8 --attention_lengths 4096 "${EXTRA[@]}" > /dev/null 2>&1
  nsys stats -q -r cuda_gpu_kern_sum -f csv $P.nsys-rep 2>/dev/null |
    python3 -c '
import csv, sys
rows = list(csv.DictReader(sys.stdin))
for r in rows[:14]:
    print("%6s%%  %9s ns avg  %7s calls  %s" % (r["Time (%)"], r["Avg (ns)"], r["Instances"], r["Name"][:90]))'
else
  echo "nsys not installed: no per-kernel breakdown"
fi
# Nsight Compute, when there: each decode kernel of one layer alone (serialised, clocks left free), its time
# and DRAM bytes, from the third decode step at 4K.
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2> /dev/null)
if [ -n "$NCU" ]; then
  "$NCU" --clock-control none --graph-profiling node -k 'regex:gemv|attention_decode|rope_append' \
    --launch-skip 30 --launch-count 14 --metrics gpu__time_duration.sum,dram__bytes_read.sum \
    "$K" bench --lengths 4096 --repeat 1 --decode_steps 3 --attention_lengths 4096 2> /dev/null |
    awk '/^  [a-zA-Z_].*\(/ { name = $1 } /gpu__time_duration.sum/ { t = $NF " " $(NF-1) }
         /dram__bytes_read.sum/ { printf "  %-48s %14s   dram read %s %s\n", substr(name, 1, 48), t, $NF, $(NF-1) }'
fi
