#!/usr/bin/env bash
# `kvscope bench --gp_num 2` on a GPU machine: two stages sharing GPU 0 (rows through host memory over MPI), the
# Llama-3.1-8B shape at 4K, and what the JSON must hold: a prefill and decode time, a busy and idle time per
# stage, exactly hidden x 4 bytes sent between the two stages per token (prefill and decode), and a device memory
# per rank. Usage: gpu_bench_stages.sh KVSCOPE MPIEXEC
set -u
KV=$1
MPIEXEC=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
timeout 600 "$MPIEXEC" -np 2 "$KV" bench --gp_num 2 --device 0 0 --lengths 4096 --decode_steps 4 --repeat 1 \
  --attention_lengths 4096 --out "$T/b.json" >"$T/out" 2>&1
rc=$?
cat "$T/out"
[ "$rc" -eq 0 ] || { echo "FAIL: exit $rc"; exit 1; }
python3 - "$T/b.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
L = "4096"
assert j["gp_num"] == 2 and j["stage_first_layers"] == [0, 16, 32], j["stage_first_layers"]
assert j["residual_rows"] == "mpi host memory", j["residual_rows"]
assert j["prefill_s"][L] > 0 and j["decode_ms"][L] > 0
assert len(j["busy_s"][L]) == 2 and all(b > 0 for b in j["busy_s"][L]), j["busy_s"]
assert all(0 <= i <= j["prefill_s"][L] for i in j["idle_s"][L]), j["idle_s"]
assert 0 <= j["mean_idle_fraction"][L] < 1
assert j["prefill_bytes_per_token"][L] == 4096 * 4, j["prefill_bytes_per_token"]
assert j["decode_bytes_per_token"][L] == 4096 * 4, j["decode_bytes_per_token"]
assert len(j["peak_bytes_per_rank"][L]) == 2 and all(b > 0 for b in j["peak_bytes_per_rank"][L])
print("ok: gp_num 2 on one GPU:", {k: j[k][L] for k in ("prefill_s", "decode_ms", "busy_s", "idle_s",
      "mean_idle_fraction", "prefill_bytes_per_token", "peak_bytes_per_rank")})
PY
