/* ruler_qa.c — qa_1 (SQuAD v2.0 dev) and qa_2 (HotpotQA dev distractor): RULER qa.py.
 *
 * Sample i asks question i of the file (answerable SQuAD questions, in file order). The haystack is n
 * documents (the unit of size): the question's own documents, then other paragraphs of the same article
 * (SQuAD), then random other documents; shuffled and rendered "Document {i}:\n{doc}" joined by "\n\n". When n
 * reaches the number of documents, current RULER cycles through all documents in sorted order; LOOM caps n.
 * The metric is string_match_part over the annotators' answers. */
#include <stdlib.h>
#include <string.h>

#include "bench/ruler_impl.h"
#include "core/json.h"

static const char TEMPLATE[] =
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. "
    "Only give me the answer and do not output any other words.\n\nQuestion: {query}";
static const char PREFIX[] = " Answer:";

/* ---- loading ---- */

typedef struct qa_strings {
    char **v;
    int n, cap;
} qa_strings;

static ks_status push_string(qa_strings *s, char *str) {
    if (!str) return KS_ERR_NOMEM;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 1024;
        char **v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) {
            free(str);
            return ks_fail(KS_ERR_NOMEM, "out of memory reading a QA file");
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = str;
    return KS_OK;
}

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted set of the collected documents (RULER: sorted(set(docs))); takes ownership of all. */
static ks_status finish_docs(ks_qa_data *q, qa_strings *all) {
    qsort(all->v, (size_t)all->n, sizeof *all->v, by_str);
    int m = 0;
    for (int i = 0; i < all->n; i++) {
        if (m && !strcmp(all->v[m - 1], all->v[i])) free(all->v[i]);
        else all->v[m++] = all->v[i];
    }
    q->docs = all->v;
    q->n_docs = m;
    q->doc_cost = ks_malloc((size_t)(m ? m : 1) * sizeof *q->doc_cost, "QA document costs");
    if (!q->doc_cost) return KS_ERR_NOMEM;
    for (int i = 0; i < m; i++) q->doc_cost[i] = -1;
    return KS_OK;
}

static int doc_index(const ks_qa_data *q, const char *doc) {
    char *const *hit = bsearch(&doc, q->docs, (size_t)q->n_docs, sizeof *q->docs, by_str);
    KS_ASSERT(hit);
    return (int)(hit - q->docs);
}

static ks_status add_item(ks_qa_data *q, int *cap) {
    if (q->n_items == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        struct ks_qa_item *v = realloc(q->items, (size_t)*cap * sizeof *v);
        if (!v) return ks_fail(KS_ERR_NOMEM, "out of memory reading a QA file");
        q->items = v;
    }
    memset(&q->items[q->n_items++], 0, sizeof q->items[0]);
    return KS_OK;
}

static ks_status bad(const char *path, const char *what) {
    return ks_fail(KS_ERR_FORMAT, "%s: %s (expected the original JSON file of the dataset)", path, what);
}

static const char *str_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

