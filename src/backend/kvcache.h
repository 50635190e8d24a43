/* kvcache.h — the KV cache of a layer range: per layer and per KV head, its own length and the original token
 * position of every kept row; storage head-major as kernels/cpu/ref.h describes.
 *
 *     ks_kvcache c = {0};
 *     KS_TRY(ks_kvcache_init(&c, first, n_layers, Hk, d, cap, cap, 1)); // layers [first, first + n_layers);
 *                                                                     // 1 = fp32 host storage (CPU backend)
 *     ks_kvcache_append(&c, layer, k_new, v_new, n, pos0);        // k_new, v_new: (n, Hk, d) token-major
 *     float *K = ks_kvcache_k(&c, layer);  int32_t *len = ks_kvcache_len(&c, layer);  // (Hk, cap, d), (Hk)
 *     ks_kvcache_reset(&c);                                         // next sequence
 *     ks_kvcache_free(&c);                                          // accepts zeroed or half-built
 *
 * Every function takes the model's absolute layer numbers, first_layer <= layer < first_layer + n_layers; the
 * per-layer arrays are indexed from the first held layer, and ks_kvcache_index is the one place that converts
 * (a pipeline stage's cache holds a range that does not start at 0). Rows of one head are kept in increasing
 * position order; a KV method may later drop rows of one head (compaction moves the kept rows to the front and
 * rewrites positions and length, so the capacity after them is free for the rows decode appends and the bytes
 * the cache reports are the rows it holds), which is why every head has its own length and position list.
 * A device backend keeps the bookkeeping here (host_storage = 0: k and v stay NULL) and the rows on its device,
 * calling ks_kvcache_commit after writing them.
 *
 * Storage layout (the same for host and device storage; ks_kvcache_offset / ks_kvcache_stride say where a
 * layer's rows are). Full mode (own_cap == cap): each layer owns cap rows per head. Budget mode (own_cap < cap,
 * for a KV method that keeps at most own_cap rows per layer after the prompt): each layer owns own_cap rows per
 * head, and KS_KVCACHE_SLOTS shared prefill slots of cap rows per head hold the layers whose prompt does not
 * fit (layer-major prefill: engine/forward.c): a layer outgrowing its own rows takes a free slot
 * (ks_kvcache_take_slot; the backend copies the rows it had), and its compaction gathers the kept rows back into
 * its own storage (ks_kvcache_leave_slot). Three slots: the layer being prefilled, the one whose compression is
 * deferred behind it (kvstore.h compress_layer), and the next layer, which may start before the GPU has
 * finished moving that one out. KV bytes then scale with the method's budget, not the prompt:
 *     block = Hk * (n_layers * own_cap + n_slots * cap) * d elements for K, the same for V.
 */
#ifndef KS_KVCACHE_H
#define KS_KVCACHE_H

#include <stdint.h>

#include "core/status.h"
#include "kv_args.h" /* ks_evict_args */

#define KS_KVCACHE_SLOTS 3 /* budget mode's prefill slots (see above) */

typedef struct ks_kvcache {
    int first_layer; /* absolute number of the first layer held */
    int n_layers;   /* layers held: first_layer .. first_layer + n_layers - 1 (the backend's layer range) */
    int n_kv_heads; /* Hk */
    int head_dim;   /* d */
    int cap;        /* rows per (layer, head) a layer may reach: the longest sequence this cache accepts */
    int own_cap;    /* rows per head each layer's own storage holds (== cap in full mode) */
    int n_slots;    /* prefill slots of cap rows (0 in full mode, else KS_KVCACHE_SLOTS) */
    int32_t *len;   /* (n_layers, Hk) valid rows; owned */
    int32_t *pos;   /* (n_layers, Hk, cap) original token position of each valid row; owned */
    int32_t *slot;  /* (n_layers) the slot holding the layer's rows, -1: its own storage (ks_kvcache_slot); owned */
    int32_t *slot_layer; /* (n_slots) the absolute layer in each slot, -1: free; owned */
    int next_slot;  /* where the search for a free slot starts (round robin) */
    unsigned sequence; /* incremented by every reset: a backend tells a new sequence from it */
    float *k, *v;   /* (ks_kvcache_elems) fp32 host storage, owned; NULL for a device backend */
    int elem_bytes; /* bytes per stored K or V element: 4 for host fp32 storage (set by init); a device
                       backend sets its own (2 for bf16) */
    const struct ks_kv_kivi *kivi; /* KIVI's packed part of the tokens (kv_kivi.h), set by the store that
                       reserves it; NULL: every token is a full-precision row here; borrowed */
} ks_kvcache;

