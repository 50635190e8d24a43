/* ruler.c — the RULER task table, data loading, the size search and sample assembly; see ruler.h. The
 * generators themselves live in ruler_niah.c, ruler_vt.c, ruler_cwe.c, ruler_fwe.c and ruler_qa.c. */
#include "bench/ruler_impl.h"
#include "tokenizer/chat.h"

#include <stdlib.h>
#include <string.h>

/* RULER's scripts/synthetic.yaml (2024) + constants.py. */
static const ks_ruler_task tasks[] = {
    {"niah_single_1", KS_RULER_NIAH, "noise", "words", "numbers", 1, 1, 1, NULL, 128, 128, "string_match_all"},
    {"niah_single_2", KS_RULER_NIAH, "essay", "words", "numbers", 1, 1, 1, NULL, 128, 128, "string_match_all"},
    {"niah_single_3", KS_RULER_NIAH, "essay", "words", "uuids", 1, 1, 1, NULL, 128, 128, "string_match_all"},
    {"niah_multikey_1", KS_RULER_NIAH, "essay", "words", "numbers", 4, 1, 1, NULL, 128, 128, "string_match_all"},
    {"niah_multikey_2", KS_RULER_NIAH, "needle", "words", "numbers", 1, 1, 1, NULL, 128, 128, "string_match_all"},
    {"niah_multikey_3", KS_RULER_NIAH, "needle", "uuids", "uuids", 1, 1, 1, NULL, 128, 128, "string_match_all"},
    {"niah_multivalue", KS_RULER_NIAH, "essay", "words", "numbers", 1, 4, 1, NULL, 128, 128, "string_match_all"},
    {"niah_multiquery", KS_RULER_NIAH, "essay", "words", "numbers", 1, 1, 4, NULL, 128, 128, "string_match_all"},
    {"vt", KS_RULER_VT, NULL, NULL, NULL, 0, 0, 0, NULL, 30, 80, "string_match_all"},
    {"cwe", KS_RULER_CWE, NULL, NULL, NULL, 0, 0, 0, NULL, 120, 120, "string_match_all"},
    {"fwe", KS_RULER_FWE, NULL, NULL, NULL, 0, 0, 0, NULL, 50, 50, "string_match_all"},
    {"qa_1", KS_RULER_QA, NULL, NULL, NULL, 0, 0, 0, "squad", 32, 32, "string_match_part"},
    {"qa_2", KS_RULER_QA, NULL, NULL, NULL, 0, 0, 0, "hotpotqa", 32, 32, "string_match_part"},
};
#define N_TASKS ((int)(sizeof tasks / sizeof tasks[0]))

const ks_ruler_task *ks_ruler_task_find(const char *name) {
    for (int i = 0; i < N_TASKS; i++)
        if (!strcmp(tasks[i].name, name)) return &tasks[i];
    return NULL;
}

const ks_ruler_task *ks_ruler_task_at(int i) { return i >= 0 && i < N_TASKS ? &tasks[i] : NULL; }
int ks_ruler_task_count(void) { return N_TASKS; }

static const ruler_gen_ops *ops_for(ks_ruler_gen g) {
    switch (g) {
    case KS_RULER_NIAH: return &ks_ruler_niah_ops;
    case KS_RULER_VT: return &ks_ruler_vt_ops;
    case KS_RULER_CWE: return &ks_ruler_cwe_ops;
    case KS_RULER_FWE: return &ks_ruler_fwe_ops;
    case KS_RULER_QA: return &ks_ruler_qa_ops;
    }
    KS_ASSERT(0);
    return NULL;
}

/* ---- helpers for the generators ---- */

ks_status ruler_tokens(ks_ruler *r, const char *s, size_t n, int *out) {
    r->ids.n = 0;
    KS_TRY(ks_tokenizer_encode(r->tok, s, n, 0, &r->ids));
    *out = r->ids.n;
    return KS_OK;
}

ks_status ruler_tokens2(ks_ruler *r, const char *a, const char *b, int *out) {
    ks_strbuf_reset(&r->scratch);
    ks_strbuf_appendz(&r->scratch, a);
    ks_strbuf_appendz(&r->scratch, b);
    KS_TRY(ks_strbuf_status(&r->scratch, "a RULER unit"));
    return ruler_tokens(r, r->scratch.s, r->scratch.len, out);
}

void ruler_put_template(ruler_job *j, const char *tmpl, const char *prefix, const char *const *keys,
                        const char *const *vals, int n) {
    ks_strbuf_format(&j->text, tmpl, keys, vals, n);
    j->prefix_at = j->text.len;
    ks_strbuf_format(&j->text, prefix, keys, vals, n);
}

ks_status ruler_set_answers(ruler_job *j, const char *const *vals, int n) {
    j->answers = ks_calloc((size_t)n, sizeof *j->answers, "RULER answers");
    if (!j->answers) return KS_ERR_NOMEM;
    j->n_answers = n;
    for (int i = 0; i < n; i++)
        if (!(j->answers[i] = ks_strndup(vals[i], strlen(vals[i])))) return KS_ERR_NOMEM;
    return KS_OK;
}

