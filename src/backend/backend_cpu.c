/* backend_cpu.c — the "cpu" backend: fp32 on the host, computing with kernels/cpu/fast.h (OpenBLAS GEMMs,
 * OpenMP loops). Weights are the ks_model's own tensors (borrowed, never copied): fp32, or GGML blocks for a
 * model loaded packed, whose products go through kernels/cpu/quant.h with its scratch `qw` (int8 activations for
 * decode, dequantized fp32 tiles for prefill chunks); activations are one block carved into the ks_buf views;
 * the KV cache has host storage. */
#include <math.h>
#include <string.h>

#include "core/log.h"
#include "cpu/fast.h"
#include "cpu/quant.h"
#include "cpu/ref.h"
#include "backend/backend.h"
#include "backend/kvstore_cpu.h"

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
    ks_quant_work qw;         /* the packed products' scratch (max_chunk rows of the widest input); owned */
    int32_t *start;           /* (n_kv_heads) first row a decode query sees per head; owned */
    float *lse;               /* (max_chunk, n_heads) log-sum-exp of each query row of the last prefill attention,
                                 which the KV store's scoring reuses (kv.lse_layer says what it holds); owned */
    ks_kvcache cache;
    ks_kvstore_cpu kv;        /* the KV store over `cache`, reading the Q buffer and `lse` */
};

static float attn_scale(const ks_model_config *c) { return 1.0f / sqrtf((float)c->head_dim); }

