/* backend_cpu.c — the "cpu" backend: fp32 on the host, computing with kernels/cpu/fast.h (OpenBLAS GEMMs,
 * OpenMP loops). Weights are the ks_model's own fp32 tensors (borrowed, never copied); activations are one
 * block carved into the ks_buf views; the KV cache has host storage. */
#include <math.h>
#include <string.h>

#include "core/log.h"
#include "cpu/fast.h"
#include "cpu/ref.h"
#include "backend/backend.h"

struct ks_backend {
    const ks_model *m;
    const ks_model_config *cfg;
    int max_chunk;
    int width[KS_BUF_COUNT]; /* floats per row of each buffer */
    float *buf[KS_BUF_COUNT]; /* (max_chunk, width[i]) views into `arena`; X: rows x_row0.. of `x` */
    float *x;                 /* (x_rows, hidden) the residual stream; view into `arena` */
    int x_rows;               /* max_chunk, or max_ctx in the cache's budget mode */
    float *logits;            /* (KS_BACKEND_MAX_LOGIT_ROWS, vocab) view into `arena` */
    float *inv_freq;          /* (head_dim / 2) RoPE frequencies with the config's scaling; view */
    float *arena;             /* owned */
    int32_t *pos;             /* (max_chunk) positions for rope; owned */
    int32_t *start;           /* (n_kv_heads) first row a decode query sees per head; owned */
    float *score_work;        /* (2 * n_heads, max_ctx) per-query-head statistics of the scoring ops; owned */
    float *evict_p;           /* (n_heads, max_ctx) a decode step's probabilities for decode_evict (per query head
                                 for ACCUMULATED) and row_scores_add's chunk scores; owned */
    float *row_scores;        /* (n_layers, n_heads, max_ctx) the running scores per query head (row_scores_add,
                                 decode_evict's ACCUMULATED); owned */
    float *lse;               /* (max_chunk, n_heads) log-sum-exp of each query row of the last prefill attention,
                                 for window_scores; owned */
    int lse_layer, lse_pos0, lse_n; /* what `lse` holds: that layer's chunk of lse_n rows at lse_pos0 (layer -1:
                                       nothing) */
    /* Deferred compression (backend.h: method_stash / method_join): two snapshot slots, by layer parity, of
     * the Q rows a deferred layer's window_scores reads and the log-sum-exps its attention left for them, so
     * the deferred scores are the very numbers an immediate call computes. */
    struct cpu_stash {
        int layer;                   /* -1: empty */
        int row0, n;                 /* the chunk's rows row0 .. row0 + n - 1 */
        int lse_ok, lse_pos0, lse_n; /* lse holds those rows' log-sum-exps; the attention's lse_pos0, lse_n */
        float *q, *lse;              /* (stash_rows, H, d), (stash_rows, H): views into stash_mem */
    } stash[2];
    int stash_rows;          /* min(max_chunk, KS_BACKEND_STASH_ROWS) */
    float *stash_mem;        /* owned */
    unsigned char *deferred; /* (n_layers) 1: the layer is stashed until the join; owned */
    ks_kvcache cache;
};

static void cpu_free(ks_backend *b) {
    if (!b) return;
    free(b->arena);
    free(b->pos);
    free(b->start);
    free(b->score_work);
    free(b->evict_p);
    free(b->row_scores);
    free(b->lse);
    free(b->stash_mem);
    free(b->deferred);
    ks_kvcache_free(&b->cache);
    free(b);
}

