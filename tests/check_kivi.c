/* check_kivi.c — KIVI.
 *
 *     check_kivi           the packed format (kernels/kivi_args.h, kernels/cpu/kivi_ref.h): fp16 rounding, code
 *                          packing, hand-worked groups, the decode attention over packed + dense rows (the
 *                          reference and the fast path) against the plain reference on the dequantized rows; the method on the cpu KV store over a cache
 *                          the tests fill: the residual boundaries after the prompt and across decode flushes,
 *                          the bytes held, the errors; a counts-only part (a device store's host half)
 *                          following the host flush; on the cpu backend with the tiny fixture model, a
 *                          budget-sized cache of 2 R rows against the full one
 *     check_kivi smollm2   SmolLM2 (label "model"): KIVI with a residual longer than the sequence gives FullKV's
 *                          greedy tokens; with a short residual the budget-sized cache gives the full cache's
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/kvstore_cpu.h"
#include "cpu/fast.h"
#include "cpu/kivi_ref.h"
#include "cpu/ref.h"
#include "engine/generate.h"
#include "methods/method.h"
#include "test_util.h"

START_TEST(test_half_rounding) {
    ck_assert_uint_eq(ks_kivi_half(1.0f), 0x3c00);
    ck_assert_uint_eq(ks_kivi_half(-2.0f), 0xc000);
    ck_assert_uint_eq(ks_kivi_half(65504.0f), 0x7bff);
    ck_assert_uint_eq(ks_kivi_half(65519.0f), 0x7bff);
    ck_assert_uint_eq(ks_kivi_half(65520.0f), 0x7c00);              /* the tie above the largest rounds to inf */
    ck_assert_uint_eq(ks_kivi_half(ldexpf(1, -24)), 0x0001);        /* smallest subnormal */
    ck_assert_uint_eq(ks_kivi_half(ldexpf(1, -25)), 0x0000);        /* tie, to even: 0 */
    ck_assert_uint_eq(ks_kivi_half(ldexpf(3, -26)), 0x0001);        /* 0.75 of the smallest subnormal */
    ck_assert_uint_eq(ks_kivi_half(ldexpf(3, -25)), 0x0002);        /* 1.5: tie, to even */
    ck_assert_uint_eq(ks_kivi_half(1.0f + ldexpf(1, -11)), 0x3c00); /* tie, to even (down) */
    ck_assert_uint_eq(ks_kivi_half(1.0f + ldexpf(3, -11)), 0x3c02); /* tie, to even (up) */
    ck_assert_uint_eq(ks_kivi_half(0.1f), 0x2e66);
    ck_assert_uint_eq(ks_kivi_half(INFINITY), 0x7c00);
    ck_assert(isnan(ks_kivi_float(ks_kivi_half(NAN))));
    /* every finite half survives the trip through fp32 */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        ck_assert_uint_eq(ks_kivi_half(ks_kivi_float((uint16_t)h)), h);
    }
    ck_assert(ks_kivi_float(0x0001) == ldexpf(1, -24));
    ck_assert(ks_kivi_float(0x3555) == 0x155 * ldexpf(1, -12) + ldexpf(1, -2));
}
END_TEST

START_TEST(test_pack_round_trip) {
    for (int bits = 2; bits <= 4; bits += 2) {
        enum { N = 77 };
        uint32_t words[N], q[N * 16];
        int per = 32 / bits, n = N * per;
        memset(words, 0xff, sizeof words);
        for (int i = 0; i < n; i++) q[i] = ks_test_urand() & ((1u << bits) - 1);
        for (int i = n - 1; i >= 0; i--) ks_kivi_set_code(words, i, bits, q[i]); /* any order */
        for (int i = 0; i < n; i++) ck_assert_uint_eq(ks_kivi_code(words, i, bits), q[i]);
        /* code i sits in bits [i b, (i + 1) b) of its word */
        ck_assert_uint_eq(words[0] & ((1u << bits) - 1), q[0]);
        ck_assert_uint_eq(words[1] >> (32 - bits), q[2 * per - 1]);
    }
}
END_TEST

/* d = 4 channels, groups of 4, 2 bits: channel c of token t holds t % 4 + 10 c, so every key group along tokens
 * is {z, z + 1, z + 2, z + 3}: s = 1, z = 10 c, codes 0, 1, 2, 3. */
START_TEST(test_keys_hand_group) {
    ks_kivi_params p = {.k_bits = 2, .v_bits = 2, .group = 4, .residual = 4};
    ks_kivi_shape s = ks_kivi_shape_of(&p, 4, 16);
    ck_assert_int_eq(s.k_words, 1);
    ck_assert_int_eq(s.k_groups, 4);
    float k[8 * 4], out[8 * 4];
    for (int t = 0; t < 8; t++)
        for (int c = 0; c < 4; c++) k[t * 4 + c] = (float)(t % 4 + 10 * c);
    uint32_t codes[4];
    uint16_t scale[4 * 4], zero[4 * 4];
    memset(codes, 0, sizeof codes);
    double err[2] = {0, 0};
    ks_kivi_quant_keys(&s, k, 4, 4, 8, NULL, 4, codes, scale, zero, err); /* tokens 4 .. 11 */
    for (int c = 0; c < 4; c++) {
        ck_assert_uint_eq(codes[c], 0x00E4E400u); /* tokens 4..7 and 8..11 (slots 4..11): codes 0, 1, 2, 3 */
        ck_assert_uint_eq(scale[c * 4 + 1], 0x3c00);
        ck_assert(ks_kivi_float(zero[c * 4 + 1]) == 10.0f * c);
    }
    ck_assert(err[0] == 0.0);
    ks_kivi_dequant_keys(&s, codes, scale, zero, NULL, 4, 4, 8, out);
    for (int i = 0; i < 32; i++) ck_assert(out[i] == k[i]);
}
END_TEST

/* A constant group: s = 0, every code 0, x^ = z exactly, never NaN (keys and values). An outlier group
 * {0, 0.1, 0.2, 100}, 2 bits: s = half(100 / 3) = 33.34375, z = 0, codes 0, 0, 0, 3. */
