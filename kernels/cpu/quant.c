/* quant.c — the packed-weight products of quant.h: activation quantization, the plain C dot kernels, the
 * reference, the run-time choice of kernel and the threaded product (the AVX2 kernels are in quant_avx2.c).
 *
 * Per 32-element activation block a (scale a.d, codes a.q, a.s = a.d * sum a.q) the integer sum
 * isum = sum w_code[i] * a.q[i] becomes, with the weight block's own scales (layouts in model/dequant.c):
 *   Q8_0  d * a.d * isum                      Q4_0  d * (a.d * isum - 8 * a.s)    (codes 0..15)
 *   Q4_1  d * a.d * isum + m * a.s            Q4_K  d * sc * a.d * isum - dmin * mn * a.s (per 32-element sub-block)
 *   Q6_K  d * a.d * sum over its two 16-element halves of sc[half] * sum (code - 32) * a.q
 */
#include "cpu/quant.h"

#include <cblas.h>
#include <cpuid.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <threads.h>

#include "cpu/quant_impl.h"
#include "model/dequant.h"

#define ROW_TILE 16 /* weight rows a thread takes at a time: their blocks stay in L1 across the n inputs */

int ks_quant_supports(ks_dtype t) {
    return t == KS_DTYPE_Q8_0 || t == KS_DTYPE_Q4_0 || t == KS_DTYPE_Q4_1 || t == KS_DTYPE_Q4_K ||
           t == KS_DTYPE_Q6_K;
}

ks_status ks_quant_work_init(ks_quant_work *w, int max_n, int64_t max_in) {
    *w = (ks_quant_work){.max_n = max_n, .threads = omp_get_max_threads(), .max_in = max_in,
                         .pick = KS_TEAM_PICK_INIT};
    const ks_status st = ks_team_init(&w->team, w->threads);
    if (st != KS_OK) return st;
    w->act = ks_malloc(sizeof *w->act * (size_t)max_n * (size_t)(max_in / KS_QA_ELEMS), "int8 activations");
    if (max_n >= KS_QUANT_TILE_MIN_ROWS)
        w->tiles = ks_malloc(sizeof(float) * (size_t)w->threads * KS_QUANT_TILE * (size_t)max_in,
                             "dequantized weight tiles");
    if (w->act && (w->tiles || max_n < KS_QUANT_TILE_MIN_ROWS)) return KS_OK;
    ks_quant_work_free(w);
    return KS_ERR_NOMEM;
}

void ks_quant_work_free(ks_quant_work *w) {
    free(w->act);
    free(w->tiles);
    ks_team_free(&w->team);
    *w = (ks_quant_work){0};
}

void ks_quant_act_c(ks_qa_block *dst, const float *x, int64_t n) {
    for (int64_t b = 0; b < n / KS_QA_ELEMS; b++, x += KS_QA_ELEMS) {
        float amax = 0;
        for (int i = 0; i < KS_QA_ELEMS; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < KS_QA_ELEMS; i++) {
            dst[b].q[i] = (int8_t)lrintf(x[i] * inv);
            sum += dst[b].q[i];
        }
        dst[b].d = d;
        dst[b].s = d * (float)sum;
    }
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static float dot_q8_0(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++, w += 34) {
        int isum = 0;
        for (int i = 0; i < KS_QA_ELEMS; i++) isum += (int8_t)w[2 + i] * a[b].q[i];
        acc += ks_fp16_to_f32(rd16(w)) * a[b].d * (float)isum;
    }
    return acc;
}

/* sum over a 32-element block of its 16 bytes' nibbles (low = elements 0..15, high = 16..31) times a->q. */
static int nibble_dot(const uint8_t *qs, const ks_qa_block *a) {
    int isum = 0;
    for (int j = 0; j < 16; j++) isum += (qs[j] & 0xF) * a->q[j] + (qs[j] >> 4) * a->q[j + 16];
    return isum;
}

static float dot_q4_0(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++, w += 18)
        acc += ks_fp16_to_f32(rd16(w)) * (a[b].d * (float)nibble_dot(w + 2, &a[b]) - 8.0f * a[b].s);
    return acc;
}

