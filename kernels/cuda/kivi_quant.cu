// kivi_quant.cu — KIVI's flush quantization (ks_cuda_kivi.h: ks_cuda_kivi_quant_keys, ks_cuda_kivi_quant_values,
// ks_cuda_kivi_decode_flush; references ks_kivi_quant_keys, ks_kivi_quant_values): one thread per group (a key
// channel's G tokens, or a value token's G channels), min-max in fp32, the fp16 scale and zero and the codes by
// kivi_args.h's inline rule.
// The error parts are summed over each block before one atomic per block reaches the global sums (a long prompt's
// flush has millions of threads, and atomics on one address serialise in L2).
// A thread gathers the codes of one 32-bit word in a register and stores the word whole when its group covers
// it, else merges its bits with atomicAnd / atomicOr, so groups sharing a word never race. The raw encoding
// (KS_KIVI_RAW_BF16: the rows' bf16 bits, two per word) is a copy: one thread per word of the job's tokens.
// The decode flush plans on the device: one launch of a fixed grid (R / G key groups and one value token per
// head) whose blocks each read their head's job from the device counts (kivi_args.h's ks_kivi_flush_job), and
// whose last block to finish (a counter, as ks_cuda_gemv_norm's) advances the counts and runs the release, so a
// captured step serves every later one.
#include "cuda/common.cuh"
#include "cuda/ks_cuda_kivi.h"

