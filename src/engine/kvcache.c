/* kvcache.c — see kvcache.h. */
#include "engine/kvcache.h"

#include <string.h>

ks_status ks_kvcache_init(ks_kvcache *c, int n_layers, int n_kv_heads, int head_dim, int cap, int host_storage) {
    KS_ASSERT(n_layers >= 0 && n_kv_heads > 0 && head_dim > 0 && cap > 0);
    memset(c, 0, sizeof *c);
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->cap = cap;
    c->elem_bytes = host_storage ? (int)sizeof(float) : 2;
    size_t heads = (size_t)n_layers * n_kv_heads;
    c->len = ks_calloc(heads ? heads : 1, sizeof(int32_t), "KV cache lengths");
    c->pos = ks_malloc(sizeof(int32_t) * (heads ? heads : 1) * cap, "KV cache positions");
    if (!c->len || !c->pos) goto nomem;
    if (host_storage) {
        size_t floats = heads * cap * head_dim;
        c->k = ks_malloc(sizeof(float) * (floats ? floats : 1), "KV cache keys");
        c->v = ks_malloc(sizeof(float) * (floats ? floats : 1), "KV cache values");
        if (!c->k || !c->v) goto nomem;
    }
    return KS_OK;
nomem:
    ks_kvcache_free(c);
    return ks_fail_context(KS_ERR_NOMEM, "KV cache of %d layers x %d heads x %d rows x %d dims", n_layers,
                           n_kv_heads, cap, head_dim);
}

void ks_kvcache_free(ks_kvcache *c) {
    free(c->len);
    free(c->pos);
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

void ks_kvcache_reset(ks_kvcache *c) { memset(c->len, 0, sizeof(int32_t) * c->n_layers * c->n_kv_heads); }

void ks_kvcache_commit(ks_kvcache *c, int layer, int n, int pos0) {
    int32_t *len = ks_kvcache_len(c, layer);
    for (int h = 0; h < c->n_kv_heads; h++) {
        KS_ASSERT(len[h] + n <= c->cap);
        int32_t *pos = ks_kvcache_pos(c, layer, h);
        for (int t = 0; t < n; t++) pos[len[h] + t] = pos0 + t;
        len[h] += n;
    }
}

void ks_kvcache_append(ks_kvcache *c, int layer, const float *k_new, const float *v_new, int n, int pos0) {
    int Hk = c->n_kv_heads, d = c->head_dim;
    const int32_t *len = ks_kvcache_len(c, layer);
    float *K = ks_kvcache_k(c, layer), *V = ks_kvcache_v(c, layer);
    for (int h = 0; h < Hk; h++) {
        KS_ASSERT(len[h] + n <= c->cap);
        size_t row0 = ((size_t)h * c->cap + len[h]) * d;
        for (int t = 0; t < n; t++) {
            memcpy(K + row0 + (size_t)t * d, k_new + ((size_t)t * Hk + h) * d, sizeof(float) * d);
            memcpy(V + row0 + (size_t)t * d, v_new + ((size_t)t * Hk + h) * d, sizeof(float) * d);
        }
    }
    ks_kvcache_commit(c, layer, n, pos0);
}

int ks_kvcache_window_start(const ks_kvcache *c, int layer, int head, int qpos, int window) {
    if (window <= 0) return 0;
    const int32_t *pos = ks_kvcache_pos(c, layer, head);
    int lo = 0, hi = ks_kvcache_len(c, layer)[head]; /* binary search: first row with pos > qpos - window */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (pos[mid] > qpos - window)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

int ks_kvcache_is_dense(const ks_kvcache *c, int layer, int n) {
    const int32_t *len = ks_kvcache_len(c, layer);
    for (int h = 0; h < c->n_kv_heads; h++)
        if (len[h] != n || (n > 0 && ks_kvcache_pos(c, layer, h)[n - 1] != n - 1)) return 0;
    return 1;
}

void ks_kvcache_compact(ks_kvcache *c, int layer, const int32_t *keep, const int32_t *n_keep, int ld) {
    int32_t *len = ks_kvcache_len(c, layer);
    for (int h = 0; h < c->n_kv_heads; h++) {
        const int32_t *kh = keep + (size_t)h * ld;
        int32_t *pos = ks_kvcache_pos(c, layer, h);
        KS_ASSERT(n_keep[h] >= 0 && n_keep[h] <= len[h]);
        for (int i = 0; i < n_keep[h]; i++) {
            KS_ASSERT(kh[i] >= i && kh[i] < len[h] && (i == 0 || kh[i] > kh[i - 1]));
            pos[i] = pos[kh[i]];
        }
        len[h] = n_keep[h];
    }
}

int64_t ks_kvcache_rows(const ks_kvcache *c) {
    int64_t rows = 0;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++) rows += c->len[i];
    return rows;
}

int64_t ks_kvcache_bytes(const ks_kvcache *c) { return ks_kvcache_rows(c) * 2 * c->head_dim * c->elem_bytes; }
