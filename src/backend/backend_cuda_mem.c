/* backend_cuda_mem.c — the CUDA backend's memory: device checks, the layout of its two device blocks
 * (backend_cuda_impl.h), the weight upload (host fp32 -> bf16 on the GPU) or random fill, init and free. */
#ifdef KS_HAVE_CUDA

#include <stdlib.h>
#include <string.h>

#include "backend/backend_cuda.h"
#include "backend/backend_cuda_impl.h"
#include "backend/cuda_check.h"
#include "cuda/ks_cuda_methods.h"

static double gib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0 * 1024.0); }

/* ---- the device ------------------------------------------------------------------------------------------ */

/* The current device, if it can run the kernels (sm_90a SASS + compute_90 PTX: Hopper and newer). */
static ks_status device_check(struct cudaDeviceProp *prop) {
    int count = 0, dev = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError(); /* not sticky, but leave no error behind */
        return ks_fail(KS_ERR_DEVICE,
                       "no usable CUDA GPU (%s): the cuda device needs a machine with an NVIDIA GPU and its driver "
                       "(or use --device cpu)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
    }
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(prop, dev));
    if (prop->major < 9)
        return ks_fail(KS_ERR_UNSUPPORTED,
                       "--device cuda: GPU %d (%s) has compute capability %d.%d, but kvscope's CUDA kernels are built "
                       "for 9.0 (Hopper: H100, H200) and newer; use --device cpu",
                       dev, prop->name, prop->major, prop->minor);
    return KS_OK;
}

int ks_backend_cuda_count(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

ks_status ks_backend_cuda_select(int gpu) {
    cudaError_t e = cudaSetDevice(gpu);
    if (e != cudaSuccess)
        return ks_fail(KS_ERR_DEVICE, "cannot use GPU %d: %s", gpu, cudaGetErrorString(e));
    return KS_OK;
}

ks_status ks_backend_cuda_device(char *name, size_t cap, int *sm_count, size_t *total_bytes, size_t *free_bytes) {
    struct cudaDeviceProp prop;
    KS_TRY(device_check(&prop));
    if (name && cap) snprintf(name, cap, "%s", prop.name);
    if (sm_count) *sm_count = prop.multiProcessorCount;
    size_t fr = 0, tot = 0;
    CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    if (total_bytes) *total_bytes = tot;
    if (free_bytes) *free_bytes = fr;
    return KS_OK;
}

/* cudaMalloc with the one clear message an out-of-memory deserves (naming the instances that share the GPU). */
static ks_status device_alloc(const ks_backend *b, void **p, size_t bytes, const char *what) {
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e == cudaSuccess) return KS_OK;
    *p = NULL;
    cudaGetLastError(); /* allocation errors are not sticky; clear the last-error slot */
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    if (e == cudaErrorMemoryAllocation && b->gpu_share > 1)
        return ks_fail(KS_ERR_NOMEM,
                       "--device cuda: out of GPU memory for the %s (%.2f GiB needed, %.2f of %.2f GiB free) with %d "
                       "model instances on this GPU (--gp_num 1/%d), each holding its own weights and cache; use "
                       "fewer instances per GPU, a shorter context or prefill chunk",
                       what, gib(bytes), gib(fr), gib(tot), b->gpu_share, b->gpu_share);
    if (e == cudaErrorMemoryAllocation)
        return ks_fail(KS_ERR_NOMEM,
                       "--device cuda: out of GPU memory for the %s (%.2f GiB needed, %.2f of %.2f GiB free); use "
                       "a shorter context or prefill chunk, or a GPU with more memory",
                       what, gib(bytes), gib(fr), gib(tot));
    return ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (allocating %.2f GiB for the %s)", cudaGetErrorString(e),
                   gib(bytes), what);
}

/* ---- layout ---------------------------------------------------------------------------------------------- */

