/* forward.c — see forward.h. The layer recipe (Llama / Mistral / Qwen2, pre-norm):
 *     h = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   n1 = rmsnorm(x) * w_attn
 *     y = h + down_proj(silu(gate_proj(n2)) * up_proj(n2))                         n2 = rmsnorm(h) * w_ffn
 * as backend ops (run_layer), each named for all the work it does:
 *     [rmsnorm] -> qkv_rope_append -> attention -> [method hook] -> out_proj_residual_norm(O, n2's norm)
 *     -> gate_up_swiglu -> out_proj_residual_norm(DOWN, the next layer's n1 norm)
 * Nothing here touches activation or cache memory. */
#include "engine/forward.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* KS_ERR_ARG naming kv_rows: a cache of fewer rows than max_ctx for a method that cannot bound them. */
static ks_status unbounded_budget(const ks_method *m, int max_ctx) {
    return ks_fail(KS_ERR_ARG, "--acceleration %s does not bound the rows each layer keeps after the prompt, so the "
                               "KV cache cannot be sized to a budget (kv_rows < context %d); use the full cache "
                               "(--kv_cache full or auto)", m ? ks_method_name(m) : "FullKV", max_ctx);
}

/* The method against the forward's shape: a budget-sized cache needs a method that bounds every layer's rows, and
 * the observation window must fit one prefill chunk. */
static ks_status check_method(const ks_method *m, const ks_backend_params *bp) {
    if (bp->kv_rows < bp->max_ctx && !(m && ks_method_bounds_rows(m))) return unbounded_budget(m, bp->max_ctx);
    /* a chunk of max_ctx holds any prompt */
    if (m && ks_method_window(m) > bp->max_chunk && bp->max_chunk < bp->max_ctx)
        return ks_fail(KS_ERR_ARG, "--acceleration %s: its observation window of %d tokens must fit in one prefill "
                                   "chunk of %d tokens; raise --chunk or lower window_size",
                       ks_method_name(m), ks_method_window(m), bp->max_chunk);
    int B = m ? ks_method_sparse_block(m) : 0; /* chunks start on block edges (ks_forward_chunk_len) */
    if (B && bp->max_chunk < bp->max_ctx && bp->max_chunk < B + ks_method_window(m))
        return ks_fail(KS_ERR_ARG, "--acceleration %s: its prefill chunks hold whole blocks of %d tokens and the last "
                                   "one the observation window of %d, so --chunk must be at least %d (it is %d)",
                       ks_method_name(m), B, ks_method_window(m), B + ks_method_window(m), bp->max_chunk);
    return KS_OK;
}

/* f->blocks' storage for a sparse-prefill method: the rows of a chunk of max_chunk queries (it may start
 * mid-block) and every causal key block of max_ctx keys per row. */
static ks_status blocks_alloc(ks_forward *f, const ks_method *m, int max_chunk, int max_ctx) {
    int B = m ? ks_method_sparse_block(m) : 0;
    if (!B) return KS_OK;
    size_t rows = (size_t)f->m->cfg.n_heads * (size_t)(max_chunk / B + 2);
    f->blocks.row_start = ks_malloc(sizeof(int32_t) * (rows + 1), "sparse prefill block list");
    f->blocks.cols = ks_malloc(sizeof(int32_t) * rows * (size_t)(max_ctx / B + 1), "sparse prefill block list");
    return f->blocks.row_start && f->blocks.cols ? KS_OK : KS_ERR_NOMEM;
}

/* Rows per (layer, KV head) of the cache mode p->cache for method m: max_ctx for the full cache. */
static ks_status cache_rows(const ks_model *model, const ks_method *m, const ks_forward_params *p, int *rows) {
    *rows = p->max_ctx;
    if (p->cache == KS_CACHE_FULL) return KS_OK;
    int bounded = m && ks_method_bounds_rows(m);
    if (p->cache == KS_CACHE_BUDGET && !bounded) return unbounded_budget(m, p->max_ctx);
    if (!bounded) return KS_OK;
    int budget = ks_method_kv_rows(m, model, p->max_ctx, p->max_new);
    if (budget <= 0 || budget >= p->max_ctx) return KS_OK;
    int64_t layers = model->last_layer - model->first_layer;
    if (p->cache == KS_CACHE_AUTO && layers * budget + (int64_t)KS_KVCACHE_SLOTS * p->max_ctx >= layers * p->max_ctx)
        return KS_OK; /* the prefill slots would cost more than the budget saves */
    *rows = budget;
    return KS_OK;
}

