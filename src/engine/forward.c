/* forward.c — see forward.h. The layer recipe (Llama / Mistral / Qwen2, pre-norm):
 *     h = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   n1 = rmsnorm(x) * w_attn
 *     y = h + down_proj(silu(gate_proj(n2)) * up_proj(n2))                         n2 = rmsnorm(h) * w_ffn
 * Every step is a backend op; nothing here touches activation or cache memory. */
#include "engine/forward.h"

#include <string.h>

ks_status ks_forward_init(ks_forward *f, const ks_model *m, const ks_forward_params *p) {
    memset(f, 0, sizeof *f);
    if (p->max_ctx <= 0 || p->chunk <= 0)
        return ks_fail(KS_ERR_ARG, "context (%d) and prefill chunk (%d) must be positive", p->max_ctx, p->chunk);
    KS_TRY(ks_backend_find(p->device, &f->ops));
    f->m = m;
    f->max_ctx = p->max_ctx;
    f->chunk = p->chunk < p->max_ctx ? p->chunk : p->max_ctx;
    ks_backend_params bp = {.max_ctx = f->max_ctx, .max_chunk = f->chunk, .threads = p->threads};
    return f->ops->init(&f->be, m, &bp);
}

void ks_forward_free(ks_forward *f) {
    if (f->ops && f->be) f->ops->free(f->be);
    memset(f, 0, sizeof *f);
}

void ks_forward_reset(ks_forward *f) {
    ks_kvcache_reset(f->ops->kvcache(f->be));
    f->n_past = 0;
}

/* Rows 0..n-1 of the residual stream through every layer held; decode = one query over the kept rows. */
static ks_status run_layers(ks_forward *f, int n, int decode) {
    const ks_backend_ops *o = f->ops;
    ks_backend *b = f->be;
    int pos0 = f->n_past;
    for (int l = f->m->first_layer; l < f->m->last_layer; l++) {
        KS_TRY(o->rmsnorm(b, l, KS_W_ATTN_NORM, n));
        KS_TRY(o->linear(b, l, KS_W_Q, KS_BUF_XN, KS_BUF_Q, n, 0));
        KS_TRY(o->linear(b, l, KS_W_K, KS_BUF_XN, KS_BUF_K, n, 0));
        KS_TRY(o->linear(b, l, KS_W_V, KS_BUF_XN, KS_BUF_V, n, 0));
        KS_TRY(o->rope(b, n, pos0));
        KS_TRY(o->kv_append(b, l, n, pos0));
        KS_TRY(decode ? o->attention_decode(b, l, pos0) : o->attention_prefill(b, l, n, pos0));
        KS_TRY(o->linear(b, l, KS_W_O, KS_BUF_ATT, KS_BUF_X, n, 1));
        KS_TRY(o->rmsnorm(b, l, KS_W_FFN_NORM, n));
        KS_TRY(o->linear(b, l, KS_W_GATE, KS_BUF_XN, KS_BUF_GATE, n, 0));
        KS_TRY(o->linear(b, l, KS_W_UP, KS_BUF_XN, KS_BUF_UP, n, 0));
        KS_TRY(o->swiglu(b, n));
        KS_TRY(o->linear(b, l, KS_W_DOWN, KS_BUF_GATE, KS_BUF_X, n, 1));
    }
    return KS_OK;
}

static ks_status forward_rows(ks_forward *f, ks_forward_io *io, int n, int decode) {
    const ks_model *m = f->m;
    KS_ASSERT(n > 0 && n <= f->chunk);
    if (f->n_past + n > f->max_ctx)
        return ks_fail(KS_ERR_RANGE, "sequence of %d tokens exceeds the KV cache capacity of %d tokens",
                       f->n_past + n, f->max_ctx);
    if (m->first_layer == 0) {
        KS_ASSERT(io->tokens);
        KS_TRY(f->ops->embed(f->be, io->tokens, n));
    } else {
        KS_ASSERT(io->hidden_in);
        KS_TRY(f->ops->hidden_write(f->be, io->hidden_in, n));
    }
    KS_TRY(run_layers(f, n, decode));
    f->n_past += n;
    if (m->last_layer < m->cfg.n_layers) {
        KS_ASSERT(io->hidden_out);
        return f->ops->hidden_read(f->be, io->hidden_out, n);
    }
    if (io->skip_head) return KS_OK;
    KS_TRY(f->ops->logits(f->be, n - 1, 1));
    KS_TRY(f->ops->argmax(f->be, 1, &io->next));
    if (io->logits) KS_TRY(f->ops->logits_read(f->be, 1, io->logits));
    return KS_OK;
}

ks_status ks_forward_chunk(ks_forward *f, ks_forward_io *io, int n) { return forward_rows(f, io, n, 0); }

ks_status ks_forward_step(ks_forward *f, ks_forward_io *io) { return forward_rows(f, io, 1, 1); }

ks_status ks_forward_prefill(ks_forward *f, const int32_t *tokens, int n, float *logits, int32_t *next) {
    KS_ASSERT(f->m->first_layer == 0 && f->m->last_layer == f->m->cfg.n_layers && n > 0);
    ks_forward_io io = {0};
    for (int t0 = 0; t0 < n; t0 += f->chunk) {
        int m = n - t0 < f->chunk ? n - t0 : f->chunk;
        io.tokens = tokens + t0;
        io.skip_head = t0 + m < n; /* only the prompt's last position needs logits */
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
