/* fast_kivi.c — KIVI's decode attention of fast.h (ks_fast_kivi_attention_decode), flash-style over tiles of
 * FK_TILE tokens: each tile's packed keys and values are dequantized once into stack tiles (kivi_ref.h's
 * dequantization; dense tokens are read in place), then S = Q K^T and acc += P V are single-threaded OpenBLAS
 * GEMMs for the KV head's group of query heads, with the online softmax in between; KV heads run in parallel
 * on OpenMP threads. */
#include "cpu/fast.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "cpu/fast_exp.h"
#include "cpu/kivi_ref.h"

enum { FK_TILE = 64 };

/* Rows t0 .. t0 + n - 1 of one kind (keys or values) of head g, (n, d): the dense rows in place when none is
 * packed, else tile, the packed ones dequantized and the dense ones after them copied. */
static const float *rows_of(const ks_kivi_shape *s, const ks_kivi_head *g, int values, int t0, int n, float *tile) {
    int d = s->d, nq = values ? g->nq_v : g->nq_k, packed = nq - t0 < n ? nq - t0 : n;
    const float *dense = values ? g->v : g->k;
    if (packed <= 0) return dense + (size_t)(t0 - g->off) * d;
    if (values) ks_kivi_dequant_values(s, g->v_codes, g->v_scale, g->v_zero, t0, packed, tile);
    else ks_kivi_dequant_keys(s, g->k_codes, g->k_scale, g->k_zero, g->k_chan, g->kc, t0, packed, tile);
    if (packed < n)
        memcpy(tile + (size_t)packed * d, dense + (size_t)(t0 + packed - g->off) * d, sizeof(float) * (n - packed) * d);
    return tile;
}

/* Row r of the tile's scores s (n of them) -> unnormalised probabilities under the running max m, rescaling the
 * row's accumulator and sum. */
static void softmax_row(float *s, int n, float *m, float *l, float *acc, int d) {
    float bmax = s[0];
    for (int j = 1; j < n; j++) bmax = s[j] > bmax ? s[j] : bmax;
    if (bmax > *m) {
        float corr = expf(*m - bmax); /* 0 on the first tile (m = -inf) */
        *l *= corr;
        for (int c = 0; c < d; c++) acc[c] *= corr;
        *m = bmax;
    }
    float mx = *m, sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        s[j] = ks_exp_nonpos(s[j] - mx);
        sum += s[j];
    }
    *l += sum;
}

/* The G query rows q (G, d) of KV head g into out (G, d). */
static void attend_group(float *out, const float *q, int G, const ks_kivi_head *g, const ks_kivi_shape *s,
                         float scale) {
    int d = s->d;
    float kt[FK_TILE * KS_KIVI_MAX_D], vt[FK_TILE * KS_KIVI_MAX_D], sc[KS_KIVI_MAX_GROUP * FK_TILE];
    float acc[KS_KIVI_MAX_GROUP * KS_KIVI_MAX_D], m[KS_KIVI_MAX_GROUP], l[KS_KIVI_MAX_GROUP];
    memset(acc, 0, sizeof(float) * G * d);
    for (int r = 0; r < G; r++) m[r] = -INFINITY, l[r] = 0;
    for (int t0 = 0; t0 < g->n; t0 += FK_TILE) {
        int nt = g->n - t0 < FK_TILE ? g->n - t0 : FK_TILE;
        const float *k = rows_of(s, g, 0, t0, nt, kt), *v = rows_of(s, g, 1, t0, nt, vt);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, G, nt, d, scale, q, d, k, d, 0.0f, sc, FK_TILE);
        for (int r = 0; r < G; r++) softmax_row(sc + (size_t)r * FK_TILE, nt, &m[r], &l[r], acc + (size_t)r * d, d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, G, d, nt, 1.0f, sc, FK_TILE, v, d, 1.0f, acc, d);
    }
    for (int r = 0; r < G; r++)
        for (int c = 0; c < d; c++) out[(size_t)r * d + c] = l[r] > 0 ? acc[(size_t)r * d + c] / l[r] : 0.0f;
}

void ks_fast_kivi_attention_decode(float *out, const float *q, const ks_kivi_head *heads, const ks_kivi_shape *s,
                                   int H, int Hk, float scale) {
    int G = H / Hk;
    KS_ASSERT(G <= KS_KIVI_MAX_GROUP && s->d <= KS_KIVI_MAX_D);
#pragma omp parallel for schedule(static)
    for (int g = 0; g < Hk; g++)
        attend_group(out + (size_t)g * G * s->d, q + (size_t)g * G * s->d, G, &heads[g], s, scale);
}
