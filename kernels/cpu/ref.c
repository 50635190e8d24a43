/* ref.c — the readable fp32 reference ops of ref.h: plain loops, double accumulators where a sum is long,
 * no threads, no tricks. Speed does not matter here; clarity and exactness do. */
#include "cpu/ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ks_ref_rmsnorm(float *out, const float *x, const float *w, int n, int D, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * D;
        float *o = out + (size_t)t * D;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / D + eps));
        for (int i = 0; i < D; i++) o[i] = xr[i] * inv * w[i];
    }
}

void ks_ref_gemm(float *out, const float *x, const float *w, const float *bias, int n, int in, int out_dim) {
    for (int t = 0; t < n; t++)
        for (int o = 0; o < out_dim; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < in; i++) acc += (double)x[(size_t)t * in + i] * w[(size_t)o * in + i];
            out[(size_t)t * out_dim + o] = (float)acc;
        }
}

void ks_ref_rope(float *x, const int32_t *pos, int n, int heads, int d, const float *inv_freq) {
    int half = d / 2;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)t * heads + h) * d;
            for (int i = 0; i < half; i++) {
                float ang = (float)pos[t] * inv_freq[i]; /* fp32 product, as HF computes `freqs` */
                float c = cosf(ang), s = sinf(ang);
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
}

void ks_ref_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void ks_ref_embed(float *out, const int32_t *tokens, int n, const float *table, int D) {
    for (int t = 0; t < n; t++) memcpy(out + (size_t)t * D, table + (size_t)tokens[t] * D, sizeof(float) * D);
}

/* softmax(q k^T * scale) v for one query over keys rows [lo, hi) of one KV head (k, v: (rows, d)). */
/* out (d) = softmax(q k_j^T * scale) v over the keys j of the ranges [lo[r], hi[r]) (disjoint, ascending); no
 * key at all gives 0. */
static void attend_ranges(float *out, const float *q, const float *k, const float *v, const int *lo, const int *hi,
                          int nr, int d, float scale) {
    float mx = -INFINITY;
    for (int r = 0; r < nr; r++)
        for (int j = lo[r]; j < hi[r]; j++) {
            double s = 0;
            for (int i = 0; i < d; i++) s += (double)q[i] * k[(size_t)j * d + i];
            if ((float)(s * scale) > mx) mx = (float)(s * scale);
        }
    double denom = 0, acc[d];
    for (int i = 0; i < d; i++) acc[i] = 0;
    for (int r = 0; r < nr; r++)
        for (int j = lo[r]; j < hi[r]; j++) {
            double s = 0;
            for (int i = 0; i < d; i++) s += (double)q[i] * k[(size_t)j * d + i];
            double p = exp((double)(float)(s * scale) - mx);
            denom += p;
            for (int i = 0; i < d; i++) acc[i] += p * v[(size_t)j * d + i];
        }
    for (int i = 0; i < d; i++) out[i] = denom > 0 ? (float)(acc[i] / denom) : 0.0f;
}

static void attend_one(float *out, const float *q, const float *k, const float *v, int lo, int hi, int d,
                       float scale) {
    attend_ranges(out, q, k, v, &lo, &hi, 1, d, scale);
}

void ks_ref_attention(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                      int H, int Hk, int d, int q_pos0, int window, float scale) {
    int G = H / Hk;
    for (int t = 0; t < n; t++) {
        int qpos = q_pos0 + t;
        int hi = qpos + 1 < n_kv ? qpos + 1 : n_kv;
        int lo = window > 0 && qpos - window + 1 > 0 ? qpos - window + 1 : 0;
        for (int h = 0; h < H; h++) {
            size_t kv_off = (size_t)(h / G) * cap * d;
            attend_one(out + ((size_t)t * H + h) * d, q + ((size_t)t * H + h) * d, k + kv_off, v + kv_off, lo, hi,
                       d, scale);
        }
    }
}