START_TEST(test_constant_and_outlier) {
    ks_kivi_params p = {.k_bits = 2, .v_bits = 2, .group = 4, .residual = 4};
    ks_kivi_shape s = ks_kivi_shape_of(&p, 4, 4);
    float v[2 * 4] = {5.3f, 5.3f, 5.3f, 5.3f, 0.0f, 0.1f, 0.2f, 100.0f}, out[4 * 4];
    uint32_t codes[2] = {~0u, ~0u};
    uint16_t scale[2], zero[2];
    ks_kivi_quant_values(&s, v, 4, 0, 2, codes, scale, zero, NULL);
    ck_assert_uint_eq(scale[0], 0);
    ck_assert_uint_eq(codes[0] & 0xff, 0);
    ks_kivi_dequant_values(&s, codes, scale, zero, 0, 2, out);
    for (int c = 0; c < 4; c++) ck_assert(out[c] == ks_kivi_float(ks_kivi_half(5.3f)));
    ck_assert(ks_kivi_float(scale[1]) == 33.34375f);
    ck_assert_uint_eq(zero[1], 0);
    ck_assert_uint_eq(codes[1] & 0xff, 3u << 6);
    ck_assert(out[4] == 0.0f && out[5] == 0.0f && out[6] == 0.0f && out[7] == 100.03125f);
    /* the same constant group along tokens (keys) */
    float k[4 * 4];
    for (int i = 0; i < 16; i++) k[i] = -7.25f;
    uint32_t kc[4] = {0};
    uint16_t ks[4], kz[4];
    ks_kivi_quant_keys(&s, k, 4, 0, 4, NULL, 4, kc, ks, kz, NULL);
    ks_kivi_dequant_keys(&s, kc, ks, kz, NULL, 4, 0, 4, out);
    for (int c = 0; c < 4; c++) ck_assert(ks[c] == 0 && kc[c] == 0);
    for (int i = 0; i < 16; i++) ck_assert(out[i] == -7.25f);
}
END_TEST

/* 4 bits over 16 channels in one group: values c / 2 give s = 0.5, z = 0, codes c. */
START_TEST(test_values_four_bits) {
    ks_kivi_params p = {.k_bits = 4, .v_bits = 4, .group = 16, .residual = 16};
    ks_kivi_shape s = ks_kivi_shape_of(&p, 16, 1);
    ck_assert_int_eq(s.v_words, 2);
    float v[16], out[16];
    for (int c = 0; c < 16; c++) v[c] = c / 2.0f;
    uint32_t codes[2];
    uint16_t scale, zero;
    ks_kivi_quant_values(&s, v, 16, 0, 1, codes, &scale, &zero, NULL);
    ck_assert_uint_eq(codes[0], 0x76543210u);
    ck_assert_uint_eq(codes[1], 0xFEDCBA98u);
    ck_assert(ks_kivi_float(scale) == 0.5f);
    ks_kivi_dequant_values(&s, codes, &scale, &zero, 0, 1, out);
    for (int c = 0; c < 16; c++) ck_assert(out[c] == v[c]);
}
END_TEST

/* One KV head's packed arrays and dense rows, built from full K, V (n, d): keys of tokens < nq_k and values of
 * tokens < nq_v quantized, dense rows from token off; kd, vd (n, d) receive what the attention should see
 * (dequantized, or the original rows). chan / kc: the stored key channels. */
typedef struct head_fixture {
    uint32_t *kq, *vq;
    uint16_t *ks, *kz, *vs, *vz;
    float *kd, *vd;
} head_fixture;

static ks_kivi_head make_head(head_fixture *f, const ks_kivi_shape *s, const float *K, const float *V, int n,
                              int nq_k, int nq_v, int off, const int32_t *chan, int kc) {
    int d = s->d;
    f->kq = calloc((size_t)d * s->k_words, sizeof(uint32_t));
    f->vq = calloc((size_t)s->cap * s->v_words, sizeof(uint32_t));
    f->ks = calloc((size_t)d * s->k_groups, 2), f->kz = calloc((size_t)d * s->k_groups, 2);
    f->vs = calloc((size_t)s->cap * s->v_groups, 2), f->vz = calloc((size_t)s->cap * s->v_groups, 2);
    f->kd = malloc(sizeof(float) * n * d), f->vd = malloc(sizeof(float) * n * d);
    ks_kivi_quant_keys(s, K, d, 0, nq_k, chan, kc, f->kq, f->ks, f->kz, NULL);
    ks_kivi_quant_values(s, V, d, 0, nq_v, f->vq, f->vs, f->vz, NULL);
    memcpy(f->kd, K, sizeof(float) * n * d);
    memcpy(f->vd, V, sizeof(float) * n * d);
    ks_kivi_dequant_keys(s, f->kq, f->ks, f->kz, chan, kc, 0, nq_k, f->kd);
    ks_kivi_dequant_values(s, f->vq, f->vs, f->vz, 0, nq_v, f->vd);
    return (ks_kivi_head){.k_codes = f->kq, .k_scale = f->ks, .k_zero = f->kz, .k_chan = chan, .kc = kc,
                          .v_codes = f->vq, .v_scale = f->vs, .v_zero = f->vz, .nq_k = nq_k, .nq_v = nq_v,
                          .n = n, .off = off, .k = K + (size_t)off * d, .v = V + (size_t)off * d};
}

static void free_head(head_fixture *f) {
    free(f->kq), free(f->vq), free(f->ks), free(f->kz), free(f->vs), free(f->vz), free(f->kd), free(f->vd);
}

/* The decode attention over packed + dense rows (kivi_ref.h's and fast.h's) equals ks_ref_attention_decode on the
 * dequantized rows, for every bit pair, with heads of different packed counts (one all dense, one with half its
 * key channels stored), tiles straddling the packed counts. */