namespace {

constexpr int QUANT_THREADS = 128;

// Writes the codes `bits` (a mask of the slots written) into word *w.
__device__ __forceinline__ void put_word(uint32_t *w, uint32_t bits, uint32_t mask) {
    if (mask == 0xffffffffu) {
        *w = bits;
    } else {
        atomicAnd(w, ~mask);
        atomicOr(w, bits);
    }
}

// Codes of n values x[i * stride] (a group) at code positions p0 .. p0 + n - 1 of the packed row `row`, with
// scale sf and zero zf; the error parts added to e.
__device__ void pack_group(const bf16 *x, int64_t stride, int n, float sf, float zf, int bits, uint32_t *row, int p0,
                           double e[2]) {
    const int per = 32 / bits;
    uint32_t word = 0, mask = 0;
    int w = p0 / per;
    for (int i = 0; i < n; i++) {
        const int p = p0 + i;
        if (p / per != w) {
            put_word(row + w, word, mask);
            word = mask = 0, w = p / per;
        }
        const float v = __bfloat162float(x[i * stride]);
        const unsigned q = ks_kivi_quantize(v, sf, zf, bits);
        const int sh = (p % per) * bits;
        word |= q << sh, mask |= ((1u << bits) - 1u) << sh;
        const double d = (double)v - ks_kivi_dequantize(q, sf, zf); /* in double, as the reference */
        e[0] += d * d, e[1] += (double)v * v;
    }
    put_word(row + w, word, mask);
}

// The fp16 scale and zero of n values x[i * stride] (kivi_args.h's min-max rule).
__device__ void group_params(const bf16 *x, int64_t stride, int n, int bits, uint16_t *s, uint16_t *z) {
    float mn = __bfloat162float(x[0]), mx = mn;
    for (int i = 1; i < n; i++) {
        const float v = __bfloat162float(x[i * stride]);
        mn = v < mn ? v : mn, mx = v > mx ? v : mx; // the reference's comparisons (-0 and +0 as it keeps them)
    }
    *s = ks_kivi_half((mx - mn) / (float)((1 << bits) - 1));
    *z = ks_kivi_half(mn);
}

// The block's error parts added to err (NULL: not wanted): summed over the block first, so that one atomic per
// block and part reaches the two global sums (every thread of the block calls it; a thread with nothing adds 0).
__device__ void add_err(double *err, const double e[2]) {
    __shared__ double part[2][QUANT_THREADS / 32];
    if (!err) return; // uniform over the grid
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    double a = e[0], b = e[1];
    for (int o = 16; o > 0; o >>= 1) a += __shfl_down_sync(0xffffffffu, a, o), b += __shfl_down_sync(0xffffffffu, b, o);
    if (lane == 0) part[0][warp] = a, part[1][warp] = b;
    __syncthreads();
    if (threadIdx.x) return;
    a = b = 0.0;
    for (int w = 0; w < QUANT_THREADS / 32; w++) a += part[0][w], b += part[1][w];
    if (b == 0.0) return;
    atomicAdd(err, a);
    atomicAdd(err + 1, b);
}

// The key group of stored channel i of head g starting at token t (a multiple of G).
__device__ void quant_key_group(const ks_cuda_kivi_layer &L, int g, int i, int t, double e[2]) {
    const ks_kivi_shape &S = L.shape;
    const int G = S.group, c = L.k_chan[(int64_t)g * S.d + i];
    const bf16 *x = reinterpret_cast<const bf16 *>(L.k) + ((int64_t)g * L.stride + (t - L.off[g])) * S.d + c;
    const int64_t ch = (int64_t)g * S.d + i, gi = ch * S.k_groups + t / G;
    group_params(x, S.d, G, S.k_bits, &L.k_scale[gi], &L.k_zero[gi]);
    pack_group(x, S.d, G, ks_kivi_float(L.k_scale[gi]), ks_kivi_float(L.k_zero[gi]), S.k_bits,
               L.k_codes + ch * S.k_words, t, e);
}

// Channel group cg of head g's value token t.
__device__ void quant_value_group(const ks_cuda_kivi_layer &L, int g, int t, int cg, double e[2]) {
    const ks_kivi_shape &S = L.shape;
    const int G = S.group;
    const bf16 *x = reinterpret_cast<const bf16 *>(L.v) + ((int64_t)g * L.stride + (t - L.off[g])) * S.d + cg * G;
    const int64_t tok = (int64_t)g * S.cap + t, gi = tok * S.v_groups + cg;
    group_params(x, 1, G, S.v_bits, &L.v_scale[gi], &L.v_zero[gi]);
    pack_group(x, 1, G, ks_kivi_float(L.v_scale[gi]), ks_kivi_float(L.v_zero[gi]), S.v_bits,
               L.v_codes + tok * S.v_words, cg * G, e);
}

// Thread (g = blockIdx.y, i = stored channel, group j of the head's job).
__global__ void quant_keys_kernel(ks_cuda_kivi_layer L, const int32_t *t0, const int32_t *n, double *err) {
    const ks_kivi_shape &S = L.shape;
    const int g = blockIdx.y, idx = blockIdx.x * QUANT_THREADS + threadIdx.x;
    const int i = idx % S.d, j = idx / S.d;
    double e[2] = {0.0, 0.0};
    if (i < L.kc[g] && j * S.group < n[g]) quant_key_group(L, g, i, t0[g] + j * S.group, e);
    add_err(err, e);
}

// Thread (g = blockIdx.y, token j of the head's job, channel group cg).
__global__ void quant_values_kernel(ks_cuda_kivi_layer L, const int32_t *t0, const int32_t *n, double *err) {
    const ks_kivi_shape &S = L.shape;
    const int g = blockIdx.y, idx = blockIdx.x * QUANT_THREADS + threadIdx.x;
    const int cg = idx % S.v_groups, j = idx / S.v_groups;
    double e[2] = {0.0, 0.0};
    if (j < n[g]) quant_value_group(L, g, t0[g] + j, cg, e);
    add_err(err, e);
}

// ---- the device-planned decode flush (ks_cuda_kivi_decode_flush) ----------------------------------------------

// Head g's job this step, from its counts and device length before the step's flush (the host's rule).
__device__ __forceinline__ ks_kivi_job step_job(const ks_cuda_kivi_step &st, int g) {
    return ks_kivi_flush_job(st.off[g] + st.len[g], st.nq_k[g], st.nq_v[g], st.R);
}

// Moves `rows` rows of head g's cache (K and V) from row `from` to row 0 through scratch, 16 bytes a thread, the
// whole block: every head's rows out first, then back (the two ranges may overlap).
__device__ void release_rows(const ks_cuda_kivi_layer &L, const ks_cuda_kivi_step &st, const int *from,
                             const int *rows) {
    const int words = L.shape.d / 8, per_head = st.R * words, total = 2 * L.Hk * per_head;
    uint4 *scratch = reinterpret_cast<uint4 *>(st.scratch);
    for (int back = 0; back < 2; back++) {
        for (int e = threadIdx.x; e < total; e += blockDim.x) {
            const int tensor = e / (L.Hk * per_head), g = e / per_head % L.Hk, r = e % per_head / words;
            if (from[g] == 0 || r >= rows[g]) continue; // no release, or past its rows
            uint4 *cache = reinterpret_cast<uint4 *>(tensor ? st.v : st.k) + (int64_t)g * L.stride * words;
            uint4 *row = cache + (int64_t)(back ? r : from[g] + r) * words + e % words;
            if (back) *row = scratch[e];
            else scratch[e] = *row;
        }
        __syncthreads();
    }
}

// The last block: the counts after the flush, KIVI's decode release on them (ks_kivi_release_least), the rows
// moved, then the counts and lengths written (every head's read before any is written).
__device__ void advance_and_release(const ks_cuda_kivi_layer &L, const ks_cuda_kivi_step &st) {
    __shared__ int from[KS_CUDA_KIVI_MAX_HK], rows[KS_CUDA_KIVI_MAX_HK], nk[KS_CUDA_KIVI_MAX_HK],
        nv[KS_CUDA_KIVI_MAX_HK];
    __shared__ int most;
    if (threadIdx.x == 0) most = 0;
    __syncthreads();
    for (int g = threadIdx.x; g < L.Hk; g += blockDim.x) {
        const ks_kivi_job j = step_job(st, g);
        nk[g] = st.nq_k[g] + j.k_n, nv[g] = st.nq_v[g] + j.v_n;
        from[g] = ks_kivi_stale(nk[g], nv[g], st.off[g]);
        rows[g] = st.len[g] - from[g];
        atomicMax(&most, from[g]);
    }
    __syncthreads();
    const int release = most >= ks_kivi_release_least(st.R, 1);
    if (release) release_rows(L, st, from, rows);
    for (int g = threadIdx.x; g < L.Hk; g += blockDim.x) {
        st.nq_k[g] = nk[g], st.nq_v[g] = nv[g];
        if (release) st.off[g] += from[g], st.len[g] = rows[g];
    }
}

// Block (x, g = blockIdx.y): x < key_blocks a share of head g's key groups (stored channel i, group j of at most
// R / G), then a share of its value token's channel groups; the last block to finish advances and releases.
__global__ void decode_flush_kernel(ks_cuda_kivi_layer L, ks_cuda_kivi_step st, int key_blocks) {
    ks_pdl_wait(); // launched with ks_launch_pdl: the step's rows, lengths and counts come from the kernels before
    ks_pdl_trigger();
    const ks_kivi_shape &S = L.shape;
    const int g = blockIdx.y, keys = blockIdx.x < key_blocks;
    const int idx = (keys ? blockIdx.x : blockIdx.x - key_blocks) * QUANT_THREADS + threadIdx.x;
    const ks_kivi_job j = step_job(st, g);
    double e[2] = {0.0, 0.0}; // not wanted: a decode flush reports no error
    if (keys) {
        const int i = idx % S.d, t = j.k_t0 + idx / S.d * S.group;
        if (i < L.kc[g] && t < j.k_t0 + j.k_n && t + S.group <= S.cap) quant_key_group(L, g, i, t, e);
    } else {
        const int cg = idx % S.v_groups, t = j.v_t0 + idx / S.v_groups;
        if (t < j.v_t0 + j.v_n && t < S.cap) quant_value_group(L, g, t, cg, e);
    }
    if (ks_last_block(st.done)) advance_and_release(L, st);
}

// The bf16 bits of x and their error parts {0, x^2} (the raw encoding is exact).
__device__ __forceinline__ uint32_t raw_bits(bf16 x, double e[2]) {
    const float v = __bfloat162float(x);
    e[1] += (double)v * v;
    return __bfloat16_as_ushort(x);
}

// Thread (g = blockIdx.y, stored channel i, the j-th word of the head's job): the job's tokens in that word of the
// channel's row (its first word may be shared with tokens packed before: merged).
__global__ void raw_keys_kernel(ks_cuda_kivi_layer L, const int32_t *t0, const int32_t *n, double *err) {
    const ks_kivi_shape &S = L.shape;
    const int g = blockIdx.y, idx = blockIdx.x * QUANT_THREADS + threadIdx.x;
    const int i = idx % S.d, lo = t0[g], hi = lo + n[g], w = lo / 2 + idx / S.d;
    double e[2] = {0.0, 0.0};
    if (i < L.kc[g] && lo < hi && 2 * w < hi) {
        const int c = L.k_chan[(int64_t)g * S.d + i], off = L.off[g];
        const bf16 *x = reinterpret_cast<const bf16 *>(L.k) + (int64_t)g * L.stride * S.d + c; // token t: row t - off
        uint32_t word = 0, mask = 0;
        for (int t = 2 * w; t < 2 * w + 2; t++) {
            if (t < lo || t >= hi) continue;
            word |= raw_bits(x[(int64_t)(t - off) * S.d], e) << (16 * (t % 2)), mask |= 0xffffu << (16 * (t % 2));
        }
        put_word(L.k_codes + ((int64_t)g * S.d + i) * S.k_words + w, word, mask);
    }
    add_err(err, e);
}

// Thread (g = blockIdx.y, token j of the head's job, word w of its value row): channels 2 w and 2 w + 1.
__global__ void raw_values_kernel(ks_cuda_kivi_layer L, const int32_t *t0, const int32_t *n, double *err) {
    const ks_kivi_shape &S = L.shape;
    const int g = blockIdx.y, idx = blockIdx.x * QUANT_THREADS + threadIdx.x;
    const int w = idx % S.v_words, j = idx / S.v_words;
    double e[2] = {0.0, 0.0};
    if (j < n[g]) {
        const int t = t0[g] + j;
        const bf16 *x = reinterpret_cast<const bf16 *>(L.v) + ((int64_t)g * L.stride + (t - L.off[g])) * S.d;
        uint32_t word = 0;
        for (int c = 2 * w; c < 2 * w + 2 && c < S.d; c++) word |= raw_bits(x[c], e) << (16 * (c % 2));
        L.v_codes[((int64_t)g * S.cap + t) * S.v_words + w] = word; // the token's own word: no other writer
    }
    add_err(err, e);
}

} // namespace

