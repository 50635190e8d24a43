/* xattention.c — XAttention (arXiv 2503.16428), a sparse prefill: before each layer's attention on a prompt chunk,
 * every (query head, query block of B = 128 tokens) row scores the key blocks up to it by antidiagonal sums at
 * stride S (the KV store's xattn_scores, cpu/xattn_ref.h), keeps block 0 and its diagonal block, then the other
 * blocks in descending score until the kept score reaches threshold * the row's total (the block that crosses it
 * is kept), and attends only those blocks. The cache is not compressed; decode is dense. Row qb depends only on
 * the queries of block qb and the keys up to it, so the forward pass's block-aligned chunks give every chunk
 * size the same blocks. threshold: one number for every head, or a table file of one line per model layer and
 * one value per query head (XAttention's profiled per-head thresholds). force_density (> 0) keeps each row's
 * forced blocks and its top-scoring others up to that fraction of the row's causal blocks instead: the speed
 * benchmarks' fixed density. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "cpu/xattn_ref.h"
#include "methods/method.h"

#define XATTN_BLOCK 128 /* B, as XAttention's block-sparse kernel asserts */

typedef struct xattn_opts {
    int stride;                          /* S */
    char threshold[KS_KNOB_TEXT_MAX];    /* a number in (0, 1], or a table file's path */
    float force_density;                 /* 0: the threshold decides */
} xattn_opts;

static const ks_knob knobs[] = {
    {"stride", KS_KNOB_INT, offsetof(xattn_opts, stride), "16", NULL, 8, 16,
     "S: antidiagonal stride of the block scoring, 8 or 16"},
    {"threshold", KS_KNOB_TEXT, offsetof(xattn_opts, threshold), "0.9", NULL, 0, 0,
     "share of each row's estimated attention the kept blocks reach: a number in (0, 1], or a file of one line "
     "per model layer with one value per query head"},
    {"force_density", KS_KNOB_FLOAT, offsetof(xattn_opts, force_density), "0", NULL, 0, 1,
     "> 0: keep each row's forced blocks and its top-scoring others up to this fraction of its causal blocks, "
     "ignoring threshold (speed benchmarks at a fixed density)"},
    {0},
};

/* The instance's own state (m->state), one block: per held layer and query head its threshold, the block
 * scores of one query block and the ranking work of one row. */
typedef struct xattn_state {
    float *theta;        /* (layers held, H) */
    float *scores;       /* (H, nb) */
    ks_xattn_rank *rank; /* (nb) */
    double *coverage;    /* (H nb) each row's coverage from a store's xattn_blocks */
    int32_t *count;      /* (H nb) each row's blocks from a store's xattn_blocks */
    int nb;              /* cap / B + 1: the most key blocks a row sees, and more than a chunk's query blocks */
} xattn_state;

/* 1 when text is one number (its value in *x). */
static int parse_number(const char *text, double *x) {
    char *end;
    errno = 0;
    *x = strtod(text, &end);
    while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r') end++;
    return end != text && !*end && !errno;
}

static ks_status xattn_check(const ks_method *m) {
    const xattn_opts *o = KS_METHOD_OPTS(m, xattn_opts);
    double t;
    if (o->stride != 8 && o->stride != 16)
        return ks_fail(KS_ERR_ARG, "%s options (%s): stride %d must be 8 or 16", m->ops->name, m->source, o->stride);
    if (parse_number(o->threshold, &t) && !(t > 0 && t <= 1))
        return ks_fail(KS_ERR_ARG, "%s options (%s): threshold %s must be in (0, 1] (or a table file's path)",
                       m->ops->name, m->source, o->threshold);
    return KS_OK;
}

static int xattn_block(const ks_method *m) {
    (void)m;
    return XATTN_BLOCK;
}

/* One line of a threshold table (its comment cut): its values into row (H) when row is not NULL; *n = how many.
 * KS_ERR_ARG naming the file and line for a value that is not a number in (0, 1] or a line of another length. */
static ks_status table_line(const ks_method *m, const char *path, int line, char *text, float *row, int *n) {
    char *save, *hash = strchr(text, '#');
    if (hash) *hash = 0;
    *n = 0;
    for (char *tok = strtok_r(text, " \t\r,", &save); tok; tok = strtok_r(NULL, " \t\r,", &save), ++*n) {
        double x;
        if (!parse_number(tok, &x) || !(x > 0 && x <= 1))
            return ks_fail(KS_ERR_ARG, "%s threshold table %s:%d: '%s' is not a number in (0, 1]", m->ops->name,
                           path, line, tok);
        if (row && *n < m->H) row[*n] = (float)x;
    }
    if (*n && *n != m->H)
        return ks_fail(KS_ERR_ARG, "%s threshold table %s:%d: %d values; the model has %d query heads (the table "
                       "holds one line per layer, one value per query head)", m->ops->name, path, line, *n, m->H);
    return KS_OK;
}

/* theta (layers held, H) from the table file `path`: one line per model layer (blank lines and '#' comments
 * skipped), each H values separated by spaces or commas; the held layers' lines. */
static ks_status read_table(const ks_method *m, const char *path, float *theta) {
    char *text;
    size_t size;
    KS_TRY(ks_file_read_all(path, &text, &size));
    ks_status st = KS_OK;
    int rows = 0, line = 0;
    for (char *p = text, *nl; p && st == KS_OK; p = nl ? nl + 1 : NULL) {
        if ((nl = strchr(p, '\n'))) *nl = 0;
        int n, held = rows >= m->first_layer && rows < m->last_layer;
        st = table_line(m, path, ++line, p, held ? theta + (size_t)ks_method_index(m, rows) * m->H : NULL, &n);
        rows += n > 0;
    }
    free(text);
    if (st == KS_OK && rows != m->n_layers_model)
        st = ks_fail(KS_ERR_ARG, "%s threshold table %s: %d lines of values; the model has %d layers (the table holds "
                     "one line per layer of %d values, one per query head)", m->ops->name, path, rows,
                     m->n_layers_model, m->H);
    return st;
}

