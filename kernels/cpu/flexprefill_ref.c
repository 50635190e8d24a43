/* flexprefill_ref.c — FlexPrefill's estimation (flexprefill_ref.h): plain loops, double accumulators, no
 * threads. One head at a time: its scores, its pooled sums, its block set as an nb x nb mask, then its rows. */
#include "cpu/flexprefill_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *ks_flexprefill_check(const ks_flexprefill_args *a) {
    if (a->block < 1) return "FlexPrefill: block_size must be >= 1";
    if (!(a->gamma > 0 && a->gamma <= 1)) return "FlexPrefill: gamma must be in (0, 1]";
    if (!(a->tau >= 0) || !isfinite(a->tau)) return "FlexPrefill: tau must be a finite number >= 0";
    if (a->min_budget < 1) return "FlexPrefill: min_budget must be >= 1 token";
    if (!(a->force_density >= 0 && a->force_density <= 1)) return "FlexPrefill: force_density must be in [0, 1]";
    if (a->Hk < 1 || a->H < a->Hk || a->H % a->Hk) return "FlexPrefill: query heads must be a multiple of KV heads";
    if (a->d < 1 || a->L < 1) return "FlexPrefill: head dimension and prompt length must be >= 1";
    return NULL;
}

int ks_flexprefill_blocks(const ks_flexprefill_args *a) { return (a->L + a->block - 1) / a->block; }

size_t ks_flexprefill_max_cols(const ks_flexprefill_args *a) {
    size_t nb = (size_t)ks_flexprefill_blocks(a);
    return (size_t)a->H * nb * (nb + 1) / 2;
}

static int min_blocks(const ks_flexprefill_args *a) { return (a->min_budget + a->block - 1) / a->block; }

static int max_blocks(const ks_flexprefill_args *a) {
    int nb = ks_flexprefill_blocks(a);
    if (a->max_budget <= 0) return nb;
    int m = (int)(((int64_t)a->max_budget + a->block - 1) / a->block);
    return m < nb ? m : nb;
}

int ks_flexprefill_is_dense(const ks_flexprefill_args *a) {
    int64_t two = 2 * (int64_t)a->block, mb = (int64_t)min_blocks(a) * a->block;
    return a->L <= (two > mb ? two : mb);
}

/* ---- ranking: descending value, ties to the lower index ---------------------------------------------- */

typedef struct {
    float v;
    int i;
} ranked;

