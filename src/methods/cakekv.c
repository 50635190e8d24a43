/* cakekv.c — CAKE, cascading and adaptive KV eviction (ICLR 2025), following the
 * authors' cake_cache.py and modify_llama.py.
 *
 * Prefill, per layer l: the last W queries' softmax A over all keys (causal inside the window). On the past
 * block A' (keys before the window): spatial dispersion H_l = -sum A' log(A' + 1e-10) and temporal shift
 * V_l = sum over heads and keys of the unbiased variance over the W queries; preference P_l =
 * H_l^(1/tau1) * V_l^(1/tau2). Each past key's eviction indicator is mean_i A + gamma * var_i A, avg-pooled
 * (kernel 5, zero padding counted) and averaged over the query heads of its KV head (gqa_reduce). Budgets:
 * T = (cache_size - W) * N past tokens over the N layers held, B_l = P_l / sum P * T adjusted as the reference
 * does (budget.h, ks_cake_allocate) and capped at L - W; each layer keeps its top B_l past tokens plus the
 * window. cascading (the paper's default) re-allocates after every layer over the layers seen so far and
 * re-evicts them from their stored (already gathered) indicators, so that in the reference no layer holds its
 * full cache until the last one; without it all layers are evicted once after the last. With cascading, kvscope
 * evicts layer l to its step-l budget in its prompt-end work (on a GPU overlapping layer l + 1), an
 * earlier layer again once a step has halved its budget since its last eviction (so each row is re-selected
 * O(1) times on average, off the prompt's critical path), and every layer whose budget shrank since then once
 * more after the last layer, from the rows it holds: a top-k under one total order (score, then position) of
 * a top-k' set (k <= k') is the top-k of the whole, so every layer ends with its top min-over-steps budget,
 * the cascade's result exactly, without re-selecting every earlier layer at every step. Prompts of at most
 * cache_size + W tokens are not compressed at prefill (the reference's threshold).
 *
 * Decode: each layer then holds at most B_l + W rows (B_l = cache_size - W for an uncompressed prompt); once a
 * step's cache exceeds that, the step's query probabilities over the rows before the last W are avg-pooled and
 * averaged over the group, and the top B_l plus the last W stay: one row out per step. kvscope pools over rows
 * in position order; the reference pools over its storage order, which after the first eviction is top-k order.
 *
 * variant loom runs the same algorithm: LOOM-Scope ships the authors' code, whose missing per-sample reset
 * (stale budgets from the first prompt) is a bug kvscope does not reproduce (the state resets per sequence).
 * tau1 and tau2 default to 1.0, the reference's fallback; the authors' model2tau table is in the YAML file. */
#include <math.h>
#include <stddef.h>

#include "methods/budget.h"
#include "methods/method.h"
#include "methods/select.h"

typedef struct cakekv_opts {
    int variant, gqa_reduce;
    ks_budget cache_size; /* tokens per KV head and layer on average, window included */
    int window_size;
    float gamma, tau1, tau2;
    int kernel_size;
    int cascading;
} cakekv_opts;

static const ks_knob knobs[] = {
    KS_KNOB_VARIANT(cakekv_opts, "original and loom run the same CAKE (LOOM ships the authors' code)"),
    KS_KNOB_GQA_REDUCE(cakekv_opts),
    {"cache_size", KS_KNOB_BUDGET, offsetof(cakekv_opts, cache_size), "1024", NULL, 1, 0,
     "average tokens per KV head and layer, window included: T = (cache_size - W) * layers past tokens"},
    {"window_size", KS_KNOB_INT, offsetof(cakekv_opts, window_size), "32", NULL, 2, 1e6,
     "W: the last W prompt queries measure the layer and score the tokens; always kept"},
    {"gamma", KS_KNOB_FLOAT, offsetof(cakekv_opts, gamma), "200", NULL, 0, 1e9,
     "weight of the attention variance in the eviction indicator mean + gamma * var"},
    {"tau1", KS_KNOB_FLOAT, offsetof(cakekv_opts, tau1), "1.0", NULL, 1e-6, 1e6,
     "temperature of the spatial dispersion in the preference H^(1/tau1) * V^(1/tau2)"},
    {"tau2", KS_KNOB_FLOAT, offsetof(cakekv_opts, tau2), "1.0", NULL, 1e-6, 1e6,
     "temperature of the temporal shift in the preference"},
    {"kernel_size", KS_KNOB_INT, offsetof(cakekv_opts, kernel_size), "5", NULL, 1, 1001,
     "odd width of the average pooling of the indicator"},
    {"cascading", KS_KNOB_BOOL, offsetof(cakekv_opts, cascading), "true", NULL, 0, 0,
     "re-allocate and re-evict after every layer (true) or evict all layers after the last one (false)"},
    {0},
};

