#!/usr/bin/env bash
# jobs/gpu/ab_bench.sh — a change measured against the tree without it, in one run on one GPU machine (two GPUs
# of one model can differ by several percent in decode, so only same-machine comparisons count).
# The tree (with the change) must be built in build-gpu (or KS_BUILD_DIR) first, e.g. by jobs/gpu/run_gpu.sh or
# `jobs/gpu/run_methods.sh tests`. This copies that build directory, reverses PATCH in the source, rebuilds
# kvscope in the copy, puts the source back, and then runs the same `kvscope bench` on both builds, alternating,
# ROUNDS times (default 3): the spread between rounds says how much of a difference is noise.
#
#   git diff BASE HEAD -- kernels src > change.patch     (or any patch the tree already contains)
#   bash jobs/gpu/ab_bench.sh change.patch [ROUNDS] [kvscope bench args...]
#           default bench args: --lengths 2048,4096,32768 --repeat 1 --decode_steps 48 --attention_lengths 2048
#
# Prints one line per build and round: context and decode ms/token (bench tables without --acceleration), or
# the method rows (with --acceleration). Exit status: 2 for bad usage, 1 when a build fails.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] && [ -f "$1" ] || {
  echo "usage: jobs/gpu/ab_bench.sh PATCH [ROUNDS] [kvscope bench args...] (PATCH: a change the tree contains)" >&2
  exit 2
}
PATCH=$(realpath "$1")
shift
ROUNDS=3
if [ $# -ge 1 ] && [[ "$1" =~ ^[0-9]+$ ]]; then ROUNDS=$1; shift; fi
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--lengths 2048,4096,32768 --repeat 1 --decode_steps 48 --attention_lengths 2048)
BUILD="${KS_BUILD_DIR:-build-gpu}"
BASE="$BUILD-ab-base"
[ -x "$BUILD/kvscope" ] || { echo "ab_bench: $BUILD/kvscope is not built (run jobs/gpu/run_gpu.sh first)" >&2; exit 1; }
patch -R -p1 --dry-run -s < "$PATCH" > /dev/null ||
  { echo "ab_bench: $PATCH does not reverse cleanly: is the change in this tree?" >&2; exit 2; }
source jobs/gpu/env.sh > /dev/null 2>&1
export LD_LIBRARY_PATH="$RUNTIME_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# the base build: a copy of the build directory, rebuilt on the source without the change (then restored)
rm -rf "$BASE" && cp -a "$BUILD" "$BASE"
patch -R -p1 -s < "$PATCH"
cmake --build "$BASE" -j"$(nproc)" --target kvscope > "$BASE.log" 2>&1
rc=$?
patch -p1 -s < "$PATCH"
[ $rc = 0 ] || { tail -20 "$BASE.log"; echo "ab_bench: the base build failed ($BASE.log)" >&2; exit 1; }

# one output line per bench run: "context decode ms/tok" pairs, or one row per method (--acceleration tables)
ROWS='/^\| [0-9]+K/ && NF >= 8 && $3 ~ /peak/ { next }
  /^\| [0-9]+K/ && NF >= 8 && $3 !~ /^ *[0-9.]+ *$/ { print "round " r "  " l " |" $2 "|" $3 "|" $5 "|" $9; next }
  /^\| [0-9]+K/ && NF >= 8 { line = line sprintf("%s %s ms/tok  ", $2, $5) }
  END { if (line != "") print "round " r "  " l "   " line }'
echo "ab_bench: $(basename "$PATCH"), $ROUNDS rounds of: kvscope bench ${ARGS[*]}"
for r in $(seq 1 "$ROUNDS"); do
  for b in "$BASE" "$BUILD"; do
    label=$([ "$b" = "$BUILD" ] && echo "with change" || echo "without    ")
    "$b/kvscope" bench "${ARGS[@]}" 2> /dev/null | awk -F'|' -v l="$label" -v r="$r" "$ROWS"
  done
done