static ks_status cpu_init(ks_backend **out, const ks_model *m, const ks_backend_params *p) {
    const ks_model_config *c = &m->cfg;
    KS_ASSERT(p->max_ctx > 0 && p->max_chunk > 0);
    if (c->head_dim > KS_FAST_MAX_HEAD_DIM || c->head_dim % 2)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: head_dim %d is not supported by the cpu backend (even, <= %d)",
                       m->source, c->head_dim, KS_FAST_MAX_HEAD_DIM);
    ks_backend *b = ks_calloc(1, sizeof *b, "cpu backend");
    if (!b) return KS_ERR_NOMEM;
    b->m = m;
    b->cfg = c;
    b->max_chunk = p->max_chunk;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int width[KS_BUF_COUNT] = {[KS_BUF_X] = c->hidden, [KS_BUF_XN] = c->hidden, [KS_BUF_Q] = qd,
                                     [KS_BUF_K] = kvd,       [KS_BUF_V] = kvd,        [KS_BUF_ATT] = qd,
                                     [KS_BUF_GATE] = c->ffn, [KS_BUF_UP] = c->ffn};
    int own = p->kv_rows > 0 && p->kv_rows < p->max_ctx ? p->kv_rows : p->max_ctx;
    b->x_rows = own < p->max_ctx && p->max_ctx > p->max_chunk ? p->max_ctx : p->max_chunk;
    size_t floats = (size_t)KS_BACKEND_MAX_LOGIT_ROWS * c->vocab + c->head_dim / 2;
    for (int i = 0; i < KS_BUF_COUNT; i++) floats += (size_t)(i == KS_BUF_X ? b->x_rows : p->max_chunk) * width[i];
    b->arena = ks_malloc(sizeof(float) * floats, "cpu backend activations");
    b->pos = ks_malloc(sizeof(int32_t) * p->max_chunk, "cpu backend positions");
    b->start = ks_malloc(sizeof(int32_t) * c->n_kv_heads, "cpu backend window starts");
    b->score_work = ks_malloc(sizeof(float) * 2 * c->n_heads * (size_t)p->max_ctx, "cpu backend score rows");
    b->lse = ks_malloc(sizeof(float) * c->n_heads * (size_t)p->max_chunk, "cpu backend attention log-sum-exps");
    b->evict_p = ks_malloc(sizeof(float) * c->n_heads * (size_t)p->max_ctx, "cpu backend eviction scores");
    b->row_scores = ks_malloc(sizeof(float) * (m->last_layer - m->first_layer) * c->n_heads * (size_t)p->max_ctx,
                              "cpu backend running scores");
    b->lse_layer = -1;
    b->stash_rows = p->max_chunk < KS_BACKEND_STASH_ROWS ? p->max_chunk : KS_BACKEND_STASH_ROWS;
    size_t slot = (size_t)b->stash_rows * (qd + c->n_heads);
    b->stash_mem = ks_malloc(sizeof(float) * 2 * slot, "cpu backend query snapshots");
    b->deferred = ks_calloc(m->last_layer - m->first_layer, 1, "cpu backend deferred layers");
    if (!b->arena || !b->pos || !b->start || !b->score_work || !b->lse || !b->stash_mem || !b->deferred ||
        !b->evict_p || !b->row_scores) {
        cpu_free(b);
        return KS_ERR_NOMEM;
    }
    for (int i = 0; i < 2; i++) {
        b->stash[i].layer = -1;
        b->stash[i].q = b->stash_mem + i * slot;
        b->stash[i].lse = b->stash[i].q + (size_t)b->stash_rows * qd;
    }
    float *f = b->arena;
    for (int i = 0; i < KS_BUF_COUNT; i++) {
        b->width[i] = width[i];
        b->buf[i] = f;
        f += (size_t)(i == KS_BUF_X ? b->x_rows : p->max_chunk) * width[i];
    }
    b->x = b->buf[KS_BUF_X];
    b->logits = f;
    f += (size_t)KS_BACKEND_MAX_LOGIT_ROWS * c->vocab;
    b->inv_freq = f;
    ks_rope_inv_freq(c, b->inv_freq);
    ks_status st = ks_kvcache_init(&b->cache, m->last_layer - m->first_layer, c->n_kv_heads, c->head_dim,
                                   p->max_ctx, own, 1);
    if (st != KS_OK) {
        cpu_free(b);
        return st;
    }
    ks_fast_set_threads(p->threads);
    static int hinted;
    const char *core = ks_fast_blas_coretype_hint();
    if (core && !hinted++)
        ks_log_warn("OpenBLAS does not know this CPU and runs pre-AVX2 kernels: export OPENBLAS_CORETYPE=%s for "
                    "about 2x faster CPU compute", core);
    *out = b;
    return KS_OK;
}

static const ks_layer_weights *layer_weights(const ks_backend *b, int layer) {
    KS_ASSERT(layer >= b->m->first_layer && layer < b->m->last_layer);
    return &b->m->layers[layer - b->m->first_layer];
}

