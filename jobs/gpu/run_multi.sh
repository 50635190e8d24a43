#!/usr/bin/env bash
# jobs/gpu/run_multi.sh — on one machine with several GPUs, after jobs/gpu/run_gpu.sh built $KS_BUILD_DIR: the
# figures of docs/performance.md's "One instance over several GPUs", in one go.
#
#   bash jobs/gpu/run_multi.sh [--skip-tests] [--skip-70b] [--skip-sweep] [--skip-fault]
#
#   1. correctness  ctest -L gpu -R 'stage': the NCCL transport, the SmolLM2 pipeline through NCCL against MPI,
#                   `kvscope eval` over 2 (and 4) GPUs equal to one GPU (tests/gpu_eval_stages.sh)
#   2. pipeline     `kvscope bench --gp_num k` on the Llama-3.1-8B shape at 32K and 128K for k = 1, 2 and the
#                   GPU count: prefill s and speed-up over k = 1, idle fraction, decode ms/token, bytes sent per
#                   token, memory per rank
#   3. 70B          the Llama-3.1-70B shape at 32K and 128K on the fewest of 2, 4, 8 GPUs it fits
#   4. throughput   `kvscope bench --sweep` of the RULER no-data config (4K and 8K, 200 samples; random 8B shape,
#                   the Llama-3.1 tokenizer) as one instance and as one instance per GPU (--gp_num 1): samples/s
#                   and the ratio
#   5. fault        a two-stage SmolLM2 eval with rank 1 killed mid-run: the job's exit, its error line and the
#                   seconds it took; then the same command resumes, and its samples and per-layer rows equal a
#                   clean run's (tests/tools/same_results.py)
#
# Environment: KS_BUILD_DIR (default build-gpu), OUT (default $KS_BUILD_DIR-multi: JSON, logs), KS_SMOLLM2_GGUF
# (else jobs/smollm2_path.sh; without it steps 1's SmolLM2 tests and 5 are left out, and said), MPIEXEC (mpirun).
# Prints the tables last.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${KS_BUILD_DIR:-build-gpu}"
OUT="${OUT:-$BUILD-multi}"
MPIEXEC="${MPIEXEC:-mpirun}"
TESTS=1 B70=1 SWEEP=1 FAULT=1
for a in "$@"; do
  case "$a" in
    --skip-tests) TESTS=0 ;;
    --skip-70b) B70=0 ;;
    --skip-sweep) SWEEP=0 ;;
    --skip-fault) FAULT=0 ;;
    *) echo "run_multi.sh: unknown option '$a' (use --skip-tests, --skip-70b, --skip-sweep, --skip-fault)"; exit 2 ;;
  esac
done
say() { echo "[run_multi $(date +%T)] $*"; }
KV="$BUILD/kvscope"
[ -x "$KV" ] || { echo "run_multi.sh: $KV is not built (bash jobs/gpu/run_gpu.sh builds it)"; exit 2; }
NGPU=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU')
[ "$NGPU" -ge 2 ] || { echo "run_multi.sh: this machine has $NGPU GPU(s); the runs need 2 or more"; exit 2; }
mkdir -p "$OUT"
source jobs/gpu/env.sh > /dev/null
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
GGUF=${KS_SMOLLM2_GGUF:-$(bash jobs/smollm2_path.sh 2> /dev/null)}
[ -f "$GGUF" ] || GGUF=""
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | sed 's/^/  /'
say "$NGPU GPUs; commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
STATUS=0

# ---- 1. correctness ------------------------------------------------------------------------------------------
if [ "$TESTS" = 1 ]; then
  say "ctest -L gpu -R stage"
  [ -n "$GGUF" ] && export KS_SMOLLM2_GGUF="$GGUF" || say "no SmolLM2 GGUF: its stage tests are skipped"
  ctest --test-dir "$BUILD" -L gpu -R stage --output-on-failure > "$OUT/tests.log" 2>&1 || STATUS=1
  grep -E "Test +#|tests passed|tests failed" "$OUT/tests.log" | sed 's/^/  /'
fi

# ---- 2. the 8B pipeline at k = 1, 2, NGPU ------------------------------------------------------------------
KS=(1 2)
[ "$NGPU" -gt 2 ] && KS+=("$NGPU")
for k in "${KS[@]}"; do
  say "8B shape, --gp_num $k"
  timeout 1200 "$MPIEXEC" -np "$k" "$KV" bench --gp_num "$k" --lengths 32768,131072 --repeat 1 --decode_steps 16 \
    --attention_lengths 4096 --out "$OUT/b8_k$k.json" > "$OUT/b8_k$k.log" 2>&1 || { tail -5 "$OUT/b8_k$k.log"; STATUS=1; }
done

# ---- 3. the 70B shape ----------------------------------------------------------------------------------------
if [ "$B70" = 1 ]; then
  for k in 2 4 8; do
    [ "$k" -le "$NGPU" ] || break
    say "70B shape, --gp_num $k"
    if timeout 1800 "$MPIEXEC" -np "$k" "$KV" bench --config configs/models/llama-3.1-70b.json --gp_num "$k" \
      --lengths 32768,131072 --repeat 1 --decode_steps 8 --attention_lengths 4096 --out "$OUT/b70_k$k.json" \
      > "$OUT/b70_k$k.log" 2>&1; then
      break
    fi
    # the bench refuses a stage whose layers do not fit its GPU before allocating, naming the stages it needs
    grep -q "use more stages" "$OUT/b70_k$k.log" || { tail -5 "$OUT/b70_k$k.log"; STATUS=1; break; }
    say "  does not fit $k GPUs: $(grep -m1 'use more stages' "$OUT/b70_k$k.log")"
  done
fi

