/* kivi_ref.c — see kivi_ref.h. */
#include "cpu/kivi_ref.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Scale and zero (fp16 bits) of n values x[i * stride], b bits: min-max, kivi_args.h's rule. */
static void group_params(const float *x, int n, int stride, int bits, uint16_t *s, uint16_t *z) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        mn = v < mn ? v : mn, mx = v > mx ? v : mx;
    }
    *s = ks_kivi_half((mx - mn) / (float)((1 << bits) - 1));
    *z = ks_kivi_half(mn);
}

static void add_err(double err[2], float x, float xh) {
    if (!err) return;
    err[0] += ((double)x - xh) * ((double)x - xh);
    err[1] += (double)x * x;
}

void ks_kivi_quant_keys(const ks_kivi_shape *s, const float *k, int ld, int t0, int n, const int32_t *chan, int kc,
                        uint32_t *codes, uint16_t *scale, uint16_t *zero, double err[2]) {
    int G = s->group, b = s->k_bits;
    for (int i = 0; i < kc; i++) {
        int c = chan ? chan[i] : i;
        uint32_t *row = codes + (size_t)i * s->k_words;
        for (int g0 = 0; g0 < n; g0 += G) {
            const float *x = k + (size_t)g0 * ld + c;
            size_t gi = (size_t)i * s->k_groups + (t0 + g0) / G;
            group_params(x, G, ld, b, &scale[gi], &zero[gi]);
            float sf = ks_kivi_float(scale[gi]), zf = ks_kivi_float(zero[gi]);
            for (int t = 0; t < G; t++) {
                float v = x[(size_t)t * ld];
                unsigned q = ks_kivi_quantize(v, sf, zf, b);
                ks_kivi_set_code(row, t0 + g0 + t, b, q);
                add_err(err, v, ks_kivi_dequantize(q, sf, zf));
            }
        }
    }
}

void ks_kivi_quant_values(const ks_kivi_shape *s, const float *v, int ld, int t0, int n, uint32_t *codes,
                          uint16_t *scale, uint16_t *zero, double err[2]) {
    int G = s->group, b = s->v_bits;
    for (int t = 0; t < n; t++) {
        const float *x = v + (size_t)t * ld;
        uint32_t *row = codes + (size_t)(t0 + t) * s->v_words;
        for (int g = 0; g < s->v_groups; g++) {
            size_t gi = (size_t)(t0 + t) * s->v_groups + g;
            group_params(x + g * G, G, 1, b, &scale[gi], &zero[gi]);
            float sf = ks_kivi_float(scale[gi]), zf = ks_kivi_float(zero[gi]);
            for (int c = g * G; c < (g + 1) * G; c++) {
                unsigned q = ks_kivi_quantize(x[c], sf, zf, b);
                ks_kivi_set_code(row, c, b, q);
                add_err(err, x[c], ks_kivi_dequantize(q, sf, zf));
            }
        }
    }
}

/* Token t's key, dequantized, into out (d): the stored channels, 0 elsewhere. */
static void key_row(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale, const uint16_t *zero,
                    const int32_t *chan, int kc, int t, float *out) {
    if (kc < s->d) memset(out, 0, sizeof(float) * s->d);
    for (int i = 0; i < kc; i++) {
        size_t gi = (size_t)i * s->k_groups + t / s->group;
        unsigned q = ks_kivi_code(codes + (size_t)i * s->k_words, t, s->k_bits);
        out[chan ? chan[i] : i] = ks_kivi_dequantize(q, ks_kivi_float(scale[gi]), ks_kivi_float(zero[gi]));
    }
}

/* Token t's value, dequantized, into out (d). */
static void value_row(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale, const uint16_t *zero,
                      int t, float *out) {
    const uint32_t *row = codes + (size_t)t * s->v_words;
    for (int c = 0; c < s->d; c++) {
        size_t gi = (size_t)t * s->v_groups + c / s->group;
        out[c] = ks_kivi_dequantize(ks_kivi_code(row, c, s->v_bits), ks_kivi_float(scale[gi]),
                                    ks_kivi_float(zero[gi]));
    }
}

void ks_kivi_dequant_keys(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale,
                          const uint16_t *zero, const int32_t *chan, int kc, int t0, int n, float *out) {
    for (int t = 0; t < n; t++) key_row(s, codes, scale, zero, chan, kc, t0 + t, out + (size_t)t * s->d);
}

void ks_kivi_dequant_values(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale,
                            const uint16_t *zero, int t0, int n, float *out) {
    for (int t = 0; t < n; t++) value_row(s, codes, scale, zero, t0 + t, out + (size_t)t * s->d);
}

/* Token t's key of head g: dequantized into buf (packed) or its dense row. */
static const float *head_key(const ks_kivi_shape *s, const ks_kivi_head *g, int t, float *buf) {
    if (t >= g->nq_k) return g->k + (size_t)(t - g->off) * s->d;
    key_row(s, g->k_codes, g->k_scale, g->k_zero, g->k_chan, g->kc, t, buf);
    return buf;
}

static const float *head_value(const ks_kivi_shape *s, const ks_kivi_head *g, int t, float *buf) {
    if (t >= g->nq_v) return g->v + (size_t)(t - g->off) * s->d;
    value_row(s, g->v_codes, g->v_scale, g->v_zero, t, buf);
    return buf;
}

/* One query row q (d) over head g, online softmax over tiles of KS_KIVI_TILE tokens, into out (d). */
static void attend_head(float *out, const float *q, const ks_kivi_head *g, const ks_kivi_shape *s, float scale) {
    int d = s->d;
    float acc[KS_KIVI_MAX_D], row[KS_KIVI_MAX_D], logit[KS_KIVI_TILE], m = -INFINITY, l = 0;
    memset(acc, 0, sizeof(float) * d);
    for (int t0 = 0; t0 < g->n; t0 += KS_KIVI_TILE) {
        int nt = g->n - t0 < KS_KIVI_TILE ? g->n - t0 : KS_KIVI_TILE;
        float bmax = -INFINITY;
        for (int j = 0; j < nt; j++) {
            const float *k = head_key(s, g, t0 + j, row);
            float dot = 0;
            for (int c = 0; c < d; c++) dot += q[c] * k[c];
            logit[j] = dot * scale;
            bmax = logit[j] > bmax ? logit[j] : bmax;
        }
        if (bmax > m) { /* rescale what the earlier tiles accumulated */
            float corr = expf(m - bmax);
            for (int c = 0; c < d; c++) acc[c] *= corr;
            l *= corr;
            m = bmax;
        }
        for (int j = 0; j < nt; j++) {
            float p = expf(logit[j] - m);
            const float *v = head_value(s, g, t0 + j, row);
            l += p;
            for (int c = 0; c < d; c++) acc[c] += p * v[c];
        }
    }
    for (int c = 0; c < d; c++) out[c] = l > 0 ? acc[c] / l : 0.0f;
}

void ks_kivi_attention_decode(float *out, const float *q, const ks_kivi_head *heads, const ks_kivi_shape *s, int H,
                              int Hk, float scale) {
    int G = H / Hk;
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++)
        attend_head(out + (size_t)h * s->d, q + (size_t)h * s->d, &heads[h / G], s, scale);
}
