/* h2o.c — H2O, heavy-hitter oracle (arXiv 2306.14048; docs/methods.md).
 *
 * variant original (the authors' real-drop cache, h2o_hf/utils_real_drop): every prompt query's attention is
 * summed into a score per key (chunk by chunk: the scores of a chunk's queries over the keys they see, never an
 * L x L matrix); after prefill each KV head keeps its `recent_budget` most recent tokens plus the
 * `heavy_budget` highest-scoring others; then every decode step adds the new query's attention to the scores
 * (the new token starts at its own probability) and, past heavy + recent rows, drops the lowest-scoring
 * non-recent row, so the cache stays at heavy + recent. Budgets are ratios of the prompt by default (0.1 each,
 * the authors' scripts). Scoring every prompt query costs about one more pass of QK^T over the prompt;
 * score_window > 0 scores with the last score_window prompt queries only (O(W L), an observation window as
 * SnapKV's, not the authors' definition) and keeps the rest of the method.
 *
 * variant loom (LOOM-Scope's one-shot port): for prompts of at least max_capacity_prompt = C tokens, the last
 * W queries score the past keys [0, L - W) with a softmax taken separately over each block of score_chunk
 * (512) keys; each KV head keeps its top C - W past tokens plus the window; no decode-time eviction.
 *
 * GQA (gqa_reduce): original: each query head's attention is summed on its own, over every prompt query
 * (whatever the prefill chunks) and every decode step since, and a KV head's score of a row is the reduction of
 * its group's sums, taken when rows are chosen (after the prompt, at each decode eviction): with max, a row any
 * query head of the group has attended to most over the sequence, not a sum of maxima that would depend on how
 * the prompt was chunked. loom: the window's scores are reduced once. */
#include <stddef.h>

#include "methods/budget.h"
#include "methods/method.h"

typedef struct h2o_opts {
    int variant, gqa_reduce;
    ks_budget heavy_budget, recent_budget; /* original */
    int score_window;                      /* original: 0 = all prompt queries score */
    int window_size;                       /* loom */
    ks_budget max_capacity_prompt;         /* loom */
    int score_chunk;                       /* loom */
} h2o_opts;

static const ks_knob knobs[] = {
    KS_KNOB_VARIANT(h2o_opts, "original: all-query scores, heavy + recent, decode eviction; loom: LOOM's one-shot "
                              "window scorer with a softmax per 512-key chunk"),
    KS_KNOB_GQA_REDUCE(h2o_opts),
    {"heavy_budget", KS_KNOB_BUDGET, offsetof(h2o_opts, heavy_budget), "0.1", NULL, 0, 0,
     "original: heavy hitters kept per KV head (tokens, or a ratio of the prompt, rounded down)"},
    {"recent_budget", KS_KNOB_BUDGET, offsetof(h2o_opts, recent_budget), "0.1", NULL, 0, 0,
     "original: most recent tokens always kept per KV head (tokens, or a ratio of the prompt)"},
    {"score_window", KS_KNOB_INT, offsetof(h2o_opts, score_window), "0", NULL, 0, 1e6,
     "original: 0 = every prompt query scores (the authors); W > 0 = only the last W (cheaper, O(W L))"},
    {"window_size", KS_KNOB_INT, offsetof(h2o_opts, window_size), "32", NULL, 1, 1e6,
     "loom: W, the last W prompt queries score the past tokens and are always kept"},
    {"max_capacity_prompt", KS_KNOB_BUDGET, offsetof(h2o_opts, max_capacity_prompt), "2048", NULL, 1, 0,
     "loom: C, tokens kept per KV head after prefill, window included"},
    {"score_chunk", KS_KNOB_INT, offsetof(h2o_opts, score_chunk), "512", NULL, 1, 1e9,
     "loom: the softmax of the window scores is normalised separately over each block of this many keys"},
    {0},
};

static int loom(const ks_method *m) { return KS_METHOD_OPTS(m, h2o_opts)->variant == KS_VARIANT_LOOM; }

static ks_status h2o_check(const ks_method *m) {
    const h2o_opts *o = KS_METHOD_OPTS(m, h2o_opts);
    return loom(m) ? ks_method_check_window(m, "max_capacity_prompt", &o->max_capacity_prompt, o->window_size, 0)
                   : KS_OK;
}

static int h2o_window(const ks_method *m) {
    const h2o_opts *o = KS_METHOD_OPTS(m, h2o_opts);
    return loom(m) ? o->window_size : o->score_window;
}

/* original: heavy and recent token counts for the current prompt. */
static void budgets(const ks_method *m, int *heavy, int *recent) {
    const h2o_opts *o = KS_METHOD_OPTS(m, h2o_opts);
    *heavy = ks_budget_tokens(&o->heavy_budget, m->n_prompt, 0);
    *recent = ks_budget_tokens(&o->recent_budget, m->n_prompt, 0);
}

static void h2o_plan(ks_method *m) {
    int heavy, recent;
    budgets(m, &heavy, &recent);
    int b = loom(m) ? ks_budget_tokens(&KS_METHOD_OPTS(m, h2o_opts)->max_capacity_prompt, m->n_prompt, 0)
                    : heavy + recent;
    for (int layer = m->first_layer; layer < m->last_layer; layer++) ks_method_layer_at(m, layer)->budget = b;
}

