// window_scores.cu — observation-window scores and decode probabilities (ks_cuda_methods.h: ks_cuda_scores),
// the semantics of ks_ref_window_scores / ks_ref_attention_decode_probs without the (n_q, n_keys) matrix.
//
// Three kernels:
//   lse_kernel     block (query tile of LSE_Q queries, head h, segment s, split z): every thread walks keys of
//                  the split's share of the segment, computing LSE_Q dot products per key row read (one bf16
//                  row, 16-byte loads) with an online max/sum per query; the block combines them into one
//                  partial log-sum-exp per query. The splits give a window of a few queries enough blocks to
//                  fill the GPU (32 queries x 32 heads are only 128 tiles).
//   lse_combine    the splits' partials -> lse[(i * H + h) * nlse + s] (+inf for a query that sees no key).
//   score_kernel   block (tile of SCORE_J keys, KV head g), one key per thread held in registers: for each
//                  query head of the group, the queries stream through shared memory in tiles of SCORE_Q;
//                  p = exp(logit - lse) adds to the per-key sums (double), then the statistic, then the
//                  GQA reduction, written to out[g * ld + j] (KS_GQA_NONE: each query head h's statistic to
//                  out[h * ld + j]). Entropy and variance sums of the summary are block-reduced and atomically
//                  added.
// With LOOM's chunked softmax and `sums` requested (H2O variant loom), the lse pass has one more segment, the
// window's own keys (causal), and lse_plain folds each query's segments into its plain log-sum-exp, so the
// score pass also adds each key's plain probability exp(logit - plain) into `sums`: the statistics' mass
// from the same pass instead of a second one.
// Calls of many queries under one causal softmax (H2O's all-query prefill scores) go to the tensor-core form
// instead (window_scores_tc.cu).

#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"
#include "cuda/window_scores_tc.cuh"

namespace {

constexpr int LSE_Q = 8, LSE_THREADS = 128;
constexpr int SCORE_J = 128, SCORE_Q = 16;

struct score_geom {
    int H, Hk, G, d, cap, n_q, q_pos, n_keys, chunk, past, nseg;
    int wseg; // 1: chunked softmax with plain sums: segment nseg is the window's keys (nlse = nseg + wseg)
    int nlse; // log-sum-exps per (query, head)
    int splits; // key ranges per segment in the lse pass
    const int32_t *lo, *hi;
};

__device__ __forceinline__ int ks_cdiv_dev(int a, int b) { return (a + b - 1) / b; }

__device__ __forceinline__ int seg_of(const score_geom &g, int j) { return g.chunk > 0 ? j / g.chunk : 0; }

// The rows [lo, hi) of KV head `kv` that query i may see at most (the causal limit applies per query; the
// chunked scores stop at g.past).
__device__ __forceinline__ void head_rows(const score_geom &g, int kv, int *lo, int *hi) {
    *lo = g.lo ? g.lo[kv] : 0;
    *hi = g.hi ? min(g.hi[kv], g.n_keys) : g.n_keys;
}

// Causal: every past key (j < g.past = g.q_pos) is visible to every scored query.
__device__ __forceinline__ bool visible(const score_geom &g, int i, int j) { return j <= g.q_pos + i; }

// Folds (m2, l2) into the online softmax state (m, l): l is the sum of exp(x - m).
__device__ __forceinline__ void lse_merge(float &m, float &l, float m2, float l2) {
    float mx = fmaxf(m, m2);
    if (mx == -INFINITY) return;
    l = l * __expf(m - mx) + l2 * __expf(m2 - mx);
    m = mx;
}

// part[((i * H + h) * nlse + s) * splits + z] = log sum exp of query i's logits over split z of segment s
// (-inf when it has no key there).
__global__ void lse_kernel(float *part, const bf16 *q, int64_t ld_q, const bf16 *kc, score_geom g, float scale) {
    extern __shared__ float sq[]; // (LSE_Q, d)
    __shared__ float red_m[LSE_THREADS / 32][LSE_Q], red_l[LSE_THREADS / 32][LSE_Q];
    const int i0 = blockIdx.x * LSE_Q, h = blockIdx.y, s = blockIdx.z / g.splits, z = blockIdx.z % g.splits;
    const int kv = h / g.G, d = g.d;
    for (int e = threadIdx.x; e < LSE_Q * d; e += blockDim.x) {
        int i = i0 + e / d;
        sq[e] = i < g.n_q ? __bfloat162float(q[(int64_t)i * ld_q + (int64_t)h * d + e % d]) : 0.0f;
    }
    __syncthreads();
    int lo, hi;
    head_rows(g, kv, &lo, &hi);
    if (s < g.nseg && g.chunk > 0) {
        lo = max(lo, s * g.chunk), hi = min(hi, min((s + 1) * g.chunk, g.past));
    } else { // one causal softmax, or the window's keys next to the chunks
        if (g.chunk > 0) lo = max(lo, g.past);
        hi = min(hi, g.q_pos + min(i0 + LSE_Q, g.n_q)); // the tile's last query sees up to its position
    }
    const int span = ks_cdiv_dev(max(hi - lo, 0), g.splits);
    lo += z * span, hi = min(hi, lo + span);
    float m[LSE_Q], l[LSE_Q];
#pragma unroll
    for (int t = 0; t < LSE_Q; t++) m[t] = -INFINITY, l[t] = 0.0f;
    const bf16 *kh = kc + (int64_t)kv * g.cap * d;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        float dot[LSE_Q] = {};
        const uint4 *kr = reinterpret_cast<const uint4 *>(kh + (int64_t)j * d);
        for (int c = 0; c < d / 8; c++) {
            float kf[8];
            ks_unpack8(kr[c], kf);
#pragma unroll
            for (int t = 0; t < LSE_Q; t++)
#pragma unroll
                for (int e = 0; e < 8; e++) dot[t] += kf[e] * sq[t * d + c * 8 + e];
        }
#pragma unroll
        for (int t = 0; t < LSE_Q; t++)
            if (i0 + t < g.n_q && visible(g, i0 + t, j)) lse_merge(m[t], l[t], dot[t] * scale, 1.0f);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int t = 0; t < LSE_Q; t++) {
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m[t], o), l2 = __shfl_xor_sync(0xffffffffu, l[t], o);
            lse_merge(m[t], l[t], m2, l2);
        }
        if (lane == 0) red_m[warp][t] = m[t], red_l[warp][t] = l[t];
    }
    __syncthreads();
    if (threadIdx.x < LSE_Q && i0 + threadIdx.x < g.n_q) {
        int t = threadIdx.x;
        float mm = -INFINITY, ll = 0.0f;
        for (int w = 0; w < LSE_THREADS / 32; w++) lse_merge(mm, ll, red_m[w][t], red_l[w][t]);
        part[(((int64_t)(i0 + t) * g.H + h) * g.nlse + s) * g.splits + z] = mm == -INFINITY ? -INFINITY : mm + logf(ll);
    }
}