int ruler_digits(long v) {
    int d = 1;
    while (v >= 10) v /= 10, d++;
    return d;
}

/* ---- the size search ---- */

/* Largest n in [a, b] with estimate(n) <= target, or a - 1 when none (estimate is non-decreasing). */
static long largest_estimated(const ruler_job *j, const ruler_gen_ops *ops, long a, long b, double target) {
    if (a > b || ops->estimate(j, a) > target) return a - 1;
    while (a < b) {
        long mid = a + (b - a + 1) / 2;
        if (ops->estimate(j, mid) <= target) a = mid;
        else b = mid - 1;
    }
    return a;
}

static ks_status build_and_count(ruler_job *j, const ruler_gen_ops *ops, long n, int *tokens) {
    ks_strbuf_reset(&j->text);
    KS_TRY(ops->build(j, n));
    KS_TRY(ks_strbuf_status(&j->text, "a RULER prompt"));
    return ruler_tokens(j->r, j->text.s, j->text.len, tokens);
}

/* A bracketed search: fits_n is the largest size known to fit, fails_n the smallest known not to. Each step
 * corrects the estimate by the error measured at the last tokenized size and jumps to the largest size the
 * corrected estimate admits inside the bracket; it stops when the bracket closes or the corrected estimate
 * admits nothing larger than a size that fits. */
ks_status ruler_fit(ruler_job *j, const ruler_gen_ops *ops, int budget, int *tokens) {
    long fits_n = j->n_min - 1, fails_n = j->n_max + 1, built_n = -1;
    int fits_tokens = 0, t = 0;
    long n = largest_estimated(j, ops, j->n_min, j->n_max, budget);
    if (n < j->n_min) n = j->n_min;
    for (int iter = 0;; iter++) {
        KS_TRY(build_and_count(j, ops, n, &t));
        built_n = n;
        if (t <= budget) fits_n = n, fits_tokens = t;
        else fails_n = n;
        if (fails_n - fits_n <= 1) break;
        double delta = t - ops->estimate(j, n);
        long m = largest_estimated(j, ops, fits_n + 1, fails_n - 1, budget - delta);
        if (t <= budget && m <= n) break;      /* nothing larger is expected to fit */
        if (t > budget && m >= n) m = n - 1;   /* the estimate was too low here: step below */
        if (iter >= 6) m = fits_n + (fails_n - fits_n) / 2; /* a poor estimate: plain bisection converges */
        if (m <= fits_n) m = fits_n + 1;       /* stay inside the bracket */
        n = m;
    }
    if (fits_n < j->n_min)
        return ks_fail(KS_ERR_RANGE, "RULER %s at length %d: the smallest prompt has %d tokens, more than the %d left "
                                     "after %d tokens to generate; use a longer length", j->t->name, j->length, t, budget,
                       j->length - budget);
    if (built_n != fits_n) {
        KS_TRY(build_and_count(j, ops, fits_n, &t));
        KS_ASSERT(t == fits_tokens); /* building is deterministic in n */
    }
    *tokens = fits_tokens;
    return KS_OK;
}

/* ---- opening: load what the configured tasks need ---- */

static ks_status need_file(const char *path, const char *task, const char *what, const char *key, const char *cfg) {
    if (path) return KS_OK;
    return ks_fail(KS_ERR_ARG, "%s: RULER task %s needs %s; download it and set '%s: <path>' in the config", cfg, task,
                   what, key);
}

/* Tokens that the model input adds to a sample's prompt: the chat template's markup and BOS (template_name
 * non-NULL) or BOS alone. NVIDIA RULER sizes the templated input, so the target length bounds what the model
 * really sees; the template is measured around an empty user turn, plus 2 tokens of slack for merges where the
 * markup meets the text. */
static ks_status input_reserve(const ks_tokenizer *tok, const char *template_name, int *out) {
    ks_ids ids = {0};
    char *text = NULL;
    int has_bos = 0;
    ks_status st = template_name ? ks_chat_apply(tok, template_name, NULL, "", &text, &has_bos) : KS_OK;
    if (st == KS_OK) st = ks_tokenizer_encode(tok, text ? text : "", text ? strlen(text) : 0, !has_bos, &ids);
    *out = ids.n + (template_name ? 2 : 0);
    free(text);
    ks_ids_free(&ids);
    return st;
}

