/* snapkv.c — SnapKV (arXiv 2404.14469). Once per layer after prefill: the last W prompt
 * queries (the observation window) score every earlier key by the softmax mass they give it (causal inside the
 * window, fp32), the scores are pooled along the sequence (kernel k, stride 1, PyTorch padding), and each KV
 * head keeps its top C - W past tokens plus the window: C tokens. Prompts shorter than C are not compressed.
 * LOOM-Scope, KVCache-Factory and the original repository run this same algorithm; they keep one selection per
 * query head (G times the memory under GQA), kvscope one per KV head from the group's reduced scores
 * (KVCache-Factory's kv_head mode: reduce, then pool). */
#include <stddef.h>

#include "methods/budget.h"
#include "methods/method.h"
#include "methods/select.h"

typedef struct snapkv_opts {
    int variant, gqa_reduce;
    int window_size;              /* W */
    ks_budget max_capacity_prompt; /* C, the window included */
    int kernel_size;
    int pooling; /* ks_pool */
} snapkv_opts;

static const ks_knob knobs[] = {
    KS_KNOB_VARIANT(snapkv_opts, "original and loom run the same SnapKV (LOOM only keeps per-query-head copies)"),
    KS_KNOB_GQA_REDUCE(snapkv_opts),
    {"window_size", KS_KNOB_INT, offsetof(snapkv_opts, window_size), "32", NULL, 1, 1e6,
     "W: the last W prompt queries score the earlier tokens and are always kept"},
    {"max_capacity_prompt", KS_KNOB_BUDGET, offsetof(snapkv_opts, max_capacity_prompt), "2048", NULL, 1, 0,
     "C: tokens kept per KV head after prefill, window included (tokens, or a ratio of the prompt)"},
    {"kernel_size", KS_KNOB_INT, offsetof(snapkv_opts, kernel_size), "5", NULL, 1, 1001,
     "odd width of the pooling over neighbouring tokens' scores (1: none)"},
    {"pooling", KS_KNOB_ENUM, offsetof(snapkv_opts, pooling), "avgpool", "avgpool|maxpool", 0, 0,
     "avgpool (zero padding counted) or maxpool"},
    {0},
};

static ks_status snapkv_check(const ks_method *m) {
    const snapkv_opts *o = KS_METHOD_OPTS(m, snapkv_opts);
    return ks_method_check_window(m, "max_capacity_prompt", &o->max_capacity_prompt, o->window_size, o->kernel_size);
}

static int snapkv_window(const ks_method *m) { return KS_METHOD_OPTS(m, snapkv_opts)->window_size; }

static void snapkv_plan(ks_method *m) {
    int C = ks_budget_tokens(&KS_METHOD_OPTS(m, snapkv_opts)->max_capacity_prompt, m->n_prompt, 0);
    for (int layer = m->first_layer; layer < m->last_layer; layer++) ks_method_layer_at(m, layer)->budget = C;
}

ks_status ks_snapkv_compress(ks_method *m, const ks_method_chunk *c, int W, int k, int kernel, int pooling,
                             int gqa_reduce) {
    int L = m->n_prompt, past = L - W;
    if (past <= 0) return KS_OK; /* the window is the whole prompt */
    ks_window_args a = {.n_q = W, .stat = KS_SCORE_SUM, .reduce = gqa_reduce};
    KS_TRY(ks_method_window_scores(m, c, a, m->scores, NULL));
    KS_TRY(ks_method_observe(m, c, gqa_reduce == KS_GQA_MEAN ? m->scores : NULL)); /* the statistics' sums */
#pragma omp parallel for if (past > KS_METHOD_PARALLEL_ROWS)
    for (int h = 0; h < m->Hk; h++)
        ks_select_pool(m->pooled + (size_t)h * m->cap, m->scores + (size_t)h * m->cap, past, kernel, pooling);
    ks_method_keep_top(m, c->layer, m->pooled, k, W);
    return ks_method_compact(m, c->layer, 0);
}

static ks_status snapkv_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    const snapkv_opts *o = KS_METHOD_OPTS(m, snapkv_opts);
    int C = ks_method_layer_at(m, c->layer)->budget;
    if (m->n_prompt < C) return KS_OK;
    return ks_snapkv_compress(m, c, o->window_size, C - o->window_size, o->kernel_size, o->pooling, o->gqa_reduce);
}

const ks_method_ops ks_method_snapkv = {
    .name = "SnapKV",
    .file = "snapkv",
    .summary = "observation-window attention with pooling selects C - W past tokens per KV head, plus the window",
    .knobs = knobs,
    .opts_size = sizeof(snapkv_opts),
    .check = snapkv_check,
    .window = snapkv_window,
    .plan = snapkv_plan,
    .after_prefill_layer = snapkv_after_prefill_layer,
};
