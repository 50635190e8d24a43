/* runner.c — see runner.h. */
#include "runner/runner.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/metrics.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include "tokenizer/chat.h"

/* Slot 0's forward: the caller's builder, or ks_forward_init. */
static ks_status build_first(const ks_runner_params *p, ks_forward *f, const ks_model *m, ks_method *method,
                             const ks_forward_params *fp) {
    return p->build ? p->build(p->build_ctx, f, m, method, fp) : ks_forward_init(f, m, method, fp);
}

ks_status ks_runner_init(ks_runner *r, const ks_runner_params *p) {
    memset(r, 0, sizeof *r);
    KS_ASSERT((p->model_path || p->model) && (!p->model || p->build) && (!p->stages || p->batch <= 1));
    ks_status st;
    if (p->model) {
        r->model = p->model;
    } else {
        KS_TRY_GOTO(st, ks_forward_load_model(&r->own_model, p->model_path, p->stages ? p->first_layer : 0,
                                              p->stages ? p->last_layer : -1, p->device, p->cpu_weights), fail);
        r->model = &r->own_model;
    }
    KS_TRY_GOTO(st, ks_tokenizer_load(&r->tok, p->tokenizer_path ? p->tokenizer_path : p->model_path), fail);
    int max_ctx = p->max_ctx < r->model->cfg.max_pos ? p->max_ctx : r->model->cfg.max_pos;
    r->max_new = p->max_new > 0 ? p->max_new : 1;
    ks_method *first_method = p->methods ? p->methods[0] : NULL;
    ks_forward_params fp = {.device = p->device, .max_ctx = max_ctx, .max_new = r->max_new,
                            .chunk = p->chunk > 0 ? p->chunk : ks_forward_default_chunk(first_method, max_ctx),
                            .threads = p->threads, .cache = p->cache, .gpu_share = p->gpu_share, .batch = p->batch};
    if (p->batch <= 0) fp.batch = ks_batch_auto_slots(r->model, first_method, &fp, p->sharing, KS_BATCH_AUTO_MAX);
    ks_forward first;
    KS_TRY_GOTO(st, build_first(p, &first, r->model, first_method, &fp), fail);
    KS_TRY_GOTO(st, ks_batch_init_forward(&r->batch, &first, p->methods, r->max_new), fail);
    r->methods = p->methods;
    r->slots = ks_calloc((size_t)r->batch.n, sizeof *r->slots, "runner slots");
    if (!r->slots) {
        st = KS_ERR_NOMEM;
        goto fail;
    }
    if (p->stages) KS_TRY_GOTO(st, ks_pipeline_init(&r->pipe, &r->batch.seqs[0].fwd, p->stages), fail);
    if (!p->ignore_stops) ks_stop_set_build(&r->stop, &r->model->cfg, r->tok);
    r->ignore_stops = p->ignore_stops;
    ks_ids nl = {0};
    KS_TRY_GOTO(st, ks_tokenizer_encode(r->tok, "\n", 1, 0, &nl), fail);
    r->newline_id = nl.n ? nl.ids[nl.n - 1] : -1;
    ks_ids_free(&nl);
    return KS_OK;
fail:
    ks_runner_free(r);
    return st;
}

void ks_runner_free(ks_runner *r) {
    if (!r) return;
    free(r->slots);
    ks_pipeline_free(&r->pipe);
    ks_batch_free(&r->batch);
    ks_tokenizer_free(r->tok);
    ks_model_free(&r->own_model);
    memset(r, 0, sizeof *r);
}

/* The sample's ids under the prompt rule of runner.h. */
static ks_status encode_sample(const ks_runner *r, const ks_sample *s, const char *template_name, ks_ids *ids) {
    const char *prefix = s->answer_prefix ? s->answer_prefix : "";
    int use_template = template_name && strcmp(template_name, "none") != 0;
    char *head = NULL;
    int has_bos = 0;
    if (use_template) KS_TRY(ks_chat_apply(r->tok, template_name, NULL, s->prompt, &head, &has_bos));
    const char *user = use_template ? head : s->prompt;
    size_t lu = strlen(user), lp = strlen(prefix);
    char *text = ks_malloc(lu + lp + 1, "prompt text");
    if (!text) {
        free(head);
        return KS_ERR_NOMEM;
    }
    memcpy(text, user, lu);
    memcpy(text + lu, prefix, lp + 1);
    free(head);
    ks_status st = ks_tokenizer_encode(r->tok, text, lu + lp, !has_bos, ids);
    free(text);
    return st;
}

static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_maxrss * 1024 : 0;
}

/* The method's per-layer record of slot `slot`'s prompt (the result file's /layers rows), every stage's. */
static ks_status layer_stats(const ks_runner *r, int slot, ks_result *res) {
    ks_layer_stat *st = ks_calloc(KS_METHOD_MAX_LAYERS, sizeof *st, "layer statistics");
    if (!st) return KS_ERR_NOMEM;
    if (r->pipe.t) {
        memcpy(st, r->pipe.stats, sizeof *st * (size_t)r->pipe.n_stats);
        res->n_layers = r->pipe.n_stats;
    } else {
        res->n_layers = ks_method_layer_stats(r->methods[slot], st);
    }
    res->layers = st;
    return KS_OK;
}

