// flex_estimate.cu — FlexPrefill's estimation and choice on the GPU (ks_cuda_methods.h: ks_cuda_flex_blocks; the
// algorithm and its reference: cpu/flexprefill_ref.h). Everything runs on the device; only the per-head records
// cross to the host, after the one wait:
//   1. flex_last_q, flex_qbar, flex_block_means: the last B queries (H, B, d), their scaled mean, the block mean
//      keys (Hk, nb, d);
//   2. per slab of KV groups, the G B last queries of a group against its keys as one cuBLASLt GEMM (tensor
//      cores, the cache as the operand in place); flex_row_stats: each scored row's softmax max and denominator
//      in one online pass; flex_columns: vertical and slash (fp32 probabilities recomputed from the dots, fp64
//      sums over the rows in the reference's order) and each column's mass from the scored rows of the last two
//      query blocks (the coverage). No probability matrix is written;
//   3. flex_pool: v_b, s_b and the coverage masses per key block; flex_softmax_rows: a_blk;
//   4. the covers: vertical and slash sorted descending (cub's segmented sort), flex_cover: the prefix sums in
//      fp64 counted against gamma times the total;
//   5. flex_decide: per head d_JS, the pattern against tau and the counts (step 3, the literal // 128);
//   6. the block set of every head as a bit mask (H, nb, words): force_density's rows by a radix select per row
//      (flex_forced); else the query-aware heads' block attention (flex_block_attention), ranked by one cub
//      segmented radix sort over the heads of a slab (stable, descending: ties to the lower row, then column)
//      and filled to gamma (flex_fill), then the vertical and slash picks (flex_pick: rank by counting, ties to
//      the lower index) marked with column 0 and the diagonal (flex_mark);
//   7. the list: each row's count (flex_row_counts), the CSR offsets (ks_rows_offsets), the columns (flex_emit),
//      and the records (flex_records: blocks, sparsity, coverage).
// The GEMM accumulates in fp32 and the probabilities are fp32 exponentials, so the estimates match the
// reference's to rounding; the sums over many terms are fp64 (parallel where the reference's order would be one
// long chain: the denominators, d_JS, the covers, the query-aware fill), the rankings and ties are the
// reference's. A choice can differ from the reference's only where an estimate sits within rounding of a
// threshold or a tie.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <cub/device/device_segmented_sort.cuh>

#include "cuda/block_rows.cuh"
#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

extern "C" {
#include "cpu/flexprefill_ref.h"
}

namespace {

constexpr int FX_THREADS = 256, FX_COVER_THREADS = 1024, FX_ROWS_PER_BLOCK = 128;

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

// Entry c of the mean of block b's rows of x (row j at x + j ld; rows below L), divided by div: the
// reference's block_means (fp64 sum in row order).
__device__ float block_mean(const bf16 *x, int64_t ld, int b, int c, int L, int B, float div) {
    const int j1 = min((b + 1) * B, L);
    double s = 0;
    for (int j = b * B; j < j1; j++) s += __bfloat162float(x[(int64_t)j * ld + c]);
    return (float)(s / (j1 - b * B)) / div;
}

// out (heads, nb, d): the block mean keys (head g's row j at x + g hs + j ld). Grid (nb, heads).
__global__ void flex_block_means(float *out, const bf16 *x, int64_t ld, int64_t hs, int L, int B, int d, int nb) {
    const int b = blockIdx.x, g = blockIdx.y;
    for (int c = threadIdx.x; c < d; c += blockDim.x)
        out[((int64_t)g * nb + b) * d + c] = block_mean(x + (int64_t)g * hs, ld, b, c, L, B, 1.0f);
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

// Head h's a_blk (est slot 2, grid H, one block each): the softmax over the nb block mean keys of its group of
// qbar[h] . key (fp64 dots in order, rounded to fp32; fp32 max; fp64 denominator): the reference's softmax_dots.
__global__ void flex_a_blk(float *est, const float *qbar, const float *km, int G, int d, int nb) {
    __shared__ float shf[FX_THREADS / 32];
    __shared__ double shd[FX_THREADS / 32];
    const int h = blockIdx.x;
    float *o = est + ((int64_t)h * 5 + 2) * nb;
    const float *v = qbar + (int64_t)h * d, *kr = km + (int64_t)(h / G) * nb * d;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < nb; j += blockDim.x) {
        double s = 0;
        for (int c = 0; c < d; c++) s += (double)v[c] * kr[(int64_t)j * d + c];
        o[j] = (float)s;
        mx = fmaxf(mx, o[j]);
    }
    mx = block_max(mx, shf);
    double den = 0;
    for (int j = threadIdx.x; j < nb; j += blockDim.x) den += exp((double)o[j] - mx);
    den = block_sum(den, shd);
    for (int j = threadIdx.x; j < nb; j += blockDim.x) o[j] = (float)(exp((double)o[j] - mx) / den);
}

// Scored row i of the slab's head (grid (B, heads), head h0 + blockIdx.y): the softmax max of x = s / sqrt(d)
// over columns j <= pos = L - B + i and 1 / its denominator (fp32 exponentials summed in fp64), in one online
// pass over the dots, into rs[h B + i].
__global__ void flex_row_stats(float2 *rs, const float *sc, int64_t ld_s, int h0, int B, int d, int L) {
    __shared__ float shf[FX_THREADS / 32];
    __shared__ double shd[FX_THREADS / 32];
    const int i = blockIdx.x, pos = L - B + i;
    const float *row = sc + ((int64_t)blockIdx.y * B + i) * ld_s;
    const float root = sqrtf((float)d);
    float m = -INFINITY;
    double sum = 0;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
        const float x = row[j] / root;
        if (x > m) sum *= (double)expf(m - x), m = x;
        sum += (double)expf(x - m);
    }
    const float M = block_max(m, shf);
    const double S = block_sum(m == -INFINITY ? 0.0 : sum * (double)expf(m - M), shd);
    if (threadIdx.x == 0) rs[(int64_t)(h0 + blockIdx.y) * B + i] = make_float2(M, (float)(1.0 / S));
}

