/* backend.h — the compute backend interface: a const table of the forward pass's ops (engine/forward.c is
 * written against it once), the backend's KV store (kvstore.h: what the KV methods call), and a registry of the
 * backends built in.
 *
 *     const ks_backend_ops *ops;
 *     KS_TRY(ks_backend_find("cpu", &ops));            // "cuda": KS_ERR_UNSUPPORTED on a build without it
 *     ks_backend *be;
 *     ks_backend_params p = {.max_ctx = 4096, .max_chunk = 512, .threads = 2};
 *     KS_TRY(ops->init(&be, &model, &p));              // sizes ALL buffers and the KV cache once
 *     KS_TRY(ops->embed(be, tokens, n));  ...          // see forward.c for the layer recipe
 *     ops->free(be);
 *
 * A backend owns everything the forward pass computes on: its view of the weights (CPU: the ks_model fp32
 * tensors; a GPU backend: bf16 device copies), the activation buffers below, the KV cache and the KV store over
 * it, all sized at init from (max_ctx, max_chunk). Callers name buffers and weights by id and never touch their
 * memory; data crosses to the host only through embed/hidden_write (in) and hidden_read/logits_read/argmax
 * (out), and to another GPU only through hidden_recv/hidden_send. No op allocates (the KV store's per-row scores
 * are allocated once when a method reserves them).
 * Layers are the model's absolute layer numbers within [m->first_layer, m->last_layer).
 *
 * Sequence slots (max_batch > 1): the instance holds max_batch (KV cache, KV store) pairs over the same weights
 * and activation buffers. use_slot picks the sequence the per-sequence ops act on (qkv_rope_append, the
 * attentions, residual_at, kvcache, kvstore, decode_step); use_batch makes the next ops' rows n sequences of a
 * batched decode step (row i the next token of slot slots[i]):
 *
 *     KS_TRY(ops->use_slot(be, 2));  ... a prompt of the sequence in slot 2, as above ...
 *     ks_decode_batch db = {.n = 3, .slots = (int[]){0, 2, 5}, .pos = (int32_t[]){812, 4100, 96}};
 *     KS_TRY(ops->use_batch(be, &db));
 *     KS_TRY(ops->embed(be, next_ids, 3));  ... the layer recipe on 3 rows ...  ops->argmax(be, 3, next_ids);
 *     KS_TRY(ops->use_batch(be, NULL));
 */
#ifndef KS_BACKEND_H
#define KS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "block_list.h" /* ks_block_list: attention_prefill's block lists */
#include "core/status.h"
#include "backend/kvcache.h"
#include "backend/kvstore.h"
#include "model/model.h"

typedef struct ks_backend ks_backend; /* a backend instance; each backend defines its own */

/* Activation buffers, each with max_chunk rows of the given width. */
typedef enum ks_buf {
    KS_BUF_X,    /* (n, hidden) the residual stream */
    KS_BUF_XN,   /* (n, hidden) normalised input of a sub-layer */
    KS_BUF_Q,    /* (n, H, d) queries */
    KS_BUF_K,    /* (n, Hk, d) new keys */
    KS_BUF_V,    /* (n, Hk, d) new values */
    KS_BUF_ATT,  /* (n, H, d) attention output */
    KS_BUF_GATE, /* (n, ffn) gate projection, then silu(gate) * up */
    KS_BUF_UP,   /* (n, ffn) up projection */
    KS_BUF_COUNT
} ks_buf;

/* The per-layer weights an op takes by name: a norm, or the projection of a residual add. (The q|k|v and
 * gate|up projections belong to their ops, qkv_rope_append and gate_up_swiglu.) */
typedef enum ks_weight {
    KS_W_ATTN_NORM, /* (hidden) */
    KS_W_FFN_NORM,  /* (hidden) */
    KS_W_O,         /* (hidden, H*d) + bo: reads ATT */
    KS_W_DOWN,      /* (hidden, ffn): reads GATE */
} ks_weight;

