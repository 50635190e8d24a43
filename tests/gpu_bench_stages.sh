#!/usr/bin/env bash
# `kvscope bench --gp_num 2` on a GPU machine: the Llama-3.1-8B shape at 4K over two stages sharing GPU 0 (rows
# through host memory over MPI) and, with two GPUs or more, on GPUs of their own (rows through NCCL); the JSON
# must hold a prefill and decode time, a busy and idle time per stage, exactly hidden x 4 bytes sent between the
# two stages per token (prefill and decode), and a device memory per rank. Then the 70B shape at 128K on one
# GPU: refused before anything is allocated, naming the bytes and --gp_num. Usage: gpu_bench_stages.sh KVSCOPE MPIEXEC
set -u
KV=$1
MPIEXEC=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# two_stages ROWS DEVICE...: the run and its JSON, the residual rows going as ROWS says
two_stages() {
  local rows=$1
  shift
  timeout 600 "$MPIEXEC" -np 2 "$KV" bench --gp_num 2 "$@" --lengths 4096 --decode_steps 4 --repeat 1 \
    --attention_lengths 4096 --out "$T/b.json" >"$T/out" 2>&1
  local rc=$?
  cat "$T/out"
  [ "$rc" -eq 0 ] || { echo "FAIL: --gp_num 2 $*: exit $rc"; return 1; }
  python3 - "$T/b.json" "$rows" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
L = "4096"
assert j["gp_num"] == 2 and j["stage_first_layers"] == [0, 16, 32], j["stage_first_layers"]
assert j["residual_rows"] == sys.argv[2], j["residual_rows"]
assert j["prefill_s"][L] > 0 and j["decode_ms"][L] > 0
assert len(j["busy_s"][L]) == 2 and all(b > 0 for b in j["busy_s"][L]), j["busy_s"]
assert all(0 <= i <= j["prefill_s"][L] for i in j["idle_s"][L]), j["idle_s"]
assert 0 <= j["mean_idle_fraction"][L] < 1
assert j["prefill_bytes_per_token"][L] == 4096 * 4, j["prefill_bytes_per_token"]
assert j["decode_bytes_per_token"][L] == 4096 * 4, j["decode_bytes_per_token"]
assert len(j["peak_bytes_per_rank"][L]) == 2 and all(b > 0 for b in j["peak_bytes_per_rank"][L])
print("ok: gp_num 2,", sys.argv[2], {k: j[k][L] for k in ("prefill_s", "decode_ms", "busy_s", "idle_s",
      "mean_idle_fraction", "prefill_bytes_per_token", "peak_bytes_per_rank")})
PY
}

two_stages "mpi host memory" --device 0 0 || exit 1
if [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 2 ]; then
  two_stages "nccl" --device 0 1 || exit 1
fi

CFG="$(dirname "$0")/../configs/models/llama-3.1-70b.json"
timeout 120 "$KV" bench --config "$CFG" --lengths 131072 >"$T/out" 2>"$T/err"
rc=$?
cat "$T/err"
[ "$rc" -eq 1 ] && grep -Eq "does not fit one GPU: .*GiB.*mpirun -np [0-9]+ kvscope bench --gp_num [0-9]+" "$T/err" ||
  { echo "FAIL: the 70B shape at 128K on one GPU: exit $rc"; exit 1; }
echo "ok: the 70B shape at 128K does not fit one GPU"