static ks_status cakekv_check(const ks_method *m) {
    const cakekv_opts *o = KS_METHOD_OPTS(m, cakekv_opts);
    return ks_method_check_window(m, "cache_size", &o->cache_size, o->window_size, o->kernel_size);
}

static int cakekv_window(const ks_method *m) { return KS_METHOD_OPTS(m, cakekv_opts)->window_size; }

static void cakekv_plan(ks_method *m) {
    int C = ks_budget_tokens(&KS_METHOD_OPTS(m, cakekv_opts)->cache_size, m->n_prompt, 0);
    for (int layer = m->first_layer; layer < m->last_layer; layer++) /* until the allocation says otherwise */
        ks_method_layer_at(m, layer)->budget = C;
}

/* Evicts the layer (prompt rows only) to its top `past` indicator rows (its row_scores) plus the last W rows. */
static ks_status evict_layer(ks_method *m, int layer, int past, int W) {
    ks_method_keep_top(m, layer, ks_method_row_scores(m, layer), past > 0 ? past : 0, W);
    return ks_method_compact(m, layer, 0);
}

/* The reference's CakeprefillKVCache allocation after model layer `last` of the prompt, over model layers
 * 0 .. last (their preference scores in m->model_state; T counts every layer of the model): each held layer's
 * budget (what decode keeps it to) and the fewest past tokens any step has given it. */
static void allocate(ks_method *m, int last) {
    const cakekv_opts *o = KS_METHOD_OPTS(m, cakekv_opts);
    int W = o->window_size, L = m->n_prompt, C = ks_budget_tokens(&o->cache_size, L, 0);
    int budget[KS_METHOD_MAX_LAYERS];
    ks_cake_allocate(m->model_state, last + 1, (int64_t)(C - W) * m->n_layers_model, L - W, budget);
    for (int layer = m->first_layer; layer <= last && layer < m->last_layer; layer++) {
        int past = budget[layer] < L - W ? budget[layer] : L - W;
        ks_method_layer *ly = ks_method_layer_at(m, layer);
        ly->cascade_past = layer == last || past < ly->cascade_past ? past : ly->cascade_past;
        ly->budget = past + W;
    }
}

/* After the last layer: every layer evicted to its top cascade_past rows (cascading: from the rows it holds, a
 * no-op where no step shrank it since its last eviction) or to the last allocation's budget, plus the window;
 * the budget decode keeps stays the last allocation's, as in the reference. */
static ks_status evict_all(ks_method *m, int cascading, int W) {
    for (int layer = m->first_layer; layer < m->last_layer; layer++) {
        const ks_method_layer *ly = ks_method_layer_at(m, layer);
        KS_TRY(evict_layer(m, layer, cascading ? ly->cascade_past : ly->budget - W, W));
    }
    return KS_OK;
}

static ks_status cakekv_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    const cakekv_opts *o = KS_METHOD_OPTS(m, cakekv_opts);
    int W = o->window_size, L = m->n_prompt, past = L - W, C = ks_method_layer_at(m, c->layer)->budget;
    if (past <= 0) return KS_OK;
    ks_window_summary sum;
    /* the same pass also sums each key's probabilities over the window (group mean): the statistics' mass */
    ks_window_args a = {.n_q = W, .stat = KS_SCORE_MEAN_VAR, .gamma = o->gamma, .reduce = o->gqa_reduce,
                        .sums = m->pooled};
    KS_TRY(ks_method_window_scores(m, c, a, m->scores, &sum));
    m->model_state[c->layer] = pow(sum.entropy, 1.0 / o->tau1) * pow(sum.var_sum, 1.0 / o->tau2);
