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

#include <stddef.h>
#include <stdint.h>

#include "block_list.h" /* the block lists of sparse prefill */
#include "kv_args.h"    /* the argument types of the KV-cache compression ops */

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

/* Block-sparse causal prefill: ks_ref_attention restricted to the key blocks l lists for each query's (head,
 * query block) row (block_list.h); the causal mask and window still apply inside a listed block. A full list
 * gives ks_ref_attention's output. */
void ks_ref_attention_sparse(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                             int H, int Hk, int d, int q_pos0, int window, float scale, const ks_block_list *l);

/* One decode query per head against per-KV-head variable-length caches (compressed caches keep their
 * own lengths): q (H, d); k,v (Hk, cap, d); len (Hk) valid rows; every valid row is attended
 * (position/causality was settled when the rows were kept). out (H, d). */
void ks_ref_attention_decode(float *out, const float *q, const float *k, const float *v, const int32_t *len,
                             int cap, int H, int Hk, int d, float scale);

/* Index of the largest value (the first on ties). */
int ks_ref_argmax(const float *x, int n);

/* ---- KV-cache compression ops (src/backend/kvstore.h), with the argument types of kv_args.h ---------- */

/* The arguments whose `out` is exactly what a->sums receives (the plain causal softmax's query sums, group
 * mean, written with `=`): how the CPU kernels produce sums next to LOOM's chunked softmax. */
static inline ks_window_args ks_window_sums_args(const ks_window_args *a) {
    ks_window_args p = *a;
    p.softmax_chunk = 0, p.stat = KS_SCORE_SUM, p.reduce = KS_GQA_MEAN, p.accumulate = 0, p.sums = NULL;
    return p;
}

/* Observation-window scores without any L x L matrix: the softmax of each scored query of q (n, H, d) against
 * keys k (Hk, cap, d) times scale (fp32), turned into one statistic per (query head, key) and reduced over the
 * group into out (Hk, ld): row g, columns 0 .. n_keys - 1 (KS_GQA_NONE: out (H, ld), row h the statistic of
 * query head h; a->sums stays (Hk, ld)). sum (may be NULL) receives the summary for
 * KS_SCORE_MEAN_VAR (zeros otherwise). Cost O(n_q * n_keys * d) per head. The reference allocates. */
void ks_ref_window_scores(float *out, int ld, ks_window_summary *sum, const float *q, const float *k, int H, int Hk,
                          int d, int cap, float scale, const ks_window_args *a);

/* The probabilities ks_ref_attention_decode's softmax gives the single query q (H, d) on each KV head's rows
 * [start[g], len[g]) (start NULL = 0), reduced over the group: out (Hk, ld), row g holds len[g] values with
 * 0 before start[g] (KS_GQA_NONE: out (H, ld), row h query head h's, len[h / G] values). (H2O's accumulated
 * heavy-hitter scores, per query head, and CakeKV's decode eviction read these.) */
void ks_ref_attention_decode_probs(float *out, int ld, const float *q, const float *k, const int32_t *start,
                                   const int32_t *len, int cap, int H, int Hk, int d, float scale,
                                   ks_gqa_reduce reduce);

/* The row one KV head of len rows drops this step, or -1 when len <= keep. POOLED: p (len) the step query's
 * probabilities reduced over the group. ACCUMULATED: p and scores hold G rows of stride ld, one per query head
 * of the group: the step's probabilities, and the running scores, which take them in place (every step,
 * dropping or not: scores[i ld + j] += p[i ld + j], the appended row starting at 0); a row's score is the
 * reduction of its G running scores (a->reduce, ks_gqa_reduce_col). "Lowest" among rows [head, len - tail) in
 * ks_select_topk's order (NaN lowest, -0 = +0), the latest of equal lowest: what keeping the top
 * keep - tail - head of them plus the protected rows leaves out. G and ld serve ACCUMULATED only. */
int ks_ref_evict_row(const ks_evict_args *a, int len, const float *p, float *scores, int G, int ld);

/* ThinK's query-driven channel scores: out (H, ld >= d), row i for query head i of KV head g = i / (H / Hk): for
 * channel c, the mean over the n_q query rows of q (n_q, H, d) of q[r, i, c]^2 times the mean over the len[g] key
 * rows of k (Hk, cap, d) of k[g, j, c]^2 (0 when the head holds no rows): ||Q[:, c] K[:, c]^T||_F^2 over the
 * rows' count product, the energy channel c carries into the logits. */
void ks_ref_channel_scores(float *out, int ld, const float *q, int n_q, const float *k, const int32_t *len, int cap,
                           int H, int Hk, int d);

/* out (Hk, ld): the L2 norm of each of the len[g] valid key rows of k (Hk, cap, d). */
void ks_ref_key_norms(float *out, int ld, const float *k, const int32_t *len, int cap, int Hk, int d);

/* Physical compaction of a head-major cache: KV head g keeps its rows keep[g * ld + i], i < n_keep[g]
 * (strictly increasing), which move to rows 0 .. n_keep[g] - 1 of k and v (Hk, cap, d), in order. Rows past
 * n_keep[g] are left as they are (free capacity). Lengths and positions are the caller's bookkeeping. */
void ks_ref_kv_compact(float *k, float *v, const int32_t *keep, const int32_t *n_keep, int ld, int cap, int Hk,
                       int d);

/* Value merging (CaM): KV head g's n[g] entries list[g * ld + i] (sources strictly increasing, kv_args.h
 * ks_merge) applied in order to v (Hk, cap, d), len[g] valid rows: V[r] += weight * V[src] for r = src + 1 ..
 * min(src + span, len[g]) - 1, each entry reading its source after the earlier entries' additions. Computed row
 * by row, in place: row j's value is its own plus, in list order, weight * V[src] of every entry with
 * src < j <= src + span, where V[src] is already final (every entry adding to it comes earlier in the list): the
 * same fp32 additions in the same order as applying the entries one after another. Keys are not touched. norms
 * (may be NULL) is added to (ks_merge_norms over the len[g] rows of every head). */
void ks_ref_v_merge(float *v, const ks_merge *list, const int32_t *n, int ld, int span, const int32_t *len, int cap,
                    int Hk, int d, ks_merge_norms *norms);

#endif