ks_status ks_forward_backend_params(const ks_model *m, const ks_method *method, const ks_forward_params *p,
                                    ks_backend_params *bp) {
    if (p->max_ctx <= 0 || p->chunk <= 0)
        return ks_fail(KS_ERR_ARG, "context (%d) and prefill chunk (%d) must be positive", p->max_ctx, p->chunk);
    if (p->max_new < 0)
        return ks_fail(KS_ERR_ARG, "generated tokens per sequence (%d) must not be negative", p->max_new);
    if (p->batch > KS_FORWARD_MAX_BATCH)
        return ks_fail(KS_ERR_ARG, "--batch %d: at most %d sequences decode together", p->batch, KS_FORWARD_MAX_BATCH);
    *bp = (ks_backend_params){.max_ctx = p->max_ctx, .max_chunk = p->chunk < p->max_ctx ? p->chunk : p->max_ctx,
                              .threads = p->threads, .gpu_share = p->gpu_share, .max_batch = p->batch,
                              .sparse_block = method ? ks_method_sparse_block(method) : 0,
                              .sparse_whole_prompt = method ? ks_method_whole_prompt(method) : 0};
    KS_TRY(cache_rows(m, method, p, &bp->kv_rows));
    /* a budget-sized cache's packed part holds what its selection keeps, not the whole context */
    if (method && bp->kv_rows < bp->max_ctx)
        bp->packed_rows = ks_method_packed_rows(method, m, p->max_ctx, p->max_new);
    return check_method(method, bp);
}

/* f (its shape set) bound to `method` on its slot: the checks, the block list, the binding, a fresh sequence. On
 * failure f is freed (with the instance when it owns it). */
static ks_status finish_init(ks_forward *f, ks_method *method) {
    ks_backend_params shape = {.max_ctx = f->max_ctx, .max_chunk = f->chunk, .kv_rows = f->kv_rows};
    ks_status st = check_method(method, &shape);
    if (st == KS_OK) st = blocks_alloc(f, method, f->chunk, f->max_ctx);
    if (st == KS_OK) st = f->ops->use_slot(f->be, f->slot);
    if (st == KS_OK && method) st = ks_method_bind(method, f->ops, f->be, f->m);
    if (st != KS_OK) {
        ks_forward_free(f);
        return st;
    }
    f->method = method;
    ks_forward_reset(f);
    return KS_OK;
}

ks_status ks_forward_init_backend(ks_forward *f, const ks_model *m, ks_method *method, const ks_backend_ops *ops,
                                  ks_backend *be, const ks_backend_params *bp) {
    memset(f, 0, sizeof *f);
    f->m = m;
    f->ops = ops;
    f->be = be;
    f->max_batch = bp->max_batch > 1 ? bp->max_batch : 1;
    f->max_ctx = bp->max_ctx;
    f->chunk = bp->max_chunk;
    f->kv_rows = bp->kv_rows > 0 && bp->kv_rows < bp->max_ctx ? bp->kv_rows : bp->max_ctx;
    return finish_init(f, method);
}

ks_status ks_forward_init_slot(ks_forward *f, const ks_forward *base, int slot, ks_method *method) {
    KS_ASSERT(base->slot == 0 && slot > 0 && slot < base->max_batch);
    memset(f, 0, sizeof *f);
    f->m = base->m;
    f->ops = base->ops;
    f->be = base->be;
    f->slot = slot;
    f->max_batch = base->max_batch;
    f->max_ctx = base->max_ctx;
    f->chunk = base->chunk;
    f->kv_rows = base->kv_rows;
    return finish_init(f, method);
}