START_TEST(test_attention_decode_packed) {
    enum { Hk = 3, G = 2, H = Hk * G, d = 64, cap = 256 };
    const int bits[4][2] = {{2, 2}, {4, 2}, {2, 4}, {4, 4}};
    const int n[Hk] = {200, 37, 160}, nq_k[Hk] = {160, 0, 128}, nq_v[Hk] = {136, 0, 32}, off[Hk] = {100, 0, 32};
    int32_t chan[d / 2];
    for (int i = 0; i < d / 2; i++) chan[i] = 2 * i + 1;
    for (int b = 0; b < 4; b++) {
        ks_kivi_params p = {.k_bits = bits[b][0], .v_bits = bits[b][1], .group = 32, .residual = 64};
        ks_kivi_shape s = ks_kivi_shape_of(&p, d, cap);
        float *q = ks_test_rand_buf((size_t)H * d, 1), *want = malloc(sizeof(float) * H * d);
        float *got = malloc(sizeof(float) * H * d);
        float *kref = calloc((size_t)Hk * cap * d, sizeof(float)), *vref = calloc((size_t)Hk * cap * d, sizeof(float));
        float *K[Hk], *V[Hk];
        head_fixture f[Hk];
        ks_kivi_head heads[Hk];
        int32_t len[Hk];
        for (int g = 0; g < Hk; g++) {
            K[g] = ks_test_rand_buf((size_t)n[g] * d, 2), V[g] = ks_test_rand_buf((size_t)n[g] * d, 1);
            K[g][5 * d + 3] = 40.0f; /* an outlier channel value */
            heads[g] = make_head(&f[g], &s, K[g], V[g], n[g], nq_k[g], nq_v[g], off[g], g == 2 ? chan : NULL,
                                 g == 2 ? d / 2 : d);
            memcpy(kref + (size_t)g * cap * d, f[g].kd, sizeof(float) * n[g] * d);
            memcpy(vref + (size_t)g * cap * d, f[g].vd, sizeof(float) * n[g] * d);
            len[g] = n[g];
        }
        ks_ref_attention_decode(want, q, kref, vref, len, cap, H, Hk, d, 0.125f);
        for (int i = 0; i < H * d; i++) got[i] = NAN;
        ks_kivi_attention_decode(got, q, heads, &s, H, Hk, 0.125f);
        for (int i = 0; i < H * d; i++)
            ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])), "bits %d/%d: [%d] %g vs %g",
                          bits[b][0], bits[b][1], i, got[i], want[i]);
        for (int i = 0; i < H * d; i++) got[i] = NAN; /* the fast path (GEMMs over 64-token tiles) */
        ks_fast_kivi_attention_decode(got, q, heads, &s, H, Hk, 0.125f);
        for (int i = 0; i < H * d; i++)
            ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])), "fast, bits %d/%d: [%d] %g vs %g",
                          bits[b][0], bits[b][1], i, got[i], want[i]);
        /* the quantization changed the answer (the packed part is really read) */
        double diff = 0;
        float *plain = malloc(sizeof(float) * H * d);
        for (int g = 0; g < Hk; g++) {
            memcpy(kref + (size_t)g * cap * d, K[g], sizeof(float) * n[g] * d);
            memcpy(vref + (size_t)g * cap * d, V[g], sizeof(float) * n[g] * d);
        }
        ks_ref_attention_decode(plain, q, kref, vref, len, cap, H, Hk, d, 0.125f);
        for (int i = 0; i < H * d; i++) diff += fabsf(plain[i] - want[i]);
        ck_assert(diff > 1e-3);
        for (int g = 0; g < Hk; g++) free_head(&f[g]), free(K[g]), free(V[g]);
        free(q), free(want), free(got), free(kref), free(vref), free(plain);
    }
}
END_TEST

/* Reconstruction errors: 4 bits beat 2 bits on the same rows; the error parts add what was quantized. */
START_TEST(test_quant_error) {
    enum { d = 64, n = 128 };
    float *x = ks_test_rand_buf((size_t)n * d, 1);
    double e2[2] = {0, 0}, e4[2] = {0, 0};
    for (int b = 2; b <= 4; b += 2) {
        ks_kivi_params p = {.k_bits = b, .v_bits = b, .group = 32, .residual = 128};
        ks_kivi_shape s = ks_kivi_shape_of(&p, d, n);
        uint32_t *codes = calloc((size_t)d * s.k_words, 4);
        uint16_t *sc = calloc((size_t)d * s.k_groups, 2), *zr = calloc((size_t)d * s.k_groups, 2);
        ks_kivi_quant_keys(&s, x, d, 0, n, NULL, d, codes, sc, zr, b == 2 ? e2 : e4);
        free(codes), free(sc), free(zr);
    }
    double norm = 0;
    for (int i = 0; i < n * d; i++) norm += (double)x[i] * x[i];
    ck_assert(fabs(e2[1] - norm) < 1e-9 * norm && e2[1] == e4[1]);
    ck_assert(e4[0] > 0 && e4[0] < e2[0]);
    ck_assert(sqrt(e2[0] / e2[1]) < 0.5);
    free(x);
}
END_TEST

/* ---- the method on the cpu KV store over a cache the tests fill ---------------------------------------- */

enum { SL = 2, SH = 4, SHK = 2, SD = 8, SCAP = 96 }; /* layers, heads, KV heads, head_dim, rows */

typedef struct store_fixture {
    ks_kvcache cache;
    ks_kvstore_cpu s;
    float *q;
    ks_model model;
    ks_method *m;
    float *k_all, *v_all; /* (SL, SHK, SCAP, SD) every row appended so far, by token */
} store_fixture;

static void sf_init(store_fixture *f, const char *const *opts, int n_opts, int window) {
    memset(f, 0, sizeof *f);
    f->q = ks_test_rand_buf((size_t)SCAP * SH * SD, 1);
    f->k_all = malloc(sizeof(float) * SL * SHK * SCAP * SD), f->v_all = malloc(sizeof(float) * SL * SHK * SCAP * SD);
    ck_assert(ks_kvcache_init(&f->cache, 0, SL, SHK, SD, SCAP, SCAP, 1) == KS_OK);
    ks_kvstore_cpu_params p = {.cache = &f->cache, .q = f->q, .n_heads = SH, .max_chunk = SCAP, .scale = 0.5f,
                               .window = window};
    ck_assert(ks_kvstore_cpu_init(&f->s, &p) == KS_OK);
    f->model.cfg.n_layers = SL, f->model.cfg.n_heads = SH, f->model.cfg.n_kv_heads = SHK, f->model.cfg.head_dim = SD;
    f->model.first_layer = 0, f->model.last_layer = SL;
    f->model.source = "test model";
    ck_assert_msg(ks_method_create(&f->m, "KIVI", NULL, opts, n_opts) == KS_OK, "%s", ks_last_error());
}

