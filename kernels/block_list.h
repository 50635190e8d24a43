/* block_list.h — per-head block lists for block-sparse causal prefill (FlexPrefill, XAttention): the argument
 * the forward pass hands to the prefill attention in place of "every key", shared by the CPU reference
 * (cpu/ref.h ks_ref_attention_sparse), the CUDA kernel and the methods that build the lists. Includes nothing of
 * the project.
 *
 * Blocks are absolute: key block kb holds positions [kb B, (kb + 1) B); query block qb the queries at positions
 * [qb B, (qb + 1) B). A prefill chunk of n queries at positions q_pos0 .. q_pos0 + n - 1 covers the query blocks
 * qb0 = q_pos0 / B .. (q_pos0 + n - 1) / B (a chunk need not start on a block edge: its first and last query
 * blocks may be partial), n_qblocks of them.
 *
 * Row r = h * n_qblocks + (qb - qb0) (query head h; GQA: the kernel reads KV head h / (H / Hk), no copies) lists
 * its key blocks in cols[row_start[r] .. row_start[r + 1]), strictly ascending, each <= qb. Inside a listed
 * block the usual causal mask (and a sliding window, if the model has one) still applies, so the diagonal block
 * is masked there. A query whose row lists no visible key gets 0, as the dense kernel gives a query with no key.
 * The full list (every kb <= qb on every row) is exactly the dense causal attention.
 *
 * A resident list (resident = 1) lives on the device of the backend whose KV store built it: the CUDA store's
 * estimations write the offsets and columns into that backend's device arrays, which its sparse attention reads
 * in place, and the host arrays row_start and cols hold nothing. */
#ifndef KS_BLOCK_LIST_H
#define KS_BLOCK_LIST_H

#include <stdint.h>

typedef struct {
    int block;          /* B, tokens per block (128, or 64 where a method allows) */
    int H;              /* query heads */
    int qb0;            /* the chunk's first query block */
    int n_qblocks;      /* query blocks of the chunk */
    int32_t *row_start; /* (H * n_qblocks + 1) offsets into cols */
    int32_t *cols;      /* key block indices, row by row */
    int resident;       /* 1: the list is in the building backend's device arrays, row_start and cols unfilled */
} ks_block_list;

/* The row of query head h and absolute query block qb. */
static inline int ks_block_row(const ks_block_list *l, int h, int qb) { return h * l->n_qblocks + (qb - l->qb0); }

/* Query blocks a chunk of n queries at q_pos0 covers with blocks of B tokens. */
static inline int ks_block_rows_of(int q_pos0, int n, int B) { return (q_pos0 + n - 1) / B - q_pos0 / B + 1; }

#endif
