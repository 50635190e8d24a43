#!/usr/bin/env bash
# jobs/sweep_parts.sh — a whole `kvscope bench --sweep` timed in parts, one target length per run, so that a sweep
# longer than one job's time limit (the seed's RULER sweep: 720 prompts, about 35 GPU minutes for the 8B shape)
# can be timed across several jobs; the parts' JSON files sum to the whole.
#
#   bash jobs/sweep_parts.sh CFG OUTDIR PART [PART ...] [-- BENCH_ARGS ...]
#
#   CFG         the benchmark YAML (configs/benchmarks/RULER.yaml; its qa tasks need squad_path/hotpotqa_path)
#   OUTDIR      where each part writes its results (OUTDIR/L/) and its timing (OUTDIR/L.json); a part whose JSON
#               exists is not run again, so later jobs add the missing lengths
#   PART        L or L:N — target length L, all samples or the first N of each task (--limit N)
#   BENCH_ARGS  passed to every part (--tokenizer, --acceleration, --batch, --device, ...)
#
# Environment: KVSCOPE (default build/kvscope). Prints one row per part — its samples, wall seconds, samples/s,
# prefill and decode seconds — and, for a part run with --limit, the wall seconds of all the config's samples at
# that length scaled from it (every sample of one length has about the same prompt and answer lengths); then the
# totals, measured and scaled.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
CFG=$1 OUTDIR=$2
shift 2
PARTS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do PARTS+=("$1"); shift; done
[ $# -gt 0 ] && shift # the --
[ ${#PARTS[@]} -gt 0 ] || usage
[ -f "$CFG" ] || { echo "sweep_parts: no benchmark config $CFG" >&2; exit 2; }
KVSCOPE=${KVSCOPE:-build/kvscope}
[ -x "$KVSCOPE" ] || { echo "sweep_parts: $KVSCOPE is not built (set KVSCOPE to the kvscope program)" >&2; exit 2; }
PER_TASK=$(awk -F: '/^num_samples:/ { gsub(/[ \t]/, "", $2); print $2 }' "$CFG")
[ -n "$PER_TASK" ] || { echo "sweep_parts: $CFG has no num_samples" >&2; exit 2; }
mkdir -p "$OUTDIR"

for part in "${PARTS[@]}"; do
  L=${part%%:*} N=-1
  [ "$part" != "$L" ] && N=${part#*:}
  case "$L$N" in *[!0-9-]* | "") echo "sweep_parts: part '$part' is not L or L:N" >&2; exit 2 ;; esac
  if [ -f "$OUTDIR/$L.json" ]; then
    echo "[sweep_parts] $L: done before ($OUTDIR/$L.json)"
    continue
  fi
  echo "[sweep_parts] $L: $KVSCOPE bench --sweep $CFG --lengths $L --limit $N $*"
  "$KVSCOPE" bench --sweep "$CFG" --lengths "$L" --limit "$N" --output "$OUTDIR/$L" --out "$OUTDIR/$L.part" "$@"
  mv "$OUTDIR/$L.part" "$OUTDIR/$L.json" # only a finished part counts as done
done

python3 - "$OUTDIR" "$PER_TASK" "${PARTS[@]}" <<'EOF'
import json, sys
outdir, per_task, parts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| length | samples | limit | wall (s) | samples/s | prefill (s) | decode (s) | wall, every sample (s) |")
print("|---|---|---|---|---|---|---|---|")
tot = {"samples": 0, "wall": 0.0, "scaled": 0.0}
for p in parts:
    L = p.split(":")[0]
    d = json.load(open(f"{outdir}/{L}.json"))
    n, lim, wall = d["samples"], d["limit"], d["wall_s"]
    scale = per_task / lim if 0 < lim < per_task else 1.0  # samples = tasks x min(limit, num_samples)
    tot["samples"] += n
    tot["wall"] += wall
    tot["scaled"] += wall * scale
    print(f"| {L} | {n} | {lim if lim > 0 else 'all'} | {wall:.1f} | {d['samples_per_s']:.3f} | "
          f"{d['prefill_s']:.1f} | {d['decode_s']:.1f} | {wall * scale:.1f} |")
print(f"| total | {tot['samples']} | | {tot['wall']:.1f} | {tot['samples'] / tot['wall']:.3f} | | | "
      f"{tot['scaled']:.1f} ({tot['scaled'] / 60:.1f} min) |")
EOF
