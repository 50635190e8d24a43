/* backend_cuda.c — the "cuda" backend's ops (backend/backend.h) over kernels/cuda, and its decode step; memory
 * and init in backend_cuda_mem.c, the instance in backend_cuda_impl.h.
 *
 * Numerics: bf16 weights, KV cache and activations between ops; fp32 residual stream, logits and every
 * accumulation, so results match the fp32 CPU backend to bf16 tolerance. Every op only enqueues work on the
 * backend's stream; the host waits only where data comes back (argmax, logits_read, hidden_read). hidden_recv
 * and hidden_send hand X's device rows and that stream to a transport between GPUs, which enqueues its move
 * there, so the rows a stage sends are complete and the rows it receives land before the next op reads them.
 *
 * Fusions: each layer op of backend.h is as few launches as its work allows. qkv_rope_append is one GEMM over the
 * stacked q|k|v weights, then RoPE and the append (a decode token: RoPE, append and the length update in one
 * launch); gate_up_swiglu is one GEMM over the stacked gate|up weights and the SwiGLU (a decode token: one GEMV
 * with the SwiGLU in its epilogue); out_proj_residual_norm is the residual GEMM accumulating into X and the next
 * norm (a decode token: one GEMV whose last block writes the norm). With the kernels' programmatic dependent
 * launches (common.cuh), a decode layer is seven kernels, each launched while the one before it finishes.
 *
 * Decode step (decode_step): positions come from `pos` and lengths from `lens` (device memory), window starts
 * from `starts`; graph_begin uploads the step's position and starts before replaying, so one capture
 * serves every later step, also after ks_forward_reset, while the lengths stay within the row bound the
 * decode attention's grid was sized for (decode_bound: a power of two, so a cache compressed to a few
 * thousand rows decodes on a grid for those, not for the capacity); a step whose bound differs drops the
 * graph and the next steps capture a new one. A packed part that KIVI's decode hook flushes is served by a
 * graph whose flushes plan on the device (kivi_decode_step).
 *
 * Sequence slots (backend_cuda_impl.h): the table's ops take the front instance and run on its current slot
 * (seq_of). A batched decode step (use_batch) runs eagerly: the embedding, norms, products and logits on the
 * batch's rows in the front's buffers (up to KS_CUDA_GEMV_ROWS rows the decode GEMVs, one read of the weights for
 * them all and each row summed as a token alone; more rows GEMMs, which round otherwise), and per row the RoPE,
 * append and attention of its slot over the slot's own cache with the row bound its step alone would take
 * (batch_step), the slot's q|k|v and attention-output pointers aimed at its row of the front's buffers (aim), so
 * its store's ops read its query there.
 */
#ifdef KS_HAVE_CUDA

#include <math.h>
#include <string.h>

#include "backend/backend_cuda.h"
#include "backend/backend_cuda_impl.h"
#include "backend/cuda_check.h"

/* The instance the front's op runs on: the current slot, or the front itself in a batched step (its products on
 * every row). */
static ks_backend *seq_of(ks_backend *b) { return b->batch ? b : b->cur; }

/* Slot `slot`'s instance of the front b. */
static ks_backend *slot_of(const ks_backend *b, int slot) { return b->slots[slot]; }

/* The layer's device weights (b->layers, indexed as the cache's per-layer arrays are). */
static const cuda_layer *layer_of(const ks_backend *b, int layer) {
    return &b->layers[ks_kvcache_index(&b->cache, layer)];
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

/* Records n rows appended to every head of the layer (host bookkeeping and the device-length mirror). */
static void commit_rows(ks_backend *b, int layer, int n, int pos0) {
    ks_kvcache_commit(&b->cache, layer, n, pos0);
    int32_t *mirror = ks_cuda_layer_heads(b, b->lens_on_device, layer);
    for (int h = 0; h < b->cfg->n_kv_heads; h++) mirror[h] += n;
}

ks_status ks_cuda_upload_starts(ks_backend *b, int layer, int qpos) {
    const int Hk = b->cfg->n_kv_heads, win = ks_cuda_layer_window(b->cfg, layer);
    int32_t *s = ks_cuda_layer_heads(b, b->host_starts, layer);
    for (int h = 0; h < Hk; h++) s[h] = ks_kvcache_window_start(&b->cache, layer, h, qpos, win);
    CUDA_CHECK(cudaMemcpyAsync(ks_cuda_layer_heads(b, b->starts, layer), s, sizeof(int32_t) * Hk,
                               cudaMemcpyHostToDevice, b->stream));
    return KS_OK;
}

/* ---- data in and out ------------------------------------------------------------------------------------- */

/* What every forward call does before its input lands in X (embed, hidden_write, hidden_recv): the
 * decode-time evictions applied to the bookkeeping and the lengths on the device brought up to date. */
static ks_status call_begin(ks_backend *b) {
    KS_TRY(ks_cuda_apply_drops(b, -1));
    return sync_lens(b);
}

static ks_status cuda_embed(ks_backend *b, const int32_t *tokens, int n) {
    for (int i = 0; b->batch && i < n; i++) KS_TRY(call_begin(slot_of(b, b->batch->slots[i])));
    b = seq_of(b);
    KS_ASSERT(b->embed && n <= b->max_chunk);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= b->cfg->vocab)
            return ks_fail(KS_ERR_RANGE, "%s: token id %d is outside the model's vocabulary (vocab_size %d); "
                                         "is the tokenizer from another model?",
                           b->m->source, tokens[t], b->cfg->vocab);
    if (!b->batch) KS_TRY(call_begin(b));
    if (n == 1) /* a decode token: a kernel argument is cheaper than a host copy */
        KS_TRY(ks_cuda_positions(b->tokens, tokens[0], 1, b->stream));
    else
        CUDA_CHECK(cudaMemcpyAsync(b->tokens, tokens, sizeof(int32_t) * n, cudaMemcpyHostToDevice, b->stream));
    return ks_cuda_embed(b->x, KS_DTYPE_F32, b->tokens, n, b->embed, b->cfg->hidden, b->stream);
}

