/* check_think.c — ThinK, key channel pruning (src/methods/think.c): stored through KIVI's packed keys
 * (ThinK+KIVI) or, without a quantizer, as its own raw packed prefix (kernels/kivi_args.h, KS_KIVI_RAW).
 *
 *     check_think           on the cpu KV store over a cache the tests fill: the kept channels of hand-built
 *                           Q/K (group mean, ties) and the bytes by the formula, with KIVI; the decode attention
 *                           over keys packed on the kept channels (a later key block on the same channels), the
 *                           fast path and the format's reference against the plain reference; a short prompt and
 *                           a new sequence storing every channel; the errors; the raw encoding's round trip
 *                           (fp32, and the CUDA store's bf16 form: rounding to nearest even, two per word);
 *                           ThinK alone on the hand-built Q/K (counts, released rows, bytes) and on random rows
 *                           (decode attention before and after decode tokens, values exact)
 *     check_think smollm2   SmolLM2 (label "model"): SnapKV+ThinK+KIVI with ratio 0 is SnapKV+KIVI bit for bit,
 *                           with the default ratio every head keeps d - floor(0.4 d) channels and the bytes follow
 *                           the formula; ThinK alone and SnapKV+ThinK with ratio 0 are SnapKV bit for bit;
 *                           SnapKV+ThinK prunes with the formula's bytes, the same with a budget-sized cache
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/kvstore_cpu.h"
#include "cpu/kivi_ref.h"
#include "cpu/ref.h"
#include "engine/generate.h"
#include "methods/method.h"
#include "test_util.h"

/* ---- the method on the cpu KV store over a cache the tests fill ---------------------------------------- */

enum { H = 4, HK = 2, D = 4, CAP = 64 }; /* one layer; query heads, KV heads, head_dim, rows */

typedef struct fixture {
    ks_kvcache cache;
    ks_kvstore_cpu s;
    float q[CAP * H * D];          /* the chunk's query rows (CAP, H, D) */
    float k_all[HK * CAP * D], v_all[HK * CAP * D]; /* every row appended so far, by token */
    ks_model model;
    ks_method *m;
} fixture;

static void fx_init(fixture *f, const char *name, const char *const *opts, int n_opts) {
    memset(f, 0, sizeof *f);
    ck_assert(ks_kvcache_init(&f->cache, 0, 1, HK, D, CAP, CAP, 1) == KS_OK);
    ks_kvstore_cpu_params p = {.cache = &f->cache, .q = f->q, .n_heads = H, .max_chunk = CAP, .scale = 0.5f};
    ck_assert(ks_kvstore_cpu_init(&f->s, &p) == KS_OK);
    f->model.cfg.n_layers = 1, f->model.cfg.n_heads = H, f->model.cfg.n_kv_heads = HK, f->model.cfg.head_dim = D;
    f->model.first_layer = 0, f->model.last_layer = 1;
    f->model.source = "test model";
    ck_assert_msg(ks_method_create(&f->m, name, NULL, opts, n_opts) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_method_bind_store(f->m, &f->s.base, &f->cache, &f->model) == KS_OK, "%s", ks_last_error());
}

static void fx_free(fixture *f) {
    ks_method_free(f->m);
    ks_kvstore_cpu_free(&f->s);
    ks_kvcache_free(&f->cache);
}

/* Tokens the layer's head 0 holds, packed or not. */
static int held(const fixture *f) { return ks_kv_kivi_counts(f->cache.kivi, &f->cache, 0, 0).n; }

/* Appends n tokens: head h's key row k[h] (NULL: random) and random values. */
static void fx_append(fixture *f, int n, const float k[HK][D]) {
    float kn[HK * D], vn[HK * D];
    for (int t = 0; t < n; t++) {
        int at = held(f);
        for (int i = 0; i < HK * D; i++) kn[i] = k ? k[i / D][i % D] : 2 * ks_test_frand(), vn[i] = ks_test_frand();
        for (int h = 0; h < HK; h++) {
            memcpy(f->k_all + ((size_t)h * CAP + at) * D, kn + h * D, sizeof(float) * D);
            memcpy(f->v_all + ((size_t)h * CAP + at) * D, vn + h * D, sizeof(float) * D);
        }
        ks_kvcache_append(&f->cache, 0, kn, vn, 1, at);
    }
}

/* Query rows r0 .. r0 + n - 1 of every query head: q[i] (head i's row). */
static void fx_queries(fixture *f, int r0, int n, const float q[H][D]) {
    for (int r = r0; r < r0 + n; r++) memcpy(f->q + (size_t)r * H * D, q, sizeof(float) * H * D);
}

