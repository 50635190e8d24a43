#!/usr/bin/env bash
# Bad input reaches the user as ONE clear error line naming the file or field, with exit status 1 — never a
# crash (signal), a hang, or silent output. Usage: cli_errors.sh KVSCOPE SMOLLM2_GGUF
# With a KVSCOPE built with -fsanitize=address, memory an error path leaks fails its case too: LeakSanitizer's
# report adds stderr lines (the prepare cases check the benchmark config is freed; the eval cases also report
# what Open MPI's initialisation keeps unless LSAN_OPTIONS suppresses libmpi).
set -u
KV=$1
SMOL=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
python3 "$(dirname "$0")/tools/make_bad_inputs.py" "$T" || { echo "cannot build bad inputs"; exit 1; }

printf 'benchmark_name: RULER\ntask_names: ["vt"]\nlength: [512]\nnonsense_key: 3\n' >"$T/bad_cfg.yaml"

pass=0
fail=0
# expect NAME PATTERN CMD... : CMD must exit 1 within 60 s with exactly one stderr line matching
# "^kvscope: error: .*PATTERN" (extended regex) and nothing on stdout.
expect() {
  local name=$1 pat=$2
  shift 2
  timeout 60 "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  local lines
  lines=$(grep -c '' "$T/err")
  if [ "$rc" -eq 1 ] && [ "$lines" -eq 1 ] && grep -Eq "^kvscope: error: .*$pat" "$T/err" && [ ! -s "$T/out" ]; then
    pass=$((pass + 1))
    echo "ok   $name: $(cat "$T/err")"
  else
    fail=$((fail + 1))
    echo "FAIL $name: exit $rc, $lines stderr line(s), wanted /$pat/:"
    sed 's/^/     | /' "$T/err" | head -20
    head -c 300 "$T/out" | sed 's/^/     out| /'
  fi
}

expect missing_config "config\.json" "$KV" info --model_path "$T/no_config"
expect truncated_header "model\.safetensors.*(header|truncated)" "$KV" info --model_path "$T/truncated_header"
expect shape_mismatch "q_proj.*shape|shape.*q_proj" "$KV" generate --model_path "$T/shape_mismatch" --prompt hi
expect unsupported_arch "gpt_neox" "$KV" info --model_path "$T/bad_arch"
expect unknown_quant "unknown_quant\.gguf.*(type|quant)" "$KV" generate --model_path "$T/unknown_quant.gguf" --prompt hi
expect unknown_tokenizer_model "wordpiece_tokenizer\.json.*WordPiece" "$KV" tokenize --tokenizer "$T/wordpiece_tokenizer.json" --input "$T/text.jsonl"
# SmolLM2 allows 8192 positions; 9000 repetitions of " word" are longer.
expect prompt_too_long "8192" "$KV" generate --model_path "$SMOL" --prompt "$(printf 'word %.0s' $(seq 1 9000))"
expect missing_model "does-not-exist" "$KV" generate --model_path "$T/does-not-exist" --prompt hi
# A FIFO is stat-ed, never opened (opening it would wait for a writer): the 60 s limit catches a hang.
mkfifo "$T/fifo"
expect fifo_model "fifo: is a FIFO, not a model directory or \.gguf file" "$KV" generate --model_path "$T/fifo" --prompt hi
expect fifo_info "fifo: is a FIFO, not a model directory or \.gguf file" "$KV" info --model_path "$T/fifo"
expect fifo_tokenizer "fifo: is a FIFO, not a tokenizer" "$KV" prepare --model_path "$T/fifo" --cfg_path "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --output "$T/p.jsonl"
mkdir -p "$T/input_dir"
expect input_dir "input_dir: is a directory, expected a file" "$KV" tokenize --tokenizer "$SMOL" --input "$T/input_dir"
expect unknown_option "--frobnicate" "$KV" generate --frobnicate 1
expect bad_device "device" "$KV" generate --model_path "$SMOL" --prompt hi --device tpu

expect unknown_method "Frobnicate" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration Frobnicate
expect bad_method_opt "window_size" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration SnapKV --method_opt window_size=-3
expect unknown_method_opt "no_such_knob" "$KV" eval --model_path "$SMOL" --cfg_path "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --acceleration SnapKV --method_opt no_such_knob=1 --output "$T/ev"
expect chain_two_selections "SnapKV\+H2O: two selection methods \(SnapKV, H2O\)" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration SnapKV+H2O
expect chain_fullkv_part "FullKV\+SnapKV: FullKV keeps the whole cache" "$KV" eval --model_path "$SMOL" --cfg_path "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --acceleration none+SnapKV --output "$T/ev"
expect chain_unknown_part "in the composition SnapKV\+Frobnicate.*unknown method" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration SnapKV+Frobnicate
expect chain_empty_part "SnapKV\+: an empty part" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration SnapKV+
expect prefixed_method_opt "--method_opt snapkv.kernl_size=3: 'kernl_size' is not a SnapKV knob" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration SnapKV --method_opt snapkv.kernl_size=3
expect bad_kv_cache "budget or full" "$KV" generate --model_path "$SMOL" --prompt hi --kv_cache half
expect chunk_negative "--chunk -1: must be at least 1 \(0: the default\)" "$KV" generate --model_path "$SMOL" --prompt hi \
  --chunk -1