static ks_status cpu_embed(ks_backend *b, const int32_t *tokens, int n) {
    KS_ASSERT(b->m->embed && n <= b->max_chunk);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= b->cfg->vocab)
            return ks_fail(KS_ERR_RANGE, "%s: token id %d is outside the model's vocabulary (vocab_size %d); "
                                         "is the tokenizer from another model?",
                           b->m->source, tokens[t], b->cfg->vocab);
    ks_ref_embed(b->buf[KS_BUF_X], tokens, n, b->m->embed, b->cfg->hidden);
    return KS_OK;
}

static ks_status cpu_hidden_write(ks_backend *b, const float *host, int n) {
    KS_ASSERT(n <= b->max_chunk);
    memcpy(b->buf[KS_BUF_X], host, sizeof(float) * n * b->cfg->hidden);
    return KS_OK;
}

static ks_status cpu_hidden_read(ks_backend *b, float *host, int n) {
    KS_ASSERT(n <= b->max_chunk);
    memcpy(host, b->buf[KS_BUF_X], sizeof(float) * n * b->cfg->hidden);
    return KS_OK;
}

static ks_status cpu_residual_at(ks_backend *b, int row0) {
    KS_ASSERT(row0 >= 0 && (row0 == 0 || row0 < b->x_rows)); /* callers keep row0 + n <= x_rows */
    b->buf[KS_BUF_X] = b->x + (size_t)row0 * b->cfg->hidden;
    return KS_OK;
}

static ks_status cpu_rmsnorm(ks_backend *b, int layer, ks_weight w, int n) {
    const ks_layer_weights *lw = layer_weights(b, layer);
    KS_ASSERT((w == KS_W_ATTN_NORM || w == KS_W_FFN_NORM) && n <= b->max_chunk);
    ks_fast_rmsnorm(b->buf[KS_BUF_XN], b->buf[KS_BUF_X], w == KS_W_ATTN_NORM ? lw->attn_norm : lw->ffn_norm, n,
                    b->cfg->hidden, b->cfg->rms_eps);
    return KS_OK;
}

/* out[0..n) = in[0..n) W^T (+ bias), or out += ... when accumulate. */
static void project(ks_backend *b, const float *W, const float *bias, ks_buf in, ks_buf out, int n, int accumulate) {
    KS_ASSERT(n <= b->max_chunk);
    ks_fast_gemm(b->buf[out], b->buf[in], W, bias, n, b->width[in], b->width[out], accumulate);
}

static ks_status cpu_qkv_rope_append(ks_backend *b, int layer, int n, int pos0) {
    const ks_layer_weights *lw = layer_weights(b, layer);
    const ks_model_config *c = b->cfg;
    const int l = layer - b->m->first_layer;
    project(b, lw->wq, lw->bq, KS_BUF_XN, KS_BUF_Q, n, 0);
    project(b, lw->wk, lw->bk, KS_BUF_XN, KS_BUF_K, n, 0);
    project(b, lw->wv, lw->bv, KS_BUF_XN, KS_BUF_V, n, 0);
    for (int t = 0; t < n; t++) b->pos[t] = pos0 + t;
    ks_fast_rope(b->buf[KS_BUF_Q], b->pos, n, c->n_heads, c->head_dim, b->inv_freq);
    ks_fast_rope(b->buf[KS_BUF_K], b->pos, n, c->n_kv_heads, c->head_dim, b->inv_freq);
    if (ks_kvcache_needs_slot(&b->cache, l, n) && ks_kvcache_take_slot(&b->cache, l) < 0)
        return ks_kvcache_no_slot(&b->cache, layer);
    ks_kvcache_append(&b->cache, l, b->buf[KS_BUF_K], b->buf[KS_BUF_V], n, pos0);
    return KS_OK;
}

static ks_status cpu_gate_up_swiglu(ks_backend *b, int layer, int n) {
    const ks_layer_weights *lw = layer_weights(b, layer);
    project(b, lw->w_gate, NULL, KS_BUF_XN, KS_BUF_GATE, n, 0);
    project(b, lw->w_up, NULL, KS_BUF_XN, KS_BUF_UP, n, 0);
    ks_fast_swiglu(b->buf[KS_BUF_GATE], b->buf[KS_BUF_GATE], b->buf[KS_BUF_UP], (int64_t)n * b->cfg->ffn);
    return KS_OK;
}

