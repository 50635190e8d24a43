/* cam.c — CaM, cache merging (ICML 2024; docs/methods.md): rows leaving the cache hand their values on to the
 * rows after them.
 *
 * The cache, as the authors define it at decode: C = max_capacity_prompt rows per KV head, a start window of
 * S = min(C - 1, max(1, ceil(start_ratio * C))) rows (the product rounded to fp32 first) and a recent window of
 * the C - S latest. A row p leaves when the window slides past it: at the prompt's end, for L > C, rows
 * S .. L - (C - S) - 1 in increasing order; at each decode step once a head holds more than C rows, row S, the
 * oldest of the recent window. Before it goes its value is merged, with probability prob_p: V[r] += V[p] * (1/W)
 * for each of the W = window_size rows the head holds after p (fewer at its end), one leaving row after another,
 * so a later merge reads the values earlier merges changed (kvstore.h v_merge). Keys are not touched.
 *
 * prob_p = clamp(a[p] / mean(a over the rows after p in the recent window, the C - S rows that follow p in the
 * head (fewer at its end)), 0, 1), NaN -> 0 and +inf -> 1, where a is the attention of the current decode query
 * (group mean, kvstore.h attention_decode_probs) or, at the prompt's end, the mean attention of the last W prompt
 * queries (the plain causal softmax, group mean), computed once per layer before any merge. Merged iff u < prob_p
 * with u = uniform(seed, layer, KV head, position of p): splitmix64 (below) chained over the four numbers, the
 * top 53 bits over 2^53; a counter-based draw, so the outcome does not depend on the prefill chunks, the cache
 * mode, threads, ranks or batching.
 *
 * In a composition after a selection (m->selector set: SnapKV+CaM), CaM keeps no cache of its own: before each
 * compaction of the selector (method.h before_compact) it merges every row the compaction drops, in increasing
 * order, into the next W rows the head holds (kept or not), with the same probability rule (the prompt end's
 * window attention; a decode-time compaction's step probabilities). Decode-time evictions a selector runs inside
 * the store (decode_evict) merge nothing. */
#include <math.h>
#include <stddef.h>

#include "methods/budget.h"
#include "methods/method.h"

typedef struct cam_opts {
    ks_budget max_capacity_prompt;
    int window_size;
    float start_ratio;
    int seed;
} cam_opts;

static const ks_knob knobs[] = {
    {"max_capacity_prompt", KS_KNOB_BUDGET, offsetof(cam_opts, max_capacity_prompt), "2048", NULL, 2, 0,
     "C, rows per KV head: the start window and the recent window (tokens, or a ratio of the prompt, at least 2)"},
    {"window_size", KS_KNOB_INT, offsetof(cam_opts, window_size), "32", NULL, 1, 1e6,
     "W: a leaving row's value, times 1/W, goes to the W rows after it; the last W prompt queries' attention "
     "gives the prompt end's probabilities"},
    {"start_ratio", KS_KNOB_FLOAT, offsetof(cam_opts, start_ratio), "0.1", NULL, 0, 1,
     "the start window: S = max(1, ceil(start_ratio * C)) first rows, at most C - 1, always kept"},
    {"seed", KS_KNOB_INT, offsetof(cam_opts, seed), "0", NULL, 0, 2147483647,
     "seed of the Bernoulli merge draws (a hash of seed, layer, KV head and position)"},
    {0},
};

/* C and S for the prompt of n_prompt tokens (the selector's in a composition). */
static void sizes(const ks_method *m, int n_prompt, int *C, int *S) {
    const cam_opts *o = KS_METHOD_OPTS(m, cam_opts);
    int c = ks_budget_tokens(&o->max_capacity_prompt, n_prompt, 0);
    c = c < 2 ? 2 : c;
    int s = (int)ceilf(o->start_ratio * (float)c);
    s = s < 1 ? 1 : s;
    *C = c, *S = s < c - 1 ? s : c - 1;
}

/* The instance whose prompt and compactions this one follows: the selector in a composition, else itself. */
static const ks_method *owner(const ks_method *m) { return m->selector ? m->selector : m; }

static int cam_window(const ks_method *m) { return KS_METHOD_OPTS(m, cam_opts)->window_size; }