ks_status ks_forward_init(ks_forward *f, const ks_model *m, ks_method *method, const ks_forward_params *p) {
    memset(f, 0, sizeof *f);
    const ks_backend_ops *ops;
    ks_backend_params bp;
    ks_backend *be;
    KS_TRY(ks_backend_find(p->device, &ops));
    KS_TRY(ks_forward_backend_params(m, method, p, &bp));
    KS_TRY(ops->init(&be, m, &bp));
    return ks_forward_init_backend(f, m, method, ops, be, &bp);
}

ks_status ks_forward_cache_parse(const char *s, const char *option, ks_forward_cache *out) {
    static const char *const names[] = {[KS_CACHE_AUTO] = "auto", [KS_CACHE_BUDGET] = "budget",
                                        [KS_CACHE_FULL] = "full"};
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(s, names[i])) {
            *out = (ks_forward_cache)i;
            return KS_OK;
        }
    return ks_fail(KS_ERR_ARG, "%s %s: must be auto, budget or full", option, s);
}

ks_status ks_cpu_weights_parse(const char *s, const char *option, ks_cpu_weights *out) {
    if (!strcmp(s, "packed") || !strcmp(s, "f32")) {
        *out = strcmp(s, "f32") ? KS_CPU_WEIGHTS_PACKED : KS_CPU_WEIGHTS_F32;
        return KS_OK;
    }
    return ks_fail(KS_ERR_ARG, "%s %s: must be packed (GGUF blocks, int8 products) or f32 (exact fp32)", option, s);
}

ks_status ks_forward_load_model(ks_model *m, const char *path, int first, int last, const char *device,
                                ks_cpu_weights w) {
    if (!strcmp(device, "cpu") && w == KS_CPU_WEIGHTS_PACKED) return ks_model_load_packed(m, path, first, last);
    return ks_model_load(m, path, first, last);
}

void ks_forward_free(ks_forward *f) {
    if (f->ops && f->be && f->slot == 0) f->ops->free(f->be);
    free(f->blocks.row_start);
    free(f->blocks.cols);
    memset(f, 0, sizeof *f);
}

/* The backend's per-sequence ops act on f's slot from now on. */
static void use_slot(const ks_forward *f) {
    ks_status st = f->ops->use_slot(f->be, f->slot);
    KS_ASSERT(st == KS_OK); /* a slot of the instance, outside a batched step */
    (void)st;
}

const ks_kvcache *ks_forward_kvcache(const ks_forward *f) {
    use_slot(f);
    return f->ops->kvcache(f->be);
}

