// flex_estimate.cu — FlexPrefill's estimation on the GPU (ks_cuda_methods.h: ks_cuda_flex_blocks; the algorithm
// and its reference: cpu/flexprefill_ref.h). The device computes every estimate the choice reads, the host chooses
// with the reference's own step functions (ks_flexprefill_decide, ks_flexprefill_mark, ks_flexprefill_emit):
//   1. flex_last_q, flex_qbar, flex_block_means: the last B queries (H, B, d), their scaled mean, the block mean
//      keys (Hk, nb, d);
//   2. per slab of KV groups, the G B last queries of a group against its keys as one cuBLASLt GEMM (tensor
//      cores, the cache as the operand in place), flex_probs: each row's causal softmax in place (fp64
//      denominator), flex_columns: vertical and slash (fp64 sums over the rows in the reference's order) and each
//      column's mass from the scored rows of the last two query blocks (the coverage);
//   3. flex_pool: v_b, s_b and the coverage masses per key block; flex_softmax_rows: a_blk;
//   4. the covers: vertical and slash sorted descending (cub's segmented sort), flex_cover: the prefix sums in
//      fp64 counted against gamma times the total, a block per sequence;
// then only (H, 5, nb) floats and 2 H covers cross to the host. A query-aware head's block attention is computed
// and ranked when the host asks for it (flex_block_means of its queries, flex_softmax_rows, flex_flatten_causal,
// cub's stable radix sort: descending, ties to the lower row, then column, the reference's order), and the
// ranking comes back for the host's fill (ks_flexprefill_fill_ranked).
// The GEMM accumulates in fp32 and the softmax denominators of step 1 and the covers' prefix sums are parallel
// fp64 sums, so the estimates match the reference's to rounding; the other sums have the reference's order, and
// the choice (rankings, ties, budgets) is the reference's own code.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_sort.cuh>

#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

extern "C" {
#include "cpu/flexprefill_ref.h"
}

namespace {

constexpr int FX_THREADS = 256, FX_COVER_THREADS = 1024;
constexpr size_t kFlexScoreBytes = (size_t)256 << 20; // a slab's scores at most (at least one KV group's)

// ql (H, B, d) = Q rows L - B .. L - 1.
__global__ void flex_last_q(bf16 *ql, const bf16 *q, int64_t ld_q, int H, int B, int d, int L) {
    const int64_t total = (int64_t)H * B * d, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += step) {
        const int h = (int)(e / ((int64_t)B * d)), i = (int)(e / d % B), c = (int)(e % d);
        ql[e] = q[(int64_t)(L - B + i) * ld_q + (int64_t)h * d + c];
    }
}

// qbar (H, d): the mean of the last B queries, each entry divided by sqrt(d) in fp32, summed in fp64.
__global__ void flex_qbar(float *qbar, const bf16 *q, int64_t ld_q, int H, int B, int d, int L) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= H * d) return;
    const int h = e / d, c = e % d;
    const float root = sqrtf((float)d);
    double s = 0;
    for (int t = L - B; t < L; t++) s += (double)(__bfloat162float(q[(int64_t)t * ld_q + (int64_t)h * d + c]) / root);
    qbar[e] = (float)(s / B);
}

// out (heads, nb, d): the mean of each block of B rows of x (head g's row j at x + g hs + j ld; rows below L),
// divided by div. Grid (nb, heads).
__global__ void flex_block_means(float *out, const bf16 *x, int64_t ld, int64_t hs, int L, int B, int d, int nb,
                                 float div) {
    const int b = blockIdx.x, g = blockIdx.y, j1 = min((b + 1) * B, L);
    const bf16 *xg = x + (int64_t)g * hs;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        double s = 0;
        for (int j = b * B; j < j1; j++) s += __bfloat162float(xg[(int64_t)j * ld + c]);
        out[((int64_t)g * nb + b) * d + c] = (float)(s / (j1 - b * B)) / div;
    }
}

