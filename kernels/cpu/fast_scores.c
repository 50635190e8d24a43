/* fast_scores.c — the KV-compression scoring ops of fast.h: observation-window scores and decode
 * probabilities, same contracts as their ref.h twins.
 *
 * Window scores never hold more than a (WS_ROWS, WS_KEYS) tile of logits: for each query head, the scored
 * queries are taken WS_ROWS at a time; pass 1 streams the keys once to get each row's softmax max and sum
 * (online) unless the attention that just ran on these queries left their log-sum-exp; pass 2 streams them
 * (again) and turns each tile into probabilities, folded column by column into the head's statistic row
 * (column sums, or a running mean and sum of squared deviations merged tile by tile with Chan's formula, which
 * stays exact when means are large next to the spread). Key blocks no row of a tile can see are skipped. The
 * per-head rows live in the caller's work buffer; the group reduction into `out` comes last. Query heads run in
 * parallel. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "cpu/fast.h"
#include "cpu/fast_exp.h"

enum { WS_ROWS = 64, WS_KEYS = 128 };

/* One tile of scored queries of one head: rows [i0, i0 + R), their scaled queries and visible key limits. */
typedef struct ws_tile {
    float qt[WS_ROWS * KS_FAST_MAX_HEAD_DIM]; /* (R, d) queries * scale */
    float m[WS_ROWS], l[WS_ROWS];              /* running max and sum of each row's softmax */
    int hi[WS_ROWS];                           /* row r sees keys < hi[r] (causal) */
    int hi_max;                                /* no row sees keys >= hi_max: those blocks are skipped */
    int R;
} ws_tile;

/* s (R, WS_KEYS) = the tile's logits against keys [j0, j0 + nb) of kg (rows, d). */
static void tile_logits(float *s, const ws_tile *t, const float *kg, int j0, int nb, int d) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t->R, nb, d, 1.0f, t->qt, d, kg + (size_t)j0 * d, d, 0.0f, s,
                WS_KEYS);
}

/* Pass 1 over the segment [s0, s1): each row's softmax max and sum over its visible keys there. */
static void tile_normalisers(ws_tile *t, const float *kg, int s0, int s1, int d) {
    float s[WS_ROWS * WS_KEYS];
    for (int r = 0; r < t->R; r++) t->m[r] = -INFINITY, t->l[r] = 0;
    if (s1 > t->hi_max) s1 = t->hi_max;
    for (int j0 = s0; j0 < s1; j0 += WS_KEYS) {
        int nb = s1 - j0 < WS_KEYS ? s1 - j0 : WS_KEYS;
        tile_logits(s, t, kg, j0, nb, d);
        for (int r = 0; r < t->R; r++) {
            int e = t->hi[r] - j0 < nb ? t->hi[r] - j0 : nb;
            if (e <= 0) continue;
            const float *sr = s + r * WS_KEYS;
            float bmax = sr[0];
            for (int jj = 1; jj < e; jj++) bmax = sr[jj] > bmax ? sr[jj] : bmax;
            if (bmax > t->m[r]) {
                t->l[r] *= expf(t->m[r] - bmax);
                t->m[r] = bmax;
            }
            float mx = t->m[r], sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int jj = 0; jj < e; jj++) sum += ks_exp_nonpos(sr[jj] - mx);
            t->l[r] += sum;
        }
    }
}

/* Pass 2 over [s0, s1): probabilities tile by tile, folded into the head's rows w1 (sums, or running means)
 * and w2 (running sums of squared deviations; MEAN_VAR only). n_before: queries already folded in (earlier
 * tiles). Past keys (j < past) also feed the entropy, -p log p with log p = (logit - max) - log(sum) read off
 * the softmax instead of a log per element (the reference's -p log(p + 1e-10) differs by under 1e-10 per
 * element). */
