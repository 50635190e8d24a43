/* kv_args.h — the argument types of the KV-store ops (src/backend/kvstore.h): what a window score, a GQA
 * reduction, a decode-time eviction and FlexPrefill's block selection mean, shared by the stores that run them
 * (src/backend), the references (cpu/ref.h, cpu/flexprefill_ref.h) and the kernels (cuda/ks_cuda_methods.h). It
 * includes nothing of the project, so every folder may include it without a cycle: the backend defines the ops
 * with these types, and the kernels below it implement them.
 *
 *     ks_window_args a = {.n_q = W, .stat = KS_SCORE_SUM, .reduce = KS_GQA_MEAN};  // SnapKV's window scores
 *     ks_evict_args e = {.rule = KS_EVICT_SINK, .keep = start + recent, .head = start, .tail = recent};
 *
 * Scores are computed per query head and then reduced over the G query heads of each KV head's group, so a
 * method selects one set of rows per KV head (one stored copy, as GQA intends). A score summed over several
 * calls (H2O's over prompt chunks and decode steps) is summed per query head and reduced only when rows are
 * chosen: the reduction of sums, which for max is not the sum of reductions (KS_GQA_NONE, ks_gqa_reduce_col).
 */
#ifndef KS_KERNELS_KV_ARGS_H
#define KS_KERNELS_KV_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* How the G query heads of a KV head's group combine. KS_GQA_NONE: they do not; an op's output then has one
 * row per query head, (H, ld) where the reduced form has (Hk, ld), row h for query head h (group h / G). */
typedef enum ks_gqa_reduce { KS_GQA_MEAN, KS_GQA_MAX, KS_GQA_SUM, KS_GQA_NONE } ks_gqa_reduce;

#ifdef __CUDACC__
#define KS_HOST_DEVICE __host__ __device__
#else
#define KS_HOST_DEVICE
#endif

/* The reduction of one column of a group's per-query-head rows, x[0], x[stride], .. x[(G - 1) stride]: left to
 * right in fp32, the mean dividing their sum by G (reduce != KS_GQA_NONE). The one order every backend and the
 * fast CPU kernels reduce in, so equal per-query-head values give equal scores everywhere. */
KS_HOST_DEVICE static inline float ks_gqa_reduce_col(const float *x, size_t stride, int G, ks_gqa_reduce reduce) {
    float v = x[0];
    for (int i = 1; i < G; i++) {
        float y = x[(size_t)i * stride];
        v = reduce == KS_GQA_MAX ? (y > v ? y : v) : v + y;
    }
    return reduce == KS_GQA_MEAN ? v / G : v;
}

/* What window_scores computes per (query head, key) from the scored queries' probabilities p_i[j]. */
typedef enum ks_score_stat {
    KS_SCORE_SUM,      /* sum_i p_i[j] (SnapKV, PyramidKV, H2O) */
    KS_SCORE_MEAN_VAR, /* mean_i p_i[j] + gamma * var_i p_i[j], unbiased variance, 0 for one query (CakeKV) */
} ks_score_stat;

typedef struct ks_window_args {
    int q_row0, n_q;   /* the scored queries: rows q_row0 .. q_row0 + n_q - 1 of q */
    int q_pos0;        /* absolute position of q's row 0 (row r sits at q_pos0 + r) */
    int n_keys;        /* keys 0 .. n_keys - 1 of a dense cache (key j at position j); out has n_keys columns */
    int softmax_chunk; /* 0: each query's softmax over the keys it sees (j <= its position), the causal mask
                          inside the window; > 0 (LOOM's H2O): only the keys before the first scored query
                          ("past" keys) are scored, each consecutive block of softmax_chunk of them normalised
                          on its own; later keys get 0 */
    ks_score_stat stat;
    float gamma;            /* KS_SCORE_MEAN_VAR: weight of the variance */
    ks_gqa_reduce reduce;   /* over the G query heads of a KV head; KS_GQA_NONE: out has H rows */
    int accumulate;         /* 1: out += the scores (H2O summing chunk after chunk); 0: out = */
    float *sums;            /* optional second output (Hk, ld) like out, always `=`: each key's probability
                               under the plain causal softmax (softmax_chunk 0) summed over the scored queries
                               and averaged over the group — what stat KS_SCORE_SUM, reduce KS_GQA_MEAN,
                               softmax_chunk 0 writes — so a method scoring with another statistic or LOOM's
                               chunked softmax gets the observation-window mass of its statistics from the same
                               pass (CakeKV, H2O variant loom); NULL: none. Host memory for the backend ops and
                               the CPU kernels. */
} ks_window_args;

/* The arguments of row_scores_add's scoring (backend/kvstore.h): the scores alone, per query head, written
 * (`=`), no sums. */
static inline ks_window_args ks_window_scores_only(const ks_window_args *a) {
    ks_window_args p = *a;
    p.reduce = KS_GQA_NONE, p.accumulate = 0, p.sums = NULL;
    return p;
}

/* KS_SCORE_MEAN_VAR's layer summary over the past keys (j < q_pos0 + q_row0), summed over every query head:
 * CakeKV's spatial dispersion and temporal shift. */
typedef struct ks_window_summary {
    double entropy; /* sum over heads, queries, past keys of -p log(p + 1e-10) */
    double var_sum; /* sum over heads and past keys of var_i p_i[j] */
} ks_window_summary;

/* Decode-time eviction (backend/kvstore.h decode_evict): the row of one KV head a decode step drops
 * (ks_ref_evict_row in cpu/ref.h is its reference). */