ks_status ks_qa_load_squad(ks_qa_data *q, const char *path) {
    memset(q, 0, sizeof *q);
    cJSON *root;
    KS_TRY(ks_json_load(path, &root));
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data"), *d, *p, *qa;
    ks_status st = cJSON_IsArray(data) ? KS_OK : bad(path, "no 'data' array (is this SQuAD v2.0 dev-v2.0.json?)");
    qa_strings all = {0};
    cJSON_ArrayForEach(d, data) {
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(d, "paragraphs")) {
            const char *ctx = str_field(p, "context");
            if (st == KS_OK && !ctx) st = bad(path, "a paragraph without 'context'");
            if (st == KS_OK) st = push_string(&all, ks_strndup(ctx, strlen(ctx)));
        }
    }
    if (st == KS_OK) st = finish_docs(q, &all);
    else {
        for (int i = 0; i < all.n; i++) free(all.v[i]);
        free(all.v);
    }
    int cap = 0;
    const cJSON *articles = st == KS_OK ? data : NULL;
    cJSON_ArrayForEach(d, articles) {
        const cJSON *paras = cJSON_GetObjectItemCaseSensitive(d, "paragraphs");
        int n_para = cJSON_GetArraySize(paras), *article = ks_malloc((size_t)(n_para ? n_para : 1) * sizeof *article,
                                                                     "a SQuAD article");
        if (!article) st = KS_ERR_NOMEM;
        if (st != KS_OK) break;
        int k = 0;
        cJSON_ArrayForEach(p, paras) article[k++] = doc_index(q, str_field(p, "context"));
        k = 0;
        cJSON_ArrayForEach(p, paras) {
            int own = article[k++];
            cJSON_ArrayForEach(qa, cJSON_GetObjectItemCaseSensitive(p, "qas")) {
                if (st != KS_OK || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(qa, "is_impossible"))) continue;
                const char *question = str_field(qa, "question");
                const cJSON *answers = cJSON_GetObjectItemCaseSensitive(qa, "answers"), *a;
                if (!question || !cJSON_IsArray(answers)) {
                    st = bad(path, "a question without 'question' or 'answers'");
                    break;
                }
                if ((st = add_item(q, &cap)) != KS_OK) break;
                struct ks_qa_item *it = &q->items[q->n_items - 1];
                it->query = ks_strndup(question, strlen(question));
                it->answers = ks_calloc((size_t)cJSON_GetArraySize(answers) + 1, sizeof *it->answers, "SQuAD answers");
                it->gold = ks_malloc(sizeof *it->gold, "SQuAD documents");
                it->more = ks_malloc((size_t)n_para * sizeof *it->more, "SQuAD documents");
                if (!it->query || !it->answers || !it->gold || !it->more) {
                    st = KS_ERR_NOMEM;
                    break;
                }
                cJSON_ArrayForEach(a, answers) {
                    const char *text = str_field(a, "text");
                    if (text && !(it->answers[it->n_answers++] = ks_strndup(text, strlen(text)))) st = KS_ERR_NOMEM;
                }
                it->gold[it->n_gold++] = own;
                for (int m = 0; m < n_para; m++)
                    if (article[m] != own) it->more[it->n_more++] = article[m];
            }
        }
        free(article);
    }
    cJSON_Delete(root);
    if (st == KS_OK && q->n_items == 0) st = bad(path, "no answerable questions");
    return st;
}

/* One HotpotQA context entry [title, [sentences...]] as RULER renders it: title + "\n" + "".join(sentences). */
static ks_status hotpot_doc(const cJSON *entry, ks_strbuf *doc, const char *path) {
    const cJSON *title = cJSON_GetArrayItem(entry, 0), *sents = cJSON_GetArrayItem(entry, 1), *s;
    ks_strbuf_reset(doc);
    if (!cJSON_IsString(title) || !cJSON_IsArray(sents)) return bad(path, "a context entry that is not [title, [sentences]]");
    ks_strbuf_appendz(doc, title->valuestring);
    ks_strbuf_append(doc, "\n", 1);
    cJSON_ArrayForEach(s, sents) if (cJSON_IsString(s)) ks_strbuf_appendz(doc, s->valuestring);
    return ks_strbuf_status(doc, "a HotpotQA document");
}

