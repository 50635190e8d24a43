/* kv_kivi.c — see kv_kivi.h. */
#include "backend/kv_kivi.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/kivi_ref.h"

ks_status ks_kivi_params_check(const ks_kivi_params *p, int d) {
    int kb = p->k_bits, vb = p->v_bits;
    if ((kb != 2 && kb != 4 && !ks_kivi_is_raw(kb)) || (vb != 2 && vb != 4 && !ks_kivi_is_raw(vb)))
        return ks_fail(KS_ERR_ARG, "KIVI: k_bits %d and v_bits %d must each be 2 or 4", kb, vb);
    if (p->group <= 0 || (d > 0 && d % p->group))
        return ks_fail(KS_ERR_ARG, "KIVI: group_size %d must divide the model's head_dim %d (values are grouped "
                                   "along channels)", p->group, d);
    if (p->residual <= 0 || p->residual % p->group)
        return ks_fail(KS_ERR_ARG, "KIVI: residual_length %d must be a positive multiple of group_size %d (keys are "
                                   "quantized in whole groups of tokens)", p->residual, p->group);
    return KS_OK;
}

void ks_kv_kivi_free(ks_kv_kivi *q) {
    free(q->nq_k), free(q->nq_v), free(q->off), free(q->kc), free(q->k_chan), free(q->pos);
    free(q->k_codes), free(q->k_scale), free(q->k_zero);
    free(q->v_codes), free(q->v_scale), free(q->v_zero), free(q->view), free(q->jobs);
    memset(q, 0, sizeof *q);
}

/* Every head stores every key channel, in order. */
static void all_channels(ks_kv_kivi *q) {
    size_t heads = (size_t)q->n_layers * q->Hk, d = (size_t)q->shape.d;
    for (size_t i = 0; i < heads; i++) {
        q->kc[i] = (int32_t)d;
        for (size_t ch = 0; ch < d; ch++) q->k_chan[i * d + ch] = (int32_t)ch;
    }
}

/* An array of n elements of `size` bytes (at least one element). */
static void *alloc(size_t n, size_t size, const char *what) { return ks_calloc(n ? n : 1, size, what); }

/* Every key channel stored; the packed arrays stay NULL. */
ks_status ks_kv_kivi_init_counts(ks_kv_kivi *q, const ks_kvcache *c, const ks_kivi_params *p, int tokens) {
    memset(q, 0, sizeof *q);
    KS_TRY(ks_kivi_params_check(p, c->head_dim));
    q->p = *p;
    q->shape = ks_kivi_shape_of(p, c->head_dim, tokens > 0 && tokens < c->cap ? tokens : c->cap);
    q->n_layers = c->n_layers, q->Hk = c->n_kv_heads;
    q->sequence = c->sequence;
    size_t heads = (size_t)c->n_layers * c->n_kv_heads, d = (size_t)q->shape.d, cap = (size_t)q->shape.cap;
    q->nq_k = alloc(heads, sizeof(int32_t), "KIVI counts");
    q->nq_v = alloc(heads, sizeof(int32_t), "KIVI counts");
    q->off = alloc(heads, sizeof(int32_t), "KIVI counts");
    q->kc = alloc(heads, sizeof(int32_t), "KIVI key channel counts");
    q->k_chan = alloc(heads * d, sizeof(int32_t), "KIVI key channels");
    q->pos = alloc(heads * cap, sizeof(int32_t), "KIVI positions");
    q->jobs = alloc((size_t)c->n_kv_heads, sizeof(ks_kivi_job), "KIVI flush jobs");
    if (!q->nq_k || !q->nq_v || !q->off || !q->kc || !q->k_chan || !q->pos || !q->jobs) {
        ks_kv_kivi_free(q);
        return ks_fail_context(KS_ERR_NOMEM, "KIVI counts of %d layers x %d KV heads x %d tokens", c->n_layers,
                               c->n_kv_heads, q->shape.cap);
    }
    all_channels(q);
    return KS_OK;
}

