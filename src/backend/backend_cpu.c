/* backend_cpu.c — the "cpu" backend: fp32 on the host, computing with kernels/cpu/fast.h (OpenBLAS GEMMs,
 * OpenMP loops). Weights are the ks_model's own tensors (borrowed, never copied): fp32, or GGML blocks for a
 * model loaded packed, whose products go through kernels/cpu/quant.h with its scratch `qw` (int8 activations for
 * decode, dequantized fp32 tiles for prefill chunks); activations are one block carved into the ks_buf views;
 * each sequence slot's KV cache has host storage. A batched decode step (use_batch) gives every row the numbers
 * it gets alone: fp32 products row by row over each thread's slice of W (ks_fast_gemm_rows), packed ones
 * through the int8 path in groups of rows below its tiled threshold (per-row dots), attention per row over its
 * slot's cache. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "cpu/fast.h"
#include "cpu/quant.h"
#include "cpu/ref.h"
#include "backend/backend.h"
#include "backend/kvstore_cpu.h"

/* One sequence slot: its cache and the KV store over it, reading the Q buffer and the backend's `lse`. */
typedef struct cpu_seq {
    ks_kvcache cache;
    ks_kvstore_cpu kv;
} cpu_seq;

struct ks_backend {
    const ks_model *m;
    const ks_model_config *cfg;
    int max_chunk;
    int rows;                 /* rows of every buffer but X: max(max_chunk, max_batch) */
    int width[KS_BUF_COUNT]; /* floats per row of each buffer */
    float *buf[KS_BUF_COUNT]; /* (rows, width[i]) views into `arena`; X: rows x_row0.. of `x` */
    float *x;                 /* (x_rows, hidden) the residual stream; view into `arena` */
    int x_rows;               /* `rows`, or max_ctx in the cache's budget mode */
    float *logits;            /* (logit_rows, vocab) view into `arena` */
    int logit_rows;           /* ks_backend_logit_rows(max_batch) */
    float *inv_freq;          /* (head_dim / 2) RoPE frequencies with the config's scaling; view */
    float *arena;             /* owned */
    int32_t *pos;             /* (rows) positions for rope; owned */
    ks_quant_work qw;         /* the packed products' scratch (`rows` rows of the widest input); owned */
    int32_t *start;           /* (n_kv_heads) first row a decode query sees per head; owned */
    float *lse;               /* (rows, n_heads) log-sum-exp of each query row of the last prefill attention,
                                 which the current slot's KV store's scoring reuses (kv.lse_layer says what it
                                 holds); owned */
    cpu_seq *seqs;            /* (n_seqs) the sequence slots; owned */
    int n_seqs;
    cpu_seq *cur;             /* the current slot (use_slot) */
    const ks_decode_batch *batch; /* the batched decode step's rows (use_batch), NULL: none; borrowed */
};

static float attn_scale(const ks_model_config *c) { return 1.0f / sqrtf((float)c->head_dim); }

static void cpu_free(ks_backend *b) {
    if (!b) return;
    free(b->arena);
    free(b->pos);
    ks_quant_work_free(&b->qw);
    free(b->start);
    free(b->lse);
    for (int i = 0; b->seqs && i < b->n_seqs; i++) {
        ks_kvstore_cpu_free(&b->seqs[i].kv);
        ks_kvcache_free(&b->seqs[i].cache);
    }
    free(b->seqs);
    free(b);
}

