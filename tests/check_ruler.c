/* check_ruler.c — the RULER generator against RULER's rules with the Llama-3.1 tokenizer fixture: sizing at 4K..128K,
 * the templates' fixed text, determinism, needles present and answers consistent, the LOOM variant, bad
 * inputs; plus the RNG and the sentence rule it relies on.
 *
 * Sizing rule checked (ruler.h): prompt_tokens + tokens_to_generate <= L (LOOM fwe: prompt_tokens <= L), with
 * at most slack_for(task) tokens left unused. The slack is about one haystack unit: a noise line or a
 * distractor needle (~20 tokens; ~60 with uuids), an essay word, a cwe list word (3 numbered entries), an fwe
 * word step, a QA document. All 13 tasks run at 4K and 8K; one essay task and one line task run up to 128K.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/haystack.h"
#include "bench/rng.h"
#include "bench/ruler.h"
#include "bench/strbuf.h"
#include "cli/commands.h"
#include "core/json.h"
#include "test_util.h"

/* RULER's task templates and answer prefixes, verbatim. */
static const char NIAH_T[] = "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize "
                             "it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special "
                             "magic {type_needle_v} for {query} mentioned in the provided text?";
static const char NIAH_P[] = " The special magic {type_needle_v} for {query} mentioned in the provided text are";
static const char VT_T[] = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
                           "Question: Find all variables that are assigned the value {query} in the text above.";
static const char VT_P_LOOM[] = " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables "
                                "are assgined the value {query}, they are: ";
static const char CWE_T[] = "Below is a numbered list of words. In these words, some appear more often than others. Memorize "
                            "the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the "
                            "above list?";
static const char CWE_P[] = " Answer: The top 10 words that appear most often in the list are:";
static const char FWE_T[] = "Read the following coded text and track the frequency of each coded word. Find the three most "
                            "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please "
                            "ignore the dots '....'. What are the three most frequently appeared words in the above coded "
                            "text?";
static const char FWE_P[] = " Answer: According to the coded text above, the three most frequently appeared words are:";
static const char QA_T[] = "Answer the question based on the given documents. Only give me the answer and do not output any "
                           "other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on "
                           "the given documents. Only give me the answer and do not output any other words.\n\nQuestion: "
                           "{query}";
static const char QA_P[] = " Answer:";

static ks_tokenizer *tok;
static ks_bench_config cfg_ruler, cfg_loom;
static ks_ruler *gen_ruler, *gen_loom;

static void load_config(ks_bench_config *c, const char *variant) {
    char yaml[8192];
    char data[4096];
    snprintf(data, sizeof data, "%s", KS_DATA);
    snprintf(yaml, sizeof yaml,
             "benchmark_name: RULER\n"
             "task_names: [niah_single_1, niah_single_2, niah_single_3, niah_multikey_1, niah_multikey_2,\n"
             "             niah_multikey_3, niah_multivalue, niah_multiquery, vt, cwe, fwe, qa_1, qa_2]\n"
             "length: [4096]\nseed: 7\nruler_variant: %s\ndata_dir: %s\nsquad_path: %s\n",
             variant, data, ks_test_fixture("ruler/squad_mini.json"));
    size_t n = strlen(yaml);
    snprintf(yaml + n, sizeof yaml - n, "hotpotqa_path: %s\n", ks_test_fixture("ruler/hotpotqa_mini.json"));
    ck_assert_int_eq(ks_bench_config_parse(c, yaml, strlen(yaml), "inline.yaml"), KS_OK);
}

static void setup(void) {
    if (ks_tokenizer_load(&tok, ks_test_fixture("tokenizer/llama3_1")) != KS_OK) {
        fprintf(stderr, "check_ruler: %s\n", ks_last_error());
        exit(1);
    }
    load_config(&cfg_ruler, "ruler");
    load_config(&cfg_loom, "loom");
    if (ks_ruler_open(&gen_ruler, &cfg_ruler, tok) != KS_OK || ks_ruler_open(&gen_loom, &cfg_loom, tok) != KS_OK) {
        fprintf(stderr, "check_ruler: %s\n", ks_last_error());
        exit(1);
    }
}

