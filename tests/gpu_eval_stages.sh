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
  names="stages shared"
  if [ "$GPUS" -ge 2 ]; then run "nccl2_$method" 2 2 "$method" 0 1 && names="$names nccl2"; fi
  if [ "$GPUS" -ge 4 ]; then run "nccl4_$method" 4 4 "$method" 0 1 2 3 && names="$names nccl4"; fi
  python3 - "$T" "$method" $names <<'PY' || exit 1
import glob, sys
import h5py
T, method, names = sys.argv[1], sys.argv[2], sys.argv[3:]

def load(name):
    (path,) = glob.glob(f"{T}/{name}_{method}/*.h5")
    with h5py.File(path, "r") as f:
        s = {k: (d.asstr()[()] if d.dtype.kind in "SO" else d[()]).tolist() for k, d in f["samples"].items()}
        l = {k: (d.asstr()[()] if d.dtype.kind in "SO" else d[()]).tolist() for k, d in f["layers"].items()}
    key = lambda i: (s["task"][i], s["length"][i], s["index"][i])
    samples = {key(i): (s["prediction"][i], s["generated_tokens"][i], s["score"][i]) for i in range(len(s["task"]))}
    drop = {"sample"}  # the row number in /samples, which follows the commit order
    cols = sorted(c for c in l if c not in drop)
    layers = sorted(tuple(l[c][i] for c in cols) for i in range(len(l["task"])))
    return samples, layers

one = load("one")
assert len(one[0]) > 0, "the one-rank run wrote no samples"
for name in names:
    other = load(name)
    assert other[0] == one[0], f"{method} {name}: samples differ from one rank:\n{other[0]}\nvs\n{one[0]}"
    assert other[1] == one[1], f"{method} {name}: per-layer statistics differ from one rank"
print(f"ok: {method}: {len(one[0])} samples and {len(one[1])} layer rows equal for 1 rank and {', '.join(names)}")
PY
done
