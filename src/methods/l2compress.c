/* l2compress.c — L2Compress / KnormPress (arXiv 2406.11430): after prefill each KV head
 * keeps the tokens whose (roped) keys have the smallest L2 norm; no window or sink is protected, so recent
 * tokens can go. Layers listed in skip_layers (absolute numbers) keep everything. Once, after prefill.
 *
 * variant original (l2compress's l2_compress as generate_with_context calls it): layers whose prompt is shorter
 * than prune_after are left alone; otherwise keep ceil(ratio * L) tokens (max_capacity_prompt as a ratio, the
 * authors' keep_ratio; a token count keeps that many). variant loom (LOOM-Scope): prompts shorter than
 * C = max_capacity_prompt are left alone, otherwise C tokens are kept (prune_after unused). Keys are stored per
 * KV head in both (LOOM's copies per query head are identical), so selection is per KV head. */
#include <stddef.h>

#include "methods/budget.h"
#include "methods/method.h"

typedef struct l2compress_opts {
    int variant;
    ks_budget max_capacity_prompt;
    int prune_after; /* original */
    ks_ints skip_layers;
} l2compress_opts;

static const ks_knob knobs[] = {
    KS_KNOB_VARIANT(l2compress_opts, "original: keep ceil(ratio * L) once L >= prune_after; loom: keep C once "
                                     "L >= C"),
    {"max_capacity_prompt", KS_KNOB_BUDGET, offsetof(l2compress_opts, max_capacity_prompt), "0.9", NULL, 1, 0,
     "tokens kept per KV head: a ratio of the prompt (the authors' keep_ratio, rounded up) or a count"},
    {"prune_after", KS_KNOB_INT, offsetof(l2compress_opts, prune_after), "1048", NULL, 0, 1e9,
     "original: prompts shorter than this are not compressed"},
    {"skip_layers", KS_KNOB_INTS, offsetof(l2compress_opts, skip_layers), "[0, 1]", NULL, 0, 1e6,
     "layers (absolute numbers) that keep their full cache"},
    {0},
};

static int loom(const ks_method *m) { return KS_METHOD_OPTS(m, l2compress_opts)->variant == KS_VARIANT_LOOM; }

static int skipped(const l2compress_opts *o, int layer) {
    for (int i = 0; i < o->skip_layers.n; i++)
        if (o->skip_layers.v[i] == layer) return 1;
    return 0;
}

static void l2compress_plan(ks_method *m) {
    const l2compress_opts *o = KS_METHOD_OPTS(m, l2compress_opts);
    int keep = ks_budget_tokens(&o->max_capacity_prompt, m->n_prompt, !loom(m));
    int whole = !loom(m) && m->n_prompt < o->prune_after; /* left alone: every row is the budget */
    for (int layer = m->first_layer; layer < m->last_layer; layer++)
        ks_method_layer_at(m, layer)->budget = whole || skipped(o, layer) ? m->n_prompt : keep;
}

static ks_status l2compress_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    const l2compress_opts *o = KS_METHOD_OPTS(m, l2compress_opts);
    int L = m->n_prompt, keep = ks_method_layer_at(m, c->layer)->budget;
    if (skipped(o, c->layer) || L < (loom(m) ? keep : o->prune_after) || keep >= L) return KS_OK;
    const float *norm = ks_method_row_norm(m, c->layer); /* taken just before this hook (method.h) */
#pragma omp parallel for if (L > KS_METHOD_PARALLEL_ROWS)
    for (int h = 0; h < m->Hk; h++) /* the smallest norms are the best scores */
        for (int j = 0; j < L; j++) m->scores[(size_t)h * m->cap + j] = -norm[(size_t)h * m->cap + j];
    KS_TRY(ks_method_observe(m, c, NULL));
    ks_method_keep_top(m, c->layer, m->scores, keep, 0);
    return ks_method_compact(m, c->layer, 0);
}

const ks_method_ops ks_method_l2compress = {
    .name = "L2Compress",
    .file = "l2compress",
    .summary = "keeps the tokens whose keys have the smallest L2 norm",
    .knobs = knobs,
    .opts_size = sizeof(l2compress_opts),
    .plan = l2compress_plan,
    .after_prefill_layer = l2compress_after_prefill_layer,
};