static void tile_fold(const ws_tile *t, const float *kg, int s0, int s1, int d, const ks_window_args *a, int past,
                      int n_before, float *w1, float *w2, double *entropy) {
    float s[WS_ROWS * WS_KEYS];
    double ent = 0;
    /* Columns from hi_max on get 0 from every row of this tile. Tiles come in position order, so no earlier tile
     * touched them either: their running (mean, m2) = (0, 0) is already "all zeros so far", and merging zeros
     * changes neither a sum nor that state. Skipping them is exact. */
    if (s1 > t->hi_max) s1 = t->hi_max;
    for (int j0 = s0; j0 < s1; j0 += WS_KEYS) {
        int nb = s1 - j0 < WS_KEYS ? s1 - j0 : WS_KEYS;
        tile_logits(s, t, kg, j0, nb, d);
        for (int r = 0; r < t->R; r++) {
            float *sr = s + r * WS_KEYS, mx = t->m[r], inv = t->l[r] > 0 ? 1.0f / t->l[r] : 0.0f;
            float log_l = t->l[r] > 0 ? logf(t->l[r]) : 0.0f, ent_r = 0;
            int e = t->hi[r] - j0 < nb ? t->hi[r] - j0 : nb, ep = a->stat == KS_SCORE_MEAN_VAR ? past - j0 : 0;
#pragma omp simd reduction(+ : ent_r)
            for (int jj = 0; jj < nb; jj++) {
                float x = sr[jj] - mx, p = jj < e ? ks_exp_nonpos(x) * inv : 0.0f;
                ent_r -= jj < ep ? p * (x - log_l) : 0.0f;
                sr[jj] = p;
            }
            ent += ent_r;
        }
        for (int jj = 0; jj < nb; jj++) {
            int j = j0 + jj;
            float sum = 0;
            for (int r = 0; r < t->R; r++) sum += s[r * WS_KEYS + jj];
            if (a->stat == KS_SCORE_SUM) {
                w1[j] += sum;
            } else { /* Chan et al.: merge (n_before, w1, w2) with this tile's (R, mean, m2) */
                float mean = sum / t->R, m2 = 0;
                for (int r = 0; r < t->R; r++) m2 += (s[r * WS_KEYS + jj] - mean) * (s[r * WS_KEYS + jj] - mean);
                float n_tot = (float)(n_before + t->R), delta = mean - w1[j];
                w1[j] += delta * t->R / n_tot;
                w2[j] += m2 + delta * delta * (float)n_before * t->R / n_tot;
            }
        }
    }
    *entropy += ent;
}

/* o[j] (= or +=) the reduction over the G per-head rows w + i * ld (i < G) of column j, j in [j0, j1); with
 * KS_GQA_NONE each of those rows into its own row o + i * ld. */
static void reduce_group(float *o, const float *w, int ld, int G, int j0, int j1, ks_gqa_reduce reduce,
                         int accumulate) {
    for (int i = 0; reduce == KS_GQA_NONE && i < G; i++)
        for (int j = j0; j < j1; j++) {
            float *oi = o + (size_t)i * ld;
            oi[j] = accumulate ? oi[j] + w[(size_t)i * ld + j] : w[(size_t)i * ld + j];
        }
    for (int j = j0; reduce != KS_GQA_NONE && j < j1; j++) {
        float v = ks_gqa_reduce_col(w + j, (size_t)ld, G, reduce);
        o[j] = accumulate ? o[j] + v : v;
    }
}

/* The first output row of KV head g's group: row g, or its first query head's with KS_GQA_NONE. */
static float *group_out(float *out, int ld, int g, int G, ks_gqa_reduce reduce) {
    return out + (size_t)(reduce == KS_GQA_NONE ? g * G : g) * ld;
}