// Row r (one block each): out[r ld_o + j] for j < n = n0 + r n_step, the softmax of qv[r ld_q] . keys[(r / kg)
// ld_k + j d] (dots in fp64 over the d entries in order, rounded to fp32; the max in fp32, the denominator in
// fp64 by one thread in order): the reference's softmax_dots.
__global__ void flex_softmax_rows(float *out, int64_t ld_o, const float *qv, int64_t ld_q, const float *keys,
                                  int64_t ld_k, int kg, int d, int n0, int n_step) {
    __shared__ float smx;
    __shared__ double sden;
    const int r = blockIdx.x, n = n0 + r * n_step;
    float *o = out + (int64_t)r * ld_o;
    const float *v = qv + (int64_t)r * ld_q, *kr = keys + (int64_t)(r / kg) * ld_k;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        double s = 0;
        for (int c = 0; c < d; c++) s += (double)v[c] * kr[(int64_t)j * d + c];
        o[j] = (float)s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = o[j] > mx ? o[j] : mx;
        double den = 0;
        for (int j = 0; j < n; j++) den += exp((double)o[j] - mx);
        smx = mx, sden = den;
    }
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += blockDim.x) o[j] = (float)(exp((double)o[j] - smx) / sden);
}

// Block max and sum of one value per thread (every thread returns them).
__device__ float block_max(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < (int)blockDim.x / 32; w++) m = fmaxf(m, sh[w]);
    __syncthreads();
    return m;
}

__device__ double block_sum(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = 0;
    for (int w = 0; w < (int)blockDim.x / 32; w++) t += sh[w];
    __syncthreads();
    return t;
}

// Scored row i of the slab's head hs (grid (B, heads)): the dots x = s / sqrt(d) of columns j <= pos = L - B + i
// become their softmax (fp32 max, fp64 denominator, each probability exp(x - max) / den rounded once), columns
// pos < j < L zero.
__global__ void flex_probs(float *sc, int64_t ld_s, int B, int d, int L) {
    __shared__ float shf[FX_THREADS / 32];
    __shared__ double shd[FX_THREADS / 32];
    const int i = blockIdx.x, pos = L - B + i;
    float *row = sc + ((int64_t)blockIdx.y * B + i) * ld_s;
    const float root = sqrtf((float)d);
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) mx = fmaxf(mx, row[j] / root);
    mx = block_max(mx, shf);
    double den = 0;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) den += exp((double)(row[j] / root) - mx);
    den = block_sum(den, shd);
    for (int j = threadIdx.x; j < L; j += blockDim.x)
        row[j] = j <= pos ? (float)(exp((double)(row[j] / root) - mx) / den) : 0.0f;
}

// Column j of the slab's head (grid (L / threads, heads), head h = h0 + blockIdx.y): vertical[j] and slash[j]
// (the reference's vertical_slash: fp64 sums over the rows in order, divided by B) into vs (2 H, cap), and the
// column's mass from the scored rows in query block nb - 2, then nb - 1, into part (H, 2, cap).
__global__ void flex_columns(float *vs, float *part, const float *sc, int64_t ld_s, int h0, int H, int B, int L,
                             int cap) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, h = h0 + blockIdx.y;
    if (j >= L) return;
    const float *P = sc + (int64_t)blockIdx.y * B * ld_s;
    const int nb = (L + B - 1) / B;
    double v = 0, sl = 0, m[2] = {0, 0}; // m: the rows in query block nb - 2, then nb - 1
    for (int i = 0; i < B; i++) {
        const float p = P[(int64_t)i * ld_s + j];
        v += p;
        m[(L - B + i) / B - (nb - 2)] += p;
        if (i >= B - 1 - j) sl += P[(int64_t)i * ld_s + j - B + 1 + i];
    }
    vs[(int64_t)h * cap + j] = (float)(v / B);
    vs[(int64_t)(H + h) * cap + j] = (float)(sl / B);
    part[(int64_t)h * 2 * cap + j] = (float)m[0];
    part[((int64_t)h * 2 + 1) * cap + j] = (float)m[1];
}

// est (H, 5, nb) entries 0, 1, 3, 4 of head h (grid (nb / threads, H)): v_b, s_b (the reference's sum_pool) and
// the two coverage rows' block masses.
__global__ void flex_pool(float *est, const float *vs, const float *part, int H, int B, int L, int nb, int cap) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y;
    if (b >= nb) return;
    const float *src[4] = {vs + (int64_t)h * cap, vs + (int64_t)(H + h) * cap, part + (int64_t)h * 2 * cap,
                           part + ((int64_t)h * 2 + 1) * cap};
    const int slot[4] = {0, 1, 3, 4}, j1 = min((b + 1) * B, L);
    for (int t = 0; t < 4; t++) {
        double s = 0;
        for (int j = b * B; j < j1; j++) s += src[t][j];
        est[((int64_t)h * 5 + slot[t]) * nb + b] = (float)s;
    }
}

