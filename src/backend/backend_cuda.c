/* backend_cuda.c — the "cuda" backend's ops (backend/backend.h) over kernels/cuda, and its decode step; memory
 * and init in backend_cuda_mem.c, the instance in backend_cuda_impl.h.
 *
 * Numerics: bf16 weights, KV cache and activations between ops; fp32 residual stream, logits and every
 * accumulation, so results match the fp32 CPU backend to bf16 tolerance. Every op only enqueues work on the
 * backend's stream; the host waits only where data comes back (argmax, logits_read, hidden_read).
 *
 * Fused projections: the q|k|v and gate|up weights are stacked, so linear(Q) computes Q, K and V in one GEMM
 * and linear(GATE) computes GATE and UP; the linear(K), linear(V), linear(UP) calls that immediately follow
 * (same layer, rows and input) find their output already there and return. Any other op in between cancels
 * that, so every sequence of ops still computes exactly what backend.h says. Likewise rope only records its
 * arguments: the next op issues it first, and kv_append of a decode token fuses rotation, append and the
 * length update into one launch. In the same way a one-token linear call is held back by one op (`held`): a
 * residual projection (o_proj, down_proj) followed by rmsnorm runs as one GEMV whose last block writes the
 * norm, and gate|up followed by swiglu as one GEMV with the SwiGLU in its epilogue; any other next op gets
 * the held call issued unfused first. With the kernels' programmatic dependent launches (common.cuh), a
 * decode layer is seven kernels, each launched while the one before it finishes.
 *
 * Decode step (decode_step): positions come from `pos` and lengths from `lens` (device memory), window starts
 * from `starts`; graph_begin uploads the step's position and starts before replaying, so one capture
 * serves every later step, also after ks_forward_reset, while the lengths stay within the row bound the
 * decode attention's grid was sized for (decode_bound: a power of two, so a cache compressed to a few
 * thousand rows decodes on a grid for those, not for the capacity); a step whose bound differs drops the
 * graph and the next steps capture a new one.
 */
#ifdef KS_HAVE_CUDA

#include <math.h>
#include <string.h>

#include "backend/backend_cuda.h"
#include "backend/backend_cuda_impl.h"
#include "backend/cuda_check.h"

static const cuda_layer *layer_of(const ks_backend *b, int layer) {
    KS_ASSERT(layer >= b->m->first_layer && layer < b->m->last_layer);
    return &b->layers[layer - b->m->first_layer];
}

/* rope's work, deferred to the next op (kv_append of a decode token fuses it). */
static ks_status rope_now(ks_backend *b, int n, int pos0) {
    const ks_model_config *c = b->cfg;
    /* a captured decode step reads the position graph_begin uploaded */
    if (!b->capturing) KS_TRY(ks_cuda_positions(b->pos, pos0, n, b->stream));
    /* Q and K heads are adjacent in each q|k|v row: one launch rotates both */
    return ks_cuda_rope(b->qkv, KS_DTYPE_BF16, b->qkv_width, b->pos, n, c->n_heads + c->n_kv_heads, c->head_dim,
                        b->inv_freq, b->stream);
}

static ks_status linear_now(ks_backend *b, int layer, ks_weight w, ks_buf in, ks_buf out, int n, int accumulate);
static void projection(const ks_backend *b, const cuda_layer *L, ks_weight w, const ks_bf16 **W, const void **bias,
                       int *in, int *out);

/* The held linear call, unfused. */
static ks_status issue_held(ks_backend *b) {
    int kind = b->held.kind;
    b->held.kind = 0;
    if (kind == CUDA_HELD_GATE_UP) return linear_now(b, b->held.layer, KS_W_GATE, KS_BUF_XN, KS_BUF_GATE, 1, 0);
    if (kind == CUDA_HELD_RESIDUAL) return linear_now(b, b->held.layer, b->held.w, b->held.in, KS_BUF_X, 1, 1);
    return KS_OK;
}