static void sf_bind(store_fixture *f) {
    ck_assert_msg(ks_method_bind_store(f->m, &f->s.base, &f->cache, &f->model) == KS_OK, "%s", ks_last_error());
}

static void sf_free(store_fixture *f) {
    ks_method_free(f->m);
    ks_kvstore_cpu_free(&f->s);
    ks_kvcache_free(&f->cache);
    free(f->q), free(f->k_all), free(f->v_all);
}

/* Appends n random tokens to every head of every layer (at the next positions), remembered in k_all / v_all. */
static void sf_append(store_fixture *f, int n) {
    for (int l = 0; l < SL; l++) {
        float *k = ks_test_rand_buf((size_t)n * SHK * SD, 2), *v = ks_test_rand_buf((size_t)n * SHK * SD, 1);
        const ks_kivi_counts c0 = f->cache.kivi ? ks_kv_kivi_counts(f->cache.kivi, &f->cache, l, 0)
                                                 : (ks_kivi_counts){.n = ks_kvcache_len(&f->cache, l)[0]};
        for (int t = 0; t < n; t++)
            for (int h = 0; h < SHK; h++) {
                size_t at = (((size_t)l * SHK + h) * SCAP + c0.n + t) * SD;
                memcpy(f->k_all + at, k + ((size_t)t * SHK + h) * SD, sizeof(float) * SD);
                memcpy(f->v_all + at, v + ((size_t)t * SHK + h) * SD, sizeof(float) * SD);
            }
        ks_kvcache_append(&f->cache, l, k, v, n, c0.n);
        free(k), free(v);
    }
}

/* A prompt of L tokens through every layer's prompt-end work. */
static void sf_prompt(store_fixture *f, int L) {
    sf_append(f, L);
    ks_method_begin_prompt(f->m, L);
    for (int l = 0; l < SL; l++)
        ck_assert_msg(ks_method_prefill_layer(f->m, l, 0, L, 1) == KS_OK, "%s", ks_last_error());
    ck_assert(ks_method_end_prompt(f->m) == KS_OK);
}

/* One decode step: a token appended, then the method's hook on every layer. */
static void sf_step(store_fixture *f) {
    sf_append(f, 1);
    for (int l = 0; l < SL; l++) {
        int qpos = ks_kv_kivi_counts(f->cache.kivi, &f->cache, l, 0).n - 1;
        ck_assert_msg(ks_method_decode_layer(f->m, l, qpos) == KS_OK, "%s", ks_last_error());
    }
}

/* Every head of every layer: these counts, its cache rows at positions off .. n - 1. */
static void expect_counts(store_fixture *f, int nq_k, int nq_v, int off, int n) {
    for (int l = 0; l < SL; l++)
        for (int h = 0; h < SHK; h++) {
            ks_kivi_counts c = ks_kv_kivi_counts(f->cache.kivi, &f->cache, l, h);
            ck_assert_msg(c.nq_k == nq_k && c.nq_v == nq_v && c.off == off && c.n == n,
                          "layer %d head %d: nq_k %d nq_v %d off %d n %d, want %d %d %d %d", l, h, c.nq_k, c.nq_v,
                          c.off, c.n, nq_k, nq_v, off, n);
            const int32_t *pos = ks_kvcache_pos(&f->cache, l, h);
            for (int j = 0; j < n - off; j++) ck_assert_int_eq(pos[j], off + j);
            for (int t = 0; t < off; t++) ck_assert_int_eq(f->cache.kivi->pos[((size_t)l * SHK + h) * SCAP + t], t);
        }
}

/* The decode attention of layer l through the store equals the plain reference over the rows the packed part
 * and the cache hold, dequantized; and the packed part reconstructs the appended rows closely. */
static void expect_attention(store_fixture *f, int l) {
    const ks_kv_kivi *q = f->cache.kivi;
    float *kd = calloc((size_t)SHK * SCAP * SD, sizeof(float)), *vd = calloc((size_t)SHK * SCAP * SD, sizeof(float));
    float got[SH * SD], want[SH * SD];
    int32_t len[SHK];
    for (int h = 0; h < SHK; h++) {
        ks_kivi_head g = ks_kv_kivi_head(q, &f->cache, l, h);
        float *K = kd + (size_t)h * SCAP * SD, *V = vd + (size_t)h * SCAP * SD;
        const size_t at = ((size_t)l * SHK + h) * SCAP * SD;
        const float *ka = f->k_all + at, *va = f->v_all + at;
        memcpy(K, ka, sizeof(float) * g.n * SD);
        memcpy(V, va, sizeof(float) * g.n * SD);
        ks_kivi_dequant_keys(&q->shape, g.k_codes, g.k_scale, g.k_zero, g.k_chan, g.kc, 0, g.nq_k, K);
        ks_kivi_dequant_values(&q->shape, g.v_codes, g.v_scale, g.v_zero, 0, g.nq_v, V);
        for (int i = 0; i < g.nq_k * SD; i++) ck_assert(fabsf(K[i] - ka[i]) < 2.0f); /* 2 bits over [-2, 2) */
        for (int t = g.off; t < g.n; t++) /* the cache's rows are the appended rows */
            ck_assert(!memcmp(g.k + (size_t)(t - g.off) * SD, ka + (size_t)t * SD, sizeof(float) * SD));
        len[h] = g.n;
    }
    ks_ref_attention_decode(want, f->q, kd, vd, len, SCAP, SH, SHK, SD, 0.5f);
    ks_kvstore_cpu_attention_decode(&f->s, l, got);
    for (int i = 0; i < SH * SD; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f, "[%d] %g vs %g", i, got[i], want[i]);
    free(kd), free(vd);
}