// The causal entries of p (nb, nb) in row-major order (entry i (i + 1) / 2 + c is row i, column c): their values
// into key, their indices i nb + c into at. Grid nb (a block per row).
__global__ void flex_flatten_causal(float *key, int32_t *at, const float *p, int nb) {
    const int i = blockIdx.x;
    const int64_t t0 = (int64_t)i * (i + 1) / 2;
    for (int c = threadIdx.x; c <= i; c += blockDim.x) key[t0 + c] = p[(int64_t)i * nb + c], at[t0 + c] = i * nb + c;
}

// offs: sequence t of vs begins at t cap (begin[t] = offs[t]) and ends at t cap + L (end[t] = offs[n + t]).
__global__ void flex_offsets(int *offs, int n, int cap, int L) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) offs[t] = t * cap, offs[n + t] = t * cap + L;
}

// cover[t] of sorted sequence t (one block each; descending, L entries at t cap): 1 + how many prefix sums are
// <= gamma times the total (ks_flexprefill_cover). Each thread sums its run of entries in fp64, one thread turns
// the runs' sums into their carries and the total in order, then each thread counts its prefix sums from its
// carry. The sums group differently from the reference's one running sum (a difference of fp64 rounding, far
// below the fp32 scores'); gamma >= 1 counts every entry, as the reference's equal last prefix and total do.
__global__ void flex_cover(int32_t *cover, const float *sorted, int cap, int L, float gamma) {
    __shared__ double carry[FX_COVER_THREADS];
    __shared__ double lim;
    __shared__ int count;
    const int t = threadIdx.x, per = (L + FX_COVER_THREADS - 1) / FX_COVER_THREADS;
    const int j0 = min(t * per, L), j1 = min(j0 + per, L);
    if (gamma >= 1.0f) {
        if (t == 0) cover[blockIdx.x] = L + 1;
        return;
    }
    const float *x = sorted + (int64_t)blockIdx.x * cap;
    double s = 0;
    for (int j = j0; j < j1; j++) s += x[j];
    carry[t] = s;
    __syncthreads();
    if (t == 0) {
        double run = 0;
        for (int i = 0; i < FX_COVER_THREADS; i++) {
            const double v = carry[i];
            carry[i] = run, run += v;
        }
        lim = (double)gamma * run, count = 0;
    }
    __syncthreads();
    double run = carry[t];
    int c = 0;
    for (int j = j0; j < j1; j++) c += (run += x[j]) <= lim;
    atomicAdd(&count, c);
    __syncthreads();
    if (t == 0) cover[blockIdx.x] = count + 1;
}

struct flex_shape {
    int H, Hk, d, B, cap, nb;
    int64_t ld_s; // the score rows' stride: cap in whole 128-byte lines
};

flex_shape shape_of(int H, int Hk, int d, int B, int cap) {
    return flex_shape{H, Hk, d, B, cap, cap / B + 1, ((int64_t)cap + 31) / 32 * 32};
}

// The scores of a slab: G B rows of ld_s per KV group, at least one group, at most kFlexScoreBytes or all.
size_t score_floats(const flex_shape &f) {
    const size_t group = (size_t)(f.H / f.Hk) * f.B * f.ld_s, all = group * f.Hk;
    const size_t most = kFlexScoreBytes / 4 / group * group;
    return most < group ? group : most > all ? all : most;
}

size_t sort_bytes(const flex_shape &f) {
    size_t bytes = 0;
    const int n = 2 * f.H;
    cub::DeviceSegmentedSort::SortKeysDescending(NULL, bytes, (const float *)NULL, (float *)NULL,
                                                 (int64_t)n * f.cap, n, (const int *)NULL, (const int *)NULL);
    return bytes;
}

// The causal entries of a head's block attention, nb (nb + 1) / 2.
size_t causal_entries(int nb) { return (size_t)nb * (nb + 1) / 2; }

size_t rank_bytes(const flex_shape &f) {
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairsDescending(NULL, bytes, (const float *)NULL, (float *)NULL, (const int32_t *)NULL,
                                              (int32_t *)NULL, (int64_t)causal_entries(f.nb));
    return bytes;
}