/* A prompt of L tokens (already appended) through the layer's prompt-end work. */
static void fx_prompt(fixture *f, int L) {
    ks_method_begin_prompt(f->m, L);
    ck_assert_msg(ks_method_prefill_layer(f->m, 0, 0, L, 1) == KS_OK, "%s", ks_last_error());
    ck_assert(ks_method_end_prompt(f->m) == KS_OK);
}

/* Head h stores exactly the key channels want[0 .. n - 1]. */
static void expect_channels(const fixture *f, int h, const int32_t *want, int n) {
    const ks_kivi_head g = ks_kv_kivi_head(f->cache.kivi, &f->cache, 0, h);
    ck_assert_msg(g.kc == n, "head %d stores %d channels, want %d", h, g.kc, n);
    for (int i = 0; i < n; i++) ck_assert_msg(g.k_chan[i] == want[i], "head %d channel %d: %d", h, i, g.k_chan[i]);
}

static float layer_stat_channels(const fixture *f) {
    ks_layer_stat st;
    ck_assert_int_eq(ks_method_layer_stats(f->m, &st), 1);
    return st.channels_kept;
}

static const char *const hand_opts[] = {"think.ratio=0.5", "think.recent_size=0", "think.window_size=2",
                                        "group_size=2", "residual_length=2"};

/* d = 4, ratio 0.5: two channels pruned per KV head, scored by the last 2 queries against the 5 keys (every row
 * alike, so the means are the rows' squares). KV head 0: query heads 0 and 1, q^2 = (1 4 1 9) and (9 1 1 1), k^2 =
 * (1 1 4 1): scores (1 4 4 9) and (9 1 4 1), group mean (5 2.5 4 5): channels 1 and 2 pruned (query head 0 alone
 * would prune 0). KV head 1: q^2 = 1 everywhere, k^2 = (1 1 1 4): mean (1 1 1 4), a tie of three: the lower
 * channels 0 and 1 pruned. The bytes, KIVI 2-bit with G = 2, R = 2 over 5 tokens: keys of 4 tokens on 2 channels
 * (1 word + 2 groups x 4 B each: 24 B), values of 3 tokens (1 word + 2 groups x 4 B: 36 B), full precision 1 key
 * and 2 values x 16 B (48 B): 108 B per head, where every channel stored makes 132 B. */
START_TEST(test_kept_channels) {
    static const float k[HK][D] = {{1, 1, 2, 1}, {1, 1, 1, 2}};
    static const float q[H][D] = {{1, 2, 1, 3}, {3, 1, 1, 1}, {1, 1, 1, 1}, {-1, 1, -1, 1}};
    fixture f;
    fx_init(&f, "ThinK+KIVI", hand_opts, 5);
    fx_append(&f, 5, k);
    fx_queries(&f, 3, 2, q);
    fx_prompt(&f, 5);
    const int32_t kept0[] = {0, 3}, kept1[] = {2, 3};
    expect_channels(&f, 0, kept0, 2);
    expect_channels(&f, 1, kept1, 2);
    ck_assert(layer_stat_channels(&f) == 2.0f);
    ks_layer_stat st;
    ks_method_layer_stats(f.m, &st);
    ck_assert_int_eq(st.kept, 5);
    ck_assert_int_eq(ks_kv_kivi_layer_bytes(f.cache.kivi, &f.cache, 0), 2 * 108);
    ck_assert_int_eq(st.kv_bytes, 2 * 108);
    /* the packed keys: the kept channels exact (constant groups), the pruned ones 0 */
    float out[4 * D];
    for (int h = 0; h < HK; h++) {
        const ks_kivi_head g = ks_kv_kivi_head(f.cache.kivi, &f.cache, 0, h);
        ck_assert_int_eq(g.nq_k, 4);
        ks_kivi_dequant_keys(&f.cache.kivi->shape, g.k_codes, g.k_scale, g.k_zero, g.k_chan, g.kc, 0, 4, out);
        for (int t = 0; t < 4; t++)
            for (int c = 0; c < D; c++) {
                int kept = c == g.k_chan[0] || c == g.k_chan[1];
                ck_assert(out[t * D + c] == (kept ? k[h][c] : 0.0f));
            }
    }
    fx_free(&f);
    /* the same with every channel kept (ratio 0): KIVI's bytes */
    const char *none[] = {"think.ratio=0", "think.recent_size=0", "think.window_size=2", "group_size=2",
                          "residual_length=2"};
    fx_init(&f, "ThinK+KIVI", none, 5);
    fx_append(&f, 5, k);
    fx_queries(&f, 3, 2, q);
    fx_prompt(&f, 5);
    ck_assert_int_eq(ks_kv_kivi_layer_bytes(f.cache.kivi, &f.cache, 0), 2 * 132);
    ck_assert(layer_stat_channels(&f) == (float)D);
    fx_free(&f);
}
END_TEST