/* What a decode step's layers do besides backend ops (decode_step). */
typedef enum ks_decode_kind {
    KS_DECODE_PLAIN,  /* nothing: any captured step serves it */
    KS_DECODE_HOOKED, /* KV-store ops of a method's decode hook (decode_evict) with this sequence's arguments: a
                         step captured with them serves this sequence only, and one without them does not serve */
    KS_DECODE_HOST,   /* host work between the ops (a hook reading results back): issued as it comes, never
                         captured or replayed */
} ks_decode_kind;

/* What moves a pipeline stage's rows between device memories for hidden_recv / hidden_send (a transport between
 * GPUs, engine/pipeline.h): fn moves `bytes` at device address `rows`, enqueued on `stream` (the backend's
 * cudaStream_t) so that it runs after the work issued there before and before the work issued after, and
 * returns without waiting for it. */
typedef struct ks_device_move {
    ks_status (*fn)(void *ctx, void *rows, size_t bytes, void *stream);
    void *ctx;
} ks_device_move;

/* The rows of a batched decode step (use_batch): row i is the next token of the sequence in slot slots[i]
 * (distinct slots, in increasing order), at position pos[i], whose step alone would be of kind kinds[i]. */
typedef struct ks_decode_batch {
    int n;                       /* rows, 1 .. max_batch */
    const int *slots;            /* (n) */
    const int32_t *pos;          /* (n) */
    const ks_decode_kind *kinds; /* (n) decode_step's kind for each sequence's step alone (a method's kind may
                                    change step by step); NULL: all of decode_step's kind */
} ks_decode_batch;

typedef struct ks_backend_params {
    int max_ctx;   /* KV rows per head: the longest prompt + generation this instance runs */
    int max_chunk; /* most tokens per forward call (the prefill chunk) */
    int threads;   /* CPU threads (<= 0: the physical cores, or OMP_NUM_THREADS; ks_fast_set_threads) */
    int gpu_share; /* model instances sharing this GPU (--gp_num 1/k), said in an out-of-memory error; <= 1: one */
    int sparse_block; /* a sparse-prefill method's block size B (ks_method_sparse_block), 0: none. A backend
                         whose attention reads block lists from its own memory keeps room there for one chunk's
                         list (its rows, every causal key block of max_ctx keys) */
    int sparse_whole_prompt; /* with sparse_block: 1 when the method's lists come from the whole prompt at once
                                (ks_method_whole_prompt: FlexPrefill's flex_blocks), 0 chunk by chunk (XAttention's
                                xattn_blocks); a backend that estimates on its device keeps that one's scratch only */
    int max_batch; /* sequence slots, each with its own KV cache and store (use_slot), and the most rows of a
                      batched decode step (use_batch); <= 1: one */
    int kv_rows;   /* rows per (layer, KV head) each layer's own cache storage holds; 0 or >= max_ctx: max_ctx.
                      Fewer: the cache's budget mode (kvcache.h), for a KV method that keeps at most kv_rows rows
                      per layer: longer prompts are prefilled layer by layer through shared prefill slots, and
                      the residual stream X holds max_ctx rows (residual_at; engine/forward.c) */
    int packed_rows; /* tokens per (layer, KV head) a KV store's packed part holds once a method reserves it
                        (kvstore.h quant_reserve); 0 or >= max_ctx: max_ctx. Fewer: a budget-sized cache whose
                        selection bounds what is packed (ks_method_packed_rows) */
} ks_backend_params;

