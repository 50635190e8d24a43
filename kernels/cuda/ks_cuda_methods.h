/* ks_cuda_methods.h — the CUDA kernels behind the KV store's ops of backend/kvstore.h (window_scores,
 * attention_decode_probs, key_norms, kv_compact, v_merge, decode_evict), as a plain C interface; the references
 * they match are in kernels/cpu/ref.h (ks_ref_window_scores, ks_ref_attention_decode_probs, ks_ref_key_norms,
 * ks_ref_kv_compact, ks_ref_v_merge, ks_ref_evict_row). Conventions as kernels/cuda/ks_cuda.h: device pointers,
 * a stream, no allocation, no synchronisation; scratch sized by the caller once from the maximum shapes.
 *
 *     ks_cuda_score_args a = {.q = qkv, .ld_q = qkv_width, .kc = kc, .H = 32, .Hk = 8, .d = 128, .cap = cap,
 *                             .n_q = 32, .q_pos = L - 32, .n_keys = L, .stat = KS_SCORE_SUM,
 *                             .reduce = KS_GQA_MEAN, .scale = 0.0884f};
 *     ks_cuda_scores(out, cap, NULL, &a, lse, lse_floats, s);      // out (Hk, cap) fp32 on the device
 *
 * Scores never build the (n_q, n_keys) probability matrix: a first pass computes each query's log-sum-exp
 * (per softmax segment; split over the keys so that a short window fills the GPU), then a kernel gives each
 * thread one key and streams the queries past it, accumulating the statistic in registers. Work O(n_q * n_keys * d) per query head, memory O(n_q * H * segments).
 * Sums over 64 or more queries under one causal softmax (H2O's all-query prefill scores) run both passes on
 * tensor cores instead (window_scores_tc.cu).
 */
#ifndef KS_KERNELS_CUDA_METHODS_H
#define KS_KERNELS_CUDA_METHODS_H

#include "cuda/ks_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "block_list.h" /* ks_block_list */
#include "kv_args.h"    /* ks_score_stat, ks_gqa_reduce, ks_flexprefill_args */

/* One scoring call: n_q queries (query i of head h at q + i * ld_q + h * d, position q_pos + i) against
 * the rows of each KV head g of kc (Hk, cap, d) that it sees: j in [lo[g], hi[g]) (device arrays of Hk, or
 * NULL for 0 and n_keys; hi[g] <= cap, n_keys then only a bound that may exceed cap), j < n_keys, and either causally j <= q_pos + i (softmax_chunk == 0, one softmax
 * over those rows), or j < q_pos split into blocks of softmax_chunk rows normalised on their own (LOOM's
 * H2O). Logits q . k * scale in fp32; the statistic over the queries and the GQA reduction as
 * ks_ref_window_scores (double accumulation). d a multiple of 8 and <= 256; q, kc 16-byte aligned. */
typedef struct ks_cuda_score_args {
    const ks_bf16 *q;
    int64_t ld_q;
    const ks_bf16 *kc;
    const int32_t *lo, *hi;
    int H, Hk, d, cap;
    int n_q, q_pos, n_keys, softmax_chunk;
    ks_score_stat stat;
    float gamma;
    ks_gqa_reduce reduce;
    float scale;
    float *sums; /* optional device (Hk, ld), ld = out's: ks_window_args.sums, the group mean of each key's
                    plain causal-softmax probability summed over the queries, from the same pass (next to
                    softmax_chunk's blocks too: the window's keys then get a segment of their own); NULL: none */
    const float *lse_in; /* optional device (n_q, H): these queries' log-sum-exps over the keys they see, as
                            ks_cuda_attention_prefill's lse gives them; the tensor-core path then skips its first
                            pass (the CUDA-core kernels compute their own); NULL: computed */
} ks_cuda_score_args;

/* Floats of log-sum-exp scratch a call needs (n_q * H * (segments * (key splits + 1) + 1 with chunked sums)). */
size_t ks_cuda_scores_lse_floats(const ks_cuda_score_args *a);

/* out (Hk, ld) device fp32: columns 0 .. n_keys - 1 of row g = the reduced statistic (0 for rows no query
 * sees); KS_GQA_NONE: out (H, ld), row h query head h's statistic (sums stays (Hk, ld)). summary (device, 2
 * doubles: entropy, var_sum as ks_window_summary), when not NULL, is ADDED to for KS_SCORE_MEAN_VAR (zero it
 * first). lse: scratch of lse_floats >= ks_cuda_scores_lse_floats(a). */