/* The decode attention through the store equals the plain reference over the keys as stored: the packed keys'
 * logits over their kept channels (the pruned ones read as 0), the full-precision rows' over all; a later key
 * block packed while decoding keeps the same channels. */
static void expect_attention(fixture *f) {
    static float kd[HK * CAP * D], vd[HK * CAP * D];
    float got[H * D], want[H * D];
    int32_t len[HK];
    const ks_kv_kivi *kq = f->cache.kivi;
    for (int h = 0; h < HK; h++) {
        ks_kivi_head g = ks_kv_kivi_head(kq, &f->cache, 0, h);
        float *K = kd + (size_t)h * CAP * D, *V = vd + (size_t)h * CAP * D;
        memcpy(K, f->k_all + (size_t)h * CAP * D, sizeof(float) * g.n * D);
        memcpy(V, f->v_all + (size_t)h * CAP * D, sizeof(float) * g.n * D);
        ks_kivi_dequant_keys(&kq->shape, g.k_codes, g.k_scale, g.k_zero, g.k_chan, g.kc, 0, g.nq_k, K);
        ks_kivi_dequant_values(&kq->shape, g.v_codes, g.v_scale, g.v_zero, 0, g.nq_v, V);
        if (kq->p.v_bits == KS_KIVI_RAW) /* raw: the values exact */
            ck_assert(!memcmp(V, f->v_all + (size_t)h * CAP * D, sizeof(float) * g.n * D));
        for (int t = 0; t < g.nq_k; t++)
            for (int c = 0, i = 0; c < D; c++) {
                const float *kt = f->k_all + ((size_t)h * CAP + t) * D;
                if (i < g.kc && g.k_chan[i] == c) /* raw: a kept channel exact */
                    ck_assert(kq->p.k_bits != KS_KIVI_RAW || K[(size_t)t * D + c] == kt[c]), i++;
                else
                    ck_assert(K[(size_t)t * D + c] == 0.0f); /* a pruned channel carries nothing */
            }
        len[h] = g.n;
    }
    for (int i = 0; i < H * D; i++) f->q[i] = ks_test_frand();
    ks_ref_attention_decode(want, f->q, kd, vd, len, CAP, H, HK, D, 0.5f);
    ks_kvstore_cpu_attention_decode(&f->s, 0, got); /* the fast path */
    for (int i = 0; i < H * D; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f, "[%d] %g vs %g", i, got[i], want[i]);
    ks_kivi_head heads[HK];
    for (int h = 0; h < HK; h++) heads[h] = ks_kv_kivi_head(kq, &f->cache, 0, h);
    ks_kivi_attention_decode(got, f->q, heads, &kq->shape, H, HK, 0.5f); /* the format's reference */
    for (int i = 0; i < H * D; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f, "[%d] %g vs %g (reference)", i, got[i], want[i]);
}

START_TEST(test_decode_attention) {
    const char *opts[] = {"think.ratio=0.5", "think.recent_size=0", "think.window_size=4", "group_size=2",
                          "residual_length=4", "k_bits=4"};
    fixture f;
    fx_init(&f, "ThinK+KIVI", opts, 6);
    fx_append(&f, 18, NULL);
    for (int r = 0; r < 18; r++)
        for (int i = 0; i < H * D; i++) f.q[r * H * D + i] = ks_test_frand();
    fx_prompt(&f, 18);
    ck_assert(layer_stat_channels(&f) == 2.0f);
    ck_assert(ks_kvstore_cpu_packed(&f.s, 0));
    expect_attention(&f);
    ks_kivi_head g0 = ks_kv_kivi_head(f.cache.kivi, &f.cache, 0, 0);
    int32_t chan[2] = {g0.k_chan[0], g0.k_chan[1]};
    ck_assert_int_eq(g0.nq_k, 16);
    for (int s = 0; s < 5; s++) { /* the key tail reaches R = 4 once: one more block packed */
        fx_append(&f, 1, NULL);
        ck_assert_msg(ks_method_decode_layer(f.m, 0, held(&f) - 1) == KS_OK, "%s", ks_last_error());
    }
    g0 = ks_kv_kivi_head(f.cache.kivi, &f.cache, 0, 0);
    ck_assert_int_eq(g0.nq_k, 20);
    expect_channels(&f, 0, chan, 2);
    expect_attention(&f);
    fx_free(&f);
}
END_TEST