/* Hands out 256-byte aligned pieces of a block; with base NULL it only counts (the sizing pass), and every
 * piece is NULL. */
typedef struct carver {
    char *base;
    size_t off;
} carver;

static void *take(carver *c, size_t bytes) {
    size_t at = (c->off + 255) & ~(size_t)255;
    c->off = at + bytes;
    return c->base ? c->base + at : NULL;
}

static int has_embed(const ks_model *m) {
    return m->first_layer == 0 || (m->last_layer == m->cfg.n_layers && m->cfg.tie_embeddings);
}

static void layout_weights(ks_backend *b, carver *c) {
    const ks_model_config *g = b->cfg;
    const size_t D = g->hidden, F = g->ffn, qd = (size_t)g->n_heads * g->head_dim;
    for (int l = 0; l < b->n_layers; l++) {
        cuda_layer *L = &b->layers[l];
        L->attn_norm = take(c, D * 4);
        L->ffn_norm = take(c, D * 4);
        L->w_qkv = take(c, (size_t)b->qkv_width * D * 2);
        L->b_qkv = g->attn_bias ? take(c, (size_t)b->qkv_width * 2) : NULL;
        L->w_o = take(c, D * qd * 2);
        L->b_o = g->o_bias ? take(c, D * 4) : NULL;
        L->w_gu = take(c, 2 * F * D * 2);
        L->w_down = take(c, D * F * 2);
    }
    b->embed = has_embed(b->m) ? take(c, (size_t)g->vocab * D * 2) : NULL;
    b->final_norm = NULL, b->lm_head = NULL;
    if (b->m->last_layer == g->n_layers) {
        b->final_norm = take(c, D * 4);
        b->lm_head = g->tie_embeddings ? b->embed : take(c, (size_t)g->vocab * D * 2);
    }
}

/* Log-sum-exp scratch of the window scoring: H (rows + cap) floats, or more where a chunk of up to `rows` queries
 * scored without softmax chunks has few enough queries that each takes several key splits
 * (ks_cuda_scores_lse_floats: n_q H (splits + 1)). Longer scorings in softmax chunks are checked per call. */
static size_t score_lse_floats(const ks_model_config *g, int rows, int cap) {
    size_t most = (size_t)g->n_heads * (rows + cap);
    ks_cuda_score_args a = {.H = g->n_heads, .Hk = g->n_kv_heads, .d = g->head_dim, .cap = cap, .n_keys = cap};
    for (int n = 1; n <= rows && n <= cap; n++) {
        a.n_q = n, a.q_pos = cap - n;
        size_t f = ks_cuda_scores_lse_floats(&a);
        most = f > most ? f : most;
    }
    return most;
}

/* XAttention's chunk estimation scratch (ks_cuda_xattn_work, ks_cuda_xattn_work_size) for block lists of
 * block_rows rows: the stride scores and reordered queries of a slab, the rows' block scores, choices, counts and
 * coverages. */
static void xattn_work_layout(ks_backend *b, carver *c, size_t block_rows) {
    const ks_model_config *g = b->cfg;
    const size_t H = g->n_heads, nb = b->cap / b->sparse_block + 1;
    ks_cuda_xattn_work *w = &b->xattn;
    ks_cuda_xattn_work_size((int)H, g->head_dim, b->sparse_block, b->cap, (int)(block_rows / H), &w->s_floats,
                            &w->q_elems);
    w->s = take(c, w->s_floats * 4);
    w->q = take(c, w->q_elems * 2);
    w->a = take(c, block_rows * nb * 4);
    w->theta = take(c, H * 4);
    w->cols = take(c, block_rows * nb * 4);
    w->count = take(c, block_rows * 4);
    w->coverage = take(c, block_rows * 8);
}

