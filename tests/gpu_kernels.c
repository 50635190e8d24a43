/* gpu_kernels.c — every CUDA kernel of kernels/cuda against the CPU references (kernels/cpu/ref.h, kivi_ref.h), on
 * fresh random inputs (the seed is printed; set KS_SEED to replay), odd sizes, outputs poisoned with NaN before
 * each call. bf16 results must satisfy ||out - ref|| / ||ref|| <= 1e-2 and |out - ref| <= atol + rtol |ref|
 * everywhere; exact ops (gathers, copies, conversions) must match bit for bit. Needs a GPU (label "gpu"). */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/kivi_ref.h"
#include "cpu/ref.h"
#include "cuda/ks_cuda.h"
#include "cuda/ks_cuda_kivi.h"

/* ---- host helpers ------------------------------------------------------------------------------------ */

static uint64_t g_rng;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_unif(void) { return (float)((rng_next() >> 40) * (1.0 / 16777216.0)); } /* [0, 1) */
static float rng_normal(void) {
    float u = rng_unif() + 1e-7f, v = rng_unif();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
static int rng_int(int lo, int hi) { return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1)); } /* [lo, hi] */

static ks_bf16 bf16_of(float f) { /* round to nearest even, NaN kept NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ks_bf16)(u >> 16);
}
static float f32_of(ks_bf16 b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* n normal values times `scale`, rounded to bf16 (`bits`, may be NULL) and kept as the rounded floats. */
static float *rand_vec(size_t n, float scale, ks_bf16 *bits) {
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (size_t i = 0; i < n; i++) {
        x[i] = rng_normal() * scale;
        if (bits) {
            bits[i] = bf16_of(x[i]);
            x[i] = f32_of(bits[i]);
        }
    }
    return x;
}

/* ---- device helpers ---------------------------------------------------------------------------------- */

#define CK_CUDA(expr) ck_assert_msg((expr) == cudaSuccess, "%s: %s", #expr, cudaGetErrorString(cudaGetLastError()))
#define CK_KS(expr) ck_assert_msg((expr) == KS_OK, "%s: %s", #expr, ks_last_error())

/* A device buffer filled with NaN (all-ones bytes: NaN in fp32 and bf16, -1 in int32). */
static void *dev_poisoned(size_t bytes) {
    void *p = NULL;
    CK_CUDA(cudaMalloc(&p, bytes ? bytes : 1));
    CK_CUDA(cudaMemset(p, 0xff, bytes));
    CK_CUDA(cudaDeviceSynchronize()); /* the memset runs on the legacy stream: done before any stream reads p */
    return p;
}
static void *dev_from(const void *host, size_t bytes) {
    void *p = dev_poisoned(bytes);
    CK_CUDA(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice));
    CK_CUDA(cudaDeviceSynchronize()); /* a pageable copy may return before its DMA ends: done before any stream */
    return p;
}
static void *host_from(const void *dev, size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    ck_assert_ptr_nonnull(p);
    CK_CUDA(cudaDeviceSynchronize());
    CK_CUDA(cudaMemcpy(p, dev, bytes, cudaMemcpyDeviceToHost));
    return p;
}
/* The fp32 values of n host bf16 values. */
static float *f32_array(const ks_bf16 *bits, size_t n) {
    float *f = malloc((n ? n : 1) * sizeof *f);
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++) f[i] = f32_of(bits[i]);
    return f;
}
static float *host_f32_from_bf16(const void *dev, size_t n) {
    ks_bf16 *b = host_from(dev, n * sizeof *b);
    float *f = f32_array(b, n);
    free(b);
    return f;
}

/* Fails unless out is close to ref: no NaN, relative L2 error <= 1e-2, |d| <= atol + rtol |ref| each. */
static void check_close(const char *what, const float *out, const float *ref, size_t n, float atol, float rtol) {
    double num = 0, den = 0, worst = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)out[i] - ref[i]);
        if (!(d <= atol + rtol * fabs(ref[i]))) { /* also catches NaN */
            if (!bad) first_bad = i;
            bad++;
        }
        if (d > worst || d != d) worst = d;
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("  %-44s n=%-8zu rel_l2=%.2e max_abs=%.2e\n", what, n, rel, worst);
    ck_assert_msg(bad == 0, "%s: %zu of %zu elements out of tolerance, first [%zu] = %g vs %g", what, bad, n,
                  first_bad, out[first_bad], ref[first_bad]);
    ck_assert_msg(rel <= 1e-2, "%s: relative L2 error %.3e > 1e-2", what, rel);
}

/* ---- conversions, add, embedding --------------------------------------------------------------------- */

START_TEST(test_convert) {
    const int64_t n = 100003 + rng_int(0, 9);
    ks_bf16 *bits = malloc(n * sizeof *bits);
    float *x = rand_vec(n, 3.0f, NULL);
    for (int64_t i = 0; i < n; i++) bits[i] = bf16_of(x[i]);
    float *dx = dev_from(x, n * 4);
    ks_bf16 *db = dev_poisoned(n * 2);
    /* an odd offset exercises the unaligned path */
    CK_KS(ks_cuda_f32_to_bf16(db, dx, n, 0));
    CK_KS(ks_cuda_f32_to_bf16(db + 1, dx + 1, 5, 0));
    ks_bf16 *got = host_from(db, n * 2);
    ck_assert_int_eq(memcmp(got, bits, n * 2), 0);
    float *df = dev_poisoned(n * 4);
    CK_KS(ks_cuda_bf16_to_f32(df, db, n, 0));
    float *back = host_from(df, n * 4);
    for (int64_t i = 0; i < n; i++) ck_assert_msg(back[i] == f32_of(bits[i]), "bf16->f32 at %ld", (long)i);
    printf("  convert f32<->bf16 n=%ld exact\n", (long)n);
    free(bits), free(x), free(got), free(back);
    cudaFree(dx), cudaFree(db), cudaFree(df);
}
END_TEST

START_TEST(test_add) {
    const int64_t n = 5003;
    ks_bf16 *xb = malloc(n * 2);
    float *y = rand_vec(n, 1.0f, NULL), *x = rand_vec(n, 1.0f, xb), *x32 = rand_vec(n, 1.0f, NULL);
    float *dy = dev_from(y, n * 4), *dx32 = dev_from(x32, n * 4);
    ks_bf16 *dxb = dev_from(xb, n * 2);
    CK_KS(ks_cuda_add(dy, dxb, KS_DTYPE_BF16, n, 0));
    CK_KS(ks_cuda_add(dy, dx32, KS_DTYPE_F32, n, 0));
    float *got = host_from(dy, n * 4);
    for (int64_t i = 0; i < n; i++) y[i] = y[i] + x[i] + x32[i];
    check_close("add (bf16 then fp32 into fp32)", got, y, n, 1e-6f, 1e-6f);
    free(xb), free(y), free(x), free(x32), free(got);
    cudaFree(dy), cudaFree(dx32), cudaFree(dxb);
}
END_TEST

START_TEST(test_embed) {
    const int V = 1001, D = 77, n = 13;
    ks_bf16 *tb = malloc((size_t)V * D * 2);
    float *table = rand_vec((size_t)V * D, 1.0f, tb);
    int32_t tok[13];
    for (int t = 0; t < n; t++) tok[t] = rng_int(0, V - 1);
    tok[n - 1] = V - 1;
    float *ref = malloc((size_t)n * D * 4);
    ks_ref_embed(ref, tok, n, table, D);
    ks_bf16 *dt = dev_from(tb, (size_t)V * D * 2);
    int32_t *dtok = dev_from(tok, sizeof tok);
    float *d32 = dev_poisoned((size_t)n * D * 4);
    ks_bf16 *d16 = dev_poisoned((size_t)n * D * 2);
    CK_KS(ks_cuda_embed(d32, KS_DTYPE_F32, dtok, n, dt, D, 0));
    CK_KS(ks_cuda_embed(d16, KS_DTYPE_BF16, dtok, n, dt, D, 0));
    float *g32 = host_from(d32, (size_t)n * D * 4), *g16 = host_f32_from_bf16(d16, (size_t)n * D);
    ck_assert_int_eq(memcmp(g32, ref, (size_t)n * D * 4), 0);
    ck_assert_int_eq(memcmp(g16, ref, (size_t)n * D * 4), 0);
    printf("  embed V=%d D=%d n=%d exact (fp32 and bf16 out)\n", V, D, n);
    free(tb), free(table), free(ref), free(g32), free(g16);
    cudaFree(dt), cudaFree(dtok), cudaFree(d32), cudaFree(d16);
}
END_TEST

/* ---- RMSNorm, RoPE, SwiGLU --------------------------------------------------------------------------- */

START_TEST(test_rmsnorm) {
    const int n = 7, D = 1031;
    const float eps = 1e-5f;
    float *x = rand_vec((size_t)n * D, 2.0f, NULL), *delta = rand_vec((size_t)n * D, 1.0f, NULL);
    float *w = rand_vec(D, 1.0f, NULL), *ref = malloc((size_t)n * D * 4), *sum = malloc((size_t)n * D * 4);
    float *dx = dev_from(x, (size_t)n * D * 4), *dd = dev_from(delta, (size_t)n * D * 4), *dw = dev_from(w, D * 4);
    float *o32 = dev_poisoned((size_t)n * D * 4);
    ks_bf16 *o16 = dev_poisoned((size_t)n * D * 2);

    ks_ref_rmsnorm(ref, x, w, n, D, eps);
    CK_KS(ks_cuda_rmsnorm(o32, KS_DTYPE_F32, dx, dw, n, D, eps, 0));
    CK_KS(ks_cuda_rmsnorm(o16, KS_DTYPE_BF16, dx, dw, n, D, eps, 0));
    float *g32 = host_from(o32, (size_t)n * D * 4), *g16 = host_f32_from_bf16(o16, (size_t)n * D);
    check_close("rmsnorm fp32 out", g32, ref, (size_t)n * D, 1e-5f, 1e-5f);
    check_close("rmsnorm bf16 out", g16, ref, (size_t)n * D, 1e-6f, 1.0f / 128);
    free(g32), free(g16);

    for (size_t i = 0; i < (size_t)n * D; i++) sum[i] = x[i] + delta[i];
    ks_ref_rmsnorm(ref, sum, w, n, D, eps);
    CK_CUDA(cudaMemset(o16, 0xff, (size_t)n * D * 2));
    CK_KS(ks_cuda_add_rmsnorm(o16, KS_DTYPE_BF16, dx, dd, dw, n, D, eps, 0));
    float *resid = host_from(dx, (size_t)n * D * 4);
    g16 = host_f32_from_bf16(o16, (size_t)n * D);
    check_close("add_rmsnorm residual", resid, sum, (size_t)n * D, 0.0f, 0.0f);
    check_close("add_rmsnorm bf16 out", g16, ref, (size_t)n * D, 1e-6f, 1.0f / 128);
    free(x), free(delta), free(w), free(ref), free(sum), free(resid), free(g16);
    cudaFree(dx), cudaFree(dd), cudaFree(dw), cudaFree(o32), cudaFree(o16);
}
END_TEST

static void rope_case(int d, ks_dtype type) {
    const int n = 9, heads = 5, extra = 3; /* rows of ld = (heads + extra) * d: a slice of a fused buffer */
    const int64_t ld = (int64_t)(heads + extra) * d;
    float inv_freq[64];
    for (int i = 0; i < d / 2; i++) inv_freq[i] = powf(500000.0f, -2.0f * i / d);
    int32_t pos[9];
    for (int t = 0; t < n; t++) pos[t] = rng_int(0, 131071);
    pos[0] = 0;
    ks_bf16 *bits = malloc((size_t)n * ld * 2);
    float *buf = rand_vec((size_t)n * ld, 1.0f, type == KS_DTYPE_BF16 ? bits : NULL);
    float *ref = malloc((size_t)n * heads * d * 4);
    for (int t = 0; t < n; t++) memcpy(ref + (size_t)t * heads * d, buf + t * ld, (size_t)heads * d * 4);
    ks_ref_rope(ref, pos, n, heads, d, inv_freq);

    void *dx = type == KS_DTYPE_BF16 ? dev_from(bits, (size_t)n * ld * 2) : dev_from(buf, (size_t)n * ld * 4);
    int32_t *dpos = dev_from(pos, n * 4);
    float *dinv = dev_from(inv_freq, d / 2 * 4);
    CK_KS(ks_cuda_rope(dx, type, ld, dpos, n, heads, d, dinv, 0));
    float *all = type == KS_DTYPE_BF16 ? host_f32_from_bf16(dx, (size_t)n * ld) : host_from(dx, (size_t)n * ld * 4);
    float *got = malloc((size_t)n * heads * d * 4);
    for (int t = 0; t < n; t++) {
        memcpy(got + (size_t)t * heads * d, all + t * ld, (size_t)heads * d * 4);
        /* the rest of the fused row is untouched */
        ck_assert_int_eq(memcmp(all + t * ld + heads * d, buf + t * ld + heads * d, (size_t)extra * d * 4), 0);
    }
    char what[64];
    snprintf(what, sizeof what, "rope d=%d %s (ld=%ld)", d, type == KS_DTYPE_BF16 ? "bf16" : "fp32", (long)ld);
    if (type == KS_DTYPE_BF16)
        check_close(what, got, ref, (size_t)n * heads * d, 1e-6f, 1.0f / 128);
    else
        check_close(what, got, ref, (size_t)n * heads * d, 2e-5f, 2e-5f);
    free(bits), free(buf), free(ref), free(all), free(got);
    cudaFree(dx), cudaFree(dpos), cudaFree(dinv);
}