ks_status ks_qa_load_hotpotqa(ks_qa_data *q, const char *path) {
    memset(q, 0, sizeof *q);
    cJSON *root;
    KS_TRY(ks_json_load(path, &root));
    ks_status st = cJSON_IsArray(root) ? KS_OK : bad(path, "not a JSON array (is this hotpot_dev_distractor_v1.json?)");
    const cJSON *d, *c, *entries = st == KS_OK ? root : NULL;
    qa_strings all = {0};
    ks_strbuf doc = {0};
    cJSON_ArrayForEach(d, entries) {
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(d, "context")) {
            if (st == KS_OK) st = hotpot_doc(c, &doc, path);
            if (st == KS_OK) st = push_string(&all, ks_strndup(doc.s, doc.len));
        }
    }
    if (st == KS_OK) st = finish_docs(q, &all);
    else {
        for (int i = 0; i < all.n; i++) free(all.v[i]);
        free(all.v);
    }
    int cap = 0;
    entries = st == KS_OK ? root : NULL;
    cJSON_ArrayForEach(d, entries) {
        const char *question = str_field(d, "question"), *answer = str_field(d, "answer");
        const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(d, "context");
        if (!question || !answer || !cJSON_IsArray(ctx)) {
            st = bad(path, "an entry without 'question', 'answer' or 'context'");
            break;
        }
        if ((st = add_item(q, &cap)) != KS_OK) break;
        struct ks_qa_item *it = &q->items[q->n_items - 1];
        it->query = ks_strndup(question, strlen(question));
        it->answers = ks_calloc(1, sizeof *it->answers, "HotpotQA answers");
        it->gold = ks_malloc((size_t)(cJSON_GetArraySize(ctx) + 1) * sizeof *it->gold, "HotpotQA documents");
        if (!it->query || !it->answers || !it->gold || !(it->answers[0] = ks_strndup(answer, strlen(answer)))) {
            st = KS_ERR_NOMEM;
            break;
        }
        it->n_answers = 1;
        cJSON_ArrayForEach(c, ctx) {
            if ((st = hotpot_doc(c, &doc, path)) != KS_OK) break;
            it->gold[it->n_gold++] = doc_index(q, doc.s);
        }
        if (st != KS_OK) break;
    }
    ks_strbuf_free(&doc);
    cJSON_Delete(root);
    if (st == KS_OK && q->n_items == 0) st = bad(path, "no questions");
    return st;
}

void ks_qa_free(ks_qa_data *q) {
    if (!q) return;
    for (int i = 0; i < q->n_docs; i++) free(q->docs[i]);
    free(q->docs);
    free(q->doc_cost);
    for (int i = 0; i < q->n_items; i++) {
        struct ks_qa_item *it = &q->items[i];
        free(it->query);
        for (int k = 0; k < it->n_answers; k++) free(it->answers[k]);
        free(it->answers);
        free(it->gold);
        free(it->more);
    }
    free(q->items);
    memset(q, 0, sizeof *q);
}

/* ---- the generator ---- */

typedef struct qa_state {
    ks_qa_data *q;
    const struct ks_qa_item *item;
    int *order;        /* (q->n_docs) owned: gold, shuffled same-article docs, shuffled others */
    int64_t *measured; /* (n_measured + 1) owned: prefix sums of block costs along order */
    long n_measured;
    double avg;        /* mean block cost, for sizes beyond the measured prefix */
    double fixed;      /* tokens of the template with an empty context */
} qa_state;

/* Document i of the haystack at size n (before the shuffle). */
static int doc_at(const qa_state *s, long n, long i) {
    return n < s->q->n_docs ? s->order[i] : (int)(i % s->q->n_docs);
}

static double qa_estimate(const ruler_job *j, long n) {
    const qa_state *s = j->state;
    if (n <= s->n_measured) return s->fixed + (double)s->measured[n];
    return s->fixed + (double)s->measured[s->n_measured] + s->avg * (double)(n - s->n_measured);
}

static ks_status qa_build(ruler_job *j, long n) {
    qa_state *s = j->state;
    int *docs = ks_malloc((size_t)n * sizeof *docs, "a qa haystack");
    if (!docs) return KS_ERR_NOMEM;
    for (long i = 0; i < n; i++) docs[i] = doc_at(s, n, i);
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_SHUFFLE));
    ks_rng_shuffle(&g, docs, (int)n);
    ks_strbuf ctx = {0};
    for (long i = 0; i < n; i++) ks_strbuf_appendf(&ctx, "%sDocument %ld:\n%s", i ? "\n\n" : "", i + 1, s->q->docs[docs[i]]);
    free(docs);
    ks_status st = ks_strbuf_status(&ctx, "a qa haystack");
    if (st == KS_OK) {
        const char *keys[] = {"context", "query"};
        const char *vals[] = {ctx.s, s->item->query};
        ruler_put_template(j, TEMPLATE, PREFIX, keys, vals, 2);
    }
    ks_strbuf_free(&ctx);
    return st;
}