static ks_status cuda_hidden_write(ks_backend *b, const float *host, int n) {
    b = b->cur;
    KS_ASSERT(n <= b->max_chunk);
    KS_TRY(call_begin(b));
    CUDA_CHECK(cudaMemcpyAsync(b->x, host, sizeof(float) * n * b->cfg->hidden, cudaMemcpyHostToDevice, b->stream));
    return KS_OK;
}

/* The move is enqueued on b->stream: after the previous call's ops, which may still read X, and before this
 * call's layers, which read the rows it lands. */
static ks_status cuda_hidden_recv(ks_backend *b, const ks_device_move *move, int n) {
    b = b->cur;
    KS_ASSERT(n <= b->max_chunk);
    KS_TRY(call_begin(b));
    return move->fn(move->ctx, b->x, sizeof(float) * n * b->cfg->hidden, b->stream);
}

/* On b->stream after the ops that wrote X's rows; the next call's writes to X are enqueued after it. */
static ks_status cuda_hidden_send(ks_backend *b, const ks_device_move *move, int n) {
    b = b->cur;
    KS_ASSERT(n <= b->max_chunk);
    return move->fn(move->ctx, b->x, sizeof(float) * n * b->cfg->hidden, b->stream);
}

static ks_status cuda_hidden_read(ks_backend *b, float *host, int n) {
    b = b->cur;
    KS_ASSERT(n <= b->max_chunk);
    CUDA_CHECK(cudaMemcpyAsync(host, b->x, sizeof(float) * n * b->cfg->hidden, cudaMemcpyDeviceToHost, b->stream));
    return ks_cuda_wait_main(b, "reading the hidden states");
}

static ks_status cuda_residual_at(ks_backend *b, int row0) {
    b = b->cur;
    KS_ASSERT(row0 >= 0 && (row0 == 0 || row0 < b->x_rows)); /* callers keep row0 + n <= x_rows */
    b->x = b->x_base + (size_t)row0 * b->cfg->hidden;
    b->view[KS_BUF_X].p = b->x;
    return KS_OK;
}

