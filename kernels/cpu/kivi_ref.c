/* kivi_ref.c — see kivi_ref.h. */
#include "cpu/kivi_ref.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "core/status.h"

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
    int G = s->group, b = s->k_bits, raw = ks_kivi_is_raw(b);
    for (int i = 0; i < kc; i++) {
        int c = chan ? chan[i] : i;
        uint32_t *row = codes + (size_t)i * s->k_words;
        for (int t = 0; raw && t < n; t++) {
            ks_kivi_raw_set(row, t0 + t, b, k[(size_t)t * ld + c]);
            add_err(err, k[(size_t)t * ld + c], ks_kivi_raw_get(row, t0 + t, b));
        }
        if (raw) continue;
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
        for (int c = 0; ks_kivi_is_raw(b) && c < s->d; c++) {
            ks_kivi_raw_set(row, c, b, x[c]);
            add_err(err, x[c], ks_kivi_raw_get(row, c, b));
        }
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

/* lut[q] = x^ of every code q of b bits in the group of fp16 scale sc and zero zr: the group's 2^b values,
 * computed once, so that dequantizing an element is a table lookup. */
static void group_values(float *lut, int b, uint16_t sc, uint16_t zr) {
    float sf = ks_kivi_float(sc), zf = ks_kivi_float(zr);
    for (unsigned q = 0; q < (1u << b); q++) lut[q] = ks_kivi_dequantize(q, sf, zf);
}

/* The keys of tokens t0 .. t0 + n - 1 dequantized into out (n, d), 0 in channels not stored: per stored channel,
 * its group's values tabled once per group, its codes shifted out of each word in runs. */
static void key_rows(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale, const uint16_t *zero,
                     const int32_t *chan, int kc, int t0, int n, float *out) {
    int d = s->d, G = s->group, b = s->k_bits, per = 32 / b, raw = ks_kivi_is_raw(b);
    unsigned mask = raw ? 0u : (1u << b) - 1u;
    float lut[16];
    if (kc < d) memset(out, 0, sizeof(float) * n * d);
    for (int i = 0; i < kc; i++) {
        const uint32_t *row = codes + (size_t)i * s->k_words;
        if (raw) {
            for (int j = 0; j < n; j++) out[(size_t)j * d + (chan ? chan[i] : i)] = ks_kivi_raw_get(row, t0 + j, b);
            continue;
        }
        const uint16_t *sc = scale + (size_t)i * s->k_groups, *zr = zero + (size_t)i * s->k_groups;
        float *o = out + (chan ? chan[i] : i);
        for (int j = 0; j < n;) { /* a run of tokens sharing one group and one word */
            int t = t0 + j, run = per - t % per;
            run = run < G - t % G ? run : G - t % G;
            run = run < n - j ? run : n - j;
            if (j == 0 || t % G == 0) group_values(lut, b, sc[t / G], zr[t / G]);
            uint32_t w = row[t / per] >> ((t % per) * b);
            for (int e = 0; e < run; e++, w >>= b) o[(size_t)(j + e) * d] = lut[w & mask];
            j += run;
        }
    }
}

/* Token t's value, dequantized, into out (d): per group of channels its values tabled once, the codes shifted
 * out of each word in runs. */
static void value_row(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale, const uint16_t *zero,
                      int t, float *out) {
    const uint32_t *row = codes + (size_t)t * s->v_words;
    const uint16_t *sc = scale + (size_t)t * s->v_groups, *zr = zero + (size_t)t * s->v_groups;
    int G = s->group, b = s->v_bits, per = 32 / b, raw = ks_kivi_is_raw(b);
    unsigned mask = raw ? 0u : (1u << b) - 1u;
    float lut[16];
    for (int c = 0; raw && c < s->d; c++) out[c] = ks_kivi_raw_get(row, c, b);
    if (raw) return;
    for (int c = 0; c < s->d;) { /* a run of channels sharing one group and one word */
        int run = per - c % per;
        run = run < G - c % G ? run : G - c % G;
        if (c % G == 0) group_values(lut, b, sc[c / G], zr[c / G]);
        uint32_t w = row[c / per] >> ((c % per) * b);
        for (int e = 0; e < run; e++, w >>= b) out[c + e] = lut[w & mask];
        c += run;
    }
}

void ks_kivi_dequant_keys(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale,
                          const uint16_t *zero, const int32_t *chan, int kc, int t0, int n, float *out) {
    key_rows(s, codes, scale, zero, chan, kc, t0, n, out);
}

void ks_kivi_dequant_values(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale,
                            const uint16_t *zero, int t0, int n, float *out) {
    for (int t = 0; t < n; t++) value_row(s, codes, scale, zero, t0 + t, out + (size_t)t * s->d);
}

/* Keys of head g's tokens t0 .. t0 + n - 1 (n <= KS_KIVI_TILE): *rows points at them, (n, d): the dense rows
 * themselves, or the packed ones dequantized into tile (a tile straddling nq_k is dequantized whole and its dense
 * tokens copied after). */
static const float *key_tile(const ks_kivi_shape *s, const ks_kivi_head *g, int t0, int n, float *tile) {
    int d = s->d, packed = g->nq_k - t0 < n ? g->nq_k - t0 : n;
    if (packed <= 0) return g->k + (size_t)(t0 - g->off) * d;
    key_rows(s, g->k_codes, g->k_scale, g->k_zero, g->k_chan, g->kc, t0, packed, tile);
    if (packed < n)
        memcpy(tile + (size_t)packed * d, g->k + (size_t)(t0 + packed - g->off) * d, sizeof(float) * (n - packed) * d);
    return tile;
}

static const float *head_value(const ks_kivi_shape *s, const ks_kivi_head *g, int t, float *buf) {
    if (t >= g->nq_v) return g->v + (size_t)(t - g->off) * s->d;
    value_row(s, g->v_codes, g->v_scale, g->v_zero, t, buf);
    return buf;
}

/* The G query rows q (G, d) of KV head g, online softmax over tiles of KS_KIVI_TILE tokens, into out (G, d):
 * each tile's keys and each value dequantized once for the group. */
static void attend_group(float *out, const float *q, int G, const ks_kivi_head *g, const ks_kivi_shape *s,
                         float scale) {
    int d = s->d;
    float acc[KS_KIVI_MAX_GROUP][KS_KIVI_MAX_D], m[KS_KIVI_MAX_GROUP], l[KS_KIVI_MAX_GROUP];
    float row[KS_KIVI_MAX_D], tile[KS_KIVI_TILE * KS_KIVI_MAX_D], logit[KS_KIVI_MAX_GROUP][KS_KIVI_TILE];
    for (int r = 0; r < G; r++) {
        memset(acc[r], 0, sizeof(float) * d);
        m[r] = -INFINITY, l[r] = 0;
    }
    for (int t0 = 0; t0 < g->n; t0 += KS_KIVI_TILE) {
        int nt = g->n - t0 < KS_KIVI_TILE ? g->n - t0 : KS_KIVI_TILE;
        const float *keys = key_tile(s, g, t0, nt, tile);
        for (int r = 0; r < G; r++) {
            const float *qr = q + (size_t)r * d;
            float bmax = -INFINITY;
            for (int j = 0; j < nt; j++) {
                const float *k = keys + (size_t)j * d;
                float dot = 0;
                for (int c = 0; c < d; c++) dot += qr[c] * k[c];
                logit[r][j] = dot * scale;
                bmax = logit[r][j] > bmax ? logit[r][j] : bmax;
            }
            if (bmax > m[r]) { /* rescale what the earlier tiles accumulated */
                float corr = expf(m[r] - bmax);
                for (int c = 0; c < d; c++) acc[r][c] *= corr;
                l[r] *= corr;
                m[r] = bmax;
            }
        }
        for (int j = 0; j < nt; j++) {
            const float *v = head_value(s, g, t0 + j, row);
            for (int r = 0; r < G; r++) {
                float p = expf(logit[r][j] - m[r]);
                l[r] += p;
                for (int c = 0; c < d; c++) acc[r][c] += p * v[c];
            }
        }
    }
    for (int r = 0; r < G; r++)
        for (int c = 0; c < d; c++) out[(size_t)r * d + c] = l[r] > 0 ? acc[r][c] / l[r] : 0.0f;
}

void ks_kivi_attention_decode(float *out, const float *q, const ks_kivi_head *heads, const ks_kivi_shape *s, int H,
                              int Hk, float scale) {
    int G = H / Hk;
    KS_ASSERT(G <= KS_KIVI_MAX_GROUP && s->d <= KS_KIVI_MAX_D);
#pragma omp parallel for schedule(static)
    for (int g = 0; g < Hk; g++)
        attend_group(out + (size_t)g * G * s->d, q + (size_t)g * G * s->d, G, &heads[g], s, scale);
}
