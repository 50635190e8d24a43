/* ks_cuda.h — the CUDA kernels of kvscope as a plain C interface (C code includes this without C++).
 *
 * Every launcher takes device pointers, sizes and a stream, enqueues its kernel(s) and returns KS_OK, or
 * KS_ERR_DEVICE with one recorded message if the launch failed. Launchers never allocate device memory and
 * never synchronize; buffers that a kernel needs (split partials, argmax partials, the cuBLASLt workspace)
 * are sized by a *_scratch_bytes() function (or at init) and allocated once by the caller from the maximum
 * shapes. First calls set kernel attributes and build cuBLASLt plans (host side): run each shape once
 * before capturing a CUDA graph. Bad sizes or misaligned pointers are programmer errors (KS_ASSERT).
 *
 * Layouts are those of kernels/cpu/ref.h (the references the tests compare against):
 *   activations for heads (n, H, d) token-major; KV cache of a layer (Hk, cap, d) head-major with one
 *   length per KV head; weights (out, in) row-major with y = x W^T; RoPE is HF rotate-half.
 * Storage is bf16 (ks_bf16, raw bits) where noted, arithmetic is fp32. `ld` arguments are the element
 * distance between consecutive tokens' rows, so a slice of a fused buffer (q|k|v, gate|up) can be passed
 * without a copy; pass the dense width when the buffer is not fused.
 *
 * Usage (one decode step of one layer, schematically):
 *     ks_cuda_add_rmsnorm(xn, KS_DTYPE_BF16, resid, NULL, w_norm, 1, D, eps, s);
 *     ks_cuda_gemm_run(gemm, qkv, KS_DTYPE_BF16, xn, w_qkv, NULL, 1, D, (H + 2 * Hk) * d, 0.0f, s);
 *     ks_cuda_rope(qkv, KS_DTYPE_BF16, (H + 2 * Hk) * d, pos, 1, H + Hk, d, inv_freq, s);
 *     ks_cuda_kv_append(kc, vc, qkv + H * d, qkv + (H + Hk) * d, (H + 2 * Hk) * d, lens, 0, 1, Hk, d, cap, s);
 *     ks_cuda_lens_add(lens, Hk, 1, s);
 *     ks_cuda_attention_decode(att, qkv, kc, vc, lens, NULL, cap, H, Hk, d, scale, max_len, scratch, s);
 */
#ifndef KS_KERNELS_CUDA_H
#define KS_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>  /* included here, outside extern "C", so that the project headers below find them */
#include <stdlib.h> /* already included when compiled as C++ */

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "block_list.h"  /* ks_block_list: the block-sparse prefill's lists */
#include "core/status.h"
#include "model/tensor_index.h" /* ks_dtype: the launchers accept KS_DTYPE_F32 and KS_DTYPE_BF16 */

/* bf16 storage as raw bits (the upper half of an IEEE fp32). */
typedef uint16_t ks_bf16;

/* ---- conversions and elementwise ops ------------------------------------------------------------------- */

/* out[i] = bf16(in[i]) (round to nearest even) and back. */
ks_status ks_cuda_f32_to_bf16(ks_bf16 *out, const float *in, int64_t n, cudaStream_t s);
ks_status ks_cuda_bf16_to_f32(float *out, const ks_bf16 *in, int64_t n, cudaStream_t s);

/* p[i] = uniform in [lo, hi) for i < n, a function of (seed, i) only; p fp32 or bf16 (type). */
ks_status ks_cuda_fill_uniform(void *p, ks_dtype type, int64_t n, float lo, float hi, uint64_t seed,
                               cudaStream_t s);

/* y[i] += x[i] for i < n; x is fp32 or bf16 (x_type). */
ks_status ks_cuda_add(float *y, const void *x, ks_dtype x_type, int64_t n, cudaStream_t s);

/* out (n, D) rows = table (V, D) rows tokens[t]; out is fp32 or bf16 (out_type). Tokens must be < V. */
ks_status ks_cuda_embed(void *out, ks_dtype out_type, const int32_t *tokens, int n, const ks_bf16 *table, int D,
                        cudaStream_t s);

/* ---- normalisation, RoPE, SwiGLU --------------------------------------------------------------------- */

/* out (n, D) = x * w / sqrt(mean(x^2) + eps), per row; x fp32, w fp32 (D), out fp32 or bf16. */
ks_status ks_cuda_rmsnorm(void *out, ks_dtype out_type, const float *x, const float *w, int n, int D, float eps,
                          cudaStream_t s);

