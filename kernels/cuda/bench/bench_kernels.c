/* bench_kernels.c — timings of the CUDA kernels for docs/kernels.md: the two ceilings (device-to-device
 * copy bandwidth, an 8192^3 bf16 GEMM), prefill attention in TFLOP/s at 4K/16K/32K (Llama-3.1-8B heads:
 * 32 query heads, 8 KV heads, d = 128, causal), decode attention in GB/s at 4K/32K/128K, and the decode
 * GEMVs of one layer, and H2O's all-query window scores (ks_cuda_scores over a prefill chunk). Timed with CUDA events over batches of back-to-back calls after warm-up, on random
 * data (never zeros); inputs rotate over several buffers where one would fit in L2.
 *
 *     bench_kernels [--quick]        # --quick: fewer repetitions (a smoke run)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/ks_cuda.h"
#include "cuda/ks_cuda_methods.h"

#define CK(expr)                                                                                             \
    do {                                                                                                     \
        cudaError_t e_ = (expr);                                                                             \
        if (e_ != cudaSuccess) {                                                                             \
            fprintf(stderr, "bench: %s failed: %s (line %d)\n", #expr, cudaGetErrorString(e_), __LINE__);   \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)
#define CKS(expr)                                                                                            \
    do {                                                                                                     \
        if ((expr) != KS_OK) {                                                                               \
            fprintf(stderr, "bench: %s failed: %s\n", #expr, ks_last_error());                              \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static int g_reps = 20;

/* Fills n bf16 with random values of about unit size (a random 1M pattern repeated with an offset). */
static void fill_random_bf16(ks_bf16 *dev, size_t n, unsigned seed) {
    enum { P = 1 << 20 };
    static ks_bf16 *pat;
    if (!pat) {
        pat = malloc(P * sizeof *pat);
        uint32_t s = 12345u;
        for (int i = 0; i < P; i++) {
            s = s * 1664525u + 1013904223u;
            float f = ((s >> 8) * (1.0f / 16777216.0f) - 0.5f) * 3.4f;
            uint32_t u;
            memcpy(&u, &f, 4);
            pat[i] = (ks_bf16)((u + 0x8000u) >> 16);
        }
    }
    size_t off = (seed * 7919u) % P;
    for (size_t i = 0; i < n; i += P - off, off = 0) {
        size_t m = n - i < P - off ? n - i : P - off;
        CK(cudaMemcpy(dev + i, pat + off, m * sizeof *pat, cudaMemcpyHostToDevice));
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Milliseconds per call: the median over 5 batches of `reps` back-to-back calls (launches pipelined, as in
 * a decode loop or a captured graph, so that small kernels are not timed with a host round trip each), after
 * 3 warm-up calls. fn(ctx, i) gets a running call index (for rotating buffers). */
typedef void (*bench_fn)(void *ctx, int i);
static float time_ms(bench_fn fn, void *ctx, int reps) {
    enum { kBatches = 5 };
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    int call = 0;
    for (; call < 3; call++) fn(ctx, call);
    float t[kBatches];
    for (int k = 0; k < kBatches; k++) {
        CK(cudaEventRecord(a, 0));
        for (int i = 0; i < reps; i++, call++) fn(ctx, call);
        CK(cudaEventRecord(b, 0));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&t[k], a, b));
        t[k] /= reps;
    }
    qsort(t, kBatches, sizeof *t, cmp_float);
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return t[kBatches / 2];
}

/* ---- ceilings ---------------------------------------------------------------------------------------- */

struct copy_ctx {
    void *a, *b;
    size_t bytes;
};
static void run_copy(void *c, int i) {
    struct copy_ctx *x = c;
    (void)i;
    CK(cudaMemcpyAsync(x->b, x->a, x->bytes, cudaMemcpyDeviceToDevice, 0));
}

struct gemm_ctx {
    ks_cuda_gemm_t *g;
    ks_bf16 *x, *w, *y;
    int n, in, out, nw; /* nw weight copies rotated (decode GEMVs: defeat L2) */
};
static void run_gemm(void *c, int i) {
    struct gemm_ctx *x = c;
    const ks_bf16 *w = x->w + (size_t)(i % x->nw) * x->in * x->out;
    CKS(ks_cuda_gemm_run(x->g, x->y, KS_DTYPE_BF16, x->x, w, NULL, x->n, x->in, x->out, 0.0f, 0));
}

