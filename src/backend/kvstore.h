/* kvstore.h — the KV-storage table: the method-neutral cache primitives the KV methods (src/methods) are written
 * against, and the scheduling of a layer's compression work. A backend holds one KV store over its cache and
 * hands it out through ks_backend_ops.kvstore; a KV method reaches the cache only through it:
 *
 *     ks_kvstore *kv = ops->kvstore(be);                   // the backend's store (NULL: none)
 *     KS_TRY(kv->ops->window_scores(kv, layer, &args, out, ld, NULL));   // scores cross as host arrays
 *     KS_TRY(kv->ops->kv_compact(kv, layer, keep, n_keep, ld));          // rows never leave the store
 *     KS_TRY(kv->ops->compress_layer(kv, layer, q_row0, n_q, work, ctx)); // at a layer's prompt end
 *     KS_TRY(kv->ops->compress_flush(kv));                                // after the prompt's last layer
 *
 * An instance is a storage's own struct with ks_kvstore as its first member (or embedded in its backend), so
 * each storage format defines its state and one ks_kvstore_ops table in its own files: kvstore_cpu.c (fp32 host
 * rows, the CPU backend's, also usable alone over a cache a test fills) and backend_cuda_methods.c (bf16 device
 * rows). A new storage format (packed quantized rows, narrower keys) adds such a pair and a backend that holds
 * it; the forward ops table and the method layer stay as they are.
 *
 * Layers are the model's absolute layer numbers; the cache (kvcache.h) indexes them from its first held layer.
 * Scores, norms and keep lists cross as host arrays. The ops' argument types are kernels/kv_args.h's (below the
 * backend, so that the kernels implementing them include nothing of it); each op has a reference in
 * kernels/cpu/ref.h.
 */
#ifndef KS_KVSTORE_H
#define KS_KVSTORE_H

#include <stdint.h>

#include "block_list.h" /* ks_block_list: flex_blocks' output */
#include "core/status.h"
#include "kv_args.h" /* ks_window_args, ks_window_summary, ks_evict_args, ks_gqa_reduce, ks_xattn_args: the ops'
                        semantics */
#include "kivi_args.h" /* ks_kivi_params, ks_kivi_counts, ks_kivi_error: the packed part's */
#include "backend/kvcache.h"

typedef struct ks_kvstore_ops ks_kvstore_ops;

/* A KV store instance: the first member of each storage's own state. */
typedef struct ks_kvstore {
    const ks_kvstore_ops *ops;
} ks_kvstore;

/* A layer's compression work (score, select, compact `layer`), handed to compress_layer with its context. */
typedef ks_status (*ks_kvstore_work)(void *ctx, int layer);

struct ks_kvstore_ops {
    const char *name;
    /* The cache's bookkeeping (lengths, positions), current: a store may apply decode-time evictions late. */
    ks_kvcache *(*cache)(ks_kvstore *kv);

