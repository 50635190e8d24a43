/* ruler_cwe.c — common words extraction (RULER common_words_extraction.py).
 *
 * n distinct words (the unit of haystack size) are drawn from the wonderwords pool; the first 10 are "common"
 * and repeated freq_cw times, the rest freq_ucw times; the shuffled list is numbered "1. w 2. w ...". One
 * worked example (40 words) comes first. The answer is the 10 common words in draw order.
 * n is capped at the pool size (about 8,200 words): RULER falls back to a larger English list there, which
 * kvscope's word lists do not include, so a very long cwe prompt may land short of its target.
 * RULER puts a space between the example's answer prefix and its numbered answer; LOOM does not. */
#include <stdlib.h>
#include <string.h>

#include "bench/ruler_impl.h"

static const char TEMPLATE[] = "Below is a numbered list of words. In these words, some appear more often than "
                               "others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 "
                               "most common words in the above list?";
static const char PREFIX[] = " Answer: The top 10 words that appear most often in the list are:";

#define NUM_CW 10
#define INDEX_DIGITS 8

typedef struct cwe_state {
    int *perm;               /* (n_pool) owned: the sample's draw order over the pool */
    int64_t *perm_cost;      /* (n_pool + 1) owned: prefix sums of word costs in draw order */
    int freq_cw, freq_ucw;   /* repeats of common / uncommon words */
    char *example;           /* owned: the worked example and its answer, ending in "\n" */
    double fixed;            /* tokens of the example plus the empty template */
    double index_cost[INDEX_DIGITS + 1]; /* tokens of " 1.", " 10.", ... by digit count */
} cwe_state;

/* Numbered list of the words v[0..n) (indexes into the pool) after a shuffle from stream `tag`. */
static void render_list(const ruler_job *j, const int *words, int n_common, int n, int cr, int ur, uint64_t tag,
                        ks_strbuf *out) {
    char **pool = j->r->words.pool;
    int m = n_common * cr + (n - n_common) * ur;
    int *list = malloc((size_t)m * sizeof *list);
    if (!list) {
        out->oom = 1;
        return;
    }
    int k = 0;
    for (int r = 0; r < cr; r++)
        for (int i = 0; i < n_common; i++) list[k++] = words[i];
    for (int r = 0; r < ur; r++)
        for (int i = n_common; i < n; i++) list[k++] = words[i];
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, tag));
    ks_rng_shuffle(&g, list, m);
    for (int i = 0; i < m; i++) ks_strbuf_appendf(out, i ? " %d. %s" : "%d. %s", i + 1, pool[list[i]]);
    free(list);
}

static void put_task(ruler_job *j, const char *context) {
    const char *keys[] = {"context"};
    const char *vals[] = {context};
    ruler_put_template(j, TEMPLATE, PREFIX, keys, vals, 1);
}

static ks_status cwe_build(ruler_job *j, long n) {
    cwe_state *s = j->state;
    ks_strbuf ctx = {0};
    render_list(j, s->perm, NUM_CW, (int)n, s->freq_cw, s->freq_ucw, RNG_SHUFFLE, &ctx);
    ks_status st = ks_strbuf_status(&ctx, "a cwe list");
    if (st == KS_OK) {
        ks_strbuf_appendz(&j->text, s->example);
        put_task(j, ctx.s);
    }
    ks_strbuf_free(&ctx);
    return st;
}

/* Sum of index_cost over list numbers 1..m. */
static double index_cost_sum(const cwe_state *s, long m) {
    double sum = 0;
    long lo = 1;
    for (int d = 1; d <= INDEX_DIGITS && lo <= m; d++, lo *= 10) {
        long hi = lo * 10 - 1 < m ? lo * 10 - 1 : m;
        sum += s->index_cost[d] * (double)(hi - lo + 1);
    }
    return sum;
}

static double cwe_estimate(const ruler_job *j, long n) {
    const cwe_state *s = j->state;
    long m = (long)NUM_CW * s->freq_cw + (n - NUM_CW) * s->freq_ucw;
    double words = (double)s->perm_cost[NUM_CW] * s->freq_cw +
                   (double)(s->perm_cost[n] - s->perm_cost[NUM_CW]) * s->freq_ucw;
    return s->fixed + words + index_cost_sum(s, m);
}

