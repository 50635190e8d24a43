/* runner.h — one model instance that answers benchmark samples: prompt text → chat template → ids → greedy
 * generation → decoded prediction → task score, with timings and memory. `kvscope eval` runs one per rank, and
 * `kvscope bench --sweep` one on a random-weight model.
 *
 *     ks_runner r = {0};
 *     ks_runner_params p = {.model_path = path, .device = "cpu", .max_ctx = 8192, .max_new = 128};
 *     KS_TRY(ks_runner_init(&r, &p));
 *     ks_result res = {0};
 *     KS_TRY(ks_runner_run(&r, &sample, "chatml", &res));   // template NULL = the prompt as is, with BOS
 *     ... ks_result_free(&res);
 *     ks_runner_free(&r);
 *
 * Batched (p.batch slots, engine/batch.h): samples join free slots (their prompts prefilled one at a time), each
 * step decodes one token of every joined sample, and finished ones are collected, freeing their slots:
 *
 *     int s;
 *     while ((s = ks_runner_free_slot(&r)) >= 0 && more) KS_TRY(ks_runner_join(&r, s, &samples[k++], tmpl));
 *     KS_TRY(ks_runner_step(&r));
 *     while ((s = ks_runner_finished(&r)) >= 0) KS_TRY(ks_runner_collect(&r, s, &res));  // the sample may go now
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
#include "engine/batch.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "engine/pipeline.h"
#include "methods/method.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

/* Builds slot 0's forward (ks_runner_params.build): as ks_forward_init(f, m, method, p) would, on a backend the
 * caller makes (p->batch slots). */
typedef ks_status (*ks_runner_build)(void *ctx, ks_forward *f, const ks_model *m, ks_method *method,
                                     const ks_forward_params *p);

typedef struct ks_runner_params {
    const char *model_path; /* HF directory or GGUF; NULL with `model` */
    const char *tokenizer_path; /* tokenizer.json, a directory holding one, or a GGUF; NULL: model_path */
    /* A model the caller built (borrowed; kvscope bench --sweep: a config's shape without host weights) and the
     * builder of its forward, in place of loading model_path; NULL: ks_forward_load_model + ks_forward_init. */
    const ks_model *model;
    ks_runner_build build;
    void *build_ctx;
    const char *device;     /* "cpu" or "cuda" */
    int max_ctx;            /* longest prompt + generation (capped at the model's max_position_embeddings) */
    int max_new;            /* the largest max_new_tokens of any sample */
    int chunk;              /* prefill chunk (0: 512) */
    int threads;            /* CPU threads (0: the physical cores; ks_fast_set_threads) */
    int gpu_share;          /* model instances sharing the GPU (--gp_num 1/k; 0: one) */
    int batch;              /* sequence slots: samples decoding together; 0: ks_batch_auto_slots (at most
                               KS_BATCH_AUTO_MAX), which r->batch.n then says */
    int sharing;            /* processes sharing this host's memory (0: one), for batch 0 */
    ks_method *const *methods; /* (batch, or KS_BATCH_AUTO_MAX for batch 0) the KV method instance of each slot
                                  (borrowed; they outlive the runner), or NULL = FullKV; entries may be NULL */
    int ignore_stops;       /* 1: every sample generates its max_new_tokens (random weights: stop ids mean
                               nothing) */
    ks_forward_cache cache; /* how the KV cache is sized (engine/forward.h; 0: KS_CACHE_AUTO) */
    ks_cpu_weights cpu_weights; /* how the CPU holds GGUF matrices (engine/forward.h; 0: packed) */
    /* A pipeline stage of a model instance (engine/pipeline.h): the layers [first_layer, last_layer) it holds
     * and its transport to the other stages (borrowed); batch must be 1. NULL: this runner holds every layer. */
    const ks_stage_transport *stages;
    int first_layer, last_layer;
} ks_runner_params;

/* What a slot's sample left at join for ks_runner_collect. */
typedef struct ks_runner_slot {
    const ks_sample *sample; /* borrowed until collected */
    int prompt_tokens;
} ks_runner_slot;

typedef struct ks_runner {
    ks_model own_model;   /* loaded from model_path (unused with a caller's model) */
    const ks_model *model; /* own_model or the caller's */
    ks_tokenizer *tok;    /* owned */
    ks_batch batch;       /* the slots' forwards (slot 0's owns the backend instance), sized once from max_ctx */
    ks_runner_slot *slots; /* (batch.n) owned */
    ks_stop_set stop;     /* the model's stop ids */
    int32_t newline_id;   /* last id of encode("\n"): the stop token of LongBench's one-line tasks */
    int max_new;
    ks_method *const *methods; /* borrowed, bound to the slots; NULL = FullKV */
    ks_pipeline pipe;     /* a pipeline stage's link to the others (pipe.t NULL: one stage) */
    int ignore_stops;     /* as given */
} ks_runner;

ks_status ks_runner_init(ks_runner *r, const ks_runner_params *p);
void ks_runner_free(ks_runner *r); /* accepts a zeroed or half-built struct */

/* Runs one sample alone (slot 0, no other sample joined); fills res (identity, prediction, answers, score in
 * [0, 100], token counts, timings, peak memory, KV bytes before/after the method's compression, per-layer
 * statistics). template_name NULL or "none": no chat template. */
ks_status ks_runner_run(ks_runner *r, const ks_sample *s, const char *template_name, ks_result *res);

/* The batched form of ks_runner_run. A free slot, or -1; the slots holding samples. */
int ks_runner_free_slot(const ks_runner *r);
int ks_runner_busy(const ks_runner *r);
/* Sample s (borrowed until collected) takes free slot `slot`: encoded, checked against the runner's sizes,
 * prefilled. */
ks_status ks_runner_join(ks_runner *r, int slot, const ks_sample *s, const char *template_name);
/* One decode token of every joined sample that has not finished. */
ks_status ks_runner_step(ks_runner *r);
/* A slot whose sample has finished, or -1. */
int ks_runner_finished(const ks_runner *r);
/* Slot `slot`'s finished sample's result into res (as ks_runner_run fills it); the slot is free again. */
ks_status ks_runner_collect(ks_runner *r, int slot, ks_result *res);
/* Slot `slot`'s sample is dropped unfinished (after an error); the slot is free again. */
void ks_runner_abandon(ks_runner *r, int slot);

/* Pipeline stages > 0: serve stage 0's samples until it calls ks_runner_end (engine/pipeline.h). */
ks_status ks_runner_follow(ks_runner *r);
/* Pipeline stage 0, after its last sample: the other stages' ks_runner_follow returns. */
ks_status ks_runner_end(ks_runner *r);

#endif