static ks_status cpu_out_proj_residual_norm(ks_backend *b, int layer, ks_weight w, int n, int norm_layer,
                                            ks_weight norm_w) {
    const ks_layer_weights *lw = layer_weights(b, layer);
    KS_ASSERT(w == KS_W_O || w == KS_W_DOWN);
    if (w == KS_W_O) project(b, lw->wo, lw->bo, KS_BUF_ATT, KS_BUF_X, n, 1);
    else project(b, lw->w_down, NULL, KS_BUF_GATE, KS_BUF_X, n, 1);
    return norm_layer >= 0 ? cpu_rmsnorm(b, norm_layer, norm_w, n) : KS_OK;
}

/* The held layer index of absolute `layer` (asserted in range). */
static int held_layer(const ks_backend *b, int layer) {
    int l = layer - b->m->first_layer;
    KS_ASSERT(l >= 0 && l < b->cache.n_layers);
    return l;
}

static float attn_scale(const ks_model_config *c) { return 1.0f / sqrtf((float)c->head_dim); }

/* The layer's sliding window (0 = full attention): Qwen2 slides only from max_window_layers on. */
static int layer_window(const ks_model_config *c, int layer) {
    return layer >= c->swa_first_layer ? c->sliding_window : 0;
}

static ks_status cpu_attention_prefill(ks_backend *b, int layer, int n, int pos0) {
    int l = held_layer(b, layer);
    const ks_model_config *c = b->cfg;
    KS_ASSERT(ks_kvcache_is_dense(&b->cache, l, pos0 + n));
    int window = layer_window(c, layer); /* the scoring op's softmax is causal without a window */
    ks_fast_attention(b->buf[KS_BUF_ATT], b->buf[KS_BUF_Q], ks_kvcache_k(&b->cache, l), ks_kvcache_v(&b->cache, l),
                      n, pos0 + n, ks_kvcache_stride(&b->cache, l), c->n_heads, c->n_kv_heads, c->head_dim, pos0,
                      window, attn_scale(c),
                      window ? NULL : b->lse);
    b->lse_layer = window ? -1 : layer;
    b->lse_pos0 = pos0;
    b->lse_n = n;
    return KS_OK;
}

static ks_status cpu_attention_decode(ks_backend *b, int layer, int qpos) {
    int l = held_layer(b, layer);
    const ks_model_config *c = b->cfg;
    for (int h = 0; h < c->n_kv_heads; h++)
        b->start[h] = ks_kvcache_window_start(&b->cache, l, h, qpos, layer_window(c, layer));
    ks_fast_attention_decode(b->buf[KS_BUF_ATT], b->buf[KS_BUF_Q], ks_kvcache_k(&b->cache, l),
                             ks_kvcache_v(&b->cache, l), b->start, ks_kvcache_len(&b->cache, l),
                             ks_kvcache_stride(&b->cache, l),
                             c->n_heads, c->n_kv_heads, c->head_dim, attn_scale(c));
    return KS_OK;
}

static ks_status cpu_window_scores(ks_backend *b, int layer, const ks_window_args *a, float *out, int ld,
                                   ks_window_summary *sum) {
    int l = held_layer(b, layer);
    const ks_model_config *c = b->cfg;
    KS_ASSERT(ld <= b->cache.cap && a->n_keys <= ld && a->q_row0 + a->n_q <= b->max_chunk &&
              ks_kvcache_is_dense(&b->cache, l, a->n_keys));
    ks_window_args at = *a;
    const float *q = b->buf[KS_BUF_Q], *lse = b->lse;
    int same = b->lse_layer == layer && ks_window_lse_serves(b->lse_pos0, b->lse_n, a);
    if (b->deferred[l]) { /* the snapshot: chunk row r is its row r - row0 (positions unchanged) */
        const struct cpu_stash *s = &b->stash[l & 1];
        KS_ASSERT(s->layer == layer && a->q_row0 >= s->row0 && a->q_row0 + a->n_q <= s->row0 + s->n);
        at.q_row0 -= s->row0, at.q_pos0 += s->row0;
        q = s->q, lse = s->lse;
        same = s->lse_ok && ks_window_lse_serves(s->lse_pos0, s->lse_n, a);
    }
    ks_fast_window_scores(out, ld, sum, q, ks_kvcache_k(&b->cache, l), c->n_heads, c->n_kv_heads, c->head_dim,
                          ks_kvcache_stride(&b->cache, l), attn_scale(c), &at, same ? lse : NULL, b->score_work);
    return KS_OK;
}