/* The residual step fused with the next norm: resid (n, D) += delta (fp32, or NULL for none), then
 * out = rmsnorm(resid) * w as ks_cuda_rmsnorm. */
ks_status ks_cuda_add_rmsnorm(void *out, ks_dtype out_type, float *resid, const float *delta, const float *w, int n,
                              int D, float eps, cudaStream_t s);

/* In-place rotate-half RoPE on x (n tokens, `heads` heads of d), token t's row at x + t * ld, head h at
 * + h * d; token t at position pos[t] (device array); inv_freq (d/2) on the device. x fp32 or bf16. */
ks_status ks_cuda_rope(void *x, ks_dtype x_type, int64_t ld, const int32_t *pos, int n, int heads, int d,
                       const float *inv_freq, cudaStream_t s);

/* pos[t] = pos0 + t for t < n (device array): the positions of a prefill chunk, or one value (n = 1), without
 * a host copy. */
ks_status ks_cuda_positions(int32_t *pos, int pos0, int n, cudaStream_t s);

/* out (rows, F) = silu(gate) * up, bf16; row r of gate at gate + r * ld_in, of up at up + r * ld_in
 * (ld_in = F for separate buffers, 2F for a fused gate|up buffer with up = gate + F), of out at
 * out + r * ld_out. out may be gate itself (in place, ld_out = ld_in). */
ks_status ks_cuda_swiglu(ks_bf16 *out, const ks_bf16 *gate, const ks_bf16 *up, int rows, int F, int64_t ld_in,
                         int64_t ld_out, cudaStream_t s);

/* ---- argmax ------------------------------------------------------------------------------------------ */

/* out[r] = index of the largest x[r * n + i] (the first on ties; NaN never wins), for r < rows; fp32 x.
 * Two passes: per-block candidates in `scratch`, then one block per row. */
size_t ks_cuda_argmax_scratch_bytes(int rows, int n);
ks_status ks_cuda_argmax(int32_t *out, const float *x, int rows, int n, void *scratch, cudaStream_t s);

/* ---- KV cache ---------------------------------------------------------------------------------------- */

/* Appends n tokens to the head-major cache kc, vc (Hk, cap, d) bf16: token t of head h (k + t * ld + h * d)
 * goes to row start[h] + t, with start = lens (device, Hk) or, when lens is NULL, row0 for every head.
 * Does not change lens (ks_cuda_lens_add does, after the append). Rows past cap are a programmer error the
 * caller must rule out (the cache is sized from the maximum length). */
ks_status ks_cuda_kv_append(ks_bf16 *kc, ks_bf16 *vc, const ks_bf16 *k, const ks_bf16 *v, int64_t ld,
                            const int32_t *lens, int row0, int n, int Hk, int d, int cap, cudaStream_t s);

/* lens[h] += delta for h < Hk (device array; keeps the decode loop free of host round trips). */
ks_status ks_cuda_lens_add(int32_t *lens, int Hk, int delta, cudaStream_t s);

/* One decode token in one launch: ks_cuda_rope on the q and k heads of its fused q|k|v row (H + 2Hk heads of d:
 * q, then k, then v) at position pos[0] (device), then ks_cuda_kv_append of its k and v rows at lens, then
 * ks_cuda_lens_add(lens, Hk, 1): three launches of a decode step's layer become one. */
ks_status ks_cuda_rope_append_one(ks_bf16 *qkv, ks_bf16 *kc, ks_bf16 *vc, const int32_t *pos, int32_t *lens, int H,
                                  int Hk, int d, int cap, const float *inv_freq, cudaStream_t s);

/* ---- attention --------------------------------------------------------------------------------------- */

/* Flash-attention prefill (tensor cores, fp32 online softmax), the semantics of ks_ref_attention:
 *   q (n, H, d) bf16, token t's row at q + t * ld_q; query t at absolute position q_pos0 + t;
 *   kc, vc (Hk, cap, d) bf16, keys j < n_kv valid (chunked prefill: the chunk's own keys already appended);
 *   causal, and if window > 0 only keys j > pos - window; GQA: query head h reads KV head h / (H / Hk).
 *   out (n, H, d) bf16, token t's row at out + t * ld_o. A query with no visible key gets 0.
 *   d = 64 and 128 run on tensor cores (q, out, kc, vc 16-byte aligned; ld_q, ld_o multiples of 8); any
 *   other even d <= 256 on a CUDA-core kernel (attention_generic.cu: correct, slow).
 *   lse (n, H) fp32, optional (d 64 and 128 only): query t's natural log-sum-exp of its scaled logits over
 *   the keys it attended, at lse[t * H + h] (+inf for none), which a scoring pass over the same queries
 *   reuses (ks_cuda_score_args.lse_in). */
