/* backend_cuda_methods.c — the "cuda" backend's KV store (backend/kvstore.h: window_scores,
 * attention_decode_probs, key_norms, kv_compact, v_merge, decode_evict, the per-row scores, the scheduling of the
 * prompt-end compression, KIVI's packed part: quant_reserve, quant_flush, and ThinK's use of it: quant_channels,
 * quant_pack) over kernels/cuda/ks_cuda_methods.h and kernels/cuda/ks_cuda_kivi.h.
 *
 * Scores and norms are computed into the device buffer score_out (Hk, cap; H rows for scores per query head),
 * copied once to the pinned host staging buffer and from there into the caller's (Hk, ld) or (H, ld) array
 * (adding for an accumulating call), so the host sees exactly the columns the reference writes. The per-row
 * scores (row_scores_*, decode_evict) are per query head, in a device block of their own that
 * row_scores_reserve allocates. Keep lists are packed on the host to the longest list's
 * width and cross in one copy; the rows move on the device and the device lengths follow, so the host
 * bookkeeping (ks_kvcache_compact) and the device agree without a later upload.
 *
 * Deferred layers (compress_layer until compress_flush): compress_layer stashes the layer's query rows (a
 * snapshot copy and an event on the main stream), runs the previous layer's work and keeps this layer's for the
 * next call, so that the host scores and selects layer l while the GPU computes layer l + 1. A deferred layer's
 * ops run on the side stream, which waits for the layer's stash event before its first op on the layer, and
 * read the layer's queries from the snapshot; the host waits on the side stream alone, so the main stream keeps
 * computing the later layers meanwhile. Two rules hold (compress_layer's order and kvstore.h's caller rules
 * make them hold): the ops on a deferred layer start before the layer two further on is stashed (its work runs
 * after the next layer's stash; CakeKV's re-eviction of earlier layers comes after), and while any layer is
 * deferred, only scoring ops (window_scores, row_scores_add, key_norms) run on layers that are not (compact_idx
 * and compact_scratch serve one stream at a time). Two snapshot slots, alternating by layer parity,
 * suffice: when layer l is stashed, layer l - 1's work is still to come (its slot must survive) and layer l - 2's
 * reads have returned their results to the host. The flush makes the main stream wait for the side stream, so
 * the forward ops issued afterwards run after every deferred op, and clears the marks.
 * KIVI (cuda_kivi in backend_cuda_impl.h): the counts stay on the host (backend/kv_kivi.h, the same rules and
 * numbers as the CPU store) and go to the device with each flush's plan and before each decode attention over a
 * layer holding packed tokens; the flush quantizes the layer's bf16 rows in place on the device (kivi_quant.cu),
 * the release of stale rows is an ordinary kv_compact, and the decode attention reads the packed codes and the
 * bf16 rows together (kivi_attention_decode.cu), never a dequantized copy. ThinK's stored key channels are set
 * on the host counts and copied to the layer's device lists (quant_channels); its raw packed part (the method's
 * KS_KIVI_RAW reserved as KS_KIVI_RAW_BF16: the bf16 rows' bits, two per word) is packed by the same kernels'
 * raw form from a plan of ks_kv_kivi_plan_pack (quant_pack).
 * Nothing here allocates after ks_cuda_methods_init but row_scores_reserve and quant_reserve. */
#ifdef KS_HAVE_CUDA

#include <stdlib.h>
#include <string.h>

#include <stddef.h>

#include "cuda/ks_cuda_kivi.h"
#include "cuda/ks_cuda_methods.h"
#include "backend/backend_cuda.h"
#include "backend/backend_cuda_impl.h"
#include "backend/cuda_check.h"

/* The instance around its KV store. */
static ks_backend *backend_of(ks_kvstore *kv) { return (ks_backend *)((char *)kv - offsetof(ks_backend, kvs)); }

/* Query heads per KV head. */
static int group_size(const ks_backend *b) { return b->cfg->n_heads / b->cfg->n_kv_heads; }

static int max_len(const int32_t *len, int Hk) {
    int mx = 0;
    for (int h = 0; h < Hk; h++) mx = len[h] > mx ? len[h] : mx;
    return mx;
}

/* ---- set-up ------------------------------------------------------------------------------------------- */

static ks_status host_alloc(void **p, size_t bytes, const char *what) {
    cudaError_t e = cudaHostAlloc(p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e == cudaSuccess) return KS_OK;
    *p = NULL;
    cudaGetLastError(); /* not sticky; leave no error behind */
    return ks_fail(KS_ERR_NOMEM, "--device cuda: cannot pin %.1f MiB of host memory for the %s (%s)",
                   (double)bytes / (1 << 20), what, cudaGetErrorString(e));
}

static const ks_kvstore_ops cuda_kvstore_ops;

ks_kvstore *ks_cuda_kvstore(ks_backend *b) { return &b->kvs; }

ks_status ks_cuda_methods_init(ks_backend *b) {
    b->kvs.ops = &cuda_kvstore_ops;
    const size_t Hk = b->cfg->n_kv_heads, H = b->cfg->n_heads, cap = b->cap;
    int least, greatest;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&b->side, cudaStreamNonBlocking, greatest));
    for (int i = 0; i < 2; i++) {
        CUDA_CHECK(cudaEventCreateWithFlags(&b->stash_ev[i], cudaEventDisableTiming));
        b->snap_slot[i].layer = -1;
    }
    CUDA_CHECK(cudaEventCreateWithFlags(&b->side_ev, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->idx_ev, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->merge_ev, cudaEventDisableTiming));
    for (int i = 0; i < KS_KVCACHE_SLOTS; i++)
        CUDA_CHECK(cudaEventCreateWithFlags(&b->slot_ev[i], cudaEventDisableTiming));
    b->snap_rows = b->max_chunk < KS_KVSTORE_DEFER_ROWS ? b->max_chunk : KS_KVSTORE_DEFER_ROWS;
    KS_TRY(host_alloc((void **)&b->host_scores, sizeof(float) * H * cap, "score staging"));
    KS_TRY(host_alloc((void **)&b->host_idx, sizeof(int32_t) * (Hk * cap + Hk), "keep-list staging"));
    KS_TRY(host_alloc((void **)&b->host_merge, sizeof(ks_merge) * Hk * cap + sizeof(int32_t) * Hk,
                      "merge-list staging"));
    KS_TRY(host_alloc((void **)&b->host_sum, 2 * sizeof(double), "score summary staging"));
    KS_TRY(host_alloc((void **)&b->host_drops, sizeof(int32_t) * (b->n_layers ? b->n_layers : 1) * Hk,
                      "eviction log staging"));
    b->drop_pending = ks_calloc(b->n_layers ? b->n_layers : 1, 1, "cuda backend eviction marks");
    b->graph_evicts = ks_calloc(b->n_layers ? b->n_layers : 1, 1, "cuda backend eviction marks");
    b->drop_epoch = ks_calloc(b->n_layers ? b->n_layers : 1, sizeof(unsigned), "cuda backend eviction marks");
    if (!b->drop_pending || !b->graph_evicts || !b->drop_epoch) return KS_ERR_NOMEM;
    b->deferred = ks_calloc(b->n_layers ? b->n_layers : 1, 1, "cuda backend deferred layers");
    return b->deferred ? KS_OK : KS_ERR_NOMEM;
}

static void kivi_free(ks_backend *b);

void ks_cuda_methods_free(ks_backend *b) {
    if (b->side) {
        cudaStreamSynchronize(b->side);
        cudaStreamDestroy(b->side);
    }
    kivi_free(b);
    for (int i = 0; i < 2; i++)
        if (b->stash_ev[i]) cudaEventDestroy(b->stash_ev[i]);
    if (b->side_ev) cudaEventDestroy(b->side_ev);
    if (b->idx_ev) cudaEventDestroy(b->idx_ev);
    if (b->merge_ev) cudaEventDestroy(b->merge_ev);
    for (int i = 0; i < KS_KVCACHE_SLOTS; i++) {
        if (b->slot_ev[i]) cudaEventDestroy(b->slot_ev[i]);
        b->slot_ev[i] = NULL;
    }
    if (b->host_scores) cudaFreeHost(b->host_scores);
    if (b->host_idx) cudaFreeHost(b->host_idx);
    if (b->host_merge) cudaFreeHost(b->host_merge);
    if (b->host_sum) cudaFreeHost(b->host_sum);
    if (b->host_drops) cudaFreeHost(b->host_drops);
    cudaFree(b->scores_block);
    b->scores_block = NULL, b->row_scores = b->add_out = b->add_lse = NULL;
    free(b->drop_pending);
    free(b->graph_evicts);
    free(b->drop_epoch);
    b->host_drops = NULL, b->drop_pending = b->graph_evicts = NULL, b->drop_epoch = NULL;
    free(b->deferred);
    b->side = NULL, b->side_ev = b->idx_ev = b->merge_ev = b->stash_ev[0] = b->stash_ev[1] = NULL;
    b->host_scores = NULL, b->host_idx = NULL, b->host_merge = NULL, b->host_sum = NULL, b->deferred = NULL;
}