void ks_fast_window_scores(float *out, int ld, ks_window_summary *sum, const float *q, const float *k, int H, int Hk,
                           int d, int cap, float scale, const ks_window_args *a, const float *lse, float *work) {
    KS_ASSERT(d <= KS_FAST_MAX_HEAD_DIM && H % Hk == 0 && a->n_keys <= ld && a->n_q > 0);
    int G = H / Hk, n = a->n_keys, past = a->q_pos0 + a->q_row0;
    double entropy = 0, var_sum = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : entropy, var_sum)
    for (int h = 0; h < H; h++) {
        const float *kg = k + (size_t)(h / G) * cap * d;
        float *w1 = work + (size_t)h * ld, *w2 = work + (size_t)(H + h) * ld;
        memset(w1, 0, sizeof(float) * n);
        if (a->stat == KS_SCORE_MEAN_VAR) memset(w2, 0, sizeof(float) * n);
        ws_tile t;
        for (int i0 = 0; i0 < a->n_q; i0 += WS_ROWS) {
            t.R = a->n_q - i0 < WS_ROWS ? a->n_q - i0 : WS_ROWS;
            t.hi_max = 0;
            for (int r = 0; r < t.R; r++) {
                int row = a->q_row0 + i0 + r, pos = a->q_pos0 + row;
                const float *qr = q + ((size_t)row * H + h) * d;
                for (int i = 0; i < d; i++) t.qt[r * d + i] = qr[i] * scale;
                t.hi[r] = a->softmax_chunk > 0 ? past : pos + 1 < n ? pos + 1 : n;
                t.hi_max = t.hi[r] > t.hi_max ? t.hi[r] : t.hi_max;
            }
            int step = a->softmax_chunk > 0 ? a->softmax_chunk : n, end = a->softmax_chunk > 0 ? past : n;
            for (int s0 = 0; s0 < end; s0 += step) { /* one softmax per segment */
                int s1 = s0 + step < end ? s0 + step : end;
                if (lse && !a->softmax_chunk)
                    for (int r = 0; r < t.R; r++) t.m[r] = lse[(size_t)(a->q_row0 + i0 + r) * H + h], t.l[r] = 1;
                else
                    tile_normalisers(&t, kg, s0, s1, d);
                tile_fold(&t, kg, s0, s1, d, a, past, i0, w1, w2, &entropy);
            }
        }
        if (a->stat == KS_SCORE_MEAN_VAR) { /* the statistic into w2; w1 keeps the means (a->sums) */
            float inv = a->n_q > 1 ? 1.0f / (a->n_q - 1) : 0.0f;
            for (int j = 0; j < n; j++) {
                float var = w2[j] * inv;
                if (j < past) var_sum += var;
                w2[j] = w1[j] + a->gamma * var;
            }
        }
    }
    /* the statistic's rows: w1 (sums) or w2 (mean + gamma var); a->sums: the group mean of the query sums */
    const float *stat_rows = work + (a->stat == KS_SCORE_MEAN_VAR ? (size_t)H * ld : 0);
#pragma omp parallel for
    for (int g = 0; g < Hk; g++) {
        reduce_group(group_out(out, ld, g, G, a->reduce), stat_rows + (size_t)g * G * ld, ld, G, 0, n, a->reduce,
                     a->accumulate);
        if (!a->sums || a->softmax_chunk) continue;
        float *s = a->sums + (size_t)g * ld;
        reduce_group(s, work + (size_t)g * G * ld, ld, G, 0, n, KS_GQA_MEAN, 0);
        if (a->stat == KS_SCORE_MEAN_VAR)
            for (int j = 0; j < n; j++) s[j] *= a->n_q; /* means -> sums */
    }
    if (sum) *sum = (ks_window_summary){.entropy = entropy, .var_sum = var_sum};
    if (a->sums && a->softmax_chunk > 0) { /* the plain softmax's sums (its normalisers differ): a second pass */
        ks_window_args plain = ks_window_sums_args(a);
        ks_fast_window_scores(a->sums, ld, NULL, q, k, H, Hk, d, cap, scale, &plain, lse, work);
    }
}

void ks_fast_attention_decode_probs(float *out, int ld, const float *q, const float *k, const int32_t *start,
                                    const int32_t *len, int cap, int H, int Hk, int d, float scale,
                                    ks_gqa_reduce reduce, float *work) {
    KS_ASSERT(H % Hk == 0);
    int G = H / Hk;
#pragma omp parallel for
    for (int h = 0; h < H; h++) {
        int g = h / G, lo = start ? start[g] : 0, hi = len[g];
        float *p = work + (size_t)h * ld;
        if (hi <= lo) continue;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, hi - lo, d, scale, k + ((size_t)g * cap + lo) * d, d,
                    q + (size_t)h * d, 1, 0.0f, p + lo, 1);
        float mx = p[lo], sum = 0;
        for (int j = lo + 1; j < hi; j++) mx = p[j] > mx ? p[j] : mx;
#pragma omp simd reduction(+ : sum)
        for (int j = lo; j < hi; j++) sum += p[j] = ks_exp_nonpos(p[j] - mx);
        float inv = 1.0f / sum;
        for (int j = lo; j < hi; j++) p[j] *= inv;
    }
    for (int g = 0; g < Hk; g++) {
        int lo = start ? start[g] : 0, hi = len[g];
        float *o = group_out(out, ld, g, G, reduce);
        for (int i = 0; i < (reduce == KS_GQA_NONE ? G : 1); i++)
            for (int j = 0; j < lo && j < hi; j++) o[(size_t)i * ld + j] = 0;
        reduce_group(o, work + (size_t)g * G * ld, ld, G, lo, hi, reduce, 0);
    }
}