// plain[x] = log sum exp of the nlse segment values lse[x * nlse + s] (+inf marks a segment without keys, and
// an all-empty query).
__global__ void lse_plain(float *plain, const float *lse, int64_t n, int nlse) {
    int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= n) return;
    const float *p = lse + x * nlse;
    float mx = -INFINITY, sum = 0.0f;
    for (int s = 0; s < nlse; s++)
        if (p[s] != INFINITY) mx = fmaxf(mx, p[s]);
    for (int s = 0; mx != -INFINITY && s < nlse; s++)
        if (p[s] != INFINITY) sum += __expf(p[s] - mx);
    plain[x] = mx == -INFINITY ? INFINITY : mx + logf(sum);
}

__global__ void lse_combine(float *lse, const float *part, int64_t n, int splits) {
    int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= n) return;
    const float *p = part + x * splits;
    float mx = -INFINITY, sum = 0.0f;
    for (int z = 0; z < splits; z++) mx = fmaxf(mx, p[z]);
    for (int z = 0; mx != -INFINITY && z < splits; z++) sum += __expf(p[z] - mx);
    lse[x] = mx == -INFINITY ? INFINITY : mx + logf(sum); // +inf: every probability of that query is 0
}

template <int D>
__global__ void __launch_bounds__(SCORE_J) score_kernel(float *out, int64_t ld, double *summary, const float *lse,
                                                       const bf16 *q, int64_t ld_q, const bf16 *kc, score_geom g,
                                                       ks_score_stat stat, float gamma, ks_gqa_reduce reduce,
                                                       float scale, float *sums, const float *plain) {
    __shared__ float sq[SCORE_Q][D];
    __shared__ float red[32];
    const int kv = blockIdx.y, j = blockIdx.x * SCORE_J + threadIdx.x, d = g.d;
    int lo, hi;
    head_rows(g, kv, &lo, &hi);
    const bool mine = j >= lo && j < (g.chunk > 0 ? min(hi, g.past) : hi); // scored; others get 0 from every query
    const bool mine_plain = plain && j >= lo && j < hi; // its plain probabilities go to sums (g.wseg)
    float k[D];
    {
        const uint4 *kr = reinterpret_cast<const uint4 *>(kc + ((int64_t)kv * g.cap + (mine || mine_plain ? j : 0)) * d);
#pragma unroll
        for (int c = 0; c < D / 8; c++)
            if (c < d / 8) ks_unpack8(kr[c], k + c * 8);
            else
#pragma unroll
                for (int e = 0; e < 8; e++) k[c * 8 + e] = 0.0f;
    }
    const int seg = mine ? seg_of(g, j) : 0;
    const bool summed = stat == KS_SCORE_MEAN_VAR && summary && j < g.past;
    double grp = 0.0, grp_sum = 0.0, ent = 0.0, var_sum = 0.0;
    for (int h = kv * g.G; h < (kv + 1) * g.G; h++) {
        double s1 = 0.0, s2 = 0.0, sp = 0.0;
        for (int i0 = 0; i0 < g.n_q; i0 += SCORE_Q) {
            __syncthreads(); // the previous tile's readers are done
            for (int e = threadIdx.x; e < SCORE_Q * D; e += blockDim.x) {
                int i = i0 + e / D, c = e % D;
                sq[e / D][c] = i < g.n_q && c < d ? __bfloat162float(q[(int64_t)i * ld_q + (int64_t)h * d + c]) : 0.0f;
            }
            __syncthreads();
            const int nt = min(SCORE_Q, g.n_q - i0);
            if (!mine && !mine_plain) continue;
            for (int t = 0; t < nt; t++) {
                int i = i0 + t;
                if (!visible(g, i, j)) continue;
                float dot = 0.0f;
#pragma unroll
                for (int c = 0; c < D; c++) dot += k[c] * sq[t][c];
                if (mine_plain) sp += __expf(dot * scale - plain[(int64_t)i * g.H + h]);
                if (!mine) continue;
                float p = __expf(dot * scale - lse[((int64_t)i * g.H + h) * g.nlse + seg]);
                s1 += p, s2 += (double)p * p;
                if (summed) ent -= (double)p * log((double)p + 1e-10);
            }
        }
        double n = g.n_q, mean = s1 / n;
        double var = g.n_q > 1 ? fmax(s2 - s1 * mean, 0.0) / (n - 1) : 0.0;
        double v = stat == KS_SCORE_SUM ? s1 : mean + gamma * var;
        if (summed) var_sum += var;
        grp_sum += (plain ? sp : s1) / g.G;
        bool first = h == kv * g.G;
        switch (reduce) {
        case KS_GQA_MEAN: grp = (first ? 0.0 : grp) + v / g.G; break;
        case KS_GQA_SUM: grp = (first ? 0.0 : grp) + v; break;
        case KS_GQA_MAX: grp = first || v > grp ? v : grp; break;
        case KS_GQA_NONE:
            if (j < g.n_keys) out[(int64_t)h * ld + j] = (float)v;
            break;
        }
    }
    if (j < g.n_keys && reduce != KS_GQA_NONE) out[(int64_t)kv * ld + j] = (float)grp;
    if (sums && j < g.n_keys) sums[(int64_t)kv * ld + j] = (float)grp_sum;
    if (stat == KS_SCORE_MEAN_VAR && summary) {
        // fp32 block sums of each thread's double partials, then one double atomic per block and quantity
        float e = ks_block_sum((float)ent, red), v = ks_block_sum((float)var_sum, red);
        if (threadIdx.x == 0) atomicAdd(summary, (double)e), atomicAdd(summary + 1, (double)v);
    }
}