START_TEST(test_rope) {
    rope_case(64, KS_DTYPE_F32);
    rope_case(128, KS_DTYPE_F32);
    rope_case(128, KS_DTYPE_BF16);
}
END_TEST

/* F odd: the scalar path into a separate buffer; F % 8 == 0: the 16-byte path, in place into the gate half
 * (as the cuda backend calls it). */
static void swiglu_case(int rows, int F, int in_place) {
    ks_bf16 *gu = malloc((size_t)rows * 2 * F * 2);
    float *in = rand_vec((size_t)rows * 2 * F, 2.0f, gu);
    float *gate = malloc((size_t)rows * F * 4), *up = malloc((size_t)rows * F * 4), *ref = malloc((size_t)rows * F * 4);
    for (int r = 0; r < rows; r++) {
        memcpy(gate + (size_t)r * F, in + (size_t)r * 2 * F, F * 4);
        memcpy(up + (size_t)r * F, in + (size_t)r * 2 * F + F, F * 4);
    }
    ks_ref_swiglu(ref, gate, up, (int64_t)rows * F);
    ks_bf16 *dgu = dev_from(gu, (size_t)rows * 2 * F * 2), *dout = dev_poisoned((size_t)rows * F * 2);
    if (in_place) {
        CK_KS(ks_cuda_swiglu(dgu, dgu, dgu + F, rows, F, 2 * F, 2 * F, 0));
        CK_CUDA(cudaMemcpy2D(dout, (size_t)F * 2, dgu, (size_t)2 * F * 2, (size_t)F * 2, rows,
                             cudaMemcpyDeviceToDevice));
    } else {
        CK_KS(ks_cuda_swiglu(dout, dgu, dgu + F, rows, F, 2 * F, F, 0));
    }
    float *got = host_f32_from_bf16(dout, (size_t)rows * F);
    check_close(in_place ? "swiglu fused gate|up in place (bf16)" : "swiglu fused gate|up (bf16)", got, ref,
                (size_t)rows * F, 1e-6f, 1.0f / 128);
    free(gu), free(in), free(gate), free(up), free(ref), free(got);
    cudaFree(dgu), cudaFree(dout);
}

START_TEST(test_swiglu) {
    swiglu_case(5, 333, 0);
    swiglu_case(7, 1024, 1);
}
END_TEST

/* ---- argmax ------------------------------------------------------------------------------------------ */

START_TEST(test_argmax) {
    const int rows = 3, n = 128257;
    float *x = rand_vec((size_t)rows * n, 4.0f, NULL);
    /* row 1: a tie between two maxima far apart (the first must win); row 2: the max at the very end */
    int a = rng_int(0, n / 2), b = rng_int(n / 2 + 1, n - 1);
    x[(size_t)n + a] = x[(size_t)n + b] = 100.0f;
    x[(size_t)2 * n + n - 1] = 100.0f;
    float *dx = dev_from(x, (size_t)rows * n * 4);
    int32_t *dout = dev_poisoned(rows * 4);
    void *scratch = dev_poisoned(ks_cuda_argmax_scratch_bytes(rows, n));
    CK_KS(ks_cuda_argmax(dout, dx, rows, n, scratch, 0));
    int32_t *got = host_from(dout, rows * 4);
    for (int r = 0; r < rows; r++) ck_assert_int_eq(got[r], ks_ref_argmax(x + (size_t)r * n, n));
    ck_assert_int_eq(got[1], a);
    printf("  argmax rows=%d n=%d: %d %d %d\n", rows, n, got[0], got[1], got[2]);
    free(x), free(got);
    cudaFree(dx), cudaFree(dout), cudaFree(scratch);
}
END_TEST

/* ---- KV append --------------------------------------------------------------------------------------- */

static void kv_append_case(int d, int per_head_lens) {
    const int H = 6, Hk = 3, n = 11, cap = 50;
    const int64_t ld = (int64_t)(H + 2 * Hk) * d; /* k and v are slices of a fused q|k|v buffer */
    int32_t lens[3] = {0, 7, 39};
    const int row0 = 13;
    ks_bf16 *qkv = malloc((size_t)n * ld * 2), *cache = malloc((size_t)Hk * cap * d * 2);
    float *unused = rand_vec((size_t)n * ld, 1.0f, qkv);
    free(unused);
    for (size_t i = 0; i < (size_t)Hk * cap * d; i++) cache[i] = bf16_of(rng_normal());
    ks_bf16 *dqkv = dev_from(qkv, (size_t)n * ld * 2);
    ks_bf16 *dk = dev_from(cache, (size_t)Hk * cap * d * 2), *dv = dev_from(cache, (size_t)Hk * cap * d * 2);
    int32_t *dlens = dev_from(lens, sizeof lens);
    CK_KS(ks_cuda_kv_append(dk, dv, dqkv + H * d, dqkv + (H + Hk) * d, ld, per_head_lens ? dlens : NULL, row0, n, Hk,
                            d, cap, 0));
    CK_KS(ks_cuda_lens_add(dlens, Hk, n, 0));
    ks_bf16 *gk = host_from(dk, (size_t)Hk * cap * d * 2), *gv = host_from(dv, (size_t)Hk * cap * d * 2);
    int32_t *glens = host_from(dlens, sizeof lens);
    for (int h = 0; h < Hk; h++) {
        ck_assert_int_eq(glens[h], lens[h] + n);
        int start = per_head_lens ? lens[h] : row0;
        for (int r = 0; r < cap; r++) {
            const ks_bf16 *ek = cache + ((size_t)h * cap + r) * d, *ev = ek; /* unchanged rows */
            if (r >= start && r < start + n) {
                ek = qkv + (size_t)(r - start) * ld + (H + h) * d;
                ev = qkv + (size_t)(r - start) * ld + (H + Hk + h) * d;
            }
            ck_assert_msg(memcmp(gk + ((size_t)h * cap + r) * d, ek, d * 2) == 0, "K head %d row %d", h, r);
            ck_assert_msg(memcmp(gv + ((size_t)h * cap + r) * d, ev, d * 2) == 0, "V head %d row %d", h, r);
        }
    }
    printf("  kv_append d=%d %s exact\n", d, per_head_lens ? "per-head lens" : "row0");
    free(qkv), free(cache), free(gk), free(gv), free(glens);
    cudaFree(dqkv), cudaFree(dk), cudaFree(dv), cudaFree(dlens);
}

START_TEST(test_kv_append) {
    kv_append_case(128, 1);
    kv_append_case(64, 0);
}
END_TEST

/* One decode token: q and k heads of a fused q|k|v row rotated in place (against ks_ref_rope), k and v appended
 * at each KV head's own length (exact copies of the rotated k and the input v), lengths counted, every other
 * cache row and the v part of the row untouched. */
static void rope_append_one_case(int d, int H, int Hk, const int32_t *lens) {
    const int cap = 40, width = (H + 2 * Hk) * d;
    const size_t csz = (size_t)Hk * cap * d;
    float inv_freq[64];
    for (int i = 0; i < d / 2; i++) inv_freq[i] = powf(500000.0f, -2.0f * i / d);
    const int32_t pos = rng_int(0, 131071);
    ks_bf16 *qkv = malloc((size_t)width * 2), *cache = malloc(csz * 2);
    float *ref = rand_vec(width, 1.0f, qkv);
    for (size_t i = 0; i < csz; i++) cache[i] = bf16_of(rng_normal());
    ks_ref_rope(ref, &pos, 1, H + Hk, d, inv_freq);
    ks_bf16 *dqkv = dev_from(qkv, (size_t)width * 2), *dk = dev_from(cache, csz * 2), *dv = dev_from(cache, csz * 2);
    int32_t *dlens = dev_from(lens, Hk * 4), *dpos = dev_from(&pos, 4);
    float *dinv = dev_from(inv_freq, d / 2 * 4);
    CK_KS(ks_cuda_rope_append_one(dqkv, dk, dv, dpos, dlens, H, Hk, d, cap, dinv, 0));
    ks_bf16 *grow = host_from(dqkv, (size_t)width * 2), *gk = host_from(dk, csz * 2), *gv = host_from(dv, csz * 2);
    int32_t *glens = host_from(dlens, Hk * 4);
    float *got = f32_array(grow, (size_t)(H + Hk) * d);
    char what[64];
    snprintf(what, sizeof what, "rope_append_one d=%d H=%d Hk=%d q|k", d, H, Hk);
    check_close(what, got, ref, (size_t)(H + Hk) * d, 1e-6f, 1.0f / 128);
    ck_assert_msg(memcmp(grow + (H + Hk) * d, qkv + (H + Hk) * d, (size_t)Hk * d * 2) == 0, "v part changed");
    for (int h = 0; h < Hk; h++) {
        ck_assert_int_eq(glens[h], lens[h] + 1);
        for (int r = 0; r < cap; r++) {
            const ks_bf16 *ek = cache + ((size_t)h * cap + r) * d, *ev = ek; /* unchanged rows */
            if (r == lens[h]) ek = grow + (size_t)(H + h) * d, ev = qkv + (size_t)(H + Hk + h) * d;
            ck_assert_msg(memcmp(gk + ((size_t)h * cap + r) * d, ek, d * 2) == 0, "K head %d row %d", h, r);
            ck_assert_msg(memcmp(gv + ((size_t)h * cap + r) * d, ev, d * 2) == 0, "V head %d row %d", h, r);
        }
    }
    free(qkv), free(cache), free(ref), free(grow), free(gk), free(gv), free(glens), free(got);
    cudaFree(dqkv), cudaFree(dk), cudaFree(dv), cudaFree(dlens), cudaFree(dpos), cudaFree(dinv);
}

START_TEST(test_rope_append_one) {
    const int32_t a[2] = {3, 39}, b[4] = {0, 17, 5, 38};
    rope_append_one_case(128, 6, 2, a);
    rope_append_one_case(64, 4, 4, b);
}
END_TEST

/* ---- GEMM -------------------------------------------------------------------------------------------- */

static void gemm_case(ks_cuda_gemm_t *g, int n, int in, int out, ks_dtype yt, int bias, float beta) {
    ks_bf16 *xb = malloc((size_t)n * in * 2), *wb = malloc((size_t)out * in * 2), *bb = malloc((size_t)out * 2);
    float *x = rand_vec((size_t)n * in, 1.0f, xb), *w = rand_vec((size_t)out * in, 0.05f, wb);
    float *b = rand_vec(out, 1.0f, yt == KS_DTYPE_BF16 ? bb : NULL), *y0 = rand_vec((size_t)n * out, 1.0f, NULL);
    float *ref = malloc((size_t)n * out * 4);
    ks_ref_gemm(ref, x, w, bias ? b : NULL, n, in, out);
    if (beta != 0.0f)
        for (size_t i = 0; i < (size_t)n * out; i++) ref[i] += y0[i];

    size_t ysz = yt == KS_DTYPE_F32 ? 4 : 2;
    ks_bf16 *dx = dev_from(xb, (size_t)n * in * 2), *dw = dev_from(wb, (size_t)out * in * 2);
    void *db = yt == KS_DTYPE_F32 ? dev_from(b, (size_t)out * 4) : dev_from(bb, (size_t)out * 2);
    void *dy = beta != 0.0f ? dev_from(y0, (size_t)n * out * 4) : dev_poisoned((size_t)n * out * ysz);
    KS_ASSERT(beta == 0.0f || yt == KS_DTYPE_F32); /* this test accumulates into fp32 only */
    CK_KS(ks_cuda_gemm_run(g, dy, yt, dx, dw, bias ? db : NULL, n, in, out, beta, 0));
    CK_KS(ks_cuda_gemm_run(g, dy, yt, dx, dw, bias ? db : NULL, n, in, out, 0.0f, 0)); /* plan reuse path */
    if (beta != 0.0f) CK_CUDA(cudaMemcpy(dy, y0, (size_t)n * out * 4, cudaMemcpyHostToDevice));
    CK_KS(ks_cuda_gemm_run(g, dy, yt, dx, dw, bias ? db : NULL, n, in, out, beta, 0));
    float *got = yt == KS_DTYPE_F32 ? host_from(dy, (size_t)n * out * 4) : host_f32_from_bf16(dy, (size_t)n * out);
    char what[96];
    snprintf(what, sizeof what, "gemm n=%d in=%d out=%d %s%s%s", n, in, out, yt == KS_DTYPE_F32 ? "fp32" : "bf16",
             bias ? " +bias" : "", beta != 0.0f ? " +=y" : "");
    /* bf16 out: cuBLASLt rounds before adding the bias, so a result that cancels against the bias keeps the
     * rounding error of the larger product (atol ~ 2^-8 of the terms, which are O(1) here). */
    if (yt == KS_DTYPE_F32)
        check_close(what, got, ref, (size_t)n * out, 2e-3f, 2e-3f);
    else
        check_close(what, got, ref, (size_t)n * out, 1e-2f, 1.0f / 128);
    free(xb), free(wb), free(bb), free(x), free(w), free(b), free(y0), free(ref), free(got);
    cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dy);
}