/* Slot i's cache and store (own: rows per layer of its own storage). */
static ks_status seq_init(ks_backend *b, cpu_seq *s, const ks_backend_params *p, int own) {
    const ks_model *m = b->m;
    const ks_model_config *c = b->cfg;
    ks_status st = ks_kvcache_init(&s->cache, m->first_layer, m->last_layer - m->first_layer, c->n_kv_heads,
                                   c->head_dim, p->max_ctx, own, 1);
    ks_kvstore_cpu_params kp = {.cache = &s->cache, .q = b->buf[KS_BUF_Q], .lse = b->lse, .n_heads = c->n_heads,
                                .max_chunk = b->rows, .scale = attn_scale(c), .window = c->sliding_window,
                                .window_first = c->swa_first_layer, .packed_rows = p->packed_rows};
    return st == KS_OK ? ks_kvstore_cpu_init(&s->kv, &kp) : st;
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
    b->n_seqs = p->max_batch > 1 ? p->max_batch : 1;
    b->rows = p->max_chunk > b->n_seqs ? p->max_chunk : b->n_seqs;
    b->logit_rows = ks_backend_logit_rows(p->max_batch);
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int width[KS_BUF_COUNT] = {[KS_BUF_X] = c->hidden, [KS_BUF_XN] = c->hidden, [KS_BUF_Q] = qd,
                                     [KS_BUF_K] = kvd,       [KS_BUF_V] = kvd,        [KS_BUF_ATT] = qd,
                                     [KS_BUF_GATE] = c->ffn, [KS_BUF_UP] = c->ffn};
    int own = p->kv_rows > 0 && p->kv_rows < p->max_ctx ? p->kv_rows : p->max_ctx;
    b->x_rows = own < p->max_ctx && p->max_ctx > b->rows ? p->max_ctx : b->rows;
    size_t floats = (size_t)b->logit_rows * c->vocab + c->head_dim / 2;
    for (int i = 0; i < KS_BUF_COUNT; i++) floats += (size_t)(i == KS_BUF_X ? b->x_rows : b->rows) * width[i];
    b->arena = ks_malloc(sizeof(float) * floats, "cpu backend activations");
    b->pos = ks_malloc(sizeof(int32_t) * b->rows, "cpu backend positions");
    b->start = ks_malloc(sizeof(int32_t) * c->n_kv_heads, "cpu backend window starts");
    b->lse = ks_malloc(sizeof(float) * c->n_heads * (size_t)b->rows, "cpu backend attention log-sum-exps");
    int widest = c->hidden > qd ? c->hidden : qd;
    widest = widest > c->ffn ? widest : c->ffn;
    ks_fast_set_threads(p->threads); /* before the packed products' scratch, sized per thread */
    ks_status wst = ks_model_is_packed(m) ? ks_quant_work_init(&b->qw, b->rows, widest) : KS_OK;
    b->seqs = ks_calloc((size_t)b->n_seqs, sizeof *b->seqs, "cpu backend sequence slots");
    if (!b->arena || !b->pos || !b->start || !b->lse || !b->seqs || wst != KS_OK) {
        cpu_free(b);
        return KS_ERR_NOMEM;
    }
    float *f = b->arena;
    for (int i = 0; i < KS_BUF_COUNT; i++) {
        b->width[i] = width[i];
        b->buf[i] = f;
        f += (size_t)(i == KS_BUF_X ? b->x_rows : b->rows) * width[i];
    }
    b->x = b->buf[KS_BUF_X];
    b->logits = f;
    f += (size_t)b->logit_rows * c->vocab;
    b->inv_freq = f;
    ks_rope_inv_freq(c, b->inv_freq);
    ks_status st = KS_OK;
    for (int i = 0; i < b->n_seqs && st == KS_OK; i++) st = seq_init(b, &b->seqs[i], p, own);
    b->cur = &b->seqs[0];
    if (st != KS_OK) {
        cpu_free(b);
        return st;
    }
    static int hinted;
    const char *core = ks_fast_blas_coretype_hint();
    if (core && !hinted++)
        ks_log_warn("OpenBLAS does not know this CPU and runs pre-AVX2 kernels: export OPENBLAS_CORETYPE=%s for "
                    "about 2x faster CPU compute", core);
    *out = b;
    return KS_OK;
}