static int ranked_desc(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* r (n) = x's entries with their indices, sorted by ranked_desc. */
static void rank(ranked *r, const float *x, int n) {
    for (int i = 0; i < n; i++) r[i] = (ranked){x[i], i};
    qsort(r, (size_t)n, sizeof *r, ranked_desc);
}

/* out: the k best indices of x (n) other than `skip`, best first (k clipped to [0, n - 1]); returns how many. */
static int top_others(int *out, const float *x, int n, int skip, int k) {
    ranked *r = malloc(sizeof *r * (size_t)n);
    rank(r, x, n);
    int m = 0;
    for (int t = 0; t < n && m < k; t++)
        if (r[t].i != skip) out[m++] = r[t].i;
    free(r);
    return m;
}

/* ---- step 3 and step 5's divergence -------------------------------------------------------------------- */

int ks_flexprefill_cover(const float *x, int n, float gamma) {
    ranked *r = malloc(sizeof *r * (size_t)n);
    rank(r, x, n);
    double total = 0, run = 0;
    for (int t = 0; t < n; t++) total += r[t].v;
    double lim = (double)gamma * total;
    int count = 0;
    for (int t = 0; t < n; t++) {
        run += r[t].v; /* the same additions as total's: the last prefix is total exactly */
        count += run <= lim;
    }
    free(r);
    return count + 1;
}

int ks_flexprefill_count(int cover, int mb, int Mb) {
    int n = cover / KS_FLEXPREFILL_COUNT_DIV + 1;
    if (n < mb) n = mb;
    if (n > Mb) n = Mb;
    return n;
}

float ks_flexprefill_js(const float *p, const float *q, int n) {
    double kp = 0, kq = 0;
    for (int i = 0; i < n; i++) {
        double m = ((double)p[i] + q[i]) / 2;
        if (p[i] > 0) kp += p[i] * log(p[i] / m);
        if (q[i] > 0) kq += q[i] * log(q[i] / m);
    }
    double js = 0.5 * kp + 0.5 * kq;
    return (float)sqrt(js > 0 ? js : 0);
}

/* ---- steps 1 and 2: the last block of queries against every key ----------------------------------------- */

/* x (L): row i of A for query head h (the scored query at position L - B + i), 0 past its position. */
static void score_row(float *x, const float *q, const float *k, int cap, int h, int i, const ks_flexprefill_args *a) {
    int d = a->d, pos = a->L - a->block + i;
    const float *qr = q + ((size_t)pos * a->H + h) * d, *kg = k + (size_t)(h / (a->H / a->Hk)) * cap * d;
    float root = sqrtf((float)d), mx = -INFINITY;
    double qs[d]; /* the query pre-scaled once (the same float quotients as per key) */
    for (int c = 0; c < d; c++) qs[c] = (double)(qr[c] / root);
    for (int j = 0; j <= pos; j++) {
        double s = 0;
        for (int c = 0; c < d; c++) s += qs[c] * kg[(size_t)j * d + c];
        x[j] = (float)s;
        if (x[j] > mx) mx = x[j];
    }
    double den = 0;
    for (int j = 0; j <= pos; j++) den += exp((double)x[j] - mx);
    for (int j = 0; j <= pos; j++) x[j] = (float)(exp((double)x[j] - mx) / den);
    for (int j = pos + 1; j < a->L; j++) x[j] = 0;
}

/* A (B, L): the B scored queries' rows. */
static void score_block(float *A, const float *q, const float *k, int cap, int h, const ks_flexprefill_args *a) {
    for (int i = 0; i < a->block; i++) score_row(A + (size_t)i * a->L, q, k, cap, h, i, a);
}

/* Step 2 from A. */
static void vertical_slash(float *vertical, float *slash, const float *A, const ks_flexprefill_args *a) {
    int B = a->block, L = a->L;
    double *vs = calloc((size_t)L, sizeof *vs), *ss = calloc((size_t)L, sizeof *ss);
    for (int i = 0; i < B; i++)
        for (int j = 0; j <= L - B + i; j++) {
            vs[j] += A[(size_t)i * L + j];
            ss[j + B - 1 - i] += A[(size_t)i * L + j]; /* (i, j) is on the diagonal through (B - 1, j + B - 1 - i) */
        }
    for (int j = 0; j < L; j++) vertical[j] = (float)(vs[j] / B), slash[j] = (float)(ss[j] / B);
    free(vs), free(ss);
}

void ks_flexprefill_score(float *vertical, float *slash, const float *q, const float *k, int cap, int h,
                          const ks_flexprefill_args *a) {
    float *A = malloc(sizeof *A * (size_t)a->block * a->L);
    score_block(A, q, k, cap, h, a);
    vertical_slash(vertical, slash, A, a);
    free(A);
}

/* ---- step 4 and the block means of step 5 -------------------------------------------------------------- */

/* out (nb): x (L) summed over each block of B tokens. */
static void sum_pool(float *out, const float *x, int L, int B) {
    for (int b = 0; b * B < L; b++) {
        double s = 0;
        for (int j = b * B; j < L && j < (b + 1) * B; j++) s += x[j];
        out[b] = (float)s;
    }
}

/* out (nb, d): the mean of each block's rows of x (rows j at x + j * ld, L of them), divided by div. */
static void block_means(float *out, const float *x, size_t ld, int L, int B, int d, float div) {
    for (int b = 0; b * B < L; b++) {
        int j1 = (b + 1) * B < L ? (b + 1) * B : L;
        for (int c = 0; c < d; c++) {
            double s = 0;
            for (int j = b * B; j < j1; j++) s += x[(size_t)j * ld + c];
            out[(size_t)b * d + c] = (float)(s / (j1 - b * B)) / div;
        }
    }
}

/* x (n) = softmax over the n rows of keys (n, d) of qv . key, in place of the logits. */
static void softmax_dots(float *x, const float *qv, const float *keys, int n, int d) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        double s = 0;
        for (int c = 0; c < d; c++) s += (double)qv[c] * keys[(size_t)j * d + c];
        x[j] = (float)s;
        if (x[j] > mx) mx = x[j];
    }
    double den = 0;
    for (int j = 0; j < n; j++) den += exp((double)x[j] - mx);
    for (int j = 0; j < n; j++) x[j] = (float)(exp((double)x[j] - mx) / den);
}