static ks_status cwe_prepare(ruler_job *j) {
    ks_ruler *r = j->r;
    int n_pool = r->words.n_pool;
    cwe_state *s = ks_calloc(1, sizeof *s, "a cwe sample");
    if (!s) return KS_ERR_NOMEM;
    j->state = s;
    s->perm = ks_malloc((size_t)n_pool * sizeof *s->perm, "a cwe draw");
    s->perm_cost = ks_malloc(((size_t)n_pool + 1) * sizeof *s->perm_cost, "cwe costs");
    if (!s->perm || !s->perm_cost) return KS_ERR_NOMEM;
    int small = j->length < 4096; /* RULER uses a lighter list below 4K */
    s->freq_cw = small ? 6 : 30;
    s->freq_ucw = small ? 1 : 3;

    /* The worked example: random.sample(pool, 40 or 20) with 10 common words. */
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_EXAMPLE));
    for (int i = 0; i < n_pool; i++) s->perm[i] = i;
    int ex_n = small ? 20 : 40;
    for (int i = 0; i < ex_n; i++) { /* partial Fisher-Yates: the first ex_n are a uniform sample */
        int k = i + (int)ks_rng_below(&g, (uint64_t)(n_pool - i));
        int t = s->perm[i];
        s->perm[i] = s->perm[k];
        s->perm[k] = t;
    }
    ks_strbuf ctx = {0};
    render_list(j, s->perm, NUM_CW, ex_n, small ? 3 : 10, small ? 1 : 3, RNG_ICL, &ctx);
    KS_TRY(ks_strbuf_status(&ctx, "the cwe example"));
    put_task(j, ctx.s);
    ks_strbuf_free(&ctx);
    ks_strbuf_appendz(&j->text, r->loom ? "" : " ");
    for (int i = 0; i < NUM_CW; i++) ks_strbuf_appendf(&j->text, i ? " %d. %s" : "%d. %s", i + 1, r->words.pool[s->perm[i]]);
    ks_strbuf_append(&j->text, "\n", 1);
    KS_TRY(ks_strbuf_status(&j->text, "the cwe example"));
    s->example = ks_strbuf_take(&j->text);
    if (!s->example) return KS_ERR_NOMEM;

    /* The sample's words: a fresh uniform order over the whole pool; n words are its first n. */
    ks_rng w;
    ks_rng_init(&w, ks_rng_mix(j->seed, RNG_NEEDLES));
    for (int i = 0; i < n_pool; i++) s->perm[i] = i;
    ks_rng_shuffle(&w, s->perm, n_pool);
    s->perm_cost[0] = 0;
    for (int i = 0; i < n_pool; i++) s->perm_cost[i + 1] = s->perm_cost[i] + r->pool_cost[s->perm[i]];
    const char *answers[NUM_CW];
    for (int i = 0; i < NUM_CW; i++) answers[i] = r->words.pool[s->perm[i]];
    KS_TRY(ruler_set_answers(j, answers, NUM_CW));

    /* Costs for the estimate. */
    int c = 0;
    ks_strbuf_appendz(&j->text, s->example);
    put_task(j, "");
    KS_TRY(ks_strbuf_status(&j->text, "a cwe prompt"));
    KS_TRY(ruler_tokens(r, j->text.s, j->text.len, &c));
    ks_strbuf_reset(&j->text);
    s->fixed = c;
    long v = 5;
    for (int d = 1; d <= INDEX_DIGITS; d++, v *= 10) {
        char num[24];
        snprintf(num, sizeof num, " %ld.", v);
        KS_TRY(ruler_tokens(r, num, strlen(num), &c));
        s->index_cost[d] = c;
    }
    j->n_min = NUM_CW + 1;
    j->n_max = n_pool;
    return KS_OK;
}

static void cwe_release(ruler_job *j) {
    cwe_state *s = j->state;
    if (!s) return;
    free(s->perm);
    free(s->perm_cost);
    free(s->example);
    free(s);
    j->state = NULL;
}

const ruler_gen_ops ks_ruler_cwe_ops = {cwe_prepare, cwe_estimate, cwe_build, cwe_release};
