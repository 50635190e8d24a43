/* backend_cuda_methods.c — the "cuda" backend's KV-compression ops (engine/backend.h: window_scores,
 * attention_decode_probs, key_norms, kv_compact) over kernels/cuda/ks_cuda_methods.h.
 *
 * Scores and norms are computed into the device buffer score_out (Hk, cap), copied once to the host staging
 * buffer and from there into the caller's (Hk, ld) array (adding for an accumulating call), so the host sees
 * exactly the columns the reference writes. Keep lists are packed on the host to the longest list's width and
 * cross in one copy; the rows move on the device and the device lengths follow, so the host bookkeeping
 * (ks_kvcache_compact) and the device agree without a later upload. Nothing here allocates. */
#ifdef KS_HAVE_CUDA

#include <string.h>

#include "cuda/ks_cuda_methods.h"
#include "engine/backend_cuda.h"
#include "engine/backend_cuda_impl.h"
#include "engine/cuda_check.h"

static int layer_index(const ks_backend *b, int layer) {
    KS_ASSERT(layer >= b->m->first_layer && layer < b->m->last_layer);
    return layer - b->m->first_layer;
}

static int max_len(const int32_t *len, int Hk) {
    int mx = 0;
    for (int h = 0; h < Hk; h++) mx = len[h] > mx ? len[h] : mx;
    return mx;
}

/* score_out rows (n columns each) to the host, then into out (Hk, ld): row g's first cols[g] (or n) columns,
 * added when accumulate. */
static ks_status scores_to_host(ks_backend *b, int n, const int32_t *cols, float *out, int ld, int accumulate,
                                const char *what) {
    const int Hk = b->cfg->n_kv_heads;
    if (n > 0)
        CUDA_CHECK(cudaMemcpy2DAsync(b->host_scores, sizeof(float) * n, b->score_out, sizeof(float) * b->cap,
                                     sizeof(float) * n, Hk, cudaMemcpyDeviceToHost, b->stream));
    KS_TRY(ks_cuda_wait_stream(b, what));
    for (int g = 0; g < Hk; g++) {
        const float *src = b->host_scores + (size_t)g * n;
        float *dst = out + (size_t)g * ld;
        int m = cols ? cols[g] : n;
        if (accumulate)
            for (int j = 0; j < m; j++) dst[j] += src[j];
        else
            memcpy(dst, src, sizeof(float) * m);
    }
    return KS_OK;
}

/* The scoring arguments common to both callers: Q rows from q_row0, layer index l's keys. */
static ks_cuda_score_args score_args(const ks_backend *b, int l, int q_row0) {
    const ks_model_config *c = b->cfg;
    return (ks_cuda_score_args){.q = b->qkv + (size_t)q_row0 * b->qkv_width,
                                .ld_q = b->qkv_width,
                                .kc = b->kc + (size_t)l * ks_cuda_kv_layer_elems(b),
                                .H = c->n_heads,
                                .Hk = c->n_kv_heads,
                                .d = c->head_dim,
                                .cap = b->cap,
                                .scale = ks_cuda_attn_scale(c)};
}

static ks_status check_scratch(const ks_backend *b, const ks_cuda_score_args *a) {
    if (ks_cuda_scores_lse_floats(a) <= b->score_lse_floats) return KS_OK;
    return ks_fail(KS_ERR_UNSUPPORTED,
                   "--device cuda: window scoring of %d queries in softmax chunks of %d over %d keys needs more "
                   "scratch than the backend holds; use a larger score_chunk (>= window_size)",
                   a->n_q, a->softmax_chunk, a->n_keys);
}

ks_status ks_cuda_window_scores(ks_backend *b, int layer, const ks_window_args *w, float *out, int ld,
                                ks_window_summary *sum) {
    KS_TRY(ks_cuda_op_begin(b)); /* a deferred rope of these queries is issued first */
    const int l = layer_index(b, layer);
    KS_ASSERT(ld <= b->cap && w->n_keys <= ld && w->n_q > 0 && w->q_row0 + w->n_q <= b->max_chunk &&
              ks_kvcache_is_dense(&b->cache, l, w->n_keys));
    ks_cuda_score_args a = score_args(b, l, w->q_row0);
    a.n_q = w->n_q, a.q_pos = w->q_pos0 + w->q_row0, a.n_keys = w->n_keys, a.softmax_chunk = w->softmax_chunk;
    a.stat = w->stat, a.gamma = w->gamma, a.reduce = w->reduce;
    KS_TRY(check_scratch(b, &a));
    int summary = w->stat == KS_SCORE_MEAN_VAR && sum;
    if (summary) CUDA_CHECK(cudaMemsetAsync(b->score_sum, 0, 2 * sizeof(double), b->stream));
    KS_TRY(ks_cuda_scores(b->score_out, b->cap, summary ? b->score_sum : NULL, &a, b->score_lse, b->score_lse_floats,
                          b->stream));
    double host_sum[2] = {0, 0};
    if (summary)
        CUDA_CHECK(cudaMemcpyAsync(host_sum, b->score_sum, sizeof host_sum, cudaMemcpyDeviceToHost, b->stream));
    KS_TRY(scores_to_host(b, w->n_keys, NULL, out, ld, w->accumulate, "window scores"));
    if (sum) *sum = (ks_window_summary){.entropy = host_sum[0], .var_sum = host_sum[1]};
    return KS_OK;
}

