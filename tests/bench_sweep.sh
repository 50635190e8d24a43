#!/usr/bin/env bash
# `kvscope bench --sweep` end to end on the CPU with a real checkpoint (--model; the random-weight model lives on
# the GPU): a small RULER config through eval's run with --batch 3 and --batch 1 gives the same score table, the
# timing lines (wall, samples/s, prefill / decode / other) and the JSON; a second sweep into the same folder
# resumes (runs nothing). Usage: bench_sweep.sh KVSCOPE SMOLLM2_GGUF CONFIG
set -u
KV=$1
SMOL=$2
CFG=$3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() {
  echo "FAIL $*"
  exit 1
}
# sweep NAME BATCH: the config's first 2 samples per task, 6 new tokens each, into $T/NAME
sweep() {
  "$KV" bench --sweep "$CFG" --model "$SMOL" --device cpu --threads 1 --limit 2 --max_new_tokens 6 \
    --batch "$2" --output "$T/$1" --out "$T/$1.json" >"$T/$1.out" 2>"$T/$1.err" || {
    cat "$T/$1.err"
    fail "sweep --batch $2 exited $?"
  }
}
sweep b3 3
sweep b1 1
grep -Eq "wall [0-9.]+ s  [0-9.]+ samples/s" "$T/b3.out" || fail "no wall time line: $(cat "$T/b3.out")"
grep -Eq "prefill [0-9.]+ s \(.*decode [0-9.]+ s \(.*other" "$T/b3.out" || fail "no prefill/decode/other line"
grep -q "batch 3" "$T/b3.out" || fail "the batch is not said"
python3 - "$T/b3.json" <<'PY' || fail "JSON"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["samples"] == 4 and j["batch"] == 3 and j["wall_s"] > 0, j
assert abs(j["prefill_s"] + j["decode_s"] + j["other_s"] - j["wall_s"]) < 1e-6, j
PY
for b in b3 b1; do "$KV" report "$T/$b"/*.h5 --format csv | cut -d, -f1-4 >"$T/$b.csv" || fail "report $b"; done
cmp -s "$T/b3.csv" "$T/b1.csv" || fail "scores differ: $(paste -d'|' "$T/b3.csv" "$T/b1.csv")"
"$KV" bench --sweep "$CFG" --model "$SMOL" --device cpu --threads 1 --limit 2 --max_new_tokens 6 --batch 3 \
  --output "$T/b3" --out "$T/resumed.json" >"$T/resumed.out" 2>&1 || fail "resumed sweep: $(cat "$T/resumed.out")"
python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['samples'] == 0" "$T/resumed.json" || fail "resumed"
echo "bench --sweep: ok"