/* ---- streams ------------------------------------------------------------------------------------------- */

/* The layer's deferral mark (b->deferred). */
static unsigned char *deferred_mark(const ks_backend *b, int layer) {
    return &b->deferred[ks_kvcache_index(&b->cache, layer)];
}

/* The stream that runs compression ops on the layer: the side stream while it is deferred, ordered after the
 * layer's stash by its first op. The slot's event was recorded by this layer's stash or, if the slot was
 * reused, by a later one: either orders the side stream after everything the layer's ops read. */
static ks_status op_stream(ks_backend *b, int layer, cudaStream_t *s) {
    unsigned char *mark = deferred_mark(b, layer);
    *s = *mark ? b->side : b->stream;
    if (*mark != 1) return KS_OK;
    CUDA_CHECK(cudaStreamWaitEvent(b->side, b->stash_ev[layer & 1], 0));
    *mark = 2;
    return KS_OK;
}

static int any_deferred(const ks_backend *b) {
    for (int i = 0; i < b->n_layers; i++)
        if (b->deferred[i]) return 1;
    return 0;
}

/* ---- the ops ------------------------------------------------------------------------------------------- */

/* Device rows src (Hk G, cap; n columns each: score_out, score_sums or running scores; G rows per KV head) to
 * the host through stream s, then into out (Hk G, ld): row r's first cols[r / G] (or n) columns, added when
 * accumulate. */
static ks_status rows_to_host(ks_backend *b, cudaStream_t s, const float *src_dev, int G, int n, const int32_t *cols,
                              float *out, int ld, int accumulate, const char *what) {
    const int rows = b->cfg->n_kv_heads * G;
    if (n > 0)
        CUDA_CHECK(cudaMemcpy2DAsync(b->host_scores, sizeof(float) * n, src_dev, sizeof(float) * b->cap,
                                     sizeof(float) * n, rows, cudaMemcpyDeviceToHost, s));
    KS_TRY(ks_cuda_wait_stream(s, what));
    for (int g = 0; g < rows; g++) {
        const float *src = b->host_scores + (size_t)g * n;
        float *dst = out + (size_t)g * ld;
        int m = cols ? cols[g / G] : n;
        if (accumulate)
            for (int j = 0; j < m; j++) dst[j] += src[j];
        else
            memcpy(dst, src, sizeof(float) * m);
    }
    return KS_OK;
}

/* score_out's rows to out, G per KV head. */
static ks_status scores_to_host(ks_backend *b, cudaStream_t s, int G, int n, const int32_t *cols, float *out, int ld,
                                int accumulate, const char *what) {
    return rows_to_host(b, s, b->score_out, G, n, cols, out, ld, accumulate, what);
}

/* Rows per KV head of a score output: one, or one per query head for KS_GQA_NONE. */
static int out_rows(const ks_backend *b, ks_gqa_reduce reduce) { return reduce == KS_GQA_NONE ? group_size(b) : 1; }

/* The scoring arguments common to both callers: Q rows from q_row0, the layer's keys. */
static ks_cuda_score_args score_args(const ks_backend *b, int layer, int q_row0) {
    const ks_model_config *c = b->cfg;
    return (ks_cuda_score_args){.q = b->qkv + (size_t)q_row0 * b->qkv_width,
                                .ld_q = b->qkv_width,
                                .kc = ks_cuda_layer_k(b, layer),
                                .H = c->n_heads,
                                .Hk = c->n_kv_heads,
                                .d = c->head_dim,
                                .cap = ks_kvcache_stride(&b->cache, layer),
                                .scale = ks_cuda_attn_scale(c)};
}

/* Where a scoring op reads the chunk's query rows q_row0 .. q_row0 + n_q - 1 of `layer`: the live Q rows, or, in
 * a deferred layer's work, the snapshot taken when the layer was handed over (chunk row r is its row r - row0). */
static void query_rows(const ks_backend *b, int layer, int q_row0, int n_q, const ks_bf16 **q, int64_t *ld_q) {
    if (!*deferred_mark(b, layer)) {
        *q = b->qkv + (size_t)q_row0 * b->qkv_width;
        *ld_q = b->qkv_width;
        return;
    }
    const int slot = layer & 1, qd = b->cfg->n_heads * b->cfg->head_dim;
    KS_ASSERT(b->snap_slot[slot].layer == layer && q_row0 >= b->snap_slot[slot].row0 &&
              q_row0 + n_q <= b->snap_slot[slot].row0 + b->snap_slot[slot].n);
    *q = b->snap + ((size_t)slot * b->snap_rows + (q_row0 - b->snap_slot[slot].row0)) * qd;
    *ld_q = qd;
}

static ks_status check_scratch(const ks_backend *b, const ks_cuda_score_args *a) {
    if (ks_cuda_scores_lse_floats(a) <= b->score_lse_floats) return KS_OK;
    return ks_fail(KS_ERR_UNSUPPORTED,
                   "--device cuda: window scoring of %d queries in softmax chunks of %d over %d keys needs more "
                   "scratch than the backend holds; use a larger score_chunk (>= window_size)",
                   a->n_q, a->softmax_chunk, a->n_keys);
}

/* window_scores' device half: the scores of w into out (Hk, cap; (H, cap) for KS_GQA_NONE) (and score_sums, the
 * summary) on *s, the
 * layer's op stream, with lse scratch of score_lse_floats. */
static ks_status enqueue_scores(ks_backend *b, int layer, const ks_window_args *w, int summary, float *out, float *lse,
                                cudaStream_t *s_out) {
    KS_ASSERT(w->n_keys <= b->cap && w->n_q > 0 && w->q_row0 + w->n_q <= b->max_chunk &&
              ks_kvcache_is_dense(&b->cache, layer, w->n_keys));
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    *s_out = s;
    ks_cuda_score_args a = score_args(b, layer, w->q_row0);
    query_rows(b, layer, w->q_row0, w->n_q, &a.q, &a.ld_q);
    if (!*deferred_mark(b, layer) && b->lse_layer == layer && ks_window_lse_serves(b->lse_pos0, b->lse_n, w))
        a.lse_in = b->att_lse + (size_t)w->q_row0 * b->cfg->n_heads; /* same stream, after it */
    a.n_q = w->n_q, a.q_pos = w->q_pos0 + w->q_row0, a.n_keys = w->n_keys, a.softmax_chunk = w->softmax_chunk;
    a.stat = w->stat, a.gamma = w->gamma, a.reduce = w->reduce;
    a.sums = w->sums ? b->score_sums : NULL;
    KS_TRY(check_scratch(b, &a));
    if (summary) CUDA_CHECK(cudaMemsetAsync(b->score_sum, 0, 2 * sizeof(double), s));
    return ks_cuda_scores(out, b->cap, summary ? b->score_sum : NULL, &a, lse, b->score_lse_floats, s);
}

static ks_status cuda_window_scores(ks_kvstore *kv, int layer, const ks_window_args *w, float *out, int ld,
                                    ks_window_summary *sum) {
    ks_backend *b = backend_of(kv);
    KS_ASSERT(ld <= b->cap && w->n_keys <= ld);
    int summary = w->stat == KS_SCORE_MEAN_VAR && sum;
    cudaStream_t s;
    KS_TRY(enqueue_scores(b, layer, w, summary, b->score_out, b->score_lse, &s));
    if (summary)
        CUDA_CHECK(cudaMemcpyAsync(b->host_sum, b->score_sum, 2 * sizeof(double), cudaMemcpyDeviceToHost, s));
    KS_TRY(scores_to_host(b, s, out_rows(b, w->reduce), w->n_keys, NULL, out, ld, w->accumulate, "window scores"));
    if (w->sums) KS_TRY(rows_to_host(b, s, b->score_sums, 1, w->n_keys, NULL, w->sums, ld, 0, "window score sums"));
    if (sum)
        *sum = summary ? (ks_window_summary){.entropy = b->host_sum[0], .var_sum = b->host_sum[1]}
                       : (ks_window_summary){0, 0};
    return KS_OK;
}