static void teardown(void) {
    ks_ruler_close(gen_ruler);
    ks_ruler_close(gen_loom);
    ks_bench_config_free(&cfg_ruler);
    ks_bench_config_free(&cfg_loom);
    ks_tokenizer_free(tok);
}

static ks_sample make(ks_ruler *r, const char *task, int length, int index) {
    ks_sample s;
    ks_status st = ks_ruler_generate(r, task, length, index, &s);
    if (st != KS_OK) ck_abort_msg("%s @ %d #%d: %s", task, length, index, ks_last_error());
    return s;
}

static char *full_text(const ks_sample *s) {
    ks_strbuf sb = {0};
    ks_strbuf_appendz(&sb, s->prompt);
    ks_strbuf_appendz(&sb, s->answer_prefix);
    return ks_strbuf_take(&sb);
}

static int count_tokens(const char *text) {
    ks_ids ids = {0};
    ck_assert_int_eq(ks_tokenizer_encode(tok, text, strlen(text), 0, &ids), KS_OK);
    int n = ids.n;
    ks_ids_free(&ids);
    return n;
}

/* Allowed unused tokens below the budget: about one haystack unit (see the file comment). */
static int slack_for(const ks_ruler_task *t) {
    switch (t->gen) {
    case KS_RULER_NIAH:
        if (!strcmp(t->haystack, "essay")) return 24;
        return !strcmp(t->type_v, "uuids") ? 128 : 48;
    case KS_RULER_VT: return 48;
    case KS_RULER_CWE: return 48;
    case KS_RULER_FWE: return 64;
    case KS_RULER_QA: return 160; /* one fixture document block */
    }
    return 0;
}

static void check_size(const ks_sample *s, int loom) {
    const ks_ruler_task *t = ks_ruler_task_find(s->task);
    char *text = full_text(s);
    ck_assert_int_eq(count_tokens(text), s->prompt_tokens); /* the recorded count is exact */
    free(text);
    int budget = s->length - (loom && t->gen == KS_RULER_FWE ? 0 : t->tokens_to_generate);
    if (s->prompt_tokens > budget || s->prompt_tokens < budget - slack_for(t))
        ck_abort_msg("%s @ %d #%d: %d prompt tokens, budget %d, slack %d", s->task, s->length, s->index, s->prompt_tokens,
                     budget, slack_for(t));
}

START_TEST(test_sizing_all_tasks_short) {
    for (int i = 0; i < ks_ruler_task_count(); i++) {
        const ks_ruler_task *t = ks_ruler_task_at(i);
        for (int L = 4096; L <= 8192; L *= 2)
            for (int idx = 0; idx < 2; idx++) {
                ks_sample s = make(gen_ruler, t->name, L, idx);
                check_size(&s, 0);
                ck_assert_int_eq(s.max_new_tokens, t->tokens_to_generate);
                ck_assert_str_eq(s.metric, t->metric);
                ks_sample_free(&s);
            }
    }
}
END_TEST

START_TEST(test_sizing_long) {
    const char *tasks[] = {"niah_single_2", "niah_multikey_2"};
    for (int t = 0; t < 2; t++)
        for (int L = 16384; L <= 131072; L *= 2) {
            ks_sample s = make(gen_ruler, tasks[t], L, 3);
            check_size(&s, 0);
            ks_sample_free(&s);
        }
}
END_TEST

/* Formats a RULER template part: {type_needle_v}, {query}, {num_v}; NIAH's singular rewrite when asked. */
static char *spec_part(const char *tmpl, const char *type_v, const char *query, int singular) {
    ks_strbuf sb = {0};
    ks_strbuf_appendz(&sb, tmpl);
    if (singular) {
        ks_strbuf_replace_all(&sb, "Some", "A");
        ks_strbuf_replace_all(&sb, "are all", "is");
        ks_strbuf_replace_all(&sb, "are", "is");
        ks_strbuf_replace_all(&sb, "answers", "answer");
    }
    char *t = ks_strbuf_take(&sb);
    const char *keys[] = {"type_needle_v", "query", "num_v"};
    const char *vals[] = {type_v, query, "5"};
    ks_strbuf_format(&sb, t, keys, vals, 3);
    free(t);
    return ks_strbuf_take(&sb);
}