START_TEST(test_gemm) {
    ks_cuda_gemm_t *g = NULL;
    CK_KS(ks_cuda_gemm_init(&g, 32u << 20));
    gemm_case(g, 1, 64, 96, KS_DTYPE_BF16, 0, 0.0f);     /* decode rows: the GEMVs (ks_cuda_gemv) */
    gemm_case(g, 1, 4096, 1001, KS_DTYPE_BF16, 1, 0.0f);
    gemm_case(g, 1, 4096, 6143, KS_DTYPE_BF16, 1, 0.0f); /* one wave of 8-row blocks, a partial last block */
    gemm_case(g, 1, 4096, 4093, KS_DTYPE_F32, 0, 1.0f);  /* 4-row blocks, accumulating */
    gemm_case(g, 1, 75, 33, KS_DTYPE_F32, 1, 1.0f);      /* odd in: the scalar path */
    gemm_case(g, 37, 136, 203, KS_DTYPE_BF16, 1, 0.0f);  /* odd n and out, bias (Qwen2 q/k/v) */
    gemm_case(g, 19, 80, 33, KS_DTYPE_F32, 0, 1.0f);     /* accumulate into the fp32 residual */
    gemm_case(g, 5, 75, 31, KS_DTYPE_F32, 1, 0.0f);      /* odd in: the GEMVs' scalar path over 5 rows */
    gemm_case(g, 21, 75, 31, KS_DTYPE_F32, 1, 0.0f);     /* odd in: cuBLASLt's unaligned rows */
    gemm_case(g, 300, 1024, 1536, KS_DTYPE_BF16, 0, 0.0f);
    ks_cuda_gemm_free(g);
    ks_cuda_gemm_free(NULL);
}
END_TEST

/* The decode GEMVs with their next op fused (ks_cuda_gemv_swiglu, ks_cuda_gemv_norm), launched back to back on
 * a created stream as a decode step does, so that the programmatic dependent launches overlap: each result
 * feeds the next kernel, which must see it complete. */
static void gemv_fused_case(int in, int F, int D) {
    cudaStream_t s;
    CK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    ks_bf16 *xb = malloc((size_t)in * 2), *wgub = malloc((size_t)2 * F * in * 2), *wdb = malloc((size_t)D * F * 2);
    float *x = rand_vec(in, 1.0f, xb), *wgu = rand_vec((size_t)2 * F * in, 0.05f, wgub);
    float *wd = rand_vec((size_t)D * F, 0.05f, wdb), *bias = rand_vec(D, 1.0f, NULL), *y0 = rand_vec(D, 1.0f, NULL);
    float *norm_w = rand_vec(D, 1.0f, NULL);
    /* reference: gate|up rounded to bf16 (the buffer the unfused GEMV writes), SwiGLU rounded to bf16; the
     * residual projection and its norm are checked below against the reference applied to the GPU's SwiGLU */
    float *gu = malloc((size_t)2 * F * 4), *act = malloc((size_t)F * 4), *y = malloc((size_t)D * 4);
    float *xn = malloc((size_t)D * 4), *up = malloc((size_t)F * 4);
    ks_ref_gemm(gu, x, wgu, NULL, 1, in, 2 * F);
    for (int i = 0; i < 2 * F; i++) gu[i] = f32_of(bf16_of(gu[i]));
    ks_ref_swiglu(act, gu, gu + F, F);
    for (int i = 0; i < F; i++) act[i] = f32_of(bf16_of(act[i])), up[i] = gu[F + i];

    ks_bf16 *dx = dev_from(xb, (size_t)in * 2), *dwgu = dev_from(wgub, (size_t)2 * F * in * 2);
    ks_bf16 *dwd = dev_from(wdb, (size_t)D * F * 2), *dgate = dev_poisoned((size_t)F * 2), *dup = dev_poisoned((size_t)F * 2);
    ks_bf16 *dxn = dev_poisoned((size_t)D * 2);
    float *dbias = dev_from(bias, (size_t)D * 4), *dnorm = dev_from(norm_w, (size_t)D * 4), *dy = dev_from(y0, (size_t)D * 4);
    unsigned *ddone = dev_poisoned(sizeof(unsigned));
    CK_CUDA(cudaMemset(ddone, 0, sizeof(unsigned)));
    float *first_y = NULL;
    for (int rep = 0; rep < 2; rep++) { /* the second launch checks that the first left the counter at 0 */
        if (rep) CK_CUDA(cudaMemcpyAsync(dy, y0, (size_t)D * 4, cudaMemcpyHostToDevice, s));
        CK_KS(ks_cuda_gemv_swiglu(dgate, dup, F, dx, in, dwgu, 1, in, F, s));
        CK_KS(ks_cuda_gemv_norm(dy, D, dgate, F, dwd, dbias, 1, F, D, 1.0f, dxn, D, dnorm, 1e-5f, ddone, s));
        CK_CUDA(cudaStreamSynchronize(s));
        if (!rep) first_y = host_from(dy, (size_t)D * 4);
    }
    float *g_act = host_f32_from_bf16(dgate, F), *g_up = host_f32_from_bf16(dup, F), *g_y = host_from(dy, (size_t)D * 4);
    float *g_xn = host_f32_from_bf16(dxn, D);
    /* gemv_norm against the reference on the input it had: the GPU's SwiGLU output, which may differ from the
     * CPU's by a bf16 ulp where a sum lands next to a rounding boundary (fp32 sums in another order) */
    ks_ref_gemm(y, g_act, wd, bias, 1, F, D);
    for (int i = 0; i < D; i++) y[i] += y0[i];
    ks_ref_rmsnorm(xn, y, norm_w, 1, D, 1e-5f);
    unsigned *g_done = host_from(ddone, sizeof(unsigned));
    char what[96];
    snprintf(what, sizeof what, "gemv_swiglu in=%d F=%d (silu(g)*u)", in, F);
    check_close(what, g_act, act, F, 1e-3f, 1.0f / 64);
    snprintf(what, sizeof what, "gemv_swiglu in=%d F=%d (up)", in, F);
    check_close(what, g_up, up, F, 1e-3f, 1.0f / 128);
    snprintf(what, sizeof what, "gemv_norm in=%d out=%d (residual)", F, D);
    check_close(what, g_y, y, D, 2e-3f, 2e-3f);
    snprintf(what, sizeof what, "gemv_norm in=%d out=%d (rmsnorm, bf16)", F, D);
    check_close(what, g_xn, xn, D, 2e-3f, 1.0f / 64);
    ck_assert_msg(*g_done == 0, "gemv_norm left its block counter at %u", *g_done);
    ck_assert_msg(!memcmp(first_y, g_y, (size_t)D * 4), "gemv_swiglu + gemv_norm: two launches on the same input "
                                                        "gave different residuals (not deterministic)");
    free(first_y);
    free(xb), free(wgub), free(wdb), free(x), free(wgu), free(wd), free(bias), free(y0), free(norm_w);
    free(gu), free(act), free(y), free(xn), free(up), free(g_act), free(g_up), free(g_y), free(g_xn), free(g_done);
    cudaFree(dx), cudaFree(dwgu), cudaFree(dwd), cudaFree(dgate), cudaFree(dup), cudaFree(dxn), cudaFree(dbias);
    cudaFree(dnorm), cudaFree(dy), cudaFree(ddone);
    CK_CUDA(cudaStreamDestroy(s));
}

START_TEST(test_gemv_fused) {
    gemv_fused_case(4096, 1001, 4096); /* vector path, out not a multiple of the rows per block */
    gemv_fused_case(75, 37, 333);      /* odd in: the scalar path; odd F: the down GEMV's scalar path too */
    gemv_fused_case(576, 1536, 576);   /* SmolLM2's shapes */
}
END_TEST

/* The decode GEMVs over several rows (a batched step's, one per sample): each mode launched on n rows, and on each
 * row alone; row t of the n-row launch must equal the row alone bit for bit (what makes a batch decode the tokens
 * its samples decode alone) and the CPU reference within tolerance. */
enum { GEMV_F32, GEMV_BF16, GEMV_SWIGLU, GEMV_NORM, GEMV_MODES };
static const char *const gemv_mode_name[GEMV_MODES] = {"fp32 +bias +=y", "bf16 +bias", "swiglu", "norm +bias +=y"};

/* One random problem: n rows of x (row t at dx + t * ld_x, the padding NaN), W with `out` rows (2 out for SwiGLU:
 * gate over up), y row t at + t * ld_y (SwiGLU: gate there, up `out` further), xn row t at + t * ld_xn. */
typedef struct gemv_rows_case {
    int mode, n, in, out;
    int64_t ld_x, ld_y, ld_xn;
    size_t y_bytes, xn_bytes;
    float *x, *w, *bias, *y0, *norm_w; /* host, bf16-rounded where the device holds bf16 */
    ks_bf16 *dx, *dw;
    void *dbias;
    float *dnorm;
} gemv_rows_case;

/* What a launch writes: y (and up), xn, the norm's block counter. */
typedef struct gemv_rows_out {
    void *y;
    ks_bf16 *xn;
    unsigned *done;
} gemv_rows_out;

static void gemv_rows_setup(gemv_rows_case *c, int mode, int n, int in, int out) {
    const int wrows = mode == GEMV_SWIGLU ? 2 * out : out;
    *c = (gemv_rows_case){.mode = mode, .n = n, .in = in, .out = out};
    c->ld_x = in % 8 ? in + 3 : in + 8; /* 16-byte rows where `in` allows them */
    c->ld_y = mode == GEMV_SWIGLU ? 2 * out : out + 3;
    c->ld_xn = out + 5;
    c->y_bytes = (size_t)n * c->ld_y * (mode == GEMV_F32 || mode == GEMV_NORM ? 4 : 2);
    c->xn_bytes = (size_t)n * c->ld_xn * 2;
    ks_bf16 *xb = malloc((size_t)n * in * 2), *wb = malloc((size_t)wrows * in * 2), *bb = malloc((size_t)out * 2);
    c->x = rand_vec((size_t)n * in, 1.0f, xb), c->w = rand_vec((size_t)wrows * in, 0.05f, wb);
    c->bias = rand_vec(out, 1.0f, bb), c->y0 = rand_vec((size_t)n * out, 1.0f, NULL);
    c->norm_w = rand_vec(out, 1.0f, NULL);
    ks_bf16 *xpad = malloc((size_t)n * c->ld_x * 2);
    memset(xpad, 0xff, (size_t)n * c->ld_x * 2);
    for (int t = 0; t < n; t++) memcpy(xpad + t * c->ld_x, xb + (size_t)t * in, (size_t)in * 2);
    c->dx = dev_from(xpad, (size_t)n * c->ld_x * 2), c->dw = dev_from(wb, (size_t)wrows * in * 2);
    c->dbias = mode == GEMV_BF16 ? dev_from(bb, (size_t)out * 2) : dev_from(c->bias, (size_t)out * 4);
    c->dnorm = dev_from(c->norm_w, (size_t)out * 4);
    free(xb), free(wb), free(bb), free(xpad);
}