void ks_ref_attention_sparse(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                             int H, int Hk, int d, int q_pos0, int window, float scale, const ks_block_list *l) {
    int G = H / Hk, B = l->block;
    size_t max_blocks = (size_t)(q_pos0 + n) / (size_t)B + 1;
    int *lo = malloc(max_blocks * sizeof *lo), *hi = malloc(max_blocks * sizeof *hi);
    for (int t = 0; t < n; t++) {
        int qpos = q_pos0 + t;
        int top = qpos + 1 < n_kv ? qpos + 1 : n_kv;
        int bottom = window > 0 && qpos - window + 1 > 0 ? qpos - window + 1 : 0;
        for (int h = 0; h < H; h++) {
            int row = ks_block_row(l, h, qpos / B), nr = 0;
            for (int c = l->row_start[row]; c < l->row_start[row + 1]; c++) {
                int a = l->cols[c] * B, b = a + B;
                if (a < bottom) a = bottom;
                if (b > top) b = top;
                if (a < b) lo[nr] = a, hi[nr++] = b;
            }
            size_t kv_off = (size_t)(h / G) * cap * d;
            attend_ranges(out + ((size_t)t * H + h) * d, q + ((size_t)t * H + h) * d, k + kv_off, v + kv_off, lo, hi,
                          nr, d, scale);
        }
    }
    free(lo);
    free(hi);
}

void ks_ref_attention_decode(float *out, const float *q, const float *k, const float *v, const int32_t *len,
                             int cap, int H, int Hk, int d, float scale) {
    int G = H / Hk;
    for (int h = 0; h < H; h++) {
        size_t kv_off = (size_t)(h / G) * cap * d;
        attend_one(out + (size_t)h * d, q + (size_t)h * d, k + kv_off, v + kv_off, 0, len[h / G], d, scale);
    }
}

int ks_ref_argmax(const float *x, int n) {
    int best = 0;
    float top = x[0]; /* x[best], held apart from the index: no load waits for the last comparison */
    for (int i = 1; i < n; i++)
        if (x[i] > top) top = x[best = i];
    return best;
}

/* ---- KV-cache compression ops ------------------------------------------------------------------------ */

/* x (n) = softmax of the logits q . k_j * scale over j in [lo, hi) of one KV head's rows k (rows, d); x[j]
 * outside [lo, hi) is left alone. Doubles throughout. */
static void softmax_rows(double *x, const float *q, const float *k, int lo, int hi, int d, float scale) {
    double mx = -INFINITY, sum = 0;
    for (int j = lo; j < hi; j++) {
        double s = 0;
        for (int i = 0; i < d; i++) s += (double)q[i] * k[(size_t)j * d + i];
        x[j] = (double)(float)(s * scale);
        if (x[j] > mx) mx = x[j];
    }
    for (int j = lo; j < hi; j++) sum += x[j] = exp(x[j] - mx);
    for (int j = lo; j < hi; j++) x[j] /= sum;
}

/* Folds one query head's value v into the group reduction *dst (first: the group's first head). Not for
 * KS_GQA_NONE, whose callers store v per head. */
static void reduce_into(double *dst, double v, ks_gqa_reduce reduce, int first, int G) {
    switch (reduce) {
    case KS_GQA_MEAN: *dst = (first ? 0.0 : *dst) + v / G; break;
    case KS_GQA_SUM: *dst = (first ? 0.0 : *dst) + v; break;
    case KS_GQA_MAX: *dst = first || v > *dst ? v : *dst; break;
    case KS_GQA_NONE: break;
    }
}

/* o[j] = v (or += when accumulate), in fp32 as every backend stores a score. */
static void store_score(float *o, double v, int accumulate) { *o = (float)((accumulate ? *o : 0) + v); }

