#!/usr/bin/env bash
# An error on any rank of `mpirun -np N kvscope eval` ends the whole job within seconds, with one error line
# from the rank that hit it ("kvscope rK: error: ...") and a nonzero exit; a worker killed mid-run ends the job
# too, and the samples committed before it stay readable.
# Usage: mpi_errors.sh KVSCOPE MPIEXEC SMOLLM2_GGUF CONFIG NP
set -u
KV=$1
MPIEXEC=$2
SMOL=$3
CFG=$4
NP=$5
LAST=$((NP - 1))
LIMIT_S=10
T=$(mktemp -d)
holder=""
trap '[ -n "$holder" ] && kill "$holder" 2>/dev/null; rm -rf "$T"' EXIT

MPI=("$MPIEXEC" --oversubscribe)
EVAL=(eval --cfg_path "$CFG" --limit 1 --max_new_tokens 2 --threads 1 --device cpu)
RESULT=SmolLM2-135M-Instruct.Q4_1_RULER_FullKV.h5

ms() { echo $(($(date +%s%N) / 1000000)); }
secs_since() { local d=$(($(ms) - $1)); printf '%d.%03d' $((d / 1000)) $((d % 1000)); }

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {
  fail=$((fail + 1))
  echo "FAIL $1"
  sed 's/^/     | /' "$T/log" | head -30
}

# expect NAME RANK PATTERN CMD...: CMD exits nonzero within LIMIT_S seconds, and its output holds exactly one
# kvscope error line, from rank RANK, matching PATTERN (extended regex).
expect() {
  local name=$1 rank=$2 pat=$3
  shift 3
  local t0 rc lines took
  t0=$(ms)
  timeout $((LIMIT_S + 20)) "$@" >"$T/log" 2>&1
  rc=$?
  took=$(secs_since "$t0")
  lines=$(grep -Ec '^kvscope( r[0-9]+)?: error:' "$T/log")
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then bad "$name (np $NP): exit $rc after ${took}s"; return; fi
  if [ "$(($(ms) - t0))" -gt $((LIMIT_S * 1000)) ]; then bad "$name (np $NP): took ${took}s"; return; fi
  if [ "$lines" -ne 1 ] || ! grep -Eq "^kvscope r$rank: error: .*$pat" "$T/log"; then
    bad "$name (np $NP): wanted one line 'kvscope r$rank: error: ...$pat', got $lines error line(s)"
    return
  fi
  ok "$name (np $NP, ${took}s): $(grep -E '^kvscope r[0-9]+: error:' "$T/log")"
}

# A finished result file of this configuration (one process), to damage and to clash with.
if ! "$KV" "${EVAL[@]}" --model_path "$SMOL" --output "$T/good" >"$T/log" 2>&1; then
  bad "the reference run failed"
  exit 1
fi

expect unwritable_output 0 "--output /proc/kvscope: cannot create" \
  "${MPI[@]}" -np "$NP" "$KV" "${EVAL[@]}" --model_path "$SMOL" --output /proc/kvscope

expect other_configuration 0 "$RESULT.*max_new_tokens_cap" \
  "${MPI[@]}" -np "$NP" "$KV" "${EVAL[@]}" --model_path "$SMOL" --output "$T/good" --max_new_tokens 3

mkdir -p "$T/truncated"
head -c "$(($(stat -c %s "$T/good/$RESULT") / 2))" "$T/good/$RESULT" >"$T/truncated/$RESULT"
expect truncated_results 0 "$RESULT" \
  "${MPI[@]}" -np "$NP" "$KV" "${EVAL[@]}" --model_path "$SMOL" --output "$T/truncated"

flock --no-fork "$T/good/$RESULT.lock" sleep 60 >/dev/null 2>&1 &
holder=$!
sleep 0.3
expect lock_held 0 "another kvscope process.*is writing" \
  "${MPI[@]}" -np "$NP" "$KV" "${EVAL[@]}" --model_path "$SMOL" --output "$T/good"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=""

# MPMD: the last rank is given a truncated copy of the model.
head -c 1000000 "$SMOL" >"$T/broken.gguf"
expect model_on_one_rank "$LAST" "broken\.gguf" \
  "${MPI[@]}" -np "$LAST" "$KV" "${EVAL[@]}" --model_path "$SMOL" --output "$T/mpmd" \
  : -np 1 "$KV" "${EVAL[@]}" --model_path "$T/broken.gguf" --output "$T/mpmd"

# The last rank is killed (SIGKILL) once the first sample is committed: mpirun ends the job, names the rank
# and the signal, and the committed samples stay readable.
worker_pid() { # the pid of rank $LAST of the run writing to $T/dies
  local d
  for d in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q -- "eval .*--output $T/dies" || continue
    if tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qx "OMPI_COMM_WORLD_RANK=$LAST"; then
      echo "${d#/proc/}"
      return
    fi
  done
}
"${MPI[@]}" -np "$NP" "$KV" eval --cfg_path "$CFG" --max_new_tokens 12 --threads 1 --device cpu --model_path "$SMOL" \
  --output "$T/dies" >"$T/log" 2>&1 &
job=$!
for _ in $(seq 600); do [ -f "$T/dies/$RESULT" ] && break; sleep 0.1; done
victim=$(worker_pid)
if [ ! -f "$T/dies/$RESULT" ] || [ -z "$victim" ]; then
  kill -9 "$job" 2>/dev/null
  bad "worker_dies (np $NP): no commit or no rank $LAST to kill"
else
  t0=$(ms)
  kill -9 "$victim"
  for _ in $(seq $((LIMIT_S * 10))); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$job" 2>/dev/null; then
    kill -9 "$job"
    bad "worker_dies (np $NP): the job still ran ${LIMIT_S}s after rank $LAST was killed"
  else
    wait "$job"
    rc=$?
    took=$(secs_since "$t0")
    if [ "$rc" -eq 0 ]; then bad "worker_dies (np $NP): exit 0"
    elif ! grep -Eq "rank $LAST .*signal 9" "$T/log"; then bad "worker_dies (np $NP): no line names rank $LAST and signal 9"
    elif ! "$KV" report "$T/dies/$RESULT" >/dev/null 2>"$T/report"; then
      bad "worker_dies (np $NP): the committed samples do not read back: $(cat "$T/report")"
    else ok "worker_dies (np $NP, ended ${took}s after the kill): $(grep -E "rank $LAST .*signal 9" "$T/log")"
    fi
  fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
