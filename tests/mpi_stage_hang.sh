#!/usr/bin/env bash
# A pipeline stage that never answers: `mpirun -np 4 mpi_stage 2 hang 3` must end within 3 s + a margin, nonzero,
# with one error line naming stage 1 (rank 1) and the chunk it was on.
# Usage: mpi_stage_hang.sh MPI_STAGE MPIEXEC
set -u
t0=$(date +%s)
out=$(timeout -k 5 60 "$2" -np 4 --oversubscribe "$1" 2 hang 3 2>&1)
rc=$?
took=$(($(date +%s) - t0))
echo "$out" | head -20
[ "$rc" -ne 0 ] || { echo "FAIL: the job exited 0"; exit 1; }
[ "$rc" -ne 124 ] || { echo "FAIL: the job hung (killed by timeout after 60 s)"; exit 1; }
[ "$took" -le 20 ] || { echo "FAIL: the job took $took s to end"; exit 1; }
lines=$(echo "$out" | grep -c "error: pipeline stage 1 (rank 1) took nothing for 3 s during chunk")
[ "$lines" -eq 1 ] || { echo "FAIL: expected one error line naming stage 1 (rank 1), got $lines"; exit 1; }
echo "ok: ended in $took s with one error line"