// Column j of the slab's head (grid (L / threads, heads), head h = h0 + blockIdx.y; B float2 of shared memory):
// vertical[j] and slash[j] (the reference's vertical_slash: fp64 sums over the rows in order, divided by B) into
// vs (2 H, cap), and the column's mass from the scored rows in query block nb - 2, then nb - 1, into part (H, 2,
// cap). Each probability is expf(s / sqrt(d) - max) / den from the row's statistics.
__global__ void flex_columns(float *vs, float *part, const float *sc, const float2 *rs, int64_t ld_s, int h0, int H,
                             int B, int d, int L, int cap) {
    extern __shared__ float2 st[];
    const int j = blockIdx.x * blockDim.x + threadIdx.x, h = h0 + blockIdx.y;
    for (int i = threadIdx.x; i < B; i += blockDim.x) st[i] = rs[(int64_t)h * B + i];
    __syncthreads();
    if (j >= L) return;
    const float *P = sc + (int64_t)blockIdx.y * B * ld_s;
    const float root = sqrtf((float)d);
    const int nb = (L + B - 1) / B;
    double v = 0, sl = 0, m[2] = {0, 0}; // m: the rows in query block nb - 2, then nb - 1
    for (int i = 0; i < B; i++) {
        const float2 r = st[i];
        const float p = j <= L - B + i ? expf(P[(int64_t)i * ld_s + j] / root - r.x) * r.y : 0.0f;
        v += p;
        m[(L - B + i) / B - (nb - 2)] += p;
        if (i >= B - 1 - j) sl += expf(P[(int64_t)i * ld_s + j - B + 1 + i] / root - r.x) * r.y;
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

// offs: sequence t of vs begins at t cap (begin[t] = offs[t]) and ends at t cap + L (end[t] = offs[n + t]).
__global__ void flex_offsets(int *offs, int n, int cap, int L) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) offs[t] = t * cap, offs[n + t] = t * cap + L;
}

// How many of x's (n, descending, >= 0) prefix sums are <= gamma times the total, by the whole block
// (FX_COVER_THREADS threads; every thread returns it): each thread sums its run of entries in fp64, one thread
// turns the runs' sums into their carries and the total in order, then each thread counts its prefix sums from
// its carry. The sums group differently from the reference's one running sum (a difference of fp64 rounding, far
// below the fp32 entries'); gamma >= 1 counts every entry, as the reference's equal last prefix and total do.
__device__ int leading_count(const float *x, int n, float gamma) {
    __shared__ double carry[FX_COVER_THREADS];
    __shared__ double lim;
    __shared__ int count;
    if (gamma >= 1.0f) return n;
    const int t = threadIdx.x, per = (n + FX_COVER_THREADS - 1) / FX_COVER_THREADS;
    const int j0 = min(t * per, n), j1 = min(j0 + per, n);
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
    const int total = count;
    __syncthreads();
    return total;
}

// cover[t] of sorted sequence t (one block each, L entries at t cap): 1 + leading_count (ks_flexprefill_cover).
__global__ void flex_cover(int32_t *cover, const float *sorted, int cap, int L, float gamma) {
    const int c = leading_count(sorted + (int64_t)blockIdx.x * cap, L, gamma);
    if (threadIdx.x == 0) cover[blockIdx.x] = c + 1;
}

// The choice's knobs (ks_flexprefill_args in blocks).
struct flex_knobs {
    int nb, words;   // blocks; 32-bit words of a mask row
    int mb, Mb;      // the count bounds of step 3
    float gamma, tau;
    float force;     // force_density
};

// ks_flexprefill_count on the device: cover / 128 + 1, raised to mb, then lowered to Mb.
__device__ int count_of(int cover, const flex_knobs &k) {
    return min(max(cover / KS_FLEXPREFILL_COUNT_DIV + 1, k.mb), k.Mb);
}

