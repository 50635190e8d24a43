/* flexprefill_ref.h — FlexPrefill's block selection on the host: the readable reference of its estimation, which
 * turns one layer's whole-prompt queries and keys into the block list (block_list.h) its sparse prefill attends
 * with, and per-head statistics. The ground truth of the GPU estimator; the method (src/methods/flexprefill.c)
 * calls it on the CPU backend.
 *
 *     ks_flexprefill_args a = {.block = 128, .gamma = 0.9f, .tau = 0.1f, .min_budget = 512, .max_budget = 32768,
 *                              .H = H, .Hk = Hk, .d = d, .L = L};
 *     ks_block_list l = {.row_start = malloc((H * nb + 1) * 4), .cols = malloc(ks_flexprefill_max_cols(&a) * 4)};
 *     ks_flexprefill_ref(&l, stats, q, k, cap, &a);   // nb = ks_flexprefill_blocks(&a); stats: H of them
 *
 * Inputs: q (L, H, d), token-major as the projections produce them, roped; k the layer's head-major cache
 * (Hk, cap, d), rows 0 .. L - 1 of each KV head (the whole prompt's keys live there during a layer-major prefill;
 * the K buffer holds one chunk). Query head h reads KV head h / (H / Hk). The list covers query blocks
 * 0 .. nb - 1, nb = ceil(L / B) (qb0 = 0); the caller owns its arrays (row_start H nb + 1 entries, cols
 * ks_flexprefill_max_cols). The function allocates its scratch.
 *
 * Per head, with mb = ceil(min_budget / B), Mb = min(ceil(max_budget / B), nb) (max_budget <= 0: nb):
 *  0. L <= max(2B, mb B): the full list (pattern DENSE).
 *  1. Scoring: the last B queries, each multiplied by 1/sqrt(d) (whatever the attention's scale), against all L
 *     keys, the causal B x B corner masked; softmax over the keys in fp32: A (B, L).
 *  2. vertical_j = mean_i A_ij; slash_j = the sum of A along the diagonal through (last query, key j), over B.
 *  3. Counts: n_v = cover(vertical) / 128 + 1 (integer division by the literal 128, whatever B is), clamped to
 *     [mb, Mb] (the lower bound first); n_s likewise from slash. cover(x) = 1 + how many prefix sums of x sorted
 *     descending are <= gamma times x's total (the total is 1 up to rounding; against it gamma = 1 counts every
 *     token exactly).
 *  4. vertical and slash sum-pooled into blocks of B tokens (the last block partial): v_b (nb), s_b (nb), s_b[b]
 *     the diagonals through the last query's key block b, i.e. block offset nb - 1 - b.
 *  5. The query-aware test: a = softmax over the nb blocks of (mean of the scaled last-B queries) . (mean key of
 *     each block); d_JS = sqrt(KL(a || m) / 2 + KL(v_b || m) / 2), m = (a + v_b) / 2, 0 log 0 = 0. d_JS < tau:
 *     the head is QUERY_AWARE, n_v = n_s = mb, and it adds the blocks of the block attention (the per-block
 *     mean queries, scaled by 1/sqrt(d), against the per-block mean keys, softmax over each row's causal blocks
 *     c <= i, fp32) in descending order while the running sum stays <= gamma times the total (nb up to
 *     rounding); blocks above the diagonal have no probability and are never listed. Else VERTICAL_SLASH.
 *  6. Vertical block 0 and slash offset 0 (the diagonal) always, counted in n_v and n_s; then the other
 *     top-(n_v - 1) vertical blocks v, each listed as (row i, col v) for every i >= v, and the other
 *     top-(n_s - 1) slash offsets s, each as (row i + s, col i) for every row in range; ties go to the lower
 *     pooled index. The union per head, ascending per row.
 *
 * force_density f in (0, 1] (speed benchmarks: a density fixed whatever the attention looks like) replaces 3,
 * 5 and 6 (pattern FORCED): row i keeps column 0, the diagonal and the columns c of the best v_b[c] +
 * s_b[nb - 1 - (i - c)] (ties to the lower c) until it holds ceil(f (i + 1)) (fp32) of its i + 1 causal blocks,
 * at least min(2, i + 1). Step 0 still applies: a prompt that short stays dense.
 *
 * Statistics per head: the pattern, d_JS (also computed for FORCED; 0 for DENSE), n_v and n_s (0 for DENSE and
 * FORCED), the blocks listed, the sparsity 1 - blocks / (nb (nb + 1) / 2), and the coverage: A's mass on
 * the keys of the blocks each scored query's row lists, averaged over the B scored queries (1 for DENSE).
 */
#ifndef KS_KERNELS_FLEXPREFILL_REF_H
#define KS_KERNELS_FLEXPREFILL_REF_H

#include <stddef.h>
#include <stdint.h>

#include "block_list.h"
#include "kv_args.h" /* ks_flexprefill_args, ks_flexprefill_stat */

/* The literal divisor of step 3 (FlexPrefill divides token counts by 128 whatever the block size). */
#define KS_FLEXPREFILL_COUNT_DIV 128

