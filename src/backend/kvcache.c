/* kvcache.c — see kvcache.h. */
#include "backend/kvcache.h"

#include <string.h>

#include "backend/kv_kivi.h"
#include "cpu/ref.h" /* ks_ref_evict_row */

ks_status ks_kvcache_init(ks_kvcache *c, int first_layer, int n_layers, int n_kv_heads, int head_dim, int cap,
                          int own_cap, int host_storage) {
    KS_ASSERT(first_layer >= 0 && n_layers >= 0 && n_kv_heads > 0 && head_dim > 0 && cap > 0 && own_cap > 0 &&
              own_cap <= cap);
    memset(c, 0, sizeof *c);
    c->first_layer = first_layer;
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->cap = cap;
    c->own_cap = own_cap;
    c->n_slots = own_cap < cap ? KS_KVCACHE_SLOTS : 0;
    c->elem_bytes = host_storage ? (int)sizeof(float) : 2;
    size_t heads = (size_t)n_layers * n_kv_heads;
    c->len = ks_calloc(heads ? heads : 1, sizeof(int32_t), "KV cache lengths");
    c->pos = ks_malloc(sizeof(int32_t) * (heads ? heads : 1) * cap, "KV cache positions");
    c->slot = ks_malloc(sizeof(int32_t) * (n_layers ? n_layers : 1), "KV cache slot map");
    c->slot_layer = ks_malloc(sizeof(int32_t) * KS_KVCACHE_SLOTS, "KV cache slot map");
    if (!c->len || !c->pos || !c->slot || !c->slot_layer) goto nomem;
    ks_kvcache_reset(c);
    if (host_storage) {
        size_t floats = ks_kvcache_elems(c);
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
    free(c->slot);
    free(c->slot_layer);
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

void ks_kvcache_reset(ks_kvcache *c) {
    memset(c->len, 0, sizeof(int32_t) * c->n_layers * c->n_kv_heads);
    for (int l = 0; l < c->n_layers; l++) c->slot[l] = -1;
    for (int s = 0; s < KS_KVCACHE_SLOTS; s++) c->slot_layer[s] = -1;
    c->next_slot = 0;
    c->sequence++;
}

int ks_kvcache_needs_slot(const ks_kvcache *c, int layer, int n) {
    if (!c->n_slots || ks_kvcache_slot(c, layer) >= 0) return 0; /* full mode: callers check the capacity up front */
    const int32_t *len = ks_kvcache_len(c, layer);
    for (int h = 0; h < c->n_kv_heads; h++)
        if (len[h] + n > c->own_cap) return 1;
    return 0;
}

/* Host storage: the first len[h] rows of each head of K and V from (from, from_stride) to where the layer is
 * now. The two regions never overlap (own storage and slots are disjoint). */
static void move_rows(ks_kvcache *c, int layer, size_t from, int from_stride) {
    if (!c->k) return;
    const int32_t *len = ks_kvcache_len(c, layer);
    size_t to = ks_kvcache_offset(c, layer), d = (size_t)c->head_dim;
    int to_stride = ks_kvcache_stride(c, layer);
    for (int h = 0; h < c->n_kv_heads; h++) {
        size_t src = from + (size_t)h * from_stride * d, dst = to + (size_t)h * to_stride * d;
        memcpy(c->k + dst, c->k + src, sizeof(float) * len[h] * d);
        memcpy(c->v + dst, c->v + src, sizeof(float) * len[h] * d);
    }
}

int ks_kvcache_take_slot(ks_kvcache *c, int layer) {
    KS_ASSERT(ks_kvcache_slot(c, layer) < 0);
    for (int i = 0; i < c->n_slots; i++) {
        int s = (c->next_slot + i) % c->n_slots;
        if (c->slot_layer[s] >= 0) continue;
        size_t from = ks_kvcache_offset(c, layer);
        c->slot[ks_kvcache_index(c, layer)] = s;
        c->slot_layer[s] = layer;
        c->next_slot = (s + 1) % c->n_slots;
        move_rows(c, layer, from, c->own_cap);
        return s;
    }
    return -1;
}

ks_status ks_kvcache_no_slot(const ks_kvcache *c, int layer) {
    return ks_fail(KS_ERR_RANGE, "KV cache: layer %d outgrows the %d rows per head each layer holds (kv_rows) and "
                                 "all %d prefill slots are taken; a longer prompt must be prefilled layer by layer "
                                 "(ks_forward_prefill, single stage) under a KV method that compresses every layer",
                   layer, c->own_cap, c->n_slots);
}

ks_status ks_kvcache_compact_fits(const ks_kvcache *c, int layer, const int32_t *n_keep) {
    if (ks_kvcache_slot(c, layer) < 0) return KS_OK;
    for (int h = 0; h < c->n_kv_heads; h++)
        if (n_keep[h] > c->own_cap)
            return ks_fail(KS_ERR_RANGE, "KV cache: layer %d keeps %d rows of KV head %d after its prompt but each "
                                         "layer holds %d (kv_rows); raise kv_rows or lower the method's budget",
                           layer, n_keep[h], h, c->own_cap);
    return KS_OK;
}

void ks_kvcache_leave_slot(ks_kvcache *c, int layer) {
    int s = ks_kvcache_slot(c, layer);
    KS_ASSERT(s >= 0 && c->slot_layer[s] == layer);
    const int32_t *len = ks_kvcache_len(c, layer);
    for (int h = 0; h < c->n_kv_heads; h++) KS_ASSERT(len[h] <= c->own_cap);
    size_t from = ks_kvcache_offset(c, layer);
    c->slot[ks_kvcache_index(c, layer)] = -1;
    c->slot_layer[s] = -1;
    move_rows(c, layer, from, c->cap);
}

void ks_kvcache_commit(ks_kvcache *c, int layer, int n, int pos0) {
    int32_t *len = ks_kvcache_len(c, layer);
    for (int h = 0; h < c->n_kv_heads; h++) {
        KS_ASSERT(len[h] + n <= ks_kvcache_stride(c, layer));
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
        KS_ASSERT(len[h] + n <= ks_kvcache_stride(c, layer));
        size_t row0 = ((size_t)h * ks_kvcache_stride(c, layer) + len[h]) * d;
        for (int t = 0; t < n; t++) {
            memcpy(K + row0 + (size_t)t * d, k_new + ((size_t)t * Hk + h) * d, sizeof(float) * d);
            memcpy(V + row0 + (size_t)t * d, v_new + ((size_t)t * Hk + h) * d, sizeof(float) * d);
        }
    }
    ks_kvcache_commit(c, layer, n, pos0);
}

void ks_kvcache_drop_row(ks_kvcache *c, int layer, int head, int row) {
    int32_t *len = ks_kvcache_len(c, layer), *pos = ks_kvcache_pos(c, layer, head);
    KS_ASSERT(row >= 0 && row < len[head]);
    int after = len[head] - row - 1;
    memmove(pos + row, pos + row + 1, sizeof(int32_t) * after);
    if (c->k) {
        size_t d = (size_t)c->head_dim;
        size_t at = ks_kvcache_offset(c, layer) + ((size_t)head * ks_kvcache_stride(c, layer) + row) * d;
        memmove(c->k + at, c->k + at + d, sizeof(float) * after * d);
        memmove(c->v + at, c->v + at + d, sizeof(float) * after * d);
    }
    len[head]--;
}

void ks_kvcache_evict(ks_kvcache *c, int layer, const ks_evict_args *a, int G, const float *p, float *scores,
                      int ld) {
    int acc = a->rule == KS_EVICT_ACCUMULATED, rows = acc ? G : 1; /* rows of p and scores per KV head */
    for (int h = 0; h < c->n_kv_heads; h++) {
        int len = ks_kvcache_len(c, layer)[h];
        float *s = acc ? scores + (size_t)h * G * ld : NULL;
        int row = ks_ref_evict_row(a, len, p ? p + (size_t)h * rows * ld : NULL, s, G, ld);
        if (row < 0) continue;
        for (int i = 0; s && i < G; i++)
            memmove(s + (size_t)i * ld + row, s + (size_t)i * ld + row + 1, sizeof(float) * (len - row - 1));
        ks_kvcache_drop_row(c, layer, h, row);
    }
}

void ks_row_scores_fold(float *scores, int ld, const float *add, int ld_add, int rows, int first_new, int n_keys) {
    for (int r = 0; r < rows; r++) {
        float *s = scores + (size_t)r * ld;
        const float *a = add + (size_t)r * ld_add;
        for (int j = 0; j < n_keys; j++) s[j] = j < first_new ? s[j] + a[j] : a[j];
    }
}

void ks_row_scores_copy(float *dst, int ld_dst, const float *src, int ld_src, const int32_t *len, int Hk, int G) {
    for (int r = 0; r < Hk * G; r++)
        memcpy(dst + (size_t)r * ld_dst, src + (size_t)r * ld_src, sizeof(float) * len[r / G]);
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

int64_t ks_kvcache_bytes(const ks_kvcache *c) {
    if (c->kivi) return ks_kv_kivi_bytes(c->kivi, c);
    return ks_kvcache_rows(c) * 2 * c->head_dim * c->elem_bytes;
}
