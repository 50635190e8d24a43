#!/usr/bin/env bash
# `cmake --install` puts the program and RULER's data where the installed program finds it on its own: an
# installed kvscope, run from an empty directory with no KS_DATA_DIR, prepares RULER samples, and reads the
# installed copy of the data, not the source tree's.
# Usage: install_data.sh BUILD_DIR SMOLLM2_GGUF
set -eu
BUILD=$1
SMOL=$2
SRC=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cmake --install "$BUILD" --prefix "$T/prefix" >/dev/null
cd "$T"
cat >cfg.yaml <<'YAML'
benchmark_name: RULER
task_names: ["niah_single_1", "fwe"]
length: [512]
num_samples: 1
YAML
# The words the installed copy alone holds prove which copy was read.
printf 'zyzzyvanoun\n' >"$T/prefix/share/kvscope/data/wordlists/nounlist.txt"
env -u KS_DATA_DIR "$T/prefix/bin/kvscope" prepare --cfg_path cfg.yaml --model_path "$SMOL" --output s.jsonl
[ "$(grep -c '' s.jsonl)" -eq 2 ] || { echo "FAIL: expected 2 samples"; exit 1; }
grep -q zyzzyvanoun s.jsonl || { echo "FAIL: the installed word list was not used"; exit 1; }
grep -q zyzzyvanoun "$SRC/data/wordlists/nounlist.txt" && { echo "FAIL: the source tree was modified"; exit 1; }
echo "ok: installed kvscope found its data in $T/prefix/share/kvscope/data"
