/* pyramidkv.c — PyramidKV (arXiv 2406.02069): SnapKV's scoring and pooling with a budget
 * that shrinks linearly with depth, from about 2(C - W) past tokens in layer 0 to (C - W) / beta in the last,
 * computed exactly as the reference code does (budget.h, ks_pyramid_budgets): for C <= L < 2(C - W) it equals
 * SnapKV, for L < C nothing is compressed. The layer index and N are the model's (a pipeline stage holding
 * layers [a, b) uses k_a .. k_{b-1}). beta is a knob (LOOM-Scope hard-codes 20). */
#include <stddef.h>

#include "methods/budget.h"
#include "methods/method.h"

typedef struct pyramidkv_opts {
    int variant, gqa_reduce;
    int window_size;
    ks_budget max_capacity_prompt;
    int kernel_size;
    int pooling;
    int beta;
} pyramidkv_opts;

static const ks_knob knobs[] = {
    KS_KNOB_VARIANT(pyramidkv_opts, "original and loom run the same PyramidKV (LOOM fixes beta at 20)"),
    KS_KNOB_GQA_REDUCE(pyramidkv_opts),
    {"window_size", KS_KNOB_INT, offsetof(pyramidkv_opts, window_size), "32", NULL, 1, 1e6,
     "W: the last W prompt queries score the earlier tokens and are always kept"},
    {"max_capacity_prompt", KS_KNOB_BUDGET, offsetof(pyramidkv_opts, max_capacity_prompt), "2048", NULL, 1, 0,
     "C: the average tokens kept per KV head and layer, window included (tokens, or a ratio of the prompt)"},
    {"kernel_size", KS_KNOB_INT, offsetof(pyramidkv_opts, kernel_size), "5", NULL, 1, 1001,
     "odd width of the pooling over neighbouring tokens' scores (1: none)"},
    {"pooling", KS_KNOB_ENUM, offsetof(pyramidkv_opts, pooling), "avgpool", "avgpool|maxpool", 0, 0,
     "avgpool (zero padding counted) or maxpool"},
    {"beta", KS_KNOB_INT, offsetof(pyramidkv_opts, beta), "20", NULL, 1, 1e6,
     "the last layer keeps (C - W) // beta past tokens; the first about 2(C - W) minus that"},
    {0},
};

static ks_status pyramidkv_check(const ks_method *m) {
    const pyramidkv_opts *o = KS_METHOD_OPTS(m, pyramidkv_opts);
    return ks_method_check_window(m, "max_capacity_prompt", &o->max_capacity_prompt, o->window_size, o->kernel_size);
}

static int pyramidkv_window(const ks_method *m) { return KS_METHOD_OPTS(m, pyramidkv_opts)->window_size; }

static void pyramidkv_plan(ks_method *m) {
    const pyramidkv_opts *o = KS_METHOD_OPTS(m, pyramidkv_opts);
    int C = ks_budget_tokens(&o->max_capacity_prompt, m->n_prompt, 0), k[KS_METHOD_MAX_LAYERS];
    ks_pyramid_branch br = ks_pyramid_budgets(C, o->window_size, o->beta, m->n_prompt, m->n_layers_model, k);
    for (int layer = m->first_layer; layer < m->last_layer; layer++)
        ks_method_layer_at(m, layer)->budget = br == KS_PYRAMID_NONE ? C : k[layer] + o->window_size;
}

static ks_status pyramidkv_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    const pyramidkv_opts *o = KS_METHOD_OPTS(m, pyramidkv_opts);
    int C = ks_budget_tokens(&o->max_capacity_prompt, m->n_prompt, 0);
    if (m->n_prompt < C) return KS_OK;
    int past = ks_method_layer_at(m, c->layer)->budget - o->window_size;
    return ks_snapkv_compress(m, c, o->window_size, past, o->kernel_size, o->pooling, o->gqa_reduce);
}

const ks_method_ops ks_method_pyramidkv = {
    .name = "PyramidKV",
    .file = "pyramidkv",
    .summary = "SnapKV's selection with a budget that shrinks linearly from the first layer to the last",
    .knobs = knobs,
    .opts_size = sizeof(pyramidkv_opts),
    .check = pyramidkv_check,
    .window = pyramidkv_window,
    .plan = pyramidkv_plan,
    .after_prefill_layer = pyramidkv_after_prefill_layer,
};
