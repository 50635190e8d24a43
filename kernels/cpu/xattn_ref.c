/* xattn_ref.c — see xattn_ref.h. */
#include "cpu/xattn_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x (S d) = the antidiagonal-ordered queries of stride row i: x[t d ..] = q at position iS + S - 1 - t, zero
 * outside the chunk [q_pos0, q_pos0 + n). Returns 0 when the row holds no query of the chunk. */
static int stride_query(float *x, const float *q, int h, int H, int d, int i, const ks_xattn_args *a) {
    int S = a->stride, any = 0;
    for (int t = 0; t < S; t++) {
        int pos = i * S + S - 1 - t, r = pos - a->q_pos0;
        float *dst = x + (size_t)t * d;
        if (r >= 0 && r < a->n) {
            memcpy(dst, q + ((size_t)r * H + h) * d, sizeof(float) * d);
            any = 1;
        } else {
            memset(dst, 0, sizeof(float) * d);
        }
    }
    return any;
}

/* x (S d) . the keys of stride column j (positions jS .. jS + S - 1 of one KV head's rows kh), keys at positions
 * >= n_kv being zero. */
static float stride_dot(const float *x, const float *kh, int d, int j, int S, int n_kv) {
    int m = n_kv - j * S < S ? n_kv - j * S : S;
    const float *kj = kh + (size_t)j * S * d;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int e = 0; e < m * d; e++) s += x[e] * kj[e];
    return s;
}

void ks_ref_xattn_block_scores(float *out, int ld, const float *q, const float *k, int H, int Hk, int d, int cap,
                               const ks_xattn_args *a) {
    int S = a->stride, B = a->block, G = H / Hk, n_kv = a->q_pos0 + a->n, per = B / S;
#pragma omp parallel for schedule(dynamic)
    for (int h = 0; h < H; h++) {
        float *x = malloc(sizeof(float) * (size_t)S * d), *s = malloc(sizeof(float) * (size_t)(a->qb + 1) * per);
        double *acc = calloc((size_t)a->qb + 1, sizeof(double));
        const float *kh = k + (size_t)(h / G) * cap * d;
        for (int i = a->qb * per; i < (a->qb + 1) * per; i++) {
            if (!stride_query(x, q, h, H, d, i, a)) continue;
            float mx = -INFINITY;
            for (int j = 0; j <= i; j++) {
                s[j] = a->scale * stride_dot(x, kh, d, j, S, n_kv);
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0;
            for (int j = 0; j <= i; j++) sum += s[j] = expf(s[j] - mx);
            for (int j = 0; j <= i; j++) acc[j / per] += s[j] / sum;
        }
        for (int J = 0; J <= a->qb; J++) out[(size_t)h * ld + J] = (float)acc[J];
        free(x), free(s), free(acc);
    }
}

/* Descending score, the lower block first among equals. */
static int rank_cmp(const void *pa, const void *pb) {
    const ks_xattn_rank *x = pa, *y = pb;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->block > y->block) - (x->block < y->block);
}

static int block_cmp(const void *pa, const void *pb) {
    int32_t x = *(const int32_t *)pa, y = *(const int32_t *)pb;
    return (x > y) - (x < y);
}

int ks_xattn_select(int32_t *cols, double *coverage, const float *a, int qb, float threshold, float density,
                    ks_xattn_rank *work) {
    int n = 0, n_other = 0;
    double forced = 0, total;
    cols[n++] = 0, forced += a[0];
    if (qb > 0) cols[n++] = qb, forced += a[qb];
    for (int J = 1; J < qb; J++) work[n_other++] = (ks_xattn_rank){a[J], J};
    qsort(work, (size_t)n_other, sizeof *work, rank_cmp);
    total = forced;
    for (int i = 0; i < n_other; i++) total += work[i].score;
    double kept = forced;
    if (density > 0) { /* a product within 1e-6 of an integer is that integer: 0.1 * 10 blocks is 1 */
        int target = (int)ceil((double)density * (qb + 1) - 1e-6);
        for (int i = 0; i < n_other && n < target; i++) cols[n++] = work[i].block, kept += work[i].score;
    } else {
        double required = (double)threshold * total;
        for (int i = 0; i < n_other && kept < required; i++) cols[n++] = work[i].block, kept += work[i].score;
    }
    qsort(cols, (size_t)n, sizeof *cols, block_cmp);
    *coverage = total > 0 ? kept / total : 1.0;
    return n;
}