score_geom geom_of(const ks_cuda_score_args *a) {
    score_geom g;
    g.H = a->H, g.Hk = a->Hk, g.G = a->H / a->Hk, g.d = a->d, g.cap = a->cap, g.n_q = a->n_q, g.q_pos = a->q_pos;
    g.n_keys = a->n_keys, g.chunk = a->softmax_chunk, g.past = a->q_pos, g.lo = a->lo, g.hi = a->hi;
    g.nseg = a->softmax_chunk > 0 ? ks_cdiv(a->q_pos, a->softmax_chunk) : 1;
    if (g.nseg < 1) g.nseg = 1;
    g.wseg = a->softmax_chunk > 0 && a->sums ? 1 : 0;
    g.nlse = g.nseg + g.wseg;
    // about 2048 lse blocks (16 per SM of an H200), splits of at least 256 keys, at most 64 splits
    int blocks = ks_cdiv(a->n_q, LSE_Q) * a->H * g.nlse, by_keys = a->n_keys / 256;
    g.splits = blocks >= 2048 ? 1 : ks_cdiv(2048, blocks);
    g.splits = g.splits < by_keys ? g.splits : by_keys;
    g.splits = g.splits < 1 ? 1 : g.splits > 64 ? 64 : g.splits;
    return g;
}