#pragma omp parallel for if (past > KS_METHOD_PARALLEL_ROWS)
    for (int h = 0; h < m->Hk; h++) /* pooling is linear: pooling the group mean = the mean of pooled heads */
        ks_select_pool(ks_method_row_scores(m, c->layer) + (size_t)h * m->cap, m->scores + (size_t)h * m->cap, past,
                       o->kernel_size, KS_POOL_AVG);
    KS_TRY(ks_method_observe(m, c, m->pooled));
    if (L <= C + W) return KS_OK;
    int last = c->layer == m->n_layers_model - 1;
    if (o->cascading || last) allocate(m, c->layer);
    if (o->cascading) /* this layer to its step budget, and earlier ones this step halved (amortised O(rows)) */
        for (int layer = m->first_layer; layer <= c->layer; layer++) {
            int cascade_past = ks_method_layer_at(m, layer)->cascade_past;
            if (layer == c->layer || 2 * cascade_past <= ks_kvcache_len(m->cache, layer)[0] - W)
                KS_TRY(evict_layer(m, layer, cascade_past, W));
        }
    return last ? evict_all(m, o->cascading, W) : KS_OK;
}

/* A pipeline stage before the last, once every layer's preference is in: the allocations after each later
 * model layer (cascading) or after the last one, as a single stage would have made them, then every held layer
 * evicted to its final budget. */
static ks_status cakekv_finish_stage(ks_method *m) {
    const cakekv_opts *o = KS_METHOD_OPTS(m, cakekv_opts);
    int W = o->window_size, L = m->n_prompt, C = ks_budget_tokens(&o->cache_size, L, 0);
    if (L - W <= 0 || L <= C + W) return KS_OK;
    for (int g = o->cascading ? m->last_layer : m->n_layers_model - 1; g < m->n_layers_model; g++)
        allocate(m, g);
    return evict_all(m, o->cascading, W);
}

/* A layer whose heads hold more than one row over its budget (a prompt of up to cache_size + W tokens is kept
 * whole) sheds them at once on the host; otherwise each step's one row goes on the backend. */
static int sheds_several(const ks_method *m, int layer, int appended) {
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    for (int h = 0; h < m->Hk; h++)
        if (len[h] + !appended > ks_method_layer_at(m, layer)->budget + 1) return 1;
    return 0;
}

static int cakekv_decode_on_host(const ks_method *m) {
    for (int layer = m->first_layer; layer < m->last_layer; layer++) /* before the step: its row not appended yet */
        if (sheds_several(m, layer, 0)) return 1;
    return 0;
}

static ks_status cakekv_on_decode_step(ks_method *m, int layer, int qpos) {
    const cakekv_opts *o = KS_METHOD_OPTS(m, cakekv_opts);
    int W = o->window_size, hh = ks_method_layer_at(m, layer)->budget - W;
    if (!sheds_several(m, layer, 1)) {
        ks_evict_args a = {.rule = KS_EVICT_POOLED, .keep = hh + W, .tail = W, .kernel = o->kernel_size,
                           .reduce = o->gqa_reduce};
        return m->kv->ops->decode_evict(m->kv, layer, qpos, &a);
    }
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    KS_TRY(m->kv->ops->attention_decode_probs(m->kv, layer, qpos, o->gqa_reduce, m->scores, m->cap));
    for (int h = 0; h < m->Hk; h++)
        ks_select_pool(m->pooled + (size_t)h * m->cap, m->scores + (size_t)h * m->cap, len[h] - W > 0 ? len[h] - W : 0,
                       o->kernel_size, KS_POOL_AVG);
    ks_method_keep_top(m, layer, m->pooled, hh, W);
    return ks_method_compact(m, layer, 1);
}

const ks_method_ops ks_method_cakekv = {
    .name = "CakeKV",
    .file = "cakekv",
    .summary = "layer budgets from attention dispersion and shift, cascading eviction, and eviction while decoding",
    .knobs = knobs,
    .opts_size = sizeof(cakekv_opts),
    .row_scores = KS_ROW_SCORES_KV_HEAD,
    .rows_unplanned = 1,
    .check = cakekv_check,
    .window = cakekv_window,
    .plan = cakekv_plan,
    .after_prefill_layer = cakekv_after_prefill_layer,
    .on_decode_step = cakekv_on_decode_step,
    .decode_on_host = cakekv_decode_on_host,
    .finish_stage = cakekv_finish_stage,
};
