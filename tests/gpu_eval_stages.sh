#!/usr/bin/env bash
# `kvscope eval` with several ranks: SmolLM2 on the e2e RULER config, FullKV and SnapKV, as one rank
# (--gp_num 1), as two pipeline stages sharing GPU 0 (-np 2 --gp_num 2 --device 0 0: the residual rows through
# host memory over MPI), as two whole-model instances sharing GPU 0 (-np 2 --gp_num 1/2) and, on a machine with
# 2 or 4 GPUs or more, as 2 and 4 stages on GPUs of their own (the rows through NCCL). Every sample's
# prediction, generated-token count and score, and every per-layer statistics row, must equal the one-rank
# run's (greedy decoding: same tokens). Usage: gpu_eval_stages.sh KVSCOPE MPIEXEC CONFIG GGUF
set -u
KV=$1
MPIEXEC=$2
CFG=$3
GGUF=$4
[ -f "$GGUF" ] || { echo "SKIP: no SmolLM2 GGUF at '$GGUF' (jobs/setup.sh installs it)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')

# run NAME NP GP_NUM METHOD DEVICE...
run() {
  local name=$1 np=$2 gp=$3 method=$4
  shift 4
  timeout 600 "$MPIEXEC" -np "$np" "$KV" eval --model_path "$GGUF" --cfg_path "$CFG" --output "$T/$name" \
    --max_new_tokens 16 --gp_num "$gp" --acceleration "$method" --limit -1 --device "$@" >"$T/$name.log" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] || { tail -n 20 "$T/$name.log"; echo "FAIL: -np $np --gp_num $gp $method: exit $rc"; exit 1; }
}

for method in FullKV SnapKV; do
  run "one_$method" 1 1 "$method" cuda
  run "stages_$method" 2 2 "$method" 0 0
  run "shared_$method" 2 1/2 "$method" 0
  runs=("$T/stages_$method" "$T/shared_$method")
  if [ "$GPUS" -ge 2 ]; then run "nccl2_$method" 2 2 "$method" 0 1 && runs+=("$T/nccl2_$method"); fi
  if [ "$GPUS" -ge 4 ]; then run "nccl4_$method" 4 4 "$method" 0 1 2 3 && runs+=("$T/nccl4_$method"); fi
  python3 "$(dirname "$0")/tools/same_results.py" "$method" "$T/one_$method" "${runs[@]}" || exit 1
done