/* The text before / after "{context}" of template + prefix, formatted. */
static void spec_around(const char *tmpl, const char *prefix, const char *type_v, const char *query, int singular,
                        char **head, char **tail) {
    char *t = spec_part(tmpl, type_v, query, singular), *p = spec_part(prefix, type_v, query, singular);
    char *ctx = strstr(t, "{context}");
    ck_assert_ptr_nonnull(ctx);
    *head = strndup(t, (size_t)(ctx - t));
    ks_strbuf sb = {0};
    ks_strbuf_appendz(&sb, ctx + strlen("{context}"));
    ks_strbuf_appendz(&sb, p);
    *tail = ks_strbuf_take(&sb);
    free(t);
    free(p);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The query of a NIAH prompt: what the answer prefix names between "for " and " mentioned". */
static char *niah_query(const ks_sample *s) {
    const char *p = strstr(s->answer_prefix, " for ");
    const char *e = strstr(s->answer_prefix, " mentioned");
    ck_assert(p && e && e > p);
    return strndup(p + 5, (size_t)(e - p - 5));
}

START_TEST(test_niah_template_and_needles) {
    for (int i = 0; i < ks_ruler_task_count(); i++) {
        const ks_ruler_task *t = ks_ruler_task_at(i);
        if (t->gen != KS_RULER_NIAH) continue;
        ks_sample s = make(gen_ruler, t->name, 4096, 1);
        int singular = t->num_q * t->num_v == 1;
        char type_v[16];
        snprintf(type_v, sizeof type_v, "%s", t->type_v);
        if (singular) type_v[strlen(type_v) - 1] = 0;
        char *query = niah_query(&s), *head, *tail, *full = full_text(&s);
        spec_around(NIAH_T, NIAH_P, type_v, query, singular, &head, &tail);
        ck_assert_msg(!strncmp(full, head, strlen(head)), "%s: prompt does not start with RULER's text", t->name);
        ck_assert_msg(ends_with(full, tail), "%s: prompt does not end with RULER's text", t->name);
        char *prefix = spec_part(NIAH_P, type_v, query, singular);
        ck_assert_str_eq(s.answer_prefix, prefix);
        ck_assert_int_eq(s.n_answers, t->num_q * t->num_v);
        /* Each answer sits in a needle after its key: the i-th queried key owns answers [i*v, (i+1)*v). */
        char *keys = strdup(query), *save = NULL;
        int k = 0;
        for (char *key = strtok_r(keys, ",", &save); key; key = strtok_r(NULL, ",", &save), k++) {
            while (*key == ' ') key++;
            if (!strncmp(key, "and ", 4)) key += 4;
            for (int v = 0; v < t->num_v; v++) {
                char needle[256];
                snprintf(needle, sizeof needle, "One of the special magic %s for %s is: %s.", t->type_v, key,
                         s.answers[k * t->num_v + v]);
                ck_assert_msg(strstr(s.prompt, needle), "%s: needle '%s' missing", t->name, needle);
            }
        }
        ck_assert_int_eq(k, t->num_q);
        free(keys), free(prefix), free(query), free(head), free(tail), free(full);
        ks_sample_free(&s);
    }
}
END_TEST

/* The last occurrence of needle in s. */
static const char *last_of(const char *s, const char *needle) {
    const char *hit = NULL;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) hit = p;
    return hit;
}