void ks_forward_reset(ks_forward *f) {
    use_slot(f);
    ks_kvcache_reset(f->ops->kvcache(f->be));
    (void)f->ops->residual_at(f->be, 0); /* after a failed layer-major prefill; row 0 always exists */
    f->n_past = 0;
    f->method_s = 0;
    if (f->method) ks_method_reset(f->method);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The method's hook for the layer after its attention on n rows at pos0, timed into f->method_s. */
static ks_status method_hook(ks_forward *f, int layer, int pos0, int n, int decode, int prompt_end) {
    double t0 = now_s();
    ks_status st = decode ? ks_method_decode_layer(f->method, layer, pos0)
                          : ks_method_prefill_layer(f->method, layer, pos0, n, prompt_end);
    f->method_s += now_s() - t0;
    return st;
}

int ks_forward_default_chunk(const ks_method *m, int max_ctx) {
    return m && ks_method_whole_prompt(m) ? max_ctx : KS_FORWARD_CHUNK;
}

int ks_forward_chunk_len(const ks_forward *f, int n_prompt, int done) {
    int rem = n_prompt - done;
    if (rem <= f->chunk) return rem;
    int need = f->method ? ks_method_window(f->method) : 0;
    need = need < n_prompt ? need : n_prompt;
    int len = rem - f->chunk < need ? rem - need : f->chunk; /* leave the whole window to the last chunk */
    int B = f->method ? ks_method_sparse_block(f->method) : 0;
    return B ? len / B * B : len; /* >= B: the chunk holds B + the window (check_method) */
}

/* The sparse-prefill method's block list for `layer`'s attention on the chunk of n rows at pos0 (last: the
 * prompt's last chunk), in f->blocks; NULL: dense. Timed into f->method_s. */
static ks_status prefill_blocks(ks_forward *f, int layer, int pos0, int n, int last, const ks_block_list **out) {
    *out = NULL;
    int B = f->method ? ks_method_sparse_block(f->method) : 0;
    if (!B) return KS_OK;
    ks_block_list *l = &f->blocks;
    l->block = B;
    l->H = f->m->cfg.n_heads;
    l->qb0 = pos0 / B;
    l->n_qblocks = ks_block_rows_of(pos0, n, B);
    double t0 = now_s();
    ks_status st = ks_method_prefill_blocks(f->method, layer, pos0, n, last, l, out);
    f->method_s += now_s() - t0;
    return st;
}

/* The prefill attention of `layer`, sparse where the method's list says; a backend's refusal names the method. */
static ks_status attention_prefill(ks_forward *f, int layer, int pos0, int n, int last) {
    const ks_block_list *blocks;
    KS_TRY(prefill_blocks(f, layer, pos0, n, last, &blocks));
    ks_status st = f->ops->attention_prefill(f->be, layer, n, pos0, blocks);
    return st != KS_OK && blocks ? ks_fail_context(st, "--acceleration %s", ks_method_name(f->method)) : st;
}

/* The sequences a layer's rows belong to: one forward's n rows (n_fs 1), or a batched decode step's row per
 * forward (n_fs = n; the backend's use_batch maps rows to slots). */
typedef struct layer_seqs {
    ks_forward *const *fs;
    int n_fs;
} layer_seqs;

/* Each sequence's method hook after the layer's attention: one forward's chunk or step at pos0, or a batched
 * step's decode token of each forward at its own position. */
static ks_status method_hooks(const layer_seqs *s, int layer, int pos0, int n, int decode, int prompt_end) {
    if (s->n_fs == 1) return s->fs[0]->method ? method_hook(s->fs[0], layer, pos0, n, decode, prompt_end) : KS_OK;
    for (int i = 0; i < s->n_fs; i++)
        if (s->fs[i]->method) KS_TRY(method_hook(s->fs[i], layer, s->fs[i]->n_past, 1, 1, 0));
    return KS_OK;
}

/* Rows 0..n-1 of X (positions pos0..) through the layer; decode = one query over the kept rows. chained: the
 * layers run one after another on these rows (chunk-major), so each leaves the next one's normed input in XN
 * and only the first held layer norms its own; layer-major prefill moves X between a layer's chunks, so each
 * chunk starts with its own norm. After the layer's attention each sequence's method (if any) sees the chunk or
 * step; prompt_end: it compresses the layer. */
static ks_status run_layer(const layer_seqs *s, int layer, int pos0, int n, int decode, int prompt_end,
                           int chained) {
    ks_forward *f = s->fs[0];
    const ks_backend_ops *o = f->ops;
    ks_backend *b = f->be;
    /* none: logits or hidden_read follow */
    const int next = chained && layer + 1 < f->m->last_layer ? layer + 1 : -1;
    if (!chained || layer == f->m->first_layer) KS_TRY(o->rmsnorm(b, layer, KS_W_ATTN_NORM, n));
    KS_TRY(o->qkv_rope_append(b, layer, n, pos0));
    KS_TRY(decode ? o->attention_decode(b, layer, pos0) : attention_prefill(f, layer, pos0, n, prompt_end));
    KS_TRY(method_hooks(s, layer, pos0, n, decode, prompt_end));
    KS_TRY(o->out_proj_residual_norm(b, layer, KS_W_O, n, layer, KS_W_FFN_NORM));
    KS_TRY(o->gate_up_swiglu(b, layer, n));
    return o->out_proj_residual_norm(b, layer, KS_W_DOWN, n, next, KS_W_ATTN_NORM);
}

/* Rows 0..n-1 of X through every layer held (chunk-major). */
static ks_status run_layers(const layer_seqs *s, int n, int decode, int prompt_end) {
    const ks_model *m = s->fs[0]->m;
    for (int layer = m->first_layer; layer < m->last_layer; layer++)
        KS_TRY(run_layer(s, layer, s->fs[0]->n_past, n, decode, prompt_end, 1));
    return KS_OK;
}

/* The layers of one decode token of each sequence (decode_step's issue callback on the forward pass). */
static ks_status issue_decode_layers(void *ctx) {
    const layer_seqs *s = ctx;
    return run_layers(s, s->n_fs, 1, 0);
}

/* What f's decode hooks do besides backend ops. */
static ks_decode_kind decode_kind(const ks_forward *f) {
    int hooked = f->method && ks_method_decode_hooked(f->method);
    return !hooked                                 ? KS_DECODE_PLAIN
           : ks_method_decode_on_host(f->method) ? KS_DECODE_HOST
                                                  : KS_DECODE_HOOKED;
}

/* One decode token through the layers, as the backend runs a step (backend.h: decode_step). */
static ks_status run_decode_layers(ks_forward *f) {
    layer_seqs s = {&f, 1};
    return f->ops->decode_step(f->be, f->n_past, decode_kind(f), issue_decode_layers, &s);
}

/* Budget mode: every layer has room for one more row in its own storage (a decode step appends one). */
static ks_status check_decode_rows(const ks_forward *f) {
    const ks_kvcache *c = ks_forward_kvcache(f);
    for (int layer = f->m->first_layer; layer < f->m->last_layer; layer++)
        for (int h = 0; h < c->n_kv_heads; h++)
            if (ks_kvcache_slot(c, layer) >= 0 || ks_kvcache_len(c, layer)[h] >= c->own_cap)
                return ks_fail(KS_ERR_RANGE, "layer %d holds %d rows of KV head %d, the %d each layer keeps (kv_rows): "
                                             "no room for another generated token; raise kv_rows",
                               layer, ks_kvcache_len(c, layer)[h], h, c->own_cap);
    return KS_OK;
}

/* KS_ERR_RANGE when n more tokens would pass the capacity the cache was built for. */
static ks_status check_capacity(const ks_forward *f, int n) {
    if (f->n_past + n <= f->max_ctx) return KS_OK;
    return ks_fail(KS_ERR_RANGE, "sequence of %d tokens exceeds the KV cache capacity of %d tokens", f->n_past + n,
                   f->max_ctx);
}

static ks_status forward_rows(ks_forward *f, ks_forward_io *io, int n, int decode) {
    const ks_model *m = f->m;
    KS_ASSERT(n > 0 && n <= f->chunk);
    use_slot(f);
    KS_TRY(check_capacity(f, n));
    if (decode && f->kv_rows < f->max_ctx) KS_TRY(check_decode_rows(f));
    ks_method *meth = f->method;
    int prompt_end = !decode && io->prompt_end;
    if (meth && !decode && ks_method_dropped(meth))
        return ks_fail(KS_ERR_UNSUPPORTED, "--acceleration %s compressed this sequence's KV cache; more prompt tokens "
                                           "cannot follow (start a new sequence)", ks_method_name(meth));
    if (meth && prompt_end) {
        int need = ks_method_window(meth) < f->n_past + n ? ks_method_window(meth) : f->n_past + n;
        if (n < need)
            return ks_fail(KS_ERR_ARG, "the prompt's last chunk has %d tokens but --acceleration %s scores the last "
                                       "%d (plan chunks with ks_forward_chunk_len)", n, ks_method_name(meth), need);
        ks_method_begin_prompt(meth, f->n_past + n);
    }
    if (m->first_layer == 0) {
        KS_ASSERT(io->tokens);
        KS_TRY(f->ops->embed(f->be, io->tokens, n));
    } else if (io->hidden_in) { /* else the caller's hidden_recv put them in X */
        KS_TRY(f->ops->hidden_write(f->be, io->hidden_in, n));
    }
    layer_seqs seqs = {&f, 1};
    KS_TRY(decode ? run_decode_layers(f) : run_layers(&seqs, n, 0, prompt_end));
    if (meth && prompt_end) {
        double t0 = now_s();
        KS_TRY(ks_method_end_prompt(meth));
        f->method_s += now_s() - t0;
    }
    f->n_past += n;
    if (m->last_layer < m->cfg.n_layers) /* without hidden_out the caller's hidden_send takes them from X */
        return io->hidden_out ? f->ops->hidden_read(f->be, io->hidden_out, n) : KS_OK;
    if (io->skip_head) return KS_OK;
    KS_TRY(f->ops->logits(f->be, n - 1, 1));
    KS_TRY(f->ops->argmax(f->be, 1, &io->next));
    if (io->logits) KS_TRY(f->ops->logits_read(f->be, 1, io->logits));
    return KS_OK;
}

ks_status ks_forward_chunk(ks_forward *f, ks_forward_io *io, int n) { return forward_rows(f, io, n, 0); }

ks_status ks_forward_step(ks_forward *f, ks_forward_io *io) { return forward_rows(f, io, 1, 1); }

/* A budget-sized cache's prompt: every chunk through layer 0, then layer 1, ..., the whole prompt's residual
 * stream on the backend (residual_at), so that each layer is compressed (its prompt-end hook on its last chunk)
 * before later layers fill the cache. The same ops on the same rows as chunk-major order: the same numbers. The
 * cache's method bounds every layer's rows (ks_forward_init). The rows come from the tokens (first stage) or
 * from io->in, and leave through io->out (all but the last stage) or as the last position's logits. */
ks_status ks_forward_prompt_layer_major(ks_forward *f, const int32_t *tokens, int n, const ks_forward_rows_io *io,
                                        float *logits, int32_t *next) {
    const ks_backend_ops *o = f->ops;
    ks_backend *b = f->be;
    ks_method *meth = f->method;
    int first = f->m->first_layer == 0, last = f->m->last_layer == f->m->cfg.n_layers;
    KS_ASSERT((first || (io && io->in)) && (last || (io && io->out)));
    use_slot(f);
    if (f->n_past)
        return ks_fail(KS_ERR_UNSUPPORTED, "a prompt into a KV cache sized to a budget (kv_rows %d) must start a "
                                           "sequence (%d tokens already cached)", f->kv_rows, f->n_past);
    KS_TRY(check_capacity(f, n));
    ks_method_begin_prompt(meth, n); /* the plan; H2O's per-chunk scoring before the last chunk does not read it */
    ks_status st = KS_OK;
    int last0 = 0;
    for (int t0 = 0, m; t0 < n && st == KS_OK; t0 += m) {
        m = ks_forward_chunk_len(f, n, t0);
        last0 = t0;
        st = o->residual_at(b, t0);
        if (st == KS_OK && first) st = o->embed(b, tokens + t0, m);
        if (st == KS_OK && !first) st = io->in(io->ctx, t0, m, io->rows);
        if (st == KS_OK && !first && io->rows) st = o->hidden_write(b, io->rows, m);
    }
    for (int layer = f->m->first_layer; layer < f->m->last_layer && st == KS_OK; layer++)
        for (int t0 = 0, m; t0 < n && st == KS_OK; t0 += m) {
            m = ks_forward_chunk_len(f, n, t0);
            st = o->residual_at(b, t0);
            if (st == KS_OK) st = run_layer(&(layer_seqs){&f, 1}, layer, t0, m, 0, t0 + m == n, 0);
        }
    if (st == KS_OK) {
        double t0 = now_s();
        st = ks_method_end_prompt(meth);
        f->method_s += now_s() - t0;
    }
    for (int t0 = 0, m; !last && t0 < n && st == KS_OK; t0 += m) {
        m = ks_forward_chunk_len(f, n, t0);
        st = o->residual_at(b, t0);
        if (st == KS_OK && io->rows) st = o->hidden_read(b, io->rows, m);
        if (st == KS_OK) st = io->out(io->ctx, t0, m, io->rows);
    }
    if (last && st == KS_OK) st = o->residual_at(b, last0);
    if (last && st == KS_OK) st = o->logits(b, n - 1 - last0, 1);
    if (last && st == KS_OK) st = o->argmax(b, 1, next);
    if (last && st == KS_OK && logits) st = o->logits_read(b, 1, logits);
    ks_status back = o->residual_at(b, 0); /* decode steps use row 0 */
    if (st != KS_OK) return st;
    f->n_past = n;
    return back;
}

ks_status ks_forward_prefill(ks_forward *f, const int32_t *tokens, int n, float *logits, int32_t *next) {
    KS_ASSERT(f->m->first_layer == 0 && f->m->last_layer == f->m->cfg.n_layers && n > 0);
    if (f->kv_rows < f->max_ctx) return ks_forward_prompt_layer_major(f, tokens, n, NULL, logits, next);
    ks_forward_io io = {0};
    for (int t0 = 0, m; t0 < n; t0 += m) {
        m = ks_forward_chunk_len(f, n, t0);
        io.tokens = tokens + t0;
        io.prompt_end = t0 + m == n;
        io.skip_head = !io.prompt_end; /* only the prompt's last position needs logits */
        io.logits = logits;
        KS_TRY(ks_forward_chunk(f, &io, m));
    }
    *next = io.next;
    return KS_OK;
}

ks_status ks_forward_decode(ks_forward *f, int32_t token, float *logits, int32_t *next) {
    KS_ASSERT(f->m->first_layer == 0 && f->m->last_layer == f->m->cfg.n_layers);
    ks_forward_io io = {.tokens = &token, .logits = logits};
    KS_TRY(ks_forward_step(f, &io));
    *next = io.next;
    return KS_OK;
}

ks_status ks_forward_decode_batch(ks_forward *const *fs, int n, const int32_t *tokens, int32_t *next) {
    ks_forward *f = fs[0];
    KS_ASSERT(n >= 1 && n <= f->max_batch && f->m->first_layer == 0 && f->m->last_layer == f->m->cfg.n_layers);
    if (n == 1) return ks_forward_decode(f, tokens[0], NULL, next);
    int slots[KS_FORWARD_MAX_BATCH];
    int32_t pos[KS_FORWARD_MAX_BATCH];
    ks_decode_kind kinds[KS_FORWARD_MAX_BATCH];
    ks_decode_kind kind = KS_DECODE_PLAIN; /* the step runs as its most demanding sequence needs */
    for (int i = 0; i < n; i++) {
        KS_ASSERT(fs[i]->be == f->be && (i == 0 || fs[i]->slot > fs[i - 1]->slot)); /* backend.h: increasing slots */
        KS_TRY(check_capacity(fs[i], 1));
        if (fs[i]->kv_rows < fs[i]->max_ctx) KS_TRY(check_decode_rows(fs[i]));
        kinds[i] = decode_kind(fs[i]);
        kind = kinds[i] > kind ? kinds[i] : kind;
        slots[i] = fs[i]->slot;
        pos[i] = fs[i]->n_past;
    }
    const ks_backend_ops *o = f->ops;
    const ks_decode_batch batch = {.n = n, .slots = slots, .pos = pos, .kinds = kinds};
    layer_seqs seqs = {fs, n};
    KS_TRY(o->use_batch(f->be, &batch));
    ks_status st = o->embed(f->be, tokens, n);
    if (st == KS_OK) st = o->decode_step(f->be, pos[0], kind, issue_decode_layers, &seqs);
    if (st == KS_OK) st = o->logits(f->be, 0, n);
    if (st == KS_OK) st = o->argmax(f->be, n, next);
    ks_status back = o->use_batch(f->be, NULL);
    if (st != KS_OK) return st;
    for (int i = 0; i < n; i++) fs[i]->n_past++;
    return back;
}
