/* pipeline.c — see pipeline.h. */
#include "engine/pipeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A call's header, stage 0's call passed down the chain. */
typedef enum pipe_op { PIPE_PROMPT = 1, PIPE_STEP, PIPE_STATS, PIPE_END } pipe_op;

typedef struct pipe_cmd {
    int32_t op;      /* pipe_op */
    int32_t n;       /* PIPE_PROMPT: the prompt's tokens */
} pipe_cmd;

/* What a stage reports to stage 0 after a prompt: its KV bytes and its layer statistics (rows follow). */
typedef struct pipe_stats_head {
    int64_t kv_full, kv_prefill, kv_end;
    int32_t n_rows, pad;
} pipe_stats_head;

static int is_last(const ks_pipeline *p) { return p->t->stage == p->t->n_stages - 1; }

static ks_status send(const ks_pipeline *p, int to, int channel, const void *buf, size_t bytes) {
    return p->t->send(p->t->ctx, to, channel, buf, bytes);
}

static ks_status recv(const ks_pipeline *p, int from, int channel, void *buf, size_t bytes) {
    return p->t->recv(p->t->ctx, from, channel, buf, bytes);
}

static void say(const ks_pipeline *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const ks_pipeline *p, const char *fmt, ...) {
    if (!p->t->context) return;
    char what[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    p->t->context(p->t->ctx, what);
}

ks_status ks_pipeline_init(ks_pipeline *p, ks_forward *f, const ks_stage_transport *t) {
    memset(p, 0, sizeof *p);
    p->f = f, p->t = t;
    const ks_model *m = f->m;
    if (t->n_stages < 1 || t->stage < 0 || t->stage >= t->n_stages)
        return ks_fail(KS_ERR_ARG, "pipeline stage %d of %d", t->stage, t->n_stages);
    if ((t->stage == 0) != (m->first_layer == 0) || (is_last(p) != (m->last_layer == m->cfg.n_layers)))
        return ks_fail(KS_ERR_ARG, "pipeline stage %d of %d holds layers [%d, %d) of %d: the first stage must hold "
                                   "layer 0 and the last the last layer", t->stage, t->n_stages, m->first_layer,
                       m->last_layer, m->cfg.n_layers);
    p->rows_cap = f->chunk;
    int on_device = t->send_device && t->recv_device && f->ops->hidden_recv && f->ops->hidden_send;
    if (!on_device) p->rows = ks_malloc((size_t)p->rows_cap * m->cfg.hidden * sizeof(float), "pipeline stage rows");
    p->stats = ks_calloc(KS_METHOD_MAX_LAYERS, sizeof *p->stats, "layer statistics");
    return (on_device || p->rows) && p->stats ? KS_OK : KS_ERR_NOMEM;
}

void ks_pipeline_free(ks_pipeline *p) {
    free(p->rows);
    free(p->stats);
    memset(p, 0, sizeof *p);
}

/* Passes the header on to the next stage (stage 0 starts it). */
static ks_status pass_cmd(const ks_pipeline *p, const pipe_cmd *c) {
    return is_last(p) ? KS_OK : send(p, p->t->stage + 1, KS_PIPE_CONTROL, c, sizeof *c);
}

static size_t row_bytes(const ks_pipeline *p, int n) { return (size_t)n * p->f->m->cfg.hidden * sizeof(float); }

/* The transport's device entries as the backend's ks_device_move, from the previous stage and to the next. */
static ks_status move_from_prev(void *ctx, void *rows, size_t bytes, void *stream) {
    const ks_stage_transport *t = ((const ks_pipeline *)ctx)->t;
    return t->recv_device(t->device_ctx, t->stage - 1, rows, bytes, stream);
}

static ks_status move_to_next(void *ctx, void *rows, size_t bytes, void *stream) {
    const ks_stage_transport *t = ((const ks_pipeline *)ctx)->t;
    return t->send_device(t->device_ctx, t->stage + 1, rows, bytes, stream);
}

/* n rows from the previous stage: into p->rows, or (rows NULL) straight into the backend's X. */
static ks_status rows_from_prev(ks_pipeline *p, int n) {
    if (p->rows) return recv(p, p->t->stage - 1, KS_PIPE_HIDDEN, p->rows, row_bytes(p, n));
    ks_device_move move = {move_from_prev, p};
    return p->f->ops->hidden_recv(p->f->be, &move, n);
}

/* n rows on to the next stage: from p->rows, or (rows NULL) straight from the backend's X. */
static ks_status rows_to_next(ks_pipeline *p, int n) {
    if (p->rows) return send(p, p->t->stage + 1, KS_PIPE_HIDDEN, p->rows, row_bytes(p, n));
    ks_device_move move = {move_to_next, p};
    return p->f->ops->hidden_send(p->f->be, &move, n);
}

/* One decode step on a stage > 0: the row from the previous stage, on to the next or the token to stage 0. */
static ks_status follow_step(ks_pipeline *p) {
    KS_TRY(rows_from_prev(p, 1));
    ks_forward_io io = {.hidden_in = p->rows, .hidden_out = p->rows};
    KS_TRY(ks_forward_step(p->f, &io));
    if (!is_last(p)) return rows_to_next(p, 1);
    return send(p, 0, KS_PIPE_TOKEN, &io.next, sizeof io.next);
}

/* The method's per-model-layer values (methods/method.h, ks_method_stage_state), NULL when its layers are
 * independent or there is no method. */
static double *method_state(const ks_pipeline *p) {
    return p->f->method ? ks_method_stage_state(p->f->method) : NULL;
}

static size_t state_bytes(const ks_pipeline *p) { return sizeof(double) * (size_t)p->f->m->cfg.n_layers; }

/* Before this stage's prompt-end work: the values of the layers before it, from the previous stage (sent
 * after the prompt's last rows). */
static ks_status state_in(ks_pipeline *p) {
    double *state = method_state(p);
    if (!state || p->t->stage == 0) return KS_OK;
    double in[KS_METHOD_MAX_LAYERS];
    KS_TRY(recv(p, p->t->stage - 1, KS_PIPE_STATE, in, state_bytes(p)));
    memcpy(state, in, sizeof(double) * (size_t)p->f->m->first_layer);
    return KS_OK;
}

/* After this stage's prompt: its values on to the next stage, or, from the last stage, the whole model's to
 * every other stage. */
static ks_status state_out(ks_pipeline *p) {
    const double *state = method_state(p);
    if (!state) return KS_OK;
    if (!is_last(p)) return send(p, p->t->stage + 1, KS_PIPE_STATE, state, state_bytes(p));
    for (int s = 0; s < p->t->n_stages - 1; s++) KS_TRY(send(p, s, KS_PIPE_FINAL, state, state_bytes(p)));
    return KS_OK;
}

/* Every stage but the last, after its prompt: the whole model's values, then its layers finished with them. */
static ks_status state_finish(ks_pipeline *p) {
    double *state = method_state(p);
    if (!state || is_last(p)) return KS_OK;
    say(p, "waiting for the last stage's %s", "per-layer values");
    KS_TRY(recv(p, p->t->n_stages - 1, KS_PIPE_FINAL, state, state_bytes(p)));
    return ks_method_finish_stage(p->f->method);
}

/* The layer-major prompt's callbacks (forward.h ks_forward_rows_io, whose rows are p->rows). */
static ks_status rows_in(void *ctx, int t0, int n, float *rows) {
    ks_pipeline *p = ctx;
    (void)rows;
    KS_TRY(rows_from_prev(p, n));
    return t0 + n == p->n_prompt ? state_in(p) : KS_OK;
}

static ks_status rows_out(void *ctx, int t0, int n, const float *rows) {
    ks_pipeline *p = ctx;
    (void)rows;
    say(p, "handing on the prompt's rows at token %d", t0);
    KS_TRY(rows_to_next(p, n));
    return t0 + n == p->n_prompt ? state_out(p) : KS_OK;
}

/* The prompt of n tokens on this stage (tokens: stage 0 only); the last stage sends its token to stage 0
 * (*next when stage 0 is the last). Chunk by chunk, or with a budget-sized cache layer-major over the stage's
 * layers (forward.h). */
static ks_status stage_prompt(ks_pipeline *p, const int32_t *tokens, int n, int32_t *next) {
    ks_forward *f = p->f;
    int s = p->t->stage;
    ks_forward_reset(f);
    p->n_prompt = n;
    if (f->kv_rows < f->max_ctx) {
        say(p, "a prompt of %d tokens, layer-major", n);
        ks_forward_rows_io io = {.in = rows_in, .out = rows_out, .ctx = p, .rows = p->rows};
        int32_t token = -1;
        KS_TRY(ks_forward_prompt_layer_major(f, tokens, n, &io, NULL, &token));
        if (is_last(p) && s > 0) KS_TRY(send(p, 0, KS_PIPE_TOKEN, &token, sizeof token));
        if (is_last(p) && s == 0) *next = token;
        if (is_last(p)) KS_TRY(state_out(p));
    } else {
        for (int t0 = 0, m; t0 < n; t0 += m) {
            m = ks_forward_chunk_len(f, n, t0);
            say(p, "prompt chunk at token %d of %d", t0, n);
            int end = t0 + m == n;
            if (s > 0) KS_TRY(rows_from_prev(p, m));
            if (end) KS_TRY(state_in(p));
            ks_forward_io io = {.tokens = s == 0 ? tokens + t0 : NULL, .hidden_in = p->rows, .hidden_out = p->rows,
                                .prompt_end = end, .skip_head = !end};
            KS_TRY(ks_forward_chunk(f, &io, m));
            if (!is_last(p)) KS_TRY(rows_to_next(p, m));
            else if (end && s > 0) KS_TRY(send(p, 0, KS_PIPE_TOKEN, &io.next, sizeof io.next));
            else if (end) *next = io.next;
            if (end) KS_TRY(state_out(p));
        }
    }
    KS_TRY(state_finish(p));
    const ks_kvcache *c = f->ops->kvcache(f->be);
    p->kv_full = (int64_t)n * c->n_layers * c->n_kv_heads * 2 * c->head_dim * c->elem_bytes;
    p->kv_prefill = ks_kvcache_bytes(c);
    return KS_OK;
}

ks_status ks_pipeline_prefill(ks_pipeline *p, const int32_t *tokens, int n, int32_t *next) {
    KS_ASSERT(p->t->stage == 0 && n > 0);
    pipe_cmd c = {.op = PIPE_PROMPT, .n = n};
    p->in_call = 1;
    KS_TRY(pass_cmd(p, &c));
    KS_TRY(stage_prompt(p, tokens, n, next));
    if (!is_last(p)) KS_TRY(recv(p, p->t->n_stages - 1, KS_PIPE_TOKEN, next, sizeof *next));
    p->in_call = 0;
    return KS_OK;
}

ks_status ks_pipeline_decode(ks_pipeline *p, int32_t token, int32_t *next) {
    KS_ASSERT(p->t->stage == 0);
    pipe_cmd c = {.op = PIPE_STEP};
    p->in_call = 1;
    KS_TRY(pass_cmd(p, &c));
    say(p, "decode step at position %d", p->f->n_past);
    if (is_last(p)) {
        KS_TRY(ks_forward_decode(p->f, token, NULL, next));
    } else {
        ks_forward_io io = {.tokens = &token, .hidden_out = p->rows};
        KS_TRY(ks_forward_step(p->f, &io));
        KS_TRY(rows_to_next(p, 1));
        KS_TRY(recv(p, p->t->n_stages - 1, KS_PIPE_TOKEN, next, sizeof *next));
    }
    p->in_call = 0;
    return KS_OK;
}

/* This stage's statistics rows (its method's, none for FullKV) into out; returns the count. */
static int own_stats(const ks_pipeline *p, ks_layer_stat *out) {
    return p->f->method ? ks_method_layer_stats(p->f->method, out) : 0;
}

ks_status ks_pipeline_gather(ks_pipeline *p) {
    KS_ASSERT(p->t->stage == 0);
    pipe_cmd c = {.op = PIPE_STATS};
    p->in_call = 1;
    KS_TRY(pass_cmd(p, &c));
    int rows = own_stats(p, p->stats);
    p->kv = (ks_pipeline_kv){p->kv_full, p->kv_prefill, ks_kvcache_bytes(p->f->ops->kvcache(p->f->be))};
    for (int s = 1; s < p->t->n_stages; s++) {
        pipe_stats_head h;
        KS_TRY(recv(p, s, KS_PIPE_STATS, &h, sizeof h));
        if (h.n_rows < 0 || rows + h.n_rows > KS_METHOD_MAX_LAYERS)
            return ks_fail(KS_ERR_MPI, "pipeline stage %d reports %d statistics rows; room for %d", s, h.n_rows,
                           KS_METHOD_MAX_LAYERS - rows);
        if (h.n_rows) KS_TRY(recv(p, s, KS_PIPE_STATS, p->stats + rows, (size_t)h.n_rows * sizeof *p->stats));
        rows += h.n_rows;
        p->kv.full += h.kv_full, p->kv.prefill += h.kv_prefill, p->kv.end += h.kv_end;
    }
    p->n_stats = rows;
    p->in_call = 0;
    return KS_OK;
}

ks_status ks_pipeline_end(ks_pipeline *p) {
    KS_ASSERT(p->t->stage == 0);
    pipe_cmd c = {.op = PIPE_END};
    return pass_cmd(p, &c);
}

/* A stage > 0's part of PIPE_STATS: its rows and KV bytes to stage 0. */
static ks_status follow_stats(ks_pipeline *p) {
    ks_layer_stat *st = ks_calloc(KS_METHOD_MAX_LAYERS, sizeof *st, "layer statistics");
    if (!st) return KS_ERR_NOMEM;
    pipe_stats_head h = {.kv_full = p->kv_full, .kv_prefill = p->kv_prefill,
                         .kv_end = ks_kvcache_bytes(p->f->ops->kvcache(p->f->be)), .n_rows = own_stats(p, st)};
    ks_status s = send(p, 0, KS_PIPE_STATS, &h, sizeof h);
    if (s == KS_OK && h.n_rows) s = send(p, 0, KS_PIPE_STATS, st, (size_t)h.n_rows * sizeof *st);
    free(st);
    return s;
}

ks_status ks_pipeline_follow(ks_pipeline *p) {
    KS_ASSERT(p->t->stage > 0);
    for (;;) {
        pipe_cmd c;
        say(p, "waiting for stage 0's next call");
        KS_TRY(recv(p, p->t->stage - 1, KS_PIPE_CONTROL, &c, sizeof c));
        KS_TRY(pass_cmd(p, &c));
        switch ((pipe_op)c.op) {
        case PIPE_PROMPT:
            if (c.n < 1 || c.n > p->f->max_ctx)
                return ks_fail(KS_ERR_MPI, "pipeline stage 0 sent a prompt of %d tokens (context %d)", c.n,
                               p->f->max_ctx);
            KS_TRY(stage_prompt(p, NULL, c.n, NULL));
            break;
        case PIPE_STEP:
            say(p, "decode step at position %d", p->f->n_past);
            KS_TRY(follow_step(p));
            break;
        case PIPE_STATS: KS_TRY(follow_stats(p)); break;
        case PIPE_END: return KS_OK;
        default: return ks_fail(KS_ERR_MPI, "pipeline stage %d got an unknown call %d", p->t->stage, c.op);
        }
    }
}