typedef struct ks_backend_ops {
    const char *name;
    /* Builds an instance for the model's layer range; m must outlive it. */
    ks_status (*init)(ks_backend **out, const ks_model *m, const ks_backend_params *p);
    void (*free)(ks_backend *b); /* accepts NULL */

    /* X[0..n) = embedding rows of tokens (host ids). First pipeline stage only. */
    ks_status (*embed)(ks_backend *b, const int32_t *tokens, int n);
    /* X[0..n) = host (n, hidden), and back: the hidden-state hand-off between pipeline stages. */
    ks_status (*hidden_write)(ks_backend *b, const float *host, int n);
    ks_status (*hidden_read)(ks_backend *b, float *host, int n);
    /* Optional (NULL where X is host memory, as on the CPU): the same hand-off with X's rows [0..n) moved
     * straight between GPUs, in place of hidden_write / hidden_read: `move` fills them (hidden_recv) or takes
     * them (hidden_send) in the order of the backend's stream; neither call waits for the move or keeps
     * `move`. */
    ks_status (*hidden_recv)(ks_backend *b, const ks_device_move *move, int n);
    ks_status (*hidden_send)(ks_backend *b, const ks_device_move *move, int n);

    /* The sequence the per-sequence ops act on from now on: slot 0 .. max_batch - 1 (0 at init); the slot's cache
     * and store are what kvcache and kvstore return. */
    ks_status (*use_slot)(ks_backend *b, int slot);
    /* From now on (until use_batch(b, NULL)) the ops' n = batch->n rows are one decode token of each batch slot:
     * qkv_rope_append ropes row i at pos[i] and appends it to slot slots[i]'s cache (its pos0 is ignored),
     * attention_decode attends row i over that slot's kept rows (its qpos is ignored), and each slot's store
     * reads row i as its decode query; the other ops treat the rows as they treat a chunk's, and give each row
     * the numbers it would get alone. NULL: back to the current slot's sequence. The batch is borrowed until
     * then. */
    ks_status (*use_batch)(ks_backend *b, const ks_decode_batch *batch);

    /* From now on the buffer X denotes rows row0 .. row0 + max_chunk - 1 of the residual stream (0 at init):
     * with kv_rows < max_ctx the stream holds max_ctx rows and a layer-major prefill moves X over the prompt,
     * chunk by chunk; otherwise row0 must be 0. The other buffers keep their max_chunk rows. */
    ks_status (*residual_at)(ks_backend *b, int row0);
    /* ---- The layer ops (engine/forward.c: the layer recipe). Each op's name says all the work it does, which a
     * GPU backend fuses into as few launches as it can and the CPU backend composes from the reference ops of
     * kernels/cpu/ref.h; no op leaves work for a later one. ---- */
    /* XN[0..n) = rmsnorm(X[0..n)) * w, w = KS_W_ATTN_NORM or KS_W_FFN_NORM of `layer` (the norm of a layer's
     * input when no out_proj_residual_norm wrote it). */
    ks_status (*rmsnorm)(ks_backend *b, int layer, ks_weight w, int n);
    /* Q, K, V [0..n) = XN[0..n) Wq^T, Wk^T, Wv^T (+ bias) of `layer`; RoPE on Q (H heads) and K (Hk heads) for
     * positions pos0 .. pos0+n-1; K, V rows appended to every head of `layer`'s cache at those positions. In
     * budget mode a layer outgrowing its own rows first moves to a free prefill slot (kvcache.h): KS_ERR_RANGE
     * when none is free. */
    ks_status (*qkv_rope_append)(ks_backend *b, int layer, int n, int pos0);
    /* ATT[0..n) = causal (sliding-window) attention of Q rows at positions pos0.. over `layer`'s cache, which
     * must be dense (every position 0 .. pos0+n-1, as during prefill). blocks NULL: every key (dense); else a
     * sparse-prefill method's block list for this chunk (block_list.h: qb0 and n_qblocks those of pos0, n): each
     * (query head, query block) row attends its listed key blocks only (a full list is the dense attention). A
     * sparse attention leaves no log-sum-exps for the scoring ops (they are not the dense softmax's). A backend
     * without the block-sparse kernel fails with KS_ERR_UNSUPPORTED. */
    ks_status (*attention_prefill)(ks_backend *b, int layer, int n, int pos0, const ks_block_list *blocks);
    /* ATT[0] = attention of the single query at position qpos over each KV head's kept rows (per-head
     * lengths; with a sliding window only rows whose position is > qpos - window). */
    ks_status (*attention_decode)(ks_backend *b, int layer, int qpos);
    /* UP[0..n) = XN Wup^T and GATE[0..n) = silu(XN Wgate^T) * UP, with `layer`'s weights. */
    ks_status (*gate_up_swiglu)(ks_backend *b, int layer, int n);
    /* The residual add of a sub-layer and the norm of the next one's input: X[0..n) += in W^T (+ bias), w =
     * KS_W_O (in = ATT) or KS_W_DOWN (in = GATE) of `layer`; then, for norm_layer >= 0, XN[0..n) =
     * rmsnorm(X[0..n)) * norm_w (KS_W_ATTN_NORM or KS_W_FFN_NORM) of norm_layer: the layer's FFN norm after O,
     * the next layer's attention norm after DOWN. norm_layer < 0: X only (after the last layer held, whose
     * X goes to logits, which applies the final norm, or to hidden_read). */
    ks_status (*out_proj_residual_norm)(ks_backend *b, int layer, ks_weight w, int n, int norm_layer,
                                        ks_weight norm_w);


    /* Last stage: logits of X rows [row0, row0 + n) through the final norm and LM head, kept on the backend
     * (n <= ks_backend_logit_rows(max_batch)). */
    ks_status (*logits)(ks_backend *b, int row0, int n);
    /* ids[i] = argmax of logits row i (first on ties), i < n. */
    ks_status (*argmax)(ks_backend *b, int n, int32_t *ids);
    /* host (n, vocab) = logits rows 0..n-1. */
    ks_status (*logits_read)(ks_backend *b, int n, float *host);

    /* The current slot's cache bookkeeping (lengths, positions); storage may be device memory. */
    ks_kvcache *(*kvcache)(ks_backend *b);
    /* The current slot's KV store over that cache (kvstore.h): the primitives the KV methods call and the
     * scheduling of their prompt-end work. NULL when the backend has none. */
    ks_kvstore *(*kvstore)(ks_backend *b);

    /* One decode step at position qpos: issue(ctx) issues the layers' ops (a one-token forward through every
     * layer held) and returns their status. The backend runs it as it sees fit: the CPU calls it; the CUDA
     * backend captures the step as a graph and replays it for later steps (positions and per-head lengths are
     * device data), in which case issue is not called and the cache bookkeeping is committed for it. `kind`
     * says what the layers do besides backend ops, which decides whether a graph may serve them. Under
     * use_batch the step is the batch's (qpos ignored), run as issued. */
    ks_status (*decode_step)(ks_backend *b, int qpos, ks_decode_kind kind, ks_status (*issue)(void *ctx),
                             void *ctx);
} ks_backend_ops;

/* How many rows the logits buffer of an instance with max_batch slots holds: one per batch row. */
static inline int ks_backend_logit_rows(int max_batch) { return max_batch > 1 ? max_batch : 1; }

/* The backend called `name` ("cpu", "cuda"): KS_ERR_UNSUPPORTED for a known backend not built in, KS_ERR_ARG
 * (listing the names) for an unknown one. */
ks_status ks_backend_find(const char *name, const ks_backend_ops **out);

extern const ks_backend_ops ks_backend_cpu;

/* GPUs this process can use (CUDA's count, after CUDA_VISIBLE_DEVICES); 0 in a build without the cuda backend
 * or on a machine without a GPU. */
int ks_backend_gpu_count(void);
/* Memory free now on `device`: the host's ("cpu"), or the current GPU's ("cuda"); 0 where it cannot be known. */
int64_t ks_backend_free_bytes(const char *device);
/* Makes GPU `gpu` (0 .. ks_backend_gpu_count() - 1) the one this process's cuda backend instances run on;
 * KS_ERR_UNSUPPORTED in a build without the cuda backend. */
ks_status ks_backend_use_gpu(int gpu);

#endif