void ks_ref_window_scores(float *out, int ld, ks_window_summary *sum, const float *q, const float *k, int H, int Hk,
                          int d, int cap, float scale, const ks_window_args *a) {
    int G = H / Hk, n = a->n_keys, past = a->q_pos0 + a->q_row0;
    double *p = malloc(sizeof(double) * (size_t)a->n_q * n); /* (n_q, n_keys) one head's probabilities */
    double *grp = malloc(sizeof(double) * (size_t)n);        /* the group reduction of one KV head */
    double *grp_sum = malloc(sizeof(double) * (size_t)n);    /* a->sums: the group mean of the query sums */
    ks_window_summary acc = {0, 0};
    for (int g = 0; g < Hk; g++) {
        const float *kg = k + (size_t)g * cap * d;
        for (int h = g * G; h < (g + 1) * G; h++) {
            for (int i = 0; i < a->n_q; i++) {
                double *pi = p + (size_t)i * n;
                const float *qi = q + ((size_t)(a->q_row0 + i) * H + h) * d;
                for (int j = 0; j < n; j++) pi[j] = 0;
                if (a->softmax_chunk > 0)
                    for (int c0 = 0; c0 < past; c0 += a->softmax_chunk)
                        softmax_rows(pi, qi, kg, c0, c0 + a->softmax_chunk < past ? c0 + a->softmax_chunk : past, d,
                                     scale);
                else {
                    int pos = a->q_pos0 + a->q_row0 + i;
                    softmax_rows(pi, qi, kg, 0, pos + 1 < n ? pos + 1 : n, d, scale);
                }
            }
            for (int j = 0; j < n; j++) {
                double s1 = 0, m2 = 0, v;
                for (int i = 0; i < a->n_q; i++) s1 += p[(size_t)i * n + j];
                double mean = s1 / a->n_q;
                for (int i = 0; i < a->n_q; i++) m2 += (p[(size_t)i * n + j] - mean) * (p[(size_t)i * n + j] - mean);
                double var = a->n_q > 1 ? m2 / (a->n_q - 1) : 0.0;
                v = a->stat == KS_SCORE_SUM ? s1 : mean + a->gamma * var;
                if (a->reduce == KS_GQA_NONE) store_score(out + (size_t)h * ld + j, v, a->accumulate);
                reduce_into(&grp[j], v, a->reduce, h == g * G, G);
                reduce_into(&grp_sum[j], s1, KS_GQA_MEAN, h == g * G, G);
                if (a->stat == KS_SCORE_MEAN_VAR && j < past) {
                    acc.var_sum += var;
                    for (int i = 0; i < a->n_q; i++) {
                        double pij = p[(size_t)i * n + j];
                        acc.entropy -= pij * log(pij + 1e-10);
                    }
                }
            }
        }
        for (int j = 0; a->reduce != KS_GQA_NONE && j < n; j++)
            store_score(out + (size_t)g * ld + j, grp[j], a->accumulate);
        for (int j = 0; a->sums && !a->softmax_chunk && j < n; j++) a->sums[(size_t)g * ld + j] = (float)grp_sum[j];
    }
    if (sum) *sum = acc;
    free(p);
    free(grp);
    free(grp_sum);
    if (a->sums && a->softmax_chunk > 0) { /* the plain softmax's sums: its own pass in the reference */
        ks_window_args plain = ks_window_sums_args(a);
        ks_ref_window_scores(a->sums, ld, NULL, q, k, H, Hk, d, cap, scale, &plain);
    }
}

void ks_ref_attention_decode_probs(float *out, int ld, const float *q, const float *k, const int32_t *start,
                                   const int32_t *len, int cap, int H, int Hk, int d, float scale,
                                   ks_gqa_reduce reduce) {
    int G = H / Hk;
    for (int g = 0; g < Hk; g++) {
        int lo = start ? start[g] : 0, hi = len[g];
        double *p = malloc(sizeof(double) * 2 * (hi > 0 ? hi : 1)), *grp = p + (hi > 0 ? hi : 1);
        for (int h = g * G; h < (g + 1) * G; h++) {
            for (int j = 0; j < lo; j++) p[j] = 0;
            softmax_rows(p, q + (size_t)h * d, k + (size_t)g * cap * d, lo, hi, d, scale);
            for (int j = 0; reduce == KS_GQA_NONE && j < hi; j++) out[(size_t)h * ld + j] = (float)p[j];
            for (int j = 0; j < hi; j++) reduce_into(&grp[j], p[j], reduce, h == g * G, G);
        }
        for (int j = 0; reduce != KS_GQA_NONE && j < hi; j++) out[(size_t)g * ld + j] = (float)grp[j];
        free(p);
    }
}

