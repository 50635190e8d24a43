/* fast_attention.c — prefill and decode attention of fast.h, flash-style.
 *
 * One work item is a tile of up to ATT_ROWS query rows that share a KV head (several tokens and/or the G query
 * heads of a GQA group, so K/V rows are read once per tile and never replicated). Each row r attends the keys
 * j in [lo[r], hi[r]) of its KV head: causality, the sliding window and per-head decode lengths are all just
 * those bounds. Keys are consumed in blocks of ATT_KEYS: S = Q K^T and acc += P V are single-threaded OpenBLAS
 * GEMMs (the tiles run in parallel on OpenMP threads), with an online softmax in between (running max m,
 * running sum l, accumulator rescaled when the max grows). Memory is a fixed stack tile whatever the context
 * length. Block-sparse prefill tiles one query head's rows of one query block (they share a block list row) and
 * walks only the key ranges the row lists. */
#include "cpu/fast.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "cpu/fast_exp.h"

enum { ATT_ROWS = 64, ATT_KEYS = 128 };

typedef struct att_tile {
    const float *q[ATT_ROWS]; /* (d) query row r */
    float *out[ATT_ROWS];     /* (d) output row r */
    float *lse[ATT_ROWS];     /* row r's log-sum-exp of its scaled logits, or NULL rows (not wanted) */
    int lo[ATT_ROWS], hi[ATT_ROWS];
    int rows;
} att_tile;

/* Turns row r's scores s[0..nb) (keys j0..) into unnormalised probabilities under the running max, rescaling
 * the row's accumulator and sum; keys outside [lo, hi) get probability 0. */
static void softmax_block_row(float *s, int nb, int j0, int lo, int hi, float *m, float *l, float *acc, int d) {
    int a = lo > j0 ? lo - j0 : 0, e = hi < j0 + nb ? hi - j0 : nb;
    if (a >= e) { /* nothing visible in this block */
        memset(s, 0, sizeof(float) * nb);
        return;
    }
    float bmax = s[a];
    for (int jj = a + 1; jj < e; jj++) bmax = s[jj] > bmax ? s[jj] : bmax;
    if (bmax > *m) {
        float corr = expf(*m - bmax); /* 0 on the first visible block (m = -inf) */
        *l *= corr;
#pragma omp simd
        for (int i = 0; i < d; i++) acc[i] *= corr;
        *m = bmax;
    }
    float mx = *m, sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int jj = 0; jj < nb; jj++) {
        float p = ks_exp_nonpos(s[jj] - mx);
        s[jj] = jj >= a && jj < e ? p : 0.0f;
        sum += s[jj];
    }
    *l += sum;
}

/* k, v: (rows, d) of one KV head. The tile's keys: every key between its rows' lowest lo and highest hi
 * (cols NULL), or only those of the key blocks cols[0 .. n_cols) of B keys (ascending; runs of adjacent blocks
 * are one key range, so the full list walks the keys as the dense tile does). */
static void attend_tile(const att_tile *tl, const float *k, const float *v, int d, float scale, const int32_t *cols,
                        int n_cols, int B) {
    float qt[ATT_ROWS * KS_FAST_MAX_HEAD_DIM];  /* (rows, d) queries * scale, contiguous for the GEMM */
    float acc[ATT_ROWS * KS_FAST_MAX_HEAD_DIM]; /* (rows, d) unnormalised outputs */
    float s[ATT_ROWS * ATT_KEYS];               /* (rows, ATT_KEYS) scores, then probabilities */
    float m[ATT_ROWS], l[ATT_ROWS];
    int R = tl->rows, jlo = tl->lo[0], jhi = tl->hi[0];
    for (int r = 0; r < R; r++) {
        for (int i = 0; i < d; i++) qt[r * d + i] = tl->q[r][i] * scale;
        m[r] = -INFINITY;
        l[r] = 0;
        if (tl->lo[r] < jlo) jlo = tl->lo[r];
        if (tl->hi[r] > jhi) jhi = tl->hi[r];
    }
    memset(acc, 0, sizeof(float) * R * d);
    for (int i = 0; i < (cols ? n_cols : 1); i++) {
        int a = jlo, b = jhi; /* the next key range, clipped to the tile's keys */
        if (cols) {
            int first = cols[i];
            while (i + 1 < n_cols && cols[i + 1] == cols[i] + 1) i++;
            a = first * B > jlo ? first * B : jlo;
            b = (cols[i] + 1) * B < jhi ? (cols[i] + 1) * B : jhi;
        }
        for (int j0 = a; j0 < b; j0 += ATT_KEYS) {
            int nb = b - j0 < ATT_KEYS ? b - j0 : ATT_KEYS;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, nb, d, 1.0f, qt, d, k + (size_t)j0 * d, d, 0.0f,
                        s, ATT_KEYS);
            for (int r = 0; r < R; r++)
                softmax_block_row(s + r * ATT_KEYS, nb, j0, tl->lo[r], tl->hi[r], &m[r], &l[r], acc + r * d, d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, d, nb, 1.0f, s, ATT_KEYS, v + (size_t)j0 * d,
                        d, 1.0f, acc, d);
        }
    }
    for (int r = 0; r < R; r++) {
        float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f; /* a sparse row may see no key: 0, as block_list.h says */
        for (int i = 0; i < d; i++) tl->out[r][i] = acc[r * d + i] * inv;
        if (tl->lse[r]) *tl->lse[r] = m[r] + logf(l[r]);
    }
}