# ---- 4. data-parallel throughput ---------------------------------------------------------------------------
if [ "$SWEEP" = 1 ]; then
  for np in 1 "$NGPU"; do
    say "sweep, $np instance(s)"
    rm -rf "$OUT/sweep_np$np"
    timeout 1800 "$MPIEXEC" -np "$np" "$KV" bench --sweep configs/benchmarks/RULER_nodata_4k8k.yaml \
      --tokenizer tests/fixtures/tokenizer/llama3_1/tokenizer.json --limit -1 --device cuda \
      --output "$OUT/sweep_np$np" --out "$OUT/sweep_np$np.json" > "$OUT/sweep_np$np.log" 2>&1 ||
      { tail -5 "$OUT/sweep_np$np.log"; STATUS=1; }
  done
fi

# ---- 5. a rank killed mid-run --------------------------------------------------------------------------------
if [ "$FAULT" = 1 ] && [ -n "$GGUF" ]; then
  CFG=configs/benchmarks/RULER_nodata_4k8k.yaml # 60 samples: the kill lands mid-run
  ev() { "$MPIEXEC" -np "$1" "$KV" eval --model_path "$GGUF" --cfg_path "$CFG" --limit 3 --max_new_tokens 16 \
    --gp_num "$1" --device "${@:3}" --output "$2"; }
  rm -rf "$OUT/fault" "$OUT/clean"
  say "fault: a clean one-GPU run"
  ev 1 "$OUT/clean" 0 > "$OUT/clean.log" 2>&1 || { tail -5 "$OUT/clean.log"; STATUS=1; }
  say "fault: two stages, rank 1 killed once a result is written"
  ev 2 "$OUT/fault" 0 1 > "$OUT/fault.log" 2>&1 &
  job=$!
  for _ in $(seq 1 600); do # a finished sample first: the resume must keep it
    sleep 0.5
    python3 -c 'import glob, h5py, sys; f = glob.glob(sys.argv[1] + "/*.h5"); sys.exit(0 if f and len(h5py.File(f[0], "r")["samples/task"]) > 0 else 1)' \
      "$OUT/fault" 2> /dev/null && break
  done
  victim=""
  for p in $(pgrep -f "$KV eval"); do
    tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$p
  done
  t0=$(date +%s.%N)
  if [ -n "$victim" ]; then kill -9 "$victim"; fi
  timeout 300 tail --pid="$job" -f /dev/null
  wait "$job"
  rc=$?
  took=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
  FAULT_LINE="rank 1 (pid ${victim:-none found}) killed: the job exited $rc after $took s; $(grep -m1 -i error "$OUT/fault.log" || echo 'no error line')"
  say "fault: $FAULT_LINE"
  [ -n "$victim" ] && [ "$rc" -ne 0 ] || STATUS=1
  say "fault: the same command again (resume)"
  ev 2 "$OUT/fault" 0 1 > "$OUT/resume.log" 2>&1 || { tail -5 "$OUT/resume.log"; STATUS=1; }
  python3 tests/tools/same_results.py "rank 1 killed, then resumed" "$OUT/clean" "$OUT/fault" || STATUS=1
elif [ "$FAULT" = 1 ]; then
  say "no SmolLM2 GGUF: the fault run is left out"
fi

# ---- the tables ----------------------------------------------------------------------------------------------
echo
python3 - "$OUT" "${FAULT_LINE:-}" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
def rows(pattern, title):
    runs = sorted((json.load(open(f)) for f in glob.glob(f"{out}/{pattern}")), key=lambda j: j.get("gp_num", 1))
    if not runs:
        return
    base = {L: runs[0]["prefill_s"][L] for L in runs[0]["prefill_s"]} if runs[0].get("gp_num", 1) == 1 else {}
    print(f"{title}\n| GPUs | context | prefill (s) | vs 1 GPU | mean idle | decode (ms/token) | bytes/token | GiB per rank |")
    print("|---|---|---|---|---|---|---|---|")
    for j in runs:
        for L, p in j["prefill_s"].items():
            ratio = f"{p / base[L]:.2f}x" if L in base else "-"
            idle = j.get("mean_idle_fraction", {}).get(L)
            mem = j.get("peak_bytes_per_rank", {}).get(L) or [j.get("peak_bytes", {}).get(L, 0)]
            print(f"| {j.get('gp_num', 1)} | {int(L) // 1024}K | {p:.3f} | {ratio} | "
                  f"{'-' if idle is None else f'{idle:.2f}'} | {j['decode_ms'][L]:.2f} | "
                  f"{j.get('decode_bytes_per_token', {}).get(L, 0)} | {' / '.join(f'{m / 2**30:.1f}' for m in mem)} |")
    print()
rows("b8_k*.json", "Llama-3.1-8B shape, --gp_num k")
rows("b70_k*.json", "Llama-3.1-70B shape")
sw = {int(os.path.basename(f)[len("sweep_np"):-len(".json")]): json.load(open(f)) for f in glob.glob(f"{out}/sweep_np*.json")}
if sw:
    print("RULER no-data 4K/8K sweep, random 8B shape, one instance per GPU\n| instances | samples | wall (s) | samples/s | vs 1 |\n|---|---|---|---|---|")
    one = sw[1]["samples_per_s"] if 1 in sw else None
    for n in sorted(sw):
        j = sw[n]
        ratio = f"{j['samples_per_s'] / one:.2f}x" if one else "-"
        print(f"| {n} | {j['samples']} | {j['wall_s']:.2f} | {j['samples_per_s']:.3f} | {ratio} |")
    print()
if sys.argv[2]:
    print("fault:", sys.argv[2])
PY
say "logs and JSON in $OUT"
exit $STATUS