START_TEST(test_vt_template_and_chain) {
    ks_sample s = make(gen_ruler, "vt", 8192, 0);
    ck_assert_int_eq(s.n_answers, 5);
    char value[16];
    ck_assert_int_eq(sscanf(strstr(s.answer_prefix, "the value ") + 10, "%15[0-9]", value), 1);
    char *head, *tail, *full = full_text(&s);
    spec_around(VT_T, VT_P_LOOM, "", value, 0, &head, &tail);
    /* RULER (2025) fixed LOOM's "assgined"; everything else is RULER's text. */
    ks_strbuf fixed = {0};
    ks_strbuf_appendz(&fixed, tail);
    ks_strbuf_replace_all(&fixed, "assgined", "assigned");
    ck_assert(ends_with(full, fixed.s));
    const char *real = last_of(full, head); /* after the in-context example */
    ck_assert_ptr_nonnull(real);
    ck_assert(real > full); /* the example comes first */
    ck_assert(!strncmp(real - 2, "\n\n", 2));
    char stmt[64];
    snprintf(stmt, sizeof stmt, "VAR %s = %s\n", s.answers[0], value);
    ck_assert_msg(strstr(real, stmt), "missing '%s'", stmt);
    for (int i = 1; i < 5; i++) {
        snprintf(stmt, sizeof stmt, "VAR %s = VAR %s \n", s.answers[i], s.answers[i - 1]);
        const char *at = strstr(real, stmt);
        ck_assert_msg(at, "missing '%s'", stmt);
    }
    ks_strbuf_free(&fixed);
    free(head), free(tail), free(full);
    ks_sample_free(&s);
}
END_TEST

/* Occurrences of " <n>. word" entries for `word` in the numbered list text. */
static int list_count(const char *list, const char *word) {
    int n = 0;
    size_t wl = strlen(word);
    for (const char *p = strstr(list, ". "); p; p = strstr(p + 1, ". "))
        if (!strncmp(p + 2, word, wl) && (p[2 + wl] == ' ' || p[2 + wl] == '\n' || !p[2 + wl])) n++;
    return n;
}

START_TEST(test_cwe_template_and_counts) {
    ks_sample s = make(gen_ruler, "cwe", 4096, 0);
    char *head, *tail, *full = full_text(&s);
    spec_around(CWE_T, CWE_P, "", "", 0, &head, &tail);
    ck_assert_str_eq(s.answer_prefix, CWE_P);
    ck_assert(ends_with(full, tail));
    ck_assert(!strncmp(full, head, strlen(head))); /* the worked example opens with the template */
    const char *real = last_of(full, head);
    ck_assert(real > full);
    char *list = strndup(real + strlen(head), strlen(real) - strlen(head) - strlen(tail));
    ck_assert_int_eq(s.n_answers, 10);
    for (int i = 0; i < 10; i++) ck_assert_int_eq(list_count(list, s.answers[i]), 30);
    /* The example's answer follows its prefix after one space (RULER; LOOM glues it). */
    char ex_answer[128];
    snprintf(ex_answer, sizeof ex_answer, "%s 1. ", CWE_P);
    ck_assert(strstr(full, ex_answer) < real);
    free(list), free(head), free(tail), free(full);
    ks_sample_free(&s);
}
END_TEST