ks_status ks_kv_kivi_init(ks_kv_kivi *q, const ks_kvcache *c, const ks_kivi_params *p, int tokens) {
    KS_TRY(ks_kv_kivi_init_counts(q, c, p, tokens));
    const ks_kivi_shape *s = &q->shape;
    size_t heads = (size_t)c->n_layers * c->n_kv_heads, d = (size_t)s->d, cap = (size_t)s->cap;
    q->k_codes = alloc(heads * d * s->k_words, sizeof(uint32_t), "KIVI key codes");
    q->k_scale = alloc(heads * d * s->k_groups, sizeof(uint16_t), "KIVI key scales");
    q->k_zero = alloc(heads * d * s->k_groups, sizeof(uint16_t), "KIVI key zeros");
    q->v_codes = alloc(heads * cap * s->v_words, sizeof(uint32_t), "KIVI value codes");
    q->v_scale = alloc(heads * cap * s->v_groups, sizeof(uint16_t), "KIVI value scales");
    q->v_zero = alloc(heads * cap * s->v_groups, sizeof(uint16_t), "KIVI value zeros");
    q->view = alloc((size_t)c->n_kv_heads, sizeof(ks_kivi_head), "KIVI head views");
    if (!q->view || !q->k_codes || !q->k_scale || !q->k_zero || !q->v_codes || !q->v_scale || !q->v_zero) {
        ks_kv_kivi_free(q);
        return ks_fail_context(KS_ERR_NOMEM, "KIVI packed cache of %d layers x %d KV heads x %d tokens",
                               c->n_layers, c->n_kv_heads, s->cap);
    }
    return KS_OK;
}

/* Index of (layer, head) in the per-head arrays. */
static size_t head_index(const ks_kv_kivi *q, const ks_kvcache *c, int layer, int head) {
    return (size_t)ks_kvcache_index(c, layer) * q->Hk + head;
}

/* The counts of a new sequence read as zero: reset them when the cache's sequence moved on. */
static void follow_sequence(ks_kv_kivi *q, const ks_kvcache *c) {
    if (q->sequence == c->sequence) return;
    size_t heads = (size_t)q->n_layers * q->Hk;
    memset(q->nq_k, 0, sizeof(int32_t) * heads);
    memset(q->nq_v, 0, sizeof(int32_t) * heads);
    memset(q->off, 0, sizeof(int32_t) * heads);
    all_channels(q);
    q->sequence = c->sequence;
}

ks_kivi_counts ks_kv_kivi_counts(const ks_kv_kivi *q, const ks_kvcache *c, int layer, int head) {
    int len = ks_kvcache_len(c, layer)[head];
    if (q->sequence != c->sequence) return (ks_kivi_counts){.n = len};
    size_t i = head_index(q, c, layer, head);
    return (ks_kivi_counts){.nq_k = q->nq_k[i], .nq_v = q->nq_v[i], .off = q->off[i], .n = q->off[i] + len};
}

ks_status ks_kv_kivi_set_channels(ks_kv_kivi *q, const ks_kvcache *c, int layer, int head, const int32_t *chan,
                                  int kc) {
    follow_sequence(q, c);
    size_t i = head_index(q, c, layer, head);
    int ok = kc >= 1 && kc <= q->shape.d;
    for (int j = 0; ok && j < kc; j++) ok = chan[j] >= 0 && chan[j] < q->shape.d && (j == 0 || chan[j] > chan[j - 1]);
    if (!ok)
        return ks_fail(KS_ERR_ARG, "key channels of layer %d, KV head %d: %d channels, not a strictly increasing list "
                                   "of head channels below %d", layer, head, kc, q->shape.d);
    if (q->nq_k[i])
        return ks_fail(KS_ERR_UNSUPPORTED, "key channels of layer %d, KV head %d: its keys are packed already (%d "
                                           "tokens); the stored channels are set before the first flush", layer,
                       head, q->nq_k[i]);
    q->kc[i] = kc;
    memcpy(q->k_chan + i * q->shape.d, chan, sizeof(int32_t) * kc);
    return KS_OK;
}