/* FlexPrefill's whole-prompt estimation scratch (ks_cuda_flex_work) for prompts up to the capacity. */
static void flex_work_layout(ks_backend *b, carver *c) {
    const ks_model_config *g = b->cfg;
    const int H = g->n_heads, Hk = g->n_kv_heads, d = g->head_dim;
    void *base = take(c, ks_cuda_flex_work_bytes(H, Hk, d, b->sparse_block, b->cap, KS_CUDA_FLEX_SLAB_BYTES));
    ks_cuda_flex_work_place(&b->flex, base, H, Hk, d, b->sparse_block, b->cap, KS_CUDA_FLEX_SLAB_BYTES);
}

static void layout_arena(ks_backend *b, carver *c) {
    const ks_model_config *g = b->cfg;
    const size_t rows = b->max_chunk, D = g->hidden, F = g->ffn, d = g->head_dim;
    const size_t qd = (size_t)g->n_heads * d, heads = (size_t)b->n_layers * g->n_kv_heads;
    /* a further slot's prompt runs while no other sequence computes: it uses the front's residual stream */
    b->x = b->x_base = b->shares ? b->x_base : take(c, (size_t)b->x_rows * D * 4);
    b->xn = take(c, rows * D * 2);
    b->qkv = take(c, rows * b->qkv_width * 2);
    b->att = take(c, rows * qd * 2);
    b->gu = take(c, rows * 2 * F * 2);
    b->home_qkv = b->qkv, b->home_att = b->att;
    b->logits = take(c, (size_t)b->logit_rows * g->vocab * 4);
    b->inv_freq = take(c, d / 2 * 4);
    b->pos = take(c, rows * 4);
    b->tokens = take(c, rows * 4);
    b->lens = take(c, heads * 4);
    b->starts = take(c, heads * 4);
    b->ids = take(c, b->logit_rows * 4);
    b->norm_done = take(c, sizeof(unsigned));
    b->decode_scratch = take(c, ks_cuda_attention_decode_scratch_bytes(g->n_heads, g->n_kv_heads, g->head_dim, b->cap));
    b->argmax_scratch = take(c, ks_cuda_argmax_scratch_bytes(b->logit_rows, g->vocab));
    const size_t Hk = g->n_kv_heads, H = g->n_heads, cap = b->cap;
    b->score_lse_floats = score_lse_floats(g, (int)rows, (int)cap);
    b->score_out = take(c, H * cap * 4);
    b->score_sums = take(c, H * cap * 4);
    b->score_lse = take(c, b->score_lse_floats * 4);
    b->score_sum = take(c, 2 * sizeof(double));
    b->att_lse = d == 64 || d == 128 ? take(c, rows * g->n_heads * 4) : NULL; /* ks_cuda_attention_prefill's lse */
    if (b->sparse_block) { /* the block list of a chunk starting mid-block: its rows and every causal key block */
        const size_t block_rows = H * (rows / b->sparse_block + 2);
        b->block_rows = take(c, (block_rows + 1) * 4);
        b->block_cols = take(c, block_rows * (cap / b->sparse_block + 1) * 4);
        if (b->sparse_whole_prompt) flex_work_layout(b, c);
        else xattn_work_layout(b, c, block_rows);
    }
    b->compact_idx = take(c, (Hk * cap + Hk) * 4);
    b->merge_list = take(c, Hk * cap * sizeof(ks_merge) + Hk * 4);
    b->drop_dev = take(c, heads * 4);
    b->compact_scratch = take(c, Hk * cap * d * 2);
    b->snap = take(c, 2 * (size_t)b->snap_rows * qd * 2);
    b->kc = take(c, ks_kvcache_elems(&b->cache) * 2);
    b->vc = take(c, ks_kvcache_elems(&b->cache) * 2);

    const int64_t qkvw = b->qkv_width;
    const int qw = (int)qd, kvw = g->n_kv_heads * g->head_dim;
    b->view[KS_BUF_X] = (cuda_view){b->x, g->hidden, g->hidden, KS_DTYPE_F32};
    b->view[KS_BUF_XN] = (cuda_view){b->xn, g->hidden, g->hidden, KS_DTYPE_BF16};
    b->view[KS_BUF_Q] = (cuda_view){b->qkv, qkvw, qw, KS_DTYPE_BF16};
    b->view[KS_BUF_K] = (cuda_view){b->qkv ? b->qkv + qw : NULL, qkvw, kvw, KS_DTYPE_BF16};
    b->view[KS_BUF_V] = (cuda_view){b->qkv ? b->qkv + qw + kvw : NULL, qkvw, kvw, KS_DTYPE_BF16};
    b->view[KS_BUF_ATT] = (cuda_view){b->att, qw, qw, KS_DTYPE_BF16};
    b->view[KS_BUF_GATE] = (cuda_view){b->gu, 2 * (int64_t)g->ffn, g->ffn, KS_DTYPE_BF16};
    b->view[KS_BUF_UP] = (cuda_view){b->gu ? b->gu + g->ffn : NULL, 2 * (int64_t)g->ffn, g->ffn, KS_DTYPE_BF16};
}