# XAttention (sparse prefill): its knobs, its threshold table against the model's shape, its chunk, its place.
expect xattn_stride "stride 12 must be 8 or 16" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration XAttention --method_opt stride=12
printf '0.9 0.9\n' >"$T/theta.txt"
expect xattn_table "theta\.txt:1: 2 values; the model has 9 query heads" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration XAttention --method_opt threshold="$T/theta.txt"
expect xattn_chunk "XAttention\+SnapKV: its prefill chunks hold whole blocks of 128 tokens.*--chunk must be at least 160" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration XAttention+SnapKV --chunk 150 --max_new_tokens 300
expect xattn_order "SnapKV\+XAttention: .*write XAttention\+SnapKV" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration SnapKV+XAttention
expect budget_cache_unbounded "CakeKV does not bound.*kv_rows" "$KV" generate --model_path "$SMOL" --prompt hi --acceleration CakeKV --kv_cache budget
expect bad_kv_cache_eval "budget or full" "$KV" eval --model_path "$SMOL" --cfg_path "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --kv_cache half --output "$T/ev"
expect eval_batch_range "--batch -1: must be 0 \\(as many as fit the memory\\) \\.\\. 256" "$KV" eval --model_path "$SMOL" --cfg_path "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --batch -1 --output "$T/ev"
# kvscope bench --sweep: what it needs before it builds anything.
expect sweep_tokenizer "--sweep on random weights needs --tokenizer" "$KV" bench --sweep "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml"
expect sweep_cpu_random "--device cpu: the random-weight model lives on the GPU; --model F" "$KV" bench --sweep "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --tokenizer "$SMOL" --device cpu
expect sweep_config_model "--config: the random-weight shape; --model times a real checkpoint" "$KV" bench --sweep "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --model "$SMOL" --config x.json
EV=("$KV" eval --model_path "$SMOL" --cfg_path "$(dirname "$0")/fixtures/eval/e2e_ruler.yaml" --output "$T/ev")
expect gp_num_syntax "--gp_num 2/3: use k" "${EV[@]}" --gp_num 2/3
expect gp_num_ranks "--gp_num 2: the job's 1 rank cannot form whole model instances" "${EV[@]}" --gp_num 2
expect gp_num_layers "--gp_num 64: the model has 30 layers" "${EV[@]}" --gp_num 64
expect stage_timeout "--stage_timeout 0: must be a positive" "${EV[@]}" --stage_timeout 0
expect device_words "--device gpu0: use cpu, cuda, or GPU indices" "${EV[@]}" --device gpu0
# kvscope bench --gp_num k: one instance over k ranks (mpirun -np k); what it refuses before touching a GPU.
expect bench_gp_num_share "--gp_num 1/2: kvscope bench measures one model instance" "$KV" bench --gp_num 1/2
expect bench_gp_num_ranks "--gp_num 2 with 1 rank \\(mpirun -np 1\\).*mpirun -np 2 kvscope bench --gp_num 2" "$KV" bench --gp_num 2
expect bench_gp_num_methods "--acceleration with --gp_num 2: .*one GPU" "$KV" bench --gp_num 2 --acceleration SnapKV
expect bench_sparse_density "--sparse_densities '0,0.5': expected .*fractions in \\(0, 1\\]" "$KV" bench --sparse_densities 0,0.5
expect bench_sparse_block "--sparse_block 32: must be 64 or 128" "$KV" bench --sparse_densities 0.1 --sparse_block 32
expect bench_sparse_methods "--sparse_densities times the attention kernel alone" "$KV" bench --sparse_densities 0.1 --acceleration SnapKV
expect bench_cpu_no_model "--device cpu: kvscope bench needs --model" "$KV" bench --device cpu
expect bench_cpu_weights "--cpu_weights q4: must be packed" "$KV" bench --device cpu --model "$SMOL" --cpu_weights q4
expect generate_cpu_weights "--cpu_weights fp16: must be packed" "$KV" generate --model_path "$SMOL" --prompt hi --cpu_weights fp16
# Without a GPU: a build without the cuda backend says so, a build with it says there is no GPU.
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  expect bench_no_gpu "this kvscope build has no CUDA backend|measures the GPU, but this machine has no usable GPU" "$KV" bench --lengths 4096
fi
expect bad_cfg_key "nonsense_key" "$KV" prepare --model_path "$SMOL" --cfg_path "$T/bad_cfg.yaml" --output "$T/p.jsonl"
printf 'benchmark_name: RULER\ntask_names: [vt\n' >"$T/broken_cfg.yaml"
expect broken_cfg_yaml "broken_cfg\.yaml.*YAML syntax" "$KV" prepare --model_path "$SMOL" --cfg_path "$T/broken_cfg.yaml" --output "$T/p.jsonl"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
