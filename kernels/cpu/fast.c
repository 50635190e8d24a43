/* fast.c — the element-wise and GEMM fast paths of fast.h (attention lives in fast_attention.c).
 * Rows (or, for GEMMs, output columns) are spread over OpenMP threads; inner loops are `omp simd` so they
 * vectorise without -ffast-math. */
#include "cpu/fast.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/status.h"

/* 1 when CPU `cpu` is the first of its core's hardware threads (its sysfs sibling list starts with it). */
static int first_sibling(int cpu) {
    char path[96];
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", cpu);
    FILE *f = fopen(path, "r");
    int first = -1;
    if (f) {
        if (fscanf(f, "%d", &first) != 1) first = -1;
        fclose(f);
    }
    return first < 0 || first == cpu; /* no topology: count it */
}

int ks_fast_physical_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set)) return omp_get_num_procs();
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) n += CPU_ISSET(cpu, &set) && first_sibling(cpu);
    return n > 0 ? n : 1;
}

void ks_fast_set_threads(int n) {
    if (n > 0) omp_set_num_threads(n);
    else if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(ks_fast_physical_cores());
    openblas_set_num_threads(1); /* see ks_fast_gemm: OpenBLAS runs inside our threads, never beside them */
}

const char *ks_fast_blas_coretype_hint(void) {
    /* OpenBLAS 0.3.21 does not recognise some recent Xeons and falls back to its SSE3 "Prescott" kernels */
    static const char *const pre_avx2[] = {"prescott", "core2", "nehalem", "sandybridge", "atom"};
    const char *core = openblas_get_corename();
    int generic = 0;
    for (size_t i = 0; core && i < sizeof pre_avx2 / sizeof pre_avx2[0]; i++) generic |= !strcasecmp(core, pre_avx2[i]);
    if (!generic) return NULL;
    if (__builtin_cpu_supports("avx512f")) return "SkylakeX";
    return __builtin_cpu_supports("avx2") ? "Haswell" : NULL;
}

void ks_fast_rmsnorm(float *out, const float *x, const float *w, int n, int D, float eps) {
#pragma omp parallel for if (n > 1)
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * D;
        float *o = out + (size_t)t * D;
        float ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < D; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)D + eps);
#pragma omp simd
        for (int i = 0; i < D; i++) o[i] = xr[i] * inv * w[i];
    }
}

/* One slice of output columns [o0, o1): W rows o0..o1-1 against all n input rows. */
static void gemm_slice(float *out, const float *x, const float *w, int n, int in, int out_dim, int o0, int o1,
                       float beta) {
    if (n == 1) /* decode: a GEMV streams its W rows once, at memory speed */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, o1 - o0, in, 1.0f, w + (size_t)o0 * in, in, x, 1, beta, out + o0, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o1 - o0, in, 1.0f, x, in, w + (size_t)o0 * in, in,
                    beta, out + o0, out_dim);
}

/* out (n, out_dim) is seeded with the bias (so that BLAS accumulates onto it); returns the BLAS beta. */
static float seed_bias(float *out, const float *bias, int n, int out_dim, int accumulate) {
    if (!bias) return accumulate ? 1.0f : 0.0f;
    for (int t = 0; t < n; t++) {
        float *o = out + (size_t)t * out_dim;
        if (accumulate)
            for (int i = 0; i < out_dim; i++) o[i] += bias[i];
        else
            memcpy(o, bias, sizeof(float) * out_dim);
    }
    return 1.0f;
}

/* Whether a product of n rows runs on the thread team. */
static int gemm_parallel(int n, int in, int out_dim) { return (int64_t)n * in * out_dim >= (1 << 16) && out_dim >= 32; }

/* This thread's slice [*o0, *o1) of out_dim output columns (whole 64-byte lines). */
static void thread_slice(int out_dim, int *o0, int *o1) {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int per = ((out_dim + nt - 1) / nt + 15) / 16 * 16;
    *o0 = id * per;
    *o1 = *o0 + per < out_dim ? *o0 + per : out_dim;
}

/* The output columns are split over the OpenMP threads, each calling single-threaded OpenBLAS on its slice of
 * W. One threading runtime only: OpenBLAS's own pthreads spinning next to OpenMP's on the same cores made
 * decode several times slower. */
void ks_fast_gemm(float *out, const float *x, const float *w, const float *bias, int n, int in, int out_dim,
                  int accumulate) {
    float beta = seed_bias(out, bias, n, out_dim, accumulate);
#pragma omp parallel if (gemm_parallel(n, in, out_dim))
    {
        int o0, o1;
        thread_slice(out_dim, &o0, &o1);
        if (o0 < o1) gemm_slice(out, x, w, n, in, out_dim, o0, o1, beta);
    }
}

void ks_fast_gemm_rows(float *out, const float *x, const float *w, const float *bias, int n, int in, int out_dim,
                       int accumulate) {
    float beta = seed_bias(out, bias, n, out_dim, accumulate);
#pragma omp parallel if (gemm_parallel(1, in, out_dim))
    {
        int o0, o1;
        thread_slice(out_dim, &o0, &o1);
        for (int t = 0; t < n && o0 < o1; t++)
            gemm_slice(out + (size_t)t * out_dim, x + (size_t)t * in, w, 1, in, out_dim, o0, o1, beta);
    }
}

void ks_fast_rope(float *x, const int32_t *pos, int n, int heads, int d, const float *inv_freq) {
    int half = d / 2;
    KS_ASSERT(d <= KS_FAST_MAX_HEAD_DIM);
#pragma omp parallel for if (n > 1)
    for (int t = 0; t < n; t++) {
        float c[KS_FAST_MAX_HEAD_DIM / 2], s[KS_FAST_MAX_HEAD_DIM / 2];
        for (int i = 0; i < half; i++) { /* one cos/sin per (token, frequency), shared by every head */
            float ang = (float)pos[t] * inv_freq[i];
            c[i] = cosf(ang);
            s[i] = sinf(ang);
        }
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)t * heads + h) * d;
#pragma omp simd
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void ks_fast_swiglu(float *out, const float *gate, const float *up, int64_t n) {
#pragma omp parallel for simd if (n > 4096)
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}