static ks_status cpu_embed(ks_backend *b, const int32_t *tokens, int n) {
    KS_ASSERT((b->m->embed || b->m->p_embed.data) && n <= b->rows);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= b->cfg->vocab)
            return ks_fail(KS_ERR_RANGE, "%s: token id %d is outside the model's vocabulary (vocab_size %d); "
                                         "is the tokenizer from another model?",
                           b->m->source, tokens[t], b->cfg->vocab);
    if (b->m->p_embed.data) ks_quant_rows(b->buf[KS_BUF_X], &b->m->p_embed, tokens, n);
    else ks_ref_embed(b->buf[KS_BUF_X], tokens, n, b->m->embed, b->cfg->hidden);
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

static ks_status cpu_use_slot(ks_backend *b, int slot) {
    KS_ASSERT(slot >= 0 && slot < b->n_seqs && !b->batch);
    if (b->cur != &b->seqs[slot]) b->cur->kv.lse_layer = -1; /* the next slot's prefill reuses `lse` */
    b->cur = &b->seqs[slot];
    return KS_OK;
}

/* Each batch slot's store reads its row of Q as its decode query; NULL: every store reads from row 0. */
static ks_status cpu_use_batch(ks_backend *b, const ks_decode_batch *batch) {
    KS_ASSERT(!batch || (batch->n >= 1 && batch->n <= b->n_seqs));
    const int qd = b->cfg->n_heads * b->cfg->head_dim;
    for (int i = 0; i < b->n_seqs; i++) b->seqs[i].kv.p.q = b->buf[KS_BUF_Q];
    for (int i = 0; batch && i < batch->n; i++) {
        KS_ASSERT(batch->slots[i] >= 0 && batch->slots[i] < b->n_seqs);
        b->seqs[batch->slots[i]].kv.p.q = b->buf[KS_BUF_Q] + (size_t)i * qd;
    }
    b->batch = batch;
    return KS_OK;
}

static ks_status cpu_residual_at(ks_backend *b, int row0) {
    KS_ASSERT(row0 >= 0 && (row0 == 0 || row0 < b->x_rows)); /* callers keep row0 + n <= x_rows */
    b->buf[KS_BUF_X] = b->x + (size_t)row0 * b->cfg->hidden;
    return KS_OK;
}

static ks_status cpu_rmsnorm(ks_backend *b, int layer, ks_weight w, int n) {
    const ks_layer_weights *lw = ks_model_layer(b->m, layer);
    KS_ASSERT((w == KS_W_ATTN_NORM || w == KS_W_FFN_NORM) && n <= b->rows);
    ks_fast_rmsnorm(b->buf[KS_BUF_XN], b->buf[KS_BUF_X], w == KS_W_ATTN_NORM ? lw->attn_norm : lw->ffn_norm, n,
                    b->cfg->hidden, b->cfg->rms_eps);
    return KS_OK;
}

/* One projection: out = in W^T (+ bias); the weight fp32 (W) or packed (P.data set). */
typedef struct projection {
    const float *W;
    const ks_qmat *P;
    const float *bias;
    ks_buf out;
} projection;

/* The packed products of rows [0, n) of x: in a batched decode step in groups of rows below the tiled path's
 * threshold, whose int8 dots give each row the numbers it gets alone. */
static void project_packed(ks_backend *b, ks_quant_out *outs, int n_outs, const float *x, int in_w, int n,
                           int accumulate) {
    const int group = b->batch ? KS_QUANT_TILE_MIN_ROWS - 1 : n;
    for (int t0 = 0; t0 < n; t0 += group) {
        int g = n - t0 < group ? n - t0 : group;
        ks_quant_out o[KS_QUANT_MAX_OUTS];
        for (int i = 0; i < n_outs; i++) {
            o[i] = outs[i];
            o[i].out += (size_t)t0 * outs[i].w->rows;
        }
        ks_quant_gemm_multi(o, n_outs, x + (size_t)t0 * in_w, g, accumulate, &b->qw);
    }
}

/* out[0..n) = x[0..n) W^T (+ bias), fp32 W: in a batched decode step row by row (each row's numbers alone). */
static void project_f32(ks_backend *b, float *out, const float *x, const float *W, const float *bias, int n,
                        int in_w, int out_w, int accumulate) {
    if (b->batch) ks_fast_gemm_rows(out, x, W, bias, n, in_w, out_w, accumulate);
    else ks_fast_gemm(out, x, W, bias, n, in_w, out_w, accumulate);
}