/* Every op starts here (linear after its skip check): projections computed ahead stay valid only for the
 * linear calls that immediately follow their fused GEMM, and held or deferred work is issued before anything
 * else runs, in the order it was asked for. */
ks_status ks_cuda_op_begin(ks_backend *b) {
    KS_TRY(issue_held(b));
    b->ahead.mask = 0; /* after issue_held: a held gate|up issued now computes nothing the next op may skip */
    if (!b->rope.pending) return KS_OK;
    b->rope.pending = 0;
    return rope_now(b, b->rope.n, b->rope.pos0);
}

/* The held residual projection's GEMV with norm weight `norm` fused after it (xn = rmsnorm(X row 0) * norm);
 * 0 in *fused when nothing of that kind is held (the caller then runs its norm alone). */
static ks_status fuse_residual_norm(ks_backend *b, const float *norm, int *fused) {
    *fused = b->held.kind == CUDA_HELD_RESIDUAL;
    if (!*fused) return KS_OK;
    b->held.kind = 0;
    KS_TRY(ks_cuda_op_begin(b));
    const cuda_layer *L = layer_of(b, b->held.layer);
    const ks_bf16 *W;
    const void *bias;
    int n_in, n_out;
    projection(b, L, b->held.w, &W, &bias, &n_in, &n_out);
    return ks_cuda_gemv_norm(b->x, b->view[b->held.in].p, W, bias, n_in, n_out, 1.0f, b->xn, norm, b->cfg->rms_eps,
                             b->norm_done, b->stream);
}

ks_status ks_cuda_wait_stream(cudaStream_t s, const char *what) {
    cudaError_t e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) return ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (%s)", cudaGetErrorString(e), what);
    return KS_OK;
}

ks_status ks_cuda_wait_main(ks_backend *b, const char *what) {
    KS_TRY(ks_cuda_wait_stream(b->stream, what));
    b->sync_epoch++;
    return KS_OK;
}

/* The bookkeeping's lengths go to the device when they differ from what it holds (after ks_kvcache_reset, or
 * a host-side change): checked at the start of every forward call. */
static ks_status sync_lens(ks_backend *b) {
    size_t bytes = sizeof(int32_t) * b->n_layers * b->cfg->n_kv_heads;
    if (!memcmp(b->lens_on_device, b->cache.len, bytes)) return KS_OK;
    memcpy(b->lens_on_device, b->cache.len, bytes);
    /* a pageable source is consumed before the call returns */
    CUDA_CHECK(cudaMemcpyAsync(b->lens, b->lens_on_device, bytes, cudaMemcpyHostToDevice, b->stream));
    return KS_OK;
}

/* Records n rows appended to every head of layer index l (host bookkeeping and the device-length mirror). */
static void commit_rows(ks_backend *b, int l, int n, int pos0) {
    ks_kvcache_commit(&b->cache, l, n, pos0);
    for (int h = 0; h < b->cfg->n_kv_heads; h++) b->lens_on_device[l * b->cfg->n_kv_heads + h] += n;
}

/* Window starts of the decode query at qpos for layer index l (into host_starts), then to the device. */
ks_status ks_cuda_upload_starts(ks_backend *b, int l, int qpos) {
    const int Hk = b->cfg->n_kv_heads, win = ks_cuda_layer_window(b->cfg, b->m->first_layer + l);
    int32_t *s = b->host_starts + (size_t)l * Hk;
    for (int h = 0; h < Hk; h++) s[h] = ks_kvcache_window_start(&b->cache, l, h, qpos, win);
    CUDA_CHECK(cudaMemcpyAsync(b->starts + (size_t)l * Hk, s, sizeof(int32_t) * Hk, cudaMemcpyHostToDevice,
                               b->stream));
    return KS_OK;
}

/* ---- data in and out ------------------------------------------------------------------------------------- */