/* ---- weights: upload or random fill ----------------------------------------------------------------------- */

/* Host fp32 -> device bf16 through a device staging buffer (converted on the GPU); all on b->stream, so the
 * staging buffer is reused in stream order. Pageable host -> device copies return once the source is staged,
 * so nothing here waits for the GPU. */
typedef struct uploader {
    ks_backend *b;
    float *stage;
    size_t stage_floats;
} uploader;

static ks_status put_bf16(uploader *u, ks_bf16 *dst, const float *src, size_t n) {
    KS_ASSERT(src && dst);
    for (size_t off = 0; off < n; off += u->stage_floats) {
        size_t cnt = n - off < u->stage_floats ? n - off : u->stage_floats;
        CUDA_CHECK(cudaMemcpyAsync(u->stage, src + off, cnt * 4, cudaMemcpyHostToDevice, u->b->stream));
        KS_TRY(ks_cuda_f32_to_bf16(dst + off, u->stage, (int64_t)cnt, u->b->stream));
    }
    return KS_OK;
}

static ks_status put_f32(uploader *u, float *dst, const float *src, size_t n) {
    KS_ASSERT(src && dst);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyHostToDevice, u->b->stream));
    return KS_OK;
}

static ks_status upload_layer(uploader *u, const cuda_layer *L, const ks_layer_weights *w, const ks_model_config *g) {
    const size_t D = g->hidden, F = g->ffn, qd = (size_t)g->n_heads * g->head_dim;
    const size_t kvd = (size_t)g->n_kv_heads * g->head_dim;
    KS_TRY(put_f32(u, L->attn_norm, w->attn_norm, D));
    KS_TRY(put_f32(u, L->ffn_norm, w->ffn_norm, D));
    KS_TRY(put_bf16(u, L->w_qkv, w->wq, qd * D));
    KS_TRY(put_bf16(u, L->w_qkv + qd * D, w->wk, kvd * D));
    KS_TRY(put_bf16(u, L->w_qkv + (qd + kvd) * D, w->wv, kvd * D));
    if (L->b_qkv) {
        KS_TRY(put_bf16(u, L->b_qkv, w->bq, qd));
        KS_TRY(put_bf16(u, L->b_qkv + qd, w->bk, kvd));
        KS_TRY(put_bf16(u, L->b_qkv + qd + kvd, w->bv, kvd));
    }
    KS_TRY(put_bf16(u, L->w_o, w->wo, D * qd));
    if (L->b_o) KS_TRY(put_f32(u, L->b_o, w->bo, D));
    KS_TRY(put_bf16(u, L->w_gu, w->w_gate, F * D));
    KS_TRY(put_bf16(u, L->w_gu + F * D, w->w_up, F * D));
    return put_bf16(u, L->w_down, w->w_down, D * F);
}

