/* fast_xattn.c — XAttention's antidiagonal block scores of fast.h: per query head, the block's stride rows
 * (B / S rows of S d antidiagonal-ordered queries) against every stride column of keys at once as one GEMM
 * (a stride column's S keys are S consecutive rows of the head-major cache, so the key matrix is the cache itself
 * with a leading dimension of S d), then each row's causal softmax summed per key block. Heads run on OpenMP
 * threads. */
#include "cpu/fast.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* x (per, S d): stride row i0 + r's queries in antidiagonal order, q at position iS + S - 1 - t in x[r][t d ..],
 * zero outside the chunk; valid[r] = the row holds a query of the chunk. */
static void gather_rows(float *x, int *valid, const float *q, int h, int H, int d, int i0, int per,
                        const ks_xattn_args *a) {
    int S = a->stride;
    for (int r = 0; r < per; r++) {
        valid[r] = 0;
        for (int t = 0; t < S; t++) {
            int pos = (i0 + r) * S + S - 1 - t, row = pos - a->q_pos0;
            float *dst = x + ((size_t)r * S + t) * d;
            if (row >= 0 && row < a->n) {
                memcpy(dst, q + ((size_t)row * H + h) * d, sizeof(float) * d);
                valid[r] = 1;
            } else {
                memset(dst, 0, sizeof(float) * d);
            }
        }
    }
}

void ks_fast_xattn_block_scores(float *out, int ld, const float *q, const float *k, int H, int Hk, int d, int cap,
                                const ks_xattn_args *a) {
    int S = a->stride, per = a->block / S, G = H / Hk, i0 = a->qb * per, n_kv = a->q_pos0 + a->n, Sd = S * d;
    int whole = n_kv / S; /* stride columns whose keys are all cached; a last partial one is computed apart */
    KS_ASSERT(per <= 64 && a->block % S == 0);
#pragma omp parallel for schedule(dynamic)
    for (int h = 0; h < H; h++) {
        int valid[64], last = -1;
        float *x = malloc(sizeof(float) * (size_t)per * Sd);
        gather_rows(x, valid, q, h, H, d, i0, per, a);
        for (int r = 0; r < per; r++) last = valid[r] ? r : last;
        int ncols = i0 + last + 1, ng = ncols < whole ? ncols : whole;
        float *s = malloc(sizeof(float) * (size_t)per * (ncols > 0 ? ncols : 1));
        double *acc = calloc((size_t)a->qb + 1, sizeof(double));
        const float *kh = k + (size_t)(h / G) * cap * d;
        if (ng > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, per, ng, Sd, a->scale, x, Sd, kh, Sd, 0.0f, s, ncols);
        for (int j = ng; j < ncols; j++) /* the partial column: its keys past n_kv are zero */
            for (int r = 0; r < per; r++) {
                int m = n_kv - j * S;
                float dot = 0;
                for (int e = 0; e < m * d; e++) dot += x[(size_t)r * Sd + e] * kh[(size_t)j * Sd + e];
                s[(size_t)r * ncols + j] = a->scale * dot;
            }
        for (int r = 0; r < per; r++) {
            if (!valid[r]) continue;
            float *row = s + (size_t)r * ncols, mx = -INFINITY, sum = 0;
            int i = i0 + r;
            for (int j = 0; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
            for (int j = 0; j <= i; j++) sum += row[j] = expf(row[j] - mx);
            for (int j = 0; j <= i; j++) acc[j / per] += row[j] / sum;
        }
        for (int J = 0; J <= a->qb; J++) out[(size_t)h * ld + J] = (float)acc[J];
        free(x), free(s), free(acc);
    }
}