// Head h's decision (grid H): d_JS of a_blk and v_b (fp64, a fixed-order block sum), the pattern, n_v and n_s
// (ks_flexprefill_decide) into rec[h], the rest of the record 0.
__global__ void flex_decide(ks_flexprefill_stat *rec, const float *est, const int32_t *cover, int H, flex_knobs k) {
    __shared__ double shd[FX_THREADS / 32];
    const int h = blockIdx.x;
    const float *v_b = est + (int64_t)h * 5 * k.nb, *a_blk = v_b + 2 * k.nb;
    double acc = 0;
    for (int i = threadIdx.x; i < k.nb; i += blockDim.x) {
        const float p = a_blk[i], q = v_b[i];
        const double m = ((double)p + q) / 2;
        if (p > 0) acc += 0.5 * p * log(p / m);
        if (q > 0) acc += 0.5 * q * log(q / m);
    }
    const double js = block_sum(acc, shd);
    if (threadIdx.x) return;
    ks_flexprefill_stat st = {};
    st.d_js = (float)sqrt(js > 0 ? js : 0);
    if (k.force > 0) {
        st.pattern = KS_FLEX_FORCED;
    } else if (st.d_js < k.tau) {
        st.pattern = KS_FLEX_QUERY_AWARE, st.n_v = st.n_s = k.mb;
    } else {
        st.pattern = KS_FLEX_VERTICAL_SLASH;
        st.n_v = count_of(cover[h], k), st.n_s = count_of(cover[H + h], k);
    }
    rec[h] = st;
}

// Sets bit c of mask row `row` (atomically: several kernels' threads may share a word).
__device__ __forceinline__ void mark(uint32_t *row, int c) { atomicOr(row + (c >> 5), 1u << (c & 31)); }

// force_density's row i of head h (grid (nb, H), shared: nb keys): column 0, the diagonal and the columns c of
// the best v_b[c] + s_b[nb - 1 - (i - c)] (ties to the lower c) until the row holds ceil(f (i + 1)) blocks
// (ks_flexprefill_mark_forced). The k best by a radix select of the scores' bits (sums of probabilities, >= +0,
// so their bits order as the floats), 8 bits a pass; then the ties at the k-th in column order.
__global__ void flex_forced(uint32_t *mask, const float *est, flex_knobs k) {
    extern __shared__ uint32_t key[];
    __shared__ unsigned hist[256];
    __shared__ uint32_t pre, pmask;
    __shared__ int left, carry;
    using scan = cub::BlockScan<int, FX_THREADS>;
    __shared__ typename scan::TempStorage tmp;
    const int i = blockIdx.x, h = blockIdx.y, nb = k.nb, tid = threadIdx.x;
    uint32_t *row = mask + ((int64_t)h * nb + i) * k.words;
    if (tid == 0) mark(row, 0), mark(row, i);
    const int n = i - 1, want = (int)ceilf(k.force * (float)(i + 1)), best = min(want - 2, n); // candidates 1 .. i - 1
    if (i < 2 || best <= 0) return;
    const float *v_b = est + (int64_t)h * 5 * nb, *s_b = v_b + nb;
    for (int t = tid; t < n; t += blockDim.x) key[t] = __float_as_uint(v_b[t + 1] + s_b[nb - 1 - (i - t - 1)]);
    if (tid == 0) pre = 0, pmask = 0, left = best, carry = 0;
    __syncthreads();
    for (int shift = 24; shift >= 0; shift -= 8) {
        hist[tid] = 0; // FX_THREADS == 256 bins
        __syncthreads();
        for (int t = tid; t < n; t += blockDim.x)
            if ((key[t] & pmask) == pre) atomicAdd(&hist[(key[t] >> shift) & 255], 1u);
        __syncthreads();
        if (tid == 0) {
            int cum = 0, dg = 255;
            while (cum + (int)hist[dg] < left) cum += hist[dg--];
            pre |= (uint32_t)dg << shift, pmask |= 255u << shift, left -= cum;
        }
        __syncthreads();
    }
    const uint32_t T = pre; // the best-th score; `left` of its ties are kept, the lowest columns first
    for (int base = 0; base < n; base += blockDim.x) {
        const int t = base + tid, tie = t < n && key[t] == T;
        int at, ties;
        scan(tmp).ExclusiveSum(tie, at, ties);
        if (t < n && (key[t] > T || (tie && carry + at < left))) mark(row, t + 1);
        __syncthreads();
        if (tid == 0) carry += ties;
        __syncthreads();
    }
}

// Head h's vertical and slash picks (grid H, shared 2 nb floats; ks_flexprefill_mark_vertical_slash): the
// top-(n_v - 1) vertical blocks other than 0 and the top-(n_s - 1) slash blocks other than nb - 1, ties to the
// lower index, each ranked by counting; into sel (H, 2, nb + 1): the count, then the vertical columns, and the
// count, then the slash offsets nb - 1 - b.
__global__ void flex_pick(int32_t *sel, const ks_flexprefill_stat *rec, const float *est, int nb) {
    extern __shared__ float x[];
    unsigned char *keep = reinterpret_cast<unsigned char *>(x + 2 * nb);
    const int h = blockIdx.x;
    const ks_flexprefill_stat st = rec[h];
    for (int i = threadIdx.x; i < 2 * nb; i += blockDim.x) x[i] = est[(int64_t)h * 5 * nb + i];
    __syncthreads();
    for (int e = threadIdx.x; e < 2 * nb; e += blockDim.x) {
        const int kind = e / nb, b = e % nb, skip = kind ? nb - 1 : 0, top = (kind ? st.n_s : st.n_v) - 1;
        const float *v = x + kind * nb, xb = v[b];
        int rank = 0;
        for (int j = 0; j < nb && rank < top; j++) rank += j != skip && (v[j] > xb || (v[j] == xb && j < b));
        keep[e] = b != skip && rank < top;
    }
    __syncthreads();
    if (threadIdx.x >= 2) return;
    const int kind = threadIdx.x;
    int32_t *out = sel + ((int64_t)h * 2 + kind) * (nb + 1), n = 0;
    for (int b = 0; b < nb; b++)
        if (keep[kind * nb + b]) out[1 + n++] = kind ? nb - 1 - b : b;
    out[0] = n;
}