static ks_status cuda_attention_decode_probs(ks_kvstore *kv, int layer, int qpos, ks_gqa_reduce reduce, float *out,
                                             int ld) {
    ks_backend *b = backend_of(kv);
    const int Hk = b->cfg->n_kv_heads;
    KS_ASSERT(ld <= b->cap);
    const int32_t *len = ks_kvcache_len(&b->cache, layer);
    ks_cuda_score_args a = score_args(b, layer, 0);
    if (ks_cuda_layer_window(b->cfg, layer) > 0) {
        KS_TRY(ks_cuda_upload_starts(b, layer, qpos));
        a.lo = ks_cuda_layer_heads(b, b->starts, layer);
    }
    a.hi = ks_cuda_layer_heads(b, b->lens, layer); /* the device lengths: the decode step's own row is counted there */
    a.n_q = 1, a.q_pos = qpos, a.n_keys = max_len(len, Hk), a.stat = KS_SCORE_SUM, a.reduce = reduce;
    KS_ASSERT(a.n_keys <= ld);
    KS_TRY(ks_cuda_scores(b->score_out, b->cap, NULL, &a, b->score_lse, b->score_lse_floats, b->stream));
    return scores_to_host(b, b->stream, out_rows(b, reduce), a.n_keys, len, out, ld, 0,
                          "decode attention probabilities");
}

static ks_status cuda_channel_scores(ks_kvstore *kv, int layer, int q_row0, int n_q, float *out, int ld) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    KS_ASSERT(n_q > 0 && q_row0 >= 0 && q_row0 + n_q <= b->max_chunk && c->head_dim <= ld);
    if (c->head_dim > b->cap)
        return ks_fail(KS_ERR_UNSUPPORTED, "--device cuda: channel scores need a cache of at least head_dim (%d) rows "
                       "per head; this one holds %d (raise the context length)", c->head_dim, b->cap);
    const ks_bf16 *q;
    int64_t ld_q;
    query_rows(b, layer, q_row0, n_q, &q, &ld_q);
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    KS_TRY(ks_cuda_channel_scores(b->score_out, b->cap, q, ld_q, n_q, ks_cuda_layer_k(b, layer),
                                  ks_cuda_layer_heads(b, b->lens, layer), c->n_heads, c->n_kv_heads, c->head_dim,
                                  ks_kvcache_stride(&b->cache, layer), s));
    return scores_to_host(b, s, group_size(b), c->head_dim, NULL, out, ld, 0, "channel scores");
}

/* FlexPrefill's block lists of the whole prompt (kernels/cuda/flex_estimate.cu, ks_cuda_flex_blocks): estimated
 * and chosen on the device into the sparse attention's device arrays (l resident), the records to the host. */
static ks_status cuda_flex_blocks(ks_kvstore *kv, int layer, const ks_flexprefill_args *a, ks_block_list *l,
                                  ks_flexprefill_stat *stats) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    KS_ASSERT(a->block == b->sparse_block && a->L <= b->max_chunk && a->H == c->n_heads && a->Hk == c->n_kv_heads &&
              a->d == c->head_dim && b->flex.cap);
    const ks_bf16 *q;
    int64_t ld_q;
    query_rows(b, layer, 0, a->L, &q, &ld_q);
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    ks_block_list dev = {.row_start = b->block_rows, .cols = b->block_cols};
    KS_TRY(ks_cuda_flex_blocks(b->gemm, &b->flex, q, ld_q, ks_cuda_layer_k(b, layer),
                               ks_kvcache_stride(&b->cache, layer), a, &dev, stats, s));
    l->block = dev.block, l->H = dev.H, l->qb0 = dev.qb0, l->n_qblocks = dev.n_qblocks, l->resident = 1;
    return KS_OK;
}

static ks_status cuda_key_norms(ks_kvstore *kv, int layer, float *out, int ld) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    const int32_t *len = ks_kvcache_len(&b->cache, layer);
    int n = max_len(len, c->n_kv_heads);
    KS_ASSERT(n <= ld && ld <= b->cap);
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    KS_TRY(ks_cuda_key_norms(b->score_out, b->cap, ks_cuda_layer_k(b, layer), ks_cuda_layer_heads(b, b->lens, layer),
                             c->n_kv_heads, c->head_dim, ks_kvcache_stride(&b->cache, layer), n, s));
    return scores_to_host(b, s, 1, n, len, out, ld, 0, "key norms");
}

static ks_status kivi_step_compact(ks_backend *b, int layer, const int32_t *keep, const int32_t *n_keep, int ld);

static ks_status cuda_kv_compact(ks_kvstore *kv, int layer, const int32_t *keep, const int32_t *n_keep, int ld) {
    ks_backend *b = backend_of(kv);
    if (b->kivi && b->kivi->step != KS_CUDA_KIVI_EAGER) return kivi_step_compact(b, layer, keep, n_keep, ld);
    const ks_model_config *c = b->cfg;
    const int Hk = c->n_kv_heads;
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    KS_ASSERT(*deferred_mark(b, layer) || !any_deferred(b)); /* compact_idx, compact_scratch: one stream at a time */
    KS_TRY(ks_kvcache_compact_fits(&b->cache, layer, n_keep));
    if (b->kivi) /* releases stale rows only */
        KS_TRY(ks_kv_kivi_compacted(&b->kivi->counts, &b->cache, layer, keep, n_keep, ld));
    ks_kvcache_compact(&b->cache, layer, keep, n_keep, ld); /* checks the keep lists before any row moves */
    /* (Hk, w) keep lists of the longest list's width w, then the counts: one pinned copy, so the staging is
     * rewritten only once the previous copy out of it is done */
    int w = max_len(n_keep, Hk);
    int32_t *idx = b->host_idx;
    CUDA_CHECK(cudaEventSynchronize(b->idx_ev));
    for (int g = 0; g < Hk; g++) memcpy(idx + (size_t)g * w, keep + (size_t)g * ld, sizeof(int32_t) * n_keep[g]);
    memcpy(idx + (size_t)Hk * w, n_keep, sizeof(int32_t) * Hk);
    CUDA_CHECK(cudaMemcpyAsync(b->compact_idx, idx, sizeof(int32_t) * ((size_t)Hk * w + Hk), cudaMemcpyHostToDevice,
                               s));
    CUDA_CHECK(cudaEventRecord(b->idx_ev, s));
    const size_t off = ks_kvcache_offset(&b->cache, layer);
    const int stride = ks_kvcache_stride(&b->cache, layer), slot = ks_kvcache_slot(&b->cache, layer);
    KS_TRY(ks_cuda_kv_compact(b->kc + off, b->vc + off, ks_cuda_layer_heads(b, b->lens, layer), b->compact_idx,
                              w > 0 ? w : 1, Hk, c->head_dim, stride, w, b->compact_scratch, s));
    memcpy(ks_cuda_layer_heads(b, b->lens_on_device, layer), n_keep, sizeof(int32_t) * Hk); /* what the kernel set */
    if (slot < 0) return KS_OK;
    ks_kvcache_leave_slot(&b->cache, layer); /* the kept rows, gathered in the slot, to the layer's own rows */
    KS_TRY(ks_cuda_move_layer_rows(b, layer, off, stride, s));
    CUDA_CHECK(cudaEventRecord(b->slot_ev[slot], s));
    return KS_OK;
}

/* The (Hk, w) merge lists of the longest list's width w, then the counts, in one pinned copy (the staging
 * rewritten only once the previous copy out of it is done); the rows merge on the device in place. */