/* Residual boundaries, G = 4, R = 8: L mod R == 0, != 0, L < R, L == R; then decode steps crossing key
 * flushes, value slides and the release of stale rows. */
START_TEST(test_residual_boundaries) {
    const char *opts[] = {"group_size=4", "residual_length=8"};
    const int cases[][5] = {/* L, nq_k, nq_v, off, kept rows */
                            {16, 16, 8, 8, 8},
                            {21, 16, 13, 13, 8},
                            {5, 0, 0, 0, 5},
                            {8, 8, 0, 0, 8}};
    for (int i = 0; i < 4; i++) {
        store_fixture f;
        sf_init(&f, opts, 2, 0);
        sf_bind(&f);
        int L = cases[i][0];
        sf_prompt(&f, L);
        expect_counts(&f, cases[i][1], cases[i][2], cases[i][3], L);
        ck_assert_int_eq(ks_kvcache_len(&f.cache, 0)[1], cases[i][4]);
        ks_layer_stat st[SL];
        ck_assert_int_eq(ks_method_layer_stats(f.m, st), SL);
        ck_assert_int_eq(st[1].residual_k, L - cases[i][1]);
        ck_assert_int_eq(st[1].residual_v, L - cases[i][2]);
        ck_assert_int_eq(st[1].kept, L);
        ck_assert_int_eq(st[1].kv_bytes, ks_kv_kivi_layer_bytes(f.cache.kivi, &f.cache, 1));
        ck_assert(cases[i][1] ? st[0].quant_error > 0 && st[0].quant_error < 0.5f : st[0].quant_error == 0);
        ck_assert(cases[i][2] ? st[0].quant_error_v > 0 && st[0].quant_error_v < 0.5f : st[0].quant_error_v == 0);
        ck_assert_int_eq(ks_method_dropped(f.m), cases[i][1] || cases[i][2]);
        if (cases[i][1] || cases[i][2]) expect_attention(&f, 1);
        sf_free(&f);
    }

    /* L = 21, then 11 decode steps (T = token count): the key tail is packed at T = 24 and T = 32; values slide one
     * a step (nq_v = T - 8); stale rows (packed in both) reach R = 8 at T = 29 and leave the cache then. */
    store_fixture f;
    sf_init(&f, opts, 2, 0);
    sf_bind(&f);
    sf_prompt(&f, 21);
    const int after[][4] = {/* nq_k, nq_v, off, T */
                            {16, 14, 13, 22}, {16, 15, 13, 23}, {24, 16, 13, 24}, {24, 17, 13, 25},
                            {24, 18, 13, 26}, {24, 19, 13, 27}, {24, 20, 13, 28}, {24, 21, 21, 29},
                            {24, 22, 21, 30}, {24, 23, 21, 31}, {32, 24, 21, 32}};
    for (int s = 0; s < 11; s++) {
        sf_step(&f);
        expect_counts(&f, after[s][0], after[s][1], after[s][2], after[s][3]);
        ck_assert_int_lt(ks_kvcache_len(&f.cache, 0)[0], 2 * 8);
    }
    expect_attention(&f, 0);
    /* no prompt may continue, and no row that is not packed in both may leave */
    ck_assert_int_eq(ks_method_dropped(f.m), 1);
    int32_t keep[SHK * SCAP], n_keep[SHK];
    for (int h = 0; h < SHK; h++) {
        n_keep[h] = ks_kvcache_len(&f.cache, 0)[h] - 4; /* rows 4 .. : row 3 holds token 24, values not packed */
        for (int j = 0; j < n_keep[h]; j++) keep[h * SCAP + j] = 4 + j;
    }
    ck_assert(f.s.base.ops->kv_compact(&f.s.base, 0, keep, n_keep, SCAP) == KS_ERR_UNSUPPORTED);
    ck_assert(strstr(ks_last_error(), "KIVI"));
    expect_counts(&f, 32, 24, 21, 32);
    ks_evict_args e = {.rule = KS_EVICT_SINK, .keep = 4, .head = 2, .tail = 2};
    ck_assert(f.s.base.ops->decode_evict(&f.s.base, 0, 31, &e) == KS_ERR_UNSUPPORTED);
    ck_assert(strstr(ks_last_error(), "KIVI"));
    /* a new sequence starts empty */
    ks_kvcache_reset(&f.cache);
    ks_method_reset(f.m);
    sf_prompt(&f, 8);
    expect_counts(&f, 8, 0, 0, 8);
    sf_free(&f);
}
END_TEST

/* After a selection (a composition's SELECT part compacted the layer first: here every other row of 40 kept),
 * KIVI quantizes the rows the cache holds, L = 20: keys of 16, values of 12, the 12 stale rows released; the
 * positions follow the tokens (even positions), the released ones kept with the packed part. */
START_TEST(test_after_selection) {
    const char *opts[] = {"group_size=4", "residual_length=8"};
    store_fixture f;
    sf_init(&f, opts, 2, 0);
    sf_bind(&f);
    sf_append(&f, 40);
    int32_t keep[SHK * SCAP], n_keep[SHK] = {20, 20};
    for (int h = 0; h < SHK; h++)
        for (int j = 0; j < 20; j++) keep[h * SCAP + j] = 2 * j;
    for (int l = 0; l < SL; l++) ck_assert(f.s.base.ops->kv_compact(&f.s.base, l, keep, n_keep, SCAP) == KS_OK);
    ks_method_begin_prompt(f.m, 40);
    for (int l = 0; l < SL; l++) ck_assert(ks_method_prefill_layer(f.m, l, 0, 40, 1) == KS_OK);
    ck_assert(ks_method_end_prompt(f.m) == KS_OK);
    for (int l = 0; l < SL; l++)
        for (int h = 0; h < SHK; h++) {
            ks_kivi_counts c = ks_kv_kivi_counts(f.cache.kivi, &f.cache, l, h);
            ck_assert(c.nq_k == 16 && c.nq_v == 12 && c.off == 12 && c.n == 20);
            for (int t = 0; t < 12; t++) ck_assert_int_eq(f.cache.kivi->pos[((size_t)l * SHK + h) * SCAP + t], 2 * t);
            for (int j = 0; j < 8; j++) ck_assert_int_eq(ks_kvcache_pos(&f.cache, l, h)[j], 2 * (12 + j));
        }
    sf_free(&f);
}
END_TEST

