/* ks_cuda_kivi.h — KIVI's packed KV format on the GPU (kernels/kivi_args.h: the layout, the fp16 rule and the
 * packing; the references are kernels/cpu/kivi_ref.h's): the flush's quantization of a layer's key blocks and
 * value rows out of the bf16 cache rows, and the decode attention over packed tokens and full-precision rows.
 * Conventions as kernels/cuda/ks_cuda.h: device pointers, a stream, no allocation, no synchronisation.
 *
 *     ks_cuda_kivi_layer L = {...};       // one layer: its packed arrays, counts and cache rows (device)
 *     ks_cuda_kivi_quant_keys(&L, k_t0, k_n, err, s);    // tokens k_t0[g] .. + k_n[g] of each KV head g
 *     ks_cuda_kivi_quant_values(&L, v_t0, v_n, err, s);
 *     ks_cuda_kivi_decode_flush(&L, &step, s);           // a decode step's flush and release, planned on the device
 *     ks_cuda_kivi_attention_decode(out, q, &L, H, scale, max_n, scratch, s);
 *
 * Codes, scales and zeros are bit-identical to ks_kivi_quant_keys / ks_kivi_quant_values on the same (bf16)
 * values: the same inline rule (no fast-math). Codes of other tokens are left as they are. A shape in the raw
 * encoding of bf16 rows (k_bits, v_bits KS_KIVI_RAW_BF16; ThinK's pruned prefix) packs the rows' bits, any first
 * token and count, as the reference does from the same values.
 */
#ifndef KS_KERNELS_CUDA_KIVI_H
#define KS_KERNELS_CUDA_KIVI_H

#include "cuda/ks_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "kivi_args.h" /* ks_kivi_shape */

/* One layer of the packed part and its cache rows, device memory; per KV head g (Hk of them) the arrays of
 * kivi_args.h at g * (per-head size). */
typedef struct ks_cuda_kivi_layer {
    ks_kivi_shape shape;
    int Hk;
    uint32_t *k_codes;          /* (Hk, d, k_words) */
    uint16_t *k_scale, *k_zero; /* (Hk, d, k_groups) */
    const int32_t *k_chan;      /* (Hk, d) stored key channel -> head channel */
    const int32_t *kc;          /* (Hk) stored key channels */
    uint32_t *v_codes;          /* (Hk, cap, v_words) */
    uint16_t *v_scale, *v_zero; /* (Hk, cap, v_groups) */
    const int32_t *nq_k, *nq_v, *off; /* (Hk) counts (ks_kivi_counts), read by the attention */
    const int32_t *len;         /* (Hk) rows head g holds in the cache (its tokens: n = off[g] + len[g]), read by the
                                   attention: the device lengths a decode step's append advances */
    const ks_bf16 *k, *v;       /* (Hk, stride, d) the cache rows: token t of head g at row t - off[g] */
    int stride;
} ks_cuda_kivi_layer;

/* Quantizes the keys of tokens t0[g] .. t0[g] + n[g] - 1 of each KV head g (device (Hk) arrays; t0[g] and n[g]
 * multiples of G, any in the raw encoding; rows from the cache at t - off[g]); max_n bounds n[g] (the grid). err
 * (device, 2 doubles, may be NULL) is ADDED the error parts {sum (K - K^)^2, sum K^2} (in an order of its own). */
ks_status ks_cuda_kivi_quant_keys(const ks_cuda_kivi_layer *L, const int32_t *t0, const int32_t *n, int max_n,
                                  double *err, cudaStream_t s);

/* The same for the values of tokens t0[g] .. t0[g] + n[g] - 1, per token. */
ks_status ks_cuda_kivi_quant_values(const ks_cuda_kivi_layer *L, const int32_t *t0, const int32_t *n, int max_n,
                                    double *err, cudaStream_t s);

/* KV heads a layer may have for ks_cuda_kivi_decode_flush (its last block keeps a few ints per head). */
#define KS_CUDA_KIVI_MAX_HK 256

/* What a device-planned decode flush reads and changes besides the layer (device memory; the layer's own count
 * rows and cache rows, writable). */
typedef struct ks_cuda_kivi_step {
    int32_t *nq_k, *nq_v, *off; /* (Hk) the layer's counts (L->nq_k, nq_v, off) */
    int32_t *len;               /* (Hk) the device lengths (L->len) */
    ks_bf16 *k, *v;             /* the cache rows (L->k, L->v) */
    ks_bf16 *scratch;           /* (2, Hk, R, d) the released heads' kept rows in transit */
    unsigned *done;             /* a block counter at 0; left at 0 */
    int R;                      /* residual: a multiple of G */
} ks_cuda_kivi_step;

/* KIVI's decode-step flush of one layer, planned on the device, so that the launch is the same every step (a
 * decode graph replays it): each head's job is ks_kivi_flush_job of its counts and device length (one key block
 * of R tokens at most and one value token at most: the grid's, sized from R and G; the caller checks its host
 * plan against them and against cap before the step), quantized as ks_cuda_kivi_quant_keys / _values would;
 * then the counts advance and, when some head holds at least R stale rows (ks_kivi_release_least(R, 1) on the
 * advanced counts), every head's stale rows are released: its later rows (at most R) moved to row 0, off
 * advanced, the length cut, as the host's ks_kv_kivi_compacted and ks_kvcache_compact on the same keep lists.
 * Quantized encodings only; Hk at most KS_CUDA_KIVI_MAX_HK, d a multiple of 8. */
ks_status ks_cuda_kivi_decode_flush(const ks_cuda_kivi_layer *L, const ks_cuda_kivi_step *st, cudaStream_t s);

/* Floats of scratch ks_cuda_kivi_attention_decode needs for H query heads and sequences of at most max_n tokens. */
size_t ks_cuda_kivi_attention_scratch_floats(int H, int d, int max_n);

/* One decode query per head, the semantics of ks_kivi_attention_decode: q (H, d) bf16 (query head h reads KV
 * head h / (H / Hk)), every token 0 .. off[g] + len[g] - 1 attended, packed keys (t < nq_k[g]) and values
 * (t < nq_v[g]) dequantized on the device, out (H, d) bf16. Split over the tokens (max_n, a bound on the tokens,
 * sizes the grids only: any bound gives the same result), the splits' partials combined in a last kernel. d at
 * most 256 (a lane holds channels lane, lane + 32, ... below d). */
ks_status ks_cuda_kivi_attention_decode(ks_bf16 *out, const ks_bf16 *q, const ks_cuda_kivi_layer *L, int H,
                                        float scale, int max_n, float *scratch, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