static void cam_plan(ks_method *m) {
    int C, S;
    sizes(m, m->n_prompt, &C, &S);
    for (int layer = m->first_layer; layer < m->last_layer; layer++) ks_method_layer_at(m, layer)->budget = C;
}

static uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The draw of the row at position pos of (layer, KV head): in [0, 1). */
static double uniform(int seed, int layer, int head, int pos) {
    uint64_t x = splitmix64((uint64_t)seed);
    x = splitmix64(x ^ (uint64_t)layer);
    x = splitmix64(x ^ (uint64_t)head);
    x = splitmix64(x ^ (uint64_t)pos);
    return (double)(x >> 11) * 0x1.0p-53;
}

/* clamp(x, 0, 1) with NaN -> 0 (+inf -> 1 by the clamp). */
static double clamp_prob(double x) { return x != x || x <= 0 ? 0 : x >= 1 ? 1 : x; }

/* m->scores (Hk, cap) = the attention the leaving rows' probabilities come from: the step query's at decode (its
 * position is the newest row's), else the mean of the last W prompt queries'. */
static ks_status leaving_attention(ks_method *m, int layer, int decode) {
    if (decode) {
        const int32_t *len = ks_kvcache_len(m->cache, layer);
        int qpos = ks_kvcache_pos(m->cache, layer, 0)[len[0] - 1];
        return m->kv->ops->attention_decode_probs(m->kv, layer, qpos, KS_GQA_MEAN, m->scores, m->cap);
    }
    ks_method_chunk c = owner(m)->last_chunk;
    c.layer = layer;
    const int n_keys = c.pos0 + c.n;
    if (!ks_kvcache_is_dense(m->cache, layer, n_keys)) /* a second prompt-end compaction (CakeKV's cascade) */
        return ks_fail(KS_ERR_UNSUPPORTED, "--acceleration %s+CaM: CaM merges only at a layer's first compaction "
                       "after the prompt (layer %d was compacted before)", owner(m)->ops->name, layer);
    int W = cam_window(m) < c.n ? cam_window(m) : c.n;
    ks_window_args a = {.n_q = W, .stat = KS_SCORE_SUM, .reduce = KS_GQA_MEAN};
    KS_TRY(ks_method_window_scores(m, &c, a, m->scores, NULL));
    for (int h = 0; h < m->Hk; h++)
        for (int j = 0; j < n_keys; j++) m->scores[(size_t)h * m->cap + j] /= (float)W;
    return KS_OK;
}

/* What the leaving rows of one KV head gave: how many left, their probabilities' sum, how many merged. */
typedef struct leaving_tally {
    int64_t left, merged;
    double prob_sum;
} leaving_tally;

/* KV head h's merge list (m->merges, m->n_merges): the rows not in keep (n_keep of them kept, increasing) that
 * the draw merges, each with weight 1/W; `recent` rows after a leaving row give its probability's denominator. */
static void head_merges(ks_method *m, int layer, int h, const int32_t *keep, int n_keep, int recent,
                        leaving_tally *t) {
    const cam_opts *o = KS_METHOD_OPTS(m, cam_opts);
    const int len = ks_kvcache_len(m->cache, layer)[h];
    const int32_t *pos = ks_kvcache_pos(m->cache, layer, h);
    const float *a = m->scores + (size_t)h * m->cap;
    ks_merge *list = m->merges + (size_t)h * m->cap;
    int n = 0;
    /* a over rows [lo, hi), the rows after the current leaving row, slid along; nonzero counts its nonzero
     * values, so that an all-zero window's sum is exactly 0 (the NaN and +inf rules) whatever the rounding */
    double sum = 0;
    int nonzero = 0;
    for (int p = 0, k = 0, lo = 0, hi = 0; p < len; p++) {
        if (k < n_keep && keep[k] == p) {
            k++;
            continue;
        }
        const int end = len - p - 1 < recent ? len : p + 1 + recent;
        if (hi <= p + 1) lo = hi = p + 1, sum = 0, nonzero = 0; /* nothing of the last window stays */
        for (; hi < end; hi++) sum += a[hi], nonzero += a[hi] != 0;
        for (; lo < p + 1; lo++) sum -= a[lo], nonzero -= a[lo] != 0;
        if (!nonzero) sum = 0;
        const double mean = sum / (end - p - 1); /* no row after p: NaN, so prob 0 */
        const double prob = clamp_prob(a[p] / mean);
        t->left++, t->prob_sum += prob;
        if (uniform(o->seed, layer, h, pos[p]) < prob) list[n++] = (ks_merge){p, 1.0f / (float)o->window_size};
    }
    m->n_merges[h] = n;
    t->merged += n;
}