static ks_status upload_weights(ks_backend *b) {
    const ks_model *m = b->m;
    const ks_model_config *g = b->cfg;
    uploader u = {.b = b, .stage_floats = (size_t)8 << 20}; /* 32 MiB of fp32 */
    KS_TRY(device_alloc(b, (void **)&u.stage, u.stage_floats * 4, "weight upload staging buffer"));
    ks_status st = KS_OK;
    for (int l = 0; l < b->n_layers && st == KS_OK; l++)
        st = upload_layer(&u, &b->layers[l], &m->layers[l], g);
    if (st == KS_OK && b->embed) st = put_bf16(&u, b->embed, m->embed, (size_t)g->vocab * g->hidden);
    if (st == KS_OK && b->final_norm) st = put_f32(&u, b->final_norm, m->final_norm, g->hidden);
    if (st == KS_OK && b->lm_head && b->lm_head != b->embed)
        st = put_bf16(&u, b->lm_head, m->lm_head, (size_t)g->vocab * g->hidden);
    cudaError_t e = cudaStreamSynchronize(b->stream); /* the staging buffer is in use until here */
    cudaFree(u.stage);
    if (st == KS_OK && e != cudaSuccess)
        st = ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (uploading the weights)", cudaGetErrorString(e));
    return st;
}

/* Uniform random weights: projections and embeddings with standard deviation 0.02 (Hugging Face's
 * initializer_range), biases within +-0.02, norms exactly 1. Each tensor draws from its own seed. */
typedef struct filler {
    ks_backend *b;
    uint64_t seed;
} filler;

static ks_status fill(filler *f, void *p, ks_dtype t, size_t n, float lo, float hi) {
    f->seed += 0x9e3779b97f4a7c15ull;
    return p ? ks_cuda_fill_uniform(p, t, (int64_t)n, lo, hi, f->seed, f->b->stream) : KS_OK;
}

static ks_status fill_weights(ks_backend *b, uint64_t seed) {
    const ks_model_config *g = b->cfg;
    const size_t D = g->hidden, F = g->ffn, qd = (size_t)g->n_heads * g->head_dim;
    const float a = 0.02f * 1.7320508f; /* uniform on [-a, a] has standard deviation 0.02 */
    filler f = {b, seed};
    for (int l = 0; l < b->n_layers; l++) {
        const cuda_layer *L = &b->layers[l];
        KS_TRY(fill(&f, L->attn_norm, KS_DTYPE_F32, D, 1.0f, 1.0f));
        KS_TRY(fill(&f, L->ffn_norm, KS_DTYPE_F32, D, 1.0f, 1.0f));
        KS_TRY(fill(&f, L->w_qkv, KS_DTYPE_BF16, (size_t)b->qkv_width * D, -a, a));
        KS_TRY(fill(&f, L->b_qkv, KS_DTYPE_BF16, (size_t)b->qkv_width, -0.02f, 0.02f));
        KS_TRY(fill(&f, L->w_o, KS_DTYPE_BF16, D * qd, -a, a));
        KS_TRY(fill(&f, L->b_o, KS_DTYPE_F32, D, -0.02f, 0.02f));
        KS_TRY(fill(&f, L->w_gu, KS_DTYPE_BF16, 2 * F * D, -a, a));
        KS_TRY(fill(&f, L->w_down, KS_DTYPE_BF16, D * F, -a, a));
    }
    KS_TRY(fill(&f, b->embed, KS_DTYPE_BF16, (size_t)g->vocab * D, -a, a));
    KS_TRY(fill(&f, b->final_norm, KS_DTYPE_F32, D, 1.0f, 1.0f));
    if (b->lm_head != b->embed) KS_TRY(fill(&f, b->lm_head, KS_DTYPE_BF16, (size_t)g->vocab * D, -a, a));
    return KS_OK;
}

/* ---- init and free --------------------------------------------------------------------------------------- */

