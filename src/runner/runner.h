/* runner.h — one model instance that answers benchmark samples: prompt text → chat template → ids → greedy
 * generation → decoded prediction → task score, with timings and memory. `kvscope eval` runs one per rank.
 *
 *     ks_runner r = {0};
 *     ks_runner_params p = {.model_path = path, .device = "cpu", .max_ctx = 8192, .max_new = 128};
 *     KS_TRY(ks_runner_init(&r, &p));
 *     ks_result res = {0};
 *     KS_TRY(ks_runner_run(&r, &sample, "chatml", &res));   // template NULL = the prompt as is, with BOS
 *     ... ks_result_free(&res);
 *     ks_runner_free(&r);
 *
 * Prompt rule: with a template, the sample's prompt is the user turn and its
 * answer prefix follows the assistant header (RULER's placement; LOOM's variant puts the prefix inside the
 * prompt, which the benchmark module already did); BOS is added once — LOOM's double BOS (a templated string
 * that starts with BOS, encoded with add_special_tokens) is not reproduced. Without a template the text is
 * prompt + answer prefix, encoded with the tokenizer's special tokens (BOS).
 */
#ifndef KS_RUNNER_H
#define KS_RUNNER_H

#include "bench/sample.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "engine/pipeline.h"
#include "methods/method.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef struct ks_runner_params {
    const char *model_path; /* HF directory or GGUF */
    const char *device;     /* "cpu" or "cuda" */
    int max_ctx;            /* longest prompt + generation (capped at the model's max_position_embeddings) */
    int max_new;            /* the largest max_new_tokens of any sample */
    int chunk;              /* prefill chunk (0: 512) */
    int threads;            /* CPU threads (0: the physical cores; ks_fast_set_threads) */
    int gpu_share;          /* model instances sharing the GPU (--gp_num 1/k; 0: one) */
    ks_method *method;      /* the KV method (borrowed; outlives the runner), or NULL = FullKV */
    ks_forward_cache cache; /* how the KV cache is sized (engine/forward.h; 0: KS_CACHE_AUTO) */
    ks_cpu_weights cpu_weights; /* how the CPU holds GGUF matrices (engine/forward.h; 0: packed) */
    /* A pipeline stage of a model instance (engine/pipeline.h): the layers [first_layer, last_layer) it holds
     * and its transport to the other stages (borrowed). NULL: this runner holds every layer. */
    const ks_stage_transport *stages;
    int first_layer, last_layer;
} ks_runner_params;

typedef struct ks_runner {
    ks_model model;       /* owned */
    ks_tokenizer *tok;    /* owned */
    ks_forward fwd;       /* owned; sized once from max_ctx */
    ks_stop_set stop;     /* the model's stop ids */
    int32_t newline_id;   /* last id of encode("\n"): the stop token of LongBench's one-line tasks */
    int32_t *out;         /* (max_new) generated ids, allocated once */
    int max_new;
    ks_method *method;    /* borrowed, bound to fwd; NULL = FullKV */
    ks_pipeline pipe;     /* a pipeline stage's link to the others (pipe.t NULL: one stage) */
} ks_runner;

ks_status ks_runner_init(ks_runner *r, const ks_runner_params *p);
void ks_runner_free(ks_runner *r); /* accepts a zeroed or half-built struct */

/* Runs one sample; fills res (identity, prediction, answers, score in [0, 100], token counts, timings, peak
 * memory, KV bytes before/after the method's compression, per-layer statistics). template_name NULL or "none": no
 * chat template. */
ks_status ks_runner_run(ks_runner *r, const ks_sample *s, const char *template_name, ks_result *res);

/* Pipeline stages > 0: serve stage 0's samples until it calls ks_runner_end (engine/pipeline.h). */
ks_status ks_runner_follow(ks_runner *r);
/* Pipeline stage 0, after its last sample: the other stages' ks_runner_follow returns. */
ks_status ks_runner_end(ks_runner *r);

#endif