static ks_status cuda_v_merge(ks_kvstore *kv, int layer, const ks_merge *list, const int32_t *n, int ld, int span,
                              ks_merge_norms *norms) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    const int Hk = c->n_kv_heads, w = max_len(n, Hk);
    KS_ASSERT(ld <= b->cap && span > 0);
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    KS_ASSERT(*deferred_mark(b, layer) || !any_deferred(b)); /* merge_list: one stream at a time */
    CUDA_CHECK(cudaEventSynchronize(b->merge_ev));
    ks_merge *staged = b->host_merge;
    for (int g = 0; g < Hk; g++) memcpy(staged + (size_t)g * w, list + (size_t)g * ld, sizeof(ks_merge) * n[g]);
    memcpy(staged + (size_t)Hk * w, n, sizeof(int32_t) * Hk);
    CUDA_CHECK(cudaMemcpyAsync(b->merge_list, staged, sizeof(ks_merge) * Hk * w + sizeof(int32_t) * Hk,
                               cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(b->merge_ev, s));
    if (norms) CUDA_CHECK(cudaMemsetAsync(b->score_sum, 0, 2 * sizeof(double), s));
    KS_TRY(ks_cuda_v_merge(ks_cuda_layer_v(b, layer), b->merge_list, (const int32_t *)(b->merge_list + (size_t)Hk * w),
                           w > 0 ? w : 1, span, ks_cuda_layer_heads(b, b->lens, layer), Hk, c->head_dim,
                           ks_kvcache_stride(&b->cache, layer), norms ? b->score_sum : NULL, s));
    if (!norms) return KS_OK;
    CUDA_CHECK(cudaMemcpyAsync(b->host_sum, b->score_sum, 2 * sizeof(double), cudaMemcpyDeviceToHost, s));
    KS_TRY(ks_cuda_wait_stream(s, "value merging"));
    *norms = (ks_merge_norms){.v_sq = b->host_sum[0], .dv_sq = b->host_sum[1]};
    return KS_OK;
}

/* The layer's per-row scores on the device, (H, cap): one row per query head. */
static float *layer_row_scores(const ks_backend *b, int layer) {
    KS_ASSERT(b->row_scores); /* row_scores_reserve first */
    return b->row_scores + (size_t)ks_kvcache_index(&b->cache, layer) * b->cfg->n_heads * b->cap;
}

static ks_status cuda_decode_evict(ks_kvstore *kv, int layer, int qpos, const ks_evict_args *a) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    const int i = ks_kvcache_index(&b->cache, layer), Hk = c->n_kv_heads;
    const int stride = ks_kvcache_stride(&b->cache, layer), acc = a->rule == KS_EVICT_ACCUMULATED;
    KS_ASSERT(!b->deferred[i] && ks_kvcache_slot(&b->cache, layer) < 0 && (!acc || b->row_scores));
    KS_TRY(ks_kv_kivi_refuse_evict(b->kivi ? &b->kivi->counts : NULL, &b->cache, layer));
    /* within a graph step the graph's row bound (lengths change between replays), else this step's */
    const int bound = b->step_bound ? b->step_bound : max_len(b->cache.len, b->n_layers * Hk);
    if (a->rule != KS_EVICT_SINK) { /* the step query's probabilities, as attention_decode_probs */
        ks_cuda_score_args sa = score_args(b, layer, 0);
        if (ks_cuda_layer_window(c, layer) > 0) sa.lo = ks_cuda_layer_heads(b, b->starts, layer); /* this step's */
        sa.hi = ks_cuda_layer_heads(b, b->lens, layer);
        sa.n_q = 1, sa.q_pos = b->cap, sa.n_keys = bound, sa.stat = KS_SCORE_SUM;
        sa.reduce = acc ? KS_GQA_NONE : a->reduce; /* ACCUMULATED: per query head, reduced only to choose */
        KS_TRY(check_scratch(b, &sa));
        KS_TRY(ks_cuda_scores(b->score_out, b->cap, NULL, &sa, b->score_lse, b->score_lse_floats, b->stream));
    }
    int32_t *drop = ks_cuda_layer_heads(b, b->drop_dev, layer);
    KS_TRY(ks_cuda_decode_evict(ks_cuda_layer_k(b, layer), ks_cuda_layer_v(b, layer),
                                ks_cuda_layer_heads(b, b->lens, layer), drop, b->score_out, b->cap,
                                acc ? layer_row_scores(b, layer) : NULL, b->cap, a, Hk, group_size(b), c->head_dim,
                                stride, bound < stride ? bound : stride, b->compact_scratch, b->score_sums, b->stream));
    CUDA_CHECK(cudaMemcpyAsync(ks_cuda_layer_heads(b, b->host_drops, layer), drop, sizeof(int32_t) * Hk,
                               cudaMemcpyDeviceToHost, b->stream));
    b->drop_pending[i] = 1, b->drop_epoch[i] = b->sync_epoch;
    if (b->capturing) b->graph_evicts[i] = 1;
    (void)qpos; /* the position is the step's: the probabilities need no causal cut (every row is older) */
    return KS_OK;
}

/* One device block: the per-row scores of every layer, row_scores_add's score output and its lse scratch. */
static ks_status cuda_row_scores_reserve(ks_kvstore *kv) {
    ks_backend *b = backend_of(kv);
    if (b->scores_block) return KS_OK;
    const size_t H = b->cfg->n_heads, cap = b->cap, rows = (size_t)b->n_layers * H * cap;
    const size_t floats = rows + H * cap + b->score_lse_floats;
    cudaError_t e = cudaMalloc(&b->scores_block, sizeof(float) * floats);
    if (e != cudaSuccess) {
        b->scores_block = NULL;
        cudaGetLastError(); /* not sticky; leave no error behind */
        return ks_fail(KS_ERR_NOMEM, "--device cuda: cannot allocate %.1f MiB of device memory for the KV cache's "
                                     "per-row scores (%s); lower --max_ctx or use a method without them",
                       (double)floats * sizeof(float) / (1 << 20), cudaGetErrorString(e));
    }
    b->row_scores = b->scores_block;
    b->add_out = b->row_scores + rows;
    b->add_lse = b->add_out + H * cap;
    return KS_OK;
}

static ks_status cuda_row_scores_add(ks_kvstore *kv, int layer, const ks_window_args *a) {
    ks_backend *b = backend_of(kv);
    ks_window_args w = ks_window_scores_only(a); /* per query head */
    cudaStream_t s;
    KS_TRY(enqueue_scores(b, layer, &w, 0, b->add_out, b->add_lse, &s)); /* no wait: buffers of its own */
    return ks_cuda_row_scores_fold(layer_row_scores(b, layer), b->cap, b->add_out, b->cap,
                                   b->cfg->n_heads, a->q_pos0, a->n_keys, s);
}

static ks_status cuda_row_scores_read(ks_kvstore *kv, int layer, float *out, int ld) {
    ks_backend *b = backend_of(kv);
    const int Hk = b->cfg->n_kv_heads;
    const int32_t *len = ks_kvcache_len(&b->cache, layer);
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    return rows_to_host(b, s, layer_row_scores(b, layer), group_size(b), max_len(len, Hk), len, out, ld, 0,
                        "per-row scores");
}

static ks_status cuda_row_scores_load(ks_kvstore *kv, int layer, const float *scores, int ld) {
    ks_backend *b = backend_of(kv);
    const int Hk = b->cfg->n_kv_heads, n = max_len(ks_kvcache_len(&b->cache, layer), Hk);
    KS_ASSERT(n <= b->cap && ld >= n);
    if (!n) return KS_OK;
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    /* a pageable source, consumed before the call returns (the host may overwrite it right after); columns past a
     * head's length are never read */
    CUDA_CHECK(cudaMemcpy2DAsync(layer_row_scores(b, layer), sizeof(float) * b->cap, scores, sizeof(float) * ld,
                                 sizeof(float) * n, b->cfg->n_heads, cudaMemcpyHostToDevice, s));
    return KS_OK;
}

ks_status ks_cuda_apply_drops(ks_backend *b, int layer) {
    const int Hk = b->cfg->n_kv_heads, first = layer < 0 ? b->m->first_layer : layer;
    const int last = layer < 0 ? b->m->last_layer : layer + 1;
    for (int ly = first; ly < last; ly++) {
        const int i = ks_kvcache_index(&b->cache, ly);
        if (!b->drop_pending[i]) continue;
        if (b->drop_epoch[i] == b->sync_epoch) KS_TRY(ks_cuda_wait_main(b, "decode-time eviction"));
        b->drop_pending[i] = 0;
        const int32_t *rows = ks_cuda_layer_heads(b, b->host_drops, ly);
        int32_t *mirror = ks_cuda_layer_heads(b, b->lens_on_device, ly);
        for (int h = 0; h < Hk; h++) {
            if (rows[h] < 0) continue;
            ks_kvcache_drop_row(&b->cache, ly, h, rows[h]);
            mirror[h]--; /* the kernel's decrement */
        }
    }
    return KS_OK;
}

/* ---- deferred compression ------------------------------------------------------------------------------- */

/* Snapshots the Q rows q_row0 .. q_row0 + n_q - 1 of `layer` (and records the slot's event) and marks the layer
 * deferred; *deferred = 0 and nothing changes when n_q exceeds the snapshot rows. */
