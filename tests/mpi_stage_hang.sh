#!/usr/bin/env bash
# A pipeline stage that never answers: `mpirun -np 4 mpi_stage 2 hang 3` must end within 3 s + a margin, with one
# error line naming stage 1 (rank 1) and the chunk it was on, and every rank of the job gone. Open MPI 4.1's
# mpirun itself sometimes hangs or crashes in its own teardown after the ranks are gone (in its PMIx server's
# finalize); the ranks are what must end, so a lingering mpirun is killed here, and said.
# Usage: mpi_stage_hang.sh MPI_STAGE MPIEXEC
set -u
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
t0=$(date +%s)
"$2" -np 4 --oversubscribe "$1" 2 hang 3 > "$LOG" 2>&1 < /dev/null &
launcher=$!
# the ranks of this job: mpi_stage processes that are not zombies ("2 hang 3" in their command line)
ranks_alive() { ps -eo stat=,args= | grep -v '^Z' | grep -F "$1 2 hang 3" | grep -v -e grep -e mpirun -e mpiexec -c; }
ended=""
for _ in $(seq 1 200); do
  sleep 0.1
  if ! kill -0 "$launcher" 2> /dev/null; then ended=launcher; break; fi
  if grep -q "error: pipeline stage" "$LOG" && [ "$(ranks_alive "$1")" -eq 0 ]; then ended=ranks; break; fi
done
took=$(($(date +%s) - t0))
head -20 "$LOG"
if [ "$ended" = launcher ]; then
  wait "$launcher"
  rc=$?
  [ "$rc" -ne 0 ] || { echo "FAIL: the job exited 0"; exit 1; }
elif [ "$ended" = ranks ]; then
  echo "note: every rank ended but mpirun lingers in its own teardown; killing it"
  kill -9 "$launcher" 2> /dev/null
else
  kill -9 "$launcher" 2> /dev/null
  echo "FAIL: the job's ranks still run after $took s"
  exit 1
fi
[ "$took" -le 20 ] || { echo "FAIL: the job took $took s to end"; exit 1; }
lines=$(grep -c "error: pipeline stage 1 (rank 1) took nothing for 3 s during chunk" "$LOG")
[ "$lines" -eq 1 ] || { echo "FAIL: expected one error line naming stage 1 (rank 1), got $lines"; exit 1; }
echo "ok: ended in $took s with one error line"