// Rows of head h (grid (nb / FX_ROWS_PER_BLOCK, H), a thread per row), unless FORCED: column 0, the diagonal, each
// picked vertical column v <= i and each picked slash offset s <= i (column i - s).
__global__ void flex_mark(uint32_t *mask, const int32_t *sel, const ks_flexprefill_stat *rec, flex_knobs k) {
    const int h = blockIdx.y, i = blockIdx.x * blockDim.x + threadIdx.x, nb = k.nb;
    if (i >= nb || rec[h].pattern == KS_FLEX_FORCED) return;
    uint32_t *row = mask + ((int64_t)h * nb + i) * k.words;
    const int32_t *v = sel + (int64_t)h * 2 * (nb + 1), *s = v + nb + 1;
    mark(row, 0), mark(row, i);
    for (int t = 1; t <= v[0]; t++)
        if (v[t] <= i) mark(row, v[t]);
    for (int t = 1; t <= s[0]; t++)
        if (s[t] <= i) mark(row, i - s[t]);
}

// The causal entries of a head's block attention, nb (nb + 1) / 2.
__host__ __device__ int64_t causal_entries(int nb) { return (int64_t)nb * (nb + 1) / 2; }

// Row i of the block attention of query-aware head h0 + blockIdx.y (grid (nb, heads); shared d floats): block
// i's mean query scaled by 1 / sqrt(d) against the block mean keys c <= i of its group, softmax over those
// (fp64 dots in order, fp32 max, fp64 denominator), flattened in row-major causal order: values into key (at
// slab head y, entry i (i + 1) / 2 + c) and their mask indices i nb + c into at.
__global__ void flex_block_attention(float *key, int32_t *at, const ks_flexprefill_stat *rec, const bf16 *q,
                                     int64_t ld_q, const float *km, int h0, int G, int d, int L, int B, int nb) {
    extern __shared__ float qm[];
    __shared__ float shf[FX_THREADS / 32];
    __shared__ double shd[FX_THREADS / 32];
    const int i = blockIdx.x, h = h0 + blockIdx.y;
    if (rec[h].pattern != KS_FLEX_QUERY_AWARE) return;
    for (int c = threadIdx.x; c < d; c += blockDim.x) qm[c] = block_mean(q + (int64_t)h * d, ld_q, i, c, L, B, sqrtf((float)d));
    __syncthreads();
    const int64_t t0 = blockIdx.y * causal_entries(nb) + causal_entries(i);
    float *o = key + t0;
    const float *kr = km + (int64_t)(h / G) * nb * d;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c <= i; c += blockDim.x) {
        double s = 0;
        for (int e = 0; e < d; e++) s += (double)qm[e] * kr[(int64_t)c * d + e];
        o[c] = (float)s, at[t0 + c] = i * nb + c;
        mx = fmaxf(mx, o[c]);
    }
    mx = block_max(mx, shf);
    double den = 0;
    for (int c = threadIdx.x; c <= i; c += blockDim.x) den += exp((double)o[c] - mx);
    den = block_sum(den, shd);
    for (int c = threadIdx.x; c <= i; c += blockDim.x) o[c] = (float)(exp((double)o[c] - mx) / den);
}

// The segmented sort's bounds for the slab's heads: head y's ce entries, or none unless it is query-aware.
__global__ void flex_rank_bounds(int *offs, const ks_flexprefill_stat *rec, int h0, int heads, int64_t ce) {
    const int y = blockIdx.x * blockDim.x + threadIdx.x;
    if (y >= heads) return;
    offs[y] = (int)(y * ce);
    offs[heads + y] = (int)(y * ce + (rec[h0 + y].pattern == KS_FLEX_QUERY_AWARE ? ce : 0));
}

// Query-aware head h0 + blockIdx.x's fill (ks_flexprefill_fill_ranked; FX_COVER_THREADS threads): the ranked
// blocks while the running sum stays <= gamma times the total, marked.
__global__ void flex_fill(uint32_t *mask, const float *v, const int32_t *at, const ks_flexprefill_stat *rec, int h0,
                          flex_knobs k) {
    const int h = h0 + blockIdx.x;
    if (rec[h].pattern != KS_FLEX_QUERY_AWARE) return;
    const int64_t ce = causal_entries(k.nb), off = blockIdx.x * ce;
    const int n = leading_count(v + off, (int)ce, k.gamma);
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const int e = at[off + t];
        mark(mask + ((int64_t)h * k.nb + e / k.nb) * k.words, e % k.nb);
    }
}