static float dot_q4_1(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++, w += 20)
        acc += ks_fp16_to_f32(rd16(w)) * a[b].d * (float)nibble_dot(w + 4, &a[b]) + ks_fp16_to_f32(rd16(w + 2)) * a[b].s;
    return acc;
}

/* nb counts 32-element activation blocks: 8 per 256-element super-block. */
static float dot_q4_k(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    float acc = 0;
    for (int64_t sb = 0; sb < nb / 8; sb++, w += 144, a += 8) {
        const float d = ks_fp16_to_f32(rd16(w)), dmin = ks_fp16_to_f32(rd16(w + 2));
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = w + 16 + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            uint8_t sc, mn;
            ks_q4_k_scale_min(j, w + 4, &sc, &mn);
            int isum = 0;
            for (int l = 0; l < 32; l++) isum += ((q[l] >> shift) & 0xF) * a[j].q[l];
            acc += d * sc * a[j].d * (float)isum - dmin * mn * a[j].s;
        }
    }
    return acc;
}

/* Q6_K group g (0..3) of half h holds elements 128h + 32g ..: low 4 bits in ql[(g & 1) * 32 + l] (nibble g / 2),
 * high 2 bits at bit 2g of qh[l], scales sc[2g] (l < 16) and sc[2g + 1]. */
static float dot_q6_k(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    float acc = 0;
    for (int64_t sb = 0; sb < nb / 8; sb++, w += 210) {
        const float d = ks_fp16_to_f32(rd16(w + 208));
        for (int h = 0; h < 2; h++, a += 4) {
            const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(w + 192 + 8 * h);
            int block_sum[4] = {0};
            for (int g = 0; g < 4; g++)
                for (int l = 0; l < 32; l++) {
                    const int code = ((ql[(g & 1) * 32 + l] >> (4 * (g / 2))) & 0xF) | (((qh[l] >> (2 * g)) & 3) << 4);
                    block_sum[g] += sc[2 * g + l / 16] * (code - 32) * a[g].q[l];
                }
            for (int g = 0; g < 4; g++) acc += d * a[g].d * (float)block_sum[g];
        }
    }
    return acc;
}

static ks_quant_dot_fn c_kernel(ks_dtype t) {
    switch (t) {
    case KS_DTYPE_Q8_0: return dot_q8_0;
    case KS_DTYPE_Q4_0: return dot_q4_0;
    case KS_DTYPE_Q4_1: return dot_q4_1;
    case KS_DTYPE_Q4_K: return dot_q4_k;
    case KS_DTYPE_Q6_K: return dot_q6_k;
    default: break;
    }
    KS_ASSERT(!"ks_quant: unsupported weight type");
    return NULL;
}

/* F16C from CPUID leaf 1 (ECX bit 29): not every compiler's __builtin_cpu_supports knows the name. */
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

static int cpu_avx2; /* set once by detect_avx2 */

static void detect_avx2(void) {
    cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
}

/* The CPU's flags, read once: CPUID traps to the hypervisor in a virtual machine (microseconds each, as long as a
 * small decode product), and every product asks. */
static int has_avx2(void) {
    static once_flag once = ONCE_FLAG_INIT;
    call_once(&once, detect_avx2);
    return cpu_avx2;
}

/* The AVX2 kernel where the CPU has AVX2, FMA and F16C, else the plain C one. */
static ks_quant_dot_fn kernel(ks_dtype t) { return has_avx2() ? ks_quant_avx2_kernel(t) : c_kernel(t); }

/* A weight type's dot kernels: one row, and four rows at a time (NULL where the type has none). */
typedef struct dot_kernels {
    ks_quant_dot_fn one;
    ks_quant_dot4_fn four;
} dot_kernels;

static dot_kernels kernels(ks_dtype t) {
    return (dot_kernels){.one = kernel(t), .four = has_avx2() ? ks_quant_avx2_kernel4(t) : NULL};
}

void ks_quant_act(ks_qa_block *dst, const float *x, int64_t n) {
    if (has_avx2()) ks_quant_act_avx2(dst, x, n);
    else ks_quant_act_c(dst, x, n);
}

float ks_quant_dot(const ks_qmat *w, int64_t row, const ks_qa_block *xa) {
    return kernel(w->type)(w->data + row * w->row_bytes, xa, w->cols / KS_QA_ELEMS);
}

