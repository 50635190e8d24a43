/* flexprefill.c — FlexPrefill (ICLR 2025, arXiv 2502.20766; docs/methods.md): sparse prefill attention.
 *
 * Per layer, before its prefill attention, the KV store's flex_blocks chooses each query head's key blocks from
 * the whole prompt (kernels/cpu/flexprefill_ref.h has the algorithm): the prompt's last block of queries scores
 * every key; a head whose block-level attention estimate is close to its scores (square-root Jensen-Shannon
 * divergence below tau) takes query-aware blocks, the others vertical and slash blocks covering gamma of the
 * scores, within the budgets; column 0 and the diagonal always. A prompt of at most max(2B, min_budget rounded up
 * to blocks) tokens stays dense. force_density instead fixes each row's fraction of blocks (speed benchmarks).
 * The KV cache is not compressed and decode stays dense (role PREFILL: it composes before a selection,
 * FlexPrefill+SnapKV).
 *
 * The lists need the prompt's last block of queries before the layer's first attention, so the whole prompt is
 * one prefill chunk (sparse_whole_prompt). Statistics: the per-layer sparse columns; coverage is each head's
 * estimate over its scored queries (the only rows FlexPrefill scores), counted for every row of the head; the
 * fraction of query-aware heads and the heads' mean d_JS, from each query head's record of the last prompt
 * (m->state: pattern, d_JS, n_v, n_s). */
#include <stddef.h>

#include "cpu/flexprefill_ref.h"
#include "methods/method.h"

typedef struct flexprefill_opts {
    int block_size; /* B */
    float gamma, tau;
    int min_budget, max_budget; /* tokens */
    float force_density;
} flexprefill_opts;

static const ks_knob knobs[] = {
    {"block_size", KS_KNOB_INT, offsetof(flexprefill_opts, block_size), "128", NULL, 1, 4096,
     "B: tokens per query and key block"},
    {"gamma", KS_KNOB_FLOAT, offsetof(flexprefill_opts, gamma), "0.9", NULL, 1e-6, 1,
     "coverage of the last block's attention the vertical/slash counts and the query-aware blocks reach"},
    {"tau", KS_KNOB_FLOAT, offsetof(flexprefill_opts, tau), "0.1", NULL, 0, 1e6,
     "a head whose square-root JS divergence is below tau is query-aware (0: none is)"},
    {"min_budget", KS_KNOB_INT, offsetof(flexprefill_opts, min_budget), "512", NULL, 1, 1e9,
     "tokens: the fewest vertical and slash blocks (rounded up to blocks); prompts up to max(2 B, this) stay "
     "dense"},
    {"max_budget", KS_KNOB_INT, offsetof(flexprefill_opts, max_budget), "32768", NULL, 0, 1e9,
     "tokens: the most vertical and slash blocks (rounded up to blocks; 0: no bound)"},
    {"force_density", KS_KNOB_FLOAT, offsetof(flexprefill_opts, force_density), "0", NULL, 0, 1,
     "0: FlexPrefill's own choice; else each row keeps this fraction of its causal blocks (speed benchmarks)"},
    {0},
};

static ks_flexprefill_args args_of(const ks_method *m, int L) {
    const flexprefill_opts *o = KS_METHOD_OPTS(m, flexprefill_opts);
    return (ks_flexprefill_args){.block = o->block_size, .gamma = o->gamma, .tau = o->tau,
                                 .min_budget = o->min_budget, .max_budget = o->max_budget,
                                 .force_density = o->force_density, .H = m->H, .Hk = m->Hk, .d = m->d, .L = L};
}

static ks_status flex_check(const ks_method *m) {
    ks_flexprefill_args a = args_of(m, 1);
    a.H = a.Hk = a.d = 1; /* the knobs alone: the model's shape comes at bind */
    const char *msg = ks_flexprefill_check(&a);
    return msg ? ks_fail(KS_ERR_ARG, "%s (%s)", msg, m->source) : KS_OK;
}

static int flex_block(const ks_method *m) { return KS_METHOD_OPTS(m, flexprefill_opts)->block_size; }

/* m->state: (layers held, H) the query heads' records of the last prompt. */
static ks_status flex_bind(ks_method *m) {
    m->state = ks_calloc((size_t)(m->last_layer - m->first_layer) * m->H, sizeof(ks_flexprefill_stat),
                         "FlexPrefill head statistics");
    return m->state ? KS_OK : KS_ERR_NOMEM;
}

/* The query heads' records of held `layer`. */
static ks_flexprefill_stat *head_stats(const ks_method *m, int layer) {
    return (ks_flexprefill_stat *)m->state + (size_t)ks_method_index(m, layer) * m->H;
}

static ks_status flex_prefill_blocks(ks_method *m, const ks_method_chunk *c, int last, ks_block_list *l,
                                     const ks_block_list **out) {
    (void)last; /* the whole prompt (sparse_whole_prompt) */
    ks_flexprefill_args a = args_of(m, c->n);
    ks_flexprefill_stat *st = head_stats(m, c->layer);
    int64_t nb = ks_flexprefill_blocks(&a), causal = nb * (nb + 1) / 2;
    int dense = ks_flexprefill_is_dense(&a); /* the full list is the dense attention: no list */
    if (dense)
        for (int h = 0; h < m->H; h++)
            st[h] = (ks_flexprefill_stat){.pattern = KS_FLEX_DENSE, .blocks = causal, .coverage = 1};
    else
        KS_TRY(m->kv->ops->flex_blocks(m->kv, c->layer, &a, l, st));
    ks_method_sparse_layer *rec = &m->sparse[ks_method_index(m, c->layer)];
    for (int h = 0; h < m->H; h++) {
        rec->blocks += st[h].blocks;
        rec->causal += causal;
        rec->rows += nb;
        rec->coverage += (double)st[h].coverage * (double)nb;
    }
    *out = dense ? NULL : l;
    return KS_OK;
}

/* sparse_query_aware and sparse_djs from the query heads' records of the last prompt. */
static void flex_layer_stat(const ks_method *m, int layer, ks_layer_stat *row) {
    const ks_flexprefill_stat *st = head_stats(m, layer);
    double aware = 0, djs = 0;
    for (int h = 0; h < m->H; h++) aware += st[h].pattern == KS_FLEX_QUERY_AWARE, djs += st[h].d_js;
    row->sparse_query_aware = (float)(aware / m->H);
    row->sparse_djs = (float)(djs / m->H);
}

const ks_method_ops ks_method_flexprefill = {
    .name = "FlexPrefill",
    .file = "flexprefill",
    .summary = "sparse prefill: per head, vertical-slash or query-aware key blocks chosen from the last block of "
               "queries",
    .role = KS_ROLE_PREFILL,
    .knobs = knobs,
    .opts_size = sizeof(flexprefill_opts),
    .check = flex_check,
    .bind = flex_bind,
    .layer_stat = flex_layer_stat,
    .sparse_block = flex_block,
    .prefill_blocks = flex_prefill_blocks,
    .sparse_whole_prompt = 1,
};
