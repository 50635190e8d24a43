/* forward.h — the transformer forward pass over a model's layer range, written once against the backend ops
 * table (backend/backend.h): chunked prefill and one-token decode steps with a KV cache, and the KV method
 * (methods/method.h) that compresses it. A forward owns its backend instance and borrows the model and method.
 *
 *     ks_method *m;                                                     // NULL: FullKV
 *     KS_TRY(ks_method_create(&m, "snapkv", NULL, opts, n_opts));
 *     ks_forward f = {0};
 *     ks_forward_params p = {.device = "cpu", .max_ctx = n_prompt + max_new, .max_new = max_new, .chunk = 512};
 *     KS_TRY(ks_forward_init(&f, &model, m, &p));                       // sizes the cache, binds the method
 *     int32_t next;
 *     KS_TRY(ks_forward_prefill(&f, prompt, n_prompt, NULL, &next));   // whole prompt, chunk by chunk
 *     while (...) KS_TRY(ks_forward_decode(&f, next, NULL, &next));     // greedy decode
 *     ks_forward_reset(&f);                                             // next sequence, same method and buffers
 *     ks_forward_free(&f);
 *     ks_method_free(m);
 *
 * The cache (ks_forward_cache): full holds max_ctx rows per (layer, KV head). Budget-sized, for a method that
 * bounds the rows every layer keeps after the prompt (ks_method_bounds_rows), holds the most any prompt of up to
 * max_ctx tokens keeps (ks_method_kv_rows) plus max_new per layer, and a few prefill slots of max_ctx rows that
 * the layers take in turn while their prompt is in (kvcache.h): its memory scales with the budget.
 *
 * Batched decode (backend.h "Sequence slots"): p->batch > 1 builds a backend instance with that many slots; f is
 * the sequence of slot 0 and ks_forward_init_slot makes another slot's forward over the same instance, with its
 * own method instance. Each forward prefills alone; ks_forward_decode_batch runs one token of several at once,
 * each row getting the numbers its forward's ks_forward_decode would give:
 *
 *     ks_forward f[3];  ks_method *m[3];                               // one method instance per sequence
 *     KS_TRY(ks_forward_init(&f[0], &model, m[0], &p));                // p.batch = 3
 *     for (int s = 1; s < 3; s++) KS_TRY(ks_forward_init_slot(&f[s], &f[0], s, m[s]));
 *     ... ks_forward_prefill(&f[s], ...) for each ...
 *     ks_forward *rows[3] = {&f[0], &f[1], &f[2]};
 *     KS_TRY(ks_forward_decode_batch(rows, 3, tokens, next));          // free the slot forwards before f[0]
 *
 * Sparse prefill (a method with a PREFILL part: XAttention): before each layer's attention on a prompt chunk the
 * method returns the chunk's block list (ks_method_prefill_blocks, into f->blocks), or NULL for dense attention.
 *
 * KV compression: every layer's attention on a prompt chunk and on a decode step is followed by the method's
 * hook; on the chunk flagged prompt_end the method compresses each layer (its prefill output already used the
 * full cache), so the prompt's last chunk must hold the method's observation window: ks_forward_chunk_len plans
 * chunks so (ks_forward_prefill uses it; pipeline callers should too). Once the method has dropped rows, the
 * sequence cannot take more prefill (a new prompt_end would plan again over all tokens so far otherwise).
 *
 * Prefill order. ks_forward_prefill runs a budget-sized cache's prompt layer-major: every chunk through layer
 * 0, then through layer 1, ..., with the whole prompt's residual stream on the backend, so that each layer is
 * compressed before the next one starts and only a few layers ever hold the full prompt. A full cache's prompt
 * runs chunk-major (each chunk through every layer): there every layer holds the whole prompt anyway, so
 * compressing layer by layer frees nothing, and the backend's residual stream keeps its max_chunk rows instead
 * of max_ctx (128K rows of a 4096-wide fp32 stream are 2 GiB of GPU memory). Both orders run the same ops on the
 * same rows: the same tokens, kept rows and statistics.
 *
 * A pipeline stage holding layers [first, last) uses ks_forward_chunk/ks_forward_step with a ks_forward_io:
 * the first stage takes token ids, later stages take the previous stage's hidden states; the last stage
 * produces logits (final norm + LM head on the last row only) and the greedy next token, the others hand
 * their hidden states on. Positions are implicit: the next token processed sits at position f->n_past. With a
 * budget-sized cache ks_forward_chunk serves only prompts that fit the rows each layer keeps.
 */
#ifndef KS_FORWARD_H
#define KS_FORWARD_H

#include <stdint.h>

#include "backend/backend.h"
#include "methods/method.h"
#include "model/model.h"

/* How ks_forward_init sizes the KV cache. */
typedef enum ks_forward_cache {
    KS_CACHE_AUTO,   /* budget-sized when the method bounds every layer's rows and that cache (its own rows plus
                        the prefill slots) is smaller than the full one; else full */
    KS_CACHE_BUDGET, /* budget-sized (full when the budget covers max_ctx); KS_ERR_ARG when the method (or FullKV)
                        does not bound its rows */
    KS_CACHE_FULL,   /* max_ctx rows per (layer, KV head) */
} ks_forward_cache;