static void gemv_rows_free(gemv_rows_case *c) {
    free(c->x), free(c->w), free(c->bias), free(c->y0), free(c->norm_w);
    cudaFree(c->dx), cudaFree(c->dw), cudaFree(c->dbias), cudaFree(c->dnorm);
}

/* Outputs as a launch finds them: y holds y0 (accumulating modes) or NaN, xn NaN, the counter 0. */
static gemv_rows_out gemv_rows_out_new(const gemv_rows_case *c) {
    gemv_rows_out o = {dev_poisoned(c->y_bytes), dev_poisoned(c->xn_bytes), dev_poisoned(sizeof(unsigned))};
    CK_CUDA(cudaMemset(o.done, 0, sizeof(unsigned)));
    if (c->mode == GEMV_F32 || c->mode == GEMV_NORM)
        CK_CUDA(cudaMemcpy2D(o.y, c->ld_y * 4, c->y0, (size_t)c->out * 4, (size_t)c->out * 4, c->n,
                             cudaMemcpyHostToDevice));
    return o;
}

static void gemv_rows_out_free(gemv_rows_out *o) { cudaFree(o->y), cudaFree(o->xn), cudaFree(o->done); }

/* The case's mode on rows row0 .. row0 + n - 1. */
static void gemv_rows_launch(const gemv_rows_case *c, const gemv_rows_out *o, int row0, int n, cudaStream_t s) {
    const ks_bf16 *x = c->dx + row0 * c->ld_x;
    float *yf = (float *)o->y + row0 * c->ld_y;
    ks_bf16 *yb = (ks_bf16 *)o->y + row0 * c->ld_y;
    switch (c->mode) {
    case GEMV_F32:
        CK_KS(ks_cuda_gemv(yf, c->ld_y, KS_DTYPE_F32, x, c->ld_x, c->dw, c->dbias, n, c->in, c->out, 1.0f, s));
        break;
    case GEMV_BF16:
        CK_KS(ks_cuda_gemv(yb, c->ld_y, KS_DTYPE_BF16, x, c->ld_x, c->dw, c->dbias, n, c->in, c->out, 0.0f, s));
        break;
    case GEMV_SWIGLU:
        CK_KS(ks_cuda_gemv_swiglu(yb, yb + c->out, c->ld_y, x, c->ld_x, c->dw, n, c->in, c->out, s));
        break;
    default:
        CK_KS(ks_cuda_gemv_norm(yf, c->ld_y, x, c->ld_x, c->dw, c->dbias, n, c->in, c->out, 1.0f,
                                o->xn + row0 * c->ld_xn, c->ld_xn, c->dnorm, 1e-5f, o->done, s));
    }
}

/* Rows of a device buffer (rows of `ld` elements of `size` bytes) as packed floats of `width` each. */
static float *device_rows_f32(const void *dev, int rows, int64_t ld, int width, size_t size) {
    unsigned char *h = host_from(dev, (size_t)rows * ld * size);
    float *f = malloc((size_t)rows * width * sizeof *f);
    for (int t = 0; t < rows; t++)
        for (int i = 0; i < width; i++) {
            const unsigned char *e = h + ((size_t)t * ld + i) * size;
            ks_bf16 b;
            memcpy(size == 4 ? (void *)&f[(size_t)t * width + i] : (void *)&b, e, size);
            if (size == 2) f[(size_t)t * width + i] = f32_of(b);
        }
    free(h);
    return f;
}

/* The n-row launch's outputs against the CPU reference. */
static void gemv_rows_check_ref(const gemv_rows_case *c, const gemv_rows_out *o, const char *what) {
    const int n = c->n, out = c->out, wrows = c->mode == GEMV_SWIGLU ? 2 * out : out;
    const int f32 = c->mode == GEMV_F32 || c->mode == GEMV_NORM;
    float *ref = malloc((size_t)n * wrows * 4);
    ks_ref_gemm(ref, c->x, c->w, c->mode == GEMV_SWIGLU ? NULL : c->bias, n, c->in, wrows);
    float *got = device_rows_f32(o->y, n, c->ld_y, c->mode == GEMV_SWIGLU ? 2 * out : out, f32 ? 4 : 2);
    char msg[160];
    snprintf(msg, sizeof msg, "%s (y)", what);
    if (c->mode == GEMV_SWIGLU) {
        /* gate|up rounded to bf16, SwiGLU rounded to bf16, row by row in the fused layout */
        float *act = malloc((size_t)n * out * 4), *up = malloc((size_t)n * out * 4);
        float *g_act = malloc((size_t)n * out * 4), *g_up = malloc((size_t)n * out * 4);
        for (size_t i = 0; i < (size_t)n * wrows; i++) ref[i] = f32_of(bf16_of(ref[i]));
        for (int t = 0; t < n; t++) {
            ks_ref_swiglu(act + (size_t)t * out, ref + (size_t)t * wrows, ref + (size_t)t * wrows + out, out);
            for (int i = 0; i < out; i++) {
                act[(size_t)t * out + i] = f32_of(bf16_of(act[(size_t)t * out + i]));
                up[(size_t)t * out + i] = ref[(size_t)t * wrows + out + i];
                g_act[(size_t)t * out + i] = got[(size_t)t * wrows + i];
                g_up[(size_t)t * out + i] = got[(size_t)t * wrows + out + i];
            }
        }
        check_close(msg, g_act, act, (size_t)n * out, 1e-3f, 1.0f / 64);
        snprintf(msg, sizeof msg, "%s (up)", what);
        check_close(msg, g_up, up, (size_t)n * out, 1e-3f, 1.0f / 128);
        free(act), free(up), free(g_act), free(g_up);
    } else if (f32) {
        for (size_t i = 0; i < (size_t)n * out; i++) ref[i] += c->y0[i];
        check_close(msg, got, ref, (size_t)n * out, 2e-3f, 2e-3f);
    } else {
        check_close(msg, got, ref, (size_t)n * out, 1e-2f, 1.0f / 128);
    }
    if (c->mode == GEMV_NORM) { /* the reference norm of the GPU's own residual rows */
        float *xn = malloc((size_t)n * out * 4), *g_xn = device_rows_f32(o->xn, n, c->ld_xn, out, 2);
        ks_ref_rmsnorm(xn, got, c->norm_w, n, out, 1e-5f);
        snprintf(msg, sizeof msg, "%s (xn)", what);
        check_close(msg, g_xn, xn, (size_t)n * out, 2e-3f, 1.0f / 64);
        free(xn), free(g_xn);
    }
    free(ref), free(got);
}

/* Fails unless the two device buffers hold the same bytes. */
static void expect_same_bytes(const void *a, const void *b, size_t bytes, const char *what) {
    unsigned char *ha = host_from(a, bytes), *hb = host_from(b, bytes);
    size_t i = 0;
    while (i < bytes && ha[i] == hb[i]) i++;
    ck_assert_msg(i == bytes, "%s: the rows launched together differ from each row alone (byte %zu)", what, i);
    free(ha), free(hb);
}

static void gemv_rows_case_run(int mode, int n, int in, int out, cudaStream_t s) {
    gemv_rows_case c;
    gemv_rows_setup(&c, mode, n, in, out);
    gemv_rows_out batch = gemv_rows_out_new(&c), alone = gemv_rows_out_new(&c);
    gemv_rows_launch(&c, &batch, 0, n, s);
    for (int t = 0; t < n; t++) gemv_rows_launch(&c, &alone, t, 1, s);
    CK_CUDA(cudaStreamSynchronize(s));
    char what[128];
    snprintf(what, sizeof what, "gemv %s n=%d in=%d out=%d", gemv_mode_name[mode], n, in, out);
    expect_same_bytes(batch.y, alone.y, c.y_bytes, what);
    if (mode == GEMV_NORM) {
        expect_same_bytes(batch.xn, alone.xn, c.xn_bytes, what);
        unsigned *d1 = host_from(batch.done, sizeof(unsigned)), *d2 = host_from(alone.done, sizeof(unsigned));
        ck_assert_msg(*d1 == 0 && *d2 == 0, "%s: the norm's block counter was left at %u / %u", what, *d1, *d2);
        free(d1), free(d2);
    }
    gemv_rows_check_ref(&c, &batch, what);
    gemv_rows_out_free(&batch), gemv_rows_out_free(&alone);
    gemv_rows_free(&c);
}

START_TEST(test_gemv_rows) {
    static const int shapes[][2] = {
        {4096, 1001},  /* 16-byte path, 4-row blocks, out not a multiple of 4 */
        {75, 33},      /* odd in: the scalar path */
        {576, 1536},   /* SmolLM2's q|k|v-like width */
        {1032, 16411}, /* 2-row blocks (out > 16384), odd out */
    };
    static const int rows[] = {1, 2, 3, 7, 16};
    cudaStream_t s; /* a created stream: the launches overlap through their programmatic dependent launches */
    CK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
            for (int mode = 0; mode < GEMV_MODES; mode++)
                gemv_rows_case_run(mode, rows[r], shapes[i][0], shapes[i][1], s);
    /* rows that would not all start on a 16-byte word: refused, not summed in another order */
    gemv_rows_case c;
    gemv_rows_setup(&c, GEMV_F32, 2, 64, 8);
    float *dy = dev_poisoned((size_t)2 * 8 * 4);
    ck_assert(ks_cuda_gemv(dy, 8, KS_DTYPE_F32, c.dx, 68, c.dw, NULL, 2, 64, 8, 0.0f, s) == KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "ld_x"));
    cudaFree(dy);
    gemv_rows_free(&c);
    CK_CUDA(cudaStreamDestroy(s));
}
END_TEST

/* ---- attention --------------------------------------------------------------------------------------- */

/* A head-major cache (Hk, cap, d) of random bf16 rows [0, n_kv); the rows past n_kv are NaN, so a kernel
 * that reads them unmasked fails. Returns the float copy (NaN rows as zeros, which the reference skips). */
static float *make_cache(ks_bf16 *bits, int Hk, int cap, int d, const int32_t *lens) {
    float *f = calloc((size_t)Hk * cap * d, sizeof *f);
    ck_assert_ptr_nonnull(f);
    for (int h = 0; h < Hk; h++)
        for (int r = 0; r < cap; r++)
            for (int i = 0; i < d; i++) {
                size_t at = ((size_t)h * cap + r) * d + i;
                if (r < lens[h]) {
                    bits[at] = bf16_of(rng_normal());
                    f[at] = f32_of(bits[at]);
                } else {
                    bits[at] = 0xffff;
                }
            }
    return f;
}

/* Key j is in a block that l lists for query position pos of head h (l NULL: every key). */
static int key_listed(const ks_block_list *l, int h, int pos, int j) {
    if (!l) return 1;
    const int row = ks_block_row(l, h, pos / l->block);
    for (int c = l->row_start[row]; c < l->row_start[row + 1]; c++)
        if (l->cols[c] == j / l->block) return 1;
    return 0;
}

/* lse (n, H): each query's log-sum-exp of its scaled logits over the keys ks_ref_attention (l NULL) or
 * ks_ref_attention_sparse (block list l) lets it see (double); +inf for none. */
static void ref_lse(float *lse, const float *q, const float *k, int n, int n_kv, int cap, int H, int Hk, int d,
                    int q_pos0, int window, float scale, const ks_block_list *l) {
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            const int pos = q_pos0 + t, lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
            const float *qr = q + ((size_t)t * H + h) * d, *kh = k + (size_t)(h / (H / Hk)) * cap * d;
            double mx = -INFINITY, sum = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int j = lo; j <= pos && j < n_kv; j++) {
                    if (!key_listed(l, h, pos, j)) continue;
                    double dot = 0;
                    for (int i = 0; i < d; i++) dot += (double)qr[i] * kh[(size_t)j * d + i];
                    dot *= scale;
                    if (pass == 0) mx = dot > mx ? dot : mx;
                    else sum += exp(dot - mx);
                }
            lse[(size_t)t * H + h] = sum > 0 ? (float)(mx + log(sum)) : INFINITY;
        }
}