/* A prompt no longer than recent_size prunes nothing (and does not fail); a new sequence after a pruned one
 * stores every channel until ThinK prunes again. */
START_TEST(test_short_prompt) {
    const char *opts[] = {"think.window_size=2", "group_size=2", "residual_length=2"}; /* recent_size 32 */
    const int32_t all[] = {0, 1, 2, 3};
    fixture f;
    fx_init(&f, "ThinK+KIVI", opts, 3);
    fx_append(&f, 32, NULL);
    for (int i = 0; i < CAP * H * D; i++) f.q[i] = ks_test_frand();
    fx_prompt(&f, 32);
    for (int h = 0; h < HK; h++) expect_channels(&f, h, all, D);
    ck_assert(layer_stat_channels(&f) == (float)D);
    ck_assert_int_eq(held(&f), 32);
    fx_free(&f);
    const char *recent4[] = {"think.ratio=0.5", "think.recent_size=4", "think.window_size=2", "group_size=2",
                             "residual_length=2"};
    fx_init(&f, "ThinK+KIVI", recent4, 5);
    fx_append(&f, 9, NULL);
    fx_prompt(&f, 9);
    ck_assert_int_eq(ks_kv_kivi_head(f.cache.kivi, &f.cache, 0, 0).kc, 2);
    ks_kvcache_reset(&f.cache);
    ks_method_reset(f.m);
    fx_append(&f, 4, NULL); /* at most recent_size: every channel stored again */
    fx_prompt(&f, 4);
    for (int h = 0; h < HK; h++) expect_channels(&f, h, all, D);
    ck_assert(layer_stat_channels(&f) == (float)D);
    fx_free(&f);
}
END_TEST

/* The raw encoding: the bits themselves (-0, a subnormal, a large value), keys on the stored channels only (the
 * others read as 0), values whole, no error; any first token and count. */
START_TEST(test_raw_round_trip) {
    const ks_kivi_params p = {.k_bits = KS_KIVI_RAW, .v_bits = KS_KIVI_RAW, .group = 1, .residual = 1};
    ks_kivi_shape s = ks_kivi_shape_of(&p, D, 8);
    ck_assert(s.k_words == 8 && s.v_words == D && s.k_groups == 0 && s.v_groups == 0);
    const float x[3][D] = {{-0.0f, 1e-40f, 3.0e38f, -1.25f}, {0.1f, -7.0f, 2.0f, 1e-3f}, {5.0f, 6.0f, -0.0f, 8.0f}};
    const int32_t chan[2] = {1, 3};
    uint32_t kcodes[2 * 8] = {0}, vcodes[8 * D] = {0};
    double ek[2] = {0, 0}, ev[2] = {0, 0};
    ks_kivi_quant_keys(&s, &x[0][0], D, 3, 3, chan, 2, kcodes, NULL, NULL, ek);
    ks_kivi_quant_values(&s, &x[0][0], D, 3, 3, vcodes, NULL, NULL, ev);
    ck_assert(ek[0] == 0 && ev[0] == 0 && ek[1] > 0 && ev[1] > ek[1]);
    float k[3 * D], v[3 * D];
    ks_kivi_dequant_keys(&s, kcodes, NULL, NULL, chan, 2, 3, 3, k);
    ks_kivi_dequant_values(&s, vcodes, NULL, NULL, 3, 3, v);
    ck_assert(!memcmp(v, x, sizeof v));
    for (int t = 0; t < 3; t++)
        for (int c = 0; c < D; c++) {
            float want = c == 1 || c == 3 ? x[t][c] : 0.0f;
            ck_assert(!memcmp(&k[t * D + c], &want, sizeof want));
        }
}
END_TEST

/* The raw encoding of bf16 rows (the CUDA store's form, KS_KIVI_RAW_BF16): two elements per word, element i in
 * bits [16 (i % 2), ...) of word i / 2; fp32 values rounded to bf16, to nearest even (1 + 2^-8 a tie down to 1,
 * 1 + 3 2^-8 a tie up, NaN kept, FLT_MAX to inf), bf16 values exact, -0 kept; the error parts those of the
 * rounding; keys on the stored channels only (the others read as 0), the first token inside a word. */
