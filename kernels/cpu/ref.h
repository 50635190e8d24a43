/* ref.h — readable fp32 reference implementations of every op (the ground truth for the fast CPU paths and
 * the CUDA kernels; tests compare against these on fresh random inputs).
 *
 * Conventions (all row-major, fp32):
 *   n      tokens in the batch/chunk;  D hidden;  H query heads;  Hk KV heads (H % Hk == 0, group G = H/Hk);
 *   d      head_dim;  F ffn size;  V vocab.
 *   Weights follow Hugging Face: W is (out, in) and y = x W^T (+ b).
 *   Activations for heads are (n, H, d) — token-major, as the q/k/v projections produce them.
 *   The KV cache of one layer is head-major: K and V are (Hk, cap, d); head h's first len[h] rows are valid.
 *   Head-major storage lets each KV head keep its own length after compression (issue: KV methods).
 */
#ifndef KS_KERNELS_REF_H
#define KS_KERNELS_REF_H

#include <stdint.h>

/* out (n, D) = x * w / sqrt(mean(x^2) + eps), per row. out may alias x. */
void ks_ref_rmsnorm(float *out, const float *x, const float *w, int n, int D, float eps);

/* out (n, out_dim) = x (n, in) * w(out_dim, in)^T + bias (out_dim, or NULL). */
void ks_ref_gemm(float *out, const float *x, const float *w, const float *bias, int n, int in, int out_dim);

/* In-place rotate-half RoPE (HF `apply_rotary_pos_emb`) on x (n, heads, d), token t at position pos[t]:
 * for i < d/2, with a = x[i], b = x[i + d/2], ang = pos * inv_freq[i]:
 *   x[i] = a cos - b sin,  x[i + d/2] = b cos + a sin. */
void ks_ref_rope(float *x, const int32_t *pos, int n, int heads, int d, const float *inv_freq);

/* out (n) = silu(gate) * up, silu(g) = g / (1 + exp(-g)). out may alias gate. */
void ks_ref_swiglu(float *out, const float *gate, const float *up, int64_t n);

/* out (n, D) = table[tokens[t]] rows of table (V, D). */
void ks_ref_embed(float *out, const int32_t *tokens, int n, const float *table, int D);

/* Causal GQA attention of n queries against a head-major cache.
 *   q   (n, H, d): query t sits at absolute position q_pos0 + t.
 *   k,v (Hk, cap, d): key j of head g sits at absolute position j (uncompressed cache), j < n_kv.
 *   Query t of head h (KV head h / G) attends keys j with j <= q_pos0 + t and, if window > 0,
 *   j > q_pos0 + t - window (Mistral/Qwen2 sliding window: the last `window` positions, itself included).
 *   out (n, H, d) = softmax(q k^T * scale) v, softmax in fp32 with max subtraction. */
void ks_ref_attention(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                      int H, int Hk, int d, int q_pos0, int window, float scale);

/* One decode query per head against per-KV-head variable-length caches (compressed caches keep their
 * own lengths): q (H, d); k,v (Hk, cap, d); len (Hk) valid rows; every valid row is attended
 * (position/causality was settled when the rows were kept). out (H, d). */
void ks_ref_attention_decode(float *out, const float *q, const float *k, const float *v, const int32_t *len,
                             int cap, int H, int Hk, int d, float scale);

/* Index of the largest value (the first on ties). */
int ks_ref_argmax(const float *x, int n);

#endif