// count[r] (rows, a warp each): the blocks row r (= h nb + i) of the mask lists.
__global__ void flex_row_counts(int32_t *count, const uint32_t *mask, int rows, flex_knobs k) {
    const int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (r >= rows) return;
    const uint32_t *row = mask + (int64_t)r * k.words;
    int n = 0;
    for (int w = lane; w < k.words; w += 32) n += __popc(row[w]);
    for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
    if (lane == 0) count[r] = n;
}

// Row r's listed columns, ascending, at cols[row_start[r]] (a warp per row).
__global__ void flex_emit(int32_t *cols, const int32_t *row_start, const uint32_t *mask, int rows, flex_knobs k) {
    const int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (r >= rows) return;
    const uint32_t *row = mask + (int64_t)r * k.words;
    int32_t at = row_start[r];
    for (int w0 = 0; w0 < k.words; w0 += 32) {
        uint32_t bits = w0 + lane < k.words ? row[w0 + lane] : 0;
        const int n = __popc(bits);
        int before = n; // inclusive scan over the lanes
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, before, o);
            if (lane >= o) before += y;
        }
        int32_t *out = cols + at + before - n;
        for (; bits; bits &= bits - 1) *out++ = (w0 + lane) * 32 + __ffs(bits) - 1;
        at += __shfl_sync(0xffffffffu, before, 31);
    }
}

// Head h's record (grid H): blocks and sparsity from the offsets; the coverage from the scored rows' block
// masses m0, m1 (est slots 3, 4) on the blocks rows nb - 2 and nb - 1 list, over B (the reference's coverage).
__global__ void flex_records(ks_flexprefill_stat *rec, const int32_t *row_start, const uint32_t *mask,
                             const float *est, int B, flex_knobs k) {
    __shared__ double shd[FX_THREADS / 32];
    const int h = blockIdx.x, nb = k.nb;
    const float *m0 = est + ((int64_t)h * 5 + 3) * nb, *m1 = m0 + nb;
    const uint32_t *r0 = mask + ((int64_t)h * nb + nb - 2) * k.words, *r1 = r0 + k.words;
    double s = 0;
    for (int c = threadIdx.x; c < nb; c += blockDim.x) {
        if (c < nb - 1 && (r0[c >> 5] >> (c & 31) & 1)) s += m0[c];
        if (r1[c >> 5] >> (c & 31) & 1) s += m1[c];
    }
    s = block_sum(s, shd);
    if (threadIdx.x) return;
    const int64_t blocks = row_start[(h + 1) * nb] - row_start[h * nb];
    rec[h].blocks = blocks;
    rec[h].sparsity = (float)(1.0 - (double)blocks / (double)causal_entries(nb));
    rec[h].coverage = (float)(s / B);
}

// The full list (step 0, DENSE) of H heads' nb rows (grid (nb, H)).
__global__ void flex_full(int32_t *row_start, int32_t *cols, int nb) {
    const int i = blockIdx.x, h = blockIdx.y;
    const int64_t at = h * causal_entries(nb) + causal_entries(i);
    for (int c = threadIdx.x; c <= i; c += blockDim.x) cols[at + c] = c;
    if (threadIdx.x == 0) row_start[(int64_t)h * nb + i + 1] = (int32_t)(at + i + 1);
    if (threadIdx.x == 0 && i == 0 && h == 0) row_start[0] = 0;
}

struct flex_shape {
    int H, Hk, d, B, cap, nb;
    int64_t ld_s; // the score rows' stride: cap in whole 128-byte lines
};

flex_shape shape_of(int H, int Hk, int d, int B, int cap) {
    return flex_shape{H, Hk, d, B, cap, cap / B + 1, ((int64_t)cap + 31) / 32 * 32};
}

// The floats of one KV group's scores: G B rows of ld_s.
size_t group_floats(const flex_shape &f) { return (size_t)(f.H / f.Hk) * f.B * f.ld_s; }

// The scores of a slab: whole KV groups in at most slab bytes, at least one group, at most all.
size_t score_floats(const flex_shape &f, size_t slab) {
    const size_t group = group_floats(f), all = group * f.Hk;
    const size_t most = slab / 4 / group * group;
    return most < group ? group : most > all ? all : most;
}

size_t sort_bytes(const flex_shape &f) {
    size_t bytes = 0;
    const int n = 2 * f.H;
    cub::DeviceSegmentedSort::SortKeysDescending(NULL, bytes, (const float *)NULL, (float *)NULL,
                                                 (int64_t)n * f.cap, n, (const int *)NULL, (const int *)NULL);
    return bytes;
}

// Bytes of the ranking of one query-aware head: its causal entries' values and indices, twice (the sort's
// double buffers).
size_t rank_head_bytes(int nb) { return 16 * (size_t)causal_entries(nb); }

// The region shared by the steps that follow one another: a slab's scores (step 2), the sorted vertical and slash
// (step 4), the ranking of a slab of query-aware heads (step 6; at least one head's at the capacity's nb).
size_t region_bytes(const flex_shape &f, size_t slab) {
    size_t b = score_floats(f, slab) * 4;
    b = b > rank_head_bytes(f.nb) ? b : rank_head_bytes(f.nb);
    const size_t sorted = (size_t)2 * f.H * f.cap * 4;
    return b > sorted ? b : sorted;
}