static void prefill_case(int H, int Hk, int d, int n, int q_pos0, int n_kv, int window, int fused) {
    const int cap = n_kv + 37;
    const int64_t ld_q = fused ? (int64_t)(H + 2 * Hk) * d : (int64_t)H * d, ld_o = (int64_t)H * d;
    const float scale = 1.0f / sqrtf((float)d);
    const size_t ce = (size_t)Hk * cap * d;
    ks_bf16 *qb = malloc((size_t)n * ld_q * 2), *kb = malloc(ce * 2), *vb = malloc(ce * 2);
    float *qall = rand_vec((size_t)n * ld_q, 1.0f, qb), *q = malloc((size_t)n * H * d * 4);
    for (int t = 0; t < n; t++) memcpy(q + (size_t)t * H * d, qall + t * ld_q, (size_t)H * d * 4);
    int32_t lens[64];
    for (int h = 0; h < Hk; h++) lens[h] = n_kv;
    float *k = make_cache(kb, Hk, cap, d, lens), *v = make_cache(vb, Hk, cap, d, lens);
    float *ref = malloc((size_t)n * H * d * 4), *lse_ref = malloc((size_t)n * H * 4);
    ks_ref_attention(ref, q, k, v, n, n_kv, cap, H, Hk, d, q_pos0, window, scale);
    ref_lse(lse_ref, q, k, n, n_kv, cap, H, Hk, d, q_pos0, window, scale, NULL);
    const int tc = d == 64 || d == 128; /* the tensor-core kernels also give each row's log-sum-exp */
    float *dlse = dev_poisoned((size_t)n * H * 4);

    ks_bf16 *dq = dev_from(qb, (size_t)n * ld_q * 2), *dk = dev_from(kb, ce * 2);
    ks_bf16 *dv = dev_from(vb, ce * 2), *dout = dev_poisoned((size_t)n * ld_o * 2);
    /* the dispatching entry (wgmma on Hopper for d = 128) and the portable mma.sync kernel (d = 64, 128) */
    for (int portable = 0; portable < (tc ? 2 : 1); portable++) {
        CK_CUDA(cudaMemset(dout, 0xff, (size_t)n * ld_o * 2));
        CK_CUDA(cudaMemset(dlse, 0xff, (size_t)n * H * 4)); /* NaN poison */
        if (portable)
            CK_KS(ks_cuda_attention_prefill_sm80(dout, ld_o, dq, ld_q, dk, dv, n, n_kv, cap, H, Hk, d, q_pos0, window,
                                                 scale, dlse, 0));
        else
            CK_KS(ks_cuda_attention_prefill(dout, ld_o, dq, ld_q, dk, dv, n, n_kv, cap, H, Hk, d, q_pos0, window,
                                            scale, tc ? dlse : NULL, 0));
        float *got = host_f32_from_bf16(dout, (size_t)n * ld_o);
        char what[96];
        snprintf(what, sizeof what, "prefill%s H=%d Hk=%d d=%d n=%d pos0=%d n_kv=%d win=%d%s", portable ? "80" : "",
                 H, Hk, d, n, q_pos0, n_kv, window, fused ? " fused" : "");
        check_close(what, got, ref, (size_t)n * H * d, 1e-2f, 2e-2f);
        free(got);
        if (!tc) continue;
        float *lse = malloc((size_t)n * H * 4);
        CK_CUDA(cudaMemcpy(lse, dlse, (size_t)n * H * 4, cudaMemcpyDeviceToHost));
        strncat(what, " lse", sizeof what - strlen(what) - 1);
        check_close(what, lse, lse_ref, (size_t)n * H, 1e-4f, 1e-5f); /* fp32 sums of the same logits */
        free(lse);
    }
    if (!tc) /* no log-sum-exps from the CUDA-core kernel: a clear error, not garbage */
        ck_assert_int_eq(ks_cuda_attention_prefill(dout, ld_o, dq, ld_q, dk, dv, n, n_kv, cap, H, Hk, d, q_pos0,
                                                   window, scale, dlse, 0),
                         KS_ERR_UNSUPPORTED);
    free(qb), free(kb), free(vb), free(qall), free(q), free(k), free(v), free(ref), free(lse_ref);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dlse);
}

START_TEST(test_attention_prefill) {
    prefill_case(4, 4, 64, 77, 0, 77, 0, 0);        /* MHA, one partial tile, causal from 0 */
    prefill_case(9, 3, 64, 131, 0, 131, 50, 0);     /* SmolLM2 heads (G=3), sliding window */
    prefill_case(32, 8, 128, 300, 200, 500, 0, 1);  /* Llama GQA, second chunk, fused q|k|v rows */
    prefill_case(14, 2, 128, 61, 33, 94, 40, 0);    /* G=7, chunk offset and window */
    prefill_case(8, 1, 128, 517, 0, 517, 0, 0);     /* G=8, many tiles and query blocks */
    prefill_case(6, 2, 64, 45, 700, 745, 300, 1);   /* window inside a late chunk: first tiles skipped */
    prefill_case(4, 1, 128, 70, 1000, 1070, 333, 0); /* d=128 window: masked tiles at both ends */
    prefill_case(16, 4, 128, 1, 1500, 1501, 0, 0);   /* a single query (a decode step through prefill) */
    prefill_case(4, 2, 16, 37, 0, 37, 8, 1);         /* d=16 (tiny test checkpoints): the CUDA-core kernel */
    prefill_case(6, 3, 80, 50, 20, 70, 0, 0);        /* d=80, a second chunk: the CUDA-core kernel */
}
END_TEST

/* A random block list (host arrays) for a chunk of n queries at q_pos0, blocks of B: a row is empty with
 * probability p_empty, else lists each key block kb <= qb with probability density (density 1: the full list);
 * with probability p_share a query block's rows of the heads of a KV group (G heads) all copy the group's first
 * head's row (the kernels then give that group's tile the GQA rows). */
static ks_block_list rand_block_list(int H, int G, int q_pos0, int n, int B, double density, double p_empty,
                                     double p_share) {
    ks_block_list l = {.block = B, .H = H, .qb0 = q_pos0 / B, .n_qblocks = ks_block_rows_of(q_pos0, n, B)};
    const int rows = H * l.n_qblocks, qb_end = l.qb0 + l.n_qblocks;
    l.row_start = malloc((size_t)(rows + 1) * sizeof *l.row_start);
    l.cols = malloc((size_t)rows * qb_end * sizeof *l.cols + 4);
    ck_assert(l.row_start && l.cols);
    char *shared = malloc((size_t)rows / G + 1); /* (group, query block): its heads copy the first one's row */
    ck_assert(shared);
    for (int i = 0; i < rows / G; i++) shared[i] = p_share > 0 && rng_unif() < p_share;
    int nnz = 0;
    for (int h = 0; h < H; h++)
        for (int qb = l.qb0; qb < qb_end; qb++) {
            const int r = ks_block_row(&l, h, qb), first = ks_block_row(&l, h - h % G, qb);
            l.row_start[r] = nnz;
            if (h % G && shared[(h / G) * l.n_qblocks + qb - l.qb0]) {
                for (int i = l.row_start[first]; i < l.row_start[first + 1]; i++) l.cols[nnz++] = l.cols[i];
                continue;
            }
            l.row_start[r + 1] = nnz; /* (the row's end while a later head of the group may copy it) */
            if (density < 1.0 && rng_unif() < p_empty) continue;
            for (int kb = 0; kb <= qb; kb++)
                if (density >= 1.0 || rng_unif() < density) l.cols[nnz++] = kb;
            l.row_start[r + 1] = nnz;
        }
    l.row_start[rows] = nnz;
    free(shared);
    return l;
}

/* The same list with its arrays copied to the device (free with cudaFree on both). */
static ks_block_list block_list_to_device(const ks_block_list *l) {
    ks_block_list dl = *l;
    const int rows = l->H * l->n_qblocks;
    dl.row_start = dev_from(l->row_start, (size_t)(rows + 1) * sizeof *l->row_start);
    dl.cols = dev_from(l->cols, (size_t)l->row_start[rows] * sizeof *l->cols);
    return dl;
}

/* Queries whose row lists no visible key must get lse = +inf from both; then both are set to 0 so that
 * check_close compares the finite rest. */
static void check_inf_lse(const char *what, float *got, float *ref, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (isinf(ref[i])) {
            ck_assert_msg(isinf(got[i]) && got[i] > 0, "%s: lse[%zu] = %g, want +inf (no visible key)", what, i,
                          got[i]);
            got[i] = ref[i] = 0.0f;
        }
}

/* ks_cuda_attention_prefill_sparse (dispatch: wgmma for d = 128 on Hopper) and its mma.sync kernel against
 * ks_ref_attention_sparse on a random list (see rand_block_list); with density 1 (the full list) also against
 * the dense kernel's output on the same inputs. */
static void sparse_case(int H, int Hk, int d, int n, int q_pos0, int n_kv, int window, int B, double density,
                        double p_empty, double p_share, int fused) {
    const int cap = n_kv + 37;
    const int64_t ld_q = fused ? (int64_t)(H + 2 * Hk) * d : (int64_t)H * d, ld_o = (int64_t)H * d;
    const float scale = 1.0f / sqrtf((float)d);
    const size_t ce = (size_t)Hk * cap * d, on = (size_t)n * ld_o;
    ks_bf16 *qb = malloc((size_t)n * ld_q * 2), *kb = malloc(ce * 2), *vb = malloc(ce * 2);
    float *qall = rand_vec((size_t)n * ld_q, 1.0f, qb), *q = malloc((size_t)n * H * d * 4);
    for (int t = 0; t < n; t++) memcpy(q + (size_t)t * H * d, qall + t * ld_q, (size_t)H * d * 4);
    int32_t lens[64];
    for (int h = 0; h < Hk; h++) lens[h] = n_kv;
    float *k = make_cache(kb, Hk, cap, d, lens), *v = make_cache(vb, Hk, cap, d, lens);
    ks_block_list l = rand_block_list(H, H / Hk, q_pos0, n, B, density, p_empty, p_share),
                  dl = block_list_to_device(&l);
    float *ref = malloc(on * 4), *lse_ref = malloc((size_t)n * H * 4);
    ks_ref_attention_sparse(ref, q, k, v, n, n_kv, cap, H, Hk, d, q_pos0, window, scale, &l);
    ref_lse(lse_ref, q, k, n, n_kv, cap, H, Hk, d, q_pos0, window, scale, &l);

    ks_bf16 *dq = dev_from(qb, (size_t)n * ld_q * 2), *dk = dev_from(kb, ce * 2);
    ks_bf16 *dv = dev_from(vb, ce * 2), *dout = dev_poisoned(on * 2), *ddense = dev_poisoned(on * 2);
    float *dlse = dev_poisoned((size_t)n * H * 4);
    float *dense = NULL;
    if (density >= 1.0) {
        CK_KS(ks_cuda_attention_prefill(ddense, ld_o, dq, ld_q, dk, dv, n, n_kv, cap, H, Hk, d, q_pos0, window, scale,
                                        NULL, 0));
        dense = host_f32_from_bf16(ddense, on);
    }
    for (int portable = 0; portable < 2; portable++) {
        CK_CUDA(cudaMemset(dout, 0xff, on * 2));
        CK_CUDA(cudaMemset(dlse, 0xff, (size_t)n * H * 4)); /* NaN poison */
        if (portable)
            CK_KS(ks_cuda_attention_prefill_sparse_sm80(dout, ld_o, dq, ld_q, dk, dv, n, n_kv, cap, H, Hk, d, q_pos0,
                                                        window, scale, dlse, &dl, 0));
        else
            CK_KS(ks_cuda_attention_prefill_sparse(dout, ld_o, dq, ld_q, dk, dv, n, n_kv, cap, H, Hk, d, q_pos0,
                                                   window, scale, dlse, &dl, 0));
        float *got = host_f32_from_bf16(dout, on);
        char what[128];
        snprintf(what, sizeof what, "sparse%s H=%d Hk=%d d=%d n=%d pos0=%d n_kv=%d win=%d B=%d dens=%.2f%s",
                 portable ? "80" : "", H, Hk, d, n, q_pos0, n_kv, window, B, density, fused ? " fused" : "");
        check_close(what, got, ref, on, 1e-2f, 2e-2f);
        if (dense) { /* the full list is the dense attention: same key tiles in the same order (see the report) */
            size_t differ = 0;
            for (size_t i = 0; i < on; i++) differ += memcmp(&got[i], &dense[i], sizeof *got) != 0;
            printf("  %-44s %zu of %zu elements differ bitwise from the dense kernel\n", what, differ, on);
            strncat(what, " vs dense", sizeof what - strlen(what) - 1);
            check_close(what, got, dense, on, 1e-2f, 2e-2f);
        }
        free(got);
        float *lse = malloc((size_t)n * H * 4), *lref = malloc((size_t)n * H * 4);
        CK_CUDA(cudaMemcpy(lse, dlse, (size_t)n * H * 4, cudaMemcpyDeviceToHost));
        memcpy(lref, lse_ref, (size_t)n * H * 4);
        strncat(what, " lse", sizeof what - strlen(what) - 1);
        check_inf_lse(what, lse, lref, (size_t)n * H);
        check_close(what, lse, lref, (size_t)n * H, 1e-4f, 1e-5f); /* fp32 sums of the same logits */
        free(lse), free(lref);
    }
    free(qb), free(kb), free(vb), free(qall), free(q), free(k), free(v), free(ref), free(lse_ref), free(dense);
    free(l.row_start), free(l.cols);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(ddense), cudaFree(dlse);
    cudaFree(dl.row_start), cudaFree(dl.cols);
}

