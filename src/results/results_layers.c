/* results_layers.c — the /layers columns: one row per sample × layer (× KV head), keyed by the sample. */
#include <stdlib.h>
#include <string.h>

#include "results/results_impl.h"

#define COL(name, type, field, desc) {name, type, offsetof(ks_layer_row, field), desc, 0}
#define COL_ADDED(name, type, field, desc) {name, type, offsetof(ks_layer_row, field), desc, 1}

static const ks_column layers_cols[] = {
    COL("sample", KS_COL_I64, sample, "row number of the sample in /samples"),
    COL("task", KS_COL_TASK, task, "the sample's task"),
    COL("length", KS_COL_I32, length, "the sample's nominal length"),
    COL("index", KS_COL_I32, index, "the sample's index within (task, length)"),
    COL("layer", KS_COL_I32, stat.layer, "layer number"),
    COL("kv_head", KS_COL_I32, stat.kv_head, "KV head (-1 = aggregated over heads)"),
    COL("budget", KS_COL_I32, stat.budget, "tokens the method allowed"),
    COL("kept", KS_COL_I32, stat.kept, "tokens kept after compression"),
    COL("attn_mass_kept", KS_COL_F32, stat.attn_mass_kept,
        "fraction of observation-window attention mass on kept tokens"),
    COL("key_norm_mean", KS_COL_F32, stat.key_norm_mean, "mean L2 norm of the keys"),
    COL("key_norm_max", KS_COL_F32, stat.key_norm_max, "largest L2 norm of the keys"),
    COL("sparse_density", KS_COL_F32, stat.sparse_density, "sparse prefill: fraction of blocks computed (else 1)"),
    COL("quant_error", KS_COL_F32, stat.quant_error,
        "KV quantization: relative reconstruction error of the keys quantized at the prompt's end (else 0)"),
    COL_ADDED("quant_error_v", KS_COL_F32, stat.quant_error_v,
        "KV quantization: relative reconstruction error of the values quantized at the prompt's end (else 0)"),
    COL_ADDED("residual_k", KS_COL_I32, stat.residual_k,
        "KV quantization: full-precision key tokens per KV head after the prompt (else 0)"),
    COL_ADDED("residual_v", KS_COL_I32, stat.residual_v,
        "KV quantization: full-precision value tokens per KV head after the prompt (else 0)"),
    COL_ADDED("kv_bytes", KS_COL_I64, stat.kv_bytes, "KV quantization: bytes the layer holds after the prompt (else 0)"),
    COL_ADDED("merges_prompt", KS_COL_I32, stat.merges_prompt,
              "value merging (CaM): rows merged into later rows at the prompt's end, over KV heads (else 0)"),
    COL_ADDED("merges_decode", KS_COL_I32, stat.merges_decode, "value merging: rows merged while decoding (else 0)"),
    COL_ADDED("merge_prob_mean", KS_COL_F32, stat.merge_prob_mean,
              "value merging: mean merge probability of the rows that left the cache (else 0)"),
    COL_ADDED("merge_dv_rel", KS_COL_F32, stat.merge_dv_rel,
              "value merging: ||dV|| / ||V|| of the layer's values at the prompt's end (else 0)"),
    COL_ADDED("channels_kept", KS_COL_F32, stat.channels_kept,
              "key channel pruning (ThinK): key channels stored per KV head in its pruned keys, mean over KV heads "
              "(else 0)"),
    COL_ADDED("sparse_blocks", KS_COL_I64, stat.sparse_blocks,
              "sparse prefill: key blocks computed over the prompt's (query head, query block) rows (else 0)"),
    COL_ADDED("sparse_coverage", KS_COL_F32, stat.sparse_coverage,
              "sparse prefill: estimated attention mass on the computed blocks as a fraction of each row's, mean "
              "over the rows (else 0)"),
    COL_ADDED("sparse_query_aware", KS_COL_F32, stat.sparse_query_aware,
              "FlexPrefill: fraction of the query heads choosing query-aware blocks (else 0)"),
    COL_ADDED("sparse_djs", KS_COL_F32, stat.sparse_djs,
              "FlexPrefill: square-root JS divergence of the block estimate from the last-block scores, mean over "
              "query heads (else 0)"),
};

const ks_table_spec ks_layers_spec = {
    .group = "layers",
    .cols = layers_cols,
    .n_cols = (int)(sizeof layers_cols / sizeof layers_cols[0]),
    .row_size = sizeof(ks_layer_row),
    .chunk = 4096,
};

ks_status ks_layer_rows_build(const ks_result *r, int64_t sample, ks_scratch *rows) {
    KS_TRY(ks_scratch_reserve(rows, (size_t)r->n_layers * sizeof(ks_layer_row)));
    ks_layer_row *lr = rows->p;
    for (int i = 0; i < r->n_layers; i++) {
        memset(&lr[i], 0, sizeof lr[i]);
        lr[i].sample = sample;
        memcpy(lr[i].task, r->task, KS_TASK_MAX);
        lr[i].length = r->length;
        lr[i].index = r->index;
        lr[i].stat = r->layers[i];
    }
    return KS_OK;
}

ks_status ks_layer_rows_attach(ks_result *rows, int n_rows, const ks_layer_row *lr, int64_t n_lr,
                               const char *path) {
    for (int64_t i = 0; i < n_lr; i++)
        if (lr[i].sample < 0 || lr[i].sample >= n_rows)
            return ks_fail(KS_ERR_FORMAT, "%s: /layers row %lld refers to sample %lld, but /samples has %d rows",
                           path, (long long)i, (long long)lr[i].sample, n_rows);
    for (int64_t i = 0; i < n_lr; i++) rows[lr[i].sample].n_layers++;
    for (int s = 0; s < n_rows; s++) {
        if (!rows[s].n_layers) continue;
        rows[s].layers = ks_malloc((size_t)rows[s].n_layers * sizeof(ks_layer_stat), "layer statistics");
        if (!rows[s].layers) return KS_ERR_NOMEM;
        rows[s].n_layers = 0; /* refilled below, in file order */
    }
    for (int64_t i = 0; i < n_lr; i++) {
        ks_result *r = &rows[lr[i].sample];
        r->layers[r->n_layers++] = lr[i].stat;
    }
    return KS_OK;
}
