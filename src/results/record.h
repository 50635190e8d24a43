/* record.h — what one finished sample leaves behind: the result row (what the model answered, its score, the
 * timings and memory) and the per-layer statistics a KV method reports. The runner fills them, mpi/wire.h
 * carries them to rank 0, and results/results.h writes them as one /samples row and its /layers rows.
 *
 *     ks_result r = {0};  ... filled after generation ...;  ks_result_free(&r);
 */
#ifndef KS_RECORD_H
#define KS_RECORD_H

#include <stdint.h>

#define KS_TASK_MAX 48 /* longest task name + NUL ("niah_multikey_3", "passage_retrieval_zh", ...) */

/* Per-layer statistics of one sample (× KV head where it matters): the result file's /layers rows. */
typedef struct ks_layer_stat {
    int layer;
    int kv_head;                /* -1 = aggregated over heads */
    int budget;                 /* tokens the method allowed */
    int kept;                   /* tokens kept after compression */
    float attn_mass_kept;       /* fraction of observation-window attention mass on kept tokens */
    float key_norm_mean, key_norm_max;
    float sparse_density;       /* sparse-prefill methods: key blocks computed over the causal blocks of the
                                   prompt's (query head, query block) rows (1 - the sparsity); else 1 */
    float quant_error;          /* KV quantization: relative reconstruction error of the keys, ||K - K^|| / ||K||
                                   over what the prompt's end quantized; else 0 */
    float quant_error_v;        /* KV quantization: the same for the values; else 0 */
    int residual_k, residual_v; /* KV quantization: full-precision key / value tokens per KV head after the prompt
                                   (the most over heads); else 0 */
    int64_t kv_bytes;           /* KV quantization: bytes the layer holds after the prompt (codes, fp16 scales
                                   and zeros, full-precision rows); else 0 */
    int merges_prompt;          /* value merging (CaM): rows merged at the prompt's end (over KV heads); else 0 */
    int merges_decode;          /* value merging: rows merged while decoding; else 0 */
    float merge_prob_mean;      /* value merging: mean merge probability of the rows that left; else 0 */
    float merge_dv_rel;         /* value merging: ||dV|| / ||V|| of the prompt end's merges; else 0 */
    float channels_kept;        /* key channel pruning (ThinK): key channels each KV head stores in its pruned
                                   keys, mean over the layer's KV heads (head_dim where nothing is pruned); else 0 */
    float sparse_coverage;      /* sparse prefill: the method's estimated attention mass on the computed blocks as
                                   a fraction of each row's, mean over those rows; else 0 */
    float sparse_query_aware;   /* FlexPrefill: fraction of the query heads that chose query-aware blocks; else 0 */
    float sparse_djs;           /* FlexPrefill: the square-root Jensen-Shannon divergence of each head's block
                                   estimate from its last-block scores, mean over the query heads; else 0 */
    int64_t sparse_blocks;      /* sparse prefill: key blocks computed over the prompt's (query head, query block)
                                   rows; else 0 */
} ks_layer_stat;

typedef struct ks_result {
    char task[KS_TASK_MAX];
    int length, index;
    uint64_t seed;
    int prompt_tokens;          /* tokens fed to the model (after template and truncation) */
    int generated_tokens;
    char *prediction;           /* owned UTF-8 decoded continuation */
    char *answers_json;         /* owned JSON array of the reference answers */
    double score;               /* task metric in [0, 100] */
    double prefill_s, decode_s;
    int64_t peak_bytes;         /* peak memory of the instance while running the sample */
    int64_t kv_bytes_before;    /* KV cache bytes after prefill without compression */
    int64_t kv_bytes_after;     /* KV cache bytes actually held after compression */
    ks_layer_stat *layers;      /* (n_layers) owned */
    int n_layers;
} ks_result;

void ks_result_free(ks_result *r);

#endif