/* a_blk (nb): step 5's softmax of the mean scaled last-B query of head h against the block mean keys km. */
static void last_query_blocks(float *a_blk, const float *q, const float *km, int h, int nb,
                              const ks_flexprefill_args *a) {
    int d = a->d, B = a->block;
    float root = sqrtf((float)d), *qbar = malloc(sizeof *qbar * (size_t)d);
    for (int c = 0; c < d; c++) {
        double s = 0;
        for (int t = a->L - B; t < a->L; t++) s += q[((size_t)t * a->H + h) * d + c] / root;
        qbar[c] = (float)(s / B);
    }
    softmax_dots(a_blk, qbar, km, nb, d);
    free(qbar);
}

/* p (nb, nb): the block attention of step 5, row i over its causal blocks 0 .. i (the rest untouched). */
static void block_attention(float *p, const float *qm, const float *km, int nb, int d) {
    for (int i = 0; i < nb; i++) softmax_dots(p + (size_t)i * nb, qm + (size_t)i * d, km, i + 1, d);
}

/* ---- the block sets --------------------------------------------------------------------------------- */

static void mark_sink_and_diagonal(uint8_t *mask, int nb) {
    for (int i = 0; i < nb; i++) mask[(size_t)i * nb] = 1, mask[(size_t)i * nb + i] = 1;
}

void ks_flexprefill_mark_vertical_slash(uint8_t *mask, const float *v_b, const float *s_b, int nb, int n_v,
                                        int n_s) {
    int *top = malloc(sizeof *top * (size_t)nb);
    mark_sink_and_diagonal(mask, nb);
    int m = top_others(top, v_b, nb, 0, n_v - 1);
    for (int t = 0; t < m; t++)
        for (int i = top[t]; i < nb; i++) mask[(size_t)i * nb + top[t]] = 1;
    m = top_others(top, s_b, nb, nb - 1, n_s - 1);
    for (int t = 0; t < m; t++) {
        int s = nb - 1 - top[t];
        for (int i = 0; i + s < nb; i++) mask[(size_t)(i + s) * nb + i] = 1;
    }
    free(top);
}

void ks_flexprefill_rank_causal(float *v, int32_t *at, const float *p, int nb) {
    int n = nb * (nb + 1) / 2, t = 0;
    float *flat = malloc(sizeof *flat * (size_t)n);
    int32_t *pos = malloc(sizeof *pos * (size_t)n);
    for (int i = 0; i < nb; i++)
        for (int c = 0; c <= i; c++, t++) flat[t] = p[(size_t)i * nb + c], pos[t] = i * nb + c;
    ranked *r = malloc(sizeof *r * (size_t)n);
    rank(r, flat, n); /* flat follows row-major order: ties go to the lower row, then column */
    for (t = 0; t < n; t++) v[t] = r[t].v, at[t] = pos[r[t].i];
    free(flat), free(pos), free(r);
}

void ks_flexprefill_fill_ranked(uint8_t *mask, const float *v, const int32_t *at, int n, float gamma) {
    double total = 0, run = 0;
    for (int t = 0; t < n; t++) total += v[t];
    double lim = (double)gamma * total;
    for (int t = 0; t < n; t++) {
        run += v[t];
        if (run > lim) break;
        mask[at[t]] = 1;
    }
}

void ks_flexprefill_mark_query_aware(uint8_t *mask, const float *p, int nb, float gamma) {
    int n = nb * (nb + 1) / 2;
    float *v = malloc(sizeof *v * (size_t)n);
    int32_t *at = malloc(sizeof *at * (size_t)n);
    ks_flexprefill_rank_causal(v, at, p, nb);
    ks_flexprefill_fill_ranked(mask, v, at, n, gamma);
    free(v), free(at);
}

void ks_flexprefill_mark_forced(uint8_t *mask, const float *v_b, const float *s_b, int nb, float f) {
    float *score = malloc(sizeof *score * (size_t)nb);
    ranked *r = malloc(sizeof *r * (size_t)nb);
    mark_sink_and_diagonal(mask, nb);
    for (int i = 2; i < nb; i++) {
        int want = (int)ceilf(f * (float)(i + 1));
        for (int c = 1; c < i; c++) score[c - 1] = v_b[c] + s_b[nb - 1 - (i - c)];
        rank(r, score, i - 1); /* index t is column t + 1 */
        for (int t = 0; t < want - 2 && t < i - 1; t++) mask[(size_t)i * nb + r[t].i + 1] = 1;
    }
    free(score), free(r);
}