ks_status ks_kv_kivi_set_layer_channels(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *chan,
                                        const int32_t *n_chan, int ld) {
    if (!q)
        return ks_fail(KS_ERR_UNSUPPORTED, "narrowed keys: layer %d has no packed part (a channel-pruning method "
                                           "stores its narrowed keys through KIVI: write ...+ThinK+KIVI)", layer);
    for (int h = 0; h < c->n_kv_heads; h++)
        KS_TRY(ks_kv_kivi_set_channels(q, c, layer, h, chan + (size_t)h * ld, n_chan[h]));
    return KS_OK;
}

int ks_kv_kivi_packed(const ks_kv_kivi *q, const ks_kvcache *c, int layer) {
    for (int h = 0; h < q->Hk; h++) {
        ks_kivi_counts n = ks_kv_kivi_counts(q, c, layer, h);
        if (n.nq_k || n.nq_v) return 1;
    }
    return 0;
}

/* The packed arrays of head i (an index of head_index). */
static uint32_t *k_codes(const ks_kv_kivi *q, size_t i) { return q->k_codes + i * q->shape.d * q->shape.k_words; }
static uint16_t *k_scale(const ks_kv_kivi *q, size_t i) { return q->k_scale + i * q->shape.d * q->shape.k_groups; }
static uint16_t *k_zero(const ks_kv_kivi *q, size_t i) { return q->k_zero + i * q->shape.d * q->shape.k_groups; }
static uint32_t *v_codes(const ks_kv_kivi *q, size_t i) { return q->v_codes + i * q->shape.cap * q->shape.v_words; }
static uint16_t *v_scale(const ks_kv_kivi *q, size_t i) { return q->v_scale + i * q->shape.cap * q->shape.v_groups; }
static uint16_t *v_zero(const ks_kv_kivi *q, size_t i) { return q->v_zero + i * q->shape.cap * q->shape.v_groups; }

/* The cache's host row of (layer, head) holding token t (t >= off). */
static const float *row_of(const float *block, const ks_kvcache *c, int layer, int head, int t, int off) {
    return block + ((size_t)head * ks_kvcache_stride(c, layer) + (t - off)) * c->head_dim;
}

/* KS_ERR_RANGE when a job of the plan would pack past the tokens the part holds. */
static ks_status plan_fits(const ks_kv_kivi *q, int layer, const ks_kivi_job *jobs) {
    for (int h = 0; h < q->Hk; h++) {
        int end = jobs[h].k_t0 + jobs[h].k_n > jobs[h].v_t0 + jobs[h].v_n ? jobs[h].k_t0 + jobs[h].k_n
                                                                          : jobs[h].v_t0 + jobs[h].v_n;
        if (end > q->shape.cap)
            return ks_fail(KS_ERR_RANGE, "KIVI: layer %d, KV head %d would hold %d packed tokens; its packed part "
                                         "holds %d (a budget-sized cache's: the selection's budget plus the generated "
                                         "tokens; use the full cache for longer generations)",
                           layer, h, end, q->shape.cap);
    }
    return KS_OK;
}

ks_status ks_kv_kivi_plan(ks_kv_kivi *q, const ks_kvcache *c, int layer, ks_kivi_job *jobs) {
    follow_sequence(q, c);
    int R = q->p.residual;
    for (int h = 0; h < q->Hk; h++) {
        size_t i = head_index(q, c, layer, h);
        jobs[h] = ks_kivi_flush_job(q->off[i] + ks_kvcache_len(c, layer)[h], q->nq_k[i], q->nq_v[i], R);
    }
    return plan_fits(q, layer, jobs);
}

