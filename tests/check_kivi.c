/* check_kivi.c — KIVI's packed KV format (kernels/kivi_args.h, kernels/cpu/kivi_ref.h): fp16 rounding, code
 * packing, hand-worked groups, and the decode attention over packed + dense rows against the plain reference on
 * the dequantized rows. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kivi_ref.h"
#include "cpu/ref.h"
#include "test_util.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static float frand(void) { return (float)((urand() >> 8) * (1.0 / (1u << 24))) * 2.0f - 1.0f; } /* [-1, 1) */

static float *rand_buf(size_t n, float amp) {
    float *p = malloc(sizeof(float) * n);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) p[i] = amp * frand();
    return p;
}

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
        for (int i = 0; i < n; i++) q[i] = urand() & ((1u << bits) - 1);
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

/* The decode attention over packed + dense rows equals ks_ref_attention_decode on the dequantized rows, for
 * every bit pair, with heads of different packed counts (one all dense, one with half its key channels stored). */
START_TEST(test_attention_decode_packed) {
    enum { Hk = 3, G = 2, H = Hk * G, d = 64, cap = 256 };
    const int bits[4][2] = {{2, 2}, {4, 2}, {2, 4}, {4, 4}};
    const int n[Hk] = {200, 37, 160}, nq_k[Hk] = {192, 0, 128}, nq_v[Hk] = {136, 0, 32}, off[Hk] = {100, 0, 32};
    int32_t chan[d / 2];
    for (int i = 0; i < d / 2; i++) chan[i] = 2 * i + 1;
    for (int b = 0; b < 4; b++) {
        ks_kivi_params p = {.k_bits = bits[b][0], .v_bits = bits[b][1], .group = 32, .residual = 64};
        ks_kivi_shape s = ks_kivi_shape_of(&p, d, cap);
        float *q = rand_buf((size_t)H * d, 1), *want = malloc(sizeof(float) * H * d);
        float *got = malloc(sizeof(float) * H * d);
        float *kref = calloc((size_t)Hk * cap * d, sizeof(float)), *vref = calloc((size_t)Hk * cap * d, sizeof(float));
        float *K[Hk], *V[Hk];
        head_fixture f[Hk];
        ks_kivi_head heads[Hk];
        int32_t len[Hk];
        for (int g = 0; g < Hk; g++) {
            K[g] = rand_buf((size_t)n[g] * d, 2), V[g] = rand_buf((size_t)n[g] * d, 1);
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
    float *x = rand_buf((size_t)n * d, 1);
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

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    Suite *s = suite_create("kivi");
    TCase *tc = tcase_create("format");
    tcase_add_test(tc, test_half_rounding);
    tcase_add_test(tc, test_pack_round_trip);
    tcase_add_test(tc, test_keys_hand_group);
    tcase_add_test(tc, test_constant_and_outlier);
    tcase_add_test(tc, test_values_four_bits);
    tcase_add_test(tc, test_attention_decode_packed);
    tcase_add_test(tc, test_quant_error);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