// The bytes a slab of query-aware heads' ranking may take: the region's, at most slab.
size_t rank_room(const flex_shape &f, size_t slab) {
    const size_t region = region_bytes(f, slab);
    return region < slab ? region : slab;
}

// Query-aware heads ranked at once with nb blocks: the H heads in as few slabs as room allows, at least one head a
// slab (the region holds one head's ranking at any nb up to the capacity's), spread evenly over the slabs (a
// slab's sort takes about as long however many heads it holds).
int rank_heads(int H, size_t room, int nb) {
    const size_t most = room / rank_head_bytes(nb);
    const int fit = most < 1 ? 1 : most < (size_t)H ? (int)most : H, slabs = (H + fit - 1) / fit;
    return (H + slabs - 1) / slabs;
}

// KV groups scored at once: as many as a slab's scores hold.
int score_groups(const ks_cuda_flex_work *w) {
    return (int)(w->s_floats / group_floats(shape_of(w->H, w->Hk, w->d, w->block, w->cap)));
}

size_t rank_bytes(const flex_shape &f, size_t slab) {
    size_t bytes = 0;
    const int heads = rank_heads(f.H, rank_room(f, slab), f.nb);
    cub::DoubleBuffer<float> keys(NULL, NULL);
    cub::DoubleBuffer<int32_t> vals(NULL, NULL);
    cub::DeviceSegmentedRadixSort::SortPairsDescending(NULL, bytes, keys, vals, (int)(heads * causal_entries(f.nb)),
                                                       f.H, (const int *)NULL, (const int *)NULL);
    return bytes;
}

int mask_words(int nb) { return (nb + 31) / 32; }

// Places w's arrays from base (NULL: sizes only); returns the bytes they span.
size_t flex_layout(ks_cuda_flex_work *w, unsigned char *base, const flex_shape &f, size_t slab) {
    size_t at = 0;
    auto take = [&](size_t bytes) -> void * {
        void *p = base ? base + at : NULL;
        at += (bytes + 255) & ~(size_t)255;
        return p;
    };
    const size_t H = f.H, nb = f.nb, cap = f.cap;
    w->s_floats = score_floats(f, slab);
    w->region_bytes = region_bytes(f, slab);
    w->rank_room = rank_room(f, slab);
    w->sort_bytes = sort_bytes(f);
    w->rank_bytes = rank_bytes(f, slab);
    w->q = (ks_bf16 *)take(H * f.B * f.d * 2);
    w->s = (float *)take(w->region_bytes);
    w->rows = take(H * f.B * sizeof(float2));
    w->vs = (float *)take(2 * H * cap * 4);
    w->part = (float *)take(2 * H * cap * 4);
    w->offsets = (int *)take(4 * H * 4);
    w->sort_tmp = take(w->sort_bytes);
    w->rank_tmp = take(w->rank_bytes);
    w->qbar = (float *)take(H * f.d * 4);
    w->km = (float *)take((size_t)f.Hk * nb * f.d * 4);
    w->est = (float *)take(H * 5 * nb * 4);
    w->cover = (int32_t *)take(2 * H * 4);
    w->mask = (uint32_t *)take(H * nb * mask_words(f.nb) * 4);
    w->sel = (int32_t *)take(H * 2 * (nb + 1) * 4);
    w->count = (int32_t *)take(H * nb * 4);
    w->rec = (ks_flexprefill_stat *)take(H * sizeof(ks_flexprefill_stat));
    w->H = f.H, w->Hk = f.Hk, w->d = f.d, w->block = f.B, w->cap = f.cap;
    return at;
}

} // namespace

extern "C" size_t ks_cuda_flex_work_bytes(int H, int Hk, int d, int block, int cap, size_t slab_bytes) {
    ks_cuda_flex_work w;
    return flex_layout(&w, NULL, shape_of(H, Hk, d, block, cap), slab_bytes);
}

extern "C" void ks_cuda_flex_work_place(ks_cuda_flex_work *w, void *base, int H, int Hk, int d, int block, int cap,
                                        size_t slab_bytes) {
    flex_layout(w, (unsigned char *)base, shape_of(H, Hk, d, block, cap), slab_bytes);
}

extern "C" void ks_cuda_flex_slabs(const ks_cuda_flex_work *w, int L, int *score_slabs, int *rank_slabs) {
    const int groups = score_groups(w), heads = rank_heads(w->H, w->rank_room, (L + w->block - 1) / w->block);
    *score_slabs = (w->Hk + groups - 1) / groups;
    *rank_slabs = (w->H + heads - 1) / heads;
}