    /* Observation-window scores of the current chunk's roped queries (Q rows a->q_row0 .. a->q_row0 + a->n_q - 1,
     * Q row 0 at position a->q_pos0) against `layer`'s cache keys 0 .. a->n_keys - 1, which must be dense:
     * ks_ref_window_scores. out (Hk, ld >= a->n_keys; (H, ld) for KS_GQA_NONE) and sum (may be NULL) are host
     * memory. Never builds the (n_q, n_keys) probability matrix: O(n_q * n_keys * d) work per head, O(H * n_keys)
     * memory. */
    ks_status (*window_scores)(ks_kvstore *kv, int layer, const ks_window_args *a, float *out, int ld,
                               ks_window_summary *sum);
    /* Right after the decode attention of `layer` at qpos: the probabilities its query gave each KV head's rows,
     * reduced over the group (ks_ref_attention_decode_probs; rows before the sliding window's first row get 0).
     * out (Hk, ld) host; (H, ld) for KS_GQA_NONE. */
    ks_status (*attention_decode_probs)(ks_kvstore *kv, int layer, int qpos, ks_gqa_reduce reduce, float *out,
                                        int ld);
    /* out (H, ld >= d) host: ThinK's channel scores of `layer` (ks_ref_channel_scores): the chunk's query rows
     * q_row0 .. q_row0 + n_q - 1 (n_q > 0; read as window_scores reads them, so also in a deferred layer's work)
     * against every row each KV head holds. */
    ks_status (*channel_scores)(ks_kvstore *kv, int layer, int q_row0, int n_q, float *out, int ld);
    /* out (H, ld > a->qb) host: XAttention's antidiagonal block scores of query block a->qb of the current chunk
     * (its roped queries in Q rows 0 .. a->n - 1) against `layer`'s dense keys 0 .. a->q_pos0 + a->n - 1, right
     * before the chunk's attention (cpu/xattn_ref.h ks_ref_xattn_block_scores). Never builds more than one
     * stride row's scores per query head. */
    ks_status (*xattn_scores)(ks_kvstore *kv, int layer, const ks_xattn_args *a, float *out, int ld);
    /* Optional (NULL: the method scores one query block at a time through xattn_scores and chooses on the host):
     * XAttention's block lists of every query block of the current chunk at once (ks_xattn_blocks_args), right
     * before the chunk's attention, the choice made where the scores are. l (set up by the caller: block, H, qb0,
     * n_qblocks) becomes resident (block_list.h: the list stays in the store's device arrays for the chunk's
     * attention); count and coverage (H n_qblocks, host) receive each row's blocks and ks_xattn_select coverage. */
    ks_status (*xattn_blocks)(ks_kvstore *kv, int layer, const ks_xattn_blocks_args *a, ks_block_list *l,
                              int32_t *count, double *coverage);
    /* FlexPrefill's block lists of `layer` for a whole prompt of a->L tokens (ks_flexprefill_ref, cpu/
     * flexprefill_ref.h): the roped queries in Q rows 0 .. a->L - 1, the keys in the layer's cache rows 0 ..
     * a->L - 1. l receives query blocks 0 .. nb - 1: in its host arrays (row_start H nb + 1, cols
     * ks_flexprefill_max_cols), or resident in the store's device arrays (block_list.h; the CUDA store); stats
     * (H, host) each query head's record. */
    ks_status (*flex_blocks)(ks_kvstore *kv, int layer, const ks_flexprefill_args *a, ks_block_list *l,
                             ks_flexprefill_stat *stats);
    /* out (Hk, ld) host: the L2 norm of each row head h of `layer` holds (ks_ref_key_norms). */
    ks_status (*key_norms)(ks_kvstore *kv, int layer, float *out, int ld);
    /* Physical compaction of `layer`: head h keeps its rows keep[h * ld + i], i < n_keep[h] (host arrays,
     * strictly increasing): K/V rows move to the front (ks_ref_kv_compact) and the bookkeeping follows
     * (ks_kvcache_compact), so the freed rows are capacity for decode. A layer in a prefill slot moves back to
     * its own storage (every list may keep all rows): KS_ERR_RANGE when a head keeps more than it holds. The
     * per-row scores of the layer do not move (a method that keeps them reloads them: row_scores_load). */
    ks_status (*kv_compact)(ks_kvstore *kv, int layer, const int32_t *keep, const int32_t *n_keep, int ld);

    /* Value merging (CaM) on `layer`, rows staying where they are: KV head h applies its n[h] entries
     * list[h * ld + i] (host arrays; sources strictly increasing and below the head's length) in order,
     * V[r] += weight * V[src] for the span rows r after src that the head holds, each entry reading its source
     * after the earlier entries' additions (ks_ref_v_merge). Keys, lengths and positions do not change. norms
     * (host, may be NULL) receives the layer's ||V||^2 before and ||dV||^2 (set, not added; the call then waits
     * for the store). */
    ks_status (*v_merge)(ks_kvstore *kv, int layer, const ks_merge *list, const int32_t *n, int ld, int span,
                         ks_merge_norms *norms);