typedef enum ks_evict_rule {
    KS_EVICT_SINK,        /* StreamingLLM: row `head`, the first after the attention sinks */
    KS_EVICT_ACCUMULATED, /* H2O: each query head's running score of every row takes that head's probability (the
                             appended row len - 1 starting at 0), then the lowest reduction of them over the
                             group */
    KS_EVICT_POOLED,      /* CakeKV: p average-pooled over rows [0, len - tail) (odd `kernel`, zero padding, the
                             divisor always `kernel`), then the lowest pooled value */
} ks_evict_rule;

typedef struct ks_evict_args {
    ks_evict_rule rule;
    int keep;             /* a head holding more than keep rows drops one (callers keep len <= keep + 1) */
    int head, tail;       /* rows [0, head) and the last `tail` rows are never dropped */
    int kernel;           /* POOLED: the pooling width */
    ks_gqa_reduce reduce; /* POOLED: how p reduces the group (ks_ref_attention_decode_probs); ACCUMULATED: how
                             the group's running scores reduce when a row is chosen (ks_gqa_reduce_col) */
} ks_evict_args;

/* Value merging (backend/kvstore.h v_merge; CaM): one entry of a KV head's merge list, "add weight * V[src] to
 * each of the `span` rows after src". A head's entries are applied in list order, sources strictly increasing,
 * so a later entry's source value already holds what the earlier entries added to it (CaM's sequential rule). */
typedef struct ks_merge {
    int32_t src;  /* the source row (a row index of the head, not a position) */
    float weight; /* V[r] += weight * V[src] for r = src + 1 .. src + span, rows past the head's length skipped */
} ks_merge;

/* What a merge changed, summed over every KV head, row and channel of the layer (for ||dV|| / ||V||). */
typedef struct ks_merge_norms {
    double v_sq;  /* sum of V^2 over the rows the heads hold, before the merge */
    double dv_sq; /* sum of (V after - V before)^2 */
} ks_merge_norms;

/* FlexPrefill's block selection (kvstore.h flex_blocks; the algorithm: cpu/flexprefill_ref.h). */
typedef struct ks_flexprefill_args {
    int block;           /* B, tokens per block */
    float gamma;         /* coverage of the vertical/slash counts and of the query-aware fill, (0, 1] */
    float tau;           /* the query-aware threshold on d_JS */
    int min_budget;      /* tokens; mb = ceil(min_budget / B) blocks, >= 1 */
    int max_budget;      /* tokens; Mb = min(ceil(max_budget / B), nb); <= 0: no bound */
    float force_density; /* 0: FlexPrefill's own choice; (0, 1]: the fraction of each row's causal blocks */
    int H, Hk, d, L;     /* query heads, KV heads, head dimension, prompt length */
} ks_flexprefill_args;

typedef enum ks_flexprefill_pattern {
    KS_FLEX_DENSE,          /* the prompt is too short: the full list */
    KS_FLEX_VERTICAL_SLASH, /* d_JS >= tau */
    KS_FLEX_QUERY_AWARE,    /* d_JS < tau */
    KS_FLEX_FORCED,         /* force_density */
} ks_flexprefill_pattern;

/* One query head's record of a selection. */
typedef struct ks_flexprefill_stat {
    ks_flexprefill_pattern pattern;
    float d_js;       /* the square-root Jensen-Shannon divergence of step 5 */
    int n_v, n_s;     /* vertical blocks and slash offsets kept, the forced ones included */
    int64_t blocks;   /* blocks listed over all rows */
    float sparsity;   /* 1 - blocks / (nb (nb + 1) / 2) */
    float coverage;   /* the scored queries' mass on listed blocks */
} ks_flexprefill_stat;

/* An unsigned key whose order is the float order, NaN lowest and -0 = +0: the order of the methods' top-k
 * (methods/select.h) and of the row an eviction drops. */
static inline uint32_t ks_order_key(float x) {
    if (x != x) return 0; /* NaN */
    union {
        float f;
        uint32_t u;
    } v = {x == 0 ? 0.0f : x}; /* -0 -> +0 */
    return v.u & 0x80000000u ? ~v.u : v.u | 0x80000000u;
}

/* XAttention's antidiagonal block scores (kvstore.h xattn_scores, cpu/xattn_ref.h): query block `qb` of the
 * chunk whose n roped queries (Q rows 0 .. n - 1) sit at positions q_pos0 .. q_pos0 + n - 1, against a layer's
 * dense keys 0 .. q_pos0 + n - 1, in blocks of `block` tokens and stride groups of `stride` (which divides
 * block); `scale` multiplies each stride score (XAttention: 1 / (sqrt(d) stride)). */
typedef struct ks_xattn_args {
    int q_pos0, n; /* the chunk */
    int qb;        /* the query block scored: q_pos0 / block <= qb <= (q_pos0 + n - 1) / block */
    int block, stride;
    float scale;
} ks_xattn_args;

/* XAttention's block lists of a whole chunk (kvstore.h xattn_blocks): every query block of the chunk (positions
 * q_pos0 .. q_pos0 + n - 1, its roped queries in Q rows 0 .. n - 1) scored as ks_xattn_args says, and each
 * (query head, query block) row's choice by ks_xattn_select (cpu/xattn_ref.h) with theta[h] (H values), or
 * density > 0 instead. */
typedef struct ks_xattn_blocks_args {
    int q_pos0, n;
    int block, stride;
    float scale;
    const float *theta; /* (H) host */
    float density;
} ks_xattn_blocks_args;

#endif
