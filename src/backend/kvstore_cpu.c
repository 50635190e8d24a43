/* kvstore_cpu.c — the KV store over fp32 host rows (kvstore_cpu.h), computing with kernels/cpu/fast.h and the
 * references of kernels/cpu/ref.h. */
#include "backend/kvstore_cpu.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/fast.h"
#include "cpu/flexprefill_ref.h"
#include "cpu/kivi_ref.h"

static ks_kvstore_cpu *cpu_of(ks_kvstore *kv) { return (ks_kvstore_cpu *)kv; }

void ks_kvstore_cpu_free(ks_kvstore_cpu *s) {
    free(s->start);
    free(s->score_work);
    free(s->evict_p);
    free(s->row_scores);
    if (s->kivi) ks_kv_kivi_free(s->kivi), s->p.cache->kivi = NULL;
    free(s->kivi);
    s->kivi = NULL;
    s->start = NULL;
    s->score_work = s->evict_p = s->row_scores = NULL;
}

ks_status ks_kvstore_cpu_init(ks_kvstore_cpu *s, const ks_kvstore_cpu_params *p) {
    const ks_kvcache *c = p->cache;
    KS_ASSERT(c->k && p->q && p->n_heads % c->n_kv_heads == 0 && p->max_chunk > 0);
    *s = (ks_kvstore_cpu){.base = {&ks_kvstore_cpu_ops}, .p = *p, .lse_layer = -1};
    s->start = ks_malloc(sizeof(int32_t) * c->n_kv_heads, "KV store window starts");
    s->score_work = ks_malloc(sizeof(float) * 2 * p->n_heads * (size_t)c->cap, "KV store score rows");
    s->evict_p = ks_malloc(sizeof(float) * p->n_heads * (size_t)c->cap, "KV store eviction scores");
    if (!s->start || !s->score_work || !s->evict_p) {
        ks_kvstore_cpu_free(s);
        return KS_ERR_NOMEM;
    }
    return KS_OK;
}

static int group_size(const ks_kvstore_cpu *s) { return s->p.n_heads / s->p.cache->n_kv_heads; }

static ks_kvcache *cpu_cache(ks_kvstore *kv) { return cpu_of(kv)->p.cache; }

static ks_status cpu_window_scores(ks_kvstore *kv, int layer, const ks_window_args *a, float *out, int ld,
                                   ks_window_summary *sum) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    KS_ASSERT(ld <= c->cap && a->n_keys <= ld && a->q_row0 + a->n_q <= s->p.max_chunk &&
              ks_kvcache_is_dense(c, layer, a->n_keys));
    int same = s->p.lse && s->lse_layer == layer && ks_window_lse_serves(s->lse_pos0, s->lse_n, a);
    ks_fast_window_scores(out, ld, sum, s->p.q, ks_kvcache_k(c, layer), s->p.n_heads, c->n_kv_heads, c->head_dim,
                          ks_kvcache_stride(c, layer), s->p.scale, a, same ? s->p.lse : NULL, s->score_work);
    return KS_OK;
}

static ks_status cpu_attention_decode_probs(ks_kvstore *kv, int layer, int qpos, ks_gqa_reduce reduce, float *out,
                                            int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    int window = layer >= s->p.window_first ? s->p.window : 0;
    KS_ASSERT(ld <= c->cap);
    for (int h = 0; h < c->n_kv_heads; h++) s->start[h] = ks_kvcache_window_start(c, layer, h, qpos, window);
    ks_fast_attention_decode_probs(out, ld, s->p.q, ks_kvcache_k(c, layer), s->start, ks_kvcache_len(c, layer),
                                   ks_kvcache_stride(c, layer), s->p.n_heads, c->n_kv_heads, c->head_dim, s->p.scale,
                                   reduce, s->score_work);
    return KS_OK;
}

static ks_status cpu_xattn_scores(ks_kvstore *kv, int layer, const ks_xattn_args *a, float *out, int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    KS_ASSERT(a->qb < ld && a->n <= s->p.max_chunk && ks_kvcache_is_dense(c, layer, a->q_pos0 + a->n));
    ks_fast_xattn_block_scores(out, ld, s->p.q, ks_kvcache_k(c, layer), s->p.n_heads, c->n_kv_heads, c->head_dim,
                               ks_kvcache_stride(c, layer), a);
    return KS_OK;
}

static ks_status cpu_flex_blocks(ks_kvstore *kv, int layer, const ks_flexprefill_args *a, ks_block_list *l,
                                 ks_flexprefill_stat *stats) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    KS_ASSERT(a->L <= s->p.max_chunk && a->H == s->p.n_heads && a->Hk == c->n_kv_heads && a->d == c->head_dim);
    ks_flexprefill_ref(l, stats, s->p.q, ks_kvcache_k(c, layer), ks_kvcache_stride(c, layer), a);
    return KS_OK;
}