float ks_quant_dot_c(const ks_qmat *w, int64_t row, const ks_qa_block *xa) {
    return c_kernel(w->type)(w->data + row * w->row_bytes, xa, w->cols / KS_QA_ELEMS);
}

/* Row `row` of w dequantized into a fresh buffer (the caller frees it): the references' starting point. */
static float *row_f32(const ks_qmat *w, int64_t row) {
    float *y = malloc(sizeof(float) * (size_t)w->cols);
    KS_ASSERT(y);
    ks_dequant(w->type, w->data + row * w->row_bytes, y, (size_t)w->cols);
    return y;
}

double ks_quant_ref_dot(const ks_qmat *w, int64_t row, const float *x) {
    float *y = row_f32(w, row);
    double acc = 0;
    for (int64_t i = 0; i < w->cols; i++) acc += (double)y[i] * x[i];
    free(y);
    return acc;
}

double ks_quant_act_bound(const ks_qmat *w, int64_t row, const ks_qa_block *xa) {
    float *y = row_f32(w, row);
    double bound = 0;
    for (int64_t b = 0; b < w->cols / KS_QA_ELEMS; b++) {
        double wsum = 0;
        for (int i = 0; i < KS_QA_ELEMS; i++) wsum += fabsf(y[b * KS_QA_ELEMS + i]);
        bound += xa[b].d / 2 * wsum;
    }
    free(y);
    return bound;
}

void ks_quant_gemm(float *out, const float *x, const ks_qmat *w, const float *bias, int n, int accumulate,
                   ks_quant_work *work) {
    const ks_quant_out o = {.w = w, .bias = bias, .out = out};
    ks_quant_gemm_multi(&o, 1, x, n, accumulate, work);
}

/* Rows [r0, r1) of one product for all n inputs: int8 dot products, four rows at a time where the kernel has it. */
static void tile_dots(const ks_quant_out *o, dot_kernels k, int64_t r0, int64_t r1, const ks_qa_block *xa, int n,
                      int accumulate) {
    const ks_qmat *w = o->w;
    const int64_t nb = w->cols / KS_QA_ELEMS;
    for (int t = 0; t < n; t++) {
        float *y = o->out + (size_t)t * w->rows;
        const ks_qa_block *a = xa + (size_t)t * nb;
        for (int64_t r = r0; r < r1;) {
            float v[4];
            const int rows = k.four && r1 - r >= 4 ? 4 : 1;
            if (rows == 4) k.four(w->data + r * w->row_bytes, w->row_bytes, a, nb, v);
            else v[0] = k.one(w->data + r * w->row_bytes, a, nb);
            for (int i = 0; i < rows; i++, r++) {
                const float vr = v[i] + (o->bias ? o->bias[r] : 0.0f);
                y[r] = accumulate ? y[r] + vr : vr;
            }
        }
    }
}

/* Rows [r0, r1) of one product for all n inputs through a dequantized fp32 tile and SGEMM. */
static void sgemm_tile(const ks_quant_out *o, int64_t r0, int64_t r1, const float *x, int n, int accumulate,
                       float *tile) {
    const ks_qmat *w = o->w;
    const int64_t rows = r1 - r0, in = w->cols;
    ks_dequant(w->type, w->data + r0 * w->row_bytes, tile, (size_t)(rows * in));
    float beta = accumulate ? 1.0f : 0.0f;
    if (o->bias) { /* seed the outputs with the bias; SGEMM accumulates onto it */
        for (int t = 0; t < n; t++) {
            float *y = o->out + (size_t)t * w->rows;
            for (int64_t r = r0; r < r1; r++) y[r] = (accumulate ? y[r] : 0.0f) + o->bias[r];
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)rows, (int)in, 1.0f, x, (int)in, tile, (int)in, beta,
                o->out + r0, (int)w->rows);
}

/* One call of ks_quant_gemm_multi: its products, their tiles of `per` rows numbered across them (tiles[i] is
 * product i's first), their kernels and the input, fp32 (x) and quantized (xa). */
typedef struct product_set {
    const ks_quant_out *outs;
    int64_t per, tiles[KS_QUANT_MAX_OUTS + 1];
    dot_kernels dots[KS_QUANT_MAX_OUTS];
    const float *x;
    const ks_qa_block *xa;
    int n, accumulate;
} product_set;

