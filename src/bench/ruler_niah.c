/* ruler_niah.c — the eight needle-in-a-haystack tasks (RULER niah.py).
 *
 * Units of haystack size: noise lines (noise), distractor needle lines (needle) or essay words (essay).
 * Keys, values, needles and the query are drawn once in prepare; build lays out the haystack at size n and
 * inserts the needles: before random lines (noise/needle; lines joined by "\n") or between sentences at
 * random depths out of RULER's 40 (essay; segments joined by " "). */
#include <stdlib.h>
#include <string.h>

#include "bench/ruler_impl.h"

static const char TEMPLATE[] =
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will "
    "quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for "
    "{query} mentioned in the provided text?";
static const char ANSWER_PREFIX[] = " The special magic {type_needle_v} for {query} mentioned in the provided text are";
static const char NEEDLE[] = "One of the special magic %s for %s is: %s.";
#define NOISE "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

/* DEPTHS = round(linspace(0, 100, 40)) */
static const int DEPTHS[40] = {0,  3,  5,  8,  10, 13, 15, 18, 21, 23, 26, 28, 31, 33, 36, 38, 41, 44, 46, 49,
                               51, 54, 56, 59, 62, 64, 67, 69, 72, 74, 77, 79, 82, 85, 87, 90, 92, 95, 97, 100};

#define ITEM_MAX 48      /* a key or value: "highfalutin-..." words, 7 digits, or a 36-char uuid */
#define NEEDLES_MAX 16   /* num_k * num_v */

typedef struct niah_state {
    enum { HAY_NOISE, HAY_NEEDLE, HAY_ESSAY } hay;
    int n_keys, n_needles;
    char keys[NEEDLES_MAX][ITEM_MAX];
    char values[NEEDLES_MAX][ITEM_MAX];          /* key k's values at [k * num_v + i] */
    char needles[NEEDLES_MAX][3 * ITEM_MAX + 64]; /* in RULER's shuffled order */
    char *tmpl, *prefix;                         /* owned: the (possibly singular) template and answer prefix */
    char query[4 * ITEM_MAX + 16];
    const char *type_v;                          /* as written in the template: singular when q*v == 1 */
    double fixed;                                /* tokens of the prompt with an empty context */
    double unit;                                 /* tokens per noise/distractor line, or 0 (essay) */
    double needle_cost;                          /* tokens the needles add */
} niah_state;

/* One random key or value of the given type, into out (ITEM_MAX bytes). */
static void random_item(ks_ruler *r, ks_rng *g, const char *type, char *out) {
    if (!strcmp(type, "numbers")) {
        snprintf(out, ITEM_MAX, "%d", (int)ks_rng_range(g, 1000000, 9999999));
    } else if (!strcmp(type, "words")) {
        /* random.choice over sorted(set(adj-noun)): a uniform adjective and a uniform noun give the same
         * distribution without materialising the 6.2M pairs. */
        const char *a = r->words.adjs.words[ks_rng_below(g, (uint64_t)r->words.adjs.n)];
        const char *n = r->words.nouns.words[ks_rng_below(g, (uint64_t)r->words.nouns.n)];
        snprintf(out, ITEM_MAX, "%s-%s", a, n);
    } else { /* uuids: uuid.UUID(int=getrandbits(128), version=4) */
        uint64_t hi = ks_rng_u64(g), lo = ks_rng_u64(g);
        hi = (hi & ~0xF000ULL) | 0x4000ULL;                    /* version nibble */
        lo = (lo & ~(0xC000ULL << 48)) | (0x8000ULL << 48);   /* variant 10xx */
        snprintf(out, ITEM_MAX, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32), (unsigned)(hi >> 16) & 0xFFFF,
                 (unsigned)hi & 0xFFFF, (unsigned)(lo >> 48), (unsigned long long)(lo & 0xFFFFFFFFFFFFULL));
    }
}