/* The bytes held, by the formula: 2-bit keys, 4-bit values, G = 4, R = 8, d = 8, L = 21 per head:
 * key codes 8 channels x 1 word (16 tokens) = 32 B, key scales + zeros 8 x 4 groups x 4 B = 128 B,
 * values 13 tokens x (1 word + 2 groups x 4 B) = 156 B, full precision (21 - 16 keys + 21 - 13 values) x 8 x 4 B
 * = 416 B: 732 B per head, 2 heads, 2 layers. Without KIVI the same cache counts 2 x 21 x 8 x 4 per head. */
START_TEST(test_bytes_formula) {
    const char *opts[] = {"group_size=4", "residual_length=8", "k_bits=2", "v_bits=4"};
    store_fixture f;
    sf_init(&f, opts, 4, 0);
    sf_append(&f, 21);
    ck_assert_int_eq(ks_kvcache_bytes(&f.cache), SL * SHK * 2 * 21 * SD * 4);
    ks_kvcache_reset(&f.cache);
    sf_bind(&f);
    sf_prompt(&f, 21);
    ck_assert_int_eq(ks_kv_kivi_layer_bytes(f.cache.kivi, &f.cache, 0), 2 * 732);
    ck_assert_int_eq(ks_kvcache_bytes(&f.cache), SL * SHK * 732);
    /* 3 more tokens: the key tail (8) is packed, values 16: key codes 1 word + 6 groups, 16 values, 0 + 8 rows */
    for (int s = 0; s < 3; s++) sf_step(&f);
    int64_t head = 8 * 2 * 4 + 8 * 6 * 4 + 16 * 12 + (24 - 24 + 24 - 16) * SD * 4;
    ck_assert_int_eq(ks_kvcache_bytes(&f.cache), SL * SHK * head);
    sf_free(&f);
}
END_TEST

/* A counts-only packed part (ks_kv_kivi_init_counts: what a device store keeps on the host) driven by
 * ks_kv_kivi_plan / ks_kv_kivi_advance follows the host flush's counts exactly: a prompt, then decode steps with
 * KIVI's releases of stale rows. */
START_TEST(test_counts_only) {
    enum { R = 8, STEPS = 30 };
    ks_kivi_params p = {.k_bits = 2, .v_bits = 2, .group = 4, .residual = R};
    ks_kvcache c;
    ck_assert(ks_kvcache_init(&c, 0, 1, SHK, SD, SCAP, SCAP, 1) == KS_OK);
    ks_kv_kivi full, counts;
    ck_assert(ks_kv_kivi_init(&full, &c, &p, 0) == KS_OK);
    ck_assert(ks_kv_kivi_init_counts(&counts, &c, &p, 0) == KS_OK);
    ck_assert_ptr_null(counts.k_codes);
    ks_kivi_job jobs[SHK];
    ks_kivi_counts a[SHK], b[SHK];
    int32_t keep[SHK * SCAP], n_keep[SHK];
    for (int step = 0; step <= STEPS; step++) {
        int n = step ? 1 : 21, pos0 = ks_kv_kivi_counts(&full, &c, 0, 0).n;
        float *k = ks_test_rand_buf((size_t)n * SHK * SD, 1), *v = ks_test_rand_buf((size_t)n * SHK * SD, 1);
        ks_kvcache_append(&c, 0, k, v, n, pos0);
        free(k), free(v);
        ck_assert(ks_kv_kivi_flush(&full, &c, 0, a, NULL) == KS_OK);
        ck_assert(ks_kv_kivi_plan(&counts, &c, 0, jobs) == KS_OK);
        ks_kv_kivi_advance(&counts, &c, 0, jobs, b);
        int most = 0;
        for (int h = 0; h < SHK; h++) {
            ck_assert(!memcmp(&a[h], &b[h], sizeof a[h]));
            int stale = (a[h].nq_k < a[h].nq_v ? a[h].nq_k : a[h].nq_v) - a[h].off, len = ks_kvcache_len(&c, 0)[h];
            for (int j = stale; j < len; j++) keep[h * SCAP + j - stale] = j;
            n_keep[h] = len - stale;
            most = stale > most ? stale : most;
        }
        if (most < (step ? R : 1)) continue; /* KIVI's release rule */
        ck_assert(ks_kv_kivi_compacted(&full, &c, 0, keep, n_keep, SCAP) == KS_OK);
        ck_assert(ks_kv_kivi_compacted(&counts, &c, 0, keep, n_keep, SCAP) == KS_OK);
        ks_kvcache_compact(&c, 0, keep, n_keep, SCAP);
        for (int h = 0; h < SHK; h++) {
            a[h] = ks_kv_kivi_counts(&full, &c, 0, h), b[h] = ks_kv_kivi_counts(&counts, &c, 0, h);
            ck_assert(!memcmp(&a[h], &b[h], sizeof a[h]) && a[h].off > 0);
            ck_assert(!memcmp(full.pos + (size_t)h * SCAP, counts.pos + (size_t)h * SCAP, sizeof(int32_t) * a[h].off));
        }
    }
    ck_assert_int_eq(ks_kv_kivi_bytes(&full, &c), ks_kv_kivi_bytes(&counts, &c));
    ks_kv_kivi_free(&full), ks_kv_kivi_free(&counts);
    ks_kvcache_free(&c);
}
END_TEST

/* A packed part for fewer tokens than the cache's cap (a budget-sized cache's: ks_method_packed_rows) packs up to
 * them; a flush that would pass them fails with KS_ERR_RANGE naming the bound and changes nothing. */
