/* speed_model.c — see speed_model.h. */
#include "speed/speed_model.h"

#include <stdlib.h>
#include <string.h>

#ifdef KS_HAVE_CUDA
#include <math.h>

#include "cuda/ks_cuda.h"
#include "backend/backend_cuda.h"
#include "backend/cuda_check.h"
#include "cpu/flexprefill_ref.h"   /* ks_flexprefill_blocks, ks_flexprefill_max_cols */
#include "cuda/ks_cuda_methods.h" /* ks_cuda_xattn_blocks, ks_cuda_flex_blocks */
#endif

/* meta-llama/Llama-3.1-8B's config.json. */
static void llama31_8b(ks_model_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = KS_ARCH_LLAMA;
    c->n_layers = 32, c->hidden = 4096, c->n_heads = 32, c->n_kv_heads = 8, c->head_dim = 128;
    c->ffn = 14336, c->vocab = 128256, c->max_pos = 131072, c->rms_eps = 1e-5f;
    c->rope_theta = 500000.0f, c->rope_type = KS_ROPE_LLAMA3, c->rope_factor = 8.0f;
    c->rope_low_freq_factor = 1.0f, c->rope_high_freq_factor = 4.0f, c->rope_orig_max_pos = 8192;
    c->bos_id = 128000;
    c->eos_ids[0] = 128001, c->eos_ids[1] = 128008, c->eos_ids[2] = 128009, c->n_eos = 3;
}

ks_status ks_speed_model_init(ks_model *m, const char *config_path) {
    memset(m, 0, sizeof *m);
    if (config_path) {
        KS_TRY(ks_model_config_from_hf(config_path, &m->cfg));
    } else {
        llama31_8b(&m->cfg);
        KS_TRY(ks_model_config_validate(&m->cfg, "the built-in Llama-3.1-8B config"));
    }
    const char *what = config_path ? config_path : "Llama-3.1-8B shape (built in)";
    m->source = ks_malloc(strlen(what) + 1, "model name");
    if (!m->source) return KS_ERR_NOMEM;
    strcpy(m->source, what);
    m->first_layer = 0, m->last_layer = m->cfg.n_layers;
    return KS_OK;
}

#ifndef KS_HAVE_CUDA

static ks_status no_cuda(void) {
    return ks_fail(KS_ERR_UNSUPPORTED, "kvscope bench measures the GPU, but this kvscope build has no CUDA backend "
                                       "(rebuild with -DKS_CUDA=ON on a machine with the CUDA toolkit)");
}

ks_status ks_speed_forward(ks_forward *f, const ks_model *m, ks_method *method, const ks_forward_params *p,
                           uint64_t seed) {
    (void)f, (void)m, (void)method, (void)p, (void)seed;
    return no_cuda();
}

ks_status ks_speed_gpu_count(int *n) {
    *n = 0;
    return no_cuda();
}

ks_status ks_speed_device(char *name, size_t cap, int *sm_count, size_t *total_bytes, size_t *free_bytes) {
    (void)name, (void)cap, (void)sm_count, (void)total_bytes, (void)free_bytes;
    return no_cuda();
}

ks_status ks_speed_copy_bandwidth(size_t bytes, int repeat, double *bytes_per_s) {
    (void)bytes, (void)repeat, (void)bytes_per_s;
    return no_cuda();
}

ks_status ks_speed_attention_tflops(int n, int H, int Hk, int d, int repeat, double *tflops) {
    (void)n, (void)H, (void)Hk, (void)d, (void)repeat, (void)tflops;
    return no_cuda();
}

ks_status ks_speed_attention_sparse(int n, int H, int Hk, int d, int block, const double *dens, int nd, int repeat,
                                    uint64_t seed, double *dense_ms, double *ms, double *kept, double *tflops) {
    (void)n, (void)H, (void)Hk, (void)d, (void)block, (void)dens, (void)nd, (void)repeat, (void)seed;
    (void)dense_ms, (void)ms, (void)kept, (void)tflops;
    return no_cuda();
}

ks_status ks_speed_xattn_estimate(int n, int H, int Hk, int d, int chunk, int repeat, double *ms) {
    (void)n, (void)H, (void)Hk, (void)d, (void)chunk, (void)repeat, (void)ms;
    return no_cuda();
}