ks_status ks_ruler_open(ks_ruler **out, const ks_bench_config *cfg, const ks_tokenizer *tok) {
    ks_ruler *r = ks_calloc(1, sizeof *r, "the RULER generator");
    if (!r) return KS_ERR_NOMEM;
    r->cfg = cfg;
    r->tok = tok;
    r->loom = cfg->ruler_variant == KS_RULER_VARIANT_LOOM;
    int essay = 0, words = 0;
    /* LOOM sizes the bare task text and applies its template afterwards: it reserves nothing. */
    ks_status st = r->loom ? KS_OK : input_reserve(tok, NULL, &r->reserve_plain);
    if (st == KS_OK && !r->loom && cfg->template_name) st = input_reserve(tok, cfg->template_name, &r->reserve_template);
    for (int i = 0; i < cfg->n_tasks && st == KS_OK; i++) {
        const ks_ruler_task *t = ks_ruler_task_find(cfg->task_names[i]);
        if (!t) {
            st = ks_fail(KS_ERR_ARG, "%s: unknown RULER task '%s'", cfg->path, cfg->task_names[i]);
            break;
        }
        essay |= t->haystack && !strcmp(t->haystack, "essay");
        words |= t->gen == KS_RULER_CWE || (t->type_k && (!strcmp(t->type_k, "words") || !strcmp(t->type_v, "words")));
        if (t->dataset && !strcmp(t->dataset, "squad") && !r->squad.docs) {
            st = need_file(cfg->squad_path, t->name, "the SQuAD v2.0 dev set (dev-v2.0.json from "
                           "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json)", "squad_path", cfg->path);
            if (st == KS_OK) st = ks_qa_load_squad(&r->squad, cfg->squad_path);
        }
        if (t->dataset && !strcmp(t->dataset, "hotpotqa") && !r->hotpotqa.docs) {
            st = need_file(cfg->hotpotqa_path, t->name, "the HotpotQA dev distractor set "
                           "(hotpot_dev_distractor_v1.json from "
                           "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json)", "hotpotqa_path", cfg->path);
            if (st == KS_OK) st = ks_qa_load_hotpotqa(&r->hotpotqa, cfg->hotpotqa_path);
        }
    }
    if (st == KS_OK && essay) {
        st = ks_essay_load(&r->essay, cfg->essays_dir);
        if (st == KS_OK) st = ks_essay_measure(&r->essay, tok);
    }
    if (st == KS_OK && words) st = ks_words_load(&r->words, cfg->wordlists_dir);
    if (st == KS_OK && words) {
        r->pool_cost = ks_malloc((size_t)r->words.n_pool * sizeof *r->pool_cost, "common-word costs");
        if (!r->pool_cost) st = KS_ERR_NOMEM;
        for (int i = 0; st == KS_OK && i < r->words.n_pool; i++) {
            int c = 0;
            st = ruler_tokens2(r, " ", r->words.pool[i], &c);
            r->pool_cost[i] = c;
        }
    }
    if (st != KS_OK) {
        ks_ruler_close(r);
        return st;
    }
    *out = r;
    return KS_OK;
}

void ks_ruler_close(ks_ruler *r) {
    if (!r) return;
    ks_essay_free(&r->essay);
    ks_words_free(&r->words);
    free(r->pool_cost);
    ks_qa_free(&r->squad);
    ks_qa_free(&r->hotpotqa);
    ks_ids_free(&r->ids);
    ks_strbuf_free(&r->scratch);
    free(r);
}

/* ---- one sample ---- */

static void job_free(ruler_job *j, const ruler_gen_ops *ops) {
    if (ops->release) ops->release(j);
    ks_strbuf_free(&j->text);
    for (int i = 0; i < j->n_answers; i++) free(j->answers[i]);
    free(j->answers);
}

ks_status ks_ruler_generate(ks_ruler *r, const char *task, int length, int index, ks_sample *out) {
    memset(out, 0, sizeof *out);
    const ks_ruler_task *t = ks_ruler_task_find(task);
    if (!t) return ks_fail(KS_ERR_ARG, "unknown RULER task '%s'", task);
    if (length < 256) return ks_fail(KS_ERR_ARG, "RULER %s: length %d is too short (at least 256 tokens)", task, length);
    const ruler_gen_ops *ops = ops_for(t->gen);
    ruler_job j = {.r = r, .t = t, .length = length, .index = index, .seed = ks_rng_sample_seed(r->cfg->seed, task, length, index)};
    /* LOOM's FWE sizes against L itself, so its prompts may overrun L by up to tokens_to_generate. */
    int budget = length - (r->loom && t->gen == KS_RULER_FWE ? 0 : t->tokens_to_generate) -
                 (ks_bench_config_use_template(r->cfg, task, length) ? r->reserve_template : r->reserve_plain);
    int tokens = 0;
    ks_status st = ops->prepare(&j);
    if (st == KS_OK) st = ruler_fit(&j, ops, budget, &tokens);
    if (st == KS_OK) {
        size_t cut = r->loom ? j.text.len : j.prefix_at;
        snprintf(out->task, sizeof out->task, "%s", task);
        snprintf(out->metric, sizeof out->metric, "%s", t->metric);
        out->length = length;
        out->index = index;
        out->seed = j.seed;
        out->prompt_tokens = tokens;
        out->max_new_tokens = r->loom ? t->loom_max_new_tokens : t->tokens_to_generate;
        out->use_template = ks_bench_config_use_template(r->cfg, task, length);
        out->prompt = ks_strndup(j.text.s, cut);
        out->answer_prefix = ks_strndup(j.text.s + cut, j.text.len - cut);
        out->answers = j.answers;
        out->n_answers = j.n_answers;
        j.answers = NULL;
        j.n_answers = 0;
        if (!out->prompt || !out->answer_prefix) st = KS_ERR_NOMEM;
    }
    job_free(&j, ops);
    if (st != KS_OK) ks_sample_free(out);
    return st;
}