START_TEST(test_fwe_template_and_ranks) {
    ks_sample s = make(gen_ruler, "fwe", 8192, 0);
    char *head, *tail, *full = full_text(&s);
    spec_around(FWE_T, FWE_P, "", "", 0, &head, &tail);
    ck_assert_str_eq(s.answer_prefix, FWE_P);
    ck_assert(!strncmp(full, head, strlen(head)));
    ck_assert(ends_with(full, tail));
    ck_assert_int_eq(s.n_answers, 3);
    /* The answers are the 2nd-4th most frequent words ("..." is the 1st). */
    char *ctx = strndup(full + strlen(head), strlen(full) - strlen(head) - strlen(tail));
    int dots = 0, c[3] = {0}, other_max = 0;
    char *save = NULL;
    struct { char w[8]; int n; } seen[512];
    int n_seen = 0;
    for (char *w = strtok_r(ctx, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (!strcmp(w, "...")) { dots++; continue; }
        int a = -1;
        for (int i = 0; i < 3; i++)
            if (!strcmp(w, s.answers[i])) a = i;
        if (a >= 0) { c[a]++; continue; }
        int k = 0;
        while (k < n_seen && strcmp(seen[k].w, w)) k++;
        if (k == n_seen && n_seen < 512) snprintf(seen[n_seen++].w, 8, "%s", w), seen[k].n = 0;
        if (k < 512 && ++seen[k].n > other_max) other_max = seen[k].n;
    }
    ck_assert(dots > c[0] && c[0] > c[1] && c[1] > c[2] && c[2] > other_max);
    free(ctx), free(head), free(tail), free(full);
    ks_sample_free(&s);
}
END_TEST

START_TEST(test_qa_template_and_answer) {
    const char *tasks[] = {"qa_1", "qa_2"};
    for (int t = 0; t < 2; t++) {
        ks_sample s = make(gen_ruler, tasks[t], 4096, 1);
        const char *q = strstr(s.prompt, "\n\nQuestion: ");
        ck_assert_ptr_nonnull(q);
        char *query = strdup(q + 12), *head, *tail, *full = full_text(&s);
        spec_around(QA_T, QA_P, "", query, 0, &head, &tail);
        ck_assert_str_eq(s.answer_prefix, QA_P);
        ck_assert(!strncmp(full, head, strlen(head)));
        ck_assert(ends_with(full, tail));
        ck_assert(strstr(s.prompt, "Document 1:\n"));
        int found = 0;
        for (int i = 0; i < s.n_answers; i++) found |= strstr(s.prompt + strlen(head), s.answers[i]) != NULL;
        ck_assert_msg(found, "%s: no answer in the documents", tasks[t]);
        ck_assert_str_eq(s.metric, "string_match_part");
        free(query), free(head), free(tail), free(full);
        ks_sample_free(&s);
    }
}
END_TEST

START_TEST(test_determinism) {
    const char *tasks[] = {"niah_single_2", "niah_multikey_3", "vt", "cwe", "fwe", "qa_2"};
    for (int t = 0; t < 6; t++) {
        ks_sample a = make(gen_ruler, tasks[t], 4096, 2), b = make(gen_ruler, tasks[t], 4096, 2);
        ks_sample c = make(gen_ruler, tasks[t], 4096, 1);
        ck_assert_str_eq(a.prompt, b.prompt);
        ck_assert_str_eq(a.answers[0], b.answers[0]);
        ck_assert_uint_eq(a.seed, b.seed);
        ck_assert_msg(strcmp(a.prompt, c.prompt), "%s: index 1 and 2 gave the same prompt", tasks[t]);
        ck_assert(a.seed != c.seed);
        ks_sample_free(&a), ks_sample_free(&b), ks_sample_free(&c);
    }
    /* The same sample from a separately opened generator (another rank, a resumed run). */
    ks_ruler *other;
    ck_assert_int_eq(ks_ruler_open(&other, &cfg_ruler, tok), KS_OK);
    ks_sample a = make(gen_ruler, "niah_multivalue", 8192, 4), b = make(other, "niah_multivalue", 8192, 4);
    ck_assert_str_eq(a.prompt, b.prompt);
    ks_sample_free(&a), ks_sample_free(&b);
    ks_ruler_close(other);
}
END_TEST

START_TEST(test_loom_variant) {
    /* The answer prefix is part of the prompt. */
    ks_sample n = make(gen_loom, "niah_single_1", 4096, 0);
    ck_assert_str_eq(n.answer_prefix, "");
    ck_assert(ends_with(n.prompt, " mentioned in the provided text is"));
    check_size(&n, 1);
    ks_sample_free(&n);
    /* VT: the typo, " as" before the example's answer, " " + example + 4 newlines, the example without "above.". */
    ks_sample v = make(gen_loom, "vt", 4096, 0);
    ck_assert(strstr(v.prompt, "variables are assgined the value"));
    ck_assert(v.prompt[0] == ' ');
    const char *ans = strstr(v.prompt, "they are:  "); /* " as" + names, "asABC" then re-randomised */
    ck_assert(ans && ans[11] >= 'A' && ans[11] <= 'Z');
    ck_assert(strstr(v.prompt, "\n\n\n\nMemorize and track"));
    ck_assert(strstr(v.prompt, "in the text Answer: According"));
    ck_assert_int_eq(v.max_new_tokens, 80);
    check_size(&v, 1);
    ks_sample_free(&v);
    /* FWE sizes against L itself. */
    ks_sample f = make(gen_loom, "fwe", 8192, 0);
    check_size(&f, 1);
    ck_assert_int_gt(f.prompt_tokens, 8192 - 50);
    ks_sample_free(&f);
    /* CWE: the example's answer is glued to its prefix. */
    ks_sample c = make(gen_loom, "cwe", 4096, 0);
    ck_assert(strstr(c.prompt, "in the list are:1. "));
    ks_sample_free(&c);
}
END_TEST

START_TEST(test_errors) {
    ks_sample s;
    ck_assert_int_eq(ks_ruler_generate(gen_ruler, "niah_single_9", 4096, 0, &s), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "niah_single_9"));
    /* The VT example alone takes 500 tokens: 512 leaves no room. */
    ck_assert_int_eq(ks_ruler_generate(gen_ruler, "vt", 512, 0, &s), KS_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "vt"));
    /* SQuAD mini has 4 answerable questions. */
    ck_assert_int_eq(ks_ruler_generate(gen_ruler, "qa_1", 4096, 4, &s), KS_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "num_samples"));

    /* qa without its file names the key to set; a missing essay folder names the folder. */
    ks_bench_config c = {0};
    const char *y = "benchmark_name: RULER\ntask_names: [qa_1]\nlength: [4096]\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "qa.yaml"), KS_OK);
    ks_ruler *r = NULL;
    ck_assert_int_eq(ks_ruler_open(&r, &c, tok), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "squad_path"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "dev-v2.0.json"));
    y = "benchmark_name: RULER\ntask_names: [niah_single_2]\nlength: [4096]\nessays_dir: /nonexistent/essays\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "essay.yaml"), KS_OK);
    ck_assert_int_eq(ks_ruler_open(&r, &c, tok), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "/nonexistent/essays"));
    y = "benchmark_name: RULER\ntask_names: [qa_2]\nlength: [4096]\nhotpotqa_path: /nonexistent/h.json\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "h.yaml"), KS_OK);
    ck_assert_int_eq(ks_ruler_open(&r, &c, tok), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "/nonexistent/h.json"));
    ks_bench_config_free(&c);
}
END_TEST

