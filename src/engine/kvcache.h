/* kvcache.h — the KV cache of a layer range: per layer and per KV head, its own length and the original token
 * position of every kept row; storage head-major as kernels/cpu/ref.h describes.
 *
 *     ks_kvcache c = {0};
 *     KS_TRY(ks_kvcache_init(&c, n_layers, Hk, d, cap, 1));        // 1 = fp32 host storage (CPU backend)
 *     ks_kvcache_append(&c, l, k_new, v_new, n, pos0);              // k_new, v_new: (n, Hk, d) token-major
 *     float *K = ks_kvcache_k(&c, l);  int32_t *len = ks_kvcache_len(&c, l);   // (Hk, cap, d), (Hk)
 *     ks_kvcache_reset(&c);                                         // next sequence
 *     ks_kvcache_free(&c);                                          // accepts zeroed or half-built
 *
 * Layers are indexed from 0 within the range the backend holds. Rows of one head are kept in increasing
 * position order; a KV method may later drop rows of one head (compaction moves the kept rows to the front and
 * rewrites positions and length, so the capacity after them is free for the rows decode appends and the bytes
 * the cache reports are the rows it holds), which is why every head has its own length and position list.
 * A device backend keeps the bookkeeping here (host_storage = 0: k and v stay NULL) and the rows on its device,
 * calling ks_kvcache_commit after writing them.
 */
#ifndef KS_KVCACHE_H
#define KS_KVCACHE_H

#include <stdint.h>

#include "core/status.h"

typedef struct ks_kvcache {
    int n_layers;   /* layers held (the backend's layer range) */
    int n_kv_heads; /* Hk */
    int head_dim;   /* d */
    int cap;        /* rows per (layer, head): the longest sequence this cache accepts */
    int32_t *len;   /* (n_layers, Hk) valid rows; owned */
    int32_t *pos;   /* (n_layers, Hk, cap) original token position of each valid row; owned */
    float *k, *v;   /* (n_layers, Hk, cap, d) fp32 host storage, owned; NULL for a device backend */
    int elem_bytes; /* bytes per stored K or V element: 4 for host fp32 storage (set by init); a device
                       backend sets its own (2 for bf16) */
} ks_kvcache;

ks_status ks_kvcache_init(ks_kvcache *c, int n_layers, int n_kv_heads, int head_dim, int cap, int host_storage);
void ks_kvcache_free(ks_kvcache *c);

/* Empties every head of every layer (storage is kept). */
void ks_kvcache_reset(ks_kvcache *c);

static inline int32_t *ks_kvcache_len(const ks_kvcache *c, int layer) { return c->len + (size_t)layer * c->n_kv_heads; }
static inline int32_t *ks_kvcache_pos(const ks_kvcache *c, int layer, int head) {
    return c->pos + ((size_t)layer * c->n_kv_heads + head) * c->cap;
}
static inline float *ks_kvcache_k(const ks_kvcache *c, int layer) {
    return c->k + (size_t)layer * c->n_kv_heads * c->cap * c->head_dim;
}
static inline float *ks_kvcache_v(const ks_kvcache *c, int layer) {
    return c->v + (size_t)layer * c->n_kv_heads * c->cap * c->head_dim;
}

/* Records n new rows per head of `layer` at positions pos0 .. pos0+n-1 after each head's current rows (the
 * caller has written them there). Asserts the capacity (callers check lengths against cap up front). */
void ks_kvcache_commit(ks_kvcache *c, int layer, int n, int pos0);

/* Host storage: copies k_new, v_new (n, Hk, d) token-major into the head-major rows, then commits. */
void ks_kvcache_append(ks_kvcache *c, int layer, const float *k_new, const float *v_new, int n, int pos0);

/* First row of (layer, head) whose position is > qpos - window (window 0 = no window: row 0): the rows a
 * sliding-window query at qpos still sees start there, as rows are in position order. */
int ks_kvcache_window_start(const ks_kvcache *c, int layer, int head, int qpos, int window);

/* 1 when every head of `layer` holds exactly the rows of positions 0 .. n-1 (nothing dropped). */
int ks_kvcache_is_dense(const ks_kvcache *c, int layer, int n);

/* The bookkeeping half of a compaction (the backend moves the K/V rows): head h of `layer` keeps its rows
 * keep[h * ld + i], i < n_keep[h], strictly increasing and < len[h]; their positions move to the front and
 * len[h] = n_keep[h]. Asserts the contract. */
void ks_kvcache_compact(ks_kvcache *c, int layer, const int32_t *keep, const int32_t *n_keep, int ld);

/* Rows held per head summed over the layer range, and the bytes they occupy: rows * 2 (K and V) * d *
 * elem_bytes. */
int64_t ks_kvcache_rows(const ks_kvcache *c);
int64_t ks_kvcache_bytes(const ks_kvcache *c);

#endif