static ks_status xattn_bind(ks_method *m) {
    const xattn_opts *o = KS_METHOD_OPTS(m, xattn_opts);
    int layers = m->last_layer - m->first_layer, nb = m->cap / XATTN_BLOCK + 1;
    size_t n_theta = (size_t)layers * m->H, n_scores = (size_t)m->H * nb;
    xattn_state *st = ks_malloc(sizeof *st + sizeof(double) * (size_t)m->H * nb + sizeof(float) * (n_theta + n_scores) +
                                    sizeof(ks_xattn_rank) * nb + sizeof(int32_t) * (size_t)m->H * nb,
                                "XAttention state");
    if (!st) return KS_ERR_NOMEM;
    m->state = st;
    st->coverage = (double *)(st + 1);
    st->theta = (float *)(st->coverage + (size_t)m->H * nb);
    st->scores = st->theta + n_theta;
    st->rank = (ks_xattn_rank *)(st->scores + n_scores);
    st->count = (int32_t *)(st->rank + nb);
    st->nb = nb;
    double t;
    if (!parse_number(o->threshold, &t)) return read_table(m, o->threshold, st->theta);
    for (size_t i = 0; i < n_theta; i++) st->theta[i] = (float)t;
    return KS_OK;
}

/* Rows of l written at r * W (W: the most blocks a row of the chunk has) packed into CSR order; row_start[r + 1]
 * holds row r's count on entry. */
static void pack_rows(ks_block_list *l, int W) {
    int rows = l->H * l->n_qblocks;
    l->row_start[0] = 0, l->resident = 0;
    for (int r = 0; r < rows; r++) {
        int n = l->row_start[r + 1];
        memmove(l->cols + l->row_start[r], l->cols + (size_t)r * W, sizeof(int32_t) * n);
        l->row_start[r + 1] = l->row_start[r] + n;
    }
}

/* The chunk's rows chosen by the store in one call (its xattn_blocks: the list stays in the store, l resident): the
 * record and whether every row is full. */
static ks_status chunk_blocks(ks_method *m, const ks_method_chunk *c, const float *theta, ks_block_list *l,
                              int *full) {
    const xattn_opts *o = KS_METHOD_OPTS(m, xattn_opts);
    xattn_state *st = m->state;
    ks_method_sparse_layer *rec = &m->sparse[ks_method_index(m, c->layer)];
    const ks_xattn_blocks_args a = {.q_pos0 = c->pos0, .n = c->n, .block = XATTN_BLOCK, .stride = o->stride,
                                    .scale = 1.0f / (sqrtf((float)m->d) * (float)o->stride), .theta = theta,
                                    .density = o->force_density};
    KS_TRY(m->kv->ops->xattn_blocks(m->kv, c->layer, &a, l, st->count, st->coverage));
    for (int h = 0; h < m->H; h++)
        for (int qb = l->qb0; qb < l->qb0 + l->n_qblocks; qb++) {
            const int r = ks_block_row(l, h, qb), n = st->count[r];
            rec->blocks += n;
            rec->causal += qb + 1;
            rec->rows++;
            rec->coverage += st->coverage[r];
            *full &= n == qb + 1;
        }
    return KS_OK;
}

static ks_status xattn_prefill_blocks(ks_method *m, const ks_method_chunk *c, int last, ks_block_list *l,
                                      const ks_block_list **out) {
    (void)last;
    const xattn_opts *o = KS_METHOD_OPTS(m, xattn_opts);
    xattn_state *st = m->state;
    int li = ks_method_index(m, c->layer), W = l->qb0 + l->n_qblocks, full = 1;
    const float *theta = st->theta + (size_t)li * m->H;
    ks_method_sparse_layer *rec = &m->sparse[li];
    if (m->kv->ops->xattn_blocks) {
        KS_TRY(chunk_blocks(m, c, theta, l, &full));
        *out = full ? NULL : l;
        return KS_OK;
    }
    for (int qb = l->qb0; qb < l->qb0 + l->n_qblocks; qb++) {
        ks_xattn_args a = {.q_pos0 = c->pos0, .n = c->n, .qb = qb, .block = XATTN_BLOCK, .stride = o->stride,
                           .scale = 1.0f / (sqrtf((float)m->d) * (float)o->stride)};
        KS_TRY(m->kv->ops->xattn_scores(m->kv, c->layer, &a, st->scores, st->nb));
        for (int h = 0; h < m->H; h++) {
            int r = ks_block_row(l, h, qb);
            double coverage;
            int n = ks_xattn_select(l->cols + (size_t)r * W, &coverage, st->scores + (size_t)h * st->nb, qb,
                                    theta[h], o->force_density, st->rank);
            l->row_start[r + 1] = n;
            rec->blocks += n;
            rec->causal += qb + 1;
            rec->rows++;
            rec->coverage += coverage;
            full &= n == qb + 1;
        }
    }
    pack_rows(l, W);
    *out = full ? NULL : l; /* every causal block: the dense kernel computes the same, faster */
    return KS_OK;
}

const ks_method_ops ks_method_xattention = {
    .name = "XAttention",
    .role = KS_ROLE_PREFILL,
    .file = "xattention",
    .summary = "sparse prefill: antidiagonal block scores keep each query block's key blocks up to a threshold",
    .knobs = knobs,
    .opts_size = sizeof(xattn_opts),
    .check = xattn_check,
    .bind = xattn_bind,
    .sparse_block = xattn_block,
    .prefill_blocks = xattn_prefill_blocks,
};