START_TEST(test_packed_bound) {
    enum { R = 8, TOKENS = 24 };
    ks_kivi_params p = {.k_bits = 2, .v_bits = 2, .group = 4, .residual = R};
    ks_kvcache c;
    ck_assert(ks_kvcache_init(&c, 0, 1, SHK, SD, SCAP, SCAP, 1) == KS_OK);
    ks_kv_kivi q;
    ck_assert(ks_kv_kivi_init(&q, &c, &p, TOKENS) == KS_OK);
    ck_assert_int_eq(q.shape.cap, TOKENS);
    ks_kivi_counts a[SHK];
    float *k = ks_test_rand_buf((size_t)40 * SHK * SD, 1), *v = ks_test_rand_buf((size_t)40 * SHK * SD, 1);
    ks_kvcache_append(&c, 0, k, v, 24, 0); /* keys of 24 packed (3 R), values of 16 (all but R) */
    ck_assert(ks_kv_kivi_flush(&q, &c, 0, a, NULL) == KS_OK);
    ck_assert(a[0].nq_k == 24 && a[0].nq_v == 16);
    ks_kvcache_append(&c, 0, k + (size_t)24 * SHK * SD, v + (size_t)24 * SHK * SD, 16, 24); /* keys up to 40 next */
    ck_assert(ks_kv_kivi_flush(&q, &c, 0, a, NULL) == KS_ERR_RANGE);
    ck_assert(strstr(ks_last_error(), "packed part holds 24"));
    ck_assert(ks_kv_kivi_counts(&q, &c, 0, 0).nq_k == 24 && ks_kv_kivi_counts(&q, &c, 0, 0).nq_v == 16);
    free(k), free(v);
    ks_kv_kivi_free(&q);
    ks_kvcache_free(&c);
}
END_TEST

/* Knobs that do not fit, a sliding window, and the composition predicate. */
START_TEST(test_errors) {
    const char *bits[] = {"k_bits=3"}, *resid[] = {"residual_length=100"}, *group[] = {"group_size=16",
                                                                                          "residual_length=32"};
    ks_method *m = NULL;
    ck_assert(ks_method_create(&m, "KIVI", NULL, bits, 1) == KS_ERR_ARG);
    ck_assert(strstr(ks_last_error(), "k_bits"));
    ck_assert(ks_method_create(&m, "KIVI", NULL, resid, 1) == KS_ERR_ARG);
    ck_assert(strstr(ks_last_error(), "residual_length"));
    store_fixture f;
    sf_init(&f, group, 2, 0); /* head_dim 8 */
    ck_assert(ks_method_bind_store(f.m, &f.s.base, &f.cache, &f.model) == KS_ERR_ARG);
    ck_assert(strstr(ks_last_error(), "group_size") && strstr(ks_last_error(), "head_dim"));
    sf_free(&f);
    const char *ok[] = {"group_size=4", "residual_length=8"};
    sf_init(&f, ok, 2, 16); /* a sliding window on every layer */
    ck_assert(ks_method_bind_store(f.m, &f.s.base, &f.cache, &f.model) == KS_ERR_UNSUPPORTED);
    ck_assert(strstr(ks_last_error(), "KIVI") && strstr(ks_last_error(), "sliding window"));
    sf_free(&f);
    ck_assert(ks_method_decode_evicts(&ks_method_h2o) && ks_method_decode_evicts(&ks_method_streamingllm));
    ck_assert(!ks_method_decode_evicts(&ks_method_snapkv) && !ks_method_decode_evicts(&ks_method_kivi));
    ck_assert(ks_method_kivi.role == KS_ROLE_QUANT);
}
END_TEST

/* ---- the cpu backend ------------------------------------------------------------------------------------ */

static void generate(ks_forward *f, const ks_model *model, ks_method *m, int max_ctx, ks_forward_cache cache,
                     const int32_t *ids, int n, int n_new, int32_t *out, ks_generate_result *r) {
    ks_forward_params fp = {.device = "cpu", .max_ctx = max_ctx, .max_new = n_new, .chunk = 32, .cache = cache};
    ck_assert_msg(ks_forward_init(f, model, m, &fp) == KS_OK, "%s", ks_last_error());
    ks_generate_params gp = {.max_new_tokens = n_new};
    ck_assert_msg(ks_generate(f, ids, n, &gp, out, r) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(r->n, n_new);
}

static ks_method *kivi(const char *const *opts, int n) {
    ks_method *m;
    ck_assert_msg(ks_method_create(&m, "KIVI", NULL, opts, n) == KS_OK, "%s", ks_last_error());
    return m;
}

/* The model's greedy tokens under KIVI (opts) with a full cache and with a budget-sized one (2 R rows per layer,
 * the prompt through the prefill slots): the same tokens and bytes; the bytes those of the formula. Returns the
 * tokens in out; r: the full cache's result. */
static void compare_caches(const ks_model *model, const char *const *opts, int n_opts, int R, const int32_t *ids,
                           int n, int n_new, int32_t *out, ks_generate_result *r) {
    ks_forward f = {0}, fb = {0};
    ks_method *m = kivi(opts, n_opts), *mb = kivi(opts, n_opts);
    int32_t again[64];
    ks_generate_result rb;
    ck_assert(n_new <= 64);
    generate(&f, model, m, n + n_new + 2 * R, KS_CACHE_FULL, ids, n, n_new, out, r); /* room past 2 R rows */
    generate(&fb, model, mb, n + n_new + 2 * R, KS_CACHE_BUDGET, ids, n, n_new, again, &rb);
    ck_assert_int_eq(fb.kv_rows, 2 * R);
    for (int t = 0; t < n_new; t++) ck_assert_msg(again[t] == out[t], "token %d: %d, %d with a full cache", t,
                                                  again[t], out[t]);
    ck_assert(rb.kv_bytes_prefill == r->kv_bytes_prefill && rb.kv_bytes_end == r->kv_bytes_end);
    const ks_kvcache *c = f.ops->kvcache(f.be);
    ck_assert(c->kivi && ks_kvcache_bytes(c) == r->kv_bytes_end);
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
    int rows = ks_method_layer_stats(m, st);
    int64_t sum = 0;
    for (int l = 0; l < rows; l++) {
        sum += st[l].kv_bytes;
        ck_assert_int_eq(st[l].kept, n);
    }
    ck_assert_int_eq(sum, r->kv_bytes_prefill);
    /* a prompt may not continue a quantized sequence */
    int32_t tok = ids[0], next;
    if (n >= R) {
        ck_assert(ks_forward_prefill(&f, &tok, 1, NULL, &next) == KS_ERR_UNSUPPORTED);
        ck_assert(strstr(ks_last_error(), "KIVI"));
    }
    ks_forward_free(&f), ks_forward_free(&fb);
    ks_method_free(m), ks_method_free(mb);
}

START_TEST(test_tiny_model) {
    ks_model model = {0};
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1) == KS_OK); /* head_dim 16 */
    int32_t ids[90], out[20];
    for (int i = 0; i < 90; i++) ids[i] = 4 + (i * 37) % 250;
    ks_generate_result r;
    const char *two[] = {"group_size=8", "residual_length=16"}, *four[] = {"group_size=16", "residual_length=16",
                                                                          "k_bits=4", "v_bits=4"};
    compare_caches(&model, two, 2, 16, ids, 90, 20, out, &r);
    ck_assert(r.kv_bytes_prefill < r.kv_bytes_full / 2);
    compare_caches(&model, four, 4, 16, ids, 90, 20, out, &r);
    ck_assert(r.kv_bytes_prefill < r.kv_bytes_full);
    ks_model_free(&model);
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_qwen2"), 0, -1) == KS_OK); /* sliding windows */
    ks_forward f = {0};
    ks_method *m = kivi(two, 2);
    ks_forward_params fp = {.device = "cpu", .max_ctx = 128, .max_new = 4, .chunk = 32, .cache = KS_CACHE_FULL};
    ck_assert(ks_forward_init(&f, &model, m, &fp) == KS_ERR_UNSUPPORTED);
    ck_assert(strstr(ks_last_error(), "sliding window"));
    ks_method_free(m);
    ks_model_free(&model);
}
END_TEST

