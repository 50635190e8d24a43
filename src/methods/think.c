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
 * Storage: the kept channels are the key channels the store's packed part keeps (kvstore.h quant_channels), so
 * ThinK needs a quantizing part after it: KIVI packs every key of the head on the kept channels only, while its
 * full-precision residual (the recent keys, the decode tokens until they are packed) keeps every channel, and
 * the decode attention reads the packed keys' logits over the kept channels. ThinK alone, storing its pruned
 * prefix without quantization, is not built (KS_ERR_UNSUPPORTED naming the fix). */
#include <math.h>
#include <stddef.h>

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

/* A quantizing part after ThinK stores the narrowed keys (its bind reserves the packed part). */
static ks_status think_bind(ks_method *m) {
    for (const ks_method *p = m->next; p; p = p->next)
        if (p->ops->role == KS_ROLE_QUANT) return KS_OK;
    return ks_fail(KS_ERR_UNSUPPORTED, "--acceleration %s: ThinK stores its narrowed keys in a quantizing part's "
                   "packed cache; write it with KIVI after it (e.g. SnapKV+ThinK+KIVI or ThinK+KIVI): narrowed keys "
                   "without quantization are not built", m->head->name);
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
    return m->kv->ops->quant_channels(m->kv, c->layer, m->chan_keep, m->n_chan, m->d);
}

static ks_status think_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    const think_opts *o = KS_METHOD_OPTS(m, think_opts);
    int C = ks_method_layer_at(m, c->layer)->budget;
    if (!m->selector && m->n_prompt >= C)
        KS_TRY(ks_snapkv_compress(m, c, o->window_size, C - o->window_size, o->kernel_size, o->pooling,
                                  KS_GQA_MEAN));
    return prune(m, c);
}

static void think_layer_stat(const ks_method *m, int layer, ks_layer_stat *row) {
    row->channels_kept = ks_method_layer_at(m, layer)->channels_kept;
}

const ks_method_ops ks_method_think = {
    .name = "ThinK",
    .role = KS_ROLE_CHANNELS,
    .file = "think",
    .summary = "query-driven key channel pruning per KV head (the lowest-scoring floor(d * ratio) channels), "
               "stored through KIVI's packed keys",
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