/* Layers first_layer .. first_layer + n_layers - 1; own_cap: rows per head each layer owns, 0 < own_cap <= cap
 * (cap: full mode). */
ks_status ks_kvcache_init(ks_kvcache *c, int first_layer, int n_layers, int n_kv_heads, int head_dim, int cap,
                          int own_cap, int host_storage);
void ks_kvcache_free(ks_kvcache *c);

/* Empties every head of every layer (storage is kept; every layer back in its own storage). */
void ks_kvcache_reset(ks_kvcache *c);

/* Elements of the K (or V) storage block: Hk * (n_layers * own_cap + n_slots * cap) * d. */
static inline size_t ks_kvcache_elems(const ks_kvcache *c) {
    return (size_t)c->n_kv_heads * ((size_t)c->n_layers * c->own_cap + (size_t)c->n_slots * c->cap) * c->head_dim;
}
/* The index of held `layer` (an absolute number) in the per-layer arrays, 0 .. n_layers - 1: the one conversion
 * between the two numberings. A store or backend that keeps per-layer state of its own indexes it with this. */
static inline int ks_kvcache_index(const ks_kvcache *c, int layer) {
    KS_ASSERT(layer >= c->first_layer && layer < c->first_layer + c->n_layers);
    return layer - c->first_layer;
}
/* The prefill slot holding the layer's rows; -1: its own storage. */
static inline int ks_kvcache_slot(const ks_kvcache *c, int layer) { return c->slot[ks_kvcache_index(c, layer)]; }
/* Rows per head where the layer's rows are now (its row stride per head: own_cap, or cap in a slot). */
static inline int ks_kvcache_stride(const ks_kvcache *c, int layer) {
    return ks_kvcache_slot(c, layer) < 0 ? c->own_cap : c->cap;
}
/* Element offset of the layer's (Hk, stride, d) rows in the K (or V) block. */
static inline size_t ks_kvcache_offset(const ks_kvcache *c, int layer) {
    size_t hd = (size_t)c->n_kv_heads * c->head_dim;
    int i = ks_kvcache_index(c, layer), s = c->slot[i];
    return s < 0 ? (size_t)i * c->own_cap * hd : ((size_t)c->n_layers * c->own_cap + (size_t)s * c->cap) * hd;
}

static inline int32_t *ks_kvcache_len(const ks_kvcache *c, int layer) {
    return c->len + (size_t)ks_kvcache_index(c, layer) * c->n_kv_heads;
}
static inline int32_t *ks_kvcache_pos(const ks_kvcache *c, int layer, int head) {
    return c->pos + ((size_t)ks_kvcache_index(c, layer) * c->n_kv_heads + head) * c->cap;
}
static inline float *ks_kvcache_k(const ks_kvcache *c, int layer) { return c->k + ks_kvcache_offset(c, layer); }
static inline float *ks_kvcache_v(const ks_kvcache *c, int layer) { return c->v + ks_kvcache_offset(c, layer); }

/* 1 when appending n rows to every head of the layer needs a prefill slot first: budget mode, in its own
 * storage, and some head would pass own_cap. */
int ks_kvcache_needs_slot(const ks_kvcache *c, int layer, int n);

/* Budget mode: assigns the layer (in its own storage) a free slot and returns it; -1 when none is free (the
 * caller fails: a chunk-major prefill of more than own_cap rows). With host storage the rows move here; a
 * device backend moves them itself, as for ks_kvcache_leave_slot. */
int ks_kvcache_take_slot(ks_kvcache *c, int layer);