/* ---- the whole estimation ------------------------------------------------------------------------------ */

void ks_flexprefill_emit(ks_block_list *l, ks_flexprefill_stat *st, const uint8_t *mask, int h, int nb,
                         int32_t *off) {
    int64_t blocks = 0;
    for (int i = 0; i < nb; i++) {
        const uint8_t *row = mask + (size_t)i * nb;
        for (int c = 0; c <= i; c++) {
            uint64_t word = 1;
            if (c % 8 == 0 && c + 8 <= i + 1) memcpy(&word, row + c, 8); /* eight unset blocks skipped at once */
            if (!word) c += 7;
            else if (row[c]) l->cols[(*off)++] = c, blocks++;
        }
        l->row_start[h * nb + i + 1] = *off;
    }
    st->blocks = blocks;
    st->sparsity = (float)(1.0 - (double)blocks / ((double)nb * (nb + 1) / 2));
}

/* The scored queries' mass (A) on the blocks their rows list, averaged over them. */
static float coverage(const uint8_t *mask, const float *A, int nb, const ks_flexprefill_args *a) {
    int B = a->block;
    double sum = 0;
    for (int i = 0; i < B; i++) {
        int pos = a->L - B + i;
        const uint8_t *row = mask + (size_t)(pos / B) * nb;
        for (int j = 0; j <= pos; j++)
            if (row[j / B]) sum += A[(size_t)i * a->L + j];
    }
    return (float)(sum / B);
}

typedef struct {
    float *A, *vertical, *slash, *v_b, *s_b, *a_blk, *km, *qm, *p, *rank_v;
    int32_t *rank_at;
    uint8_t *mask;
} flex_scratch;

static flex_scratch scratch_alloc(int B, int L, int nb, int d) {
    flex_scratch s;
    s.A = malloc(sizeof(float) * (size_t)B * L);
    s.vertical = malloc(sizeof(float) * (size_t)L), s.slash = malloc(sizeof(float) * (size_t)L);
    s.v_b = malloc(sizeof(float) * (size_t)nb), s.s_b = malloc(sizeof(float) * (size_t)nb);
    s.a_blk = malloc(sizeof(float) * (size_t)nb);
    s.km = malloc(sizeof(float) * (size_t)nb * d), s.qm = malloc(sizeof(float) * (size_t)nb * d);
    s.p = malloc(sizeof(float) * (size_t)nb * nb), s.mask = malloc((size_t)nb * nb);
    s.rank_v = malloc(sizeof(float) * (size_t)nb * (nb + 1) / 2);
    s.rank_at = malloc(sizeof(int32_t) * (size_t)nb * (nb + 1) / 2);
    return s;
}

static void scratch_free(flex_scratch *s) {
    free(s->A), free(s->vertical), free(s->slash), free(s->v_b), free(s->s_b), free(s->a_blk);
    free(s->km), free(s->qm), free(s->p), free(s->mask), free(s->rank_v), free(s->rank_at);
}

ks_flexprefill_stat ks_flexprefill_decide(const float *a_blk, const float *v_b, int cover_v, int cover_s,
                                          const ks_flexprefill_args *a) {
    ks_flexprefill_stat st = {0};
    st.d_js = ks_flexprefill_js(a_blk, v_b, ks_flexprefill_blocks(a));
    if (a->force_density > 0) {
        st.pattern = KS_FLEX_FORCED;
        return st;
    }
    int mb = min_blocks(a), Mb = max_blocks(a);
    st.pattern = KS_FLEX_VERTICAL_SLASH;
    st.n_v = ks_flexprefill_count(cover_v, mb, Mb);
    st.n_s = ks_flexprefill_count(cover_s, mb, Mb);
    if (st.d_js < a->tau) st.pattern = KS_FLEX_QUERY_AWARE, st.n_v = st.n_s = mb;
    return st;
}