// Places w's arrays from base (NULL: sizes only); returns the bytes they span.
size_t flex_layout(ks_cuda_flex_work *w, unsigned char *base, const flex_shape &f) {
    size_t at = 0;
    auto take = [&](size_t bytes) -> void * {
        void *p = base ? base + at : NULL;
        at += (bytes + 255) & ~(size_t)255;
        return p;
    };
    const size_t H = f.H, nb = f.nb, cap = f.cap;
    w->s_floats = score_floats(f);
    w->sort_bytes = sort_bytes(f);
    w->rank_bytes = rank_bytes(f);
    w->q = (ks_bf16 *)take(H * f.B * f.d * 2);
    w->s = (float *)take(w->s_floats * 4);
    w->vs = (float *)take(2 * H * cap * 4);
    w->sorted = (float *)take(2 * H * cap * 4);
    w->part = (float *)take(2 * H * cap * 4);
    w->offsets = (int *)take(4 * H * 4);
    w->sort_tmp = take(w->sort_bytes);
    w->qbar = (float *)take(H * f.d * 4);
    w->km = (float *)take((size_t)f.Hk * nb * f.d * 4);
    w->qm = (float *)take(nb * f.d * 4);
    w->est = (float *)take(H * 5 * nb * 4);
    w->cover = (int32_t *)take(2 * H * 4);
    w->p = (float *)take(nb * nb * 4);
    const size_t ce = causal_entries(f.nb);
    w->rank_v = (float *)take(2 * ce * 4);
    w->rank_at = (int32_t *)take(2 * ce * 4);
    w->rank_tmp = take(w->rank_bytes);
    w->H = f.H, w->Hk = f.Hk, w->d = f.d, w->block = f.B, w->cap = f.cap;
    return at;
}

} // namespace

extern "C" size_t ks_cuda_flex_work_bytes(int H, int Hk, int d, int block, int cap) {
    ks_cuda_flex_work w;
    return flex_layout(&w, NULL, shape_of(H, Hk, d, block, cap));
}

extern "C" void ks_cuda_flex_work_place(ks_cuda_flex_work *w, void *base, int H, int Hk, int d, int block, int cap) {
    flex_layout(w, (unsigned char *)base, shape_of(H, Hk, d, block, cap));
}