static void format_needle(const ks_ruler_task *t, const char *key, const char *value, char *out, size_t cap) {
    char line[3 * ITEM_MAX + 64]; /* out may share a struct with key and value */
    snprintf(line, sizeof line, NEEDLE, t->type_v, key, value);
    snprintf(out, cap, "%s", line);
}

/* The prompt text with `context` in place (used for measuring and building). */
static void put_prompt(ruler_job *j, const char *context) {
    niah_state *s = j->state;
    const char *keys[] = {"type_needle_v", "context", "query"};
    const char *vals[] = {s->type_v, context, s->query};
    ruler_put_template(j, s->tmpl, s->prefix, keys, vals, 3);
}

static ks_status niah_prepare(ruler_job *j) {
    const ks_ruler_task *t = j->t;
    niah_state *s = ks_calloc(1, sizeof *s, "a niah sample");
    if (!s) return KS_ERR_NOMEM;
    j->state = s;
    s->hay = !strcmp(t->haystack, "essay") ? HAY_ESSAY : !strcmp(t->haystack, "needle") ? HAY_NEEDLE : HAY_NOISE;
    s->n_keys = t->num_k > t->num_q ? t->num_k : t->num_q;
    s->n_needles = s->n_keys * t->num_v;
    KS_ASSERT(s->n_needles <= NEEDLES_MAX);

    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_NEEDLES));
    for (int k = 0; k < s->n_keys; k++) {
        random_item(j->r, &g, t->type_k, s->keys[k]);
        for (int v = 0; v < t->num_v; v++) {
            int i = k * t->num_v + v;
            random_item(j->r, &g, t->type_v, s->values[i]);
            format_needle(t, s->keys[k], s->values[i], s->needles[i], sizeof s->needles[i]);
        }
    }
    for (int i = s->n_needles - 1; i > 0; i--) { /* random.Random(seed).shuffle(needles) */
        int k = (int)ks_rng_below(&g, (uint64_t)i + 1);
        char tmp[sizeof s->needles[0]];
        memcpy(tmp, s->needles[i], sizeof tmp);
        memcpy(s->needles[i], s->needles[k], sizeof tmp);
        memcpy(s->needles[k], tmp, sizeof tmp);
    }

    /* Query: random.sample(range(num_k), num_q), in draw order; answers are all values of each queried key. */
    ks_rng q;
    ks_rng_init(&q, ks_rng_mix(j->seed, RNG_QUERY));
    int order[NEEDLES_MAX];
    for (int k = 0; k < s->n_keys; k++) order[k] = k;
    for (int i = 0; i < t->num_q; i++) {
        int k = i + (int)ks_rng_below(&q, (uint64_t)(s->n_keys - i));
        int tmp = order[i];
        order[i] = order[k];
        order[k] = tmp;
    }
    const char *answers[NEEDLES_MAX];
    int n_ans = 0;
    size_t qlen = 0;
    for (int i = 0; i < t->num_q; i++) {
        const char *sep = i == 0 ? "" : i == t->num_q - 1 ? ", and " : ", ";
        qlen += (size_t)snprintf(s->query + qlen, sizeof s->query - qlen, "%s%s", sep, s->keys[order[i]]);
        for (int v = 0; v < t->num_v; v++) answers[n_ans++] = s->values[order[i] * t->num_v + v];
    }
    KS_TRY(ruler_set_answers(j, answers, n_ans));

    /* The singular rewrite RULER applies when one value is asked for. */
    ks_strbuf tb = {0}, pb = {0};
    ks_strbuf_appendz(&tb, TEMPLATE);
    ks_strbuf_appendz(&pb, ANSWER_PREFIX);
    s->type_v = t->type_v;
    if (t->num_q * t->num_v == 1) {
        ks_strbuf *parts[2] = {&tb, &pb};
        for (int i = 0; i < 2; i++) {
            ks_strbuf_replace_all(parts[i], "Some", "A");
            ks_strbuf_replace_all(parts[i], "are all", "is");
            ks_strbuf_replace_all(parts[i], "are", "is");
            ks_strbuf_replace_all(parts[i], "answers", "answer");
        }
        s->type_v = !strcmp(t->type_v, "numbers") ? "number" : !strcmp(t->type_v, "uuids") ? "uuid" : "word";
    }
    ks_status st = ks_strbuf_status(&tb, "a niah template");
    if (st == KS_OK) st = ks_strbuf_status(&pb, "a niah template");
    s->tmpl = ks_strbuf_take(&tb);
    s->prefix = ks_strbuf_take(&pb);
    ks_strbuf_free(&tb);
    ks_strbuf_free(&pb);
    KS_TRY(st);
    if (!s->tmpl || !s->prefix) return KS_ERR_NOMEM;

    /* Costs for the estimate. */
    ks_ruler *r = j->r;
    put_prompt(j, "");
    KS_TRY(ks_strbuf_status(&j->text, "a niah prompt"));
    int c = 0, c0 = 0;
    KS_TRY(ruler_tokens(r, j->text.s, j->text.len, &c));
    s->fixed = c;
    ks_strbuf_reset(&j->text);
    const char *sep = s->hay == HAY_ESSAY ? " " : "\n";
    const char *base = s->hay == HAY_ESSAY ? "word" : NOISE;
    KS_TRY(ruler_tokens(r, base, strlen(base), &c0));
    for (int i = 0; i < s->n_needles; i++) {
        ks_strbuf_reset(&r->scratch);
        ks_strbuf_appendf(&r->scratch, "%s%s%s", base, sep, s->needles[i]);
        KS_TRY(ks_strbuf_status(&r->scratch, "a niah needle"));
        KS_TRY(ruler_tokens(r, r->scratch.s, r->scratch.len, &c));
        s->needle_cost += c - c0;
    }
    if (s->hay == HAY_NOISE) {
        KS_TRY(ruler_tokens2(r, NOISE "\n", NOISE, &c));
        s->unit = c - c0;
    } else if (s->hay == HAY_NEEDLE) { /* the mean of a few distractor lines stands in for every line */
        ks_rng h;
        ks_rng_init(&h, ks_rng_mix(j->seed, RNG_EXAMPLE));
        double sum = 0;
        for (int i = 0; i < 16; i++) {
            char key[ITEM_MAX], val[ITEM_MAX], line[3 * ITEM_MAX + 64];
            random_item(r, &h, t->type_k, key);
            random_item(r, &h, t->type_v, val);
            format_needle(t, key, val, line, sizeof line);
            KS_TRY(ruler_tokens2(r, NOISE "\n", line, &c));
            sum += c - c0;
        }
        s->unit = sum / 16;
    }
    /* Sizes: lines or words. Every unit costs at least one token, so the budget bounds n. LOOM does not repeat
     * the essay: its haystack is capped at the essay's length. */
    j->n_min = s->hay == HAY_ESSAY ? 1 : s->n_needles;
    j->n_max = j->length;
    if (s->hay == HAY_ESSAY && r->loom && j->n_max > r->essay.n_words) j->n_max = r->essay.n_words;
    return KS_OK;
}