void ks_cuda_backend_destroy(ks_backend *b) {
    if (!b) return;
    for (int i = 1; i < b->n_slots; i++) ks_cuda_backend_destroy(b->slots[i]); /* on the front's stream */
    free(b->slots);
    if (b->stream) cudaStreamSynchronize(b->stream);
    ks_cuda_methods_free(b);
    if (b->graph) cudaGraphExecDestroy(b->graph);
    if (!b->shares) ks_cuda_gemm_free(b->gemm);
    if (!b->shares) cudaFree(b->weights);
    cudaFree(b->arena);
    if (b->stream && !b->shares) cudaStreamDestroy(b->stream);
    free(b->layers);
    free(b->lens_on_device);
    free(b->host_starts);
    ks_kvcache_free(&b->cache);
    free(b);
}

/* Everything that is not a device block: the stream, cuBLASLt (the front's for a further slot), the cache
 * bookkeeping, host staging. */
static ks_status create_host_side(ks_backend *b, const ks_backend *front) {
    const ks_model_config *g = b->cfg;
    const size_t heads = (size_t)b->n_layers * g->n_kv_heads;
    if (front) {
        b->stream = front->stream, b->gemm = front->gemm;
    } else {
        CUDA_CHECK(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
        KS_TRY(ks_cuda_gemm_init(&b->gemm, (size_t)32 << 20));
    }
    KS_TRY(ks_kvcache_init(&b->cache, b->m->first_layer, b->n_layers, g->n_kv_heads, g->head_dim, b->cap, b->own_cap,
                           0));
    b->layers = ks_calloc(b->n_layers ? b->n_layers : 1, sizeof *b->layers, "cuda backend layer table");
    b->lens_on_device = ks_calloc(heads ? heads : 1, sizeof(int32_t), "cuda backend lengths");
    b->host_starts = ks_calloc(heads ? heads : 1, sizeof(int32_t), "cuda backend window starts");
    if (!b->layers || !b->lens_on_device || !b->host_starts) return KS_ERR_NOMEM;
    KS_TRY(ks_cuda_methods_init(b));
    b->lse_layer = -1;
    for (int l = b->m->first_layer; l < b->m->last_layer; l++)
        if (ks_cuda_layer_window(g, l) > 0) b->any_window = 1;
    return KS_OK;
}

/* What a further slot takes from the front: the device weights (the layer table's pointers, not a copy) and the
 * residual stream (at least as many rows as the slot's own would hold). */
static void share_front(ks_backend *b, const ks_backend *front) {
    memcpy(b->layers, front->layers, sizeof *b->layers * (size_t)b->n_layers);
    b->embed = front->embed, b->lm_head = front->lm_head, b->final_norm = front->final_norm;
    b->weights = front->weights, b->weight_bytes = front->weight_bytes;
    b->x_base = front->x_base;
}

/* b's buffers; the weights its own (front NULL: uploaded or filled by the caller) or front's. */
static ks_status create(ks_backend *b, const ks_backend *front) {
    const ks_model_config *g = b->cfg;
    struct cudaDeviceProp prop;
    KS_TRY(device_check(&prop));
    if (g->head_dim % 2 || g->head_dim > 256)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: head_dim %d is not supported by the cuda backend (even, <= 256)",
                       b->m->source ? b->m->source : "model", g->head_dim);
    b->shares = front != NULL;
    KS_TRY(create_host_side(b, front));

    carver w = {0}, a = {0};
    if (front) share_front(b, front);
    else layout_weights(b, &w);
    layout_arena(b, &a);
    if (!front) KS_TRY(device_alloc(b, &b->weights, w.off, "weights (bf16)"));
    KS_TRY(device_alloc(b, &b->arena, a.off, front ? "a further sequence slot's activations and KV cache (--batch)"
                                                   : "activations and KV cache"));
    if (!front) b->weight_bytes = w.off;
    b->arena_bytes = a.off;
    w = (carver){b->weights, 0};
    a = (carver){b->arena, 0};
    if (!front) layout_weights(b, &w);
    layout_arena(b, &a);

    float inv_freq[KS_MAX_ROPE_FACTORS];
    ks_rope_inv_freq(g, inv_freq);
    CUDA_CHECK(cudaMemcpyAsync(b->inv_freq, inv_freq, sizeof(float) * (g->head_dim / 2), cudaMemcpyHostToDevice,
                               b->stream));
    const size_t heads = (size_t)b->n_layers * g->n_kv_heads;
    CUDA_CHECK(cudaMemsetAsync(b->lens, 0, heads * 4, b->stream));
    CUDA_CHECK(cudaMemsetAsync(b->starts, 0, heads * 4, b->stream));
    CUDA_CHECK(cudaMemsetAsync(b->norm_done, 0, sizeof(unsigned), b->stream));
    return KS_OK;
}