static ks_status cpu_key_norms(ks_kvstore *kv, int layer, float *out, int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    ks_ref_key_norms(out, ld, ks_kvcache_k(c, layer), ks_kvcache_len(c, layer), ks_kvcache_stride(c, layer),
                     c->n_kv_heads, c->head_dim);
    return KS_OK;
}

static ks_status cpu_channel_scores(ks_kvstore *kv, int layer, int q_row0, int n_q, float *out, int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    KS_ASSERT(n_q > 0 && q_row0 >= 0 && q_row0 + n_q <= s->p.max_chunk && ld >= c->head_dim);
    ks_ref_channel_scores(out, ld, s->p.q + (size_t)q_row0 * s->p.n_heads * c->head_dim, n_q, ks_kvcache_k(c, layer),
                          ks_kvcache_len(c, layer), ks_kvcache_stride(c, layer), s->p.n_heads, c->n_kv_heads,
                          c->head_dim);
    return KS_OK;
}

static ks_status cpu_kv_compact(ks_kvstore *kv, int layer, const int32_t *keep, const int32_t *n_keep, int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    ks_kvcache *c = s->p.cache;
    KS_TRY(ks_kvcache_compact_fits(c, layer, n_keep));
    if (s->kivi) KS_TRY(ks_kv_kivi_compacted(s->kivi, c, layer, keep, n_keep, ld)); /* releases stale rows only */
    ks_kvcache_compact(c, layer, keep, n_keep, ld); /* checks the keep lists before any row moves */
    ks_ref_kv_compact(ks_kvcache_k(c, layer), ks_kvcache_v(c, layer), keep, n_keep, ld, ks_kvcache_stride(c, layer),
                      c->n_kv_heads, c->head_dim);
    if (ks_kvcache_slot(c, layer) >= 0) ks_kvcache_leave_slot(c, layer); /* the kept rows, to the layer's own rows */
    return KS_OK;
}

static ks_status cpu_v_merge(ks_kvstore *kv, int layer, const ks_merge *list, const int32_t *n, int ld, int span,
                             ks_merge_norms *norms) {
    const ks_kvcache *c = cpu_of(kv)->p.cache;
    KS_ASSERT(ld <= c->cap && span > 0);
    if (norms) *norms = (ks_merge_norms){0, 0};
    ks_ref_v_merge(ks_kvcache_v(c, layer), list, n, ld, span, ks_kvcache_len(c, layer), ks_kvcache_stride(c, layer),
                   c->n_kv_heads, c->head_dim, norms);
    return KS_OK;
}

/* The layer's per-row scores, (H, cap): one row per query head. */
static float *layer_row_scores(const ks_kvstore_cpu *s, int layer) {
    KS_ASSERT(s->row_scores); /* row_scores_reserve first */
    const ks_kvcache *c = s->p.cache;
    return s->row_scores + (size_t)ks_kvcache_index(c, layer) * s->p.n_heads * c->cap;
}

static ks_status cpu_decode_evict(ks_kvstore *kv, int layer, int qpos, const ks_evict_args *a) {
    ks_kvstore_cpu *s = cpu_of(kv);
    ks_kvcache *c = s->p.cache;
    int acc = a->rule == KS_EVICT_ACCUMULATED;
    const float *p = NULL;
    KS_TRY(ks_kv_kivi_refuse_evict(s->kivi, c, layer));
    if (a->rule != KS_EVICT_SINK) { /* ACCUMULATED: per query head, reduced only to choose */
        KS_TRY(cpu_attention_decode_probs(kv, layer, qpos, acc ? KS_GQA_NONE : a->reduce, s->evict_p, c->cap));
        p = s->evict_p;
    }
    ks_kvcache_evict(c, layer, a, group_size(s), p, acc ? layer_row_scores(s, layer) : NULL, c->cap);
    return KS_OK;
}

static ks_status cpu_row_scores_reserve(ks_kvstore *kv) {
    ks_kvstore_cpu *s = cpu_of(kv);
    if (s->row_scores) return KS_OK;
    const ks_kvcache *c = s->p.cache;
    s->row_scores = ks_malloc(sizeof(float) * c->n_layers * s->p.n_heads * (size_t)c->cap, "KV store per-row scores");
    return s->row_scores ? KS_OK : KS_ERR_NOMEM;
}

static ks_status cpu_row_scores_add(ks_kvstore *kv, int layer, const ks_window_args *a) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    ks_window_args w = ks_window_scores_only(a);
    KS_TRY(cpu_window_scores(kv, layer, &w, s->evict_p, c->cap, NULL));
    ks_row_scores_fold(layer_row_scores(s, layer), c->cap, s->evict_p, c->cap, s->p.n_heads, a->q_pos0, a->n_keys);
    return KS_OK;
}

static ks_status cpu_row_scores_read(ks_kvstore *kv, int layer, float *out, int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    ks_row_scores_copy(out, ld, layer_row_scores(s, layer), c->cap, ks_kvcache_len(c, layer), c->n_kv_heads,
                       group_size(s));
    return KS_OK;
}

