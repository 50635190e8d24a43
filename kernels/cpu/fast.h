/* fast.h — the fast CPU paths behind the CPU backend: OpenBLAS GEMMs and OpenMP loops. Same layouts and
 * contracts as ref.h (read that first); tests/check_kernels.c compares each one to its ref.h twin on random
 * inputs of odd sizes. Ops that have no faster form than the reference (embed, argmax, key_norms, kv_compact)
 * are not repeated here.
 *
 *     ks_fast_set_threads(2);                                   // OpenMP threads (OpenBLAS: 1 inside each)
 *     ks_fast_gemm(y, x, w, b, n, in, out, 1);                  // y += x w^T + b  (the residual add, fused)
 *     ks_fast_attention(o, q, k, v, n, n_kv, cap, H, Hk, d, pos0, window, scale, NULL);
 *
 * Attention is computed flash-style (online softmax over key blocks) with fixed-size stack tiles: no
 * allocation and O(1) memory in the context length. head_dim is at most KS_FAST_MAX_HEAD_DIM.
 */
#ifndef KS_KERNELS_FAST_H
#define KS_KERNELS_FAST_H

#include <stdint.h>

#include "cpu/ref.h"
#include "kivi_args.h" /* ks_kivi_head, ks_kivi_shape */

#define KS_FAST_MAX_HEAD_DIM 256

/* Threads for the OpenMP loops: n, or for n <= 0 OMP_NUM_THREADS where set, else the physical cores this
 * process may run on (a second hardware thread of a core adds no memory bandwidth or FMA units to these loops,
 * only another thread to wait for); OpenBLAS is set to one thread because the GEMMs are split over the OpenMP
 * threads. Call before the other ops. */
void ks_fast_set_threads(int n);

/* The cores (not hardware threads) among the CPUs this process may run on (sched_getaffinity, sysfs topology). */
int ks_fast_physical_cores(void);

/* When OpenBLAS picked pre-AVX2 kernels on a CPU that has AVX2/AVX-512 (it does not know every CPU model), the
 * OPENBLAS_CORETYPE value that would use them ("Haswell", "SkylakeX"); else NULL. Read at program start by
 * OpenBLAS, so it can only be advised, not changed from here. */
const char *ks_fast_blas_coretype_hint(void);

void ks_fast_rmsnorm(float *out, const float *x, const float *w, int n, int D, float eps);

/* out (n, out_dim) = x w^T + bias, or with accumulate != 0: out += x w^T + bias. bias may be NULL. */
void ks_fast_gemm(float *out, const float *x, const float *w, const float *bias, int n, int in, int out_dim,
                  int accumulate);
/* ks_fast_gemm's contract, each of the n rows computed exactly as ks_fast_gemm computes one row alone (a batched
 * decode step's rows get their unbatched numbers): each thread runs its slice of W against every row in turn, so
 * the slice is read from memory once for the n rows while it stays in cache. */
void ks_fast_gemm_rows(float *out, const float *x, const float *w, const float *bias, int n, int in, int out_dim,
                       int accumulate);

void ks_fast_rope(float *x, const int32_t *pos, int n, int heads, int d, const float *inv_freq);

void ks_fast_swiglu(float *out, const float *gate, const float *up, int64_t n);

/* ks_ref_attention's contract (causal, GQA, optional sliding window, chunk offset q_pos0). lse (n, H), when not
 * NULL, receives each query row's log-sum-exp of its scaled logits over the keys it attended, so that a second
 * pass over the same queries (ks_fast_window_scores) can normalise without recomputing it. */
void ks_fast_attention(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                       int H, int Hk, int d, int q_pos0, int window, float scale, float *lse);

/* ks_ref_attention_sparse's contract (block_list.h): each (query head, query block) row's listed key blocks
 * only; a full list walks the same keys in the same order as ks_fast_attention. No log-sum-exps (they would not
 * be the dense softmax's). */
void ks_fast_attention_sparse(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                              int H, int Hk, int d, int q_pos0, int window, float scale, const ks_block_list *l);

/* ks_ref_xattn_block_scores's contract (cpu/xattn_ref.h): the block's stride rows against every stride column
 * as one GEMM per query head. block / stride is at most 64. */
void ks_fast_xattn_block_scores(float *out, int ld, const float *q, const float *k, int H, int Hk, int d, int cap,
                                const ks_xattn_args *a);

/* ks_ref_attention_decode's contract, except that KV head g attends rows [start[g], len[g]) (start NULL = 0):
 * a sliding-window model's decode query skips the rows that fell out of its window. */
void ks_fast_attention_decode(float *out, const float *q, const float *k, const float *v, const int32_t *start,
                              const int32_t *len, int cap, int H, int Hk, int d, float scale);

/* ks_fast_attention_decode's arguments, for callers that run its work on threads of their own: the attention is
 * ks_fast_attention_decode_items(a) independent items (a KV head's tile of query rows), each computed by
 * ks_fast_attention_decode_item the same whichever thread runs it. */
typedef struct ks_attention_decode {
    float *out;
    const float *q, *k, *v;
    const int32_t *start, *len;
    int cap, H, Hk, d;
    float scale;
} ks_attention_decode;

int ks_fast_attention_decode_items(const ks_attention_decode *a);
void ks_fast_attention_decode_item(const ks_attention_decode *a, int item);

/* ks_ref_window_scores's contract; work holds (2 * H, ld) floats of per-query-head statistics. lse (rows of q,
 * H), when not NULL, is ks_fast_attention's log-sum-exp of the same queries over the same keys (causal, no
 * sliding window): it saves the first of the two passes over the keys. Ignored with a->softmax_chunk > 0. */
void ks_fast_window_scores(float *out, int ld, ks_window_summary *sum, const float *q, const float *k, int H, int Hk,
                           int d, int cap, float scale, const ks_window_args *a, const float *lse, float *work);

/* ks_kivi_attention_decode's contract (kivi_ref.h: KIVI's packed tokens and full-precision rows), the tiles'
 * products as GEMMs. */
void ks_fast_kivi_attention_decode(float *out, const float *q, const ks_kivi_head *heads, const ks_kivi_shape *s,
                                   int H, int Hk, float scale);

/* ks_ref_attention_decode_probs's contract; work holds (H, ld) floats. */
void ks_fast_attention_decode_probs(float *out, int ld, const float *q, const float *k, const int32_t *start,
                                    const int32_t *len, int cap, int H, int Hk, int d, float scale,
                                    ks_gqa_reduce reduce, float *work);

#endif