ks_status ks_cuda_attention_prefill(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q, const ks_bf16 *kc,
                                    const ks_bf16 *vc, int n, int n_kv, int cap, int H, int Hk, int d, int q_pos0,
                                    int window, float scale, float *lse, cudaStream_t s);

/* The same on the portable mma.sync kernel, which ks_cuda_attention_prefill uses for d = 64 and on GPUs
 * other than Hopper (on Hopper, d = 128 runs a wgmma kernel); exposed so that both are tested there. */
ks_status ks_cuda_attention_prefill_sm80(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q,
                                         const ks_bf16 *kc, const ks_bf16 *vc, int n, int n_kv, int cap, int H,
                                         int Hk, int d, int q_pos0, int window, float scale, float *lse,
                                         cudaStream_t s);

/* Block-sparse causal prefill (FlexPrefill, XAttention), the semantics of ks_ref_attention_sparse: the arguments
 * and layouts of ks_cuda_attention_prefill, each query attending only the key blocks that l lists for its (query
 * head, query block) row (block_list.h: absolute blocks, the chunk may start mid-block, causal mask and window
 * inside listed blocks, KV head h / (H / Hk) read in place, a query with no visible key gets 0, the full list is
 * the dense attention). l is a host struct whose row_start and cols are DEVICE arrays; l->H must be H,
 * l->qb0 q_pos0 / l->block and l->n_qblocks ks_block_rows_of(q_pos0, n, l->block). Unlisted key blocks are
 * neither loaded nor multiplied. One block of the kernel holds the queries of one head in a 128-row tile, so
 * every head walks its own list. Head dims 64 and 128 (d = 128 on Hopper: the wgmma kernel, else mma.sync),
 * blocks of 64 or 128 keys; anything else returns KS_ERR_UNSUPPORTED naming it. lse as in the dense launcher
 * (over the keys attended). */
ks_status ks_cuda_attention_prefill_sparse(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q,
                                           const ks_bf16 *kc, const ks_bf16 *vc, int n, int n_kv, int cap, int H,
                                           int Hk, int d, int q_pos0, int window, float scale, float *lse,
                                           const ks_block_list *l, cudaStream_t s);

/* The same on the portable mma.sync kernel (what the launcher above runs for d = 64 and off Hopper); exposed so
 * that both kernels are tested on Hopper. */
ks_status ks_cuda_attention_prefill_sparse_sm80(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q,
                                                const ks_bf16 *kc, const ks_bf16 *vc, int n, int n_kv, int cap,
                                                int H, int Hk, int d, int q_pos0, int window, float scale,
                                                float *lse, const ks_block_list *l, cudaStream_t s);

/* Decode attention (flash-decoding), the semantics of ks_ref_attention_decode: q (H, d) bf16; kc, vc
 * (Hk, cap, d) bf16; lens (Hk) on the device, rows [starts[h], lens[h]) of KV head h attended (starts: a
 * device array, e.g. sliding-window starts, or NULL for 0); out (H, d) bf16; a head with no rows gets 0.
 * Each KV head's rows are split over a fixed number of blocks chosen from max_len (an upper bound of
 * every lens[h], e.g. the cache capacity in a captured graph; it may exceed cap); each block reads its KV rows once for all
 * query heads of the group (up to 16 heads per block: larger groups take several), and a second kernel
 * combines the partials. d = 64 and 128 on tensor cores (q, kc, vc 16-byte aligned); any other even
 * d <= 256 on the CUDA-core kernel (no scratch). */
size_t ks_cuda_attention_decode_scratch_bytes(int H, int Hk, int d, int max_len);
ks_status ks_cuda_attention_decode(ks_bf16 *out, const ks_bf16 *q, const ks_bf16 *kc, const ks_bf16 *vc,
                                   const int32_t *lens, const int32_t *starts, int cap, int H, int Hk, int d,
                                   float scale, int max_len, void *scratch, cudaStream_t s);

/* ---- GEMM (cuBLASLt) --------------------------------------------------------------------------------- */

/* A cuBLASLt handle, its workspace (allocated once at init) and a cache of matmul plans keyed by shape,
 * output type, bias, accumulation and pointer alignment, so a decode loop that repeats shapes allocates
 * nothing after its first step. Not thread-safe: one per stream. */