static double niah_estimate(const ruler_job *j, long n) {
    const niah_state *s = j->state;
    double hay = s->hay == HAY_ESSAY ? (double)ks_essay_cost(&j->r->essay, 0, n) : s->unit * (double)n;
    return s->fixed + hay + s->needle_cost;
}

/* noise / needle haystacks: n lines, needle i inserted before line idx[i] (descending indexes paired with the
 * shuffled needles, as RULER's list.insert loop does), joined by "\n". */
static void build_lines(ruler_job *j, long n, ks_strbuf *ctx) {
    niah_state *s = j->state;
    int idx[NEEDLES_MAX];
    ks_rng p, h;
    ks_rng_init(&p, ks_rng_mix(j->seed, RNG_POSITIONS));
    ks_rng_sample_sorted(&p, (int)n, s->n_needles, idx); /* ascending; needle i goes to idx[n_needles-1-i] */
    ks_rng_init(&h, ks_rng_mix(j->seed, RNG_HAYSTACK));
    int next = 0;
    for (long line = 0; line < n; line++) {
        while (next < s->n_needles && idx[next] == line) {
            if (ctx->len) ks_strbuf_append(ctx, "\n", 1);
            ks_strbuf_appendz(ctx, s->needles[s->n_needles - 1 - next]);
            next++;
        }
        if (ctx->len) ks_strbuf_append(ctx, "\n", 1);
        if (s->hay == HAY_NOISE) {
            ks_strbuf_append(ctx, NOISE, sizeof NOISE - 1);
        } else {
            char key[ITEM_MAX], val[ITEM_MAX], l[3 * ITEM_MAX + 64];
            random_item(j->r, &h, j->t->type_k, key);
            random_item(j->r, &h, j->t->type_v, val);
            format_needle(j->t, key, val, l, sizeof l);
            ks_strbuf_appendz(ctx, l);
        }
    }
}