ks_status ks_speed_flex_estimate(int n, int H, int Hk, int d, int repeat, double *ms, double *aware) {
    (void)n, (void)H, (void)Hk, (void)d, (void)repeat, (void)ms, (void)aware;
    return no_cuda();
}

#else

ks_status ks_speed_forward(ks_forward *f, const ks_model *m, ks_method *method, const ks_forward_params *p,
                           uint64_t seed) {
    memset(f, 0, sizeof *f);
    ks_backend_params bp;
    ks_backend *be;
    KS_TRY(ks_forward_backend_params(m, method, p, &bp));
    /* ks_forward_init would upload host weights; this model has none, so the backend fills its own */
    KS_TRY(ks_backend_cuda_init_random(&be, m, &bp, seed));
    return ks_forward_init_backend(f, m, method, &ks_backend_cuda, be, &bp);
}

ks_status ks_speed_gpu_count(int *n) {
    *n = ks_backend_cuda_count();
    return KS_OK;
}

ks_status ks_speed_device(char *name, size_t cap, int *sm_count, size_t *total_bytes, size_t *free_bytes) {
    return ks_backend_cuda_device(name, cap, sm_count, total_bytes, free_bytes);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The median of n timings (sorted in place). */
static double median_ms(float *ms, int n) {
    qsort(ms, n, sizeof *ms, cmp_float);
    return n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
}

/* `repeat` timed copies src -> dst of `bytes` after one warm-up into ms. */
static ks_status time_copies(void *dst, const void *src, size_t bytes, int repeat, float *ms) {
    cudaEvent_t ev[2] = {NULL, NULL};
    ks_status st = KS_OK;
    if (cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess)
        st = ks_fail(KS_ERR_DEVICE, "CUDA failed: cannot create timing events");
    for (int r = -1; r < repeat && st == KS_OK; r++) { /* r = -1: warm-up */
        cudaEventRecord(ev[0], 0);
        cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(ev[1], 0);
        if (e == cudaSuccess) e = cudaEventSynchronize(ev[1]);
        if (e != cudaSuccess) st = ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (copy bandwidth)", cudaGetErrorString(e));
        if (st == KS_OK && r >= 0) cudaEventElapsedTime(&ms[r], ev[0], ev[1]);
    }
    for (int i = 0; i < 2; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    return st;
}

ks_status ks_speed_copy_bandwidth(size_t bytes, int repeat, double *bytes_per_s) {
    KS_ASSERT(bytes > 0 && repeat > 0);
    void *buf[2] = {NULL, NULL};
    float *ms = ks_malloc(sizeof(float) * repeat, "copy timings");
    ks_status st = ms ? KS_OK : KS_ERR_NOMEM;
    for (int i = 0; i < 2 && st == KS_OK; i++)
        if (cudaMalloc(&buf[i], bytes) != cudaSuccess) {
            cudaGetLastError();
            buf[i] = NULL;
            st = ks_fail(KS_ERR_NOMEM, "copy bandwidth: out of GPU memory for two buffers of %.2f GiB",
                         (double)bytes / (1 << 30));
        }
    /* random data, never zeros (a device may compress zeros) */
    if (st == KS_OK) st = ks_cuda_fill_uniform(buf[0], KS_DTYPE_BF16, (int64_t)(bytes / 2), -2.0f, 2.0f, 7, 0);
    if (st == KS_OK) st = time_copies(buf[1], buf[0], bytes, repeat, ms);
    if (st == KS_OK) *bytes_per_s = 2.0 * (double)bytes / (median_ms(ms, repeat) * 1e-3);
    for (int i = 0; i < 2; i++) cudaFree(buf[i]);
    free(ms);
    return st;
}

/* The timed calls of the dense kernel (l NULL) or the sparse one with block list l (device arrays); buffers and
 * events are the caller's. */
static ks_status time_attention(ks_bf16 *q, ks_bf16 *k, ks_bf16 *v, ks_bf16 *o, int n, int H, int Hk, int d,
                                const ks_block_list *l, int repeat, float *ms) {
    const int64_t ld = (int64_t)H * d;
    const float scale = 1.0f / sqrtf((float)d);
    cudaEvent_t ev[2] = {NULL, NULL};
    ks_status st = KS_OK;
    if (cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess)
        st = ks_fail(KS_ERR_DEVICE, "CUDA failed: cannot create timing events");
    for (int r = -1; r < repeat && st == KS_OK; r++) { /* r = -1: warm-up */
        cudaEventRecord(ev[0], 0);
        st = l ? ks_cuda_attention_prefill_sparse(o, ld, q, ld, k, v, n, n, n, H, Hk, d, 0, 0, scale, NULL, l, 0)
               : ks_cuda_attention_prefill(o, ld, q, ld, k, v, n, n, n, H, Hk, d, 0, 0, scale, NULL, 0);
        cudaEventRecord(ev[1], 0);
        cudaError_t e = cudaEventSynchronize(ev[1]);
        if (st == KS_OK && e != cudaSuccess)
            st = ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (attention kernel benchmark)", cudaGetErrorString(e));
        if (st == KS_OK && r >= 0) cudaEventElapsedTime(&ms[r], ev[0], ev[1]);
    }
    for (int i = 0; i < 2; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    return st;
}

/* buf = q, k, v, out of a causal self-attention of n tokens: random bf16 (never zeros: the inputs of a real
 * prefill), out uninitialised. attention_free releases what was allocated. */
static ks_status attention_alloc(ks_bf16 *buf[4], int n, int H, int Hk, int d) {
    const size_t qn = (size_t)n * H * d, kvn = (size_t)Hk * n * d;
    const size_t count[4] = {qn, kvn, kvn, qn};
    ks_status st = KS_OK;
    for (int i = 0; i < 4; i++) buf[i] = NULL;
    for (int i = 0; i < 4 && st == KS_OK; i++) {
        if (cudaMalloc((void **)&buf[i], count[i] * 2) != cudaSuccess) {
            cudaGetLastError();
            buf[i] = NULL;
            st = ks_fail(KS_ERR_NOMEM, "--attention_lengths %d: out of GPU memory for the kernel's inputs (%.2f GiB)",
                         n, (double)(2 * qn + 2 * kvn) * 2 / (1 << 30));
        }
        /* random data, never zeros: the inputs of a real prefill */
        if (st == KS_OK && i < 3)
            st = ks_cuda_fill_uniform(buf[i], KS_DTYPE_BF16, (int64_t)count[i], -2.0f, 2.0f, 17 + i, 0);
    }
    return st;
}

static void attention_free(ks_bf16 *buf[4]) {
    for (int i = 0; i < 4; i++) cudaFree(buf[i]);
}

/* *med = the median ms of `repeat` timed calls (time_attention) on the inputs buf. */
static ks_status attention_median_ms(ks_bf16 *buf[4], int n, int H, int Hk, int d, const ks_block_list *l,
                                     int repeat, double *med) {
    float *ms = ks_malloc(sizeof(float) * repeat, "attention timings");
    if (!ms) return KS_ERR_NOMEM;
    ks_status st = time_attention(buf[0], buf[1], buf[2], buf[3], n, H, Hk, d, l, repeat, ms);
    if (st == KS_OK) *med = median_ms(ms, repeat);
    free(ms);
    return st;
}

ks_status ks_speed_attention_tflops(int n, int H, int Hk, int d, int repeat, double *tflops) {
    KS_ASSERT(n > 0 && repeat > 0 && Hk > 0 && H % Hk == 0);
    ks_bf16 *buf[4];
    double med = 0;
    ks_status st = attention_alloc(buf, n, H, Hk, d);
    if (st == KS_OK) st = attention_median_ms(buf, n, H, Hk, d, NULL, repeat, &med);
    if (st == KS_OK) *tflops = 4.0 * n * (double)n * d * H / 2 / (med * 1e-3) / 1e12;
    attention_free(buf);
    return st;
}

/* splitmix64: the random block lists' generator. */
static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The visible (query, key) pairs of key block kb for query block qb of a causal self-attention of n tokens from 0
 * in blocks of B. */
static double block_pairs(int qb, int kb, int B, int n) {
    const int q_hi = (qb + 1) * B < n ? (qb + 1) * B : n, rows = q_hi - qb * B;
    if (kb < qb) return (double)rows * B;
    return (double)rows * (rows + 1) / 2; /* the diagonal block: query i sees keys 0 .. i of it */
}

/* A random list for n queries from 0 in blocks of B, H heads (see ks_speed_attention_sparse), with its arrays
 * copied to the device into *dl (free both arrays with cudaFree); *kept, *pairs as there. */
static ks_status sparse_list(int n, int H, int B, double density, uint64_t seed, ks_block_list *dl, double *kept,
                             double *pairs) {
    const int nqb = ks_block_rows_of(0, n, B), rows = H * nqb;
    const size_t max_cols = (size_t)H * nqb * (nqb + 1) / 2;
    int32_t *row_start = ks_malloc(sizeof(int32_t) * (rows + 1), "sparse block list");
    int32_t *cols = ks_malloc(sizeof(int32_t) * max_cols, "sparse block list");
    *dl = (ks_block_list){.block = B, .H = H, .qb0 = 0, .n_qblocks = nqb};
    ks_status st = row_start && cols ? KS_OK : KS_ERR_NOMEM;
    size_t nnz = 0;
    *pairs = 0;
    uint64_t rng = seed;
    for (int r = 0; r < rows && st == KS_OK; r++) {
        const int qb = r % nqb;
        row_start[r] = (int32_t)nnz;
        for (int kb = 0; kb <= qb; kb++)
            if (kb == 0 || kb == qb || (double)(splitmix(&rng) >> 11) * 0x1.0p-53 < density) {
                cols[nnz++] = kb;
                *pairs += block_pairs(qb, kb, B, n);
            }
    }
    if (st == KS_OK) {
        row_start[rows] = (int32_t)nnz;
        *kept = (double)nnz / (double)max_cols;
        const size_t bytes[2] = {sizeof(int32_t) * (rows + 1), sizeof(int32_t) * (nnz ? nnz : 1)};
        int32_t *host[2] = {row_start, cols}, *dev[2] = {NULL, NULL};
        for (int i = 0; i < 2 && st == KS_OK; i++)
            if (cudaMalloc((void **)&dev[i], bytes[i]) != cudaSuccess ||
                cudaMemcpy(dev[i], host[i], bytes[i], cudaMemcpyHostToDevice) != cudaSuccess) {
                cudaGetLastError();
                st = ks_fail(KS_ERR_NOMEM, "--sparse_densities: cannot place a block list of %.0f MiB on the GPU",
                             (double)bytes[i] / (1 << 20));
            }
        dl->row_start = dev[0], dl->cols = dev[1];
        if (st != KS_OK) cudaFree(dev[0]), cudaFree(dev[1]), dl->row_start = dl->cols = NULL;
    }
    free(row_start);
    free(cols);
    return st;
}

ks_status ks_speed_attention_sparse(int n, int H, int Hk, int d, int block, const double *dens, int nd, int repeat,
                                    uint64_t seed, double *dense_ms, double *ms, double *kept, double *tflops) {
    KS_ASSERT(n > 0 && repeat > 0 && Hk > 0 && H % Hk == 0 && nd >= 0);
    ks_bf16 *buf[4];
    ks_status st = attention_alloc(buf, n, H, Hk, d);
    if (st == KS_OK) st = attention_median_ms(buf, n, H, Hk, d, NULL, repeat, dense_ms);
    for (int i = 0; i < nd && st == KS_OK; i++) {
        ks_block_list dl;
        double pairs = 0;
        st = sparse_list(n, H, block, dens[i], seed + (uint64_t)i, &dl, &kept[i], &pairs);
        if (st == KS_OK) st = attention_median_ms(buf, n, H, Hk, d, &dl, repeat, &ms[i]);
        if (st == KS_OK) tflops[i] = 4.0 * d * pairs / (ms[i] * 1e-3) / 1e12;
        if (dl.row_start) cudaFree(dl.row_start), cudaFree(dl.cols);
    }
    attention_free(buf);
    return st;
}

/* The device scratch of ks_cuda_xattn_blocks for chunks of nq query blocks (ks_cuda_xattn_work_size) in one
 * allocation at *block; theta (H) set to `threshold`. */
static ks_status xattn_work_alloc(ks_cuda_xattn_work *w, void **block, int H, int d, int B, int cap, int nq,
                                  float threshold) {
    const size_t rows = (size_t)H * nq, nb = (size_t)cap / B + 1;
    ks_cuda_xattn_work_size(H, d, B, cap, nq, &w->s_floats, &w->q_elems);
    const size_t bytes[7] = {w->s_floats * 4, w->q_elems * 2, rows * nb * 4, (size_t)H * 4, rows * nb * 4, rows * 4,
                             rows * 8};
    size_t total = 0;
    for (int i = 0; i < 7; i++) total += (bytes[i] + 255) & ~(size_t)255;
    if (cudaMalloc(block, total) != cudaSuccess) {
        cudaGetLastError();
        *block = NULL;
        return ks_fail(KS_ERR_NOMEM, "--sparse_densities: out of GPU memory for XAttention's estimation (%.2f GiB)",
                       (double)total / (1 << 30));
    }
    unsigned char *p = *block;
    void *at[7];
    for (int i = 0; i < 7; i++) at[i] = p, p += (bytes[i] + 255) & ~(size_t)255;
    w->s = at[0], w->q = at[1], w->a = at[2], w->theta = at[3], w->cols = at[4], w->count = at[5], w->coverage = at[6];
    float *theta = ks_malloc(sizeof(float) * H, "XAttention thresholds");
    if (!theta) return KS_ERR_NOMEM;
    for (int h = 0; h < H; h++) theta[h] = threshold;
    cudaError_t e = cudaMemcpy(w->theta, theta, sizeof(float) * H, cudaMemcpyHostToDevice);
    free(theta);
    return e == cudaSuccess ? KS_OK : ks_fail(KS_ERR_DEVICE, "CUDA failed: %s", cudaGetErrorString(e));
}

/* One layer's estimation: every chunk of the prompt in turn. */
static ks_status xattn_prompt(ks_cuda_gemm_t *gemm, const ks_cuda_xattn_work *w, ks_bf16 *buf[4], int n, int H,
                              int Hk, int d, int chunk) {
    for (int pos0 = 0; pos0 < n; pos0 += chunk) {
        const ks_xattn_blocks_args a = {.q_pos0 = pos0, .n = n - pos0 < chunk ? n - pos0 : chunk, .block = 128,
                                        .stride = 16, .scale = 1.0f / (sqrtf((float)d) * 16.0f), .density = 0};
        KS_TRY(ks_cuda_xattn_blocks(gemm, w, buf[0] + (size_t)pos0 * H * d, (int64_t)H * d, buf[1], H, Hk, d, n, &a,
                                    0));
    }
    return KS_OK;
}

/* *med = the median device ms of `repeat` runs of run(ctx) after one warm-up (events on the default stream around
 * each; a run that waits for the device is timed to its end). */
static ks_status estimate_median_ms(ks_status (*run)(void *ctx), void *ctx, int repeat, const char *what,
                                    double *med) {
    float *ms = ks_malloc(sizeof(float) * repeat, "estimation timings");
    if (!ms) return KS_ERR_NOMEM;
    cudaEvent_t ev[2] = {NULL, NULL};
    ks_status st = KS_OK;
    if (cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess)
        st = ks_fail(KS_ERR_DEVICE, "CUDA failed: cannot create timing events");
    for (int r = -1; r < repeat && st == KS_OK; r++) { /* r = -1: warm-up */
        cudaEventRecord(ev[0], 0);
        st = run(ctx);
        cudaEventRecord(ev[1], 0);
        cudaError_t e = cudaEventSynchronize(ev[1]);
        if (st == KS_OK && e != cudaSuccess)
            st = ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (%s estimation benchmark)", cudaGetErrorString(e), what);
        if (st == KS_OK && r >= 0) cudaEventElapsedTime(&ms[r], ev[0], ev[1]);
    }
    if (st == KS_OK) {
        qsort(ms, repeat, sizeof *ms, cmp_float);
        *med = repeat % 2 ? ms[repeat / 2] : 0.5 * (ms[repeat / 2 - 1] + ms[repeat / 2]);
    }
    for (int i = 0; i < 2; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    free(ms);
    return st;
}

typedef struct {
    ks_cuda_gemm_t *gemm;
    const ks_cuda_xattn_work *w;
    ks_bf16 **buf;
    int n, H, Hk, d, chunk;
} xattn_run;

static ks_status xattn_run_once(void *ctx) {
    const xattn_run *x = ctx;
    return xattn_prompt(x->gemm, x->w, x->buf, x->n, x->H, x->Hk, x->d, x->chunk);
}

ks_status ks_speed_xattn_estimate(int n, int H, int Hk, int d, int chunk, int repeat, double *med) {
    KS_ASSERT(n > 0 && repeat > 0 && Hk > 0 && H % Hk == 0 && chunk >= 128);
    chunk -= chunk % 128;
    ks_bf16 *buf[4];
    ks_cuda_xattn_work w;
    void *block = NULL;
    ks_cuda_gemm_t *gemm = NULL;
    ks_status st = attention_alloc(buf, n, H, Hk, d);
    if (st == KS_OK) st = xattn_work_alloc(&w, &block, H, d, 128, n, ks_block_rows_of(0, chunk, 128) + 1, 0.9f);
    if (st == KS_OK) st = ks_cuda_gemm_init(&gemm, (size_t)32 << 20);
    xattn_run x = {gemm, &w, buf, n, H, Hk, d, chunk};
    if (st == KS_OK) st = estimate_median_ms(xattn_run_once, &x, repeat, "XAttention", med);
    ks_cuda_gemm_free(gemm);
    cudaFree(block);
    attention_free(buf);
    return st;
}

typedef struct {
    ks_cuda_gemm_t *gemm;
    const ks_cuda_flex_work *w;
    ks_bf16 **buf;
    ks_flexprefill_args a;
    ks_block_list l;
    ks_flexprefill_stat *stats;
} flex_run;

static ks_status flex_run_once(void *ctx) {
    flex_run *x = ctx;
    return ks_cuda_flex_blocks(x->gemm, x->w, x->buf[0], (int64_t)x->a.H * x->a.d, x->buf[1], x->a.L, &x->a, &x->l,
                               x->stats, 0);
}

ks_status ks_speed_flex_estimate(int n, int H, int Hk, int d, int repeat, double *med, double *aware) {
    KS_ASSERT(n > 0 && repeat > 0 && Hk > 0 && H % Hk == 0);
    ks_bf16 *buf[4];
    flex_run x = {.buf = buf,
                  .a = {.block = 128, .gamma = 0.9f, .tau = 0.1f, .min_budget = 512, .max_budget = 32768, .H = H,
                        .Hk = Hk, .d = d, .L = n}};
    const int nb = ks_flexprefill_blocks(&x.a);
    void *block = NULL;
    ks_status st = attention_alloc(buf, n, H, Hk, d);
    const size_t bytes = ks_cuda_flex_work_bytes(H, Hk, d, 128, n, KS_CUDA_FLEX_SLAB_BYTES);
    if (st == KS_OK && cudaMalloc(&block, bytes) != cudaSuccess) {
        cudaGetLastError();
        block = NULL;
        st = ks_fail(KS_ERR_NOMEM, "--sparse_densities: out of GPU memory for FlexPrefill's estimation (%.2f GiB)",
                     (double)bytes / (1 << 30));
    }
    ks_cuda_flex_work w;
    if (st == KS_OK) ks_cuda_flex_work_place(&w, block, H, Hk, d, 128, n, KS_CUDA_FLEX_SLAB_BYTES), x.w = &w;
    if (st == KS_OK && (cudaMalloc((void **)&x.l.row_start, sizeof(int32_t) * ((size_t)H * nb + 1)) != cudaSuccess ||
                        cudaMalloc((void **)&x.l.cols, sizeof(int32_t) * ks_flexprefill_max_cols(&x.a)) != cudaSuccess)) {
        cudaGetLastError();
        st = ks_fail(KS_ERR_NOMEM, "--sparse_densities: out of GPU memory for FlexPrefill's block list");
    }
    x.stats = ks_malloc(sizeof(ks_flexprefill_stat) * H, "FlexPrefill head records");
    if (st == KS_OK && !x.stats) st = KS_ERR_NOMEM;
    if (st == KS_OK) st = ks_cuda_gemm_init(&x.gemm, (size_t)32 << 20);
    if (st == KS_OK) st = estimate_median_ms(flex_run_once, &x, repeat, "FlexPrefill", med);
    if (st == KS_OK) {
        int q = 0;
        for (int h = 0; h < H; h++) q += x.stats[h].pattern == KS_FLEX_QUERY_AWARE;
        *aware = (double)q / H;
    }
    ks_cuda_gemm_free(x.gemm);
    cudaFree(block);
    attention_free(buf);
    cudaFree(x.l.row_start), cudaFree(x.l.cols);
    free(x.stats);
    return st;
}

#endif /* KS_HAVE_CUDA */