static ks_status cuda_embed(ks_backend *b, const int32_t *tokens, int n) {
    KS_TRY(ks_cuda_op_begin(b));
    KS_ASSERT(b->embed && n <= b->max_chunk);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= b->cfg->vocab)
            return ks_fail(KS_ERR_RANGE, "%s: token id %d is outside the model's vocabulary (vocab_size %d); "
                                         "is the tokenizer from another model?",
                           b->m->source, tokens[t], b->cfg->vocab);
    KS_TRY(ks_cuda_apply_drops(b, -1));
    KS_TRY(sync_lens(b));
    if (n == 1) /* a decode token: a kernel argument is cheaper than a host copy */
        KS_TRY(ks_cuda_positions(b->tokens, tokens[0], 1, b->stream));
    else
        CUDA_CHECK(cudaMemcpyAsync(b->tokens, tokens, sizeof(int32_t) * n, cudaMemcpyHostToDevice, b->stream));
    return ks_cuda_embed(b->x, KS_DTYPE_F32, b->tokens, n, b->embed, b->cfg->hidden, b->stream);
}

static ks_status cuda_hidden_write(ks_backend *b, const float *host, int n) {
    KS_TRY(ks_cuda_op_begin(b));
    KS_ASSERT(n <= b->max_chunk);
    KS_TRY(ks_cuda_apply_drops(b, -1));
    KS_TRY(sync_lens(b));
    CUDA_CHECK(cudaMemcpyAsync(b->x, host, sizeof(float) * n * b->cfg->hidden, cudaMemcpyHostToDevice, b->stream));
    return KS_OK;
}

static ks_status cuda_hidden_read(ks_backend *b, float *host, int n) {
    KS_TRY(ks_cuda_op_begin(b));
    KS_ASSERT(n <= b->max_chunk);
    CUDA_CHECK(cudaMemcpyAsync(host, b->x, sizeof(float) * n * b->cfg->hidden, cudaMemcpyDeviceToHost, b->stream));
    return ks_cuda_wait_main(b, "reading the hidden states");
}

static ks_status cuda_residual_at(ks_backend *b, int row0) {
    KS_TRY(ks_cuda_op_begin(b)); /* held or deferred work reads and writes the X it was asked for */
    KS_ASSERT(row0 >= 0 && (row0 == 0 || row0 < b->x_rows)); /* callers keep row0 + n <= x_rows */
    b->x = b->x_base + (size_t)row0 * b->cfg->hidden;
    b->view[KS_BUF_X].p = b->x;
    return KS_OK;
}