void ks_ref_channel_scores(float *out, int ld, const float *q, int n_q, const float *k, const int32_t *len, int cap,
                           int H, int Hk, int d) {
    const int G = H / Hk;
    for (int i = 0; i < H; i++) {
        const int g = i / G;
        for (int c = 0; c < d; c++) {
            double qs = 0, ks = 0;
            for (int r = 0; r < n_q; r++) {
                double x = q[((size_t)r * H + i) * d + c];
                qs += x * x;
            }
            for (int j = 0; j < len[g]; j++) {
                double x = k[((size_t)g * cap + j) * d + c];
                ks += x * x;
            }
            out[(size_t)i * ld + c] = n_q && len[g] ? (float)(qs / n_q * (ks / len[g])) : 0.0f;
        }
    }
}

void ks_ref_key_norms(float *out, int ld, const float *k, const int32_t *len, int cap, int Hk, int d) {
    for (int g = 0; g < Hk; g++)
        for (int j = 0; j < len[g]; j++) {
            const float *r = k + ((size_t)g * cap + j) * d;
            double ss = 0;
            for (int i = 0; i < d; i++) ss += (double)r[i] * r[i];
            out[(size_t)g * ld + j] = (float)sqrt(ss);
        }
}

int ks_ref_evict_row(const ks_evict_args *a, int len, const float *p, float *scores, int G, int ld) {
    if (a->rule == KS_EVICT_ACCUMULATED)
        for (int i = 0; i < G; i++) { /* each query head's running scores */
            float *s = scores + (size_t)i * ld;
            const float *pi = p + (size_t)i * ld;
            s[len - 1] = 0; /* the row this step appended */
            for (int j = 0; j < len; j++) s[j] += pi[j];
        }
    int lo = a->head, hi = len - a->tail;
    if (len <= a->keep || hi <= lo) return -1;
    if (a->rule == KS_EVICT_SINK) return lo;
    int drop = -1, r = a->kernel / 2;
    uint32_t low = 0;
    for (int j = lo; j < hi; j++) {
        double sum = 0; /* POOLED as ks_select_pool: zeros beyond [0, hi), the divisor kernel */
        for (int i = j - r < 0 ? 0 : j - r; a->rule == KS_EVICT_POOLED && i <= j + r && i < hi; i++) sum += p[i];
        uint32_t k = ks_order_key(a->rule == KS_EVICT_POOLED ? (float)(sum / a->kernel)
                                                             : ks_gqa_reduce_col(scores + j, ld, G, a->reduce));
        if (drop < 0 || k <= low) drop = j, low = k; /* <=: the latest of equal lowest */
    }
    return drop;
}

void ks_ref_kv_compact(float *k, float *v, const int32_t *keep, const int32_t *n_keep, int ld, int cap, int Hk,
                       int d) {
    for (int g = 0; g < Hk; g++)
        for (int i = 0; i < n_keep[g]; i++) { /* keep[i] >= i: a forward copy never overwrites a row still needed */
            size_t dst = ((size_t)g * cap + i) * d, src = ((size_t)g * cap + keep[(size_t)g * ld + i]) * d;
            if (dst == src) continue;
            memcpy(k + dst, k + src, sizeof(float) * d);
            memcpy(v + dst, v + src, sizeof(float) * d);
        }
}

void ks_ref_v_merge(float *v, const ks_merge *list, const int32_t *n, int ld, int span, const int32_t *len, int cap,
                    int Hk, int d, ks_merge_norms *norms) {
    double v_sq = 0, dv_sq = 0;
    for (int g = 0; g < Hk; g++) {
        const ks_merge *e = list + (size_t)g * ld;
        float *vg = v + (size_t)g * cap * d;
        for (int j = 0, lo = 0; j < len[g]; j++) {
            while (lo < n[g] && e[lo].src + span < j) lo++; /* entries whose span ends before row j */
            float *row = vg + (size_t)j * d;
            for (int c = 0; c < d; c++) {
                float x = row[c];
                const float x0 = x;
                for (int k = lo; k < n[g] && e[k].src < j; k++) x += e[k].weight * vg[(size_t)e[k].src * d + c];
                row[c] = x;
                v_sq += (double)x0 * x0;
                dv_sq += (double)(x - x0) * (x - x0);
            }
        }
    }
    if (norms) norms->v_sq += v_sq, norms->dv_sq += dv_sq;
}