START_TEST(test_use_template) {
    /* no_template_tasks matches substrings of "{task}_{length}"; a NULL template means none at all. */
    ks_bench_config c = {0};
    const char *y = "benchmark_name: RULER\ntask_names: [fwe, vt]\nlength: [4096]\ntemplate: llama3\n"
                    "no_template_tasks: [fwe]\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "t.yaml"), KS_OK);
    ck_assert_int_eq(ks_bench_config_use_template(&c, "fwe", 4096), 0);
    ck_assert_int_eq(ks_bench_config_use_template(&c, "vt", 4096), 1);
    ck_assert_int_eq(ks_bench_config_use_template(&cfg_ruler, "vt", 4096), 0);
    ks_bench_config_free(&c);
}
END_TEST

START_TEST(test_rng) {
    ks_rng r;
    ks_rng_init(&r, 1);
    int v[8];
    for (int rep = 0; rep < 200; rep++) {
        ks_rng_sample_sorted(&r, 10, 8, v);
        for (int i = 0; i < 8; i++) {
            ck_assert(v[i] >= 0 && v[i] < 10);
            if (i) ck_assert_int_lt(v[i - 1], v[i]);
        }
        int64_t x = ks_rng_range(&r, 10000, 99998);
        ck_assert(x >= 10000 && x <= 99998);
    }
    /* Every value of a small range shows up: no off-by-one at the ends. */
    int seen[3] = {0};
    for (int i = 0; i < 300; i++) seen[ks_rng_range(&r, 0, 2)]++;
    ck_assert(seen[0] && seen[1] && seen[2]);
    ck_assert(ks_rng_sample_seed(42, "vt", 4096, 0) != ks_rng_sample_seed(42, "vt", 4096, 1));
    ck_assert(ks_rng_sample_seed(42, "vt", 4096, 0) != ks_rng_sample_seed(43, "vt", 4096, 0));
    ck_assert(ks_rng_sample_seed(42, "vt", 4096, 0) != ks_rng_sample_seed(42, "cwe", 4096, 0));
    ck_assert(ks_rng_sample_seed(42, "vt", 4096, 0) == ks_rng_sample_seed(42, "vt", 4096, 0));
}
END_TEST