void ks_flexprefill_mark(uint8_t *mask, const ks_flexprefill_stat *st, const float *v_b, const float *s_b,
                         const float *rank_v, const int32_t *rank_at, const ks_flexprefill_args *a) {
    int nb = ks_flexprefill_blocks(a);
    memset(mask, 0, (size_t)nb * nb);
    if (st->pattern == KS_FLEX_FORCED) {
        ks_flexprefill_mark_forced(mask, v_b, s_b, nb, a->force_density);
        return;
    }
    if (st->pattern == KS_FLEX_QUERY_AWARE)
        ks_flexprefill_fill_ranked(mask, rank_v, rank_at, nb * (nb + 1) / 2, a->gamma);
    ks_flexprefill_mark_vertical_slash(mask, v_b, s_b, nb, st->n_v, st->n_s);
}

/* Head h's block set into s->mask, its scores in s->A, and its statistics but the blocks, sparsity and coverage. */
static ks_flexprefill_stat select_head(flex_scratch *s, const float *q, const float *k, int cap, int h,
                                       const ks_flexprefill_args *a) {
    int B = a->block, L = a->L, d = a->d, nb = ks_flexprefill_blocks(a), g = h / (a->H / a->Hk);
    score_block(s->A, q, k, cap, h, a);
    vertical_slash(s->vertical, s->slash, s->A, a);
    sum_pool(s->v_b, s->vertical, L, B);
    sum_pool(s->s_b, s->slash, L, B);
    block_means(s->km, k + (size_t)g * cap * d, (size_t)d, L, B, d, 1.0f);
    last_query_blocks(s->a_blk, q, s->km, h, nb, a);
    int cover_v = 0, cover_s = 0; /* FORCED counts none */
    if (!(a->force_density > 0))
        cover_v = ks_flexprefill_cover(s->vertical, L, a->gamma), cover_s = ks_flexprefill_cover(s->slash, L, a->gamma);
    ks_flexprefill_stat st = ks_flexprefill_decide(s->a_blk, s->v_b, cover_v, cover_s, a);
    if (st.pattern == KS_FLEX_QUERY_AWARE) {
        block_means(s->qm, q + (size_t)h * d, (size_t)a->H * d, L, B, d, sqrtf((float)d));
        block_attention(s->p, s->qm, s->km, nb, d);
        ks_flexprefill_rank_causal(s->rank_v, s->rank_at, s->p, nb);
    }
    ks_flexprefill_mark(s->mask, &st, s->v_b, s->s_b, s->rank_v, s->rank_at, a);
    return st;
}

void ks_flexprefill_list_full(ks_block_list *l, ks_flexprefill_stat *stats, const ks_flexprefill_args *a) {
    int nb = ks_flexprefill_blocks(a);
    l->block = a->block, l->H = a->H, l->qb0 = 0, l->n_qblocks = nb, l->resident = 0;
    int32_t off = 0;
    l->row_start[0] = 0;
    for (int h = 0; h < l->H; h++) {
        for (int i = 0; i < nb; i++) {
            for (int c = 0; c <= i; c++) l->cols[off++] = c;
            l->row_start[h * nb + i + 1] = off;
        }
        if (stats)
            stats[h] = (ks_flexprefill_stat){.pattern = KS_FLEX_DENSE, .blocks = (int64_t)nb * (nb + 1) / 2,
                                             .coverage = 1};
    }
}

void ks_flexprefill_ref(ks_block_list *l, ks_flexprefill_stat *stats, const float *q, const float *k, int cap,
                        const ks_flexprefill_args *a) {
    if (ks_flexprefill_is_dense(a)) {
        ks_flexprefill_list_full(l, stats, a);
        return;
    }
    int nb = ks_flexprefill_blocks(a);
    l->block = a->block, l->H = a->H, l->qb0 = 0, l->n_qblocks = nb, l->resident = 0;
    flex_scratch s = scratch_alloc(a->block, a->L, nb, a->d);
    int32_t off = 0;
    l->row_start[0] = 0;
    for (int h = 0; h < a->H; h++) {
        ks_flexprefill_stat st = select_head(&s, q, k, cap, h, a);
        ks_flexprefill_emit(l, &st, s.mask, h, nb, &off);
        st.coverage = coverage(s.mask, s.A, nb, a);
        if (stats) stats[h] = st;
    }
    scratch_free(&s);
}