ks_status ks_cuda_move_layer_rows(ks_backend *b, int l, size_t from, int from_stride, cudaStream_t s) {
    const int Hk = b->cfg->n_kv_heads;
    const size_t d = b->cfg->head_dim, to = ks_kvcache_offset(&b->cache, l);
    const int32_t *len = ks_kvcache_len(&b->cache, l);
    int rows = 0;
    for (int h = 0; h < Hk; h++) rows = len[h] > rows ? len[h] : rows;
    if (!rows) return KS_OK;
    const size_t spitch = sizeof(ks_bf16) * from_stride * d;
    const size_t dpitch = sizeof(ks_bf16) * ks_kvcache_stride(&b->cache, l) * d;
    CUDA_CHECK(cudaMemcpy2DAsync(b->kc + to, dpitch, b->kc + from, spitch, sizeof(ks_bf16) * rows * d, Hk,
                                 cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaMemcpy2DAsync(b->vc + to, dpitch, b->vc + from, spitch, sizeof(ks_bf16) * rows * d, Hk,
                                 cudaMemcpyDeviceToDevice, s));
    return KS_OK;
}

/* ---- layer ops ------------------------------------------------------------------------------------------- */

static ks_status cuda_rmsnorm(ks_backend *b, int layer, ks_weight w, int n) {
    const cuda_layer *L = layer_of(b, layer);
    KS_ASSERT((w == KS_W_ATTN_NORM || w == KS_W_FFN_NORM) && n <= b->max_chunk);
    const float *norm = w == KS_W_ATTN_NORM ? L->attn_norm : L->ffn_norm;
    int fused = 0;
    if (n == 1) KS_TRY(fuse_residual_norm(b, norm, &fused)); /* a held residual holds one row */
    if (fused) return KS_OK;
    KS_TRY(ks_cuda_op_begin(b));
    return ks_cuda_rmsnorm(b->xn, KS_DTYPE_BF16, b->x, norm, n, b->cfg->hidden, b->cfg->rms_eps, b->stream);
}

/* The rows of the stacked weights that projection w uses, its bias (of its standard output's type) and
 * its sizes. */
static void projection(const ks_backend *b, const cuda_layer *L, ks_weight w, const ks_bf16 **W, const void **bias,
                       int *in, int *out) {
    const ks_model_config *c = b->cfg;
    const size_t D = c->hidden, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    const ks_bf16 *bq = L->b_qkv;
    switch (w) {
    case KS_W_Q: *W = L->w_qkv, *bias = bq, *in = (int)D, *out = (int)qd; break;
    case KS_W_K: *W = L->w_qkv + qd * D, *bias = bq ? bq + qd : NULL, *in = (int)D, *out = (int)kvd; break;
    case KS_W_V:
        *W = L->w_qkv + (qd + kvd) * D, *bias = bq ? bq + qd + kvd : NULL, *in = (int)D, *out = (int)kvd;
        break;
    case KS_W_O: *W = L->w_o, *bias = L->b_o, *in = (int)qd, *out = (int)D; break;
    case KS_W_GATE: *W = L->w_gu, *bias = NULL, *in = (int)D, *out = c->ffn; break;
    case KS_W_UP: *W = L->w_gu + (size_t)c->ffn * D, *bias = NULL, *in = (int)D, *out = c->ffn; break;
    case KS_W_DOWN: *W = L->w_down, *bias = NULL, *in = c->ffn, *out = (int)D; break;
    default: KS_ASSERT(!"linear: not a projection weight");
    }
}

/* The buffer a projection writes in forward.c's recipe (the fused GEMMs fill exactly these). */
static ks_buf standard_out(ks_weight w) {
    return w == KS_W_K ? KS_BUF_K : w == KS_W_V ? KS_BUF_V : w == KS_W_UP ? KS_BUF_UP : KS_BUF_COUNT;
}

static ks_status cuda_linear(ks_backend *b, int layer, ks_weight w, ks_buf in, ks_buf out, int n, int accumulate) {
    layer_of(b, layer); /* range check */
    KS_ASSERT(n > 0 && n <= b->max_chunk);
    unsigned bit = 1u << w, mask = b->ahead.mask;
    if ((mask & bit) && b->ahead.layer == layer && b->ahead.n == n && in == KS_BUF_XN && out == standard_out(w) &&
        !accumulate) {
        b->ahead.mask = mask & ~bit; /* computed (or held to be computed) by the fused GEMM just asked for */
        return KS_OK;
    }
    KS_TRY(ks_cuda_op_begin(b));
    if (n == 1 && w == KS_W_GATE && in == KS_BUF_XN && out == KS_BUF_GATE && !accumulate) {
        b->held.kind = CUDA_HELD_GATE_UP, b->held.layer = layer; /* swiglu may follow */
        b->ahead.layer = layer, b->ahead.n = 1, b->ahead.mask = 1u << KS_W_UP;
        return KS_OK;
    }
    if (n == 1 && accumulate && out == KS_BUF_X && (w == KS_W_O || w == KS_W_DOWN)) {
        b->held.kind = CUDA_HELD_RESIDUAL, b->held.layer = layer, b->held.w = w, b->held.in = in; /* a norm may follow */
        return KS_OK;
    }
    return linear_now(b, layer, w, in, out, n, accumulate);
}

/* linear's work, issued now: the fused q|k|v and gate|up GEMMs (marking the projections they computed ahead)
 * or one projection. */
static ks_status linear_now(ks_backend *b, int layer, ks_weight w, ks_buf in, ks_buf out, int n, int accumulate) {
    const cuda_layer *L = layer_of(b, layer);
    const ks_model_config *c = b->cfg;
    const cuda_view *x = &b->view[in], *y = &b->view[out];
    if (in == KS_BUF_XN && !accumulate &&
        ((w == KS_W_Q && out == KS_BUF_Q) || (w == KS_W_GATE && out == KS_BUF_GATE))) {
        int qkv = w == KS_W_Q;
        const ks_bf16 *W = qkv ? L->w_qkv : L->w_gu;
        int width = qkv ? b->qkv_width : 2 * c->ffn;
        KS_TRY(ks_cuda_gemm_run_ld(b->gemm, y->p, y->ld, KS_DTYPE_BF16, x->p, x->ld, W, qkv ? L->b_qkv : NULL, n,
                                   c->hidden, width, 0.0f, b->stream));
        b->ahead.layer = layer, b->ahead.n = n;
        b->ahead.mask = qkv ? (1u << KS_W_K) | (1u << KS_W_V) : 1u << KS_W_UP;
        return KS_OK;
    }
    const ks_bf16 *W;
    const void *bias;
    int n_in, n_out;
    projection(b, L, w, &W, &bias, &n_in, &n_out);
    KS_ASSERT(x->type == KS_DTYPE_BF16 && x->width == n_in && y->width == n_out);
    /* biases are stored in the type of their projection's usual output */
    KS_ASSERT(!bias || (y->type == KS_DTYPE_F32) == (w == KS_W_O));
    return ks_cuda_gemm_run_ld(b->gemm, y->p, y->ld, y->type, x->p, x->ld, W, bias, n, n_in, n_out,
                               accumulate ? 1.0f : 0.0f, b->stream);
}

/* Deferred to the next op, which issues it first; kv_append of one decode token fuses it. */
static ks_status cuda_rope(ks_backend *b, int n, int pos0) {
    KS_TRY(ks_cuda_op_begin(b));
    KS_ASSERT(n <= b->max_chunk && (!b->capturing || n == 1));
    b->rope.n = n, b->rope.pos0 = pos0, b->rope.pending = 1;
    return KS_OK;
}

/* Budget mode: layer index l moves to a free prefill slot (its rows so far copied there), after the stream
 * that last moved rows out of that slot. */
static ks_status take_slot(ks_backend *b, int layer, int l) {
    KS_TRY(ks_cuda_op_begin(b));
    const size_t from = ks_kvcache_offset(&b->cache, l);
    int slot = ks_kvcache_take_slot(&b->cache, l);
    if (slot < 0) return ks_kvcache_no_slot(&b->cache, layer);
    CUDA_CHECK(cudaStreamWaitEvent(b->stream, b->slot_ev[slot], 0));
    return ks_cuda_move_layer_rows(b, l, from, b->own_cap, b->stream);
}

static ks_status cuda_kv_append(ks_backend *b, int layer, int n, int pos0) {
    layer_of(b, layer); /* range check */
    const ks_model_config *c = b->cfg;
    const int l = layer - b->m->first_layer, Hk = c->n_kv_heads;
    KS_TRY(ks_cuda_apply_drops(b, l)); /* the layer's last step's eviction, before this row is counted */
    if (ks_kvcache_needs_slot(&b->cache, l, n)) KS_TRY(take_slot(b, layer, l));
    ks_bf16 *kl = ks_cuda_layer_k(b, l), *vl = ks_cuda_layer_v(b, l);
    const int stride = ks_kvcache_stride(&b->cache, l);
    int32_t *lens = b->lens + (size_t)l * Hk;
    if (n == 1 && b->rope.pending && b->rope.n == 1) { /* a decode token: rope, append, lengths in one launch */
        b->rope.pending = 0, b->ahead.mask = 0;
        if (!b->capturing) KS_TRY(ks_cuda_positions(b->pos, b->rope.pos0, 1, b->stream));
        KS_TRY(ks_cuda_rope_append_one(b->qkv, kl, vl, b->pos, lens, c->n_heads, Hk, c->head_dim, stride,
                                       b->inv_freq, b->stream));
        commit_rows(b, l, n, pos0);
        return KS_OK;
    }
    KS_TRY(ks_cuda_op_begin(b));
    KS_TRY(ks_cuda_kv_append(kl, vl, b->view[KS_BUF_K].p, b->view[KS_BUF_V].p, b->qkv_width, lens, 0, n, Hk,
                             c->head_dim, stride, b->stream));
    KS_TRY(ks_cuda_lens_add(lens, Hk, n, b->stream));
    commit_rows(b, l, n, pos0);
    return KS_OK;
}

static ks_status cuda_attention_prefill(ks_backend *b, int layer, int n, int pos0) {
    KS_TRY(ks_cuda_op_begin(b));
    const ks_model_config *c = b->cfg;
    const int l = layer - b->m->first_layer;
    KS_ASSERT(l >= 0 && l < b->n_layers && ks_kvcache_is_dense(&b->cache, l, pos0 + n));
    const int window = ks_cuda_layer_window(c, layer); /* the scoring op's softmax is causal without a window */
    float *lse = window ? NULL : b->att_lse;
    b->lse_layer = lse ? layer : -1, b->lse_pos0 = pos0, b->lse_n = n;
    return ks_cuda_attention_prefill(b->att, b->view[KS_BUF_ATT].ld, b->qkv, b->qkv_width, ks_cuda_layer_k(b, l),
                                     ks_cuda_layer_v(b, l), n, pos0 + n, ks_kvcache_stride(&b->cache, l), c->n_heads,
                                     c->n_kv_heads, c->head_dim, pos0, window,
                                     ks_cuda_attn_scale(c), lse, b->stream);
}

/* The row bound of the decode attention's grid: the smallest power of two >= 256 and >= every held head's
 * length + extra (the rows a step is about to append), at most the capacity. */
static int decode_bound(const ks_backend *b, int extra) {
    int mx = 0, bound = 256;
    for (size_t i = 0; i < (size_t)b->n_layers * b->cfg->n_kv_heads; i++) mx = b->cache.len[i] > mx ? b->cache.len[i] : mx;
    /* the capacity, not the layers' own rows (kv_rows): the grid, and so the sums' order, must not depend on
     * how the cache is sized, so that a budget-sized cache decodes the same tokens as the full one */
    while (bound < mx + extra && bound < b->cap) bound *= 2;
    return bound < b->cap ? bound : b->cap;
}

static ks_status cuda_attention_decode(ks_backend *b, int layer, int qpos) {
    KS_TRY(ks_cuda_op_begin(b));
    const ks_model_config *c = b->cfg;
    const int l = layer - b->m->first_layer, Hk = c->n_kv_heads;
    KS_ASSERT(l >= 0 && l < b->n_layers);
    const int32_t *starts = NULL;
    if (ks_cuda_layer_window(c, layer) > 0) {
        /* a captured step reads the starts graph_begin uploaded for every windowed layer */
        if (!b->capturing) KS_TRY(ks_cuda_upload_starts(b, l, qpos));
        starts = b->starts + (size_t)l * Hk;
    }
    /* within a graph step one bound for every layer (the graph's), else this step's lengths */
    const int max_len = b->step_bound ? b->step_bound : decode_bound(b, 0);
    return ks_cuda_attention_decode(b->att, b->qkv, ks_cuda_layer_k(b, l), ks_cuda_layer_v(b, l),
                                    b->lens + (size_t)l * Hk, starts, ks_kvcache_stride(&b->cache, l), c->n_heads, Hk,
                                    c->head_dim, ks_cuda_attn_scale(c), max_len,
                                    b->decode_scratch, b->stream);
}

static ks_status cuda_swiglu(ks_backend *b, int n) {
    KS_ASSERT(n <= b->max_chunk);
    const int F = b->cfg->ffn;
    if (n == 1 && b->held.kind == CUDA_HELD_GATE_UP) { /* the held gate|up GEMV with the SwiGLU in its epilogue */
        b->held.kind = 0;
        KS_TRY(ks_cuda_op_begin(b));
        return ks_cuda_gemv_swiglu(b->gu, b->gu + F, b->xn, layer_of(b, b->held.layer)->w_gu, b->cfg->hidden, F,
                                   b->stream);
    }
    KS_TRY(ks_cuda_op_begin(b));
    /* in place: the result replaces GATE, as backend.h specifies */
    return ks_cuda_swiglu(b->gu, b->gu, b->gu + F, n, F, 2 * (int64_t)F, 2 * (int64_t)F, b->stream);
}

/* ---- the head ------------------------------------------------------------------------------------------- */

static ks_status cuda_logits(ks_backend *b, int row0, int n) {
    const ks_model_config *c = b->cfg;
    KS_ASSERT(b->lm_head && b->final_norm && n <= KS_BACKEND_MAX_LOGIT_ROWS && row0 + n <= b->max_chunk);
    int fused = 0;
    if (row0 == 0 && n == 1) KS_TRY(fuse_residual_norm(b, b->final_norm, &fused));
    KS_TRY(ks_cuda_op_begin(b));
    if (!fused)
        KS_TRY(ks_cuda_rmsnorm(b->xn, KS_DTYPE_BF16, b->x + (size_t)row0 * c->hidden, b->final_norm, n, c->hidden,
                               c->rms_eps, b->stream));
    return ks_cuda_gemm_run(b->gemm, b->logits, KS_DTYPE_F32, b->xn, b->lm_head, NULL, n, c->hidden, c->vocab, 0.0f,
                            b->stream);
}

static ks_status cuda_argmax(ks_backend *b, int n, int32_t *ids) {
    KS_TRY(ks_cuda_op_begin(b));
    KS_ASSERT(n <= KS_BACKEND_MAX_LOGIT_ROWS);
    KS_TRY(ks_cuda_argmax(b->ids, b->logits, n, b->cfg->vocab, b->argmax_scratch, b->stream));
    CUDA_CHECK(cudaMemcpyAsync(ids, b->ids, sizeof(int32_t) * n, cudaMemcpyDeviceToHost, b->stream));
    return ks_cuda_wait_main(b, "the forward pass");
}

static ks_status cuda_logits_read(ks_backend *b, int n, float *host) {
    KS_TRY(ks_cuda_op_begin(b));
    KS_ASSERT(n <= KS_BACKEND_MAX_LOGIT_ROWS);
    CUDA_CHECK(cudaMemcpyAsync(host, b->logits, sizeof(float) * n * b->cfg->vocab, cudaMemcpyDeviceToHost,
                               b->stream));
    return ks_cuda_wait_main(b, "reading the logits");
}

static ks_kvcache *cuda_kvcache(ks_backend *b) {
    (void)ks_cuda_apply_drops(b, -1); /* a failed wait is the device's error, reported by the next op */
    return &b->cache;
}

/* ---- decode graph ---------------------------------------------------------------------------------------- */

/* Before a graph-served step's layers: replays the captured step (*replayed = 1: the layers are enqueued and
 * the cache bookkeeping committed), or lets the layers be issued, capturing them from the second step on. */
static ks_status graph_begin(ks_backend *b, int qpos, int hooked, int *replayed) {
    KS_TRY(ks_cuda_op_begin(b));
    *replayed = 0;
    KS_ASSERT(!b->capturing);
    KS_TRY(ks_cuda_apply_drops(b, -1));
    /* what the step's kernels read from device memory: its position (set by a kernel argument, not a host
     * copy) and the window starts */
    KS_TRY(ks_cuda_positions(b->pos, qpos, 1, b->stream));
    for (int l = 0; b->any_window && l < b->n_layers; l++)
        if (ks_cuda_layer_window(b->cfg, b->m->first_layer + l) > 0) KS_TRY(ks_cuda_upload_starts(b, l, qpos));
    const int bound = decode_bound(b, 1);
    /* sized for other lengths, or with another method's decode ops (or another sequence's): capture anew */
    if (b->graph && (bound != b->graph_bound || hooked != b->graph_hooked ||
                     (hooked && b->graph_sequence != b->cache.sequence))) {
        cudaGraphExecDestroy(b->graph);
        b->graph = NULL;
        b->decode_steps = 0;
    }
    if (b->graph) {
        for (int l = 0; l < b->n_layers; l++) commit_rows(b, l, 1, qpos);
        CUDA_CHECK(cudaGraphLaunch(b->graph, b->stream));
        for (int l = 0; l < b->n_layers; l++)
            if (b->graph_evicts[l]) b->drop_pending[l] = 1, b->drop_epoch[l] = b->sync_epoch;
        *replayed = 1;
        return KS_OK;
    }
    /* the first step runs eagerly, so that first-call set-up (kernel attributes, plans) stays out of the
     * capture; the second is captured */
    b->step_bound = bound;
    if (b->decode_steps++ == 0) return KS_OK;
    CUDA_CHECK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
    b->capturing = 1;
    b->graph_bound = bound;
    b->graph_sequence = b->cache.sequence;
    b->graph_hooked = hooked;
    memset(b->graph_evicts, 0, (size_t)b->n_layers); /* decode_evict marks the layers it records */
    return KS_OK;
}

/* After the issued layers (ok = 0: an op failed, the recording is dropped): ends a capture and runs it. */
static ks_status graph_end(ks_backend *b, int ok) {
    ks_status st = ks_cuda_op_begin(b); /* a deferred op still belongs to the step */
    b->step_bound = 0;
    if (!b->capturing) return st;
    b->capturing = 0; /* the capture always ends here, also after a failure */
    ok = ok && st == KS_OK;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(b->stream, &g);
    if (e == cudaSuccess && ok) e = cudaGraphInstantiate(&b->graph, g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        b->graph = NULL;
        return ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (capturing the decode step as a graph)",
                       cudaGetErrorString(e));
    }
    if (!ok) return st; /* the failed step's recording is dropped; the next step captures again */
    /* the captured step has not run yet: run it now */
    CUDA_CHECK(cudaGraphLaunch(b->graph, b->stream));
    return KS_OK;
}