START_TEST(test_raw_bf16) {
    ck_assert(ks_kivi_bf16(1.0f + 0x1p-8f) == 0x3F80 && ks_kivi_bf16(1.0f + 0x3p-8f) == 0x3F82);
    ck_assert(ks_kivi_bf16(0.1f) == 0x3DCD && ks_kivi_bf16(1e-3f) == 0x3A83 && ks_kivi_bf16(-0.0f) == 0x8000);
    ck_assert(ks_kivi_bf16(FLT_MAX) == 0x7F80 && isnan(ks_kivi_unbf16(ks_kivi_bf16(NAN))));
    ck_assert(ks_kivi_unbf16(0xC0E0) == -7.0f);
    const ks_kivi_params p = {.k_bits = KS_KIVI_RAW_BF16, .v_bits = KS_KIVI_RAW_BF16, .group = 1, .residual = 1};
    ck_assert(ks_kivi_params_check(&p, D) == KS_OK);
    ks_kivi_shape s = ks_kivi_shape_of(&p, D, 8);
    ck_assert(s.k_words == 4 && s.v_words == D / 2 && s.k_groups == 0 && s.v_groups == 0);
    const float x[3][D] = {{-0.0f, 1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -1.25f}, {0.1f, -7.0f, 2.0f, 1e-3f},
                           {5.0f, 6.0f, -0.0f, 8.0f}};
    const uint16_t bits[3][D] = {{0x8000, 0x3F80, 0x3F82, 0xBFA0}, {0x3DCD, 0xC0E0, 0x4000, 0x3A83},
                                 {0x40A0, 0x40C0, 0x8000, 0x4100}};
    const int32_t chan[2] = {1, 3};
    uint32_t kcodes[2 * 4] = {0}, vcodes[8 * D / 2] = {0};
    double ek[2] = {0, 0}, ev[2] = {0, 0}, want_k = 0, want_v = 0;
    ks_kivi_quant_keys(&s, &x[0][0], D, 3, 3, chan, 2, kcodes, NULL, NULL, ek);
    ks_kivi_quant_values(&s, &x[0][0], D, 3, 3, vcodes, NULL, NULL, ev);
    for (int t = 0; t < 3; t++)
        for (int c = 0; c < D; c++) {
            double e = (double)x[t][c] - ks_kivi_unbf16(bits[t][c]);
            want_v += e * e, want_k += c == 1 || c == 3 ? e * e : 0;
            ck_assert(ks_kivi_code(vcodes + (3 + t) * s.v_words, c, 16) == bits[t][c]);
            if (c == 1 || c == 3) ck_assert(ks_kivi_code(kcodes + (c / 2) * s.k_words, 3 + t, 16) == bits[t][c]);
        }
    ck_assert(kcodes[0] == 0 && (kcodes[1] & 0xffffu) == 0); /* tokens 0 .. 2 untouched */
    ck_assert(ek[0] == want_k && ev[0] == want_v && want_k > 0 && ev[1] > ek[1]);
    float k[3 * D], v[3 * D];
    ks_kivi_dequant_keys(&s, kcodes, NULL, NULL, chan, 2, 3, 3, k);
    ks_kivi_dequant_values(&s, vcodes, NULL, NULL, 3, 3, v);
    for (int t = 0; t < 3; t++)
        for (int c = 0; c < D; c++) {
            float want = ks_kivi_unbf16(bits[t][c]), want_key = c == 1 || c == 3 ? want : 0.0f;
            ck_assert(!memcmp(&v[t * D + c], &want, sizeof want) && !memcmp(&k[t * D + c], &want_key, sizeof want));
        }
}
END_TEST

/* ThinK alone: the kept channels of test_kept_channels' Q/K over 7 rows, recent_size 2: the first 5 rows of each
 * head packed raw (keys on 2 channels, values whole) and released, 2 rows in the cache. Bytes: 5 x 2 x 4 B of keys,
 * 5 x 4 x 4 B of values, 2 full rows (keys and values) x 16 B: 184 B per head. */