START_TEST(test_attention_prefill_sparse) {
    /* Llama-3.1-8B heads (G=4), blocks of 128, a chunk from 0, ragged and empty rows */
    sparse_case(32, 8, 128, 700, 0, 700, 0, 128, 0.3, 0.1, 0.0, 0);
    sparse_case(32, 8, 128, 700, 0, 700, 0, 128, 0.05, 0.0, 0.0, 1);   /* 5%, fused q|k|v rows */
    sparse_case(8, 1, 128, 517, 200, 717, 0, 128, 0.5, 0.2, 0.0, 0);   /* G=8, a chunk starting mid-block */
    sparse_case(4, 4, 64, 300, 90, 390, 0, 64, 0.25, 0.1, 0.0, 0); /* MHA, d=64, blocks of 64: tiles over two blocks */
    sparse_case(9, 3, 64, 333, 0, 333, 0, 64, 0.1, 0.3, 0.0, 0);       /* SmolLM2 heads (G=3) */
    sparse_case(9, 3, 64, 250, 40, 290, 0, 128, 0.6, 0.1, 0.0, 1);     /* d=64, blocks of 128, chunk offset, fused */
    sparse_case(16, 4, 128, 400, 1000, 1400, 0, 64, 0.5, 0.0, 0.0, 0); /* d=128, blocks of 64 (wgmma: two lists) */
    sparse_case(6, 2, 64, 200, 500, 700, 150, 128, 0.6, 0.0, 0.0, 0);  /* sliding window inside listed blocks */
    sparse_case(4, 1, 128, 150, 700, 850, 200, 64, 0.7, 0.0, 0.0, 0);  /* d=128 window, blocks of 64 */
    sparse_case(8, 2, 128, 1, 1500, 1501, 0, 128, 0.2, 0.0, 0.0, 0);   /* a single query */
    sparse_case(4, 2, 128, 130, 0, 130, 0, 128, 0.0, 1.0, 0.0, 0);     /* every row empty: zeros, lse +inf */
    /* KV groups whose heads share rows on some query blocks: the GQA rows there, one head per block elsewhere */
    sparse_case(32, 8, 128, 700, 0, 700, 0, 128, 0.3, 0.1, 0.5, 0);
    sparse_case(16, 4, 128, 400, 1000, 1400, 0, 64, 0.5, 0.0, 0.6, 0); /* blocks of 64: tiles over two blocks */
    sparse_case(8, 1, 128, 517, 200, 717, 0, 128, 0.5, 0.2, 0.8, 0);   /* G=8 (16-row slabs), chunk mid-block */
    sparse_case(8, 2, 64, 333, 77, 410, 100, 64, 0.4, 0.1, 0.7, 1);    /* d=64, window, chunk mid-slab, fused */
    sparse_case(9, 3, 64, 200, 0, 200, 0, 64, 0.3, 0.0, 1.0, 0);       /* G=3 does not divide 128: one head each */
    /* the full list against the dense kernel (no window: the same key tiles in the same order) */
    sparse_case(32, 8, 128, 600, 100, 700, 0, 128, 1.0, 0.0, 0.0, 0);
    sparse_case(8, 1, 128, 300, 0, 300, 0, 64, 1.0, 0.0, 0.0, 0);
    sparse_case(9, 3, 64, 300, 50, 350, 0, 64, 1.0, 0.0, 0.0, 0);
    sparse_case(4, 4, 64, 257, 0, 257, 0, 128, 1.0, 0.0, 0.0, 0);
    sparse_case(6, 2, 128, 200, 300, 500, 100, 128, 1.0, 0.0, 0.0, 0); /* with a window: tiles differ, bf16 tolerance */
}
END_TEST

/* Head dims and block sizes the kernel lacks: a clear error, not garbage. */
START_TEST(test_attention_prefill_sparse_refuses) {
    ks_block_list l = rand_block_list(4, 2, 0, 10, 128, 1.0, 0.0, 0.0), dl = block_list_to_device(&l);
    ks_bf16 *buf = dev_poisoned((size_t)10 * 4 * 80 * 2);
    ck_assert_int_eq(ks_cuda_attention_prefill_sparse(buf, 4 * 80, buf, 4 * 80, buf, buf, 10, 10, 10, 4, 2, 80, 0, 0,
                                                      0.1f, NULL, &dl, 0),
                     KS_ERR_UNSUPPORTED);
    printf("  refused d=80: %s\n", ks_last_error());
    dl.block = 32, dl.n_qblocks = ks_block_rows_of(0, 10, 32);
    ck_assert_int_eq(ks_cuda_attention_prefill_sparse(buf, 4 * 64, buf, 4 * 64, buf, buf, 10, 10, 10, 4, 2, 64, 0, 0,
                                                      0.1f, NULL, &dl, 0),
                     KS_ERR_UNSUPPORTED);
    printf("  refused block 32: %s\n", ks_last_error());
    free(l.row_start), free(l.cols);
    cudaFree(buf), cudaFree((void *)dl.row_start), cudaFree((void *)dl.cols);
}
END_TEST

/* starts (NULL = 0): each KV head attends rows [starts[h], lens[h]); the rows before its start are NaN on
 * the device, and the reference runs per KV head on the shifted rows. */
static void decode_case(int H, int Hk, int d, const int32_t *lens, const int32_t *starts, int cap, int max_len) {
    const float scale = 1.0f / sqrtf((float)d);
    const size_t ce = (size_t)Hk * cap * d;
    const int G = H / Hk;
    ks_bf16 *qb = malloc((size_t)H * d * 2), *kb = malloc(ce * 2), *vb = malloc(ce * 2);
    float *q = rand_vec((size_t)H * d, 1.0f, qb);
    float *k = make_cache(kb, Hk, cap, d, lens), *v = make_cache(vb, Hk, cap, d, lens);
    float *ref = malloc((size_t)H * d * 4);
    for (int g = 0; g < Hk; g++) {
        int s0 = starts ? starts[g] : 0;
        int32_t len = lens[g] - s0;
        size_t row0 = ((size_t)g * cap + s0) * d;
        ks_ref_attention_decode(ref + (size_t)g * G * d, q + (size_t)g * G * d, k + row0, v + row0, &len, cap, G, 1,
                                d, scale);
        if (len == 0) memset(ref + (size_t)g * G * d, 0, (size_t)G * d * 4); /* the kernel's contract */
        for (size_t i = (size_t)g * cap * d; i < row0; i++) kb[i] = vb[i] = 0xffff;
    }

    ks_bf16 *dq = dev_from(qb, (size_t)H * d * 2), *dk = dev_from(kb, ce * 2);
    ks_bf16 *dv = dev_from(vb, ce * 2), *dout = dev_poisoned((size_t)H * d * 2);
    int32_t *dlens = dev_from(lens, Hk * 4), *dstarts = starts ? dev_from(starts, Hk * 4) : NULL;
    void *scratch = dev_poisoned(ks_cuda_attention_decode_scratch_bytes(H, Hk, d, max_len));
    CK_KS(ks_cuda_attention_decode(dout, dq, dk, dv, dlens, dstarts, cap, H, Hk, d, scale, max_len, scratch, 0));
    float *got = host_f32_from_bf16(dout, (size_t)H * d);
    char what[96];
    snprintf(what, sizeof what, "decode H=%d Hk=%d d=%d cap=%d max_len=%d%s", H, Hk, d, cap, max_len,
             starts ? " starts" : "");
    check_close(what, got, ref, (size_t)H * d, 1e-2f, 2e-2f);
    free(qb), free(kb), free(vb), free(q), free(k), free(v), free(ref), free(got);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dlens), cudaFree(dstarts), cudaFree(scratch);
}

START_TEST(test_attention_decode) {
    int32_t l8[8];
    for (int h = 0; h < 8; h++) l8[h] = rng_int(1, 5000);
    l8[3] = 1;
    l8[5] = 4999;
    decode_case(32, 8, 128, l8, NULL, 5003, 5003);   /* Llama shape, per-head lengths, many splits */
    decode_case(32, 8, 128, l8, NULL, 5003, 300);    /* few splits: long chunks per block */
    int32_t l3[3] = {0, rng_int(1, 700), 1001};
    decode_case(9, 3, 64, l3, NULL, 1001, 1001);     /* SmolLM2 heads, an empty head */
    int32_t l2[2] = {rng_int(100, 3000), 33};
    decode_case(14, 2, 128, l2, NULL, 3001, 3001);   /* G=7 */
    int32_t l1[1] = {rng_int(2000, 4000)};
    decode_case(20, 1, 64, l1, NULL, 4001, 4001);    /* G=20: two head subgroups per KV head */
    int32_t s8[8];                                   /* sliding-window starts: odd offsets, an empty range */
    for (int h = 0; h < 8; h++) s8[h] = rng_int(0, l8[h]);
    s8[2] = l8[2];
    decode_case(32, 8, 128, l8, s8, 5003, 5003);
    int32_t s3[3] = {0, rng_int(0, l3[1]), 977};
    decode_case(9, 3, 64, l3, s3, 1001, 1001);
    decode_case(4, 2, 16, l2, NULL, 3001, 3001);     /* d=16, d=80: the CUDA-core kernel */
    int32_t s2[2] = {rng_int(0, l2[0]), 5};
    decode_case(6, 2, 80, l2, s2, 3001, 3001);
}
END_TEST

/* ---- KIVI's packed format ------------------------------------------------------------------------------ */

/* One KIVI case: Hk heads of up to cap tokens; head g holds n[g] tokens, the keys of the first nq_k[g] and the
 * values of the first nq_v[g] packed in two flushes each (at 0 and at half, both on group boundaries); head 1
 * stores half its key channels. Codes, scales and zeros must equal the reference's bit for bit, the error parts
 * agree, and the decode attention over packed + bf16 rows (rows from token off[g]) match the reference. kb and vb
 * KS_KIVI_RAW_BF16 (G 1): the raw bf16 words the same way, the error's first part 0. */
