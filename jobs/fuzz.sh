#!/usr/bin/env bash
# jobs/fuzz.sh — the libFuzzer targets of tests/fuzz (docs/fuzzing.md): build, seed, run.
#   bash jobs/fuzz.sh [SECONDS]        # every target for SECONDS each (default 30)
# Installs clang and libFuzzer if missing (apt-get; root or sudo, as jobs/setup.sh), configures and builds
# build-fuzz (clang, ASan + UBSan, CUDA and MPI off), writes the seed corpora with tests/fuzz/make_corpus.py and
# runs each target with -max_total_time=SECONDS. Exits 1 if any target reports a finding (crash, sanitizer
# report, leak, timeout, out-of-memory), naming the target and the input that triggers it.
# Environment: KS_FUZZ_TARGETS="gguf config ..." runs only those; KS_FUZZ_BUILD_DIR (default build-fuzz);
# KS_JOBS build parallelism (default nproc); KS_FUZZ_ARGS extra libFuzzer flags (e.g. "-jobs=4 -workers=4").
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-30}"
case "$SECONDS_EACH" in '' | *[!0-9]*) echo "usage: jobs/fuzz.sh [SECONDS]" >&2; exit 2 ;; esac
BUILD="${KS_FUZZ_BUILD_DIR:-build-fuzz}"

# ---- clang with libFuzzer (the library's other dependencies come from jobs/setup.sh) ----
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
have_libfuzzer() {
  command -v clang >/dev/null 2>&1 || return 1
  local dir
  dir=$(mktemp -d)
  printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' > "$dir/t.c"
  clang -fsanitize=fuzzer,address,undefined -fopenmp "$dir/t.c" -o "$dir/t" >/dev/null 2>&1
  local ok=$?
  rm -rf "$dir"
  return $ok
}
if ! have_libfuzzer; then
  echo "[fuzz] installing clang, libFuzzer and OpenMP for clang (apt-get)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-dev libomp-dev >/dev/null
  have_libfuzzer || { echo "[fuzz] clang cannot link -fsanitize=fuzzer programs even after installing" >&2; exit 1; }
fi

# ---- build and seeds ----
cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER=clang -DKS_FUZZ=ON -DKS_CUDA=OFF -DKS_MPI=OFF -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
mkdir -p "$BUILD/fuzz"
echo "[fuzz] building the targets in $BUILD (log: $BUILD/fuzz/build.log)"
cmake --build "$BUILD" --target fuzz -j"${KS_JOBS:-$(nproc)}" > "$BUILD/fuzz/build.log" 2>&1 ||
  { tail -40 "$BUILD/fuzz/build.log"; echo "[fuzz] the build failed" >&2; exit 1; }
SEEDS="$BUILD/fuzz/seeds"
python3 tests/fuzz/make_corpus.py "$SEEDS" >/dev/null
read -r -a TARGETS <<< "${KS_FUZZ_TARGETS:-$(tr ';' ' ' < "$BUILD/fuzz_targets.txt")}"

# The targets write their files under $TMPDIR: memory is faster than disk where it is available.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

# ---- runs ----
# corpus/<t> keeps what each run found (it grows run after run); crashes/<t> receives the inputs of findings.
failed=()
printf "[fuzz] %-18s %8s %12s %8s  %s\n" target seconds executions corpus result
for t in "${TARGETS[@]}"; do
  bin="$BUILD/tests/fuzz/fuzz_$t"
  corpus="$BUILD/fuzz/corpus/$t" crashes="$BUILD/fuzz/crashes/$t" log="$BUILD/fuzz/logs/$t.log"
  [ -x "$bin" ] || { echo "[fuzz] no such target: $t (see $BUILD/fuzz_targets.txt)" >&2; exit 2; }
  mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
  dict=()
  [ -f "$SEEDS/$t.dict" ] && dict=(-dict="$SEEDS/$t.dict")
  start=$SECONDS
  rc=0
  # -close_fd_mask=2: the targets' own stderr (rejected inputs' warnings) is dropped; libFuzzer and the
  # sanitizers still report. -timeout: one input taking 10 s is a finding; -rss_limit_mb: so is 2 GB.
  # shellcheck disable=SC2086  # KS_FUZZ_ARGS is a list of flags
  "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -close_fd_mask=2 -print_final_stats=1 \
         -artifact_prefix="$crashes/" "${dict[@]}" ${KS_FUZZ_ARGS:-} "$corpus" "$SEEDS/$t" > "$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  printf "[fuzz] %-18s %8s %12s %8s  %s\n" "$t" $((SECONDS - start)) "${execs:-?}" \
         "$(find "$corpus" -type f | wc -l)" "$([ $rc -eq 0 ] && echo clean || echo "FINDING (exit $rc)")"
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    echo "---- $t: $log (last lines)"
    grep -v '^#[0-9]' "$log" | tail -40
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "---- $t: the input is ${artifact:-not written (see the log)}; reproduce with: $bin ${artifact:-INPUT}"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "[fuzz] findings in: ${failed[*]} (docs/fuzzing.md: reproducing, minimizing, a regression test)" >&2
  exit 1
fi
echo "[fuzz] all ${#TARGETS[@]} targets clean (${SECONDS_EACH} s each)"
