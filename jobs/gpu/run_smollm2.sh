#!/usr/bin/env bash
# jobs/gpu/run_smollm2.sh — the SmolLM2 checks on a GPU machine: `gpu_forward smollm2` (the fixtures' logits and
# greedy tokens) and `kvscope generate --device cuda` next to `--device cpu` on one chat prompt.
#
#   bash jobs/gpu/run_smollm2.sh [--generate-only]
#
# Usually run after run_gpu.sh on the same machine: run_gpu.sh built everything and stashed the first GGUF part
# in /tmp; this run brings .smollm2/part.ab and .smollm2/SHA256SUMS (jobs/gpu/smollm2_parts.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${KS_BUILD_DIR:-build-gpu}"
L=/tmp/ks-prefix/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$L:$L/openblas-pthread:/tmp/ks-prefix/nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$BUILD/tests/gpu_forward" ] || { echo "run_smollm2: no $BUILD/tests/gpu_forward (run run_gpu.sh first)"; exit 1; }
gguf=$(bash jobs/gpu/smollm2_parts.sh gather) && [ -n "$gguf" ] || { echo "run_smollm2: GGUF parts incomplete"; exit 1; }
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