/* Merges the rows the compaction to keep / n_keep drops (method.h before_compact). */
static ks_status cam_before_compact(ks_method *m, int layer, const int32_t *keep, const int32_t *n_keep, int ld,
                                    int decode) {
    int C, S;
    sizes(m, owner(m)->n_prompt, &C, &S);
    KS_TRY(leaving_attention(m, layer, decode));
    leaving_tally t = {0};
    for (int h = 0; h < m->Hk; h++) head_merges(m, layer, h, keep + (size_t)h * ld, n_keep[h], C - S, &t);
    ks_merge_norms norms = {0, 0};
    if (t.merged)
        KS_TRY(m->kv->ops->v_merge(m->kv, layer, m->merges, m->n_merges, m->cap, cam_window(m),
                                   decode ? NULL : &norms));
    ks_method_layer *ly = ks_method_layer_at(m, layer);
    ly->leaving += t.left, ly->prob_sum += t.prob_sum;
    if (decode) {
        ly->merges_decode += (int)t.merged;
    } else {
        ly->merges_prompt += (int)t.merged;
        ly->dv_rel = norms.v_sq > 0 ? (float)sqrt(norms.dv_sq / norms.v_sq) : 0.0f;
    }
    return KS_OK;
}

static ks_status cam_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    int C, S;
    sizes(m, m->n_prompt, &C, &S);
    if (m->selector || m->n_prompt <= C) return KS_OK; /* a part: the selector's compactions call before_compact */
    KS_TRY(ks_method_observe(m, c, NULL));
    ks_method_keep_ends(m, c->layer, S, C - S);
    return ks_method_compact(m, c->layer, 0); /* merges first (cam_before_compact) */
}

/* Any held layer with a head holding more than C - appended rows: the step (appended: its row in; else the next
 * one, its row still to come) has a row leaving. */
static int rows_leave(const ks_method *m, int layer, int appended) {
    int C, S;
    sizes(m, m->n_prompt, &C, &S);
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    for (int h = 0; h < m->Hk; h++)
        if (len[h] + !appended > C) return 1;
    return 0;
}

/* Past C rows the oldest row of the recent window leaves, merged first, on the host (the step's probabilities
 * and the draws cross to the host). */
static ks_status cam_on_decode_step(ks_method *m, int layer, int qpos) {
    (void)qpos; /* the newest row's position (leaving_attention) */
    if (m->selector || !rows_leave(m, layer, 1)) return KS_OK;
    int C, S;
    sizes(m, m->n_prompt, &C, &S);
    ks_method_keep_ends(m, layer, S, C - S);
    return ks_method_compact(m, layer, 1);
}

/* A step with a row leaving reads its probabilities back and compacts on the host: no graph replay. */
static int cam_decode_on_host(const ks_method *m) {
    for (int layer = m->first_layer; !m->selector && layer < m->last_layer; layer++)
        if (rows_leave(m, layer, 0)) return 1;
    return 0;
}

/* The value-merging columns of the layer's statistics row. */
static void cam_layer_stat(const ks_method *m, int layer, ks_layer_stat *row) {
    const ks_method_layer *ly = ks_method_layer_at(m, layer);
    row->merges_prompt = ly->merges_prompt;
    row->merges_decode = ly->merges_decode;
    row->merge_prob_mean = ly->leaving ? (float)(ly->prob_sum / ly->leaving) : 0.0f;
    row->merge_dv_rel = ly->dv_rel;
}

const ks_method_ops ks_method_cam = {
    .name = "CaM",
    .role = KS_ROLE_MERGE,
    .file = "cam",
    .summary = "start + recent windows; a leaving row's value merged into the rows after it with an attention-"
               "proportional probability",
    .knobs = knobs,
    .opts_size = sizeof(cam_opts),
    .window = cam_window,
    .plan = cam_plan,
    .after_prefill_layer = cam_after_prefill_layer,
    .on_decode_step = cam_on_decode_step,
    .decode_on_host = cam_decode_on_host,
    .before_compact = cam_before_compact,
    .layer_stat = cam_layer_stat,
};
