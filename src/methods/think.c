/* think.c — ThinK, query-driven pruning of key channels (arXiv 2407.21018; docs/methods.md).
 *
 * At a layer's prompt end, after the rows are selected (the composition's selector, e.g. SnapKV+ThinK+KIVI; or,
 * with none, ThinK's own SnapKV selection with its knobs max_capacity_prompt, window_size, kernel_size,
 * pooling), each KV head scores its channels: per query head the store's channel_scores (the mean over the last
 * window_size prompt queries of q_c^2 times the mean over the head's kept rows of k_c^2), reduced over the group
 * with the mean; the r = floor(head_dim * ratio) channels of lowest score are pruned (equal scores: the lower
 * channel first; NaN lowest) and the others kept in channel order. A head holding at most recent_size rows
 * prunes nothing (a short prompt; the reference crashes there), nor does any head with r = 0.
 *
 * Storage: the kept channels are the key channels the store's packed part keeps (kvstore.h quant_channels), and
 * the decode attention reads a packed key's logit over its kept channels only.
 * - With a quantizing part after it (SnapKV+ThinK+KIVI): KIVI packs every key of the head on the kept channels,
 *   its full-precision residual (the recent keys, the decode tokens until they are packed) keeping all of them;
 *   recent_size only says which heads prune.
 * - Otherwise (ThinK, SnapKV+ThinK): ThinK reserves a raw packed part (kernels/kivi_args.h, KS_KIVI_RAW: the
 *   cache's own element bits, exact: fp32 on the cpu store, bf16 on the cuda store) and packs each pruned head's
 *   prefix, its rows before the last recent_size, keys on the kept channels and values whole; those rows leave
 *   the cache, so a head's dense rows are its recent_size last prompt rows and the generated tokens, which keep
 *   every channel. */
#include <math.h>
#include <stddef.h>

#include "backend/kv_kivi.h"
#include "methods/budget.h"
#include "methods/method.h"

typedef struct think_opts {
    float ratio;
    int recent_size;
    int window_size;               /* W */
    ks_budget max_capacity_prompt; /* C, the window included (ThinK's own selection) */
    int kernel_size;
    int pooling; /* ks_pool */
} think_opts;

static const ks_knob knobs[] = {
    {"ratio", KS_KNOB_FLOAT, offsetof(think_opts, ratio), "0.4", NULL, 0, 1,
     "fraction of key channels pruned per KV head: floor(head_dim * ratio) of lowest score; below 1 (0: none)"},
    {"recent_size", KS_KNOB_INT, offsetof(think_opts, recent_size), "32", NULL, 0, 1e6,
     "a KV head holding at most this many rows after the selection prunes no channel"},
    {"window_size", KS_KNOB_INT, offsetof(think_opts, window_size), "32", NULL, 1, 1e6,
     "W: the last W prompt queries score the channels (and, alone, the tokens, as SnapKV's window)"},
    {"max_capacity_prompt", KS_KNOB_BUDGET, offsetof(think_opts, max_capacity_prompt), "2048", NULL, 1, 0,
     "C: without a selection part before ThinK, tokens kept per KV head by its SnapKV selection, window included"},
    {"kernel_size", KS_KNOB_INT, offsetof(think_opts, kernel_size), "5", NULL, 1, 1001,
     "without a selection part: odd width of the SnapKV selection's pooling (1: none)"},
    {"pooling", KS_KNOB_ENUM, offsetof(think_opts, pooling), "avgpool", "avgpool|maxpool", 0, 0,
     "without a selection part: the SnapKV selection's pooling, avgpool (zero padding counted) or maxpool"},
    {0},
};

static ks_status think_check(const ks_method *m) {
    const think_opts *o = KS_METHOD_OPTS(m, think_opts);
    if (o->ratio >= 1.0f)
        return ks_fail(KS_ERR_ARG, "ThinK options (%s): ratio %g must be below 1 (a key keeps at least one channel)",
                       m->source, o->ratio);
    return ks_method_check_window(m, "max_capacity_prompt", &o->max_capacity_prompt, o->window_size,
                                  o->kernel_size);
}

/* 1 when a quantizing part after ThinK packs the keys (and reserves the packed part). */
static int quant_after(const ks_method *m) {
    for (const ks_method *p = m->next; p; p = p->next)
        if (p->ops->role == KS_ROLE_QUANT) return 1;
    return 0;
}

/* Without a quantizer after it, the raw packed part of the pruned prefixes. */
static ks_status think_bind(ks_method *m) {
    if (quant_after(m)) return KS_OK;
    const ks_kivi_params raw = {.k_bits = KS_KIVI_RAW, .v_bits = KS_KIVI_RAW, .group = 1, .residual = 1};
    ks_status st = m->kv->ops->quant_reserve(m->kv, &raw);
    return st == KS_OK ? KS_OK : ks_fail_context(st, "--acceleration %s: ThinK's pruned keys", m->head->name);
}

static int think_window(const ks_method *m) { return KS_METHOD_OPTS(m, think_opts)->window_size; }

/* ThinK's own selection's budget (none after a selector: the selector's plan bounds the rows). */
static void think_plan(ks_method *m) {
    if (m->selector) return;
    int C = ks_budget_tokens(&KS_METHOD_OPTS(m, think_opts)->max_capacity_prompt, m->n_prompt, 0);
    for (int layer = m->first_layer; layer < m->last_layer; layer++) ks_method_layer_at(m, layer)->budget = C;
}