/* JSON array of the answers (the result file stores the references with each prediction). */
static char *answers_json(const ks_sample *s) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < s->n_answers; i++) cJSON_AddItemToArray(a, cJSON_CreateString(s->answers[i]));
    char *out = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return out;
}

int ks_runner_free_slot(const ks_runner *r) { return ks_batch_free_slot(&r->batch); }

int ks_runner_busy(const ks_runner *r) { return ks_batch_busy(&r->batch); }

int ks_runner_finished(const ks_runner *r) { return ks_batch_finished(&r->batch); }

ks_status ks_runner_step(ks_runner *r) { return ks_batch_step(&r->batch); }

ks_status ks_runner_join(ks_runner *r, int slot, const ks_sample *s, const char *template_name) {
    if (s->max_new_tokens > r->max_new)
        return ks_fail(KS_ERR_RANGE, "sample %s/%d/%d asks for %d new tokens; the runner was sized for %d", s->task,
                       s->length, s->index, s->max_new_tokens, r->max_new);
    ks_ids ids = {0};
    ks_status st;
    KS_TRY_GOTO(st, encode_sample(r, s, template_name, &ids), done);
    const ks_forward *f = &r->batch.seqs[slot].fwd;
    if (ids.n + s->max_new_tokens > f->max_ctx) {
        st = ks_fail(KS_ERR_RANGE, "sample %s/%d/%d: %d prompt tokens + %d to generate exceed the context of %d",
                     s->task, s->length, s->index, ids.n, s->max_new_tokens, f->max_ctx);
        goto done;
    }
    ks_stop_set stop = r->stop;
    if (s->stop_on_newline && !r->ignore_stops) ks_stop_set_add(&stop, r->newline_id);
    ks_generate_params gp = {.max_new_tokens = s->max_new_tokens, .stop = &stop,
                             .pipeline = r->pipe.t ? &r->pipe : NULL};
    KS_TRY_GOTO(st, ks_batch_join(&r->batch, slot, ids.ids, ids.n, &gp, NULL), done);
    r->slots[slot] = (ks_runner_slot){.sample = s, .prompt_tokens = ids.n};
done:
    ks_ids_free(&ids);
    return st;
}

ks_status ks_runner_collect(ks_runner *r, int slot, ks_result *res) {
    const ks_batch_seq *q = &r->batch.seqs[slot];
    const ks_sample *s = r->slots[slot].sample;
    const ks_generate_result *gr = &q->r;
    memset(res, 0, sizeof *res);
    snprintf(res->task, sizeof res->task, "%s", s->task);
    res->length = s->length;
    res->index = s->index;
    res->seed = s->seed;
    ks_status st;
    KS_TRY_GOTO(st, ks_tokenizer_decode(r->tok, q->out, gr->n, 1, &res->prediction), done);
    double score;
    KS_TRY_GOTO(st, ks_bench_score(s, res->prediction, &score), done);
    res->score = 100.0 * score;
    res->prompt_tokens = r->slots[slot].prompt_tokens;
    res->generated_tokens = gr->n;
    res->prefill_s = gr->prefill_s;
    res->decode_s = gr->decode_s;
    res->peak_bytes = peak_rss_bytes();
    res->kv_bytes_before = gr->kv_bytes_full;
    res->kv_bytes_after = gr->kv_bytes_prefill;
    if (r->methods && r->methods[slot]) KS_TRY_GOTO(st, layer_stats(r, slot, res), done);
    res->answers_json = answers_json(s);
    if (!res->answers_json) st = ks_fail(KS_ERR_NOMEM, "out of memory");
done:
    ks_batch_leave(&r->batch, slot);
    r->slots[slot] = (ks_runner_slot){0};
    if (st != KS_OK) ks_result_free(res);
    return st;
}

void ks_runner_abandon(ks_runner *r, int slot) {
    ks_batch_leave(&r->batch, slot);
    r->slots[slot] = (ks_runner_slot){0};
}

ks_status ks_runner_run(ks_runner *r, const ks_sample *s, const char *template_name, ks_result *res) {
    memset(res, 0, sizeof *res);
    KS_ASSERT(ks_runner_busy(r) == 0);
    KS_TRY(ks_runner_join(r, 0, s, template_name));
    ks_status st = KS_OK;
    while (st == KS_OK && ks_runner_finished(r) < 0) st = ks_runner_step(r);
    if (st == KS_OK) return ks_runner_collect(r, 0, res);
    ks_runner_abandon(r, 0);
    return st;
}

ks_status ks_runner_follow(ks_runner *r) { return ks_pipeline_follow(&r->pipe); }

ks_status ks_runner_end(ks_runner *r) { return ks_pipeline_end(&r->pipe); }
