/* results_samples.c — the /samples columns: one row per finished sample, taken from ks_result fields. */
#include "results/results_impl.h"

#define COL(name, type, field, desc) {name, type, offsetof(ks_result, field), desc, 0}

static const ks_column samples_cols[] = {
    COL("task", KS_COL_TASK, task, "task name"),
    COL("length", KS_COL_I32, length, "nominal length bucket in tokens (0 = none, e.g. LongBench)"),
    COL("index", KS_COL_I32, index, "sample index within (task, length)"),
    COL("seed", KS_COL_U64, seed, "per-sample seed derived from (run seed, task, length, index)"),
    COL("prompt_tokens", KS_COL_I32, prompt_tokens, "tokens fed to the model (after template and truncation)"),
    COL("generated_tokens", KS_COL_I32, generated_tokens, "tokens generated"),
    COL("prediction", KS_COL_TEXT, prediction, "decoded continuation (UTF-8)"),
    COL("answers", KS_COL_TEXT, answers_json, "reference answers, a JSON array of strings"),
    COL("score", KS_COL_F64, score, "task metric in [0, 100]"),
    COL("prefill_s", KS_COL_F64, prefill_s, "prefill wall time, seconds"),
    COL("decode_s", KS_COL_F64, decode_s, "decode wall time, seconds"),
    COL("peak_bytes", KS_COL_I64, peak_bytes, "peak memory of the instance while running the sample, bytes"),
    COL("kv_bytes_before", KS_COL_I64, kv_bytes_before, "KV cache bytes after prefill without compression"),
    COL("kv_bytes_after", KS_COL_I64, kv_bytes_after, "KV cache bytes held after compression"),
};

const ks_table_spec ks_samples_spec = {
    .group = "samples",
    .cols = samples_cols,
    .n_cols = (int)(sizeof samples_cols / sizeof samples_cols[0]),
    .row_size = sizeof(ks_result),
    .chunk = 256,
};