extern "C" ks_status ks_cuda_kivi_quant_keys(const ks_cuda_kivi_layer *L, const int32_t *t0, const int32_t *n,
                                             int max_n, double *err, cudaStream_t s) {
    if (max_n <= 0) return KS_OK;
    if (L->shape.k_bits == KS_KIVI_RAW_BF16) { // a job's tokens span at most max_n / 2 + 1 words
        dim3 grid(ks_cdiv((int64_t)L->shape.d * (max_n / 2 + 1), QUANT_THREADS), L->Hk);
        raw_keys_kernel<<<grid, QUANT_THREADS, 0, s>>>(*L, t0, n, err);
        KS_LAUNCH_CHECK();
        return KS_OK;
    }
    dim3 grid(ks_cdiv((int64_t)L->shape.d * ks_cdiv(max_n, L->shape.group), QUANT_THREADS), L->Hk);
    quant_keys_kernel<<<grid, QUANT_THREADS, 0, s>>>(*L, t0, n, err);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

extern "C" ks_status ks_cuda_kivi_quant_values(const ks_cuda_kivi_layer *L, const int32_t *t0, const int32_t *n,
                                               int max_n, double *err, cudaStream_t s) {
    if (max_n <= 0) return KS_OK;
    if (L->shape.v_bits == KS_KIVI_RAW_BF16) {
        dim3 grid(ks_cdiv((int64_t)L->shape.v_words * max_n, QUANT_THREADS), L->Hk);
        raw_values_kernel<<<grid, QUANT_THREADS, 0, s>>>(*L, t0, n, err);
        KS_LAUNCH_CHECK();
        return KS_OK;
    }
    dim3 grid(ks_cdiv((int64_t)L->shape.v_groups * max_n, QUANT_THREADS), L->Hk);
    quant_values_kernel<<<grid, QUANT_THREADS, 0, s>>>(*L, t0, n, err);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

extern "C" ks_status ks_cuda_kivi_decode_flush(const ks_cuda_kivi_layer *L, const ks_cuda_kivi_step *st,
                                               cudaStream_t s) {
    const ks_kivi_shape &S = L->shape;
    KS_ASSERT(!ks_kivi_is_raw(S.k_bits) && !ks_kivi_is_raw(S.v_bits) && st->R % S.group == 0 && S.d % 8 == 0 &&
              L->Hk <= KS_CUDA_KIVI_MAX_HK && ((uintptr_t)st->k | (uintptr_t)st->v | (uintptr_t)st->scratch) % 16 == 0);
    const int key_blocks = (int)ks_cdiv((int64_t)S.d * (st->R / S.group), QUANT_THREADS);
    const int value_blocks = (int)ks_cdiv(S.v_groups, QUANT_THREADS);
    KS_LAUNCH_PDL(decode_flush_kernel, dim3(key_blocks + value_blocks, L->Hk), dim3(QUANT_THREADS), 0, s, *L, *st,
                  key_blocks);
    return KS_OK;
}