static ks_status cpu_attention_decode_probs(ks_backend *b, int layer, int qpos, ks_gqa_reduce reduce, float *out,
                                            int ld) {
    int l = held_layer(b, layer);
    const ks_model_config *c = b->cfg;
    KS_ASSERT(ld <= b->cache.cap);
    for (int h = 0; h < c->n_kv_heads; h++)
        b->start[h] = ks_kvcache_window_start(&b->cache, l, h, qpos, layer_window(c, layer));
    ks_fast_attention_decode_probs(out, ld, b->buf[KS_BUF_Q], ks_kvcache_k(&b->cache, l), b->start,
                                   ks_kvcache_len(&b->cache, l), ks_kvcache_stride(&b->cache, l), c->n_heads,
                                   c->n_kv_heads,
                                   c->head_dim, attn_scale(c), reduce, b->score_work);
    return KS_OK;
}

static ks_status cpu_key_norms(ks_backend *b, int layer, float *out, int ld) {
    int l = held_layer(b, layer);
    ks_ref_key_norms(out, ld, ks_kvcache_k(&b->cache, l), ks_kvcache_len(&b->cache, l), ks_kvcache_stride(&b->cache, l),
                     b->cfg->n_kv_heads, b->cfg->head_dim);
    return KS_OK;
}

static ks_status cpu_kv_compact(ks_backend *b, int layer, const int32_t *keep, const int32_t *n_keep, int ld) {
    int l = held_layer(b, layer);
    KS_TRY(ks_kvcache_compact_fits(&b->cache, l, layer, n_keep));
    ks_kvcache_compact(&b->cache, l, keep, n_keep, ld); /* checks the keep lists before any row moves */
    ks_ref_kv_compact(ks_kvcache_k(&b->cache, l), ks_kvcache_v(&b->cache, l), keep, n_keep, ld,
                      ks_kvcache_stride(&b->cache, l), b->cfg->n_kv_heads, b->cfg->head_dim);
    if (b->cache.slot[l] >= 0) ks_kvcache_leave_slot(&b->cache, l); /* the kept rows, to the layer's own rows */
    return KS_OK;
}

/* The layer's running scores, (n_heads, cap): one row per query head. */
static float *layer_row_scores(const ks_backend *b, int l) {
    return b->row_scores + (size_t)l * b->cfg->n_heads * b->cache.cap;
}

static int group_size(const ks_backend *b) { return b->cfg->n_heads / b->cfg->n_kv_heads; }

static ks_status cpu_decode_evict(ks_backend *b, int layer, int qpos, const ks_evict_args *a) {
    int l = held_layer(b, layer), acc = a->rule == KS_EVICT_ACCUMULATED;
    const float *p = NULL;
    if (a->rule != KS_EVICT_SINK) { /* ACCUMULATED: per query head, reduced only to choose */
        KS_TRY(cpu_attention_decode_probs(b, layer, qpos, acc ? KS_GQA_NONE : a->reduce, b->evict_p, b->cache.cap));
        p = b->evict_p;
    }
    ks_kvcache_evict(&b->cache, l, a, group_size(b), p, acc ? layer_row_scores(b, l) : NULL, b->cache.cap);
    return KS_OK;
}

static ks_status cpu_row_scores_add(ks_backend *b, int layer, const ks_window_args *a) {
    int l = held_layer(b, layer);
    ks_window_args w = ks_window_scores_only(a);
    KS_TRY(cpu_window_scores(b, layer, &w, b->evict_p, b->cache.cap, NULL));
    ks_row_scores_fold(layer_row_scores(b, l), b->cache.cap, b->evict_p, b->cache.cap, b->cfg->n_heads, a->q_pos0,
                       a->n_keys);
    return KS_OK;
}

static ks_status cpu_row_scores_read(ks_backend *b, int layer, float *out, int ld) {
    int l = held_layer(b, layer);
    ks_row_scores_copy(out, ld, layer_row_scores(b, l), b->cache.cap, ks_kvcache_len(&b->cache, l),
                       b->cfg->n_kv_heads, group_size(b));
    return KS_OK;
}