ks_status ks_kv_kivi_plan_pack(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *upto,
                               ks_kivi_job *jobs) {
    KS_ASSERT(ks_kivi_is_raw(q->p.k_bits) && ks_kivi_is_raw(q->p.v_bits));
    follow_sequence(q, c);
    for (int h = 0; h < q->Hk; h++) {
        size_t i = head_index(q, c, layer, h);
        KS_ASSERT(upto[h] <= q->off[i] + ks_kvcache_len(c, layer)[h]);
        int nk = upto[h] - q->nq_k[i], nv = upto[h] - q->nq_v[i];
        jobs[h] = (ks_kivi_job){.k_t0 = q->nq_k[i], .k_n = nk > 0 ? nk : 0, .v_t0 = q->nq_v[i],
                                .v_n = nv > 0 ? nv : 0};
    }
    return plan_fits(q, layer, jobs);
}

void ks_kv_kivi_advance(ks_kv_kivi *q, const ks_kvcache *c, int layer, const ks_kivi_job *jobs,
                        ks_kivi_counts *counts) {
    for (int h = 0; h < q->Hk; h++) {
        size_t i = head_index(q, c, layer, h);
        q->nq_k[i] += jobs[h].k_n;
        q->nq_v[i] += jobs[h].v_n;
        if (counts) counts[h] = ks_kv_kivi_counts(q, c, layer, h);
    }
}

/* Runs a plan on the host arrays from the cache's host rows, then advances the counts. */
static void run_plan(ks_kv_kivi *q, const ks_kvcache *c, int layer, const ks_kivi_job *jobs,
                     ks_kivi_counts *counts, ks_kivi_error *err) {
    KS_ASSERT(c->k && q->k_codes); /* host rows, host arrays */
    const ks_kivi_shape *s = &q->shape;
    int d = s->d;
    const float *K = ks_kvcache_k(c, layer), *V = ks_kvcache_v(c, layer);
    for (int h = 0; h < q->Hk; h++) {
        size_t i = head_index(q, c, layer, h);
        int off = q->off[i];
        const ks_kivi_job *j = &jobs[h];
        if (j->k_n)
            ks_kivi_quant_keys(s, row_of(K, c, layer, h, j->k_t0, off), d, j->k_t0, j->k_n, q->k_chan + i * d,
                               q->kc[i], k_codes(q, i), k_scale(q, i), k_zero(q, i), err ? err->k : NULL);
        if (j->v_n)
            ks_kivi_quant_values(s, row_of(V, c, layer, h, j->v_t0, off), d, j->v_t0, j->v_n, v_codes(q, i),
                                 v_scale(q, i), v_zero(q, i), err ? err->v : NULL);
    }
    ks_kv_kivi_advance(q, c, layer, jobs, counts);
}

ks_status ks_kv_kivi_flush(ks_kv_kivi *q, const ks_kvcache *c, int layer, ks_kivi_counts *counts,
                           ks_kivi_error *err) {
    KS_TRY(ks_kv_kivi_plan(q, c, layer, q->jobs));
    run_plan(q, c, layer, q->jobs, counts, err);
    return KS_OK;
}

ks_status ks_kv_kivi_pack(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *upto,
                          ks_kivi_counts *counts) {
    KS_TRY(ks_kv_kivi_plan_pack(q, c, layer, upto, q->jobs));
    run_plan(q, c, layer, q->jobs, counts, NULL);
    return KS_OK;
}

ks_status ks_kv_kivi_refuse_evict(const ks_kv_kivi *q, const ks_kvcache *c, int layer) {
    if (!q || !ks_kv_kivi_packed(q, c, layer)) return KS_OK;
    return ks_fail(KS_ERR_UNSUPPORTED, "KIVI: layer %d holds quantized tokens; decode-time eviction cannot run on "
                                       "it (H2O, StreamingLLM and CakeKV's decode eviction cannot precede KIVI)",
                   layer);
}

ks_status ks_kivi_window_check(int window, int window_first, const ks_kvcache *c) {
    int last = c->first_layer + c->n_layers;
    if (window <= 0 || window_first >= last) return KS_OK;
    return ks_fail(KS_ERR_UNSUPPORTED, "KIVI: layers %d and above attend within a sliding window of %d tokens "
                                       "(use_sliding_window); the packed cache serves full attention only",
                   window_first > c->first_layer ? window_first : c->first_layer, window);
}