ks_status ks_cuda_scores(float *out, int64_t ld, double *summary, const ks_cuda_score_args *a, float *lse,
                         size_t lse_floats, cudaStream_t s);

/* The same with the tensor-core path on its portable mma.sync kernels, which other GPUs run and Hopper runs for
 * head dim 64 (for 128 it runs wgmma); exposed so that both are tested there. */
ks_status ks_cuda_scores_sm80(float *out, int64_t ld, double *summary, const ks_cuda_score_args *a, float *lse,
                              size_t lse_floats, cudaStream_t s);

/* out (H, ld >= d) device fp32: ThinK's channel scores (ks_ref_channel_scores) of the n_q query rows q (row r at
 * q + r ld_q, heads (H, d)) against rows j < lens[g] (device) of kc (Hk, cap, d). */
ks_status ks_cuda_channel_scores(float *out, int64_t ld, const ks_bf16 *q, int64_t ld_q, int n_q, const ks_bf16 *kc,
                                 const int32_t *lens, int H, int Hk, int d, int cap, cudaStream_t s);

/* out (H, ld > a->qb) device fp32: XAttention's antidiagonal block scores of query block a->qb
 * (ks_ref_xattn_block_scores) from the chunk's a->n roped query rows q (row r at q + r ld_q, heads (H, d)) and
 * the keys below a->q_pos0 + a->n of kc (Hk, cap, d); stats: scratch of 2 H (block / stride) floats. Stride x
 * head_dim up to 16 x 256. */
ks_status ks_cuda_xattn_block_scores(float *out, int64_t ld, float *stats, const ks_bf16 *q, int64_t ld_q,
                                     const ks_bf16 *kc, int H, int Hk, int d, int cap, const ks_xattn_args *a,
                                     cudaStream_t s);

/* The device scratch of ks_cuda_xattn_blocks (all device arrays; rows = H n_qblocks of the largest chunk,
 * nb = cap / block + 1): */
typedef struct ks_cuda_xattn_work {
    ks_bf16 *q;       /* (q_elems) a slab's reordered stride queries: H (slab query blocks) block d elements */
    float *s;         /* (s_floats) the slab's stride scores: H (slab query blocks) (block / stride) rows of at
                         least cap / stride + 1; ks_cuda_xattn_slab_qblocks says how many query blocks a slab holds */
    size_t q_elems, s_floats;
    float *a;         /* (rows nb) each row's block scores */
    float *theta;     /* (H) the thresholds, uploaded by the caller */
    int32_t *cols;    /* (rows nb) each row's kept blocks at r W (W: the chunk's last query block + 1) */
    int32_t *count;   /* (rows) */
    double *coverage; /* (rows) */
} ks_cuda_xattn_work;

/* Query blocks of `block` tokens one slab of s_floats stride scores holds at this stride and capacity. */
size_t ks_cuda_xattn_slab_qblocks(size_t s_floats, int H, int block, int stride, int cap);

/* The scratch sizes for chunks of at most nq query blocks against keys up to cap: *s_floats (the stride scores
 * of a slab in at most 256 MiB, yet at least one query block at stride 8 and at most the whole chunk) and *q_elems
 * (the reordered queries of the most query blocks such a slab holds, at stride 16). */
void ks_cuda_xattn_work_size(int H, int d, int block, int cap, int nq, size_t *s_floats, size_t *q_elems);

/* XAttention's block lists of the chunk a->q_pos0 .. + a->n (ks_xattn_blocks_args; its theta is ignored: w->theta
 * holds it on the device) from its roped query rows q (row r at q + r ld_q, heads (H, d)) and kc (Hk, cap, d):
 * per slab of query blocks the stride queries reordered, their stride scores one cuBLASLt GEMM per KV head
 * (tensor cores), the block scores, then each (head, query block) row's ks_xattn_select on the device into
 * w->cols (row r = h n_qblocks + qb - qb0 at r W, W = qb0 + n_qblocks), w->count, w->coverage. Nothing waits. */
ks_status ks_cuda_xattn_blocks(ks_cuda_gemm_t *gemm, const ks_cuda_xattn_work *w, const ks_bf16 *q, int64_t ld_q,
                               const ks_bf16 *kc, int H, int Hk, int d, int cap, const ks_xattn_blocks_args *a,
                               cudaStream_t s);