/* out[0..n) = in[0..n) W^T (+ bias) for each projection of `in`, or out += ... when accumulate: the packed ones
 * together (one quantization of `in`, one thread team), the fp32 ones through OpenBLAS. */
static void project(ks_backend *b, const projection *pr, int np, ks_buf in, int n, int accumulate) {
    KS_ASSERT(n <= b->rows && np <= KS_QUANT_MAX_OUTS);
    ks_quant_out packed[KS_QUANT_MAX_OUTS];
    int n_packed = 0;
    for (int i = 0; i < np; i++) {
        if (pr[i].P->data)
            packed[n_packed++] = (ks_quant_out){.w = pr[i].P, .bias = pr[i].bias, .out = b->buf[pr[i].out]};
        else
            project_f32(b, b->buf[pr[i].out], b->buf[in], pr[i].W, pr[i].bias, n, b->width[in], b->width[pr[i].out],
                        accumulate);
    }
    if (n_packed) project_packed(b, packed, n_packed, b->buf[in], b->width[in], n, accumulate);
}

static ks_status cpu_qkv_rope_append(ks_backend *b, int layer, int n, int pos0) {
    const ks_layer_weights *lw = ks_model_layer(b->m, layer);
    const ks_model_config *c = b->cfg;
    const projection qkv[3] = {{lw->wq, &lw->pq, lw->bq, KS_BUF_Q}, {lw->wk, &lw->pk, lw->bk, KS_BUF_K},
                               {lw->wv, &lw->pv, lw->bv, KS_BUF_V}};
    project(b, qkv, 3, KS_BUF_XN, n, 0);
    for (int t = 0; t < n; t++) b->pos[t] = b->batch ? b->batch->pos[t] : pos0 + t;
    ks_fast_rope(b->buf[KS_BUF_Q], b->pos, n, c->n_heads, c->head_dim, b->inv_freq);
    ks_fast_rope(b->buf[KS_BUF_K], b->pos, n, c->n_kv_heads, c->head_dim, b->inv_freq);
    if (b->batch) { /* row t: one decode token of its slot (decode rows fit a layer's own storage) */
        KS_ASSERT(n == b->batch->n);
        const size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
        for (int t = 0; t < n; t++)
            ks_kvcache_append(&b->seqs[b->batch->slots[t]].cache, layer, b->buf[KS_BUF_K] + t * kvd,
                              b->buf[KS_BUF_V] + t * kvd, 1, b->pos[t]);
        return KS_OK;
    }
    ks_kvcache *kc = &b->cur->cache;
    if (ks_kvcache_needs_slot(kc, layer, n) && ks_kvcache_take_slot(kc, layer) < 0)
        return ks_kvcache_no_slot(kc, layer);
    ks_kvcache_append(kc, layer, b->buf[KS_BUF_K], b->buf[KS_BUF_V], n, pos0);
    return KS_OK;
}

static ks_status cpu_gate_up_swiglu(ks_backend *b, int layer, int n) {
    const ks_layer_weights *lw = ks_model_layer(b->m, layer);
    const projection gate_up[2] = {{lw->w_gate, &lw->p_gate, NULL, KS_BUF_GATE}, {lw->w_up, &lw->p_up, NULL, KS_BUF_UP}};
    project(b, gate_up, 2, KS_BUF_XN, n, 0);
    ks_fast_swiglu(b->buf[KS_BUF_GATE], b->buf[KS_BUF_GATE], b->buf[KS_BUF_UP], (int64_t)n * b->cfg->ffn);
    return KS_OK;
}

