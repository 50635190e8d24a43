/* pipeline.h — one model instance spread over pipeline stages: each stage a forward over its own layer range
 * (engine/forward.h), the residual rows of a chunk or decode step passed from stage to stage, the greedy token
 * back from the last stage to stage 0, which drives. The transport is a small table the caller provides
 * (mpi/stage_link.h over MPI; one stage needs none).
 *
 *     // every stage: its model range [first, last) loaded, its forward and method built
 *     ks_pipeline p;
 *     KS_TRY(ks_pipeline_init(&p, &fwd, &transport));
 *     // stage 0, per sample:
 *     KS_TRY(ks_pipeline_prefill(&p, ids, n, &next));      // every stage runs its layers on each chunk
 *     KS_TRY(ks_pipeline_decode(&p, next, &next));  ...
 *     KS_TRY(ks_pipeline_gather(&p));                       // p.stats, p.kv: every stage's, after the sample
 *     KS_TRY(ks_pipeline_end(&p));                          // at the end of the job: the others return
 *     // stages > 0:
 *     KS_TRY(ks_pipeline_follow(&p));                       // serves stage 0's calls until its end
 *     ks_pipeline_free(&p);
 *
 * Protocol. Every message flows from stage s to stage s + 1, except the token (last stage to stage 0) and the
 * statistics (each stage to stage 0): a call's header (what to run: a prompt chunk, a decode step, a reset, the
 * statistics, the end) goes down the chain ahead of the rows it concerns, each stage forwarding it before it
 * computes. So a stage works on chunk c while the next still works on chunk c - 1: the prefill is pipelined.
 * Prompt chunks follow ks_forward_chunk_len on every stage (the same plan, from the header's lengths); each
 * stage's method compresses its own layers at the prompt's last chunk. A method whose prompt-end work reads every
 * layer (CakeKV's budget allocation: methods/method.h, finish_stage) gets the earlier stages' per-layer values
 * after the last rows, hands its own on after them, and once the last stage has seen every layer, each other
 * stage finishes its layers from the whole model's values: the kept rows of a single stage. A budget-sized cache's long prompt runs
 * layer-major within each stage (forward.h): a stage takes the whole prompt's rows, runs its layers over them
 * and hands every chunk's rows on.
 *
 * The residual rows travel through host memory (the backend's hidden_read, the transport's send and recv, the
 * next backend's hidden_write), or straight between GPUs when the transport has device entries and the backend
 * hidden_recv / hidden_send (backend.h): the move is enqueued on the backend's stream, after the layers that
 * wrote the rows and before those that read them, and the host does not wait for it. Every other message goes
 * through send and recv.
 */
#ifndef KS_PIPELINE_H
#define KS_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/forward.h"
#include "results/record.h"

/* The channels the pipeline uses; a transport delivers the messages of one (peer, channel) in order. */
enum {
    KS_PIPE_CONTROL = 1, /* a call's header, down the chain */
    KS_PIPE_HIDDEN,      /* residual rows, down the chain */
    KS_PIPE_STATS,       /* statistics and KV bytes, to stage 0 */
    KS_PIPE_TOKEN,       /* the greedy token, last stage to stage 0 */
    KS_PIPE_STATE,       /* a method's per-layer values so far, down the chain after the prompt's rows */
    KS_PIPE_FINAL,       /* the whole model's values, last stage to the others */
    KS_PIPE_CHANNELS
};

typedef struct ks_stage_transport {
    int stage, n_stages;
    void *ctx;
    ks_status (*send)(void *ctx, int to_stage, int channel, const void *buf, size_t bytes);
    ks_status (*recv)(void *ctx, int from_stage, int channel, void *buf, size_t bytes); /* exactly `bytes` */
    void (*context)(void *ctx, const char *what); /* what the instance is doing, for a transport's errors */
    /* Optional (NULL: the KS_PIPE_HIDDEN rows go through send and recv): those rows between GPUs, `bytes` at
     * device address `rows`, enqueued on `stream` (the backend's cudaStream_t) in its order, without waiting.
     * The pipeline uses them where the backend has hidden_recv / hidden_send; all the stages of an instance
     * must then have both (mpi/stage_nccl.h). */
    void *device_ctx;
    ks_status (*send_device)(void *device_ctx, int to_stage, const void *rows, size_t bytes, void *stream);
    ks_status (*recv_device)(void *device_ctx, int from_stage, void *rows, size_t bytes, void *stream);
} ks_stage_transport;

/* Per-sample KV bytes over every stage's layers (generate.h's three counts). */
typedef struct ks_pipeline_kv {
    int64_t full, prefill, end;
} ks_pipeline_kv;

typedef struct ks_pipeline {
    ks_forward *f;                 /* this stage's forward; borrowed */
    const ks_stage_transport *t;   /* borrowed */
    float *rows;                   /* (rows_cap, hidden) rows in and out of this stage; owned. NULL: they go
                                      between GPUs (the transport's device entries) */
    int rows_cap;                  /* the prefill chunk */
    int n_prompt;                  /* the prompt being run */
    int64_t kv_full;               /* this stage's uncompressed KV bytes of the current prompt */
    int64_t kv_prefill;            /* this stage's KV bytes after the prompt's compression */
    /* Stage 0, filled by ks_pipeline_gather: */
    ks_layer_stat *stats;          /* (KS_METHOD_MAX_LAYERS) every stage's layer statistics, in layer order; owned */
    int n_stats;                   /* rows of `stats` (0 for FullKV) */
    ks_pipeline_kv kv;             /* KV bytes over every stage */
    int in_call;                   /* stage 0: a call failed after the other stages started on it, so they wait
                                      for messages that will not come: the caller must end the job */
} ks_pipeline;

ks_status ks_pipeline_init(ks_pipeline *p, ks_forward *f, const ks_stage_transport *t);
void ks_pipeline_free(ks_pipeline *p); /* accepts a zeroed struct */

/* Stage 0: a new sequence on every stage, then its prompt (n tokens), *next = the greedy token after it. */
ks_status ks_pipeline_prefill(ks_pipeline *p, const int32_t *tokens, int n, int32_t *next);
/* Stage 0: one decode step of `token` on every stage. */
ks_status ks_pipeline_decode(ks_pipeline *p, int32_t token, int32_t *next);
/* Stage 0, after a sample's last step: every stage's per-layer statistics of its prompt into p->stats and
 * p->n_stats (in layer order), and the KV bytes summed over the stages into p->kv. */
ks_status ks_pipeline_gather(ks_pipeline *p);
/* Stage 0: the other stages leave ks_pipeline_follow. */
ks_status ks_pipeline_end(ks_pipeline *p);
/* Stages > 0: runs stage 0's calls until ks_pipeline_end (KS_OK) or an error. */
ks_status ks_pipeline_follow(ks_pipeline *p);

#endif