/* Number of sentences in the first n words of the endless essay (the last word always closes one). */
static long count_sentences(const ks_essay *e, long n) {
    long ends = 0;
    for (long i = 0; i < n - 1; i++) ends += e->sent_end[i % e->n_words];
    return ends + 1;
}

/* essay haystack: words [0, n) split into sentences; needle i goes at sentence boundary pos[i] (sorted depths
 * of the n_sents sentences). RULER joins [segment_0, needle_0, segment_1, ..., segment_k] with single spaces,
 * empty segments included, so a needle at depth 0 leaves a leading space. */
static void build_essay(ruler_job *j, long n, ks_strbuf *ctx) {
    niah_state *s = j->state;
    const ks_essay *e = &j->r->essay;
    long n_sents = count_sentences(e, n);
    int d[NEEDLES_MAX];
    ks_rng p;
    ks_rng_init(&p, ks_rng_mix(j->seed, RNG_POSITIONS));
    ks_rng_sample_sorted(&p, 40, s->n_needles, d); /* random.sample(DEPTHS, k); positions are sorted anyway */
    long w = 0, sent = 0;
    for (int i = 0; i <= s->n_needles; i++) {
        long upto = i < s->n_needles ? (long)(n_sents * (DEPTHS[d[i]] / 100.0)) : n_sents;
        if (i > 0) ks_strbuf_append(ctx, " ", 1);
        for (int first = 1; sent < upto; first = 0, w++) {
            if (!first) ks_strbuf_append(ctx, " ", 1);
            ks_strbuf_appendz(ctx, ks_essay_word(e, w));
            if (w == n - 1 || e->sent_end[w % e->n_words]) sent++;
        }
        if (i < s->n_needles) {
            ks_strbuf_append(ctx, " ", 1);
            ks_strbuf_appendz(ctx, s->needles[i]);
        }
    }
}

static ks_status niah_build(ruler_job *j, long n) {
    niah_state *s = j->state;
    ks_strbuf ctx = {0};
    if (s->hay == HAY_ESSAY) build_essay(j, n, &ctx);
    else build_lines(j, n, &ctx);
    ks_status st = ks_strbuf_status(&ctx, "a niah haystack");
    if (st == KS_OK) put_prompt(j, ctx.s);
    ks_strbuf_free(&ctx);
    return st;
}

static void niah_release(ruler_job *j) {
    niah_state *s = j->state;
    if (!s) return;
    free(s->tmpl);
    free(s->prefix);
    free(s);
    j->state = NULL;
}

const ruler_gen_ops ks_ruler_niah_ops = {niah_prepare, niah_estimate, niah_build, niah_release};