#define KS_FORWARD_MAX_BATCH 256 /* the most sequence slots of one backend instance */

typedef struct ks_forward_params {
    const char *device;     /* backend name ("cpu", "cuda") */
    int max_ctx;            /* tokens per sequence (prompt + generated) the KV cache holds */
    int max_new;            /* of which generated, at most: a budget-sized cache's room for them (>= 0) */
    int chunk;              /* prefill chunk: the most tokens per forward call (activation rows) */
    int threads;            /* CPU threads (<= 0: the physical cores; ks_fast_set_threads) */
    int gpu_share;          /* model instances sharing the GPU (ks_backend_params.gpu_share; 0: one) */
    int batch;              /* sequence slots of the backend instance (ks_backend_params.max_batch; <= 1: one) */
    ks_forward_cache cache; /* 0: KS_CACHE_AUTO */
} ks_forward_params;

typedef struct ks_forward {
    const ks_model *m;         /* borrowed */
    const ks_backend_ops *ops; /* the backend's table */
    ks_backend *be;            /* the instance: owned by slot 0's forward, borrowed by the others */
    int slot;                  /* the backend's sequence slot this forward's sequence lives in */
    int max_batch;             /* the instance's slots (ks_backend_params.max_batch, at least 1) */
    int max_ctx, chunk;        /* as initialised */
    int kv_rows;               /* rows per (layer, KV head) the cache holds after a prompt (max_ctx: full) */
    int n_past;                /* tokens already in the KV cache = position of the next token */
    ks_method *method;         /* KV compression, borrowed, bound at init; NULL = none (FullKV) */
    double method_s;           /* wall seconds in the method's hooks since the last reset (device backends: with
                                  the wait for queued work the hooks' results depend on) */
    ks_block_list blocks;      /* a sparse-prefill method's list for the chunk's attention (row_start, cols owned,
                                  sized at init for max_chunk queries and max_ctx keys); NULL arrays: none */
} ks_forward;

/* One forward call's inputs and outputs (which ones apply depends on where the stage sits). */
typedef struct ks_forward_io {
    const int32_t *tokens;  /* (n) ids; first stage (m->first_layer == 0) */
    const float *hidden_in; /* (n, hidden) from the previous stage; other stages. NULL: X already holds them (the
                               caller moved them there with the backend's hidden_recv) */
    float *hidden_out;      /* (n, hidden) for the next stage; all but the last stage. NULL: they stay in X for the
                               caller (the backend's hidden_send) */
    float *logits;          /* (vocab) the last row's logits, copied out when non-NULL; last stage */
    int skip_head;          /* last stage: 1 = no final norm / LM head (a prompt chunk before the last one) */
    int prompt_end;         /* 1 on the prompt's last chunk: the KV method compresses after it (every stage) */
    int32_t next;           /* out, last stage unless skip_head: argmax of the last row's logits */
} ks_forward_io;

/* Builds f for model m (borrowed) with KV method `method` (borrowed, bound to f's backend and layer range; NULL =
 * FullKV): checks the method against p, sizes the cache (ks_forward_cache), builds the backend instance of
 * p->device and binds the method. KS_ERR_ARG when the method's observation window exceeds the prefill chunk
 * (unless the chunk spans the whole context) and when p->cache is KS_CACHE_BUDGET for a method that does not
 * bound its rows. The method must outlive f and be bound to no other forward while f uses it. On failure f
 * holds nothing (ks_forward_free is still safe). */
ks_status ks_forward_init(ks_forward *f, const ks_model *m, ks_method *method, const ks_forward_params *p);
void ks_forward_free(ks_forward *f); /* accepts a zeroed or half-built struct; leaves the method to its owner */

/* For a caller that builds the backend instance itself (kvscope bench: random weights on the GPU):
 * ks_forward_backend_params gives the parameters ks_forward_init would build it with (the checks and errors of
 * ks_forward_init included), and ks_forward_init_backend finishes f around an instance `be` of `ops` built with
 * *bp, which f owns from the call on (on failure it is freed and f left zeroed). bp->kv_rows < bp->max_ctx is a
 * budget-sized cache, which needs a method that bounds its rows (KS_ERR_ARG otherwise). */
ks_status ks_forward_backend_params(const ks_model *m, const ks_method *method, const ks_forward_params *p,
                                    ks_backend_params *bp);
ks_status ks_forward_init_backend(ks_forward *f, const ks_model *m, ks_method *method, const ks_backend_ops *ops,
                                  ks_backend *be, const ks_backend_params *bp);

/* Another sequence on base's backend instance: slot `slot` (1 .. base->max_batch - 1, one forward per slot) with
 * its own KV method instance `method` (NULL: FullKV; bound to the slot's store), the same shape and cache mode.
 * base must outlive f; ks_forward_free(f) leaves the instance to base. */
ks_status ks_forward_init_slot(ks_forward *f, const ks_forward *base, int slot, ks_method *method);