START_TEST(test_alone) {
    static const float k[HK][D] = {{1, 1, 2, 1}, {1, 1, 1, 2}};
    static const float q[H][D] = {{1, 2, 1, 3}, {3, 1, 1, 1}, {1, 1, 1, 1}, {-1, 1, -1, 1}};
    const char *opts[] = {"ratio=0.5", "recent_size=2", "window_size=2"};
    fixture f;
    fx_init(&f, "ThinK", opts, 3);
    fx_append(&f, 7, k);
    fx_queries(&f, 5, 2, q);
    fx_prompt(&f, 7);
    const int32_t kept0[] = {0, 3}, kept1[] = {2, 3};
    expect_channels(&f, 0, kept0, 2);
    expect_channels(&f, 1, kept1, 2);
    for (int h = 0; h < HK; h++) {
        ks_kivi_counts n = ks_kv_kivi_counts(f.cache.kivi, &f.cache, 0, h);
        ck_assert(n.nq_k == 5 && n.nq_v == 5 && n.off == 5 && n.n == 7 && ks_kvcache_len(&f.cache, 0)[h] == 2);
        ck_assert(ks_kvcache_pos(&f.cache, 0, h)[0] == 5 && f.cache.kivi->pos[(size_t)h * CAP + 4] == 4);
    }
    ks_layer_stat st;
    ck_assert_int_eq(ks_method_layer_stats(f.m, &st), 1);
    ck_assert(st.channels_kept == 2.0f && st.kept == 7 && st.kv_bytes == 2 * 184);
    ck_assert_int_eq(ks_kvcache_bytes(&f.cache), 2 * 184);
    fx_free(&f);
}
END_TEST

/* ThinK alone on random rows: the decode attention equals the plain reference over the keys with the pruned
 * channels of the packed rows set to 0 and the values exact, after the prompt and after decode tokens (appended
 * whole to the cache). */
START_TEST(test_alone_attention) {
    const char *opts[] = {"ratio=0.5", "recent_size=3", "window_size=4"};
    fixture f;
    fx_init(&f, "ThinK", opts, 3);
    fx_append(&f, 12, NULL);
    for (int i = 0; i < 12 * H * D; i++) f.q[i] = ks_test_frand();
    fx_prompt(&f, 12);
    ck_assert(ks_kvstore_cpu_packed(&f.s, 0) && ks_kvcache_len(&f.cache, 0)[0] == 3);
    expect_attention(&f);
    for (int s = 0; s < 3; s++) {
        fx_append(&f, 1, NULL);
        ck_assert(ks_method_decode_layer(f.m, 0, held(&f) - 1) == KS_OK);
    }
    ck_assert(ks_kvcache_len(&f.cache, 0)[0] == 6 && ks_kv_kivi_counts(f.cache.kivi, &f.cache, 0, 0).nq_k == 9);
    expect_attention(&f);
    fx_free(&f);
}
END_TEST

/* After a decode-time eviction, before KIVI, with ratio 1. */
START_TEST(test_errors) {
    const char *ratio1[] = {"ratio=1"};
    ks_method *m = NULL;
    ck_assert(ks_method_create(&m, "ThinK", NULL, ratio1, 1) == KS_ERR_ARG);
    ck_assert(strstr(ks_last_error(), "ratio"));
    ck_assert(ks_method_create(&m, "H2O+ThinK+KIVI", NULL, NULL, 0) == KS_ERR_ARG);
    ck_assert(strstr(ks_last_error(), "ThinK") && strstr(ks_last_error(), "H2O"));
    ck_assert(ks_method_create(&m, "KIVI+ThinK", NULL, NULL, 0) == KS_ERR_ARG);
    ck_assert(strstr(ks_last_error(), "ThinK+KIVI"));
    ck_assert(ks_method_think.role == KS_ROLE_CHANNELS && ks_method_think.needs_stable_rows);
}
END_TEST

/* ---- SmolLM2 on the cpu backend ------------------------------------------------------------------------- */

enum { NEW = 12 };

typedef struct run {
    int32_t tokens[NEW];
    ks_generate_result r;
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
    int rows;
    int64_t bytes_formula; /* the end's bytes by the formula, from the counts and channels held */
    int channels_min, channels_max; /* key channels stored per head at the end, over every layer and head */
} run;

/* KIVI's byte formula (kv_kivi.h) over the counts and stored channels of every layer and head. */
static void formula(const ks_kvcache *c, run *out) {
    const ks_kv_kivi *q = c->kivi;
    const ks_kivi_shape *s = &q->shape;
    out->bytes_formula = 0, out->channels_min = s->d, out->channels_max = 0;
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++) {
            ks_kivi_head g = ks_kv_kivi_head(q, c, l, h);
            int64_t words = (g.nq_k + 32 / s->k_bits - 1) / (32 / s->k_bits);
            out->bytes_formula += (int64_t)g.kc * (words * 4 + (s->k_groups ? g.nq_k / s->group * 4 : 0)) +
                                  (int64_t)g.nq_v * (s->v_words * 4 + s->v_groups * 4) +
                                  (int64_t)(2 * g.n - g.nq_k - g.nq_v) * s->d * 4;
            out->channels_min = g.kc < out->channels_min ? g.kc : out->channels_min;
            out->channels_max = g.kc > out->channels_max ? g.kc : out->channels_max;
        }
}