/* ---- attention --------------------------------------------------------------------------------------- */

struct prefill_ctx {
    ks_bf16 *q, *k, *v, *o;
    float *lse; /* NULL, or the log-sum-exps are stored too (what H2O's all-query scores reuse) */
    int n, H, Hk, d, portable; /* portable: the mma.sync kernel instead of the dispatching entry */
};
static void run_prefill(void *c, int i) {
    struct prefill_ctx *x = c;
    (void)i;
    const int64_t ld = (int64_t)x->H * x->d;
    const float scale = 1.0f / sqrtf((float)x->d);
    if (x->portable)
        CKS(ks_cuda_attention_prefill_sm80(x->o, ld, x->q, ld, x->k, x->v, x->n, x->n, x->n, x->H, x->Hk, x->d, 0, 0,
                                           scale, x->lse, 0));
    else
        CKS(ks_cuda_attention_prefill(x->o, ld, x->q, ld, x->k, x->v, x->n, x->n, x->n, x->H, x->Hk, x->d, 0, 0, scale,
                                      x->lse, 0));
}

struct scores_ctx {
    ks_cuda_score_args a;
    float *out, *lse;
    size_t lse_floats;
};
static void run_scores(void *c, int i) {
    struct scores_ctx *x = c;
    (void)i;
    CKS(ks_cuda_scores(x->out, x->a.cap, NULL, &x->a, x->lse, x->lse_floats, 0));
}

