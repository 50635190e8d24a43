/* kivi_ref.h — KIVI's packed KV format on the host (the layout, the fp16 rules and the code packing are
 * kivi_args.h's): quantization of key blocks and value rows into one (layer, KV head)'s packed arrays, their
 * dequantization, and the decode attention over the packed part and the full-precision rows. The readable
 * ground truth of the CUDA kernels and of the CPU backend's fast path (fast.h: ks_fast_kivi_attention_decode,
 * which dequantizes its tiles with these functions).
 *
 *     ks_kivi_shape s = ks_kivi_shape_of(&params, d, cap);
 *     ks_kivi_quant_keys(&s, k_rows, d, t0, n, NULL, d, k_codes, k_scale, k_zero, err_k);  // tokens t0 .. t0+n-1
 *     ks_kivi_quant_values(&s, v_rows, d, t0, n, v_codes, v_scale, v_zero, err_v);
 *     ks_kivi_attention_decode(out, q, heads, &s, H, Hk, scale);   // heads: one ks_kivi_head per KV head
 *
 * Rows are fp32 (n, d) with a row stride ld. Errors err (may be NULL) accumulate {sum (x - x^)^2, sum x^2} over
 * what was quantized (in double), the relative reconstruction error's two parts. Keys or values in a raw
 * encoding are stored element by element, any t0 and n: KS_KIVI_RAW bit for bit (no error), KS_KIVI_RAW_BF16
 * rounded to bf16 (the CUDA store's form, exact on bf16 rows), and read back as stored.
 */
#ifndef KS_KERNELS_KIVI_REF_H
#define KS_KERNELS_KIVI_REF_H

#include <stdint.h>

#include "kivi_args.h"

/* Quantizes the keys of tokens t0 .. t0 + n - 1 (k (n, ld) rows; t0 and n multiples of s->group, t0 + n <= cap):
 * each stored channel i (head channel chan[i], chan NULL: i; kc channels) per group of G tokens, into its code row
 * and scales/zeros. Codes of other tokens are left as they are. */
void ks_kivi_quant_keys(const ks_kivi_shape *s, const float *k, int ld, int t0, int n, const int32_t *chan, int kc,
                        uint32_t *codes, uint16_t *scale, uint16_t *zero, double err[2]);

/* Quantizes the values of tokens t0 .. t0 + n - 1 (v (n, ld) rows): per token, per group of G channels. */
void ks_kivi_quant_values(const ks_kivi_shape *s, const float *v, int ld, int t0, int n, uint32_t *codes,
                          uint16_t *scale, uint16_t *zero, double err[2]);

/* out (n, d): the dequantized keys of tokens t0 .. t0 + n - 1 (any range); channels not stored are 0. */
void ks_kivi_dequant_keys(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale,
                          const uint16_t *zero, const int32_t *chan, int kc, int t0, int n, float *out);

/* out (n, d): the dequantized values of tokens t0 .. t0 + n - 1. */
void ks_kivi_dequant_values(const ks_kivi_shape *s, const uint32_t *codes, const uint16_t *scale,
                            const uint16_t *zero, int t0, int n, float *out);

/* One decode query per head against KIVI heads: q (H, d); head g = heads[g] (query head h reads KV head
 * h / (H / Hk)); every token 0 .. n - 1 of a head is attended: logits q . k^_t * scale over the packed keys
 * (t < nq_k, the stored channels only) and q . k_t over the dense rows, softmax in fp32, out (H, d) =
 * sum p_t v^_t (t < nq_v) + sum p_t v_t. Tiles of KS_KIVI_TILE tokens are dequantized on the stack inside the
 * loop (online softmax), once for the KV head's group of query heads, never the whole cache; KV heads in
 * parallel (OpenMP). d <= KS_KIVI_MAX_D, H / Hk <= KS_KIVI_MAX_GROUP. */
#define KS_KIVI_TILE 32
#define KS_KIVI_MAX_D 256
#define KS_KIVI_MAX_GROUP 32
void ks_kivi_attention_decode(float *out, const float *q, const ks_kivi_head *heads, const ks_kivi_shape *s, int H,
                              int Hk, float scale);

#endif
