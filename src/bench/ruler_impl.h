/* ruler_impl.h — internals shared by the RULER generator files (ruler.c and ruler_<task>.c). Not public.
 *
 * A generator is four functions over a ruler_job:
 *   prepare   draws everything that does not depend on the haystack size (needles, keys, vocabulary, the
 *             question, the ICL example), measures the token cost of its units, and sets the size bounds;
 *   estimate  predicts the token count of the text at haystack size n from those costs (cheap, monotone);
 *   build     lays the text out at size n (re-seeding its own streams, so the same n gives the same text);
 *   release   frees the generator's state.
 * ruler_fit() searches the largest n whose text fits the budget, guided by estimate and confirmed by
 * tokenizing the built text (see ruler.h).
 */
#ifndef KS_RULER_IMPL_H
#define KS_RULER_IMPL_H

#include "bench/haystack.h"
#include "bench/rng.h"
#include "bench/ruler.h"
#include "bench/strbuf.h"

/* A QA source (SQuAD or HotpotQA) flattened the way RULER's read_squad/read_hotpotqa flatten it. */
typedef struct ks_qa_data {
    char **docs;        /* (n_docs) owned: sorted unique documents */
    int n_docs;
    int32_t *doc_cost;  /* (n_docs) tokens of a document's text, -1 until first needed */
    struct ks_qa_item {
        char *query;    /* owned */
        char **answers; /* (n_answers) owned */
        int n_answers;
        int *gold;      /* (n_gold) owned doc indices: the question's own documents */
        int n_gold;
        int *more;      /* (n_more) owned doc indices: other paragraphs of the same article (SQuAD) */
        int n_more;
    } *items;           /* (n_items) owned, file order, unanswerable SQuAD questions skipped */
    int n_items;
} ks_qa_data;

ks_status ks_qa_load_squad(ks_qa_data *q, const char *path);
ks_status ks_qa_load_hotpotqa(ks_qa_data *q, const char *path);
void ks_qa_free(ks_qa_data *q);

struct ks_ruler {
    const ks_bench_config *cfg;
    const ks_tokenizer *tok;
    int loom;              /* cfg->ruler_variant == KS_RULER_VARIANT_LOOM */
    int reserve_plain;     /* tokens the model input adds around a raw prompt (BOS) */
    int reserve_template;  /* ... around a templated prompt (chat markup, BOS, boundary slack) */
    ks_essay essay;        /* loaded when an essay task is configured */
    ks_words words;        /* loaded when a words task (niah keys, cwe) is configured */
    int32_t *pool_cost;    /* (words.n_pool) tokens of " " + pool word, for cwe */
    ks_qa_data squad, hotpotqa;
    ks_ids ids;            /* scratch for token counting */
    ks_strbuf scratch;     /* scratch for small strings being measured */
};

typedef struct ruler_job {
    ks_ruler *r;
    const ks_ruler_task *t;
    int length;            /* target length L */
    int index;             /* sample index within (task, length) */
    uint64_t seed;         /* the sample's seed; streams are ks_rng_mix(seed, tag) */
    int is_icl;            /* vt: this job builds the in-context example, not the sample */
    long n_min, n_max;     /* haystack size bounds in the generator's units */
    ks_strbuf text;        /* owned: the built text, prompt + answer prefix */
    size_t prefix_at;      /* where the answer prefix starts in text */
    char **answers;        /* (n_answers) owned until handed to the sample */
    int n_answers;
    void *state;           /* the generator's own state */
} ruler_job;

typedef struct ruler_gen_ops {
    ks_status (*prepare)(ruler_job *j);
    double (*estimate)(const ruler_job *j, long n);
    ks_status (*build)(ruler_job *j, long n);
    void (*release)(ruler_job *j);
} ruler_gen_ops;

extern const ruler_gen_ops ks_ruler_niah_ops, ks_ruler_vt_ops, ks_ruler_cwe_ops, ks_ruler_fwe_ops, ks_ruler_qa_ops;

/* Stream tags: each independent random part of a sample draws from ks_rng_mix(job->seed, tag). */
enum { RNG_NEEDLES = 1, RNG_HAYSTACK, RNG_POSITIONS, RNG_QUERY, RNG_SHUFFLE, RNG_EXAMPLE, RNG_ICL };

/* Tokens of s[0..n) without special tokens. */
ks_status ruler_tokens(ks_ruler *r, const char *s, size_t n, int *out);
/* Tokens of the concatenation a + b (a measuring helper for units in context). */
ks_status ruler_tokens2(ks_ruler *r, const char *a, const char *b, int *out);

/* Appends template + answer prefix with the named fields filled, recording where the prefix starts. */
void ruler_put_template(ruler_job *j, const char *tmpl, const char *prefix, const char *const *keys,
                        const char *const *vals, int n);

/* Finds the largest n in [n_min, n_max] whose built text has at most `budget` tokens and leaves that text in
 * j->text; *tokens gets its count. KS_ERR_RANGE if even n_min does not fit. */
ks_status ruler_fit(ruler_job *j, const ruler_gen_ops *ops, int budget, int *tokens);

/* Hands the job's answers over: a copy of `vals` (n strings) becomes j->answers. */
ks_status ruler_set_answers(ruler_job *j, const char *const *vals, int n);

/* The number of decimal digits of v > 0. */
int ruler_digits(long v);

#endif