/* The layer (in a slot, every head at most own_cap rows) is back in its own storage and the slot free. With
 * host storage the rows move here; a device backend moves them itself (the first max-len rows per head from the
 * offset/stride before the call to those after it). */
void ks_kvcache_leave_slot(ks_kvcache *c, int layer);

/* The KS_ERR_RANGE of a layer that needs a slot when none is free. */
ks_status ks_kvcache_no_slot(const ks_kvcache *c, int layer);
/* KS_OK when compacting the layer to n_keep (Hk) rows fits where the rows go: its own storage when it is in a
 * slot; else KS_ERR_RANGE naming kv_rows. */
ks_status ks_kvcache_compact_fits(const ks_kvcache *c, int layer, const int32_t *n_keep);

/* Records n new rows per head of `layer` at positions pos0 .. pos0+n-1 after each head's current rows (the
 * caller has written them there). Asserts the capacity (the layer's stride; callers check lengths up front). */
void ks_kvcache_commit(ks_kvcache *c, int layer, int n, int pos0);

/* Host storage: copies k_new, v_new (n, Hk, d) token-major into the head-major rows, then commits. */
void ks_kvcache_append(ks_kvcache *c, int layer, const float *k_new, const float *v_new, int n, int pos0);

/* Removes row `row` of (layer, head): the later rows (positions, and K/V with host storage) move down by one
 * and the length drops by one. The bookkeeping of a decode-time eviction (kvstore.h decode_evict). */
void ks_kvcache_drop_row(ks_kvcache *c, int layer, int head, int row);

/* Host storage: one decode step's eviction on every head of `layer` (ks_ref_evict_row), G query heads per KV
 * head, given the step query's probabilities p, reduced (Hk, ld) for POOLED, per query head (Hk G, ld) for
 * ACCUMULATED, and the layer's running scores (Hk G, ld; ACCUMULATED), whose G rows of a head lose its dropped
 * row too. */
void ks_kvcache_evict(ks_kvcache *c, int layer, const ks_evict_args *a, int G, const float *p, float *scores,
                      int ld);

/* Host running scores (rows, ld) of a layer after row_scores_add's rule: column j of each row, j < n_keys, gets
 * add[r * ld_add + j] added when j < first_new, written otherwise. */
void ks_row_scores_fold(float *scores, int ld, const float *add, int ld_add, int rows, int first_new, int n_keys);

/* dst (Hk G, ld_dst) = src (Hk G, ld_src), G rows per KV head (one per query head, or G = 1), for the len[h]
 * rows each KV head holds: per-row scores in and out of a KV store (row_scores_load, row_scores_read). */
void ks_row_scores_copy(float *dst, int ld_dst, const float *src, int ld_src, const int32_t *len, int Hk, int G);

/* First row of (layer, head) whose position is > qpos - window (window 0 = no window: row 0): the rows a
 * sliding-window query at qpos still sees start there, as rows are in position order. */
int ks_kvcache_window_start(const ks_kvcache *c, int layer, int head, int qpos, int window);

/* 1 when every head of `layer` holds exactly the rows of positions 0 .. n-1 (nothing dropped). */
int ks_kvcache_is_dense(const ks_kvcache *c, int layer, int n);

/* The bookkeeping half of a compaction (the backend moves the K/V rows): head h of `layer` keeps its rows
 * keep[h * ld + i], i < n_keep[h], strictly increasing and < len[h]; their positions move to the front and
 * len[h] = n_keep[h]. Asserts the contract. */
void ks_kvcache_compact(ks_kvcache *c, int layer, const int32_t *keep, const int32_t *n_keep, int ld);

/* Rows held per head summed over the layer range, and the bytes the KV cache holds: rows * 2 (K and V) * d *
 * elem_bytes, or with a packed part (kivi) what ks_kv_kivi_bytes counts: codes, fp16 scales and zeros, and the
 * full-precision keys and values. */
int64_t ks_kvcache_rows(const ks_kvcache *c);
int64_t ks_kvcache_bytes(const ks_kvcache *c);

#endif