ks_status ks_kv_kivi_compacted(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *keep,
                               const int32_t *n_keep, int ld) {
    if (!ks_kv_kivi_packed(q, c, layer)) return KS_OK; /* a selection before the quantization */
    const int32_t *len = ks_kvcache_len(c, layer);
    for (int h = 0; h < q->Hk; h++) {
        ks_kivi_counts n = ks_kv_kivi_counts(q, c, layer, h);
        int s = len[h] - n_keep[h], stale = ks_kivi_stale(n.nq_k, n.nq_v, n.off);
        int suffix = s >= 0 && s <= stale;
        for (int j = 0; suffix && j < n_keep[h]; j++) suffix = keep[(size_t)h * ld + j] == s + j;
        if (!suffix)
            return ks_fail(KS_ERR_UNSUPPORTED, "KIVI: layer %d, KV head %d holds quantized tokens; a compaction may "
                                               "only release rows packed in both keys and values, so no method "
                                               "may evict rows after KIVI quantized them (H2O, StreamingLLM, "
                                               "CakeKV decode eviction)", layer, h);
    }
    for (int h = 0; h < q->Hk; h++) {
        size_t i = head_index(q, c, layer, h);
        int s = len[h] - n_keep[h];
        memcpy(q->pos + i * q->shape.cap + q->off[i], ks_kvcache_pos(c, layer, h), sizeof(int32_t) * s);
        q->off[i] += s;
    }
    return KS_OK;
}

ks_kivi_head ks_kv_kivi_head(const ks_kv_kivi *q, const ks_kvcache *c, int layer, int head) {
    ks_kivi_counts n = ks_kv_kivi_counts(q, c, layer, head);
    size_t i = head_index(q, c, layer, head);
    return (ks_kivi_head){.k_codes = k_codes(q, i), .k_scale = k_scale(q, i), .k_zero = k_zero(q, i),
                          .k_chan = q->k_chan + i * q->shape.d, .kc = q->kc[i], .v_codes = v_codes(q, i),
                          .v_scale = v_scale(q, i), .v_zero = v_zero(q, i), .nq_k = n.nq_k, .nq_v = n.nq_v,
                          .n = n.n, .off = n.off, .k = row_of(ks_kvcache_k(c, layer), c, layer, head, n.off, n.off),
                          .v = row_of(ks_kvcache_v(c, layer), c, layer, head, n.off, n.off)};
}

int64_t ks_kv_kivi_layer_bytes(const ks_kv_kivi *q, const ks_kvcache *c, int layer) {
    const ks_kivi_shape *s = &q->shape;
    int pk = ks_kivi_per_word(s->k_bits);
    int64_t bytes = 0;
    for (int h = 0; h < q->Hk; h++) {
        ks_kivi_counts n = ks_kv_kivi_counts(q, c, layer, h);
        int64_t kc = q->kc[head_index(q, c, layer, h)];
        bytes += kc * ((n.nq_k + pk - 1) / pk) * 4 + (s->k_groups ? kc * (n.nq_k / s->group) * 2 * 2 : 0);
        bytes += (int64_t)n.nq_v * (s->v_words * 4 + s->v_groups * 2 * 2);
        bytes += (int64_t)(2 * n.n - n.nq_k - n.nq_v) * s->d * c->elem_bytes;
    }
    return bytes;
}

int64_t ks_kv_kivi_bytes(const ks_kv_kivi *q, const ks_kvcache *c) {
    int64_t bytes = 0;
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++) bytes += ks_kv_kivi_layer_bytes(q, c, l);
    return bytes;
}

int64_t ks_kv_kivi_alloc_bytes(const ks_kv_kivi *q) {
    const ks_kivi_shape *s = &q->shape;
    int64_t heads = (int64_t)q->n_layers * q->Hk;
    return heads * ((int64_t)s->d * (s->k_words * 4 + s->k_groups * 2 * 2) +
                    (int64_t)s->cap * (s->v_words * 4 + s->v_groups * 2 * 2));
}