static ks_status cpu_row_scores_load(ks_kvstore *kv, int layer, const float *scores, int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    const ks_kvcache *c = s->p.cache;
    ks_row_scores_copy(layer_row_scores(s, layer), c->cap, scores, ld, ks_kvcache_len(c, layer), c->n_kv_heads,
                       group_size(s));
    return KS_OK;
}

int ks_kvstore_cpu_packed(const ks_kvstore_cpu *s, int layer) {
    return s->kivi && ks_kv_kivi_packed(s->kivi, s->p.cache, layer);
}

void ks_kvstore_cpu_attention_decode(ks_kvstore_cpu *s, int layer, float *out) {
    const ks_kvcache *c = s->p.cache;
    ks_kivi_head *heads = s->kivi->view;
    for (int h = 0; h < c->n_kv_heads; h++) heads[h] = ks_kv_kivi_head(s->kivi, c, layer, h);
    ks_fast_kivi_attention_decode(out, s->p.q, heads, &s->kivi->shape, s->p.n_heads, c->n_kv_heads, s->p.scale);
}

static ks_status cpu_quant_reserve(ks_kvstore *kv, const ks_kivi_params *p) {
    ks_kvstore_cpu *s = cpu_of(kv);
    ks_kvcache *c = s->p.cache;
    if (s->kivi && !memcmp(&s->kivi->p, p, sizeof *p)) return KS_OK;
    KS_TRY(ks_kivi_window_check(s->p.window, s->p.window_first, c));
    KS_TRY(ks_kivi_params_check(p, c->head_dim));
    if (!s->kivi) s->kivi = ks_calloc(1, sizeof *s->kivi, "KIVI packed cache");
    else ks_kv_kivi_free(s->kivi);
    if (!s->kivi) return KS_ERR_NOMEM;
    c->kivi = NULL;
    KS_TRY(ks_kv_kivi_init(s->kivi, c, p, s->p.packed_rows));
    c->kivi = s->kivi;
    return KS_OK;
}

static ks_status cpu_quant_flush(ks_kvstore *kv, int layer, ks_kivi_counts *counts, ks_kivi_error *err) {
    ks_kvstore_cpu *s = cpu_of(kv);
    KS_ASSERT(s->kivi); /* quant_reserve first */
    return ks_kv_kivi_flush(s->kivi, s->p.cache, layer, counts, err);
}

static ks_status cpu_quant_channels(ks_kvstore *kv, int layer, const int32_t *chan, const int32_t *n_chan, int ld) {
    ks_kvstore_cpu *s = cpu_of(kv);
    return ks_kv_kivi_set_layer_channels(s->kivi, s->p.cache, layer, chan, n_chan, ld);
}

static ks_status cpu_quant_pack(ks_kvstore *kv, int layer, const int32_t *upto, ks_kivi_counts *counts) {
    ks_kvstore_cpu *s = cpu_of(kv);
    KS_ASSERT(s->kivi); /* quant_reserve first */
    return ks_kv_kivi_pack(s->kivi, s->p.cache, layer, upto, counts);
}

/* One thread computes everything in order: a layer's work runs at once, and nothing is left for the flush. */
static ks_status cpu_compress_layer(ks_kvstore *kv, int layer, int q_row0, int n_q, ks_kvstore_work work,
                                    void *ctx) {
    KS_ASSERT(n_q >= 0 && q_row0 >= 0 && q_row0 + n_q <= cpu_of(kv)->p.max_chunk);
    return work(ctx, layer);
}

static ks_status cpu_compress_flush(ks_kvstore *kv) {
    (void)kv;
    return KS_OK;
}

static void cpu_compress_cancel(ks_kvstore *kv) { (void)kv; }

const ks_kvstore_ops ks_kvstore_cpu_ops = {
    .name = "cpu fp32",
    .cache = cpu_cache,
    .window_scores = cpu_window_scores,
    .xattn_scores = cpu_xattn_scores,
    .attention_decode_probs = cpu_attention_decode_probs,
    .channel_scores = cpu_channel_scores,
    .flex_blocks = cpu_flex_blocks,
    .key_norms = cpu_key_norms,
    .kv_compact = cpu_kv_compact,
    .v_merge = cpu_v_merge,
    .decode_evict = cpu_decode_evict,
    .row_scores_reserve = cpu_row_scores_reserve,
    .row_scores_load = cpu_row_scores_load,
    .row_scores_add = cpu_row_scores_add,
    .row_scores_read = cpu_row_scores_read,
    .quant_reserve = cpu_quant_reserve,
    .quant_flush = cpu_quant_flush,
    .quant_channels = cpu_quant_channels,
    .quant_pack = cpu_quant_pack,
    .compress_layer = cpu_compress_layer,
    .compress_flush = cpu_compress_flush,
    .compress_cancel = cpu_compress_cancel,
};
