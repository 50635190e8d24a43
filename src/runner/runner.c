/* runner.c — see runner.h. */
#include "runner/runner.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/metrics.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include "tokenizer/chat.h"

ks_status ks_runner_init(ks_runner *r, const ks_runner_params *p) {
    memset(r, 0, sizeof *r);
    ks_status st;
    KS_TRY_GOTO(st, ks_forward_load_model(&r->model, p->model_path, p->stages ? p->first_layer : 0,
                                          p->stages ? p->last_layer : -1, p->device, p->cpu_weights), fail);
    KS_TRY_GOTO(st, ks_tokenizer_load(&r->tok, p->model_path), fail);
    int max_ctx = p->max_ctx < r->model.cfg.max_pos ? p->max_ctx : r->model.cfg.max_pos;
    r->max_new = p->max_new > 0 ? p->max_new : 1;
    ks_forward_params fp = {.device = p->device, .max_ctx = max_ctx, .max_new = r->max_new,
                            .chunk = p->chunk > 0 ? p->chunk : ks_forward_default_chunk(p->method, max_ctx), .threads = p->threads, .cache = p->cache,
                            .gpu_share = p->gpu_share};
    KS_TRY_GOTO(st, ks_forward_init(&r->fwd, &r->model, p->method, &fp), fail);
    r->method = p->method;
    if (p->stages) KS_TRY_GOTO(st, ks_pipeline_init(&r->pipe, &r->fwd, p->stages), fail);
    ks_stop_set_build(&r->stop, &r->model.cfg, r->tok);
    ks_ids nl = {0};
    KS_TRY_GOTO(st, ks_tokenizer_encode(r->tok, "\n", 1, 0, &nl), fail);
    r->newline_id = nl.n ? nl.ids[nl.n - 1] : -1;
    ks_ids_free(&nl);
    r->out = ks_malloc(sizeof(int32_t) * (size_t)r->max_new, "generated ids");
    if (!r->out) {
        st = KS_ERR_NOMEM;
        goto fail;
    }
    return KS_OK;
fail:
    ks_runner_free(r);
    return st;
}

void ks_runner_free(ks_runner *r) {
    if (!r) return;
    free(r->out);
    ks_pipeline_free(&r->pipe);
    ks_forward_free(&r->fwd);
    ks_tokenizer_free(r->tok);
    ks_model_free(&r->model);
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

/* The method's per-layer record of this sample's prompt (the result file's /layers rows), every stage's. */
static ks_status layer_stats(const ks_runner *r, ks_result *res) {
    ks_layer_stat *st = ks_calloc(KS_METHOD_MAX_LAYERS, sizeof *st, "layer statistics");
    if (!st) return KS_ERR_NOMEM;
    if (r->pipe.t) {
        memcpy(st, r->pipe.stats, sizeof *st * (size_t)r->pipe.n_stats);
        res->n_layers = r->pipe.n_stats;
    } else {
        res->n_layers = ks_method_layer_stats(r->method, st);
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

ks_status ks_runner_run(ks_runner *r, const ks_sample *s, const char *template_name, ks_result *res) {
    memset(res, 0, sizeof *res);
    snprintf(res->task, sizeof res->task, "%s", s->task);
    res->length = s->length;
    res->index = s->index;
    res->seed = s->seed;
    if (s->max_new_tokens > r->max_new)
        return ks_fail(KS_ERR_RANGE, "sample %s/%d/%d asks for %d new tokens; the runner was sized for %d", s->task,
                       s->length, s->index, s->max_new_tokens, r->max_new);
    ks_ids ids = {0};
    ks_status st;
    KS_TRY_GOTO(st, encode_sample(r, s, template_name, &ids), done);
    if (ids.n + s->max_new_tokens > r->fwd.max_ctx) {
        st = ks_fail(KS_ERR_RANGE, "sample %s/%d/%d: %d prompt tokens + %d to generate exceed the context of %d",
                     s->task, s->length, s->index, ids.n, s->max_new_tokens, r->fwd.max_ctx);
        goto done;
    }
    ks_stop_set stop = r->stop;
    if (s->stop_on_newline) ks_stop_set_add(&stop, r->newline_id);
    ks_generate_params gp = {.max_new_tokens = s->max_new_tokens, .stop = &stop,
                             .pipeline = r->pipe.t ? &r->pipe : NULL};
    ks_generate_result gr;
    KS_TRY_GOTO(st, ks_generate(&r->fwd, ids.ids, ids.n, &gp, r->out, &gr), done);
    KS_TRY_GOTO(st, ks_tokenizer_decode(r->tok, r->out, gr.n, 1, &res->prediction), done);
    double score;
    KS_TRY_GOTO(st, ks_bench_score(s, res->prediction, &score), done);
    res->score = 100.0 * score;
    res->prompt_tokens = ids.n;
    res->generated_tokens = gr.n;
    res->prefill_s = gr.prefill_s;
    res->decode_s = gr.decode_s;
    res->peak_bytes = peak_rss_bytes();
    res->kv_bytes_before = gr.kv_bytes_full;
    res->kv_bytes_after = gr.kv_bytes_prefill;
    if (r->method) KS_TRY_GOTO(st, layer_stats(r, res), done);
    res->answers_json = answers_json(s);
    if (!res->answers_json) st = ks_fail(KS_ERR_NOMEM, "out of memory");
done:
    ks_ids_free(&ids);
    if (st != KS_OK) ks_result_free(res);
    return st;
}

ks_status ks_runner_follow(ks_runner *r) { return ks_pipeline_follow(&r->pipe); }

ks_status ks_runner_end(ks_runner *r) { return ks_pipeline_end(&r->pipe); }