ks_status ks_cuda_attention_decode_probs(ks_backend *b, int layer, int qpos, ks_gqa_reduce reduce, float *out,
                                         int ld) {
    KS_TRY(ks_cuda_op_begin(b));
    const int l = layer_index(b, layer), Hk = b->cfg->n_kv_heads;
    KS_ASSERT(ld <= b->cap);
    const int32_t *len = ks_kvcache_len(&b->cache, l);
    ks_cuda_score_args a = score_args(b, l, 0);
    if (ks_cuda_layer_window(b->cfg, layer) > 0) {
        KS_TRY(ks_cuda_upload_starts(b, l, qpos));
        a.lo = b->starts + (size_t)l * Hk;
    }
    a.hi = b->lens + (size_t)l * Hk; /* the device lengths: the decode step's own row is counted there */
    a.n_q = 1, a.q_pos = qpos, a.n_keys = max_len(len, Hk), a.stat = KS_SCORE_SUM, a.reduce = reduce;
    KS_ASSERT(a.n_keys <= ld);
    KS_TRY(ks_cuda_scores(b->score_out, b->cap, NULL, &a, b->score_lse, b->score_lse_floats, b->stream));
    return scores_to_host(b, a.n_keys, len, out, ld, 0, "decode attention probabilities");
}

ks_status ks_cuda_key_norms_op(ks_backend *b, int layer, float *out, int ld) {
    KS_TRY(ks_cuda_op_begin(b));
    const ks_model_config *c = b->cfg;
    const int l = layer_index(b, layer);
    const int32_t *len = ks_kvcache_len(&b->cache, l);
    int n = max_len(len, c->n_kv_heads);
    KS_ASSERT(n <= ld && ld <= b->cap);
    KS_TRY(ks_cuda_key_norms(b->score_out, b->cap, b->kc + (size_t)l * ks_cuda_kv_layer_elems(b),
                             b->lens + (size_t)l * c->n_kv_heads, c->n_kv_heads, c->head_dim, b->cap, n, b->stream));
    return scores_to_host(b, n, len, out, ld, 0, "key norms");
}

ks_status ks_cuda_kv_compact_op(ks_backend *b, int layer, const int32_t *keep, const int32_t *n_keep, int ld) {
    KS_TRY(ks_cuda_op_begin(b));
    const ks_model_config *c = b->cfg;
    const int l = layer_index(b, layer), Hk = c->n_kv_heads;
    ks_kvcache_compact(&b->cache, l, keep, n_keep, ld); /* checks the keep lists before any row moves */
    /* (Hk, w) keep lists of the longest list's width w, then the counts: one pageable copy, consumed by the
     * time cudaMemcpyAsync returns, so the staging is free for the next call without a wait */
    int w = max_len(n_keep, Hk);
    int32_t *idx = b->host_idx;
    for (int g = 0; g < Hk; g++) memcpy(idx + (size_t)g * w, keep + (size_t)g * ld, sizeof(int32_t) * n_keep[g]);
    memcpy(idx + (size_t)Hk * w, n_keep, sizeof(int32_t) * Hk);
    CUDA_CHECK(cudaMemcpyAsync(b->compact_idx, idx, sizeof(int32_t) * ((size_t)Hk * w + Hk), cudaMemcpyHostToDevice,
                               b->stream));
    const size_t off = (size_t)l * ks_cuda_kv_layer_elems(b);
    KS_TRY(ks_cuda_kv_compact(b->kc + off, b->vc + off, b->lens + (size_t)l * Hk, b->compact_idx, w > 0 ? w : 1, Hk,
                              c->head_dim, b->cap, w, b->compact_scratch, b->stream));
    memcpy(b->lens_on_device + (size_t)l * Hk, n_keep, sizeof(int32_t) * Hk); /* what the kernel set */
    return KS_OK;
}

#endif /* KS_HAVE_CUDA */