/* a ranks below b: lower, or NaN against a number */
static int below(float a, float b) { return (isnan(a) && !isnan(b)) || a < b; }

/* KV head h's kept channels into m->chan_keep / m->n_chan: the group mean of the query heads' scores per
 * channel (row H + h of chan_scores), the r lowest pruned (equal scores: the lower channel first). */
static void keep_channels(ks_method *m, int h, int r) {
    int d = m->d, G = m->H / m->Hk;
    float *mean = m->chan_scores + (size_t)(m->H + h) * d;
    int32_t *keep = m->chan_keep + (size_t)h * d;
    for (int c = 0; c < d; c++) {
        float sum = 0;
        for (int i = h * G; i < (h + 1) * G; i++) sum += m->chan_scores[(size_t)i * d + c];
        mean[c] = sum / (float)G;
    }
    int n = 0;
    for (int c = 0; c < d; c++) {
        int rank = 0; /* channels pruned before c */
        for (int o = 0; o < d; o++) rank += below(mean[o], mean[c]) || (o < c && !below(mean[c], mean[o]));
        if (rank >= r) keep[n++] = c;
    }
    m->n_chan[h] = n;
}

/* ThinK's own storage: each pruned head's rows before its last `recent` packed raw, then released from the
 * cache (a compaction keeping the later rows); the layer's tokens held and bytes recorded. */
static ks_status store_prefix(ks_method *m, int layer, int recent) {
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    int32_t upto[KS_METHOD_MAX_KV_HEADS];
    KS_ASSERT(m->Hk <= KS_METHOD_MAX_KV_HEADS);
    for (int h = 0; h < m->Hk; h++) {
        upto[h] = m->n_chan[h] < m->d ? len[h] - recent : 0; /* pruned heads hold more than recent rows */
        int32_t *keep = m->keep + (size_t)h * m->cap;
        for (int j = upto[h]; j < len[h]; j++) keep[j - upto[h]] = j;
        m->n_keep[h] = len[h] - upto[h];
    }
    KS_TRY(m->kv->ops->quant_pack(m->kv, layer, upto, NULL));
    KS_TRY(ks_method_compact(m, layer, 0));
    ks_method_quant *q = &ks_method_layer_at(m, layer)->quant;
    q->held = 0;
    for (int h = 0; h < m->Hk; h++) {
        ks_kivi_counts n = ks_kv_kivi_counts(m->cache->kivi, m->cache, layer, h);
        q->held = n.n > q->held ? n.n : q->held;
    }
    q->bytes = ks_kv_kivi_layer_bytes(m->cache->kivi, m->cache, layer);
    return KS_OK;
}

/* The layer's channel pruning over the rows its heads hold: scores, lists, the store's stored key channels. */
static ks_status prune(ks_method *m, const ks_method_chunk *c) {
    const think_opts *o = KS_METHOD_OPTS(m, think_opts);
    const int32_t *len = ks_kvcache_len(m->cache, c->layer);
    int r = (int)floor((double)m->d * o->ratio), W = o->window_size < c->n ? o->window_size : c->n, any = 0;
    ks_method_layer *ly = ks_method_layer_at(m, c->layer);
    for (int h = 0; h < m->Hk; h++) any |= r > 0 && len[h] > o->recent_size;
    ly->channels_kept = (float)m->d;
    if (!any) return KS_OK;
    KS_TRY(m->kv->ops->channel_scores(m->kv, c->layer, c->n - W, W, m->chan_scores, m->d));
    double kept = 0;
    for (int h = 0; h < m->Hk; h++) {
        keep_channels(m, h, len[h] > o->recent_size ? r : 0);
        kept += m->n_chan[h];
    }
    ly->channels_kept = (float)(kept / m->Hk);
    KS_TRY(m->kv->ops->quant_channels(m->kv, c->layer, m->chan_keep, m->n_chan, m->d));
    return quant_after(m) ? KS_OK : store_prefix(m, c->layer, o->recent_size);
}

static ks_status think_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    const think_opts *o = KS_METHOD_OPTS(m, think_opts);
    int C = ks_method_layer_at(m, c->layer)->budget;
    if (!m->selector && m->n_prompt >= C)
        KS_TRY(ks_snapkv_compress(m, c, o->window_size, C - o->window_size, o->kernel_size, o->pooling,
                                  KS_GQA_MEAN));
    return prune(m, c);
}

/* channels_kept; with its own storage, `kept` counts every token held (packed or not) and kv_bytes the layer's. */
static void think_layer_stat(const ks_method *m, int layer, ks_layer_stat *row) {
    const ks_method_layer *ly = ks_method_layer_at(m, layer);
    row->channels_kept = ly->channels_kept;
    if (!ly->quant.held) return;
    row->kept = ly->quant.held;
    row->kv_bytes = ly->quant.bytes;
}

const ks_method_ops ks_method_think = {
    .name = "ThinK",
    .role = KS_ROLE_CHANNELS,
    .file = "think",
    .summary = "query-driven key channel pruning per KV head: the floor(d * ratio) lowest-scoring channels leave "
               "the keys of all but the recent rows",
    .knobs = knobs,
    .opts_size = sizeof(think_opts),
    .check = think_check,
    .window = think_window,
    .plan = think_plan,
    .after_prefill_layer = think_after_prefill_layer,
    .layer_stat = think_layer_stat,
    .bind = think_bind,
    .needs_stable_rows = 1,
};