/* The tokens a budget-sized cache's packed part holds: the selection's plan plus the generated tokens (SnapKV
 * 24 + 6, ThinK's own selection alike); KIVI alone packs the whole context (0: the cache's cap). */
START_TEST(test_packed_rows) {
    ks_model model = {0};
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1) == KS_OK);
    const char *kivi_opts[] = {"group_size=8", "residual_length=16"};
    const char *chain_opts[] = {"snapkv.max_capacity_prompt=24", "snapkv.window_size=8", "kivi.group_size=8",
                                "kivi.residual_length=16"};
    const char *think_opts[] = {"max_capacity_prompt=24", "window_size=8"};
    const struct {
        const char *name, **opts;
        int n_opts, rows;
    } cases[] = {{"KIVI", kivi_opts, 2, 0},
                 {"SnapKV+KIVI", chain_opts, 4, 24 + 6},
                 {"SnapKV+ThinK+KIVI", chain_opts, 4, 24 + 6},
                 {"ThinK", think_opts, 2, 24 + 6}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ks_method *m;
        ck_assert_msg(ks_method_create(&m, cases[i].name, NULL, cases[i].opts, cases[i].n_opts) == KS_OK, "%s",
                      ks_last_error());
        ck_assert_int_eq(ks_method_packed_rows(m, &model, 90, 6), cases[i].rows);
        ks_method_free(m);
    }
    ks_model_free(&model);
}
END_TEST

/* SmolLM2: a residual longer than the sequence packs nothing, so the greedy tokens are FullKV's; a residual of
 * 32 packs most of the prompt, the budget-sized cache agreeing with the full one. */
START_TEST(test_smollm2) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    enum { NEW = 16 };
    ks_forward f = {0};
    int32_t want[NEW], got[NEW];
    ks_generate_result r;
    generate(&f, &model, NULL, ids.n + NEW, KS_CACHE_FULL, ids.ids, ids.n, NEW, want, &r);
    ks_forward_free(&f);
    const char *whole[] = {"residual_length=1024"};
    ks_method *m = kivi(whole, 1);
    generate(&f, &model, m, ids.n + NEW, KS_CACHE_FULL, ids.ids, ids.n, NEW, got, &r);
    for (int t = 0; t < NEW; t++) ck_assert_msg(got[t] == want[t], "token %d is %d, FullKV's %d", t, got[t], want[t]);
    ck_assert(r.kv_bytes_prefill == r.kv_bytes_full && r.kv_bytes_end == r.kv_bytes_full * (ids.n + NEW - 1) / ids.n);
    ks_forward_free(&f);
    ks_method_free(m);
    const char *short_r[] = {"residual_length=32"};
    ck_assert(ids.n > 32);
    compare_caches(&model, short_r, 1, 32, ids.ids, ids.n, NEW, got, &r);
    ck_assert(r.kv_bytes_prefill < r.kv_bytes_full);
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

int main(int argc, char **argv) {
    ks_test_seed(0x2545F4914F6CDD1Dull);
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("kivi");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "kivi");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2);
    } else {
        tcase_add_test(tc, test_half_rounding);
        tcase_add_test(tc, test_pack_round_trip);
        tcase_add_test(tc, test_keys_hand_group);
        tcase_add_test(tc, test_constant_and_outlier);
        tcase_add_test(tc, test_values_four_bits);
        tcase_add_test(tc, test_attention_decode_packed);
        tcase_add_test(tc, test_quant_error);
        tcase_add_test(tc, test_residual_boundaries);
        tcase_add_test(tc, test_after_selection);
        tcase_add_test(tc, test_bytes_formula);
        tcase_add_test(tc, test_counts_only);
        tcase_add_test(tc, test_packed_bound);
        tcase_add_test(tc, test_errors);
        tcase_add_test(tc, test_tiny_model);
        tcase_add_test(tc, test_packed_rows);
    }
    tcase_set_timeout(tc, 600);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