namespace {

// Steps 1 and 2: the scores of the last block, slab by slab, into vertical, slash and the coverage masses.
ks_status flex_scores(ks_cuda_gemm_t *gemm, const ks_cuda_flex_work *w, const bf16 *kc, int kc_cap,
                      const ks_flexprefill_args *a, cudaStream_t s) {
    const flex_shape f = shape_of(w->H, w->Hk, w->d, w->block, w->cap);
    const int B = a->block, d = a->d, L = a->L, G = a->H / a->Hk;
    const int64_t group = (int64_t)G * B * f.ld_s;
    const int per_slab = score_groups(w);
    float2 *rs = (float2 *)w->rows;
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
        flex_row_stats<<<dim3(B, ng * G), FX_THREADS, 0, s>>>(rs, w->s, f.ld_s, g0 * G, B, d, L);
        KS_LAUNCH_CHECK();
        flex_columns<<<dim3(ks_cdiv(L, FX_THREADS), ng * G), FX_THREADS, sizeof(float2) * B, s>>>(
            w->vs, w->part, w->s, rs, f.ld_s, g0 * G, a->H, B, d, L, w->cap);
        KS_LAUNCH_CHECK();
    }
    return KS_OK;
}

// Steps 1 to 5: every estimate the choice reads into w->est and w->cover (the covers unless force_density), and
// each head's decision into w->rec.
ks_status flex_estimate(ks_cuda_gemm_t *gemm, const ks_cuda_flex_work *w, const bf16 *q, int64_t ld_q,
                        const bf16 *kc, int kc_cap, const ks_flexprefill_args *a, const flex_knobs &k,
                        cudaStream_t s) {
    const int H = a->H, B = a->block, d = a->d, L = a->L, nb = k.nb;
    const int64_t vec = (int64_t)H * B * d;
    flex_last_q<<<(unsigned)min(ks_cdiv(vec, FX_THREADS), 65535), FX_THREADS, 0, s>>>(reinterpret_cast<bf16 *>(w->q),
                                                                                       q, ld_q, H, B, d, L);
    KS_LAUNCH_CHECK();
    flex_qbar<<<ks_cdiv((int64_t)H * d, FX_THREADS), FX_THREADS, 0, s>>>(w->qbar, q, ld_q, H, B, d, L);
    KS_LAUNCH_CHECK();
    flex_block_means<<<dim3(nb, a->Hk), 128, 0, s>>>(w->km, kc, d, (int64_t)kc_cap * d, L, B, d, nb);
    KS_LAUNCH_CHECK();
    KS_TRY(flex_scores(gemm, w, kc, kc_cap, a, s));
    flex_pool<<<dim3(ks_cdiv(nb, 128), H), 128, 0, s>>>(w->est, w->vs, w->part, H, B, L, nb, w->cap);
    KS_LAUNCH_CHECK();
    flex_a_blk<<<H, FX_THREADS, 0, s>>>(w->est, w->qbar, w->km, H / a->Hk, d, nb);
    KS_LAUNCH_CHECK();
    if (!(a->force_density > 0)) {
        const int n = 2 * H;
        float *sorted = w->s; // the region: the scores are spent
        flex_offsets<<<ks_cdiv(n, 128), 128, 0, s>>>(w->offsets, n, w->cap, L);
        KS_LAUNCH_CHECK();
        size_t bytes = w->sort_bytes;
        CUDA_CHECK(cub::DeviceSegmentedSort::SortKeysDescending(w->sort_tmp, bytes, (const float *)w->vs, sorted,
                                                                (int64_t)n * w->cap, n, (const int *)w->offsets,
                                                                (const int *)w->offsets + n, s));
        flex_cover<<<n, FX_COVER_THREADS, 0, s>>>(w->cover, sorted, w->cap, L, a->gamma);
        KS_LAUNCH_CHECK();
    }
    flex_decide<<<H, FX_THREADS, 0, s>>>(w->rec, w->est, w->cover, H, k);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

// Step 6 for the query-aware heads: their block attention ranked and filled, a slab of heads at a time in the
// region.
ks_status flex_query_aware(const ks_cuda_flex_work *w, const bf16 *q, int64_t ld_q, const ks_flexprefill_args *a,
                           const flex_knobs &k, cudaStream_t s) {
    const int nb = k.nb, slab = rank_heads(a->H, w->rank_room, nb);
    const int64_t ce = causal_entries(nb);
    float *v = w->s;
    int32_t *at = (int32_t *)(v + 2 * slab * ce);
    for (int h0 = 0; h0 < a->H; h0 += slab) {
        const int heads = min(slab, a->H - h0), n = (int)(heads * ce);
        flex_block_attention<<<dim3(nb, heads), FX_THREADS, sizeof(float) * a->d, s>>>(
            v, at, w->rec, q, ld_q, w->km, h0, a->H / a->Hk, a->d, a->L, a->block, nb);
        KS_LAUNCH_CHECK();
        flex_rank_bounds<<<ks_cdiv(heads, 128), 128, 0, s>>>(w->offsets, w->rec, h0, heads, ce);
        KS_LAUNCH_CHECK();
        cub::DoubleBuffer<float> keys(v, v + n);
        cub::DoubleBuffer<int32_t> vals(at, at + n);
        size_t bytes = w->rank_bytes;
        CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(w->rank_tmp, bytes, keys, vals, n, heads,
                                                                      (const int *)w->offsets,
                                                                      (const int *)w->offsets + heads, 0, 32, s));
        flex_fill<<<heads, FX_COVER_THREADS, 0, s>>>(w->mask, keys.Current(), vals.Current(), w->rec, h0, k);
        KS_LAUNCH_CHECK();
    }
    return KS_OK;
}