ks_status ks_cuda_move_layer_rows(ks_backend *b, int layer, size_t from, int from_stride, cudaStream_t s) {
    const int Hk = b->cfg->n_kv_heads;
    const size_t d = b->cfg->head_dim, to = ks_kvcache_offset(&b->cache, layer);
    const int32_t *len = ks_kvcache_len(&b->cache, layer);
    int rows = 0;
    for (int h = 0; h < Hk; h++) rows = len[h] > rows ? len[h] : rows;
    if (!rows) return KS_OK;
    const size_t spitch = sizeof(ks_bf16) * from_stride * d;
    const size_t dpitch = sizeof(ks_bf16) * ks_kvcache_stride(&b->cache, layer) * d;
    CUDA_CHECK(cudaMemcpy2DAsync(b->kc + to, dpitch, b->kc + from, spitch, sizeof(ks_bf16) * rows * d, Hk,
                                 cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaMemcpy2DAsync(b->vc + to, dpitch, b->vc + from, spitch, sizeof(ks_bf16) * rows * d, Hk,
                                 cudaMemcpyDeviceToDevice, s));
    return KS_OK;
}

/* ---- layer ops ------------------------------------------------------------------------------------------- */

/* The norm weight w (KS_W_ATTN_NORM or KS_W_FFN_NORM) of `layer`. */
static const float *norm_weight(const ks_backend *b, int layer, ks_weight w) {
    const cuda_layer *L = layer_of(b, layer);
    KS_ASSERT(w == KS_W_ATTN_NORM || w == KS_W_FFN_NORM);
    return w == KS_W_ATTN_NORM ? L->attn_norm : L->ffn_norm;
}

static ks_status cuda_rmsnorm(ks_backend *b, int layer, ks_weight w, int n) {
    b = seq_of(b);
    if (ks_cuda_dry(b)) return KS_OK;
    KS_ASSERT(n <= b->max_chunk);
    return ks_cuda_rmsnorm(b->xn, KS_DTYPE_BF16, b->x, norm_weight(b, layer, w), n, b->cfg->hidden, b->cfg->rms_eps,
                           b->stream);
}

/* RoPE on the q and k heads of q|k|v rows 0..n-1 for positions pos0.. (a captured decode step reads the position
 * graph_begin uploaded). Q and K heads are adjacent in each q|k|v row: one launch rotates both. */
static ks_status rope_rows(ks_backend *b, int n, int pos0) {
    const ks_model_config *c = b->cfg;
    if (!b->capturing) KS_TRY(ks_cuda_positions(b->pos, pos0, n, b->stream));
    return ks_cuda_rope(b->qkv, KS_DTYPE_BF16, b->qkv_width, b->pos, n, c->n_heads + c->n_kv_heads, c->head_dim,
                        b->inv_freq, b->stream);
}

/* Budget mode: the layer moves to a free prefill slot (its rows so far copied there), after the stream that
 * last moved rows out of that slot. */
static ks_status take_slot(ks_backend *b, int layer) {
    const size_t from = ks_kvcache_offset(&b->cache, layer);
    int slot = ks_kvcache_take_slot(&b->cache, layer);
    if (slot < 0) return ks_kvcache_no_slot(&b->cache, layer);
    CUDA_CHECK(cudaStreamWaitEvent(b->stream, b->slot_ev[slot], 0));
    return ks_cuda_move_layer_rows(b, layer, from, b->own_cap, b->stream);
}

/* One decode token of slot s at position pos, its q|k|v row at s->qkv: RoPE, the append and the length update in
 * one launch (positions from `pos`: a captured step reads the one graph_begin uploaded). */
static ks_status append_one(ks_backend *s, int layer, int pos) {
    const ks_model_config *c = s->cfg;
    if (!s->capturing) KS_TRY(ks_cuda_positions(s->pos, pos, 1, s->stream));
    KS_TRY(ks_cuda_rope_append_one(s->qkv, ks_cuda_layer_k(s, layer), ks_cuda_layer_v(s, layer), s->pos,
                                   ks_cuda_layer_heads(s, s->lens, layer), c->n_heads, c->n_kv_heads, c->head_dim,
                                   ks_kvcache_stride(&s->cache, layer), s->inv_freq, s->stream));
    commit_rows(s, layer, 1, pos);
    return KS_OK;
}

/* A batched step's q|k|v: one GEMM over the front's rows, then each row's token appended to its slot's cache. */
static ks_status batch_qkv_rope_append(ks_backend *b, int layer) {
    const ks_model_config *c = b->cfg;
    const ks_decode_batch *db = b->batch;
    const cuda_view *xn = &b->view[KS_BUF_XN], *qkv = &b->view[KS_BUF_Q];
    KS_TRY(ks_cuda_gemm_run_ld(b->gemm, qkv->p, qkv->ld, KS_DTYPE_BF16, xn->p, xn->ld, layer_of(b, layer)->w_qkv,
                               layer_of(b, layer)->b_qkv, db->n, c->hidden, b->qkv_width, 0.0f, b->stream));
    for (int i = 0; i < db->n; i++) {
        ks_backend *s = slot_of(b, db->slots[i]);
        KS_TRY(ks_cuda_apply_drops(s, layer));
        KS_ASSERT(!ks_kvcache_needs_slot(&s->cache, layer, 1)); /* decode rows fit a layer's own storage */
        KS_TRY(append_one(s, layer, db->pos[i]));
    }
    return KS_OK;
}

/* The q|k|v GEMM; then a token that needs no prefill slot (a decode step) takes one launch for RoPE, the append
 * and the length update; more rows take RoPE, the append and the length update apart. */
static ks_status cuda_qkv_rope_append(ks_backend *b, int layer, int n, int pos0) {
    if (b->batch) return batch_qkv_rope_append(b, layer);
    b = b->cur;
    if (ks_cuda_dry(b)) return KS_OK; /* graph_begin committed the replayed step's rows */
    const cuda_layer *L = layer_of(b, layer);
    const ks_model_config *c = b->cfg;
    const int Hk = c->n_kv_heads;
    const cuda_view *xn = &b->view[KS_BUF_XN], *qkv = &b->view[KS_BUF_Q];
    KS_ASSERT(n > 0 && n <= b->max_chunk && (!b->capturing || n == 1));
    KS_TRY(ks_cuda_gemm_run_ld(b->gemm, qkv->p, qkv->ld, KS_DTYPE_BF16, xn->p, xn->ld, L->w_qkv, L->b_qkv, n,
                               c->hidden, b->qkv_width, 0.0f, b->stream));
    KS_TRY(ks_cuda_apply_drops(b, layer)); /* the layer's last step's eviction, before these rows are counted */
    const int slot = ks_kvcache_needs_slot(&b->cache, layer, n);
    if (n == 1 && !slot) return append_one(b, layer, pos0);
    int32_t *lens = ks_cuda_layer_heads(b, b->lens, layer);
    KS_TRY(rope_rows(b, n, pos0));
    if (slot) KS_TRY(take_slot(b, layer)); /* the layer's rows move: their place is known after it */
    KS_TRY(ks_cuda_kv_append(ks_cuda_layer_k(b, layer), ks_cuda_layer_v(b, layer), b->view[KS_BUF_K].p,
                             b->view[KS_BUF_V].p, b->qkv_width, lens, 0, n, Hk, c->head_dim,
                             ks_kvcache_stride(&b->cache, layer), b->stream));
    KS_TRY(ks_cuda_lens_add(lens, Hk, n, b->stream));
    commit_rows(b, layer, n, pos0);
    return KS_OK;
}

/* The block-sparse prefill attention (backend.h attention_prefill with a block list) over the device arrays sized
 * at init (block_rows, block_cols): a resident list (the KV store's estimations built it there) is read in place;
 * a host list is copied there first. The copies are from pageable memory, so each returns once the list is staged
 * and the host may rewrite it for the next layer. */
static ks_status cuda_attention_prefill_sparse(ks_backend *b, int layer, int n, int pos0, const ks_block_list *l) {
    const ks_model_config *c = b->cfg;
    if (l->block != b->sparse_block)
        return ks_fail(KS_ERR_ARG, "a block list of %d-token blocks on a cuda backend built for %d (0: none); "
                                   "pass the method to the forward's init", l->block, b->sparse_block);
    KS_ASSERT(l->H == c->n_heads && l->qb0 == pos0 / l->block && l->n_qblocks == ks_block_rows_of(pos0, n, l->block));
    const size_t rows = (size_t)l->H * l->n_qblocks;
    if (!l->resident) {
        CUDA_CHECK(cudaMemcpyAsync(b->block_rows, l->row_start, (rows + 1) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   b->stream));
        CUDA_CHECK(cudaMemcpyAsync(b->block_cols, l->cols, (size_t)l->row_start[rows] * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, b->stream));
    }
    ks_block_list on_device = *l;
    on_device.row_start = b->block_rows, on_device.cols = b->block_cols;
    return ks_cuda_attention_prefill_sparse(b->att, b->view[KS_BUF_ATT].ld, b->qkv, b->qkv_width,
                                            ks_cuda_layer_k(b, layer), ks_cuda_layer_v(b, layer), n, pos0 + n,
                                            ks_kvcache_stride(&b->cache, layer), c->n_heads, c->n_kv_heads,
                                            c->head_dim, pos0, ks_cuda_layer_window(c, layer), ks_cuda_attn_scale(c),
                                            NULL, &on_device, b->stream);
}

static ks_status cuda_attention_prefill(ks_backend *b, int layer, int n, int pos0, const ks_block_list *blocks) {
    KS_ASSERT(!b->batch);
    b = b->cur;
    const ks_model_config *c = b->cfg;
    KS_ASSERT(ks_kvcache_is_dense(&b->cache, layer, pos0 + n));
    if (blocks) {
        b->lse_layer = -1; /* a sparse attention's log-sum-exps are not the dense softmax's */
        return cuda_attention_prefill_sparse(b, layer, n, pos0, blocks);
    }
    const int window = ks_cuda_layer_window(c, layer); /* the scoring op's softmax is causal without a window */
    float *lse = window ? NULL : b->att_lse;
    b->lse_layer = lse ? layer : -1, b->lse_pos0 = pos0, b->lse_n = n;
    return ks_cuda_attention_prefill(b->att, b->view[KS_BUF_ATT].ld, b->qkv, b->qkv_width, ks_cuda_layer_k(b, layer),
                                     ks_cuda_layer_v(b, layer), n, pos0 + n, ks_kvcache_stride(&b->cache, layer),
                                     c->n_heads, c->n_kv_heads, c->head_dim, pos0, window,
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

/* The decode attention of slot b's query at qpos over its kept rows, from b->qkv into b->att. */
static ks_status attention_decode_one(ks_backend *b, int layer, int qpos) {
    const ks_model_config *c = b->cfg;
    const int Hk = c->n_kv_heads;
    const int32_t *starts = NULL;
    int packed; /* KIVI: a layer holding packed tokens attends through them (no window there: quant_reserve) */
    if (ks_cuda_dry(b)) return KS_OK;
    KS_TRY(ks_cuda_kivi_attention(b, layer, &packed));
    if (packed) return KS_OK;
    if (ks_cuda_layer_window(c, layer) > 0) {
        /* a captured step reads the starts graph_begin uploaded for every windowed layer */
        if (!b->capturing) KS_TRY(ks_cuda_upload_starts(b, layer, qpos));
        starts = ks_cuda_layer_heads(b, b->starts, layer);
    }
    /* within a graph step one bound for every layer (the graph's), else this step's lengths */
    const int max_len = b->step_bound ? b->step_bound : decode_bound(b, 0);
    return ks_cuda_attention_decode(b->att, b->qkv, ks_cuda_layer_k(b, layer), ks_cuda_layer_v(b, layer),
                                    ks_cuda_layer_heads(b, b->lens, layer), starts,
                                    ks_kvcache_stride(&b->cache, layer), c->n_heads, Hk,
                                    c->head_dim, ks_cuda_attn_scale(c), max_len,
                                    b->decode_scratch, b->stream);
}

/* A batched step: each row's query over its slot's rows (use_batch aimed the slot's pointers at its row). */
static ks_status cuda_attention_decode(ks_backend *b, int layer, int qpos) {
    if (!b->batch) return attention_decode_one(b->cur, layer, qpos);
    for (int i = 0; i < b->batch->n; i++)
        KS_TRY(attention_decode_one(slot_of(b, b->batch->slots[i]), layer, b->batch->pos[i]));
    return KS_OK;
}

/* A decode step's rows (a token, or a batch's: KS_CUDA_GEMV_ROWS at most): one GEMV with the SwiGLU in its
 * epilogue; more rows: the gate|up GEMM, then the SwiGLU in place (its result replaces GATE, as backend.h
 * specifies). */
static ks_status cuda_gate_up_swiglu(ks_backend *b, int layer, int n) {
    b = seq_of(b);
    if (ks_cuda_dry(b)) return KS_OK;
    const cuda_layer *L = layer_of(b, layer);
    const int D = b->cfg->hidden, F = b->cfg->ffn;
    KS_ASSERT(n > 0 && n <= b->max_chunk);
    const cuda_view *xn = &b->view[KS_BUF_XN], *gu = &b->view[KS_BUF_GATE];
    if (n <= KS_CUDA_GEMV_ROWS) return ks_cuda_gemv_swiglu(b->gu, b->gu + F, gu->ld, b->xn, xn->ld, L->w_gu, n, D, F,
                                                           b->stream);
    KS_TRY(ks_cuda_gemm_run_ld(b->gemm, gu->p, gu->ld, KS_DTYPE_BF16, xn->p, xn->ld, L->w_gu, NULL, n, D, 2 * F, 0.0f,
                               b->stream));
    return ks_cuda_swiglu(b->gu, b->gu, b->gu + F, n, F, 2 * (int64_t)F, 2 * (int64_t)F, b->stream);
}

/* A decode step's rows with a norm after them: the GEMV and the norm of ks_cuda_gemv_norm (one launch for a token);
 * otherwise the residual product (ks_cuda_gemm_run_ld: the GEMV for a decode step's rows), then the norm if any. */
static ks_status cuda_out_proj_residual_norm(ks_backend *b, int layer, ks_weight w, int n, int norm_layer,
                                             ks_weight norm_w) {
    b = seq_of(b);
    if (ks_cuda_dry(b)) return KS_OK;
    const cuda_layer *L = layer_of(b, layer);
    const ks_model_config *c = b->cfg;
    KS_ASSERT((w == KS_W_O || w == KS_W_DOWN) && n > 0 && n <= b->max_chunk);
    const cuda_view *in = &b->view[w == KS_W_O ? KS_BUF_ATT : KS_BUF_GATE], *x = &b->view[KS_BUF_X];
    const ks_bf16 *W = w == KS_W_O ? L->w_o : L->w_down;
    const float *bias = w == KS_W_O ? L->b_o : NULL; /* fp32, added into the fp32 residual */
    const float *norm = norm_layer >= 0 ? norm_weight(b, norm_layer, norm_w) : NULL;
    if (n <= KS_CUDA_GEMV_ROWS && norm)
        return ks_cuda_gemv_norm(b->x, x->ld, in->p, in->ld, W, bias, n, in->width, c->hidden, 1.0f, b->xn,
                                 b->view[KS_BUF_XN].ld, norm, c->rms_eps, b->norm_done, b->stream);
    KS_TRY(ks_cuda_gemm_run_ld(b->gemm, x->p, x->ld, KS_DTYPE_F32, in->p, in->ld, W, bias, n, in->width, c->hidden,
                               1.0f, b->stream));
    return norm ? ks_cuda_rmsnorm(b->xn, KS_DTYPE_BF16, b->x, norm, n, c->hidden, c->rms_eps, b->stream) : KS_OK;
}

/* ---- the head ------------------------------------------------------------------------------------------- */

static ks_status cuda_logits(ks_backend *b, int row0, int n) {
    b = seq_of(b);
    const ks_model_config *c = b->cfg;
    KS_ASSERT(b->lm_head && b->final_norm && n <= b->logit_rows && row0 + n <= b->max_chunk);
    KS_TRY(ks_cuda_rmsnorm(b->xn, KS_DTYPE_BF16, b->x + (size_t)row0 * c->hidden, b->final_norm, n, c->hidden,
                           c->rms_eps, b->stream));
    return ks_cuda_gemm_run(b->gemm, b->logits, KS_DTYPE_F32, b->xn, b->lm_head, NULL, n, c->hidden, c->vocab, 0.0f,
                            b->stream);
}

static ks_status cuda_argmax(ks_backend *b, int n, int32_t *ids) {
    b = seq_of(b);
    KS_ASSERT(n <= b->logit_rows);
    KS_TRY(ks_cuda_argmax(b->ids, b->logits, n, b->cfg->vocab, b->argmax_scratch, b->stream));
    CUDA_CHECK(cudaMemcpyAsync(ids, b->ids, sizeof(int32_t) * n, cudaMemcpyDeviceToHost, b->stream));
    return ks_cuda_wait_main(b, "the forward pass");
}

static ks_status cuda_logits_read(ks_backend *b, int n, float *host) {
    b = seq_of(b);
    KS_ASSERT(n <= b->logit_rows);
    CUDA_CHECK(cudaMemcpyAsync(host, b->logits, sizeof(float) * n * b->cfg->vocab, cudaMemcpyDeviceToHost,
                               b->stream));
    return ks_cuda_wait_main(b, "reading the logits");
}

static ks_kvcache *cuda_kvcache(ks_backend *b) {
    b = b->cur;
    (void)ks_cuda_apply_drops(b, -1); /* a failed wait is the device's error, reported by the next op */
    return &b->cache;
}

static ks_kvstore *cuda_kvstore(ks_backend *b) { return ks_cuda_kvstore(b->cur); }

/* ---- decode graph ---------------------------------------------------------------------------------------- */

/* The graph dropped: the next graph-served step runs eagerly, the one after is captured. */
static void drop_graph(ks_backend *b) {
    if (b->graph) cudaGraphExecDestroy(b->graph);
    b->graph = NULL;
    b->decode_steps = 0;
}

/* The bounds a decode step's grids are sized for, with the row it is about to append: the rows (decode_bound)
 * and, with a packed part, its tokens (0 without). Graph steps and a batch's rows alike take these, so that a
 * slot's sums are the same in either. */
static void step_bounds(const ks_backend *b, int *rows, int *tokens) {
    *rows = decode_bound(b, 1);
    *tokens = b->kivi ? ks_cuda_kivi_token_bound(b, 1) : 0;
}

/* Before a graph-served step's layers: replays the captured step (*replayed = 1: the layers are enqueued and
 * the cache bookkeeping committed), or lets the layers be issued, capturing them from the second step on. A
 * KIVI step (hooked, with a packed part) first makes the device counts current. */
static ks_status graph_begin(ks_backend *b, int qpos, int hooked, int *replayed) {
    *replayed = 0;
    KS_ASSERT(!b->capturing);
    KS_TRY(ks_cuda_apply_drops(b, -1));
    /* what the step's kernels read from device memory: its position (set by a kernel argument, not a host
     * copy) and the window starts */
    KS_TRY(ks_cuda_positions(b->pos, qpos, 1, b->stream));
    for (int layer = b->m->first_layer; b->any_window && layer < b->m->last_layer; layer++)
        if (ks_cuda_layer_window(b->cfg, layer) > 0) KS_TRY(ks_cuda_upload_starts(b, layer, qpos));
    int bound, tokens;
    step_bounds(b, &bound, &tokens);
    const int packed = b->kivi ? ks_cuda_kivi_packed_layers(b) : 0;
    const int other = b->graph_sequence != b->cache.sequence || b->graph_prompts != b->prompts;
    /* sized for other lengths (rows; a packed part's tokens), or with another method's decode ops, other layers
     * attending through packed tokens, or another sequence's or prompt's (a packed part: which layers attend
     * through it): capture anew */
    if (b->graph && (bound != b->graph_bound || tokens != b->graph_tokens || packed != b->graph_packed ||
                     hooked != b->graph_hooked || ((hooked || b->kivi) && other)))
        drop_graph(b);
    /* a packed part's first step of a sequence or prompt runs eagerly: it copies the counts and channel lists the
     * captured steps then read from the device */
    if (b->kivi && other) b->decode_steps = 0;
    b->graph_sequence = b->cache.sequence;
    b->graph_prompts = b->prompts;
    if (b->kivi && hooked) KS_TRY(ks_cuda_kivi_sync(b)); /* what a replay or a capture reads, copied outside it */
    if (b->graph) {
        for (int layer = b->m->first_layer; layer < b->m->last_layer; layer++) commit_rows(b, layer, 1, qpos);
        CUDA_CHECK(cudaGraphLaunch(b->graph, b->stream));
        for (int i = 0; i < b->n_layers; i++) /* the per-layer marks, layer by layer */
            if (b->graph_evicts[i]) b->drop_pending[i] = 1, b->drop_epoch[i] = b->sync_epoch;
        *replayed = 1;
        return KS_OK;
    }
    /* the first step runs eagerly, so that first-call set-up (kernel attributes, plans) stays out of the
     * capture; the second is captured */
    b->step_bound = bound;
    b->step_tokens = tokens;
    if (b->decode_steps++ == 0) return KS_OK;
    const cudaError_t e = cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) { /* no step follows (graph_end is not called): the bounds are not this step's */
        b->step_bound = 0, b->step_tokens = 0;
        return ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (beginning the decode step's graph capture)",
                       cudaGetErrorString(e));
    }
    b->capturing = 1;
    b->graph_bound = bound;
    b->graph_tokens = tokens;
    b->graph_packed = packed;
    b->graph_hooked = hooked;
    memset(b->graph_evicts, 0, (size_t)b->n_layers); /* decode_evict marks the layers it records */
    return KS_OK;
}

/* After the issued layers (ok = 0: an op failed, the recording is dropped): ends a capture and runs it. */
static ks_status graph_end(ks_backend *b, int ok) {
    b->step_bound = 0;
    b->step_tokens = 0;
    if (!b->capturing) return KS_OK;
    b->capturing = 0; /* the capture always ends here, also after a failure */
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(b->stream, &g);
    if (e == cudaSuccess && ok) e = cudaGraphInstantiate(&b->graph, g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        b->graph = NULL;
        return ks_fail(KS_ERR_DEVICE, "CUDA failed: %s (capturing the decode step as a graph)",
                       cudaGetErrorString(e));
    }
    if (!ok) return KS_OK; /* the failed step's recording is dropped; the next step captures again */
    /* the captured step has not run yet: run it now */
    CUDA_CHECK(cudaGraphLaunch(b->graph, b->stream));
    return KS_OK;
}

/* A step whose decode hook flushes KIVI's packed part. Graph-served: each layer's flush and release are one
 * launch planned on the device from the device counts (ks_cuda_kivi_decode_flush), the same every step, so the
 * second step is captured and the later ones replay; the host runs the step's layers after the replay's launch
 * as a dry pass (KS_CUDA_KIVI_DRY: no forward op enqueues anything), in which the method's hook advances the host
 * counts and books the release by the same rules, so lengths, bytes and statistics stay the CPU store's. A step
 * whose plan the device flush cannot hold (ks_cuda_kivi_graph_serves: past the packed part, which then fails
 * with KS_ERR_RANGE, or outside its grid) runs eagerly, planned on the host, without the graph. A failed step
 * drops the graph and forgets the device state the host mirrors (ks_cuda_kivi_end_step). */
static ks_status kivi_decode_step(ks_backend *b, int qpos, ks_status (*issue)(void *ctx), void *ctx) {
    int replayed = 0;
    ks_status st = KS_OK;
    if (!ks_cuda_kivi_graph_serves(b)) {
        drop_graph(b);
        st = issue(ctx);
    } else if ((st = graph_begin(b, qpos, 1, &replayed)) == KS_OK) {
        ks_cuda_kivi_begin_step(b, replayed ? KS_CUDA_KIVI_DRY : b->capturing ? KS_CUDA_KIVI_DEVICE
                                                                              : KS_CUDA_KIVI_EAGER);
        st = issue(ctx);
        ks_status end = replayed ? KS_OK : graph_end(b, st == KS_OK);
        st = st == KS_OK ? end : st;
    }
    st = ks_cuda_kivi_end_step(b, st);
    if (st != KS_OK) drop_graph(b);
    return st;
}

/* Whether slot b's step alone, of its kind, is served by the graph path (graph_begin sets its row and token
 * bounds). Host work between the ops (KS_DECODE_HOST) is not replayed; nor is a KIVI step whose flush the device
 * cannot plan (ks_cuda_kivi_graph_serves). */
static int graph_served(const ks_backend *b, ks_decode_kind kind) {
    if (kind == KS_DECODE_HOST) return 0;
    return !(b->kivi && kind == KS_DECODE_HOOKED) || ks_cuda_kivi_graph_serves(b);
}

/* A batched step runs eagerly, each slot with the row and token bounds its step alone takes (graph_begin's; none
 * where its step alone, of its own kind, runs eagerly too): the decode attention's grids and the eviction's
 * scores, and so their sums, as alone. The batch's kind (its most demanding sequence's) would take the bounds from
 * every slot of a step where one sequence's runs on the host (CaM's or CakeKV's, step by step). KIVI's flush in a
 * batch is the eager, host-planned one; its device counts are synced before the slot's next graph step. */
static ks_status batch_step(ks_backend *b, ks_decode_kind kind, ks_status (*issue)(void *ctx), void *ctx) {
    const ks_decode_batch *db = b->batch;
    ks_status st = KS_OK;
    for (int i = 0; i < db->n && st == KS_OK; i++) {
        ks_backend *s = slot_of(b, db->slots[i]);
        if (!graph_served(s, db->kinds ? db->kinds[i] : kind)) continue;
        st = ks_cuda_apply_drops(s, -1); /* graph_begin's order: the evictions, then the bounds */
        if (st != KS_OK) break;
        step_bounds(s, &s->step_bound, &s->step_tokens);
    }
    if (st == KS_OK) st = issue(ctx);
    for (int i = 0; i < db->n; i++) { /* also after a failure */
        ks_backend *s = slot_of(b, db->slots[i]);
        s->step_bound = 0, s->step_tokens = 0;
    }
    return st;
}

/* Host work between the ops (KS_DECODE_HOST) is not replayed: such a step is issued as it comes. A packed part no
 * decode hook changes (ThinK's pruned prefix) replays: the attention reads its counts from the device rows
 * (copied when they change, which they do not between the steps of one sequence) and each head's tokens from the
 * device lengths; one that KIVI's hook flushes is kivi_decode_step's. */
static ks_status cuda_decode_step(ks_backend *b, int qpos, ks_decode_kind kind, ks_status (*issue)(void *ctx),
                                  void *ctx) {
    if (b->batch) return batch_step(b, kind, issue, ctx);
    b = b->cur;
    if (kind == KS_DECODE_HOST) return issue(ctx);
    if (b->kivi && kind == KS_DECODE_HOOKED) return kivi_decode_step(b, qpos, issue, ctx);
    int replayed = 0;
    KS_TRY(graph_begin(b, qpos, kind == KS_DECODE_HOOKED, &replayed));
    if (replayed) return KS_OK;
    ks_status st = issue(ctx);
    ks_status end = graph_end(b, st == KS_OK);
    return st == KS_OK ? end : st;
}

static ks_status cuda_use_slot(ks_backend *b, int slot) {
    KS_ASSERT(slot >= 0 && slot < b->n_slots && !b->batch);
    b->cur = b->slots[slot];
    return KS_OK;
}

/* Slot s's q|k|v and attention-output rows (the buffers and its views of Q, K, V and ATT) at qkv and att. */
static void aim(ks_backend *s, ks_bf16 *qkv, ks_bf16 *att) {
    const ks_model_config *c = s->cfg;
    const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    s->qkv = qkv, s->att = att;
    s->view[KS_BUF_Q].p = qkv;
    s->view[KS_BUF_K].p = qkv + qd;
    s->view[KS_BUF_V].p = qkv + qd + kvd;
    s->view[KS_BUF_ATT].p = att;
}

/* Every other slot's rows back at its own buffers; then, for a batch, each of its slots at its row of the front's
 * (the front itself, slot 0, is row 0 when in the batch: backend.h's increasing slots). */
static ks_status cuda_use_batch(ks_backend *b, const ks_decode_batch *batch) {
    KS_ASSERT(b->slots && (!batch || (batch->n >= 1 && batch->n <= b->n_slots)));
    const size_t qd = (size_t)b->cfg->n_heads * b->cfg->head_dim;
    for (int i = 1; i < b->n_slots; i++) aim(b->slots[i], b->slots[i]->home_qkv, b->slots[i]->home_att);
    for (int i = 0; batch && i < batch->n; i++) {
        KS_ASSERT(batch->slots[i] >= 0 && batch->slots[i] < b->n_slots && (batch->slots[i] || i == 0));
        if (batch->slots[i]) aim(b->slots[batch->slots[i]], b->qkv + i * (size_t)b->qkv_width, b->att + i * qd);
    }
    b->batch = batch;
    return KS_OK;
}

/* ---- the table ------------------------------------------------------------------------------------------- */

static ks_status cuda_init(ks_backend **out, const ks_model *m, const ks_backend_params *p) {
    if (ks_model_is_packed(m))
        return ks_fail(KS_ERR_ARG, "%s: the cuda backend takes fp32-loaded weights, not packed GGUF blocks "
                       "(load with ks_model_load; the CLI's --cpu_weights applies to --device cpu only)", m->source);
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
    .hidden_recv = cuda_hidden_recv,
    .hidden_send = cuda_hidden_send,
    .use_slot = cuda_use_slot,
    .use_batch = cuda_use_batch,
    .residual_at = cuda_residual_at,
    .rmsnorm = cuda_rmsnorm,
    .qkv_rope_append = cuda_qkv_rope_append,
    .attention_prefill = cuda_attention_prefill,
    .attention_decode = cuda_attention_decode,
    .gate_up_swiglu = cuda_gate_up_swiglu,
    .out_proj_residual_norm = cuda_out_proj_residual_norm,
    .logits = cuda_logits,
    .argmax = cuda_argmax,
    .logits_read = cuda_logits_read,
    .kvcache = cuda_kvcache,
    .kvstore = cuda_kvstore,
    .decode_step = cuda_decode_step,
};

#endif /* KS_HAVE_CUDA */