static ks_status cpu_out_proj_residual_norm(ks_backend *b, int layer, ks_weight w, int n, int norm_layer,
                                            ks_weight norm_w) {
    const ks_layer_weights *lw = ks_model_layer(b->m, layer);
    KS_ASSERT(w == KS_W_O || w == KS_W_DOWN);
    const projection o = {lw->wo, &lw->po, lw->bo, KS_BUF_X}, down = {lw->w_down, &lw->p_down, NULL, KS_BUF_X};
    if (w == KS_W_O) project(b, &o, 1, KS_BUF_ATT, n, 1);
    else project(b, &down, 1, KS_BUF_GATE, n, 1);
    return norm_layer >= 0 ? cpu_rmsnorm(b, norm_layer, norm_w, n) : KS_OK;
}

/* The layer's sliding window (0 = full attention): Qwen2 slides only from max_window_layers on. */
static int layer_window(const ks_model_config *c, int layer) {
    return layer >= c->swa_first_layer ? c->sliding_window : 0;
}

static ks_status cpu_attention_prefill(ks_backend *b, int layer, int n, int pos0, const ks_block_list *blocks) {
    const ks_model_config *c = b->cfg;
    const ks_kvcache *kc = &b->cur->cache;
    KS_ASSERT(!b->batch && ks_kvcache_is_dense(kc, layer, pos0 + n));
    int window = layer_window(c, layer); /* the scoring op's softmax is causal without a window */
    const float *k = ks_kvcache_k(kc, layer), *v = ks_kvcache_v(kc, layer);
    int lse = !window && !blocks; /* a sparse attention's log-sum-exps are not the dense softmax's */
    if (blocks)
        ks_fast_attention_sparse(b->buf[KS_BUF_ATT], b->buf[KS_BUF_Q], k, v, n, pos0 + n,
                                 ks_kvcache_stride(kc, layer), c->n_heads, c->n_kv_heads, c->head_dim, pos0, window,
                                 attn_scale(c), blocks);
    else
        ks_fast_attention(b->buf[KS_BUF_ATT], b->buf[KS_BUF_Q], k, v, n, pos0 + n, ks_kvcache_stride(kc, layer),
                          c->n_heads, c->n_kv_heads, c->head_dim, pos0, window, attn_scale(c), lse ? b->lse : NULL);
    b->cur->kv.lse_layer = lse ? layer : -1;
    b->cur->kv.lse_pos0 = pos0;
    b->cur->kv.lse_n = n;
    return KS_OK;
}

/* One work item of a decode attention (a ks_team_fn). */
static void attention_item(void *ctx, int64_t item) { ks_fast_attention_decode_item(ctx, (int)item); }

/* Row `row` of ATT = the decode query in row `row` of Q at position qpos over slot s's kept rows. */
static void attention_decode_row(ks_backend *b, cpu_seq *s, int layer, int qpos, int row) {
    const ks_model_config *c = b->cfg;
    const ks_kvcache *kc = &s->cache;
    const size_t qd = (size_t)c->n_heads * c->head_dim;
    float *out = b->buf[KS_BUF_ATT] + row * qd;
    if (ks_kvstore_cpu_packed(&s->kv, layer)) { /* KIVI: packed tokens and full-precision rows (no window) */
        ks_kvstore_cpu_attention_decode(&s->kv, layer, out); /* the store's query row is this row (use_batch) */
        return;
    }
    for (int h = 0; h < c->n_kv_heads; h++)
        b->start[h] = ks_kvcache_window_start(kc, layer, h, qpos, layer_window(c, layer));
    ks_attention_decode a = {.out = out, .q = b->buf[KS_BUF_Q] + row * qd, .k = ks_kvcache_k(kc, layer),
                             .v = ks_kvcache_v(kc, layer), .start = b->start, .len = ks_kvcache_len(kc, layer),
                             .cap = ks_kvcache_stride(kc, layer), .H = c->n_heads, .Hk = c->n_kv_heads,
                             .d = c->head_dim, .scale = attn_scale(c)};
    if (ks_model_is_packed(b->m)) /* the packed products' helpers are awake: they take a share at any length */
        ks_quant_work_for(&b->qw, ks_fast_attention_decode_items(&a), attention_item, &a);
    else
        ks_fast_attention_decode(a.out, a.q, a.k, a.v, a.start, a.len, a.cap, a.H, a.Hk, a.d, a.scale);
}