static ks_status stash(ks_backend *b, int layer, int q_row0, int n_q, int *deferred) {
    const int slot = layer & 1, qd = b->cfg->n_heads * b->cfg->head_dim;
    KS_ASSERT(n_q >= 0 && q_row0 >= 0 && q_row0 + n_q <= b->max_chunk && !b->capturing);
    *deferred = n_q <= b->snap_rows;
    if (!*deferred) return KS_OK;
    if (n_q > 0)
        CUDA_CHECK(cudaMemcpy2DAsync(b->snap + (size_t)slot * b->snap_rows * qd, sizeof(ks_bf16) * qd,
                                     b->qkv + (size_t)q_row0 * b->qkv_width, sizeof(ks_bf16) * b->qkv_width,
                                     sizeof(ks_bf16) * qd, n_q, cudaMemcpyDeviceToDevice, b->stream));
    CUDA_CHECK(cudaEventRecord(b->stash_ev[slot], b->stream));
    b->snap_slot[slot].layer = layer, b->snap_slot[slot].row0 = q_row0, b->snap_slot[slot].n = n_q;
    *deferred_mark(b, layer) = 1;
    return KS_OK;
}

/* When layers are deferred: the main stream waits for the side stream, the marks are cleared and the ops read
 * the live Q buffer again. */
static ks_status join(ks_backend *b) {
    if (!any_deferred(b)) return KS_OK;
    CUDA_CHECK(cudaEventRecord(b->side_ev, b->side));
    CUDA_CHECK(cudaStreamWaitEvent(b->stream, b->side_ev, 0));
    memset(b->deferred, 0, (size_t)b->n_layers);
    b->snap_slot[0].layer = b->snap_slot[1].layer = -1;
    return KS_OK;
}

/* The stashed layer's work, if one waits. */
static ks_status run_pending(ks_backend *b) {
    ks_kvstore_work work = b->pending.work;
    if (!work) return KS_OK;
    b->pending.work = NULL;
    return work(b->pending.ctx, b->pending.layer);
}

static ks_status cuda_compress_layer(ks_kvstore *kv, int layer, int q_row0, int n_q, ks_kvstore_work work,
                                    void *ctx) {
    ks_backend *b = backend_of(kv);
    int deferred;
    KS_TRY(stash(b, layer, q_row0, n_q, &deferred));
    KS_TRY(run_pending(b)); /* the previous layer's work first: layers complete in order */
    if (!deferred) {
        KS_TRY(join(b)); /* no compaction of a layer that is not deferred while others are */
        return work(ctx, layer);
    }
    b->pending.work = work, b->pending.ctx = ctx, b->pending.layer = layer;
    return KS_OK;
}

static ks_status cuda_compress_flush(ks_kvstore *kv) {
    ks_backend *b = backend_of(kv);
    b->prompts++;
    KS_TRY(run_pending(b));
    return join(b);
}

/* join only orders streams and clears marks; a device failure shows again at the next op */
static void cuda_compress_cancel(ks_kvstore *kv) {
    ks_backend *b = backend_of(kv);
    b->pending.work = NULL;
    (void)join(b);
}

/* ---- KIVI's packed part (cuda_kivi) ---------------------------------------------------------------------- */

/* Index of the layer's first KV head in the (n_layers, Hk) per-head arrays of cuda_kivi. */
static size_t kivi_head(const ks_backend *b, int layer) {
    return (size_t)ks_kvcache_index(&b->cache, layer) * b->cfg->n_kv_heads;
}

/* The layer's arrays, counts and cache rows as the kernels read them. */
static ks_cuda_kivi_layer kivi_layer(const ks_backend *b, int layer) {
    const cuda_kivi *k = b->kivi;
    const ks_kivi_shape *s = &k->counts.shape;
    const size_t g0 = kivi_head(b, layer), d = s->d, cap = s->cap;
    const int Hk = b->cfg->n_kv_heads;
    const int32_t *cnt = k->dev_counts + g0 * KS_CUDA_KIVI_ROWS;
    return (ks_cuda_kivi_layer){.shape = *s,
                                .Hk = Hk,
                                .k_codes = k->k_codes + g0 * d * s->k_words,
                                .k_scale = k->k_scale + g0 * d * s->k_groups,
                                .k_zero = k->k_zero + g0 * d * s->k_groups,
                                .k_chan = k->k_chan + g0 * d,
                                .kc = k->kc + g0,
                                .v_codes = k->v_codes + g0 * cap * s->v_words,
                                .v_scale = k->v_scale + g0 * cap * s->v_groups,
                                .v_zero = k->v_zero + g0 * cap * s->v_groups,
                                .nq_k = cnt,
                                .nq_v = cnt + Hk,
                                .off = cnt + 2 * Hk,
                                .len = ks_cuda_layer_heads(b, b->lens, layer),
                                .k = ks_cuda_layer_k(b, layer),
                                .v = ks_cuda_layer_v(b, layer),
                                .stride = ks_kvcache_stride(&b->cache, layer)};
}

/* The layer's stored key channel lists (the host counts' kc and k_chan, current for the cache's sequence) to its
 * device lists on s, when they hold another sequence's or when forced (quant_channels set them). The layer's
 * pinned region is rewritten once its last copy has run (lists_ev). */