// Steps 6 and 7: every head's block set into w->mask, then the list into l and the records into w->rec.
ks_status flex_choose(const ks_cuda_flex_work *w, const bf16 *q, int64_t ld_q, const ks_flexprefill_args *a,
                      const flex_knobs &k, const ks_block_list *l, cudaStream_t s) {
    const int H = a->H, nb = k.nb, rows = H * nb;
    CUDA_CHECK(cudaMemsetAsync(w->mask, 0, sizeof(uint32_t) * rows * k.words, s));
    if (a->force_density > 0) {
        const size_t smem = sizeof(uint32_t) * nb;
        if (smem > 32 * 1024)
            return ks_fail(KS_ERR_UNSUPPORTED, "FlexPrefill on cuda: %d key blocks per row exceed force_density's "
                                               "shared memory", nb);
        flex_forced<<<dim3(nb, H), FX_THREADS, smem, s>>>(w->mask, w->est, k);
        KS_LAUNCH_CHECK();
    } else {
        const size_t smem = (sizeof(float) + 1) * 2 * nb;
        if (smem > 48 * 1024)
            return ks_fail(KS_ERR_UNSUPPORTED, "FlexPrefill on cuda: %d key blocks exceed the picks' shared memory",
                           nb);
        KS_TRY(flex_query_aware(w, q, ld_q, a, k, s));
        flex_pick<<<H, FX_THREADS, smem, s>>>(w->sel, w->rec, w->est, nb);
        KS_LAUNCH_CHECK();
        flex_mark<<<dim3(ks_cdiv(nb, FX_ROWS_PER_BLOCK), H), FX_ROWS_PER_BLOCK, 0, s>>>(w->mask, w->sel, w->rec, k);
        KS_LAUNCH_CHECK();
    }
    const int warps = FX_THREADS / 32;
    flex_row_counts<<<ks_cdiv(rows, warps), FX_THREADS, 0, s>>>(w->count, w->mask, rows, k);
    KS_LAUNCH_CHECK();
    KS_TRY(ks_rows_offsets(l->row_start, w->count, rows, s));
    flex_emit<<<ks_cdiv(rows, warps), FX_THREADS, 0, s>>>(l->cols, l->row_start, w->mask, rows, k);
    KS_LAUNCH_CHECK();
    flex_records<<<H, FX_THREADS, 0, s>>>(w->rec, l->row_start, w->mask, w->est, a->block, k);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

ks_status wait(cudaStream_t s, const char *what) {
    const cudaError_t e = cudaStreamSynchronize(s);
    return e == cudaSuccess ? KS_OK : ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (%s)", cudaGetErrorString(e), what);
}

flex_knobs knobs_of(const ks_flexprefill_args *a) {
    const int nb = ks_flexprefill_blocks(a), mb = (a->min_budget + a->block - 1) / a->block;
    int Mb = nb;
    if (a->max_budget > 0) {
        const int64_t m = ((int64_t)a->max_budget + a->block - 1) / a->block;
        Mb = m < nb ? (int)m : nb;
    }
    return flex_knobs{nb, mask_words(nb), mb, Mb, a->gamma, a->tau, a->force_density};
}

} // namespace

extern "C" ks_status ks_cuda_flex_blocks(ks_cuda_gemm_t *gemm, const ks_cuda_flex_work *w, const ks_bf16 *q,
                                         int64_t ld_q, const ks_bf16 *kc, int kc_cap, const ks_flexprefill_args *a,
                                         ks_block_list *l, ks_flexprefill_stat *stats, cudaStream_t s) {
    KS_ASSERT(a->H == w->H && a->Hk == w->Hk && a->d == w->d && a->block == w->block && a->L <= w->cap &&
              a->L <= kc_cap && a->d % 8 == 0);
    const int nb = ks_flexprefill_blocks(a);
    l->block = a->block, l->H = a->H, l->qb0 = 0, l->n_qblocks = nb, l->resident = 1;
    if (ks_flexprefill_is_dense(a)) {
        flex_full<<<dim3(nb, a->H), 128, 0, s>>>(l->row_start, l->cols, nb);
        KS_LAUNCH_CHECK();
        ks_flexprefill_stat dense = {};
        dense.pattern = KS_FLEX_DENSE, dense.blocks = causal_entries(nb), dense.coverage = 1;
        for (int h = 0; h < a->H && stats; h++) stats[h] = dense;
        return wait(s, "FlexPrefill full list");
    }
    const flex_knobs k = knobs_of(a);
    const bf16 *qd = reinterpret_cast<const bf16 *>(q);
    KS_TRY(flex_estimate(gemm, w, qd, ld_q, reinterpret_cast<const bf16 *>(kc), kc_cap, a, k, s));
    KS_TRY(flex_choose(w, qd, ld_q, a, k, l, s));
    if (stats)
        CUDA_CHECK(cudaMemcpyAsync(stats, w->rec, sizeof(ks_flexprefill_stat) * a->H, cudaMemcpyDeviceToHost, s));
    return wait(s, "FlexPrefill block lists");
}
