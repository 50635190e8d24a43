/* generate.c — see generate.h. */
#include "engine/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/pipeline.h"
#include "tokenizer/chat.h"

void ks_stop_set_add(ks_stop_set *s, int32_t id) {
    if (id < 0 || ks_stop_set_has(s, id) || s->n == KS_MAX_STOP_IDS) return;
    s->ids[s->n++] = id;
}

int ks_stop_set_has(const ks_stop_set *s, int32_t id) {
    for (int i = 0; i < s->n; i++)
        if (s->ids[i] == id) return 1;
    return 0;
}

void ks_stop_set_build(ks_stop_set *s, const ks_model_config *cfg, const ks_tokenizer *tok) {
    /* End-of-turn markers of the chat formats kvscope writes (chat.h) and of common base vocabularies. */
    static const char *const turn_ends[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>",
                                            "<|eom_id|>", "</s>"};
    s->n = 0;
    for (int i = 0; i < cfg->n_eos; i++) ks_stop_set_add(s, cfg->eos_ids[i]);
    if (!tok) return;
    ks_stop_set_add(s, ks_tokenizer_eos(tok));
    for (size_t i = 0; i < sizeof turn_ends / sizeof turn_ends[0]; i++) {
        int32_t id = ks_tokenizer_token_id(tok, turn_ends[i]);
        if (id >= 0 && ks_tokenizer_is_special(tok, id)) ks_stop_set_add(s, id);
    }
}

ks_status ks_generate_encode_prompt(const ks_tokenizer *tok, const char *text, int chat, ks_ids *ids) {
    if (!chat) return ks_tokenizer_encode(tok, text, strlen(text), 1, ids);
    char *templated;
    int has_bos = 0;
    KS_TRY(ks_chat_apply(tok, "auto", NULL, text, &templated, &has_bos));
    ks_status st = ks_tokenizer_encode(tok, templated, strlen(templated), !has_bos, ids);
    free(templated);
    return st;
}

ks_status ks_generate_check_length(const ks_model *m, int n_prompt, int max_new) {
    int limit = m->cfg.max_pos;
    if (n_prompt > limit)
        return ks_fail(KS_ERR_RANGE,
                       "the prompt has %d tokens, more than the model's limit of %d positions "
                       "(max_position_embeddings of %s); shorten the prompt",
                       n_prompt, limit, m->source);
    if ((long)n_prompt + max_new > limit)
        return ks_fail(KS_ERR_RANGE,
                       "the prompt (%d tokens) plus max_new_tokens (%d) makes %ld tokens, more than the model's "
                       "limit of %d positions (max_position_embeddings of %s); %s",
                       n_prompt, max_new, (long)n_prompt + max_new, limit, m->source,
                       n_prompt < limit ? "lower --max_new_tokens or shorten the prompt" : "shorten the prompt");
    return KS_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int ks_generate_accept(const ks_generate_params *p, int32_t *out, ks_generate_result *r, int32_t id) {
    out[r->n++] = id;
    if (p->on_token) p->on_token(p->ctx, out, r->n);
    if (p->stop && ks_stop_set_has(p->stop, id)) {
        r->stopped = 1;
        return 1;
    }
    return r->n == p->max_new_tokens;
}

ks_status ks_generate_begin(ks_forward *f, const int32_t *prompt, int n_prompt, const ks_generate_params *p,
                            int32_t *out, ks_generate_result *r, int32_t *next, int *done) {
    *r = (ks_generate_result){0};
    *done = 1;
    if (n_prompt <= 0) return ks_fail(KS_ERR_ARG, "the prompt is empty (no tokens to start from)");
    KS_TRY(ks_generate_check_length(f->m, n_prompt, p->max_new_tokens));
    if (p->max_new_tokens <= 0) return KS_OK;
    ks_pipeline *pipe = p->pipeline;
    double t0 = now_s();
    if (pipe) {
        KS_TRY(ks_pipeline_prefill(pipe, prompt, n_prompt, next));
    } else {
        ks_forward_reset(f);
        KS_TRY(ks_forward_prefill(f, prompt, n_prompt, NULL, next));
    }
    r->prefill_s = now_s() - t0;
    r->prefill_method_s = f->method_s;
    const ks_kvcache *c = ks_forward_kvcache(f);
    r->kv_bytes_full = (int64_t)n_prompt * c->n_layers * c->n_kv_heads * 2 * c->head_dim * c->elem_bytes;
    r->kv_bytes_prefill = ks_kvcache_bytes(c);
    *done = ks_generate_accept(p, out, r, *next);
    return KS_OK;
}

ks_status ks_generate_end(const ks_forward *f, const ks_generate_params *p, ks_generate_result *r) {
    r->kv_bytes_end = ks_kvcache_bytes(ks_forward_kvcache(f)); /* the accessor applies a backend's late bookkeeping */
    ks_pipeline *pipe = p->pipeline;
    if (!pipe) return KS_OK;
    KS_TRY(ks_pipeline_gather(pipe));
    r->kv_bytes_full = pipe->kv.full, r->kv_bytes_prefill = pipe->kv.prefill, r->kv_bytes_end = pipe->kv.end;
    return KS_OK;
}

ks_status ks_generate_step(ks_forward *f, const ks_generate_params *p, int32_t *next) {
    return p->pipeline ? ks_pipeline_decode(p->pipeline, *next, next) : ks_forward_decode(f, *next, NULL, next);
}

ks_status ks_generate(ks_forward *f, const int32_t *prompt, int n_prompt, const ks_generate_params *p,
                      int32_t *out, ks_generate_result *r) {
    int32_t next;
    int done;
    KS_TRY(ks_generate_begin(f, prompt, n_prompt, p, out, r, &next, &done));
    if (p->max_new_tokens <= 0) return KS_OK;
    while (!done) {
        double ts = now_s(); /* time the model only, not the caller's on_token */
        KS_TRY(ks_generate_step(f, p, &next));
        r->decode_s += now_s() - ts;
        done = ks_generate_accept(p, out, r, next);
    }
    return ks_generate_end(f, p, r);
}