/* NULL when a is usable, else a message naming the field (block >= 1, gamma in (0, 1], min_budget >= 1,
 * force_density in [0, 1], 1 <= Hk <= H with H % Hk == 0, d >= 1, L >= 1). */
const char *ks_flexprefill_check(const ks_flexprefill_args *a);

/* nb = ceil(L / B), the query (and key) blocks of the prompt. */
int ks_flexprefill_blocks(const ks_flexprefill_args *a);

/* Entries cols may need: H nb (nb + 1) / 2, the full list. */
size_t ks_flexprefill_max_cols(const ks_flexprefill_args *a);

/* 1 when the prompt takes dense attention (step 0). */
int ks_flexprefill_is_dense(const ks_flexprefill_args *a);

/* The whole estimation: l's arrays filled for query blocks 0 .. nb - 1 (block, H, qb0 = 0, n_qblocks = nb set),
 * stats (H, may be NULL) per head. */
void ks_flexprefill_ref(ks_block_list *l, ks_flexprefill_stat *stats, const float *q, const float *k, int cap,
                        const ks_flexprefill_args *a);

/* The full list of query blocks 0 .. nb - 1 into l (block, H, qb0 = 0, n_qblocks = nb set) and DENSE records
 * into stats (H, may be NULL): step 0's outcome. */
void ks_flexprefill_list_full(ks_block_list *l, ks_flexprefill_stat *stats, const ks_flexprefill_args *a);

/* ---- one head's choice from its estimates (steps 3, 5 and 6; the CUDA store estimates on the device and
 * chooses with these, so both stores list the same blocks from the same estimates) -------------------------- */

/* Steps 3 and 5's decision from a_blk and v_b (nb each) and the covers of vertical and slash (ignored for
 * force_density): the pattern, d_JS, n_v and n_s (the rest of the record 0). */
ks_flexprefill_stat ks_flexprefill_decide(const float *a_blk, const float *v_b, int cover_v, int cover_s,
                                          const ks_flexprefill_args *a);

/* The decided head's block set into mask (nb, nb; cleared first): FORCED's rows, or the query-aware fill of the
 * ranked block attention (rank_v, rank_at: ks_flexprefill_rank_causal's; read only for QUERY_AWARE) and step 6. */
void ks_flexprefill_mark(uint8_t *mask, const ks_flexprefill_stat *st, const float *v_b, const float *s_b,
                         const float *rank_v, const int32_t *rank_at, const ks_flexprefill_args *a);

/* Head h's rows of mask (nb, nb) into l, ascending per row, cols from *off on (advanced), row_start entries
 * h nb + 1 .. (h + 1) nb; st->blocks and st->sparsity set. */
void ks_flexprefill_emit(ks_block_list *l, ks_flexprefill_stat *st, const uint8_t *mask, int h, int nb,
                         int32_t *off);

/* ---- the steps, each the reference of its own (tests drive them with hand-built inputs) ----------------- */

/* Step 3's cover(x) over x (n). */
int ks_flexprefill_cover(const float *x, int n, float gamma);

/* Step 3's count from a cover: cover / 128 + 1, raised to mb, then lowered to Mb. */
int ks_flexprefill_count(int cover, int mb, int Mb);

/* Step 5's d_JS of two distributions p, q (n). */
float ks_flexprefill_js(const float *p, const float *q, int n);

/* Step 1-2 for query head h: vertical (L) and slash (L). */
void ks_flexprefill_score(float *vertical, float *slash, const float *q, const float *k, int cap, int h,
                          const ks_flexprefill_args *a);

/* Step 6 into mask (nb, nb; row i, column c; set entries to 1, never cleared): column 0, the diagonal, the
 * top-(n_v - 1) other vertical blocks of v_b (nb) and the top-(n_s - 1) other slash offsets of s_b (nb). */
void ks_flexprefill_mark_vertical_slash(uint8_t *mask, const float *v_b, const float *s_b, int nb, int n_v,
                                        int n_s);

/* Step 5's fill into mask (nb, nb): p (nb, nb) the block attention, row i's causal entries c <= i a softmax
 * (entries above the diagonal are not read); the causal blocks in descending p (ties to the lower row, then
 * column) while the running sum stays <= gamma times their total. */
void ks_flexprefill_mark_query_aware(uint8_t *mask, const float *p, int nb, float gamma);

/* Step 5's ranking of the block attention p (nb, nb; row i's causal entries c <= i): its nb (nb + 1) / 2 causal
 * entries in descending p, ties to the lower row, then column, as v (the values) and at (each one's index
 * i nb + c in p and the mask). */
void ks_flexprefill_rank_causal(float *v, int32_t *at, const float *p, int nb);

/* Step 5's fill into mask from a ranking of n entries (v, at as ks_flexprefill_rank_causal gives them): the
 * ranked blocks while the running sum stays <= gamma times their total (sums in fp64, in the ranking's order).
 * ks_flexprefill_mark_query_aware is the ranking, then this. */
void ks_flexprefill_fill_ranked(uint8_t *mask, const float *v, const int32_t *at, int n, float gamma);

/* force_density's rows into mask (nb, nb), from v_b and s_b. */
void ks_flexprefill_mark_forced(uint8_t *mask, const float *v_b, const float *s_b, int nb, float f);

#endif