typedef struct ks_cuda_gemm ks_cuda_gemm_t;

ks_status ks_cuda_gemm_init(ks_cuda_gemm_t **g, size_t workspace_bytes);
void ks_cuda_gemm_free(ks_cuda_gemm_t *g); /* accepts NULL */

/* y (n, out) = x (n, in) W^T (+ bias) (+ beta * y): x, W (out, in) bf16 row-major; fp32 accumulation;
 * y fp32 or bf16 (y_type); bias (out, of y's type) or NULL; beta 0 or 1 (1 adds into y, e.g. the
 * residual stream). n <= KS_CUDA_GEMV_ROWS goes to ks_cuda_gemv (below: each row bit-identical to that row
 * alone), larger n to cuBLASLt (tensor cores, rounding otherwise: not bit-equal to the rows alone). */
ks_status ks_cuda_gemm_run(ks_cuda_gemm_t *g, void *y, ks_dtype y_type, const ks_bf16 *x, const ks_bf16 *w,
                           const void *bias, int n, int in, int out, float beta, cudaStream_t s);

/* The same with row strides: row t of x at x + t * ld_x, of y (and bias-free accumulation) at y + t * ld_y,
 * so slices of fused buffers (q|k|v, gate|up) are read and written in place. Plans are keyed by strides too. */
ks_status ks_cuda_gemm_run_ld(ks_cuda_gemm_t *g, void *y, int64_t ld_y, ks_dtype y_type, const ks_bf16 *x,
                              int64_t ld_x, const ks_bf16 *w, const void *bias, int n, int in, int out, float beta,
                              cudaStream_t s);

/* The most rows ks_cuda_gemm_run_ld gives the GEMVs below (a decode step: one token, or one per sample of a
 * batch); more go to cuBLASLt. */
#define KS_CUDA_GEMV_ROWS 16

/* The same for n <= KS_CUDA_GEMV_ROWS rows without cuBLASLt: a kernel that streams each weight row once for all
 * n rows (cuBLASLt's n = 1 path reads weights at well under the memory bandwidth for some shapes). Any in, out.
 * Row t of the result is bit-identical to a one-row launch on row t's x (every output summed in one order
 * whatever n is), so a batch's rows round as their tokens alone do. x's rows must then take the load path a row
 * alone takes: where in % 8 == 0 and x, W are 16-byte aligned, n > 1 needs ld_x % 8 == 0 (else KS_ERR_ARG). */
ks_status ks_cuda_gemv(void *y, int64_t ld_y, ks_dtype y_type, const ks_bf16 *x, int64_t ld_x, const ks_bf16 *w,
                       const void *bias, int n, int in, int out, float beta, cudaStream_t s);

/* A decode layer's gate|up GEMV with the SwiGLU after it in one launch, for n <= KS_CUDA_GEMV_ROWS rows (x row t at
 * x + t * ld_x): w_gu (2F, in) stacks gate_proj over up_proj; up[t * ld_gu + r] = bf16(x_t . w_gu[F + r]) and
 * gate[t * ld_gu + r] = bf16(silu(g) * up) with g = bf16(x_t . w_gu[r]), what ks_cuda_gemv into a gate|up buffer
 * followed by ks_cuda_swiglu computes (a fused gate|up buffer: up = gate + F, ld_gu = 2F). Rows as ks_cuda_gemv. */
ks_status ks_cuda_gemv_swiglu(ks_bf16 *gate, ks_bf16 *up, int64_t ld_gu, const ks_bf16 *x, int64_t ld_x,
                              const ks_bf16 *w_gu, int n, int in, int F, cudaStream_t s);

/* A residual projection with the next RMSNorm, for n <= KS_CUDA_GEMV_ROWS rows: y (n, out, fp32, row t at
 * y + t * ld_y) = x W^T (+ bias) (+ y when beta = 1) as ks_cuda_gemv, then xn row t (bf16, at xn + t * ld_xn) =
 * rmsnorm(y row t) * norm_w, each row's norm in the same order whatever n is. One row is one launch (the GEMV's
 * last block writes the norm); more rows are the GEMV and a norm launch of one block per row. `done` is one
 * device counter that must be 0 before the launch; the launch leaves it 0 (set it once after allocation). */
ks_status ks_cuda_gemv_norm(float *y, int64_t ld_y, const ks_bf16 *x, int64_t ld_x, const ks_bf16 *w,
                            const float *bias, int n, int in, int out, float beta, ks_bf16 *xn, int64_t ld_xn,
                            const float *norm_w, float eps, unsigned *done, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