START_TEST(test_sentences) {
    ck_assert_int_eq(ks_sentence_ends("again.", "The"), 1);
    ck_assert_int_eq(ks_sentence_ends("really?", "\"Yes"), 1);
    ck_assert_int_eq(ks_sentence_ends("done!\"", "Then"), 1);
    ck_assert_int_eq(ks_sentence_ends("1999.", "2000"), 1);
    ck_assert_int_eq(ks_sentence_ends("end.", NULL), 1);
    ck_assert_int_eq(ks_sentence_ends("Mr.", "Smith"), 0);
    ck_assert_int_eq(ks_sentence_ends("e.g.", "Lisp"), 0);
    ck_assert_int_eq(ks_sentence_ends("J.", "Doe"), 0);
    ck_assert_int_eq(ks_sentence_ends("U.S.", "Army"), 0);
    ck_assert_int_eq(ks_sentence_ends("said.", "then"), 0);
    ck_assert_int_eq(ks_sentence_ends("word,", "The"), 0);
    ck_assert_int_eq(ks_sentence_ends("wait...", "Then"), 1);
}
END_TEST

START_TEST(test_prepare_command) {
    /* `kvscope prepare` on the repository's quickstart config: one JSON line per sample with every field. */
    char cfg[4096], out[4096], model[4096];
    snprintf(cfg, sizeof cfg, "%s/../../configs/benchmarks/quickstart.yaml", KS_FIXTURES);
    snprintf(out, sizeof out, "%s/q.jsonl", ks_test_tmpdir());
    snprintf(model, sizeof model, "%s", ks_test_fixture("tokenizer/llama3_1"));
    unsetenv("KS_DATA_DIR"); /* the config's data_dir default: the data the program finds on its own */
    char *argv[] = {"prepare", "--cfg_path", cfg, "--model_path", model, "--output", out, "--limit", "2"};
    ck_assert_int_eq(ks_cmd_prepare(9, argv), KS_OK);
    FILE *f = fopen(out, "r");
    ck_assert_ptr_nonnull(f);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *j;
        ck_assert_int_eq(ks_json_parse(line, strlen(line), out, &j), KS_OK);
        const char *fields[] = {"task", "length", "index", "seed", "prompt", "answer_prefix", "prompt_tokens", "answers",
                                "max_new_tokens", "metric", "use_template"};
        for (int k = 0; k < 11; k++) ck_assert_msg(cJSON_GetObjectItem(j, fields[k]), "no '%s'", fields[k]);
        ck_assert_int_le(cJSON_GetObjectItem(j, "prompt_tokens")->valueint, cJSON_GetObjectItem(j, "length")->valueint);
        ck_assert_int_eq(cJSON_IsTrue(cJSON_GetObjectItem(j, "use_template")),
                         strcmp(cJSON_GetObjectItem(j, "task")->valuestring, "fwe") != 0);
        cJSON_Delete(j);
        n++;
    }
    free(line);
    fclose(f);
    ck_assert_int_eq(n, 3 * 2 * 2); /* 3 tasks x 2 lengths x --limit 2 */
    remove(out);
    *strrchr(out, '/') = 0;
    rmdir(out);
    char *bad[] = {"prepare", "--cfg_path", cfg, "--model_path", model, "--output", out, "--limit", "-1"};
    ck_assert_int_eq(ks_cmd_prepare(9, bad), KS_ERR_ARG);
}
END_TEST

int main(void) {
    Suite *s = suite_create("ruler");
    TCase *tc = tcase_create("ruler");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_sizing_all_tasks_short);
    tcase_add_test(tc, test_sizing_long);
    tcase_add_test(tc, test_niah_template_and_needles);
    tcase_add_test(tc, test_vt_template_and_chain);
    tcase_add_test(tc, test_cwe_template_and_counts);
    tcase_add_test(tc, test_fwe_template_and_ranks);
    tcase_add_test(tc, test_qa_template_and_answer);
    tcase_add_test(tc, test_determinism);
    tcase_add_test(tc, test_loom_variant);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_use_template);
    tcase_add_test(tc, test_rng);
    tcase_add_test(tc, test_sentences);
    tcase_add_test(tc, test_prepare_command);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