void ks_fast_attention(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                       int H, int Hk, int d, int q_pos0, int window, float scale, float *lse) {
    KS_ASSERT(d <= KS_FAST_MAX_HEAD_DIM && H % Hk == 0 && q_pos0 + n <= n_kv);
    int G = H / Hk;
    int rows_per_head = n * G; /* row index i = t * G + (h - g * G) within KV head g */
    int tiles_per_head = (rows_per_head + ATT_ROWS - 1) / ATT_ROWS;
#pragma omp parallel for schedule(dynamic)
    for (int item = 0; item < Hk * tiles_per_head; item++) {
        int g = item / tiles_per_head, i0 = (item % tiles_per_head) * ATT_ROWS;
        att_tile tl;
        tl.rows = rows_per_head - i0 < ATT_ROWS ? rows_per_head - i0 : ATT_ROWS;
        for (int r = 0; r < tl.rows; r++) {
            int t = (i0 + r) / G, h = g * G + (i0 + r) % G, qpos = q_pos0 + t;
            tl.q[r] = q + ((size_t)t * H + h) * d;
            tl.out[r] = out + ((size_t)t * H + h) * d;
            tl.lse[r] = lse ? lse + (size_t)t * H + h : NULL;
            tl.hi[r] = qpos + 1;
            tl.lo[r] = window > 0 && qpos - window + 1 > 0 ? qpos - window + 1 : 0;
        }
        size_t off = (size_t)g * cap * d;
        attend_tile(&tl, k + off, v + off, d, scale, NULL, 0, 0);
    }
}

void ks_fast_attention_sparse(float *out, const float *q, const float *k, const float *v, int n, int n_kv, int cap,
                              int H, int Hk, int d, int q_pos0, int window, float scale, const ks_block_list *l) {
    KS_ASSERT(d <= KS_FAST_MAX_HEAD_DIM && H % Hk == 0 && q_pos0 + n <= n_kv && l->H == H);
    int G = H / Hk, B = l->block, nqb = l->n_qblocks;
    int subs = (B + ATT_ROWS - 1) / ATT_ROWS; /* tiles per (head, query block): its queries share one list */
#pragma omp parallel for schedule(dynamic)
    for (int item = 0; item < H * nqb * subs; item++) {
        int h = item / (nqb * subs), qb = l->qb0 + item / subs % nqb, sub = item % subs;
        int t_end = (qb + 1) * B < q_pos0 + n ? (qb + 1) * B - q_pos0 : n;
        int t0 = (qb * B > q_pos0 ? qb * B - q_pos0 : 0) + sub * ATT_ROWS;
        if (t0 >= t_end) continue;
        att_tile tl;
        tl.rows = t_end - t0 < ATT_ROWS ? t_end - t0 : ATT_ROWS;
        for (int r = 0; r < tl.rows; r++) {
            int t = t0 + r, qpos = q_pos0 + t;
            tl.q[r] = q + ((size_t)t * H + h) * d;
            tl.out[r] = out + ((size_t)t * H + h) * d;
            tl.lse[r] = NULL;
            tl.hi[r] = qpos + 1;
            tl.lo[r] = window > 0 && qpos - window + 1 > 0 ? qpos - window + 1 : 0;
        }
        int row = ks_block_row(l, h, qb);
        size_t off = (size_t)(h / G) * cap * d;
        attend_tile(&tl, k + off, v + off, d, scale, l->cols + l->row_start[row],
                    l->row_start[row + 1] - l->row_start[row], B);
    }
}

int ks_fast_attention_decode_items(const ks_attention_decode *a) {
    return a->Hk * ((a->H / a->Hk + ATT_ROWS - 1) / ATT_ROWS);
}

void ks_fast_attention_decode_item(const ks_attention_decode *a, int item) {
    KS_ASSERT(a->d <= KS_FAST_MAX_HEAD_DIM && a->H % a->Hk == 0);
    const int G = a->H / a->Hk, tiles_per_head = (G + ATT_ROWS - 1) / ATT_ROWS;
    const int g = item / tiles_per_head, i0 = (item % tiles_per_head) * ATT_ROWS;
    att_tile tl;
    tl.rows = G - i0 < ATT_ROWS ? G - i0 : ATT_ROWS;
    for (int r = 0; r < tl.rows; r++) {
        const int h = g * G + i0 + r;
        tl.q[r] = a->q + (size_t)h * a->d;
        tl.out[r] = a->out + (size_t)h * a->d;
        tl.lse[r] = NULL;
        tl.lo[r] = a->start ? a->start[g] : 0;
        tl.hi[r] = a->len[g];
    }
    const size_t off = (size_t)g * a->cap * a->d;
    attend_tile(&tl, a->k + off, a->v + off, a->d, a->scale, NULL, 0, 0);
}

void ks_fast_attention_decode(float *out, const float *q, const float *k, const float *v, const int32_t *start,
                              const int32_t *len, int cap, int H, int Hk, int d, float scale) {
    const ks_attention_decode a = {.out = out, .q = q, .k = k, .v = v, .start = start, .len = len, .cap = cap,
                                   .H = H, .Hk = Hk, .d = d, .scale = scale};
    int64_t work = 0; /* multiply-adds; a short context is not worth waking the other threads for */
    for (int g = 0; g < Hk; g++) work += (int64_t)(len[g] - (start ? start[g] : 0)) * (H / Hk) * d * 2;
    const int items = ks_fast_attention_decode_items(&a);
#pragma omp parallel for schedule(dynamic) if (work >= (1 << 18))
    for (int item = 0; item < items; item++) ks_fast_attention_decode_item(&a, item);
}