static void kivi_case(int H, int Hk, int d, int kb, int vb, int G, const int *n, const int *nq_k, const int *nq_v,
                      const int *off) {
    enum { CAP = 1024 };
    ks_kivi_params prm = {.k_bits = kb, .v_bits = vb, .group = G, .residual = G};
    ks_kivi_shape S = ks_kivi_shape_of(&prm, d, CAP);
    size_t kw = (size_t)Hk * d * S.k_words, kg = (size_t)Hk * d * S.k_groups;
    size_t vw = (size_t)Hk * CAP * S.v_words, vg = (size_t)Hk * CAP * S.v_groups, rows = (size_t)Hk * CAP * d;
    ks_bf16 *kbits = malloc(rows * 2), *vbits = malloc(rows * 2), *qbits = malloc((size_t)H * d * 2);
    float *K = rand_vec(rows, 1.0f, kbits), *V = rand_vec(rows, 1.0f, vbits), *q = rand_vec((size_t)H * d, 1.0f, qbits);
    int32_t chan[8 * 256], kc[8];
    ck_assert(Hk <= 8 && d <= 256);
    for (int g = 0; g < Hk; g++) {
        kc[g] = g == 1 ? d / 2 : d;
        for (int i = 0; i < d; i++) chan[g * d + i] = g == 1 ? (i * 2 + 1) % d : i;
    }
    /* the reference: two flushes per head */
    uint32_t *rkq = calloc(kw, 4), *rvq = calloc(vw, 4);
    uint16_t *rks = calloc(kg, 2), *rkz = calloc(kg, 2), *rvs = calloc(vg, 2), *rvz = calloc(vg, 2);
    double rerr[2] = {0, 0};
    int32_t t0a[8], na[8], t0b[8], nb[8], v0a[8], vna[8], v0b[8], vnb[8], zero[8] = {0};
    for (int g = 0; g < Hk; g++) {
        t0a[g] = 0, na[g] = nq_k[g] / G / 2 * G, t0b[g] = na[g], nb[g] = nq_k[g] - na[g];
        v0a[g] = 0, vna[g] = nq_v[g] / 2, v0b[g] = vna[g], vnb[g] = nq_v[g] - vna[g];
        const float *Kg = K + (size_t)g * CAP * d, *Vg = V + (size_t)g * CAP * d;
        size_t kh = (size_t)g * d, vh = (size_t)g * CAP;
        ks_kivi_quant_keys(&S, Kg, d, 0, nq_k[g], chan + g * d, kc[g], rkq + kh * S.k_words, rks + kh * S.k_groups,
                           rkz + kh * S.k_groups, rerr);
        ks_kivi_quant_values(&S, Vg, d, 0, nq_v[g], rvq + vh * S.v_words, rvs + vh * S.v_groups, rvz + vh * S.v_groups,
                             rerr);
    }
    /* the kernels, over the whole rows (off 0) */
    ks_cuda_kivi_layer L = {.shape = S, .Hk = Hk, .stride = CAP};
    L.k_codes = dev_poisoned(kw * 4), L.v_codes = dev_poisoned(vw * 4); /* zero, as the reference's */
    CK_CUDA(cudaMemset(L.k_codes, 0, kw * 4));
    CK_CUDA(cudaMemset(L.v_codes, 0, vw * 4));
    L.k_scale = dev_poisoned(kg * 2), L.k_zero = dev_poisoned(kg * 2);
    L.v_scale = dev_poisoned(vg * 2), L.v_zero = dev_poisoned(vg * 2);
    L.k_chan = dev_from(chan, sizeof(int32_t) * Hk * d), L.kc = dev_from(kc, sizeof(int32_t) * Hk);
    int32_t *d_zero = dev_from(zero, sizeof zero);
    L.off = d_zero;
    void *dk = dev_from(kbits, rows * 2), *dv = dev_from(vbits, rows * 2);
    L.k = dk, L.v = dv;
    double *derr = dev_from((double[2]){0, 0}, 2 * sizeof(double));
    int32_t *d_t0a = dev_from(t0a, sizeof t0a), *d_na = dev_from(na, sizeof na), *d_t0b = dev_from(t0b, sizeof t0b);
    int32_t *d_nb = dev_from(nb, sizeof nb), *d_v0a = dev_from(v0a, sizeof v0a), *d_vna = dev_from(vna, sizeof vna);
    int32_t *d_v0b = dev_from(v0b, sizeof v0b), *d_vnb = dev_from(vnb, sizeof vnb);
    CK_KS(ks_cuda_kivi_quant_keys(&L, d_t0a, d_na, CAP, derr, 0));
    CK_KS(ks_cuda_kivi_quant_keys(&L, d_t0b, d_nb, CAP, derr, 0));
    CK_KS(ks_cuda_kivi_quant_values(&L, d_v0a, d_vna, CAP, derr, 0));
    CK_KS(ks_cuda_kivi_quant_values(&L, d_v0b, d_vnb, CAP, derr, 0));
    uint32_t *gkq = host_from(L.k_codes, kw * 4), *gvq = host_from(L.v_codes, vw * 4);
    uint16_t *gks = host_from(L.k_scale, kg * 2), *gkz = host_from(L.k_zero, kg * 2);
    uint16_t *gvs = host_from(L.v_scale, vg * 2), *gvz = host_from(L.v_zero, vg * 2);
    double *gerr = host_from(derr, 2 * sizeof(double));
    for (int g = 0; g < Hk; g++) {
        for (int i = 0; i < kc[g]; i++) {
            size_t ch = (size_t)g * d + i;
            for (int w = 0; w < (nq_k[g] * kb + 31) / 32; w++)
                ck_assert_msg(gkq[ch * S.k_words + w] == rkq[ch * S.k_words + w], "key codes g %d ch %d word %d", g, i,
                              w);
            for (int j = 0; S.k_groups && j < nq_k[g] / G; j++) /* the raw encoding has none */
                ck_assert(gks[ch * S.k_groups + j] == rks[ch * S.k_groups + j] &&
                          gkz[ch * S.k_groups + j] == rkz[ch * S.k_groups + j]);
        }
        for (int t = 0; t < nq_v[g]; t++) {
            size_t tok = (size_t)g * CAP + t;
            ck_assert_msg(!memcmp(gvq + tok * S.v_words, rvq + tok * S.v_words, 4 * S.v_words), "value codes g %d t %d",
                          g, t);
            ck_assert(!memcmp(gvs + tok * S.v_groups, rvs + tok * S.v_groups, 2 * S.v_groups));
            ck_assert(!memcmp(gvz + tok * S.v_groups, rvz + tok * S.v_groups, 2 * S.v_groups));
        }
    }
    ck_assert(fabs(gerr[0] - rerr[0]) <= 1e-9 * rerr[0] && fabs(gerr[1] - rerr[1]) <= 1e-9 * rerr[1]);
    /* attention: the cache's rows start at token off[g] */
    ks_bf16 *shifted = malloc(rows * 2), *vshift = malloc(rows * 2);
    int32_t cnt[4][8];
    ks_kivi_head heads[8];
    for (int g = 0; g < Hk; g++) {
        size_t h0 = (size_t)g * CAP * d;
        memcpy(shifted + h0, kbits + h0 + (size_t)off[g] * d, (size_t)(CAP - off[g]) * d * 2);
        memcpy(vshift + h0, vbits + h0 + (size_t)off[g] * d, (size_t)(CAP - off[g]) * d * 2);
        cnt[0][g] = nq_k[g], cnt[1][g] = nq_v[g], cnt[2][g] = off[g], cnt[3][g] = n[g] - off[g];
        size_t kh = (size_t)g * d, vh = (size_t)g * CAP;
        heads[g] = (ks_kivi_head){.k_codes = rkq + kh * S.k_words, .k_scale = rks + kh * S.k_groups,
                                  .k_zero = rkz + kh * S.k_groups, .k_chan = chan + g * d, .kc = kc[g],
                                  .v_codes = rvq + vh * S.v_words, .v_scale = rvs + vh * S.v_groups,
                                  .v_zero = rvz + vh * S.v_groups, .nq_k = nq_k[g], .nq_v = nq_v[g], .n = n[g],
                                  .off = off[g], .k = K + h0 + (size_t)off[g] * d, .v = V + h0 + (size_t)off[g] * d};
    }
    int32_t *d_cnt[4];
    for (int i = 0; i < 4; i++) d_cnt[i] = dev_from(cnt[i], sizeof cnt[i]);
    L.nq_k = d_cnt[0], L.nq_v = d_cnt[1], L.off = d_cnt[2], L.len = d_cnt[3];
    void *dks = dev_from(shifted, rows * 2), *dvs = dev_from(vshift, rows * 2);
    L.k = dks, L.v = dvs;
    float *want = malloc(sizeof(float) * H * d), scale = 1.0f / sqrtf((float)d);
    ks_kivi_attention_decode(want, q, heads, &S, H, Hk, scale);
    void *dq = dev_from(qbits, (size_t)H * d * 2), *dout = dev_poisoned((size_t)H * d * 2);
    float *scratch = dev_poisoned(sizeof(float) * ks_cuda_kivi_attention_scratch_floats(H, d, CAP));
    CK_KS(ks_cuda_kivi_attention_decode(dout, dq, &L, H, scale, CAP, scratch, 0));
    float *got = host_f32_from_bf16(dout, (size_t)H * d);
    char what[64];
    snprintf(what, sizeof what, "kivi attention H%d Hk%d d%d k%d v%d", H, Hk, d, kb, vb);
    check_close(what, got, want, (size_t)H * d, 1e-2f, 2e-2f);
    free(kbits), free(vbits), free(qbits), free(K), free(V), free(q), free(rkq), free(rvq), free(rks), free(rkz);
    free(rvs), free(rvz), free(gkq), free(gvq), free(gks), free(gkz), free(gvs), free(gvz), free(gerr), free(shifted);
    free(vshift), free(want), free(got);
    void *dev[] = {L.k_codes, L.v_codes, L.k_scale, L.k_zero, L.v_scale, L.v_zero, (void *)L.k_chan, (void *)L.kc,
                   d_zero, dk, dv, derr, d_t0a, d_na, d_t0b, d_nb, d_v0a, d_vna, d_v0b, d_vnb, d_cnt[0], d_cnt[1],
                   d_cnt[2], d_cnt[3], dks, dvs, dq, dout, scratch};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) CK_CUDA(cudaFree(dev[i]));
}

START_TEST(test_kivi) {
    const int n3[3] = {700, 37, 1000}, k3[3] = {640, 0, 992}, v3[3] = {572, 0, 872}, o3[3] = {300, 0, 872};
    kivi_case(6, 3, 128, 2, 2, 32, n3, k3, v3, o3);
    kivi_case(6, 3, 64, 4, 2, 32, n3, k3, v3, o3);
    kivi_case(6, 3, 64, 2, 4, 16, n3, k3, v3, o3); /* G 16: key groups of one word (2 bits) */
    kivi_case(6, 3, 16, 2, 2, 8, n3, k3, v3, o3);  /* head_dim below a warp: lanes 16 .. 31 hold nothing */
    kivi_case(6, 3, 80, 4, 2, 16, n3, k3, v3, o3); /* head_dim not a multiple of 32: a lane's third channel */
    const int n1[1] = {257}, k1[1] = {128}, v1[1] = {129}, o1[1] = {0};
    kivi_case(9, 1, 64, 4, 4, 4, n1, k1, v1, o1);   /* G 4 < 32 / 4 codes a word: groups share words (atomics) */
    /* the raw encoding of bf16 rows (ThinK's prefix): any counts; the second flush starts inside a word (643 / 2
     * is odd), the last word half filled */
    const int kr[3] = {643, 0, 999}, vr[3] = {571, 0, 873};
    kivi_case(6, 3, 64, KS_KIVI_RAW_BF16, KS_KIVI_RAW_BF16, 1, n3, kr, vr, o3);
    kivi_case(6, 3, 16, KS_KIVI_RAW_BF16, KS_KIVI_RAW_BF16, 1, n3, kr, vr, o3);
    kivi_case(6, 3, 80, KS_KIVI_RAW_BF16, KS_KIVI_RAW_BF16, 1, n3, kr, vr, o3);
}
END_TEST

/* ---- KIVI's device-planned decode flush -------------------------------------------------------------- */

/* One head of the host's side of a decode-flush case: its cache rows (bf16 bits, token t at row t - off) and its
 * counts, the rules of kivi_args.h applied on the host with the reference quantization (kivi_ref.c). */
typedef struct flush_head {
    ks_bf16 *k, *v; /* (CAP, d) rows */
    int nq_k, nq_v, off, len;
} flush_head;

/* The host reference of head h's flush job j: keys and values quantized from its rows into the packed arrays. */
static void ref_flush(const ks_kivi_shape *S, const flush_head *h, ks_kivi_job j, const int32_t *chan, int kc,
                      uint32_t *kq, uint16_t *ks, uint16_t *kz, uint32_t *vq, uint16_t *vs, uint16_t *vz) {
    const int d = S->d;
    float *k = f32_array(h->k + (size_t)(j.k_t0 - h->off) * d, (size_t)j.k_n * d);
    float *v = f32_array(h->v + (size_t)(j.v_t0 - h->off) * d, (size_t)j.v_n * d);
    if (j.k_n) ks_kivi_quant_keys(S, k, d, j.k_t0, j.k_n, chan, kc, kq, ks, kz, NULL);
    if (j.v_n) ks_kivi_quant_values(S, v, d, j.v_t0, j.v_n, vq, vs, vz, NULL);
    free(k), free(v);
}

/* A decode-flush case: Hk heads after a prompt of n0[g] tokens (the prompt-end flush and release applied on the
 * host and copied to the device), then `steps` decode steps each appending a random token to every head and
 * running ks_cuda_kivi_decode_flush against the host rules (ks_kivi_flush_job, then the release of every head's
 * stale rows once some head holds R: ks_kivi_stale, ks_kivi_release_least). After every step the device counts
 * and lengths equal the host's, and the device rows equal the host rows; at the end the packed codes, scales and
 * zeros of every packed token equal the reference's bit for bit. Head 1 stores half its key channels (ThinK's
 * narrower keys before KIVI). */
