#!/usr/bin/env bash
# jobs/gpu/run_smollm2.sh — the SmolLM2 checks on a GPU machine: `gpu_forward smollm2` (the fixtures' logits and
# greedy tokens) and `kvscope generate --device cuda` next to `--device cpu` on one chat prompt.
#
#   bash jobs/gpu/run_smollm2.sh [--generate-only]
#
# Runs on the build jobs/gpu/run_gpu.sh made (KS_BUILD_DIR, default build-gpu). The GGUF: $KS_SMOLLM2_GGUF, else
# the pip package jobs/setup.sh installs (jobs/smollm2_path.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${KS_BUILD_DIR:-build-gpu}"
source jobs/gpu/env.sh > /dev/null 2>&1
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$BUILD/tests/gpu_forward" ] || { echo "run_smollm2: no $BUILD/tests/gpu_forward (run run_gpu.sh first)"; exit 1; }
gguf=${KS_SMOLLM2_GGUF:-$(bash jobs/smollm2_path.sh)} && [ -f "$gguf" ] ||
  { echo "run_smollm2: no SmolLM2 GGUF (set KS_SMOLLM2_GGUF, or run jobs/setup.sh)"; exit 1; }
RC=0
if [ "${1:-}" != "--generate-only" ]; then
  KS_SMOLLM2_GGUF="$gguf" "$BUILD/tests/gpu_forward" smollm2 2>&1 | grep -v "OpenBLAS does not know"
  RC=${PIPESTATUS[0]}
fi
for dev in cuda cpu; do
  echo "[run_smollm2] kvscope generate --device $dev:"
  "$BUILD/kvscope" generate --model_path "$gguf" --chat --max_new_tokens 48 --device $dev \
    --prompt "What is the capital of France? Answer in one sentence." 2>&1 | grep -v "OpenBLAS does not know"
done
exit $RC
