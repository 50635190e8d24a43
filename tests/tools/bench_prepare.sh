#!/usr/bin/env bash
# Times `kvscope prepare` over LOOM-Scope's full RULER setting (configs/benchmarks/RULER.yaml: 12 tasks x 6
# lengths x 10 samples = 720 samples) with the tokenizer of $KS_TOKENIZER (a model folder or GGUF: the
# timing target is for Llama-3.1's; default the SmolLM2 GGUF of jobs/setup.sh) and the RULER data of data/
# ($KS_DATA_DIR overrides).
#
#   bash tests/tools/bench_prepare.sh [build dir] [squad json] [hotpotqa json]
#
# qa_1/qa_2 need SQuAD v2.0 dev and HotpotQA dev distractor files; when they are not given, stand-ins of the same
# shape and size are generated (tests/tools/make_qa_standins.py). Prints the wall time; the target is < 2 minutes
# on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
data=${KS_DATA_DIR:-data}
tokenizer=${KS_TOKENIZER:-$(bash jobs/smollm2_path.sh)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
squad=${2:-}
hotpot=${3:-}
if [[ -z "$squad" || -z "$hotpot" ]]; then
  python3 tests/tools/make_qa_standins.py --data "$data" --out "$work"
  squad=$work/squad_standin.json
  hotpot=$work/hotpotqa_standin.json
fi
grep -v -E '^(squad_path|hotpotqa_path):' configs/benchmarks/RULER.yaml > "$work/RULER.yaml"
printf 'squad_path: %s\nhotpotqa_path: %s\ndata_dir: %s\n' "$squad" "$hotpot" "$data" >> "$work/RULER.yaml"
start=$(date +%s.%N)
"$build/kvscope" prepare --cfg_path "$work/RULER.yaml" --model_path "$tokenizer" --output "$work/ruler.jsonl"
end=$(date +%s.%N)
echo "bench_prepare: $(wc -l < "$work/ruler.jsonl") samples in $(echo "$end - $start" | bc) s"