/* The chunk's list on the device from ks_cuda_xattn_blocks' rows: row_start (rows + 1, device) the running sums of
 * w->count, cols (device) the rows of w->cols (row r: w->count[r] entries at r W) packed at row_start[r]. Nothing
 * waits. */
ks_status ks_cuda_xattn_pack(int32_t *row_start, int32_t *cols, const ks_cuda_xattn_work *w, int rows, int W,
                             cudaStream_t s);

/* The bound on a slab of ks_cuda_flex_work: the bytes of a slab's scores and of a slab of query-aware heads'
 * ranking (at least one KV group's, one head's). */
#define KS_CUDA_FLEX_SLAB_BYTES ((size_t)256 << 20)

/* The device scratch of ks_cuda_flex_blocks for prompts of up to cap tokens (all device arrays, placed by
 * ks_cuda_flex_work_place in one block of ks_cuda_flex_work_bytes; nb = cap / block + 1): */
typedef struct ks_cuda_flex_work {
    ks_bf16 *q;        /* (H, block, d) the last block of queries */
    float *s;          /* (region_bytes) in turn: a slab's scores (whole KV groups' block rows of cap floats in
                          128-byte lines, at most the slab bound unless one group needs more: s_floats of them), the
                          sorted vertical and slash (2 H, cap), a slab of query-aware heads' ranking (values and
                          indices of nb (nb + 1) / 2 causal blocks each, twice: at most rank_room bytes unless one
                          head needs more) */
    size_t s_floats, region_bytes, rank_room;
    void *rows;        /* (H, block) float2: each scored row's softmax max and 1 / denominator */
    float *vs;         /* (2 H, cap) each query head's vertical, then each one's slash */
    float *part;       /* (H, 2, cap) each column's mass from the scored rows in query block nb - 2, then nb - 1 */
    int *offsets;      /* (4 H) the sorts' sequence bounds */
    void *sort_tmp;    /* (sort_bytes) the covers' segmented sort scratch */
    void *rank_tmp;    /* (rank_bytes) the query-aware ranking's segmented radix sort scratch */
    size_t sort_bytes, rank_bytes;
    float *qbar, *km;  /* (H, d) the scaled mean of the last queries; (Hk, nb, d) the block mean keys */
    float *est;        /* (H, 5, nb) per head v_b, s_b, a_blk and the coverage masses of the two scored blocks */
    int32_t *cover;    /* (2 H) the covers of vertical, then of slash */
    uint32_t *mask;    /* (H, nb, ceil(nb / 32)) each head's block set, a bit per (row, column) */
    int32_t *sel;      /* (H, 2, nb + 1) each head's picked vertical columns, then slash offsets, each after its count */
    int32_t *count;    /* (H nb) each row's listed blocks */
    ks_flexprefill_stat *rec; /* (H) the per-head records */
    int H, Hk, d, block, cap; /* the shape it was placed for */
} ks_cuda_flex_work;

/* Bytes of the scratch for H query heads, Hk KV heads of dimension d, blocks of `block`, prompts up to cap, slabs
 * of at most slab_bytes (KS_CUDA_FLEX_SLAB_BYTES; less makes more slabs of the same results). */
size_t ks_cuda_flex_work_bytes(int H, int Hk, int d, int block, int cap, size_t slab_bytes);

/* w's arrays in the device block base (ks_cuda_flex_work_bytes of the same shape and slab_bytes). */
void ks_cuda_flex_work_place(ks_cuda_flex_work *w, void *base, int H, int Hk, int d, int block, int cap,
                             size_t slab_bytes);

/* The slabs ks_cuda_flex_blocks takes with w for a prompt of L tokens (host only): *score_slabs of KV groups'
 * scores, *rank_slabs of query-aware heads' ranking (where it ranks: no force_density). */
void ks_cuda_flex_slabs(const ks_cuda_flex_work *w, int L, int *score_slabs, int *rank_slabs);