/* Starts a new sequence: empties the KV cache and resets the method's state. */
void ks_forward_reset(ks_forward *f);

/* f's KV cache bookkeeping, current (the backend's kvcache of f's slot). */
const ks_kvcache *ks_forward_kvcache(const ks_forward *f);

/* *out = the cache mode `s` names: "auto", "budget" or "full"; KS_ERR_ARG naming `option` otherwise. */
ks_status ks_forward_cache_parse(const char *s, const char *option, ks_forward_cache *out);

/* How a run on the CPU holds a GGUF's block-encoded matrices (--cpu_weights). */
typedef enum ks_cpu_weights {
    KS_CPU_WEIGHTS_PACKED, /* in their GGML blocks, multiplied by kernels/cpu/quant.h (int8 activations) */
    KS_CPU_WEIGHTS_F32,    /* dequantized to fp32 at load: the exact fp32 path every backend shares */
} ks_cpu_weights;

/* *out = the mode `s` names: "packed" or "f32"; KS_ERR_ARG naming `option` otherwise. */
ks_status ks_cpu_weights_parse(const char *s, const char *option, ks_cpu_weights *out);

/* ks_model_load of layers [first, last) for a run on `device`: packed (ks_model_load_packed) when device is "cpu"
 * and w is KS_CPU_WEIGHTS_PACKED, fp32 otherwise. */
ks_status ks_forward_load_model(ks_model *m, const char *path, int first, int last, const char *device,
                                ks_cpu_weights w);

/* Length of the prompt chunk that starts at token `done` of an n_prompt-token prompt: at most f->chunk, and
 * split so that the last chunk holds the method's observation window (min(window, n_prompt) tokens); with a
 * sparse-prefill method every chunk but the last is a multiple of its block (ks_method_sparse_block), so that
 * chunks start on block edges and no query block is split over two chunks. */
int ks_forward_chunk_len(const ks_forward *f, int n_prompt, int done);
/* The prefill chunk of a caller given none: KS_FORWARD_CHUNK tokens, or max_ctx for a method that needs the whole
 * prompt in one chunk (ks_method_whole_prompt: FlexPrefill). */
#define KS_FORWARD_CHUNK 512
int ks_forward_default_chunk(const ks_method *m, int max_ctx);

/* n <= chunk tokens of prefill at positions n_past .. n_past+n-1 (causal attention within the chunk and over
 * the cache). KS_ERR_RANGE if the sequence would exceed max_ctx; KS_ERR_ARG if io->prompt_end and the chunk is
 * shorter than the method's window needs (see ks_forward_chunk_len). */
ks_status ks_forward_chunk(ks_forward *f, ks_forward_io *io, int n);

/* One decode token at position n_past: attention over each KV head's kept rows (per-head lengths). */
ks_status ks_forward_step(ks_forward *f, ks_forward_io *io);

/* Where a pipeline stage's layer-major prompt (ks_forward_prompt_layer_major) takes its rows from and hands them
 * to: in() fills rows with the n residual rows of tokens [t0, t0 + n) from the previous stage, out() passes them
 * on to the next; rows is (chunk, hidden) host memory, or NULL: in() and out() move the backend's X rows [0, n)
 * themselves (backend.h hidden_recv / hidden_send), X denoting those tokens' rows when they are called. */
typedef struct ks_forward_rows_io {
    ks_status (*in)(void *ctx, int t0, int n, float *rows);
    ks_status (*out)(void *ctx, int t0, int n, const float *rows);
    void *ctx;
    float *rows;
} ks_forward_rows_io;

/* A budget-sized cache's whole prompt of n tokens on this stage, layer-major (see "Prefill order" above): the
 * first stage embeds `tokens`, the others take io->in's rows; after the stage's last layer and the method's
 * compression of its layers, the last stage sets *next (and logits when non-NULL) and the others pass every
 * chunk's rows to io->out, in order. io may be NULL for a stage holding every layer. */
ks_status ks_forward_prompt_layer_major(ks_forward *f, const int32_t *tokens, int n, const ks_forward_rows_io *io,
                                        float *logits, int32_t *next);

/* Single-stage helpers (the model holds every layer): the whole prompt in chunks (in the cache's prefill order;
 * into a budget-sized cache it must start the sequence, KS_ERR_UNSUPPORTED otherwise), then one token at a
 * time. logits (vocab) receives the last position's logits when non-NULL; *next its argmax. */
ks_status ks_forward_prefill(ks_forward *f, const int32_t *tokens, int n, float *logits, int32_t *next);
ks_status ks_forward_decode(ks_forward *f, int32_t token, float *logits, int32_t *next);

/* One decode token of each of n forwards (slots of one backend instance in increasing order, n <= its
 * max_batch, every layer held): tokens[i] at position fs[i]->n_past, next[i] its greedy successor. Each sequence gets exactly
 * what ks_forward_decode(fs[i], tokens[i], NULL, &next[i]) gives it (tokens, cache rows, its method's state). */
ks_status ks_forward_decode_batch(ks_forward *const *fs, int n, const int32_t *tokens, int32_t *next);

#endif