static void decode_flush_case(int Hk, int d, int kb, int vb, int G, int R, const int *n0, int steps) {
    enum { CAP = 1024 };
    ks_kivi_params prm = {.k_bits = kb, .v_bits = vb, .group = G, .residual = R};
    ks_kivi_shape S = ks_kivi_shape_of(&prm, d, CAP);
    const size_t kw = (size_t)Hk * d * S.k_words, kg = (size_t)Hk * d * S.k_groups;
    const size_t vw = (size_t)Hk * CAP * S.v_words, vg = (size_t)Hk * CAP * S.v_groups, rows = (size_t)Hk * CAP * d;
    ck_assert(Hk <= 8 && d <= 256);
    int32_t chan[8 * 256], kc[8];
    for (int g = 0; g < Hk; g++) {
        kc[g] = g == 1 ? d / 2 : d;
        for (int i = 0; i < d; i++) chan[g * d + i] = g == 1 ? (i * 2 + 1) % d : i;
    }
    uint32_t *rkq = calloc(kw, 4), *rvq = calloc(vw, 4);
    uint16_t *rks = calloc(kg, 2), *rkz = calloc(kg, 2), *rvs = calloc(vg, 2), *rvz = calloc(vg, 2);
    ks_bf16 *hk = calloc(rows, 2), *hv = calloc(rows, 2), *tok = malloc((size_t)2 * d * 2);
    flush_head h[8];
    /* the prompt: n0 tokens, the prompt-end flush and release (least 1) */
    for (int g = 0; g < Hk; g++) {
        h[g] = (flush_head){.k = hk + (size_t)g * CAP * d, .v = hv + (size_t)g * CAP * d, .len = n0[g]};
        for (size_t i = 0; i < (size_t)n0[g] * d; i++)
            h[g].k[i] = bf16_of(rng_normal()), h[g].v[i] = bf16_of(rng_normal());
    }
    int most = 0;
    for (int g = 0; g < Hk; g++) {
        ks_kivi_job j = ks_kivi_flush_job(n0[g], 0, 0, R);
        ref_flush(&S, &h[g], j, chan + g * d, kc[g], rkq + (size_t)g * d * S.k_words, rks + (size_t)g * d * S.k_groups,
                  rkz + (size_t)g * d * S.k_groups, rvq + (size_t)g * CAP * S.v_words,
                  rvs + (size_t)g * CAP * S.v_groups, rvz + (size_t)g * CAP * S.v_groups);
        h[g].nq_k = j.k_n, h[g].nq_v = j.v_n;
        int st = ks_kivi_stale(h[g].nq_k, h[g].nq_v, 0);
        most = st > most ? st : most;
    }
    for (int g = 0; g < Hk && most >= ks_kivi_release_least(R, 0); g++) {
        int st = ks_kivi_stale(h[g].nq_k, h[g].nq_v, h[g].off);
        memmove(h[g].k, h[g].k + (size_t)st * d, (size_t)(h[g].len - st) * d * 2);
        memmove(h[g].v, h[g].v + (size_t)st * d, (size_t)(h[g].len - st) * d * 2);
        h[g].off += st, h[g].len -= st;
    }
    /* the device: the same packed arrays, rows, counts */
    ks_cuda_kivi_layer L = {.shape = S, .Hk = Hk, .stride = CAP};
    L.k_codes = dev_from(rkq, kw * 4), L.v_codes = dev_from(rvq, vw * 4);
    L.k_scale = dev_from(rks, kg * 2), L.k_zero = dev_from(rkz, kg * 2);
    L.v_scale = dev_from(rvs, vg * 2), L.v_zero = dev_from(rvz, vg * 2);
    L.k_chan = dev_from(chan, sizeof(int32_t) * Hk * d), L.kc = dev_from(kc, sizeof(int32_t) * Hk);
    int32_t cnt[4 * 8];
    for (int g = 0; g < Hk; g++)
        cnt[g] = h[g].nq_k, cnt[Hk + g] = h[g].nq_v, cnt[2 * Hk + g] = h[g].off, cnt[3 * Hk + g] = h[g].len;
    int32_t *dcnt = dev_from(cnt, sizeof(int32_t) * 4 * Hk);
    ks_bf16 *dk = dev_from(hk, rows * 2), *dv = dev_from(hv, rows * 2);
    ks_cuda_kivi_step st = {.nq_k = dcnt, .nq_v = dcnt + Hk, .off = dcnt + 2 * Hk, .len = dcnt + 3 * Hk, .k = dk,
                            .v = dv, .scratch = dev_poisoned((size_t)2 * Hk * R * d * 2),
                            .done = dev_from((unsigned[1]){0}, sizeof(unsigned)), .R = R};
    L.nq_k = st.nq_k, L.nq_v = st.nq_v, L.off = st.off, L.len = st.len, L.k = dk, L.v = dv;
    int releases = 0, key_flushes = 0;
    for (int step = 0; step < steps; step++) {
        /* the append: a token at each head's row len, on both sides */
        for (int g = 0; g < Hk; g++) {
            for (int i = 0; i < 2 * d; i++) tok[i] = bf16_of(rng_normal());
            ck_assert(h[g].len < CAP);
            memcpy(h[g].k + (size_t)h[g].len * d, tok, (size_t)d * 2);
            memcpy(h[g].v + (size_t)h[g].len * d, tok + d, (size_t)d * 2);
            CK_CUDA(cudaMemcpy(dk + ((size_t)g * CAP + h[g].len) * d, tok, (size_t)d * 2, cudaMemcpyHostToDevice));
            CK_CUDA(cudaMemcpy(dv + ((size_t)g * CAP + h[g].len) * d, tok + d, (size_t)d * 2, cudaMemcpyHostToDevice));
            h[g].len++;
            CK_CUDA(cudaMemcpy(st.len + g, &h[g].len, sizeof(int32_t), cudaMemcpyHostToDevice));
        }
        CK_KS(ks_cuda_kivi_decode_flush(&L, &st, 0));
        /* the host rules */
        most = 0;
        for (int g = 0; g < Hk; g++) {
            ks_kivi_job j = ks_kivi_flush_job(h[g].off + h[g].len, h[g].nq_k, h[g].nq_v, R);
            ck_assert(j.k_n <= R && j.v_n <= 1); /* the device grid's bounds */
            key_flushes += j.k_n > 0;
            ref_flush(&S, &h[g], j, chan + g * d, kc[g], rkq + (size_t)g * d * S.k_words,
                      rks + (size_t)g * d * S.k_groups, rkz + (size_t)g * d * S.k_groups,
                      rvq + (size_t)g * CAP * S.v_words, rvs + (size_t)g * CAP * S.v_groups,
                      rvz + (size_t)g * CAP * S.v_groups);
            h[g].nq_k += j.k_n, h[g].nq_v += j.v_n;
            int sg = ks_kivi_stale(h[g].nq_k, h[g].nq_v, h[g].off);
            most = sg > most ? sg : most;
        }
        if (most >= ks_kivi_release_least(R, 1)) {
            releases++;
            for (int g = 0; g < Hk; g++) {
                int sg = ks_kivi_stale(h[g].nq_k, h[g].nq_v, h[g].off);
                memmove(h[g].k, h[g].k + (size_t)sg * d, (size_t)(h[g].len - sg) * d * 2);
                memmove(h[g].v, h[g].v + (size_t)sg * d, (size_t)(h[g].len - sg) * d * 2);
                h[g].off += sg, h[g].len -= sg;
            }
        }
        int32_t *got = host_from(dcnt, sizeof(int32_t) * 4 * Hk);
        for (int g = 0; g < Hk; g++)
            ck_assert_msg(got[g] == h[g].nq_k && got[Hk + g] == h[g].nq_v && got[2 * Hk + g] == h[g].off &&
                              got[3 * Hk + g] == h[g].len,
                          "step %d head %d: device counts %d %d %d len %d, host %d %d %d len %d", step, g, got[g],
                          got[Hk + g], got[2 * Hk + g], got[3 * Hk + g], h[g].nq_k, h[g].nq_v, h[g].off, h[g].len);
        free(got);
        ks_bf16 *gk = host_from(dk, rows * 2), *gv = host_from(dv, rows * 2);
        for (int g = 0; g < Hk; g++) {
            size_t h0 = (size_t)g * CAP * d, n = (size_t)h[g].len * d * 2;
            ck_assert_msg(!memcmp(gk + h0, h[g].k, n) && !memcmp(gv + h0, h[g].v, n), "step %d head %d: rows differ",
                          step, g);
        }
        free(gk), free(gv);
    }
    ck_assert_msg(steps < 2 * R || (releases >= 1 && key_flushes >= 1), "the case crossed no release (%d) or key "
                  "flush (%d)", releases, key_flushes);
    uint32_t *gkq = host_from(L.k_codes, kw * 4), *gvq = host_from(L.v_codes, vw * 4);
    uint16_t *gks = host_from(L.k_scale, kg * 2), *gkz = host_from(L.k_zero, kg * 2);
    uint16_t *gvs = host_from(L.v_scale, vg * 2), *gvz = host_from(L.v_zero, vg * 2);
    for (int g = 0; g < Hk; g++) {
        for (int i = 0; i < kc[g]; i++) {
            size_t ch = (size_t)g * d + i;
            ck_assert_msg(!memcmp(gkq + ch * S.k_words, rkq + ch * S.k_words, (size_t)(h[g].nq_k * kb + 31) / 32 * 4),
                          "key codes head %d channel %d", g, i);
            ck_assert(!memcmp(gks + ch * S.k_groups, rks + ch * S.k_groups, (size_t)h[g].nq_k / G * 2));
            ck_assert(!memcmp(gkz + ch * S.k_groups, rkz + ch * S.k_groups, (size_t)h[g].nq_k / G * 2));
        }
        size_t t0 = (size_t)g * CAP, n = (size_t)h[g].nq_v;
        ck_assert_msg(!memcmp(gvq + t0 * S.v_words, rvq + t0 * S.v_words, n * S.v_words * 4), "value codes head %d", g);
        ck_assert(!memcmp(gvs + t0 * S.v_groups, rvs + t0 * S.v_groups, n * S.v_groups * 2));
        ck_assert(!memcmp(gvz + t0 * S.v_groups, rvz + t0 * S.v_groups, n * S.v_groups * 2));
    }
    unsigned *done = host_from(st.done, sizeof(unsigned));
    ck_assert_uint_eq(*done, 0); /* left at 0 for the next launch */
    free(done), free(gkq), free(gvq), free(gks), free(gkz), free(gvs), free(gvz);
    free(rkq), free(rvq), free(rks), free(rkz), free(rvs), free(rvz), free(hk), free(hv), free(tok);
    void *dev[] = {L.k_codes, L.v_codes, L.k_scale, L.k_zero, L.v_scale, L.v_zero, (void *)L.k_chan, (void *)L.kc,
                   dcnt, dk, dv, st.scratch, st.done};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) CK_CUDA(cudaFree(dev[i]));
}

START_TEST(test_kivi_decode_flush) {
    /* heads after prompts of L mod R != 0, L <= R (no packed values yet; its first key block comes in decode) and
     * L mod R == 0; the first step is the first after the prompt's flush and release; 3 R steps cross key flushes
     * and releases, the heads with fewer tokens releasing fewer rows than the head that triggers the release */
    const int n3[3] = {300, 20, 256}, n4[4] = {131, 64, 7, 500};
    decode_flush_case(3, 128, 2, 2, 32, 64, n3, 3 * 64 + 5);
    decode_flush_case(3, 128, 4, 4, 32, 64, n3, 3 * 64 + 5);
    decode_flush_case(4, 64, 2, 4, 16, 32, n4, 3 * 32 + 3); /* G 16, one word a key group (2 bits) */
    decode_flush_case(4, 64, 4, 2, 16, 48, n4, 3 * 48 + 1); /* R 3 G: a key block of three groups */
    const int n1[1] = {1};
    decode_flush_case(1, 128, 2, 2, 32, 32, n1, 2); /* the first steps after a one-token prompt: nothing to flush */
}
END_TEST

int main(void) {
    const char *env = getenv("KS_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    g_rng = seed;
    printf("gpu_kernels: seed %llu (set KS_SEED to replay)\n", (unsigned long long)seed);
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
        fprintf(stderr, "gpu_kernels: no CUDA device; this test runs only on a GPU machine (label gpu)\n");
        return 1;
    }
    Suite *s = suite_create("gpu_kernels");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_convert);
    tcase_add_test(tc, test_add);
    tcase_add_test(tc, test_embed);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_rope_append_one);
    tcase_add_test(tc, test_swiglu);
    tcase_add_test(tc, test_argmax);
    tcase_add_test(tc, test_kv_append);
    tcase_add_test(tc, test_gemm);
    tcase_add_test(tc, test_gemv_fused);
    tcase_add_test(tc, test_gemv_rows);
    tcase_add_test(tc, test_attention_prefill);
    tcase_add_test(tc, test_attention_prefill_sparse);
    tcase_add_test(tc, test_attention_prefill_sparse_refuses);
    tcase_add_test(tc, test_attention_decode);
    tcase_add_test(tc, test_kivi);
    tcase_add_test(tc, test_kivi_decode_flush);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* one CUDA context for the whole run */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
