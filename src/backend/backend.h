/* backend.h — the compute backend interface: a const table of ops that the forward pass (engine/forward.c)
 * and, later, the KV methods are written against once, and a registry of the backends built in.
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
 * tensors; a GPU backend: bf16 device copies), the activation buffers below and the KV cache, all sized at
 * init from (max_ctx, max_chunk). Callers name buffers and weights by id and never touch their memory; data
 * crosses to the host only through embed/hidden_write (in) and hidden_read/logits_read/argmax (out). No op
 * allocates. Layers are the model's absolute layer numbers within [m->first_layer, m->last_layer).
 */
#ifndef KS_BACKEND_H
#define KS_BACKEND_H

#include <stdint.h>

#include "core/status.h"
#include "cpu/ref.h" /* ks_window_args, ks_window_summary, ks_gqa_reduce: the compression ops' semantics */
#include "backend/kvcache.h"
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

typedef struct ks_backend_params {
    int max_ctx;   /* KV rows per head: the longest prompt + generation this instance runs */
    int max_chunk; /* most tokens per forward call (the prefill chunk) */
    int threads;   /* CPU threads (<= 0: the OpenMP default) */
    int kv_rows;   /* rows per (layer, KV head) each layer's own cache storage holds; 0 or >= max_ctx: max_ctx.
                      Fewer: the cache's budget mode (kvcache.h), for a KV method that keeps at most kv_rows rows
                      per layer: longer prompts are prefilled layer by layer through shared prefill slots, and
                      the residual stream X holds max_ctx rows (residual_at; engine/forward.c) */
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
     * must be dense (every position 0 .. pos0+n-1, as during prefill). */
    ks_status (*attention_prefill)(ks_backend *b, int layer, int n, int pos0);
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

    /* ---- KV-cache compression (src/methods). Scores, norms and keep lists cross as host arrays; the cache
     * rows never leave the backend. Each op has a reference in kernels/cpu/ref.h. ---- */
    /* Observation-window scores of the current chunk's roped queries (Q rows a->q_row0 .. a->q_row0 + a->n_q - 1,
     * Q row 0 at position a->q_pos0) against `layer`'s cache keys 0 .. a->n_keys - 1, which must be dense:
     * ks_ref_window_scores. out (Hk, ld >= a->n_keys; (H, ld) for KS_GQA_NONE) and sum (may be NULL) are host
     * memory. Never builds the
     * (n_q, n_keys) probability matrix: O(n_q * n_keys * d) work per head, O(H * n_keys) memory. */
    ks_status (*window_scores)(ks_backend *b, int layer, const ks_window_args *a, float *out, int ld,
                               ks_window_summary *sum);
    /* Right after attention_decode(layer, qpos): the probabilities its query gave each KV head's rows, reduced
     * over the group (ks_ref_attention_decode_probs; rows before the sliding window's first row get 0).
     * out (Hk, ld) host; (H, ld) for KS_GQA_NONE. */
    ks_status (*attention_decode_probs)(ks_backend *b, int layer, int qpos, ks_gqa_reduce reduce, float *out,
                                        int ld);
    /* out (Hk, ld) host: the L2 norm of each row head h of `layer` holds (ks_ref_key_norms). */
    ks_status (*key_norms)(ks_backend *b, int layer, float *out, int ld);
    /* Physical compaction of `layer`: head h keeps its rows keep[h * ld + i], i < n_keep[h] (host arrays,
     * strictly increasing): K/V rows move to the front (ks_ref_kv_compact) and the bookkeeping follows
     * (ks_kvcache_compact), so the freed rows are capacity for decode. A layer in a prefill slot moves back to
     * its own storage (every list may keep all rows): KS_ERR_RANGE when a head keeps more than it holds. */
    ks_status (*kv_compact)(ks_backend *b, int layer, const int32_t *keep, const int32_t *n_keep, int ld);

    /* Decode-time eviction, all on the backend, so that a GPU decode step stays one graph: right after
     * attention_decode(layer, qpos), each KV head of `layer` holding more than a->keep rows drops the row
     * ks_ref_evict_row picks (the step query's probabilities as attention_decode_probs gives them: reduced
     * with a->reduce for KS_EVICT_POOLED, per query head for KS_EVICT_ACCUMULATED, which adds them to the
     * backend's own running scores of the layer and reduces those with a->reduce to choose) and its later rows
     * move down (ks_kvcache_drop_row), their running scores with them. Heads must hold at most a->keep + 1
     * rows. The bookkeeping (lengths, positions) may follow only once the host next waits for the backend;
     * kvcache() always returns it current. */
    ks_status (*decode_evict)(ks_backend *b, int layer, int qpos, const ks_evict_args *a);
    /* The running scores are per query head, (H, cap) per layer, sized at init: the scores of a row summed over
     * every query so far, reduced over the group only when rows are chosen (ref.h, ks_gqa_reduce_col).
     * row_scores_load sets those KS_EVICT_ACCUMULATED starts from: row j of query head h of `layer` =
     * scores[h * ld + j] for the rows its KV head h / G holds (host array (H, ld); H2O's prompt scores). */
    ks_status (*row_scores_load)(ks_backend *b, int layer, const float *scores, int ld);
    /* H2O's prompt scores summed on the backend, chunk after chunk, with no host copy or wait: the scores
     * window_scores(layer, a) computes per query head (as KS_GQA_NONE: a->reduce, a->accumulate and a->sums
     * ignored) are added to the layer's running scores for keys before a->q_pos0 and written for the others
     * (the chunk's own keys start there). row_scores_read copies the running scores of the rows the cache
     * holds to host out (H, ld). */
    ks_status (*row_scores_add)(ks_backend *b, int layer, const ks_window_args *a);
    ks_status (*row_scores_read)(ks_backend *b, int layer, float *out, int ld);

    /* Last stage: logits of X rows [row0, row0 + n) through the final norm and LM head, kept on the backend
     * (n <= KS_BACKEND_MAX_LOGIT_ROWS). */
    ks_status (*logits)(ks_backend *b, int row0, int n);
    /* ids[i] = argmax of logits row i (first on ties), i < n. */
    ks_status (*argmax)(ks_backend *b, int n, int32_t *ids);
    /* host (n, vocab) = logits rows 0..n-1. */
    ks_status (*logits_read)(ks_backend *b, int n, float *host);

    /* The cache's bookkeeping (lengths, positions); storage may be device memory. */
    ks_kvcache *(*kvcache)(ks_backend *b);

    /* ---- Optional (NULL: not supported; the CPU leaves them NULL): replaying decode steps from a captured
     * graph, so that a GPU decode step is not bound by ~10 kernel launches per layer. Around the per-layer ops
     * of a one-token decode step at position qpos, forward.c calls decode_graph_begin(b, qpos, hooked,
     * &replayed), hooked = 1 when a KV method's decode hook issues backend ops in the step (decode_evict, with
     * the sequence's own arguments: a graph holding them serves that sequence only, and one without them does
     * not serve such a step):
     * replayed = 1 means the backend has already enqueued every layer of the step (its captured graph, which
     * reads the position and the per-head lengths from device memory, so changed ones need no re-capture) and
     * committed the cache bookkeeping, and the layer ops must be skipped; replayed = 0 means the caller issues
     * the layer ops as usual (the backend may be recording them) and then calls decode_graph_end(b, ok), with
     * ok = 0 when an op failed (the recording is dropped). Only for steps whose layers are backend ops alone:
     * host work between the ops (a method hook reading results) is not replayed. ---- */
    ks_status (*decode_graph_begin)(ks_backend *b, int qpos, int hooked, int *replayed);
    ks_status (*decode_graph_end)(ks_backend *b, int ok);

    /* ---- Optional (NULL: not supported; the method layer then compresses each layer at its own hook):
     * deferred compression, so that a GPU does not idle between layers while the host scores and selects.
     * At the prompt's last chunk, right after attention_prefill(layer) (and any synchronous compression op on
     * that layer), methods/method.c calls method_stash(b, layer, q_row0, n_q, &deferred). The backend
     * snapshots what later layers overwrite and the layer's compression ops read, the Q rows q_row0 ..
     * q_row0 + n_q - 1 (n_q >= 0), and marks the layer deferred (*deferred = 1); or, when n_q exceeds its
     * snapshot capacity (KS_BACKEND_STASH_ROWS in the built-in backends), changes nothing (*deferred = 0: the
     * caller compresses the layer at once, as without these ops). Until method_join, every compression op on a
     * deferred layer (window_scores, key_norms, kv_compact) computes what it would have computed right after
     * that attention: window_scores reads its queries from the snapshot (a->q_row0 still names rows of the
     * chunk and must lie within the stashed rows), the cache is as the deferred ops left it (later layers'
     * forward ops never touch it). The caller keeps two rules: the ops on a deferred layer start before the
     * layer two further on is stashed (its own work follows the next layer's stash; CakeKV's re-eviction of
     * earlier layers comes after), and while any layer is deferred, only window_scores and key_norms may run on
     * layers that are not (H2O's per-chunk scoring of the next layer). A GPU backend runs the deferred ops on a
     * second stream ordered after the layer's stash, so they overlap the later layers' queued work, and an op
     * that returns data waits for that stream only. Two snapshot slots, alternating by layer parity, suffice:
     * when layer l is stashed, layer l - 1's work is still to come (its slot must survive) and layer l - 2's
     * reads have returned their results to the host. method_join(b): the forward ops issued afterwards run
     * after every deferred op, the marks are cleared and compression ops read the live Q buffer again. ---- */
    ks_status (*method_stash)(ks_backend *b, int layer, int q_row0, int n_q, int *deferred);
    ks_status (*method_join)(ks_backend *b);
} ks_backend_ops;

/* How many rows the logits buffer holds. */
#define KS_BACKEND_MAX_LOGIT_ROWS 1

/* Query rows a method_stash snapshot holds in the built-in backends (capped at max_chunk): well above the
 * observation windows the methods use (32 by default; LOOM-Scope and the papers use 8 to 128). */
#define KS_BACKEND_STASH_ROWS 1024

/* The backend called `name` ("cpu", "cuda"): KS_ERR_UNSUPPORTED for a known backend not built in, KS_ERR_ARG
 * (listing the names) for an unknown one. */
ks_status ks_backend_find(const char *name, const ks_backend_ops **out);

extern const ks_backend_ops ks_backend_cpu;

/* Whether the log-sum-exps a prefill attention kept for its chunk of lse_n query rows at position lse_pos0
 * (causal, no sliding window) serve the scoring call a: the same queries against the same keys. The backends
 * keep them so that a method scoring every query of the chunk (H2O) skips recomputing them. */
static inline int ks_window_lse_serves(int lse_pos0, int lse_n, const ks_window_args *a) {
    return lse_pos0 == a->q_pos0 && a->n_keys == a->q_pos0 + lse_n && a->q_row0 + a->n_q <= lse_n;
}

#endif