/* original, all queries: the chunk's queries add their attention to each query head's scores of the keys they
 * see (its own keys start at what it gives them), summed in the cache's per-row scores: no wait per chunk. */
static ks_status h2o_prefill_chunk(ks_method *m, const ks_method_chunk *c) {
    if (loom(m) || KS_METHOD_OPTS(m, h2o_opts)->score_window) return KS_OK;
    ks_window_args a = {.q_row0 = 0, .n_q = c->n, .q_pos0 = c->pos0, .n_keys = c->pos0 + c->n, .stat = KS_SCORE_SUM,
                        .reduce = KS_GQA_NONE};
    return m->kv->ops->row_scores_add(m->kv, c->layer, &a);
}

/* m->scores (Hk, cap) = the layer's per-query-head scores (original: m->row_scores, (H, cap) per layer)
 * reduced over each group, for the rows each KV head holds: what the prompt-end selection ranks. */
static void group_scores(ks_method *m, int layer, ks_gqa_reduce reduce) {
    const int G = m->H / m->Hk;
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    const float *s = ks_method_row_scores(m, layer);
#pragma omp parallel for if (len[0] > KS_METHOD_PARALLEL_ROWS)
    for (int h = 0; h < m->Hk; h++)
        for (int j = 0; j < len[h]; j++)
            m->scores[(size_t)h * m->cap + j] = ks_gqa_reduce_col(s + (size_t)h * G * m->cap + j, m->cap, G, reduce);
}

/* original: the layer's scores become the cache's per-row scores, which decode_evict accumulates into. */
static ks_status load_scores(ks_method *m, const ks_method_chunk *c) {
    return m->kv->ops->row_scores_load(m->kv, c->layer, ks_method_row_scores(m, c->layer), m->cap);
}

static ks_status h2o_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    const h2o_opts *o = KS_METHOD_OPTS(m, h2o_opts);
    int L = m->n_prompt;
    if (loom(m)) {
        int C = ks_method_layer_at(m, c->layer)->budget, W = o->window_size;
        if (L < C) return KS_OK;
        /* the same pass also sums the plain softmax over the window (group mean): the statistics' mass */
        ks_window_args a = {.n_q = W, .softmax_chunk = o->score_chunk, .stat = KS_SCORE_SUM, .reduce = o->gqa_reduce,
                            .sums = m->pooled};
        KS_TRY(ks_method_window_scores(m, c, a, m->scores, NULL));
        KS_TRY(ks_method_observe(m, c, m->pooled));
        ks_method_keep_top(m, c->layer, m->scores, C - W, W);
        return ks_method_compact(m, c->layer, 0);
    }
    int heavy, recent;
    budgets(m, &heavy, &recent);
    if (!o->score_window) { /* the sums of every prompt chunk */
        KS_TRY(m->kv->ops->row_scores_read(m->kv, c->layer, ks_method_row_scores(m, c->layer), m->cap));
    } else { /* the last W queries' scores start the accumulation (decode needs them even if L fits) */
        ks_window_args a = {.n_q = o->score_window < L ? o->score_window : L, .stat = KS_SCORE_SUM,
                            .reduce = KS_GQA_NONE};
        KS_TRY(ks_method_window_scores(m, c, a, ks_method_row_scores(m, c->layer), NULL));
    }
    if (L <= heavy + recent) return load_scores(m, c);
    group_scores(m, c->layer, o->gqa_reduce);
    int same = o->score_window && o->gqa_reduce == KS_GQA_MEAN; /* the window sums are the statistics' sums */
    KS_TRY(ks_method_observe(m, c, same ? m->scores : NULL));
    ks_method_keep_top(m, c->layer, m->scores, heavy, recent);
    KS_TRY(ks_method_compact(m, c->layer, 0)); /* the per-query-head scores move with their rows */
    return load_scores(m, c);
}

/* original: the step's probabilities join the cache's per-row scores (per query head) and, past heavy + recent
 * rows, the row before the recent ones whose scores reduce lowest over the group goes (the top heavy of them are
 * kept), on the backend. */
static ks_status h2o_on_decode_step(ks_method *m, int layer, int qpos) {
    if (loom(m)) return KS_OK;
    int heavy, recent;
    budgets(m, &heavy, &recent);
    ks_evict_args a = {.rule = KS_EVICT_ACCUMULATED, .keep = heavy + recent, .tail = recent,
                       .reduce = KS_METHOD_OPTS(m, h2o_opts)->gqa_reduce};
    return m->kv->ops->decode_evict(m->kv, layer, qpos, &a);
}

const ks_method_ops ks_method_h2o = {
    .name = "H2O",
    .file = "h2o",
    .summary = "heavy hitters by accumulated attention plus the recent tokens, evicting while decoding",
    .knobs = knobs,
    .opts_size = sizeof(h2o_opts),
    .row_scores = KS_ROW_SCORES_QUERY_HEAD,
    .cache_scores = 1,
    .check = h2o_check,
    .window = h2o_window,
    .plan = h2o_plan,
    .prefill_chunk = h2o_prefill_chunk,
    .after_prefill_layer = h2o_after_prefill_layer,
    .on_decode_step = h2o_on_decode_step,
};