static ks_status kivi_lists(ks_backend *b, int layer, int force, cudaStream_t s) {
    cuda_kivi *k = b->kivi;
    const size_t li = (size_t)ks_kvcache_index(&b->cache, layer), g0 = kivi_head(b, layer);
    if (!force && k->lists_seq[li] == b->cache.sequence) return KS_OK;
    const size_t Hk = (size_t)b->cfg->n_kv_heads, d = (size_t)k->counts.shape.d;
    int32_t *h = k->host_lists + li * Hk * (d + 1);
    CUDA_CHECK(cudaEventSynchronize(k->lists_ev[li]));
    memcpy(h, k->counts.kc + g0, sizeof(int32_t) * Hk);
    memcpy(h + Hk, k->counts.k_chan + g0 * d, sizeof(int32_t) * Hk * d);
    CUDA_CHECK(cudaMemcpyAsync(k->kc + g0, h, sizeof(int32_t) * Hk, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(k->k_chan + g0 * d, h + Hk, sizeof(int32_t) * Hk * d, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(k->lists_ev[li], s));
    k->lists_seq[li] = b->cache.sequence;
    return KS_OK;
}

/* The layer's counts now (and a flush's plan, jobs non-NULL) to its rows of dev_counts on s, its key channel
 * lists first when they are another sequence's (kivi_lists). The decode attention's counts are copied only when
 * they differ from what the rows hold (dev_rows): a decode step whose counts stay (a packed part that no decode
 * hook changes: ThinK's), or change on the device by the host's rules (KIVI's graph-served step), issues no copy,
 * so a captured step serves the next ones; a capture that would record a copy fails instead (its replays would
 * copy stale staging). The pinned staging has a region per layer for each of the two callers (the decode
 * attention, the flush), rewritten by that caller's next call on the layer once the region's last copy has run
 * (its event; a pipeline stage sending its rows between GPUs does not wait for each step). */
static ks_status kivi_upload(ks_backend *b, int layer, const ks_kivi_job *jobs, cudaStream_t s) {
    cuda_kivi *k = b->kivi;
    KS_TRY(kivi_lists(b, layer, 0, s));
    const int Hk = b->cfg->n_kv_heads, rows = jobs ? KS_CUDA_KIVI_ROWS : KS_CUDA_KIVI_COUNTS;
    const size_t li = (size_t)ks_kvcache_index(&b->cache, layer), region = li * 2 + (jobs != NULL);
    int32_t *h = k->host_counts + region * Hk * KS_CUDA_KIVI_ROWS, *dev = k->dev_rows + li * Hk * KS_CUDA_KIVI_COUNTS;
    int same = !jobs;
    for (int g = 0; g < Hk; g++) {
        ks_kivi_counts n = ks_kv_kivi_counts(&k->counts, &b->cache, layer, g);
        same = same && dev[g] == n.nq_k && dev[Hk + g] == n.nq_v && dev[2 * Hk + g] == n.off;
    }
    if (same) return KS_OK;
    if (b->capturing)
        return ks_fail(KS_ERR_DEVICE, "KIVI: layer %d's counts would be copied inside a captured decode step (its "
                                      "device counts were not current when the capture began)", layer);
    CUDA_CHECK(cudaEventSynchronize(k->upload_ev[region]));
    for (int g = 0; g < Hk; g++) {
        ks_kivi_counts n = ks_kv_kivi_counts(&k->counts, &b->cache, layer, g);
        h[g] = dev[g] = n.nq_k, h[Hk + g] = dev[Hk + g] = n.nq_v, h[2 * Hk + g] = dev[2 * Hk + g] = n.off;
        if (!jobs) continue;
        h[3 * Hk + g] = jobs[g].k_t0, h[4 * Hk + g] = jobs[g].k_n;
        h[5 * Hk + g] = jobs[g].v_t0, h[6 * Hk + g] = jobs[g].v_n;
    }
    CUDA_CHECK(cudaMemcpyAsync(k->dev_counts + kivi_head(b, layer) * KS_CUDA_KIVI_ROWS, h,
                               sizeof(int32_t) * rows * Hk, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(k->upload_ev[region], s));
    return KS_OK;
}

ks_status ks_cuda_kivi_attention(ks_backend *b, int layer, int *done) {
    *done = b->kivi && ks_kv_kivi_packed(&b->kivi->counts, &b->cache, layer);
    if (!*done) return KS_OK;
    KS_TRY(kivi_upload(b, layer, NULL, b->stream));
    ks_cuda_kivi_layer L = kivi_layer(b, layer);
    const int max_n = b->step_tokens ? b->step_tokens : ks_cuda_kivi_token_bound(b, 0);
    return ks_cuda_kivi_attention_decode(b->att, b->qkv, &L, b->cfg->n_heads, ks_cuda_attn_scale(b->cfg), max_n,
                                         b->kivi->scratch, b->stream);
}

static void kivi_free(ks_backend *b) {
    cuda_kivi *k = b->kivi;
    if (!k) return;
    b->cache.kivi = NULL;
    ks_kv_kivi_free(&k->counts);
    cudaFree(k->block);
    if (k->host_counts) cudaFreeHost(k->host_counts);
    if (k->host_lists) cudaFreeHost(k->host_lists);
    for (int i = 0; k->upload_ev && i < 2 * b->n_layers; i++)
        if (k->upload_ev[i]) cudaEventDestroy(k->upload_ev[i]);
    for (int i = 0; k->lists_ev && i < b->n_layers; i++)
        if (k->lists_ev[i]) cudaEventDestroy(k->lists_ev[i]);
    free(k->upload_ev), free(k->lists_ev), free(k->lists_seq), free(k->dev_rows), free(k->released);
    free(k->releasing);
    free(k);
    b->kivi = NULL;
}

/* The device block's arrays for the shape (carved at 256-byte boundaries from base; base NULL: only the size). */
static size_t kivi_carve(cuda_kivi *k, char *base, const ks_backend *b) {
    const ks_kivi_shape *s = &k->counts.shape;
    const size_t heads = (size_t)b->n_layers * b->cfg->n_kv_heads, d = s->d, cap = s->cap;
    /* the attention's bound is every token a head holds, packed or not: the cache's cap */
    const size_t floats = ks_cuda_kivi_attention_scratch_floats(b->cfg->n_heads, s->d, b->cap);
    size_t off = 0;
#define KIVI_TAKE(field, count)                                                                                      \
    do {                                                                                                             \
        off = (off + 255) & ~(size_t)255;                                                                            \
        k->field = base ? (void *)(base + off) : NULL;                                                               \
        off += sizeof(*k->field) * (count);                                                                          \
    } while (0)
    KIVI_TAKE(k_codes, heads * d * s->k_words);
    KIVI_TAKE(k_scale, heads * d * s->k_groups);
    KIVI_TAKE(k_zero, heads * d * s->k_groups);
    KIVI_TAKE(v_codes, heads * cap * s->v_words);
    KIVI_TAKE(v_scale, heads * cap * s->v_groups);
    KIVI_TAKE(v_zero, heads * cap * s->v_groups);
    KIVI_TAKE(k_chan, heads * d);
    KIVI_TAKE(kc, heads);
    KIVI_TAKE(dev_counts, heads * KS_CUDA_KIVI_ROWS);
    KIVI_TAKE(err, 4);
    KIVI_TAKE(scratch, floats);
    KIVI_TAKE(done, 1);
#undef KIVI_TAKE
    return off;
}

/* n events (at least one slot), created without timing, into *ev. */
static ks_status kivi_events(cudaEvent_t **ev, size_t n, const char *what) {
    *ev = ks_calloc(n ? n : 1, sizeof(cudaEvent_t), what);
    if (!*ev) return KS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) CUDA_CHECK(cudaEventCreateWithFlags(&(*ev)[i], cudaEventDisableTiming));
    return KS_OK;
}

/* The packed part for params p: host counts, the staging, the device block (zeroed); every layer's key channel
 * lists marked as another sequence's, so that the first kernel on the layer uploads them. */
static ks_status kivi_create(ks_backend *b, const ks_kivi_params *p) {
    cuda_kivi *k = ks_calloc(1, sizeof *k, "KIVI packed cache");
    if (!k) return KS_ERR_NOMEM;
    b->kivi = k;
    KS_TRY(ks_kv_kivi_init_counts(&k->counts, &b->cache, p, b->packed_rows));
    const size_t heads = (size_t)b->n_layers * b->cfg->n_kv_heads, layers = (size_t)b->n_layers;
    KS_TRY(host_alloc((void **)&k->host_counts, sizeof(int32_t) * heads * 2 * KS_CUDA_KIVI_ROWS,
                      "KIVI count staging"));
    KS_TRY(host_alloc((void **)&k->host_lists, sizeof(int32_t) * heads * (k->counts.shape.d + 1),
                      "KIVI key channel staging"));
    KS_TRY(kivi_events(&k->upload_ev, 2 * layers, "KIVI upload events"));
    KS_TRY(kivi_events(&k->lists_ev, layers, "KIVI key channel events"));
    k->lists_seq = ks_calloc(layers ? layers : 1, sizeof(unsigned), "KIVI key channel sequences");
    k->dev_rows = ks_calloc(heads * KS_CUDA_KIVI_COUNTS, sizeof(int32_t), "KIVI count rows"); /* the zeroed block's */
    k->released = ks_calloc(heads, sizeof(int32_t), "KIVI device releases");
    k->releasing = ks_calloc(layers ? layers : 1, 1, "KIVI device release marks");
    if (!k->lists_seq || !k->dev_rows || !k->released || !k->releasing) return KS_ERR_NOMEM;
    for (size_t i = 0; i < layers; i++) k->lists_seq[i] = b->cache.sequence - 1u;
    const size_t bytes = kivi_carve(k, NULL, b);
    cudaError_t e = cudaMalloc(&k->block, bytes);
    if (e != cudaSuccess) {
        k->block = NULL;
        cudaGetLastError(); /* not sticky; leave no error behind */
        return ks_fail(KS_ERR_NOMEM, "--device cuda: cannot allocate %.1f MiB of device memory for KIVI's packed KV "
                                     "cache (%s); lower --max_ctx",
                       (double)bytes / (1 << 20), cudaGetErrorString(e));
    }
    kivi_carve(k, k->block, b);
    CUDA_CHECK(cudaMemsetAsync(k->block, 0, bytes, b->stream));
    b->cache.kivi = &k->counts;
    return KS_OK;
}

static ks_status cuda_quant_reserve(ks_kvstore *kv, const ks_kivi_params *p) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    ks_kivi_params dp = *p; /* the raw encoding here holds the bf16 rows' own bits */
    dp.k_bits = dp.k_bits == KS_KIVI_RAW ? KS_KIVI_RAW_BF16 : dp.k_bits;
    dp.v_bits = dp.v_bits == KS_KIVI_RAW ? KS_KIVI_RAW_BF16 : dp.v_bits;
    if (b->kivi && !memcmp(&b->kivi->counts.p, &dp, sizeof dp)) return KS_OK;
    KS_TRY(ks_kivi_window_check(c->sliding_window, c->swa_first_layer, &b->cache));
    KS_TRY(ks_kivi_params_check(p, c->head_dim));
    if (c->head_dim > 256)
        return ks_fail(KS_ERR_UNSUPPORTED, "KIVI: --device cuda decodes over packed tokens for head_dim up to 256; "
                                           "this model's is %d (use --device cpu)", c->head_dim);
    kivi_free(b);
    ks_status st = kivi_create(b, &dp);
    if (st != KS_OK) kivi_free(b);
    return st;
}

/* A plan's kernels (ks_kv_kivi_plan or ks_kv_kivi_plan_pack: jobs) on the layer's op stream (the side stream for
 * a deferred layer), the host counts advanced; the error parts read back, waiting for that stream, only when
 * asked. The kernels follow the shape's encoding (codes, or the raw bf16 bits). */
static ks_status kivi_run(ks_backend *b, int layer, const ks_kivi_job *jobs, ks_kivi_counts *counts,
                          ks_kivi_error *err) {
    cuda_kivi *k = b->kivi;
    const int Hk = b->cfg->n_kv_heads;
    int max_k = 0, max_v = 0;
    for (int g = 0; g < Hk; g++) {
        max_k = jobs[g].k_n > max_k ? jobs[g].k_n : max_k;
        max_v = jobs[g].v_n > max_v ? jobs[g].v_n : max_v;
    }
    if (max_k || max_v) {
        cudaStream_t s;
        KS_TRY(op_stream(b, layer, &s));
        KS_TRY(kivi_upload(b, layer, jobs, s));
        ks_cuda_kivi_layer L = kivi_layer(b, layer);
        const int32_t *plan = L.nq_k + KS_CUDA_KIVI_COUNTS * Hk;
        if (err) CUDA_CHECK(cudaMemsetAsync(k->err, 0, 4 * sizeof(double), s));
        KS_TRY(ks_cuda_kivi_quant_keys(&L, plan, plan + Hk, max_k, err ? k->err : NULL, s));
        KS_TRY(ks_cuda_kivi_quant_values(&L, plan + 2 * Hk, plan + 3 * Hk, max_v, err ? k->err + 2 : NULL, s));
        if (err) {
            double e[4];
            CUDA_CHECK(cudaMemcpyAsync(e, k->err, sizeof e, cudaMemcpyDeviceToHost, s));
            KS_TRY(ks_cuda_wait_stream(s, "KIVI's quantization errors"));
            err->k[0] += e[0], err->k[1] += e[1], err->v[0] += e[2], err->v[1] += e[3];
        }
    }
    ks_kv_kivi_advance(&k->counts, &b->cache, layer, jobs, counts);
    return KS_OK;
}

/* A graph-served decode step's flush of the layer (KS_CUDA_KIVI_DEVICE: launched; DRY: the graph's replay runs
 * it): the device plans the host's plan (jobs) from its counts, quantizes, advances and releases; the host
 * advances its counts, its mirror of the device rows, and records the release the device applied (each head's
 * stale rows, when some head holds R of them), which the method's compaction then books (kivi_step_compact). */
static ks_status kivi_step_flush(ks_backend *b, int layer, const ks_kivi_job *jobs, ks_kivi_counts *counts) {
    cuda_kivi *k = b->kivi;
    const int Hk = b->cfg->n_kv_heads, R = k->counts.p.residual;
    const size_t li = (size_t)ks_kvcache_index(&b->cache, layer), g0 = kivi_head(b, layer);
    if (k->step == KS_CUDA_KIVI_DEVICE) {
        ks_cuda_kivi_layer L = kivi_layer(b, layer);
        int32_t *cnt = k->dev_counts + g0 * KS_CUDA_KIVI_ROWS;
        const ks_cuda_kivi_step st = {.nq_k = cnt, .nq_v = cnt + Hk, .off = cnt + 2 * Hk,
                                      .len = ks_cuda_layer_heads(b, b->lens, layer), .k = ks_cuda_layer_k(b, layer),
                                      .v = ks_cuda_layer_v(b, layer), .scratch = b->compact_scratch, .done = k->done,
                                      .R = R};
        KS_TRY(ks_cuda_kivi_decode_flush(&L, &st, b->stream));
    }
    ks_kv_kivi_advance(&k->counts, &b->cache, layer, jobs, counts);
    int32_t *dev = k->dev_rows + li * Hk * KS_CUDA_KIVI_COUNTS, *stale = k->released + g0;
    int most = 0;
    for (int g = 0; g < Hk; g++) {
        ks_kivi_counts n = ks_kv_kivi_counts(&k->counts, &b->cache, layer, g);
        dev[g] = n.nq_k, dev[Hk + g] = n.nq_v;
        stale[g] = ks_kivi_stale(n.nq_k, n.nq_v, n.off);
        most = stale[g] > most ? stale[g] : most;
    }
    k->releasing[li] = most >= ks_kivi_release_least(R, 1);
    return KS_OK;
}

static ks_status cuda_quant_flush(ks_kvstore *kv, int layer, ks_kivi_counts *counts, ks_kivi_error *err) {
    ks_backend *b = backend_of(kv);
    KS_ASSERT(b->kivi); /* quant_reserve first */
    KS_TRY(ks_kv_kivi_plan(&b->kivi->counts, &b->cache, layer, b->kivi->counts.jobs));
    if (b->kivi->step != KS_CUDA_KIVI_EAGER) return kivi_step_flush(b, layer, b->kivi->counts.jobs, counts);
    return kivi_run(b, layer, b->kivi->counts.jobs, counts, err);
}

/* A graph-served step's compaction of the layer: the release its flush's launch applied on the device (rows,
 * lengths, off), booked on the host (ks_kv_kivi_compacted, ks_kvcache_compact, the mirrors of the device lengths
 * and counts). Any other compaction is refused: the device did not move those rows. */
static ks_status kivi_step_compact(ks_backend *b, int layer, const int32_t *keep, const int32_t *n_keep, int ld) {
    cuda_kivi *k = b->kivi;
    const int Hk = b->cfg->n_kv_heads;
    const size_t li = (size_t)ks_kvcache_index(&b->cache, layer), g0 = kivi_head(b, layer);
    const int32_t *len = ks_kvcache_len(&b->cache, layer);
    int same = k->releasing[li];
    for (int g = 0; same && g < Hk; g++) same = len[g] - n_keep[g] == k->released[g0 + g];
    if (!same)
        return ks_fail(KS_ERR_UNSUPPORTED, "KIVI: a graph-served decode step compacts layer %d only by KIVI's "
                                           "release of every head's stale rows; this compaction keeps other rows",
                       layer);
    KS_TRY(ks_kv_kivi_compacted(&k->counts, &b->cache, layer, keep, n_keep, ld));
    ks_kvcache_compact(&b->cache, layer, keep, n_keep, ld);
    memcpy(ks_cuda_layer_heads(b, b->lens_on_device, layer), n_keep, sizeof(int32_t) * Hk);
    int32_t *dev = k->dev_rows + li * Hk * KS_CUDA_KIVI_COUNTS;
    for (int g = 0; g < Hk; g++) dev[2 * Hk + g] = ks_kv_kivi_counts(&k->counts, &b->cache, layer, g).off;
    k->releasing[li] = 0;
    return KS_OK;
}

int ks_cuda_kivi_token_bound(const ks_backend *b, int extra) {
    int mx = 0, bound = 256;
    for (int layer = b->cache.first_layer; layer < b->cache.first_layer + b->n_layers; layer++)
        for (int g = 0; g < b->cfg->n_kv_heads; g++) {
            const int n = ks_kv_kivi_counts(&b->kivi->counts, &b->cache, layer, g).n;
            mx = n > mx ? n : mx;
        }
    while (bound < mx + extra && bound < b->cap) bound *= 2;
    return bound < b->cap ? bound : b->cap;
}

int ks_cuda_kivi_packed_layers(const ks_backend *b) {
    int packed = 0;
    for (int layer = b->cache.first_layer; layer < b->cache.first_layer + b->n_layers; layer++)
        packed += ks_kv_kivi_packed(&b->kivi->counts, &b->cache, layer);
    return packed;
}

/* Whether the layer's flush after one more token fits ks_cuda_kivi_decode_flush's grid, scratch and the part. */
static int step_fits(const ks_backend *b, int layer) {
    const ks_kv_kivi *q = &b->kivi->counts;
    const int Hk = b->cfg->n_kv_heads, R = q->p.residual;
    const int32_t *len = ks_kvcache_len(&b->cache, layer);
    int most = 0, kept = 0; /* the most stale rows of a head, the most rows a releasing head keeps */
    if (ks_kvcache_slot(&b->cache, layer) >= 0) return 0; /* a prefill slot's rows leave it by a host compaction */
    for (int g = 0; g < Hk; g++) {
        const ks_kivi_counts n = ks_kv_kivi_counts(q, &b->cache, layer, g);
        const ks_kivi_job j = ks_kivi_flush_job(n.n + 1, n.nq_k, n.nq_v, R);
        const int end_k = j.k_t0 + j.k_n, end_v = j.v_t0 + j.v_n;
        if (j.k_n > R || j.v_n > 1 || end_k > q->shape.cap || end_v > q->shape.cap) return 0;
        const int stale = ks_kivi_stale(end_k, end_v, n.off), rows = len[g] + 1 - stale;
        most = stale > most ? stale : most;
        kept = stale && rows > kept ? rows : kept;
    }
    return most < ks_kivi_release_least(R, 1) || kept <= R;
}

int ks_cuda_kivi_graph_serves(const ks_backend *b) {
    const ks_kivi_params *p = &b->kivi->counts.p;
    /* the device flush: quantized encodings, its last block's per-head ints, 16-byte row moves through compact
     * scratch (Hk, cap, d) holding (2, Hk, R, d) */
    if (ks_kivi_is_raw(p->k_bits) || ks_kivi_is_raw(p->v_bits) || b->cfg->n_kv_heads > KS_CUDA_KIVI_MAX_HK ||
        b->cfg->head_dim % 8 || 2 * p->residual > b->cap)
        return 0;
    for (int layer = b->cache.first_layer; layer < b->cache.first_layer + b->n_layers; layer++)
        if (!step_fits(b, layer)) return 0;
    return 1;
}

ks_status ks_cuda_kivi_sync(ks_backend *b) {
    for (int layer = b->cache.first_layer; layer < b->cache.first_layer + b->n_layers; layer++)
        KS_TRY(kivi_upload(b, layer, NULL, b->stream));
    return KS_OK;
}

void ks_cuda_kivi_begin_step(ks_backend *b, ks_cuda_kivi_mode mode) { b->kivi->step = mode; }

ks_status ks_cuda_kivi_end_step(ks_backend *b, ks_status st) {
    cuda_kivi *k = b->kivi;
    k->step = KS_CUDA_KIVI_EAGER;
    for (int i = 0; i < b->n_layers; i++) {
        if (k->releasing[i] && st == KS_OK)
            st = ks_fail(KS_ERR_UNSUPPORTED, "KIVI: the decode step released layer %d's stale rows on the device, "
                                             "and no compaction of the method booked it", b->cache.first_layer + i);
        k->releasing[i] = 0;
    }
    if (st != KS_OK) ks_cuda_kivi_forget(b);
    return st;
}

void ks_cuda_kivi_forget(ks_backend *b) {
    cuda_kivi *k = b->kivi;
    const size_t heads = (size_t)b->n_layers * b->cfg->n_kv_heads;
    memset(k->dev_rows, 0xff, sizeof(int32_t) * heads * KS_CUDA_KIVI_COUNTS); /* -1: no count matches */
    for (int i = 0; i < b->n_layers; i++) k->lists_seq[i] = b->cache.sequence - 1u;
    memset(b->lens_on_device, 0xff, sizeof(int32_t) * heads); /* sync_lens uploads the bookkeeping's */
}

/* The host lists set (the checks and the rules of ks_kv_kivi_set_channels), then copied to the layer's device
 * lists on its op stream, ahead of the kernels that read them. */
static ks_status cuda_quant_channels(ks_kvstore *kv, int layer, const int32_t *chan, const int32_t *n_chan, int ld) {
    ks_backend *b = backend_of(kv);
    KS_TRY(ks_kv_kivi_set_layer_channels(b->kivi ? &b->kivi->counts : NULL, &b->cache, layer, chan, n_chan, ld));
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    return kivi_lists(b, layer, 1, s);
}

static ks_status cuda_quant_pack(ks_kvstore *kv, int layer, const int32_t *upto, ks_kivi_counts *counts) {
    ks_backend *b = backend_of(kv);
    KS_ASSERT(b->kivi); /* quant_reserve first */
    KS_TRY(ks_kv_kivi_plan_pack(&b->kivi->counts, &b->cache, layer, upto, b->kivi->counts.jobs));
    return kivi_run(b, layer, b->kivi->counts.jobs, counts, NULL);
}

/* XAttention's block scores of one query block (kernels/cuda/sparse_estimate.cu), read back to the host. */
static ks_status cuda_xattn_scores(ks_kvstore *kv, int layer, const ks_xattn_args *a, float *out, int ld) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    KS_ASSERT(a->qb < ld && a->qb < b->cap && a->n <= b->max_chunk && a->block / a->stride <= b->cap / 2);
    const ks_bf16 *q;
    int64_t ld_q;
    query_rows(b, layer, 0, a->n, &q, &ld_q);
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    KS_TRY(ks_cuda_xattn_block_scores(b->score_out, b->cap, b->score_sums, q, ld_q, ks_cuda_layer_k(b, layer),
                                      c->n_heads, c->n_kv_heads, c->head_dim, ks_kvcache_stride(&b->cache, layer), a,
                                      s));
    return scores_to_host(b, s, group_size(b), a->qb + 1, NULL, out, ld, 0, "XAttention block scores");
}