/* FlexPrefill's block lists of a whole prompt (ks_flexprefill_ref, cpu/flexprefill_ref.h), estimated and chosen on
 * the device: the a->L roped query rows q (row r at q + r ld_q, heads (H, d)) against rows 0 .. a->L - 1 of kc
 * (Hk, kc_cap, d). l's row_start (H nb + 1) and cols (ks_flexprefill_max_cols) are DEVICE arrays; l gets block,
 * H, qb0 = 0, n_qblocks = nb and resident = 1. stats (H, host, may be NULL) gets each head's record, the only
 * thing that crosses to the host. One wait for s at the end; d a multiple of 8. */
ks_status ks_cuda_flex_blocks(ks_cuda_gemm_t *gemm, const ks_cuda_flex_work *w, const ks_bf16 *q, int64_t ld_q,
                              const ks_bf16 *kc, int kc_cap, const ks_flexprefill_args *a, ks_block_list *l,
                              ks_flexprefill_stat *stats, cudaStream_t s);

/* out (Hk, ld) device fp32: the L2 norm of rows j < lens[g] (device) of kc (Hk, cap, d), for j < max_len
 * (an upper bound of lens). */
ks_status ks_cuda_key_norms(float *out, int64_t ld, const ks_bf16 *kc, const int32_t *lens, int Hk, int d, int cap,
                            int max_len, cudaStream_t s);

/* Compaction of kc and vc (Hk, cap, d): head g keeps rows idx[g * ld + i], i < idx[Hk * ld + g] (device:
 * the keep lists, then the counts), moved to rows 0 .. count - 1 in order through scratch (Hk, cap, d);
 * then lens[g] = count. max_keep bounds the counts (the grid). */
ks_status ks_cuda_kv_compact(ks_bf16 *kc, ks_bf16 *vc, int32_t *lens, const int32_t *idx, int ld, int Hk, int d,
                             int cap, int max_keep, ks_bf16 *scratch, cudaStream_t s);

/* Value merging of one layer (backend/kvstore.h v_merge; reference ks_ref_v_merge), rows in place: KV head g of
 * vc (Hk, cap, d), lens[g] rows (device), applies its count[g] entries list[g * ld + i] (device; sources strictly
 * increasing) in order, V[r] += weight * V[src] for the span rows after src, in fp32, stored as bf16 (a source is
 * read as stored, after the earlier entries' additions). norms (device, 2 doubles: ks_merge_norms' v_sq, dv_sq
 * over every head's rows), when not NULL, is ADDED to (zero it first). A thread per (KV head, channel) walks the
 * rows in order: about one memory latency per row the entries reach (every row with norms). */
ks_status ks_cuda_v_merge(ks_bf16 *vc, const ks_merge *list, const int32_t *count, int ld, int span,
                          const int32_t *lens, int Hk, int d, int cap, double *norms, cudaStream_t s);

/* Decode-time eviction of one layer (backend/kvstore.h decode_evict): each KV head g of kc, vc (Hk, cap, d)
 * holding more than a->keep rows (lens[g], device, the step's own row counted) drops the row ks_ref_evict_row
 * picks and the rows after it move down by one (ks_kvcache_drop_row), lens[g] decreasing; drop (Hk, device)
 * receives the row, or -1. G: query heads per KV head. p: the step query's probabilities, (Hk, ld_p) reduced for
 * POOLED, (Hk G, ld_p) per query head for ACCUMULATED (not read by SINK). scores (Hk G, ld_s): ACCUMULATED's
 * running scores per query head, updated for every row, reduced over each group (a->reduce) to choose, and
 * shifted with the rows (other rules: not touched, may be NULL). max_len >= every length (the grid). scratch
 * (Hk, cap, d) bf16 and score_scratch (Hk G, cap) fp32 hold a row per tile of 32 between the two passes of the
 * move. */
ks_status ks_cuda_decode_evict(ks_bf16 *kc, ks_bf16 *vc, int32_t *lens, int32_t *drop, const float *p, int64_t ld_p,
                               float *scores, int64_t ld_s, const ks_evict_args *a, int Hk, int G, int d, int cap,
                               int max_len, ks_bf16 *scratch, float *score_scratch, cudaStream_t s);

/* A method's running scores (rows, ld) of a layer (one row per query head), summed chunk by chunk on the device
 * (reference ks_row_scores_fold): column j < n_keys of each row gets add[r * ld_add + j] added when
 * j < first_new, written otherwise. */
ks_status ks_cuda_row_scores_fold(float *scores, int64_t ld, const float *add, int64_t ld_add, int rows,
                                  int first_new, int n_keys, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