struct decode_ctx {
    ks_bf16 *q, *k, *v, *o;
    int32_t *lens;
    void *scratch;
    int H, Hk, d, cap, layers, max_len;
};
static void run_decode(void *c, int i) {
    struct decode_ctx *x = c;
    size_t layer = (size_t)(i % x->layers) * x->Hk * x->cap * x->d;
    CKS(ks_cuda_attention_decode(x->o, x->q, x->k + layer, x->v + layer, x->lens, NULL, x->cap, x->H, x->Hk, x->d,
                                 1.0f / sqrtf((float)x->d), x->max_len, x->scratch, 0));
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--quick") == 0) g_reps = 5;
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_kernels: %s, %d SMs, L2 %d MB, batches of %d calls (x4 for GEMV and decode)\n", prop.name,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, g_reps);
    char table[64][160];
    int rows = 0;

    /* Ceiling 1: device-to-device copy of 4 GiB, bytes read + written. */
    {
        struct copy_ctx c = {NULL, NULL, (size_t)2 << 30};
        CK(cudaMalloc(&c.a, c.bytes));
        CK(cudaMalloc(&c.b, c.bytes));
        fill_random_bf16(c.a, c.bytes / 2, 1);
        float ms = time_ms(run_copy, &c, g_reps);
        snprintf(table[rows++], 160, "copy D2D 2 GiB                    %8.3f ms  %7.0f GB/s (read+write)", ms,
                 2.0 * c.bytes / ms / 1e6);
        CK(cudaFree(c.a));
        CK(cudaFree(c.b));
    }

    ks_cuda_gemm_t *g = NULL;
    CKS(ks_cuda_gemm_init(&g, 32u << 20));
    /* Ceiling 2: bf16 GEMM 8192^3, bf16 out. */
    {
        struct gemm_ctx c = {g, NULL, NULL, NULL, 8192, 8192, 8192, 1};
        size_t e = (size_t)8192 * 8192;
        CK(cudaMalloc((void **)&c.x, e * 2));
        CK(cudaMalloc((void **)&c.w, e * 2));
        CK(cudaMalloc((void **)&c.y, e * 2));
        fill_random_bf16(c.x, e, 2);
        fill_random_bf16(c.w, e, 3);
        float ms = time_ms(run_gemm, &c, g_reps);
        snprintf(table[rows++], 160, "gemm bf16 8192^3                  %8.3f ms  %7.1f TFLOP/s", ms,
                 2.0 * 8192 * 8192 * 8192 / ms / 1e9);
        CK(cudaFree(c.x));
        CK(cudaFree(c.w));
        CK(cudaFree(c.y));
    }
    /* Decode GEMVs of one Llama-3.1-8B layer and the LM head, weights rotated over copies (> L2): one token
     * (n = 1), a batched step of 16 (the GEMV over KS_CUDA_GEMV_ROWS rows) and of 17 (cuBLASLt), GB/s of the
     * weights read. */
    {
        const int shapes[5][2] = {{4096, 6144}, {4096, 4096}, {4096, 28672}, {14336, 4096}, {4096, 128256}};
        const char *names[5] = {"qkv", "o", "gate|up", "down", "lm_head"};
        const int tokens[3] = {1, KS_CUDA_GEMV_ROWS, KS_CUDA_GEMV_ROWS + 1};
        for (int t = 0; t < 3; t++)
            for (int s = 0; s < 5; s++) {
                struct gemm_ctx c = {g, NULL, NULL, NULL, tokens[t], shapes[s][0], shapes[s][1], s == 4 ? 2 : 8};
                size_t we = (size_t)c.in * c.out;
                CK(cudaMalloc((void **)&c.x, (size_t)c.n * c.in * 2));
                CK(cudaMalloc((void **)&c.w, we * 2 * c.nw));
                CK(cudaMalloc((void **)&c.y, (size_t)c.n * c.out * 2));
                fill_random_bf16(c.x, (size_t)c.n * c.in, 4);
                fill_random_bf16(c.w, we * c.nw, 5);
                float ms = time_ms(run_gemm, &c, g_reps * 4);
                const char *kind = c.n <= KS_CUDA_GEMV_ROWS ? "gemv" : "gemm";
                snprintf(table[rows++], 160, "%s %-8s n=%-2d %5d -> %5d  %8.4f ms  %7.0f GB/s", kind, names[s], c.n,
                         c.in, c.out, ms, we * 2.0 / ms / 1e6);
                CK(cudaFree(c.x));
                CK(cudaFree(c.w));
                CK(cudaFree(c.y));
            }
    }
    ks_cuda_gemm_free(g);

    /* Prefill attention, causal, from position 0; FLOPs = 4 n^2 d H / 2 (the causal half). */
    {
        const int lens[3] = {4096, 16384, 32768};
        for (int variant = 0; variant < 4; variant++) { /* d=128; d=128 mma.sync; d=64; d=128 with lse */
            const int d = variant == 2 ? 64 : 128, H = 32, Hk = 8;
            for (int li = 0; li < 3; li++) {
                struct prefill_ctx c = {NULL, NULL, NULL, NULL, NULL, lens[li], H, Hk, d, variant == 1};
                if (variant > 0 && li != 2) continue; /* the others at 32K only */
                size_t qe = (size_t)c.n * H * d, ke = (size_t)Hk * c.n * d;
                CK(cudaMalloc((void **)&c.q, qe * 2));
                CK(cudaMalloc((void **)&c.o, qe * 2));
                CK(cudaMalloc((void **)&c.k, ke * 2));
                CK(cudaMalloc((void **)&c.v, ke * 2));
                fill_random_bf16(c.q, qe, 6);
                fill_random_bf16(c.k, ke, 7);
                fill_random_bf16(c.v, ke, 8);
                if (variant == 3) CK(cudaMalloc((void **)&c.lse, sizeof(float) * c.n * H));
                float ms = time_ms(run_prefill, &c, g_reps);
                double flops = 4.0 * c.n * (double)c.n * d * H / 2;
                snprintf(table[rows++], 160, "prefill attn causal n=%-6d d=%-3d%s %8.3f ms  %7.1f TFLOP/s", c.n, d,
                         c.portable ? "sm80" : c.lse ? "lse " : "    ", ms, flops / ms / 1e9);
                cudaFree(c.lse);
                CK(cudaFree(c.q));
                CK(cudaFree(c.o));
                CK(cudaFree(c.k));
                CK(cudaFree(c.v));
            }
        }
    }

    /* H2O's all-query scores (column sums of the causal softmax) of a prefill chunk of n queries ending at
     * key L, Llama-3.1-8B heads; FLOPs = the two Q K^T passes over the visible (query, key) pairs. */
    {
        /* n, L, given: the whole prompt; the engine's last chunk; the same with the attention's log-sum-exps */
        const int shapes[3][3] = {{32768, 32768, 0}, {8448, 32768, 0}, {8448, 32768, 1}};
        for (int si = 0; si < 3; si++) {
            const int n = shapes[si][0], L = shapes[si][1], H = 32, Hk = 8, d = 128;
            struct scores_ctx c = {.a = {.ld_q = (int64_t)H * d, .H = H, .Hk = Hk, .d = d, .cap = L, .n_q = n,
                                         .q_pos = L - n, .n_keys = L, .stat = KS_SCORE_SUM, .reduce = KS_GQA_MEAN,
                                         .scale = 1.0f / sqrtf((float)d)}};
            ks_bf16 *q, *k;
            CK(cudaMalloc((void **)&q, (size_t)n * H * d * 2));
            CK(cudaMalloc((void **)&k, (size_t)Hk * L * d * 2));
            fill_random_bf16(q, (size_t)n * H * d, 12);
            fill_random_bf16(k, (size_t)Hk * L * d, 13);
            c.a.q = q, c.a.kc = k;
            c.lse_floats = ks_cuda_scores_lse_floats(&c.a);
            CK(cudaMalloc((void **)&c.out, sizeof(float) * Hk * L));
            CK(cudaMalloc((void **)&c.lse, sizeof(float) * c.lse_floats));
            float *given = NULL;
            if (shapes[si][2]) { /* the log-sum-exps of one scoring call, given to the next */
                CK(cudaMalloc((void **)&given, sizeof(float) * n * H));
                run_scores(&c, 0);
                CK(cudaMemcpy(given, c.lse, sizeof(float) * n * H, cudaMemcpyDeviceToDevice));
                c.a.lse_in = given;
            }
            float ms = time_ms(run_scores, &c, g_reps);
            double pairs = (double)n * (L - n) + (double)n * (n + 1) / 2;
            snprintf(table[rows++], 160, "h2o scores n=%-6d keys=%-6d %s %8.3f ms  %7.1f TFLOP/s (Q K^T passes)", n,
                     L, given ? "lse in" : "      ", ms, (given ? 2.0 : 4.0) * pairs * d * H / ms / 1e9);
            cudaFree(given);
            CK(cudaFree(q));
            CK(cudaFree(k));
            CK(cudaFree(c.out));
            CK(cudaFree(c.lse));
        }
    }

    /* Decode attention, one token, every KV head at length L, over 8 layers of a 128K cache (8 GiB: L2
     * cannot hold a layer's working set at 32K+, and layers rotate at 4K). Bytes = K + V rows read. */
    {
        struct decode_ctx c = {0};
        c.H = 32, c.Hk = 8, c.d = 128, c.cap = 131072, c.layers = 8;
        size_t ce = (size_t)c.layers * c.Hk * c.cap * c.d;
        CK(cudaMalloc((void **)&c.k, ce * 2));
        CK(cudaMalloc((void **)&c.v, ce * 2));
        CK(cudaMalloc((void **)&c.q, (size_t)c.H * c.d * 2));
        CK(cudaMalloc((void **)&c.o, (size_t)c.H * c.d * 2));
        CK(cudaMalloc((void **)&c.lens, c.Hk * 4));
        CK(cudaMalloc(&c.scratch, ks_cuda_attention_decode_scratch_bytes(c.H, c.Hk, c.d, c.cap)));
        fill_random_bf16(c.k, ce, 9);
        fill_random_bf16(c.v, ce, 10);
        fill_random_bf16(c.q, (size_t)c.H * c.d, 11);
        const int L[3] = {4096, 32768, 131072};
        for (int li = 0; li < 3; li++)
            for (int hint = 0; hint < 2; hint++) { /* max_len = L (exact) or = cap (a graph for all lengths) */
                int32_t lens[8];
                for (int h = 0; h < 8; h++) lens[h] = L[li];
                CK(cudaMemcpy(c.lens, lens, sizeof lens, cudaMemcpyHostToDevice));
                c.max_len = hint ? c.cap : L[li];
                if (hint && L[li] == c.cap) continue;
                float ms = time_ms(run_decode, &c, g_reps * 4);
                double bytes = 2.0 * c.Hk * L[li] * c.d * 2;
                snprintf(table[rows++], 160, "decode attn L=%-6d max_len=%-6d   %8.4f ms  %7.0f GB/s", L[li], c.max_len,
                         ms, bytes / ms / 1e6);
            }
        CK(cudaFree(c.k));
        CK(cudaFree(c.v));
        CK(cudaFree(c.q));
        CK(cudaFree(c.o));
        CK(cudaFree(c.lens));
        CK(cudaFree(c.scratch));
    }

    printf("\n%-50s %s\n", "kernel", "median");
    for (int r = 0; r < rows; r++) printf("%s\n", table[r]);
    return 0;
}