/* XAttention's block lists of the whole chunk (kernels/cuda/sparse_estimate.cu, ks_cuda_xattn_blocks): scored and
 * chosen on the device, the CSR offsets and the packed rows built there into the sparse attention's device arrays
 * (l resident); the rows' counts and coverages come back, one wait. */
static ks_status cuda_xattn_blocks(ks_kvstore *kv, int layer, const ks_xattn_blocks_args *a, ks_block_list *l,
                                   int32_t *count, double *coverage) {
    ks_backend *b = backend_of(kv);
    const ks_model_config *c = b->cfg;
    const int rows = l->H * l->n_qblocks, W = l->qb0 + l->n_qblocks;
    KS_ASSERT(a->block == b->sparse_block && a->n <= b->max_chunk && l->H == c->n_heads && b->xattn.s &&
              l->qb0 == a->q_pos0 / a->block && l->n_qblocks == ks_block_rows_of(a->q_pos0, a->n, a->block));
    const ks_bf16 *q;
    int64_t ld_q;
    query_rows(b, layer, 0, a->n, &q, &ld_q);
    cudaStream_t s;
    KS_TRY(op_stream(b, layer, &s));
    const ks_cuda_xattn_work *w = &b->xattn;
    CUDA_CHECK(cudaMemcpyAsync(w->theta, a->theta, sizeof(float) * c->n_heads, cudaMemcpyHostToDevice, s));
    KS_TRY(ks_cuda_xattn_blocks(b->gemm, w, q, ld_q, ks_cuda_layer_k(b, layer), c->n_heads, c->n_kv_heads,
                                c->head_dim, ks_kvcache_stride(&b->cache, layer), a, s));
    KS_TRY(ks_cuda_xattn_pack(b->block_rows, b->block_cols, w, rows, W, s));
    CUDA_CHECK(cudaMemcpyAsync(count, w->count, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaMemcpyAsync(coverage, w->coverage, sizeof(double) * rows, cudaMemcpyDeviceToHost, s));
    l->resident = 1;
    return ks_cuda_wait_stream(s, "XAttention block lists");
}

/* The backend's accessor: the logged evictions applied first. */
static ks_kvcache *cuda_cache(ks_kvstore *kv) { return ks_backend_cuda.kvcache(backend_of(kv)); }

static const ks_kvstore_ops cuda_kvstore_ops = {
    .name = "cuda bf16",
    .cache = cuda_cache,
    .window_scores = cuda_window_scores,
    .xattn_scores = cuda_xattn_scores,
    .xattn_blocks = cuda_xattn_blocks,
    .attention_decode_probs = cuda_attention_decode_probs,
    .channel_scores = cuda_channel_scores,
    .flex_blocks = cuda_flex_blocks,
    .key_norms = cuda_key_norms,
    .kv_compact = cuda_kv_compact,
    .v_merge = cuda_v_merge,
    .decode_evict = cuda_decode_evict,
    .row_scores_reserve = cuda_row_scores_reserve,
    .row_scores_load = cuda_row_scores_load,
    .row_scores_add = cuda_row_scores_add,
    .row_scores_read = cuda_row_scores_read,
    .quant_reserve = cuda_quant_reserve,
    .quant_flush = cuda_quant_flush,
    .quant_channels = cuda_quant_channels,
    .quant_pack = cuda_quant_pack,
    .compress_layer = cuda_compress_layer,
    .compress_flush = cuda_compress_flush,
    .compress_cancel = cuda_compress_cancel,
};

#endif /* KS_HAVE_CUDA */