/* Tokens of document d as a haystack block ("\n\nDocument 123:\n" + text), cached per document. */
static ks_status block_cost(ks_ruler *r, ks_qa_data *q, int d, int *out) {
    if (q->doc_cost[d] < 0) {
        int c = 0;
        KS_TRY(ruler_tokens(r, q->docs[d], strlen(q->docs[d]), &c));
        q->doc_cost[d] = c;
    }
    *out = q->doc_cost[d] + 6; /* "\n\nDocument 123:\n": 6 tokens for Llama-3; the search corrects the rest */
    return KS_OK;
}

static ks_status qa_prepare(ruler_job *j) {
    ks_ruler *r = j->r;
    ks_qa_data *q = !strcmp(j->t->dataset, "squad") ? &r->squad : &r->hotpotqa;
    if (j->index >= q->n_items)
        return ks_fail(KS_ERR_RANGE, "RULER %s: sample %d needs question %d, but the %s file has %d usable questions; "
                                     "lower num_samples", j->t->name, j->index, j->index, j->t->dataset, q->n_items);
    qa_state *s = ks_calloc(1, sizeof *s, "a qa sample");
    if (!s) return KS_ERR_NOMEM;
    j->state = s;
    s->q = q;
    s->item = &q->items[j->index];
    const char *answers[64];
    int n_ans = s->item->n_answers < 64 ? s->item->n_answers : 64;
    for (int i = 0; i < n_ans; i++) answers[i] = s->item->answers[i];
    KS_TRY(ruler_set_answers(j, answers, n_ans));

    /* The document order for every size below the document count: gold, then the article's other paragraphs
     * (random.sample(more, k) is a prefix of a shuffle), then the remaining documents (likewise). */
    s->order = ks_malloc((size_t)q->n_docs * sizeof *s->order, "a qa document order");
    char *used = ks_calloc((size_t)q->n_docs, 1, "a qa document order");
    if (!s->order || !used) {
        free(used);
        return KS_ERR_NOMEM;
    }
    long k = 0;
    for (int i = 0; i < s->item->n_gold; i++) used[s->item->gold[i]] = 1, s->order[k++] = s->item->gold[i];
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_HAYSTACK));
    long more_at = k;
    for (int i = 0; i < s->item->n_more; i++)
        if (!used[s->item->more[i]]) used[s->item->more[i]] = 1, s->order[k++] = s->item->more[i];
    ks_rng_shuffle(&g, s->order + more_at, (int)(k - more_at));
    long rest_at = k;
    for (int d = 0; d < q->n_docs; d++)
        if (!used[d]) s->order[k++] = d;
    ks_rng_shuffle(&g, s->order + rest_at, (int)(k - rest_at));
    free(used);

    /* Block costs along that order, measured until they exceed the target length (beyond it, the mean). */
    long cap = q->n_docs;
    s->measured = ks_malloc(((size_t)cap + 1) * sizeof *s->measured, "qa costs");
    if (!s->measured) return KS_ERR_NOMEM;
    s->measured[0] = 0;
    while (s->n_measured < cap && s->measured[s->n_measured] <= j->length) {
        int c = 0;
        KS_TRY(block_cost(r, q, s->order[s->n_measured], &c));
        s->measured[s->n_measured + 1] = s->measured[s->n_measured] + c;
        s->n_measured++;
    }
    s->avg = (double)s->measured[s->n_measured] / (double)s->n_measured;

    int c = 0;
    const char *keys[] = {"context", "query"};
    const char *vals[] = {"", s->item->query};
    ruler_put_template(j, TEMPLATE, PREFIX, keys, vals, 2);
    KS_TRY(ks_strbuf_status(&j->text, "a qa prompt"));
    KS_TRY(ruler_tokens(r, j->text.s, j->text.len, &c));
    ks_strbuf_reset(&j->text);
    s->fixed = c;
    j->n_min = s->item->n_gold;
    j->n_max = r->loom ? q->n_docs : (long)j->length; /* a block costs more than one token */
    if (j->n_max < j->n_min) j->n_max = j->n_min;
    return KS_OK;
}

static void qa_release(ruler_job *j) {
    qa_state *s = j->state;
    if (!s) return;
    free(s->order);
    free(s->measured);
    free(s);
    j->state = NULL;
}

const ruler_gen_ops ks_ruler_qa_ops = {qa_prepare, qa_estimate, qa_build, qa_release};