    /* Decode-time eviction, all inside the store, so that a GPU decode step stays one graph: right after the
     * decode attention of `layer` at qpos, each KV head of `layer` holding more than a->keep rows drops the row
     * ks_ref_evict_row picks (the step query's probabilities as attention_decode_probs gives them: reduced with
     * a->reduce for KS_EVICT_POOLED, per query head for KS_EVICT_ACCUMULATED, which adds them to the layer's
     * per-row scores and reduces those with a->reduce to choose) and its later rows move down
     * (ks_kvcache_drop_row), their per-row scores with them. Heads must hold at most a->keep + 1 rows. The
     * bookkeeping (lengths, positions) may follow only once the host next waits for the store; cache() always
     * returns it current. */
    ks_status (*decode_evict)(ks_kvstore *kv, int layer, int qpos, const ks_evict_args *a);

    /* ---- Per-row scores: a buffer the cache owns, one row per query head, (H, cap) per layer, in which any
     * method may keep running scores of the cache rows (summed over every query so far, reduced over the group
     * only when rows are chosen: ref.h, ks_gqa_reduce_col). decode_evict's ACCUMULATED rule moves and adds to
     * them. They exist only once reserved. ---- */
    /* Allocates the buffer (and its scratch) unless the store has it; a method that keeps per-row scores calls
     * it when it binds. Stays until the store is freed. KS_ERR_NOMEM naming the bytes. */
    ks_status (*row_scores_reserve)(ks_kvstore *kv);
    /* Sets `layer`'s scores: row j of query head h = scores[h * ld + j] for the rows its KV head h / G holds
     * (host array (H, ld)). */
    ks_status (*row_scores_load)(ks_kvstore *kv, int layer, const float *scores, int ld);
    /* Adds a chunk's scores without a host copy or wait: the scores window_scores(layer, a) computes per query
     * head (as KS_GQA_NONE: a->reduce, a->accumulate and a->sums ignored) are added to the layer's scores for
     * keys before a->q_pos0 and written for the others (the chunk's own keys start there). */
    ks_status (*row_scores_add)(ks_kvstore *kv, int layer, const ks_window_args *a);
    /* The scores of the rows the cache holds to host out (H, ld). */
    ks_status (*row_scores_read)(ks_kvstore *kv, int layer, float *out, int ld);

    /* ---- A packed quantized part (KIVI: kernels/kivi_args.h, backend/kv_kivi.h). ---- */
    /* Allocates the packed part of every (layer, KV head) with these parameters, unless the store has it with the
     * same, for the cache's cap tokens a head, or for the backend params' packed_rows (a budget-sized cache whose
     * selection bounds what is packed; a flush past them fails with KS_ERR_RANGE); a quantizing method calls it
     * when it binds. From then on the
     * store's decode attention reads each layer's packed tokens together with its full-precision rows, its
     * compactions may only release rows packed in both keys and values (KS_ERR_UNSUPPORTED naming KIVI, as for
     * a decode_evict on a layer holding packed tokens), and ks_kvcache_bytes counts what is held.
     * KS_ERR_ARG naming the knob when the parameters do not fit the model (ks_kivi_params_check);
     * KS_ERR_UNSUPPORTED naming KIVI on a store without the format or layers with a sliding window. */
    ks_status (*quant_reserve)(ks_kvstore *kv, const ks_kivi_params *p);
    /* KIVI's flush rules on `layer` (ks_kv_kivi_flush): after its prompt (the rows its selection kept, if any)
     * and after each decode attention. counts (Hk, host; NULL: not wanted) receives each head's counts after it;
     * err (NULL: not wanted; the store may wait for its device) accumulates the reconstruction errors. In a
     * decode step a store may run the flush and KIVI's release on its device as one (the CUDA store's
     * graph-served step): it then expects, in the same step, the caller's compaction releasing every head's stale
     * rows when some head holds ks_kivi_release_least(R, 1) of them, and refuses any other compaction. */
    ks_status (*quant_flush)(ks_kvstore *kv, int layer, ks_kivi_counts *counts, ks_kivi_error *err);
    /* The key channels each KV head h of `layer` stores in its packed keys for this sequence:
     * chan[h * ld + i], i < n_chan[h] (host; strictly increasing head channels; n_chan[h] = d: all), set at the
     * layer's prompt end before its first quant_flush (ThinK's pruning before KIVI, ks_kv_kivi_set_channels). The
     * full-precision rows keep every channel; a new sequence stores all again. KS_ERR_UNSUPPORTED once the head's
     * keys are packed, or on a store without the packed part. */
    ks_status (*quant_channels)(ks_kvstore *kv, int layer, const int32_t *chan, const int32_t *n_chan, int ld);
    /* A raw packed part (quant_reserve with k_bits and v_bits KS_KIVI_RAW; ThinK without a quantizer; the store
     * holds its rows' own element bits: fp32 on the host, bf16 on the CUDA store, KS_KIVI_RAW_BF16): each KV
     * head h of `layer` packs its tokens up to upto[h] (host (Hk); tokens packed already stay), keys on its stored
     * channels, exactly (ks_kv_kivi_pack); counts (Hk, host; may be NULL) as quant_flush's. The rows packed are
     * then stale (a compaction releases them). */
    ks_status (*quant_pack)(ks_kvstore *kv, int layer, const int32_t *upto, ks_kivi_counts *counts);

