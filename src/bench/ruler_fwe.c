/* ruler_fwe.c — frequent words extraction (RULER freq_words_extraction.py).
 *
 * A vocabulary of L/50 random 6-letter "coded words" is ranked; for a haystack of W words (the unit of size)
 * the word of rank k appears floor(W * k^-2 / zeta(2)) times (a Zipf law, alpha = 2), rank 1 being the noise
 * word "...". The shuffled words form the context; the answer is ranks 2-4. RULER sizes against L - 50; LOOM
 * against L (ruler.c picks the budget). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/ruler_impl.h"

static const char TEMPLATE[] = "Read the following coded text and track the frequency of each coded word. Find the "
                               "three most frequently appeared coded words. {context}\nQuestion: Do not provide any "
                               "explanation. Please ignore the dots '....'. What are the three most frequently "
                               "appeared words in the above coded text?";
static const char PREFIX[] = " Answer: According to the coded text above, the three most frequently appeared words are:";

#define WORD_LEN 6
#define ALPHA 2.0

typedef struct fwe_state {
    int n_vocab;
    char (*vocab)[WORD_LEN + 1]; /* (n_vocab) owned, rank order; vocab[0] = "..." */
    int32_t *cost;               /* (n_vocab) owned: tokens of " " + word */
    double fixed;                /* tokens of the template with an empty context */
} fwe_state;

/* Occurrences of the word of rank k (0-based) in a haystack of w words. */
static long count_of(long w, int k) {
    const double zeta2 = M_PI * M_PI / 6.0;
    return (long)((double)w * pow((double)(k + 1), -ALPHA) / zeta2);
}

static double fwe_estimate(const ruler_job *j, long w) {
    const fwe_state *s = j->state;
    double sum = s->fixed;
    for (int k = 0; k < s->n_vocab; k++) {
        long c = count_of(w, k);
        if (!c) break; /* counts fall with rank */
        sum += (double)c * s->cost[k];
    }
    return sum;
}

static ks_status fwe_build(ruler_job *j, long w) {
    fwe_state *s = j->state;
    long total = 0;
    for (int k = 0; k < s->n_vocab; k++) total += count_of(w, k);
    int *list = ks_malloc((size_t)(total ? total : 1) * sizeof *list, "an fwe haystack");
    if (!list) return KS_ERR_NOMEM;
    long m = 0;
    for (int k = 0; k < s->n_vocab; k++)
        for (long c = count_of(w, k); c > 0; c--) list[m++] = k;
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_SHUFFLE));
    ks_rng_shuffle(&g, list, (int)m);
    ks_strbuf ctx = {0};
    for (long i = 0; i < m; i++) {
        if (i) ks_strbuf_append(&ctx, " ", 1);
        ks_strbuf_appendz(&ctx, s->vocab[list[i]]);
    }
    free(list);
    ks_status st = ks_strbuf_status(&ctx, "an fwe haystack");
    if (st == KS_OK) {
        const char *keys[] = {"context"};
        const char *vals[] = {ctx.s ? ctx.s : ""};
        ruler_put_template(j, TEMPLATE, PREFIX, keys, vals, 1);
    }
    ks_strbuf_free(&ctx);
    return st;
}

static int by_word(const void *a, const void *b) { return strcmp(a, b); }

static ks_status fwe_prepare(ruler_job *j) {
    fwe_state *s = ks_calloc(1, sizeof *s, "an fwe sample");
    if (!s) return KS_ERR_NOMEM;
    j->state = s;
    s->n_vocab = j->length / 50;
    if (s->n_vocab < 4) s->n_vocab = 4;
    s->vocab = ks_malloc((size_t)s->n_vocab * sizeof *s->vocab, "the fwe vocabulary");
    s->cost = ks_malloc((size_t)s->n_vocab * sizeof *s->cost, "fwe costs");
    if (!s->vocab || !s->cost) return KS_ERR_NOMEM;

    /* Distinct random words, sorted, then shuffled (RULER: set, sorted, Random(seed).shuffle). */
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_NEEDLES));
    int n = 0;
    while (n < s->n_vocab) {
        for (int c = 0; c < WORD_LEN; c++) s->vocab[n][c] = (char)('a' + ks_rng_below(&g, 26));
        s->vocab[n][WORD_LEN] = 0;
        int dup = 0;
        for (int k = 0; k < n && !dup; k++) dup = !memcmp(s->vocab[k], s->vocab[n], WORD_LEN);
        n += !dup;
    }
    qsort(s->vocab, (size_t)n, sizeof *s->vocab, by_word);
    for (int i = n - 1; i > 0; i--) {
        int k = (int)ks_rng_below(&g, (uint64_t)i + 1);
        char t[WORD_LEN + 1];
        memcpy(t, s->vocab[i], sizeof t);
        memcpy(s->vocab[i], s->vocab[k], sizeof t);
        memcpy(s->vocab[k], t, sizeof t);
    }
    snprintf(s->vocab[0], sizeof s->vocab[0], "...");
    const char *answers[3] = {s->vocab[1], s->vocab[2], s->vocab[3]};
    KS_TRY(ruler_set_answers(j, answers, 3));

    ks_ruler *r = j->r;
    for (int k = 0; k < n; k++) {
        int c = 0;
        KS_TRY(ruler_tokens2(r, " ", s->vocab[k], &c));
        s->cost[k] = c;
    }
    int c = 0;
    const char *keys[] = {"context"};
    const char *vals[] = {""};
    ruler_put_template(j, TEMPLATE, PREFIX, keys, vals, 1);
    KS_TRY(ks_strbuf_status(&j->text, "an fwe prompt"));
    KS_TRY(ruler_tokens(r, j->text.s, j->text.len, &c));
    ks_strbuf_reset(&j->text);
    s->fixed = c;
    j->n_min = 1;
    j->n_max = 2L * j->length + s->n_vocab; /* every word costs a token; floors lose at most one per rank */
    return KS_OK;
}

static void fwe_release(ruler_job *j) {
    fwe_state *s = j->state;
    if (!s) return;
    free(s->vocab);
    free(s->cost);
    free(s);
    j->state = NULL;
}

const ruler_gen_ops ks_ruler_fwe_ops = {fwe_prepare, fwe_estimate, fwe_build, fwe_release};