/* One instance with p's shape and `batch` slots' worth of batch rows (max_batch rows of logits; buffers of at
 * least max_batch rows), its buffers created around the front's weights (NULL: its own, not yet filled). */
static ks_status create_instance(ks_backend **out, const ks_model *m, const ks_backend_params *p, int batch,
                                 const ks_backend *front) {
    const ks_model_config *g = &m->cfg;
    ks_backend *b = ks_calloc(1, sizeof *b, "cuda backend");
    *out = b;
    if (!b) return KS_ERR_NOMEM;
    b->cur = b;
    b->m = m;
    b->cfg = g;
    b->n_layers = m->last_layer - m->first_layer;
    b->max_chunk = p->max_chunk > batch ? p->max_chunk : batch;
    b->logit_rows = ks_backend_logit_rows(batch);
    b->gpu_share = p->gpu_share;
    b->sparse_block = p->sparse_block, b->sparse_whole_prompt = p->sparse_whole_prompt;
    b->cap = p->max_ctx;
    b->own_cap = p->kv_rows > 0 && p->kv_rows < p->max_ctx ? p->kv_rows : p->max_ctx;
    b->packed_rows = p->packed_rows;
    b->x_rows = b->own_cap < b->cap && b->cap > b->max_chunk ? b->cap : b->max_chunk;
    b->qkv_width = (g->n_heads + 2 * g->n_kv_heads) * g->head_dim;
    return create(b, front);
}

/* The front's slot table: itself, then max_batch - 1 instances sharing its weights. */
static ks_status create_slots(ks_backend *b, const ks_backend_params *p) {
    b->n_slots = p->max_batch > 1 ? p->max_batch : 1;
    b->slots = ks_calloc((size_t)b->n_slots, sizeof *b->slots, "cuda backend sequence slots");
    if (!b->slots) return KS_ERR_NOMEM;
    b->slots[0] = b;
    for (int i = 1; i < b->n_slots; i++) KS_TRY(create_instance(&b->slots[i], b->m, p, 1, b));
    return KS_OK;
}

ks_status ks_cuda_backend_create(ks_backend **out, const ks_model *m, const ks_backend_params *p, int random,
                                 uint64_t seed) {
    KS_ASSERT(p->max_ctx > 0 && p->max_chunk > 0 && m->last_layer > m->first_layer);
    *out = NULL;
    ks_backend *b;
    ks_status st = create_instance(&b, m, p, p->max_batch, NULL);
    if (st == KS_OK) st = random ? fill_weights(b, seed) : upload_weights(b);
    cudaError_t e = st == KS_OK ? cudaStreamSynchronize(b->stream) : cudaSuccess;
    if (e != cudaSuccess) st = ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (setting up the weights)", cudaGetErrorString(e));
    if (st == KS_OK) st = create_slots(b, p);
    if (st != KS_OK) {
        ks_cuda_backend_destroy(b);
        return st;
    }
    *out = b;
    return KS_OK;
}

#endif /* KS_HAVE_CUDA */