    /* ---- Scheduling of the prompt-end compression. At the prompt's last chunk, right after `layer`'s prefill
     * attention (and any per-chunk op on it), the caller hands the store that layer's work: work(ctx, layer)
     * scores, selects and compacts it with the ops above, reading window queries among the chunk's Q rows
     * q_row0 .. q_row0 + n_q - 1 (n_q >= 0). The store runs it at once (CPU) or later (CUDA: after the next
     * layer's forward ops are queued, so that the GPU does not idle while the host scores and selects), and in
     * either case the work computes what it would have computed right after that attention: its window_scores
     * calls read the Q rows as they were (a->q_row0 names rows of the chunk and must lie within the ones
     * handed over), the layer's rows are as its attention left them (later layers' forward ops never touch
     * them), and layers' work runs in layer order. A work callback issues all its ops before it returns and may compact
     * the layers before its own (CakeKV's cascade). The caller keeps two rules: it calls compress_layer once per
     * layer, in layer order, and outside the callbacks, until compress_flush, it runs only scoring ops
     * (window_scores, xattn_scores, row_scores_add, key_norms) and only on layers it has not handed over (H2O's per-chunk
     * scoring of the next layer). ---- */
    ks_status (*compress_layer)(ks_kvstore *kv, int layer, int q_row0, int n_q, ks_kvstore_work work, void *ctx);
    /* After the prompt's last layer: the work not run yet runs, and the forward ops issued afterwards see every
     * compaction. */
    ks_status (*compress_flush)(ks_kvstore *kv);
    /* A prompt abandoned (an error, a new sequence, another method binding): the work not run yet is dropped,
     * and the store is as after compress_flush. */
    void (*compress_cancel)(ks_kvstore *kv);
};

/* Query rows a deferred layer's work may read in the built-in stores (capped at max_chunk): well above the
 * observation windows the methods use (32 by default; LOOM-Scope and the papers use 8 to 128). A layer handing
 * over more runs its work at once. */
#define KS_KVSTORE_DEFER_ROWS 1024

/* Whether the log-sum-exps a prefill attention kept for its chunk of lse_n query rows at position lse_pos0
 * (causal, no sliding window) serve the scoring call a: the same queries against the same keys. The stores keep
 * them so that a method scoring every query of the chunk (H2O) skips recomputing them. */
static inline int ks_window_lse_serves(int lse_pos0, int lse_n, const ks_window_args *a) {
    return lse_pos0 == a->q_pos0 && a->n_keys == a->q_pos0 + lse_n && a->q_row0 + a->n_q <= lse_n;
}

#endif
