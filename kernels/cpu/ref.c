/* ref.c — the readable fp32 reference ops of ref.h: plain loops, double accumulators where a sum is long,
 * no threads, no tricks. Speed does not matter here; clarity and exactness do. */
#include "cpu/ref.h"

#include <math.h>
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
static void attend_one(float *out, const float *q, const float *k, const float *v, int lo, int hi, int d,
                       float scale) {
    float mx = -INFINITY;
    for (int j = lo; j < hi; j++) {
        double s = 0;
        for (int i = 0; i < d; i++) s += (double)q[i] * k[(size_t)j * d + i];
        if ((float)(s * scale) > mx) mx = (float)(s * scale);
    }
    double denom = 0, acc[d];
    for (int i = 0; i < d; i++) acc[i] = 0;
    for (int j = lo; j < hi; j++) {
        double s = 0;
        for (int i = 0; i < d; i++) s += (double)q[i] * k[(size_t)j * d + i];
        double p = exp((double)(float)(s * scale) - mx);
        denom += p;
        for (int i = 0; i < d; i++) acc[i] += p * v[(size_t)j * d + i];
    }
    for (int i = 0; i < d; i++) out[i] = (float)(acc[i] / denom);
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
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}