/* Host work between the ops (KS_DECODE_HOST) is not replayed: such a step is issued as it comes. */
static ks_status cuda_decode_step(ks_backend *b, int qpos, ks_decode_kind kind, ks_status (*issue)(void *ctx),
                                  void *ctx) {
    if (kind == KS_DECODE_HOST) return issue(ctx);
    int replayed = 0;
    KS_TRY(graph_begin(b, qpos, kind == KS_DECODE_HOOKED, &replayed));
    if (replayed) return KS_OK;
    ks_status st = issue(ctx);
    ks_status end = graph_end(b, st == KS_OK);
    return st == KS_OK ? end : st;
}

/* ---- the table ------------------------------------------------------------------------------------------- */

static ks_status cuda_init(ks_backend **out, const ks_model *m, const ks_backend_params *p) {
    return ks_cuda_backend_create(out, m, p, 0, 0);
}

ks_status ks_backend_cuda_init_random(ks_backend **out, const ks_model *m, const ks_backend_params *p,
                                      uint64_t seed) {
    return ks_cuda_backend_create(out, m, p, 1, seed);
}

const ks_backend_ops ks_backend_cuda = {
    .name = "cuda",
    .init = cuda_init,
    .free = ks_cuda_backend_destroy,
    .embed = cuda_embed,
    .hidden_write = cuda_hidden_write,
    .hidden_read = cuda_hidden_read,
    .residual_at = cuda_residual_at,
    .rmsnorm = cuda_rmsnorm,
    .linear = cuda_linear,
    .rope = cuda_rope,
    .kv_append = cuda_kv_append,
    .attention_prefill = cuda_attention_prefill,
    .attention_decode = cuda_attention_decode,
    .swiglu = cuda_swiglu,
    .logits = cuda_logits,
    .argmax = cuda_argmax,
    .logits_read = cuda_logits_read,
    .kvcache = cuda_kvcache,
    .kvstore = ks_cuda_kvstore,
    .decode_step = cuda_decode_step,
};

#endif /* KS_HAVE_CUDA */