static void cpu_free(ks_backend *b) {
    if (!b) return;
    free(b->arena);
    free(b->pos);
    ks_quant_work_free(&b->qw);
    free(b->start);
    free(b->lse);
    ks_kvstore_cpu_free(&b->kv);
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
    b->lse = ks_malloc(sizeof(float) * c->n_heads * (size_t)p->max_chunk, "cpu backend attention log-sum-exps");
    int widest = c->hidden > qd ? c->hidden : qd;
    widest = widest > c->ffn ? widest : c->ffn;
    ks_fast_set_threads(p->threads); /* before the packed products' scratch, sized per thread */
    ks_status wst = ks_model_is_packed(m) ? ks_quant_work_init(&b->qw, p->max_chunk, widest) : KS_OK;
    if (!b->arena || !b->pos || !b->start || !b->lse || wst != KS_OK) {
        cpu_free(b);
        return KS_ERR_NOMEM;
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
    ks_status st = ks_kvcache_init(&b->cache, m->first_layer, m->last_layer - m->first_layer, c->n_kv_heads,
                                   c->head_dim, p->max_ctx, own, 1);
    ks_kvstore_cpu_params kp = {.cache = &b->cache, .q = b->buf[KS_BUF_Q], .lse = b->lse, .n_heads = c->n_heads,
                                .max_chunk = p->max_chunk, .scale = attn_scale(c), .window = c->sliding_window,
                                .window_first = c->swa_first_layer};
    if (st == KS_OK) st = ks_kvstore_cpu_init(&b->kv, &kp);
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
    KS_ASSERT((b->m->embed || b->m->p_embed.data) && n <= b->max_chunk);
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

static ks_status cpu_residual_at(ks_backend *b, int row0) {
    KS_ASSERT(row0 >= 0 && (row0 == 0 || row0 < b->x_rows)); /* callers keep row0 + n <= x_rows */
    b->buf[KS_BUF_X] = b->x + (size_t)row0 * b->cfg->hidden;
    return KS_OK;
}

static ks_status cpu_rmsnorm(ks_backend *b, int layer, ks_weight w, int n) {
    const ks_layer_weights *lw = ks_model_layer(b->m, layer);
    KS_ASSERT((w == KS_W_ATTN_NORM || w == KS_W_FFN_NORM) && n <= b->max_chunk);
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

/* out[0..n) = in[0..n) W^T (+ bias) for each projection of `in`, or out += ... when accumulate: the packed ones
 * together (one quantization of `in`, one thread team), the fp32 ones through OpenBLAS. */
static void project(ks_backend *b, const projection *pr, int np, ks_buf in, int n, int accumulate) {
    KS_ASSERT(n <= b->max_chunk && np <= KS_QUANT_MAX_OUTS);
    ks_quant_out packed[KS_QUANT_MAX_OUTS];
    int n_packed = 0;
    for (int i = 0; i < np; i++) {
        if (pr[i].P->data)
            packed[n_packed++] = (ks_quant_out){.w = pr[i].P, .bias = pr[i].bias, .out = b->buf[pr[i].out]};
        else
            ks_fast_gemm(b->buf[pr[i].out], b->buf[in], pr[i].W, pr[i].bias, n, b->width[in], b->width[pr[i].out],
                         accumulate);
    }
    if (n_packed) ks_quant_gemm_multi(packed, n_packed, b->buf[in], n, accumulate, &b->qw);
}

static ks_status cpu_qkv_rope_append(ks_backend *b, int layer, int n, int pos0) {
    const ks_layer_weights *lw = ks_model_layer(b->m, layer);
    const ks_model_config *c = b->cfg;
    const projection qkv[3] = {{lw->wq, &lw->pq, lw->bq, KS_BUF_Q}, {lw->wk, &lw->pk, lw->bk, KS_BUF_K},
                               {lw->wv, &lw->pv, lw->bv, KS_BUF_V}};
    project(b, qkv, 3, KS_BUF_XN, n, 0);
    for (int t = 0; t < n; t++) b->pos[t] = pos0 + t;
    ks_fast_rope(b->buf[KS_BUF_Q], b->pos, n, c->n_heads, c->head_dim, b->inv_freq);
    ks_fast_rope(b->buf[KS_BUF_K], b->pos, n, c->n_kv_heads, c->head_dim, b->inv_freq);
    if (ks_kvcache_needs_slot(&b->cache, layer, n) && ks_kvcache_take_slot(&b->cache, layer) < 0)
        return ks_kvcache_no_slot(&b->cache, layer);
    ks_kvcache_append(&b->cache, layer, b->buf[KS_BUF_K], b->buf[KS_BUF_V], n, pos0);
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
    const ks_kvcache *kc = &b->cache;
    KS_ASSERT(ks_kvcache_is_dense(kc, layer, pos0 + n));
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
    b->kv.lse_layer = lse ? layer : -1;
    b->kv.lse_pos0 = pos0;
    b->kv.lse_n = n;
    return KS_OK;
}

/* One work item of a decode attention (a ks_team_fn). */
static void attention_item(void *ctx, int64_t item) { ks_fast_attention_decode_item(ctx, (int)item); }

static ks_status cpu_attention_decode(ks_backend *b, int layer, int qpos) {
    const ks_model_config *c = b->cfg;
    const ks_kvcache *kc = &b->cache;
    if (ks_kvstore_cpu_packed(&b->kv, layer)) { /* KIVI: packed tokens and full-precision rows (no window) */
        ks_kvstore_cpu_attention_decode(&b->kv, layer, b->buf[KS_BUF_ATT]);
        return KS_OK;
    }
    for (int h = 0; h < c->n_kv_heads; h++)
        b->start[h] = ks_kvcache_window_start(kc, layer, h, qpos, layer_window(c, layer));
    ks_attention_decode a = {.out = b->buf[KS_BUF_ATT], .q = b->buf[KS_BUF_Q], .k = ks_kvcache_k(kc, layer),
                             .v = ks_kvcache_v(kc, layer), .start = b->start, .len = ks_kvcache_len(kc, layer),
                             .cap = ks_kvcache_stride(kc, layer), .H = c->n_heads, .Hk = c->n_kv_heads,
                             .d = c->head_dim, .scale = attn_scale(c)};
    if (ks_model_is_packed(b->m)) /* the packed products' helpers are awake: they take a share at any length */
        ks_quant_work_for(&b->qw, ks_fast_attention_decode_items(&a), attention_item, &a);
    else
        ks_fast_attention_decode(a.out, a.q, a.k, a.v, a.start, a.len, a.cap, a.H, a.Hk, a.d, a.scale);
    return KS_OK;
}

static ks_status cpu_logits(ks_backend *b, int row0, int n) {
    const ks_model_config *c = b->cfg;
    const ks_model *m = b->m;
    KS_ASSERT(m->final_norm && (m->lm_head || m->p_lm_head.data) && n <= KS_BACKEND_MAX_LOGIT_ROWS &&
              row0 + n <= b->max_chunk);
    float *xn = b->buf[KS_BUF_XN];
    ks_fast_rmsnorm(xn, b->buf[KS_BUF_X] + (size_t)row0 * c->hidden, m->final_norm, n, c->hidden, c->rms_eps);
    if (m->p_lm_head.data) ks_quant_gemm(b->logits, xn, &m->p_lm_head, NULL, n, 0, &b->qw);
    else ks_fast_gemm(b->logits, xn, m->lm_head, NULL, n, c->hidden, c->vocab, 0);
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

static ks_kvstore *cpu_kvstore(ks_backend *b) { return &b->kv.base; }

/* One thread computes everything in order: the layers are issued as they come. */
static ks_status cpu_decode_step(ks_backend *b, int qpos, ks_decode_kind kind, ks_status (*issue)(void *ctx),
                                 void *ctx) {
    (void)b, (void)qpos, (void)kind;
    return issue(ctx);
}

const ks_backend_ops ks_backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .embed = cpu_embed,
    .hidden_write = cpu_hidden_write,
    .hidden_read = cpu_hidden_read,
    /* hidden_recv, hidden_send: none, X is host memory */
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