/* Which product tile k belongs to, and its rows [*r0, *r1). */
static int find_tile(const product_set *p, int64_t k, int64_t *r0, int64_t *r1) {
    int i = 0;
    while (k >= p->tiles[i + 1]) i++;
    *r0 = (k - p->tiles[i]) * p->per;
    *r1 = *r0 + p->per < p->outs[i].w->rows ? *r0 + p->per : p->outs[i].w->rows;
    return i;
}

/* Tile k through the int8 dot products (a ks_team_fn). */
static void dots_item(void *ctx, int64_t k) {
    const product_set *p = ctx;
    int64_t r0, r1;
    const int i = find_tile(p, k, &r0, &r1);
    tile_dots(&p->outs[i], p->dots[i], r0, r1, p->xa, p->n, p->accumulate);
}

/* The tiles through dequantized weights and SGEMM, spread over the OpenMP threads (milliseconds each: the
 * team's wake-up is paid once). */
static void sgemm_tiles(const product_set *p, int64_t n_tiles, int team, int threads, float *tiles) {
    const int64_t in = p->outs[0].w->cols;
#pragma omp parallel if (team) num_threads(threads)
    {
        float *tile = tiles + (size_t)omp_get_thread_num() * KS_QUANT_TILE * in;
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t k = 0; k < n_tiles; k++) {
            int64_t r0, r1;
            const int i = find_tile(p, k, &r0, &r1);
            sgemm_tile(&p->outs[i], r0, r1, p->x, p->n, p->accumulate, tile);
        }
    }
}

/* The tiles through the int8 dot products: on the helper team, or on this thread alone (work->alone). */
static void dot_tiles(product_set *p, int64_t n_tiles, int team, int threads, ks_quant_work *work) {
    ks_quant_act(work->act, p->x, p->outs[0].w->cols * p->n); /* a few rows: less work than a barrier */
    p->xa = work->act;
    if (!team || work->alone) {
        for (int64_t k = 0; k < n_tiles; k++) dots_item(p, k);
        return;
    }
    /* a helper may rightly find no tile left of fewer tiles than threads */
    if (ks_team_for(&work->team, n_tiles, dots_item, p) == KS_TEAM_LATE && n_tiles >= threads) work->late = 1;
}

void ks_quant_work_for(ks_quant_work *work, int64_t n, ks_team_fn fn, void *ctx) {
    if (work->alone) { /* the helpers sleep through steps that run alone */
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    ks_team_for(&work->team, n, fn, ctx); /* a few short items: a helper finding none left says nothing */
}

void ks_quant_gemm_multi(const ks_quant_out *outs, int n_outs, const float *x, int n, int accumulate,
                         ks_quant_work *work) {
    KS_ASSERT(n_outs >= 1 && n_outs <= KS_QUANT_MAX_OUTS && n <= work->max_n);
    const int64_t in = outs[0].w->cols;
    const int tiled = n >= KS_QUANT_TILE_MIN_ROWS;
    product_set p = {.outs = outs, .per = tiled ? KS_QUANT_TILE : ROW_TILE, .x = x, .n = n,
                     .accumulate = accumulate};
    int64_t work_elems = 0;
    for (int i = 0; i < n_outs; i++) {
        KS_ASSERT(outs[i].w->cols == in && in <= work->max_in && ks_quant_supports(outs[i].w->type));
        p.dots[i] = kernels(outs[i].w->type);
        work_elems += outs[i].w->rows * in;
        p.tiles[i + 1] = p.tiles[i] + (outs[i].w->rows + p.per - 1) / p.per;
    }
    const int64_t n_tiles = p.tiles[n_outs];
    const int threads = omp_get_max_threads() < work->threads ? omp_get_max_threads() : work->threads;
    const int team = threads > 1 && work_elems * n >= KS_QUANT_PARALLEL_MIN;
    if (tiled) sgemm_tiles(&p, n_tiles, team, threads, work->tiles);
    else dot_tiles(&p, n_tiles, team, threads, work);
}

void ks_quant_rows(float *out, const ks_qmat *w, const int32_t *tokens, int n) {
    for (int t = 0; t < n; t++)
        ks_dequant(w->type, w->data + (size_t)tokens[t] * w->row_bytes, out + (size_t)t * w->cols, (size_t)w->cols);
}