template <int D>
ks_status launch_scores(float *out, int64_t ld, double *summary, const float *lse, const float *plain,
                        const ks_cuda_score_args *a, const score_geom &g, cudaStream_t s) {
    dim3 grid(ks_cdiv(a->n_keys, SCORE_J), a->Hk);
    score_kernel<D><<<grid, SCORE_J, 0, s>>>(out, ld, summary, lse, reinterpret_cast<const bf16 *>(a->q), a->ld_q,
                                             reinterpret_cast<const bf16 *>(a->kc), g, a->stat, a->gamma, a->reduce,
                                             a->scale, a->sums, plain);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

} // namespace

extern "C" size_t ks_cuda_scores_lse_floats(const ks_cuda_score_args *a) {
    score_geom g = geom_of(a);
    // the combined values, each query's plain value (chunks with sums), then the partials
    return (size_t)a->n_q * a->H * (g.nlse * (g.splits + 1) + g.wseg);
}

// ks_cuda_scores; portable: the tensor-core path on mma.sync even where wgmma would run (Hopper, d = 128).
static ks_status scores(float *out, int64_t ld, double *summary, const ks_cuda_score_args *a, float *lse,
                        size_t lse_floats, bool portable, cudaStream_t s) {
    KS_ASSERT(a->d % 8 == 0 && a->d <= 256 && a->H % a->Hk == 0 && a->n_q > 0 && a->n_keys <= ld &&
              (a->hi || a->n_keys <= a->cap) && ks_cuda_scores_lse_floats(a) <= lse_floats);
    KS_ASSERT(((uintptr_t)a->q | (uintptr_t)a->kc) % 16 == 0 && (a->ld_q * 2) % 16 == 0);
    if (a->n_keys == 0) return KS_OK;
    if (ks_scores_tc_fits(a)) return ks_scores_tc(out, ld, a, lse, portable, s);
    const score_geom g = geom_of(a);
    const int64_t n_lse = (int64_t)a->n_q * a->H * g.nlse, n_plain = g.wseg ? (int64_t)a->n_q * a->H : 0;
    float *plain = g.wseg ? lse + n_lse : NULL; // after the combined values, which the score kernel reads
    float *part = lse + n_lse + n_plain;
    dim3 grid(ks_cdiv(a->n_q, LSE_Q), a->H, g.nlse * g.splits);
    lse_kernel<<<grid, LSE_THREADS, sizeof(float) * LSE_Q * a->d, s>>>(
        part, reinterpret_cast<const bf16 *>(a->q), a->ld_q, reinterpret_cast<const bf16 *>(a->kc), g, a->scale);
    KS_LAUNCH_CHECK();
    lse_combine<<<ks_cdiv(n_lse, 256), 256, 0, s>>>(lse, part, n_lse, g.splits);
    KS_LAUNCH_CHECK();
    if (plain) {
        lse_plain<<<ks_cdiv(n_plain, 256), 256, 0, s>>>(plain, lse, n_plain, g.nlse);
        KS_LAUNCH_CHECK();
    }
    if (a->d <= 64) return launch_scores<64>(out, ld, summary, lse, plain, a, g, s);
    if (a->d <= 128) return launch_scores<128>(out, ld, summary, lse, plain, a, g, s);
    return launch_scores<256>(out, ld, summary, lse, plain, a, g, s);
}

extern "C" ks_status ks_cuda_scores(float *out, int64_t ld, double *summary, const ks_cuda_score_args *a, float *lse,
                                    size_t lse_floats, cudaStream_t s) {
    return scores(out, ld, summary, a, lse, lse_floats, false, s);
}

extern "C" ks_status ks_cuda_scores_sm80(float *out, int64_t ld, double *summary, const ks_cuda_score_args *a,
                                         float *lse, size_t lse_floats, cudaStream_t s) {
    return scores(out, ld, summary, a, lse, lse_floats, true, s);
}