namespace {

// Steps 1 and 2: the scores of the last block, slab by slab, into vertical, slash and the coverage masses.
ks_status flex_scores(ks_cuda_gemm_t *gemm, const ks_cuda_flex_work *w, const bf16 *q, int64_t ld_q, const bf16 *kc,
                      int kc_cap, const ks_flexprefill_args *a, cudaStream_t s) {
    const flex_shape f = shape_of(w->H, w->Hk, w->d, w->block, w->cap);
    const int B = a->block, d = a->d, L = a->L, G = a->H / a->Hk;
    const int64_t group = (int64_t)G * B * f.ld_s;
    const int per_slab = (int)(w->s_floats / group);
    // the columns up to L, rounded up to 512 inside the cache and the score rows so that prompts share a few GEMM
    // shapes (plans)
    const int cols = min((L + 511) / 512 * 512, min(kc_cap, w->cap));
    for (int g0 = 0; g0 < a->Hk; g0 += per_slab) {
        const int ng = min(per_slab, a->Hk - g0);
        for (int g = g0; g < g0 + ng; g++)
            KS_TRY(ks_cuda_gemm_run_ld(gemm, w->s + (int64_t)(g - g0) * group, f.ld_s, KS_DTYPE_F32,
                                       w->q + (int64_t)g * G * B * d, d,
                                       reinterpret_cast<const ks_bf16 *>(kc + (int64_t)g * kc_cap * d), NULL, G * B, d,
                                       cols, 0.0f, s));
        flex_probs<<<dim3(B, ng * G), FX_THREADS, 0, s>>>(w->s, f.ld_s, B, d, L);
        KS_LAUNCH_CHECK();
        flex_columns<<<dim3(ks_cdiv(L, FX_THREADS), ng * G), FX_THREADS, 0, s>>>(w->vs, w->part, w->s, f.ld_s, g0 * G,
                                                                                 a->H, B, L, w->cap);
        KS_LAUNCH_CHECK();
    }
    return KS_OK;
}

// Every estimate the choice reads into w->est and w->cover (the covers unless force_density).
ks_status flex_estimate(ks_cuda_gemm_t *gemm, const ks_cuda_flex_work *w, const bf16 *q, int64_t ld_q,
                        const bf16 *kc, int kc_cap, const ks_flexprefill_args *a, cudaStream_t s) {
    const int H = a->H, B = a->block, d = a->d, L = a->L, nb = ks_flexprefill_blocks(a);
    const int64_t vec = (int64_t)H * B * d;
    flex_last_q<<<(unsigned)min(ks_cdiv(vec, FX_THREADS), 65535), FX_THREADS, 0, s>>>(reinterpret_cast<bf16 *>(w->q),
                                                                                       q, ld_q, H, B, d, L);
    KS_LAUNCH_CHECK();
    flex_qbar<<<ks_cdiv((int64_t)H * d, FX_THREADS), FX_THREADS, 0, s>>>(w->qbar, q, ld_q, H, B, d, L);
    KS_LAUNCH_CHECK();
    flex_block_means<<<dim3(nb, a->Hk), 128, 0, s>>>(w->km, kc, d, (int64_t)kc_cap * d, L, B, d, nb, 1.0f);
    KS_LAUNCH_CHECK();
    KS_TRY(flex_scores(gemm, w, q, ld_q, kc, kc_cap, a, s));
    flex_pool<<<dim3(ks_cdiv(nb, 128), H), 128, 0, s>>>(w->est, w->vs, w->part, H, B, L, nb, w->cap);
    KS_LAUNCH_CHECK();
    flex_softmax_rows<<<H, 128, 0, s>>>(w->est + 2 * nb, 5 * (int64_t)nb, w->qbar, d, w->km, (int64_t)nb * d,
                                        H / a->Hk, d, nb, 0);
    KS_LAUNCH_CHECK();
    if (a->force_density > 0) return KS_OK;
    const int n = 2 * H;
    flex_offsets<<<ks_cdiv(n, 128), 128, 0, s>>>(w->offsets, n, w->cap, L);
    KS_LAUNCH_CHECK();
    size_t bytes = w->sort_bytes;
    CUDA_CHECK(cub::DeviceSegmentedSort::SortKeysDescending(w->sort_tmp, bytes, (const float *)w->vs, w->sorted,
                                                            (int64_t)n * w->cap, n, (const int *)w->offsets,
                                                            (const int *)w->offsets + n, s));
    flex_cover<<<n, FX_COVER_THREADS, 0, s>>>(w->cover, w->sorted, w->cap, L, a->gamma);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

// Query head h's block attention ranked (ks_flexprefill_rank_causal) into v and at (host, nb (nb + 1) / 2 each):
// its block mean queries scaled by 1 / sqrt(d), each row's softmax over its causal blocks, the causal entries
// flattened and sorted.
ks_status flex_rank_head(float *v, int32_t *at, const ks_cuda_flex_work *w, const bf16 *q, int64_t ld_q, int h,
                         const ks_flexprefill_args *a, cudaStream_t s) {
    const int nb = ks_flexprefill_blocks(a), d = a->d, g = h / (a->H / a->Hk);
    const size_t n = causal_entries(nb);
    flex_block_means<<<dim3(nb, 1), 128, 0, s>>>(w->qm, q + (int64_t)h * d, ld_q, 0, a->L, a->block, d, nb,
                                                 sqrtf((float)d));
    KS_LAUNCH_CHECK();
    flex_softmax_rows<<<nb, 128, 0, s>>>(w->p, nb, w->qm, d, w->km + (int64_t)g * nb * d, 0, nb + 1, d, 1, 1);
    KS_LAUNCH_CHECK();
    flex_flatten_causal<<<nb, 128, 0, s>>>(w->rank_v, w->rank_at, w->p, nb);
    KS_LAUNCH_CHECK();
    size_t bytes = w->rank_bytes;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(w->rank_tmp, bytes, (const float *)w->rank_v,
                                                         w->rank_v + n, (const int32_t *)w->rank_at, w->rank_at + n,
                                                         (int64_t)n, 0, 32, s));
    CUDA_CHECK(cudaMemcpyAsync(v, w->rank_v + n, sizeof(float) * n, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaMemcpyAsync(at, w->rank_at + n, sizeof(int32_t) * n, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return KS_OK;
}

// The scored queries' mass on the blocks their rows list (the reference's coverage), from the masses m0, m1
// (nb) of the scored rows in query blocks nb - 2 and nb - 1.
float flex_coverage(const uint8_t *mask, const float *m0, const float *m1, int nb, int B) {
    double sum = 0;
    for (int c = 0; c < nb - 1; c++) sum += mask[(size_t)(nb - 2) * nb + c] ? m0[c] : 0.0f;
    for (int c = 0; c < nb; c++) sum += mask[(size_t)(nb - 1) * nb + c] ? m1[c] : 0.0f;
    return (float)(sum / B);
}

// The host's part: each head's choice from the estimates est (H, 5, nb) and cover (2 H).
ks_status flex_choose(ks_block_list *l, ks_flexprefill_stat *stats, const float *est, const int32_t *cover,
                      const ks_cuda_flex_work *w, const bf16 *q, int64_t ld_q, const ks_flexprefill_args *a,
                      cudaStream_t s) {
    const int nb = ks_flexprefill_blocks(a);
    const size_t n = causal_entries(nb);
    uint8_t *mask = (uint8_t *)malloc((size_t)nb * nb);
    float *rank_v = (float *)malloc(sizeof(float) * n);
    int32_t *rank_at = (int32_t *)malloc(sizeof(int32_t) * n);
    if (!mask || !rank_v || !rank_at) {
        free(mask), free(rank_v), free(rank_at);
        return ks_fail(KS_ERR_NOMEM, "FlexPrefill on cuda: out of host memory for %d x %d block masks", nb, nb);
    }
    l->block = a->block, l->H = a->H, l->qb0 = 0, l->n_qblocks = nb;
    l->row_start[0] = 0;
    int32_t off = 0;
    ks_status st = KS_OK;
    for (int h = 0; h < a->H && st == KS_OK; h++) {
        const float *e = est + (size_t)h * 5 * nb;
        ks_flexprefill_stat r = ks_flexprefill_decide(e + 2 * nb, e, cover[h], cover[a->H + h], a);
        if (r.pattern == KS_FLEX_QUERY_AWARE) st = flex_rank_head(rank_v, rank_at, w, q, ld_q, h, a, s);
        if (st != KS_OK) break;
        ks_flexprefill_mark(mask, &r, e, e + nb, rank_v, rank_at, a);
        ks_flexprefill_emit(l, &r, mask, h, nb, &off);
        r.coverage = flex_coverage(mask, e + 3 * nb, e + 4 * nb, nb, a->block);
        if (stats) stats[h] = r;
    }
    free(mask), free(rank_v), free(rank_at);
    return st;
}

} // namespace

extern "C" ks_status ks_cuda_flex_blocks(ks_cuda_gemm_t *gemm, const ks_cuda_flex_work *w, const ks_bf16 *q,
                                         int64_t ld_q, const ks_bf16 *kc, int kc_cap, const ks_flexprefill_args *a,
                                         ks_block_list *l, ks_flexprefill_stat *stats, cudaStream_t s) {
    KS_ASSERT(a->H == w->H && a->Hk == w->Hk && a->d == w->d && a->block == w->block && a->L <= w->cap &&
              a->L <= kc_cap && a->d % 8 == 0);
    if (ks_flexprefill_is_dense(a)) {
        ks_flexprefill_list_full(l, stats, a);
        return KS_OK;
    }
    const int nb = ks_flexprefill_blocks(a);
    const size_t n_est = (size_t)a->H * 5 * nb;
    float *est = (float *)malloc(sizeof(float) * n_est);
    int32_t *cover = (int32_t *)calloc((size_t)2 * a->H, sizeof(int32_t));
    ks_status st = est && cover ? KS_OK : ks_fail(KS_ERR_NOMEM, "FlexPrefill on cuda: out of host memory");
    const bf16 *qd = reinterpret_cast<const bf16 *>(q);
    if (st == KS_OK) st = flex_estimate(gemm, w, qd, ld_q, reinterpret_cast<const bf16 *>(kc), kc_cap, a, s);
    if (st == KS_OK) {
        cudaError_t e = cudaMemcpyAsync(est, w->est, sizeof(float) * n_est, cudaMemcpyDeviceToHost, s);
        if (e == cudaSuccess && !(a->force_density > 0))
            e = cudaMemcpyAsync(cover, w->cover, sizeof(int32_t) * 2 * a->H, cudaMemcpyDeviceToHost, s);
        if (e == cudaSuccess) e = cudaStreamSynchronize(s);
        if (e != cudaSuccess)
            st = ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (FlexPrefill estimates)", cudaGetErrorString(e));
    }
    if (st == KS_OK) st = flex_choose(l, stats, est, cover, w, qd, ld_q, a, s);
    free(est), free(cover);
    return st;
}
