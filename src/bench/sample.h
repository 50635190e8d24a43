/* sample.h — one benchmark sample (what the model is asked) and one result (what it answered and how it went).
 *
 * Samples are produced by the benchmark modules (RULER generator, LongBench reader) on rank 0, identified by
 * (task, length, index), and are deterministic from (run seed, task, length, index). Results are filled by the
 * engine side and written by the results module (HDF5, one row per finished sample; results/results.h).
 *
 *     ks_sample s = {0};  ... filled by a generator ...;  ks_sample_free(&s);
 *     ks_result r = {0};  ... filled after generation ...; ks_result_free(&r);
 */
#ifndef KS_SAMPLE_H
#define KS_SAMPLE_H

#include <stdint.h>

#define KS_TASK_MAX 48   /* longest task name + NUL ("niah_multikey_3", "passage_retrieval_zh", ...) */
#define KS_METRIC_MAX 32 /* "string_match_all", "qa_f1_score", "rouge_zh_score", ... */

typedef struct ks_sample {
    char task[KS_TASK_MAX];     /* task name, e.g. "niah_single_1", "hotpotqa" */
    int length;                 /* nominal length bucket in tokens (RULER target length; LongBench: 0) */
    int index;                  /* index within (task, length) */
    uint64_t seed;              /* per-sample seed derived from (run seed, task, length, index) */
    char *prompt;               /* owned UTF-8: the full user text before any chat template */
    char *answer_prefix;        /* owned UTF-8 text the model's answer starts with, appended after the chat
                                   template's assistant header (RULER); "" or NULL when none */
    int prompt_tokens;          /* tokens of prompt + answer_prefix under the model tokenizer without specials
                                   (the count RULER sizes by) */
    char **answers;             /* (n_answers) owned reference answers */
    int n_answers;
    char **all_classes;         /* (n_classes) owned, LongBench classification tasks; else NULL */
    int n_classes;
    int max_new_tokens;         /* generation budget for this task */
    int use_template;           /* 0: feed the prompt raw (no_template_tasks); 1: apply the chat template */
    int stop_on_newline;        /* LongBench tasks that stop at "\n" (samsum etc.) */
    char metric[KS_METRIC_MAX]; /* scoring function name */
} ks_sample;

/* Per-layer statistics of one sample (× KV head where it matters): the result file's /layers rows. */
typedef struct ks_layer_stat {
    int layer;
    int kv_head;                /* -1 = aggregated over heads */
    int budget;                 /* tokens the method allowed */
    int kept;                   /* tokens kept after compression */
    float attn_mass_kept;       /* fraction of observation-window attention mass on kept tokens */
    float key_norm_mean, key_norm_max;
    float sparse_density;       /* sparse-prefill methods: fraction of blocks computed; else 1 */
    float quant_error;          /* KV quantization: relative error; else 0 */
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

void ks_sample_free(ks_sample *s);
void ks_result_free(ks_result *r);

#endif
