#!/usr/bin/env bash
# jobs/gpu/profile_decode.sh — where a decode step's time goes, on a GPU machine after jobs/gpu/run_gpu.sh built
# build-gpu (or KS_BUILD_DIR): `kvscope bench` decode ms/token at the given lengths with programmatic dependent
# launches on and off (KS_CUDA_NO_PDL, docs/kernels.md), in one run so that the machine is the same (two GPUs
# of one model can differ by several percent in decode). Per-kernel timings of the decode kernels alone:
# build-gpu/tests/bench_kernels.
#
#   bash jobs/gpu/profile_decode.sh [LENGTHS] [extra kvscope bench args...]     # LENGTHS default 4096,32768
#   (extra args such as --config; not --acceleration, whose table has other columns)
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
    awk -F'|' '/^\| [0-9]+K/ && NF >= 8 { printf "%s %s ms/tok  ", $2, $5 } END { print "" }'
}
EXTRA=("$@")
run "pdl"
run "no pdl" KS_CUDA_NO_PDL=1