/* Greedy tokens and statistics of `name` on the prompt; with a packed part, its bytes by the formula, and when
 * `packs`, the statistics' kv_bytes summing to the prefill's bytes. */
static void generate_in(const ks_model *model, const char *name, const char *const *opts, int n_opts,
                        const ks_ids *ids, int packs, ks_forward_cache cache, run *out) {
    ks_method *m;
    ks_forward f = {0};
    ck_assert_msg(ks_method_create(&m, name, NULL, opts, n_opts) == KS_OK, "%s", ks_last_error());
    ks_forward_params fp = {.device = "cpu", .max_ctx = ids->n + NEW, .max_new = NEW, .chunk = 64,
                            .cache = cache};
    ck_assert_msg(ks_forward_init(&f, model, m, &fp) == KS_OK, "%s", ks_last_error());
    ks_generate_params gp = {.max_new_tokens = NEW};
    ck_assert_msg(ks_generate(&f, ids->ids, ids->n, &gp, out->tokens, &out->r) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(out->r.n, NEW);
    const ks_kvcache *c = f.ops->kvcache(f.be);
    ck_assert(ks_kvcache_bytes(c) == out->r.kv_bytes_end);
    if (c->kivi) formula(c, out);
    ck_assert(!c->kivi || out->bytes_formula == out->r.kv_bytes_end);
    out->rows = ks_method_layer_stats(m, out->st);
    int64_t sum = 0;
    for (int l = 0; l < out->rows; l++) sum += out->st[l].kv_bytes;
    ck_assert(!packs || sum == out->r.kv_bytes_prefill);
    ks_forward_free(&f);
    ks_method_free(m);
}

/* Every field but channels_kept equal (the rows, masses and norms, the quantization's columns). */
static void expect_same_stat(const ks_layer_stat *a, const ks_layer_stat *b) {
    ck_assert_msg(a->layer == b->layer && a->kv_head == b->kv_head && a->budget == b->budget && a->kept == b->kept &&
                  a->attn_mass_kept == b->attn_mass_kept && a->key_norm_mean == b->key_norm_mean &&
                  a->key_norm_max == b->key_norm_max && a->sparse_density == b->sparse_density &&
                  a->quant_error == b->quant_error && a->quant_error_v == b->quant_error_v &&
                  a->residual_k == b->residual_k && a->residual_v == b->residual_v && a->kv_bytes == b->kv_bytes &&
                  a->merges_prompt == b->merges_prompt && a->merges_decode == b->merges_decode,
                  "layer %d statistics differ", a->layer);
}

static void generate(const ks_model *model, const char *name, const char *const *opts, int n_opts, const ks_ids *ids,
                     int packs, run *out) {
    generate_in(model, name, opts, n_opts, ids, packs, KS_CACHE_FULL, out);
}

START_TEST(test_smollm2) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    ck_assert(ids.n > 34);
    static run base, zero, pruned;
    const char *snap[] = {"max_capacity_prompt=34", "group_size=16", "residual_length=16"};
    const char *think0[] = {"snapkv.max_capacity_prompt=34", "group_size=16", "residual_length=16", "ratio=0"};
    const char *think[] = {"snapkv.max_capacity_prompt=34", "group_size=16", "residual_length=16"};
    generate(&model, "SnapKV+KIVI", snap, 3, &ids, 1, &base);
    generate(&model, "SnapKV+ThinK+KIVI", think0, 4, &ids, 1, &zero);
    /* ratio 0: SnapKV+KIVI's tokens, rows, statistics and bytes, bit for bit */
    ck_assert(!memcmp(zero.tokens, base.tokens, sizeof base.tokens));
    ck_assert(zero.r.kv_bytes_prefill == base.r.kv_bytes_prefill && zero.r.kv_bytes_end == base.r.kv_bytes_end);
    ck_assert_int_eq(zero.rows, base.rows);
    int d = model.cfg.head_dim;
    for (int l = 0; l < base.rows; l++) {
        ck_assert(zero.st[l].channels_kept == (float)d && base.st[l].channels_kept == 0.0f);
        expect_same_stat(&zero.st[l], &base.st[l]);
    }
    ck_assert(zero.channels_min == d && zero.channels_max == d);
    /* the default ratio 0.4: d - floor(0.4 d) channels in every head, fewer bytes by exactly the pruned keys */
    generate(&model, "SnapKV+ThinK+KIVI", think, 3, &ids, 1, &pruned);
    int kc = d - (int)floor(d * 0.4);
    ck_assert_int_eq(pruned.channels_min, kc);
    ck_assert_int_eq(pruned.channels_max, kc);
    int64_t saved = 0;
    for (int l = 0; l < pruned.rows; l++) {
        ck_assert(pruned.st[l].channels_kept == (float)kc && pruned.st[l].kept == base.st[l].kept);
        int nq_k = base.st[l].kept - base.st[l].residual_k; /* every head keeps 34 rows: the same counts */
        saved += (int64_t)model.cfg.n_kv_heads * (d - kc) * ((nq_k + 15) / 16 * 4 + nq_k / 16 * 4);
    }
    ck_assert_int_eq(base.r.kv_bytes_prefill - pruned.r.kv_bytes_prefill, saved);
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

/* ThinK with its own storage: alone with ratio 0 it is SnapKV with the same knobs, and so is SnapKV+ThinK, bit
 * for bit; SnapKV+ThinK with the default ratio and recent_size 8 keeps 34 tokens per head, 26 of them packed raw
 * with d - floor(0.4 d) key channels, and holds the formula's bytes. */
START_TEST(test_smollm2_alone) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    ck_assert(ids.n > 34);
    static run snap, alone, after, pruned;
    const char *snap_o[] = {"max_capacity_prompt=34"}, *alone_o[] = {"max_capacity_prompt=34", "ratio=0"};
    const char *after_o[] = {"snapkv.max_capacity_prompt=34", "ratio=0"};
    const char *pruned_o[] = {"snapkv.max_capacity_prompt=34", "recent_size=8"};
    generate(&model, "SnapKV", snap_o, 1, &ids, 0, &snap);
    generate(&model, "ThinK", alone_o, 2, &ids, 0, &alone);
    generate(&model, "SnapKV+ThinK", after_o, 2, &ids, 0, &after);
    int d = model.cfg.head_dim, Hk = model.cfg.n_kv_heads;
    const run *same[] = {&alone, &after};
    for (int i = 0; i < 2; i++) {
        ck_assert(!memcmp(same[i]->tokens, snap.tokens, sizeof snap.tokens));
        ck_assert(same[i]->r.kv_bytes_prefill == snap.r.kv_bytes_prefill &&
                  same[i]->r.kv_bytes_end == snap.r.kv_bytes_end && same[i]->rows == snap.rows);
        for (int l = 0; l < snap.rows; l++) {
            ck_assert(same[i]->st[l].channels_kept == (float)d && snap.st[l].channels_kept == 0.0f);
            expect_same_stat(&same[i]->st[l], &snap.st[l]);
        }
    }
    generate(&model, "SnapKV+ThinK", pruned_o, 2, &ids, 1, &pruned);
    int kc = d - (int)floor(d * 0.4);
    ck_assert(pruned.channels_min == kc && pruned.channels_max == kc);
    for (int l = 0; l < pruned.rows; l++) {
        ck_assert(pruned.st[l].kept == 34 && pruned.st[l].channels_kept == (float)kc);
        ck_assert_int_eq(pruned.st[l].kv_bytes, (int64_t)Hk * (26 * kc * 4 + 26 * d * 4 + 2 * 8 * d * 4));
    }
    ck_assert(pruned.r.kv_bytes_prefill < snap.r.kv_bytes_prefill);
    /* a budget-sized cache (34 rows + the generation per layer, the prompt through the prefill slots): the same */
    generate_in(&model, "SnapKV+ThinK", pruned_o, 2, &ids, 1, KS_CACHE_BUDGET, &after);
    ck_assert(!memcmp(after.tokens, pruned.tokens, sizeof pruned.tokens));
    ck_assert(after.r.kv_bytes_prefill == pruned.r.kv_bytes_prefill && after.r.kv_bytes_end == pruned.r.kv_bytes_end);
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

int main(int argc, char **argv) {
    ks_test_seed(0x9E3779B97F4A7C15ull);
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("think");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "think");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2);
        tcase_add_test(tc, test_smollm2_alone);
    } else {
        tcase_add_test(tc, test_kept_channels);
        tcase_add_test(tc, test_decode_attention);
        tcase_add_test(tc, test_short_prompt);
        tcase_add_test(tc, test_errors);
        tcase_add_test(tc, test_raw_round_trip);
        tcase_add_test(tc, test_raw_bf16);
        tcase_add_test(tc, test_alone);
        tcase_add_test(tc, test_alone_attention);
    }
    tcase_set_timeout(tc, 600);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