static ks_status cpu_row_scores_load(ks_backend *b, int layer, const float *scores, int ld) {
    int l = held_layer(b, layer);
    ks_row_scores_copy(layer_row_scores(b, l), b->cache.cap, scores, ld, ks_kvcache_len(&b->cache, l),
                       b->cfg->n_kv_heads, group_size(b));
    return KS_OK;
}

static ks_status cpu_method_stash(ks_backend *b, int layer, int q_row0, int n_q, int *deferred) {
    int l = held_layer(b, layer);
    const int H = b->cfg->n_heads, qd = H * b->cfg->head_dim;
    KS_ASSERT(n_q >= 0 && q_row0 >= 0 && q_row0 + n_q <= b->max_chunk);
    *deferred = n_q <= b->stash_rows;
    if (!*deferred) return KS_OK;
    struct cpu_stash *s = &b->stash[l & 1];
    s->layer = layer, s->row0 = q_row0, s->n = n_q;
    s->lse_ok = b->lse_layer == layer && q_row0 + n_q <= b->lse_n;
    s->lse_pos0 = b->lse_pos0, s->lse_n = b->lse_n;
    memcpy(s->q, b->buf[KS_BUF_Q] + (size_t)q_row0 * qd, sizeof(float) * n_q * qd);
    if (s->lse_ok) memcpy(s->lse, b->lse + (size_t)q_row0 * H, sizeof(float) * n_q * H);
    b->deferred[l] = 1;
    return KS_OK;
}

/* One thread computes everything in order: the join only clears the marks. */
static ks_status cpu_method_join(ks_backend *b) {
    memset(b->deferred, 0, (size_t)b->cache.n_layers);
    b->stash[0].layer = b->stash[1].layer = -1;
    return KS_OK;
}

static ks_status cpu_logits(ks_backend *b, int row0, int n) {
    const ks_model_config *c = b->cfg;
    KS_ASSERT(b->m->final_norm && b->m->lm_head && n <= KS_BACKEND_MAX_LOGIT_ROWS && row0 + n <= b->max_chunk);
    float *xn = b->buf[KS_BUF_XN];
    ks_fast_rmsnorm(xn, b->buf[KS_BUF_X] + (size_t)row0 * c->hidden, b->m->final_norm, n, c->hidden, c->rms_eps);
    ks_fast_gemm(b->logits, xn, b->m->lm_head, NULL, n, c->hidden, c->vocab, 0);
    return KS_OK;
}

static ks_status cpu_argmax(ks_backend *b, int n, int32_t *ids) {
    KS_ASSERT(n <= KS_BACKEND_MAX_LOGIT_ROWS);
    for (int i = 0; i < n; i++) ids[i] = ks_ref_argmax(b->logits + (size_t)i * b->cfg->vocab, b->cfg->vocab);
    return KS_OK;
}

static ks_status cpu_logits_read(ks_backend *b, int n, float *host) {
    KS_ASSERT(n <= KS_BACKEND_MAX_LOGIT_ROWS);
    memcpy(host, b->logits, sizeof(float) * n * b->cfg->vocab);
    return KS_OK;
}

static ks_kvcache *cpu_kvcache(ks_backend *b) { return &b->cache; }

const ks_backend_ops ks_backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .embed = cpu_embed,
    .hidden_write = cpu_hidden_write,
    .hidden_read = cpu_hidden_read,
    .residual_at = cpu_residual_at,
    .rmsnorm = cpu_rmsnorm,
    .qkv_rope_append = cpu_qkv_rope_append,
    .attention_prefill = cpu_attention_prefill,
    .attention_decode = cpu_attention_decode,
    .gate_up_swiglu = cpu_gate_up_swiglu,
    .out_proj_residual_norm = cpu_out_proj_residual_norm,
    .window_scores = cpu_window_scores,
    .attention_decode_probs = cpu_attention_decode_probs,
    .key_norms = cpu_key_norms,
    .kv_compact = cpu_kv_compact,
    .decode_evict = cpu_decode_evict,
    .row_scores_load = cpu_row_scores_load,
    .row_scores_add = cpu_row_scores_add,
    .row_scores_read = cpu_row_scores_read,
    .logits = cpu_logits,
    .argmax = cpu_argmax,
    .logits_read = cpu_logits_read,
    .kvcache = cpu_kvcache,
    .method_stash = cpu_method_stash,
    .method_join = cpu_method_join,
};