static ks_status cpu_attention_decode(ks_backend *b, int layer, int qpos) {
    if (!b->batch) {
        attention_decode_row(b, b->cur, layer, qpos, 0);
        return KS_OK;
    }
    for (int i = 0; i < b->batch->n; i++)
        attention_decode_row(b, &b->seqs[b->batch->slots[i]], layer, b->batch->pos[i], i);
    return KS_OK;
}

static ks_status cpu_logits(ks_backend *b, int row0, int n) {
    const ks_model_config *c = b->cfg;
    const ks_model *m = b->m;
    KS_ASSERT(m->final_norm && (m->lm_head || m->p_lm_head.data) && n <= b->logit_rows && row0 + n <= b->x_rows);
    float *xn = b->buf[KS_BUF_XN];
    ks_fast_rmsnorm(xn, b->buf[KS_BUF_X] + (size_t)row0 * c->hidden, m->final_norm, n, c->hidden, c->rms_eps);
    ks_quant_out head = {.w = &m->p_lm_head, .out = b->logits};
    if (m->p_lm_head.data) project_packed(b, &head, 1, xn, c->hidden, n, 0);
    else project_f32(b, b->logits, xn, m->lm_head, NULL, n, c->hidden, c->vocab, 0);
    return KS_OK;
}

static ks_status cpu_argmax(ks_backend *b, int n, int32_t *ids) {
    KS_ASSERT(n <= b->logit_rows);
    for (int i = 0; i < n; i++) ids[i] = ks_ref_argmax(b->logits + (size_t)i * b->cfg->vocab, b->cfg->vocab);
    return KS_OK;
}

static ks_status cpu_logits_read(ks_backend *b, int n, float *host) {
    KS_ASSERT(n <= b->logit_rows);
    memcpy(host, b->logits, sizeof(float) * n * b->cfg->vocab);
    return KS_OK;
}

static ks_kvcache *cpu_kvcache(ks_backend *b) { return &b->cur->cache; }

static ks_kvstore *cpu_kvstore(ks_backend *b) { return &b->cur->kv.base; }

/* The layers are issued as they come; with packed weights the step first asks ks_team_pick whether its int8
 * products and attention items use the helper team, and reports how long it took. */
static ks_status cpu_decode_step(ks_backend *b, int qpos, ks_decode_kind kind, ks_status (*issue)(void *ctx),
                                 void *ctx) {
    (void)qpos, (void)kind;
    if (!ks_model_is_packed(b->m)) return issue(ctx);
    ks_quant_work *w = &b->qw;
    w->alone = !ks_team_pick_begin(&w->pick);
    w->late = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const ks_status st = issue(ctx);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ks_team_pick_end(&w->pick, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), w->late);
    w->alone = 0; /* a prefill's few-row products use the team */
    return st;
}

const ks_backend_ops ks_backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .embed = cpu_embed,
    .hidden_write = cpu_hidden_write,
    .hidden_read = cpu_hidden_read,
    /* hidden_recv, hidden_send: none, X is host memory */
    .use_slot = cpu_use_slot,
    .use_batch = cpu_use_batch,
    .residual_at = cpu_residual_at,
    .rmsnorm = cpu_rmsnorm,
    .qkv_rope_append = cpu_qkv_rope_append,
    .attention_prefill = cpu_attention_prefill,
    .attention_decode = cpu_attention_decode,
    .gate_up_swiglu = cpu_gate_up_swiglu,
    .out_proj_residual_norm = cpu_out_proj_residual_norm,
    .logits = cpu_logits,
    .argmax = cpu_argmax,
    .logits_read = cpu_logits_read,
    .kvcache = cpu_kvcache,
    .kvstore = cpu_kvstore,
    .decode_step = cpu_decode_step,
};
