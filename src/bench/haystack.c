/* haystack.c — essay words and word lists; see haystack.h. */
#include "bench/haystack.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "bench/pychar.h"
#include "bench/strbuf.h"
#include "core/file.h"

static int txt_name(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return n > 4 && strcmp(d->d_name + n - 4, ".txt") == 0;
}

/* The *.txt files of dir in name order, joined by one space. */
static ks_status read_essays(const char *dir, ks_strbuf *all) {
    if (!ks_is_directory(dir))
        return ks_fail(KS_ERR_IO, "%s: essay folder not found (set essays_dir in the benchmark config, or data_dir "
                                  "to the folder holding haystack/paul_graham_essays)", dir);
    struct dirent **names;
    int n = scandir(dir, &names, txt_name, alphasort);
    if (n < 0) return ks_fail(KS_ERR_IO, "%s: cannot list the essay folder", dir);
    ks_status st = KS_OK;
    for (int i = 0; i < n; i++) {
        char path[4096], *text = NULL;
        size_t len = 0;
        if (st == KS_OK) st = ks_file_read_all(ks_path_join(path, sizeof path, dir, names[i]->d_name), &text, &len);
        if (st == KS_OK) {
            if (all->len) ks_strbuf_append(all, " ", 1);
            ks_strbuf_append(all, text, len);
        }
        free(text);
        free(names[i]);
    }
    free(names);
    if (st == KS_OK && n == 0) st = ks_fail(KS_ERR_IO, "%s: no *.txt essays in the essay folder", dir);
    return st == KS_OK ? ks_strbuf_status(all, "the essay haystack") : st;
}

ks_status ks_essay_load(ks_essay *e, const char *dir) {
    memset(e, 0, sizeof *e);
    ks_strbuf raw = {0};
    ks_status st = read_essays(dir, &raw);
    if (st != KS_OK) {
        ks_strbuf_free(&raw);
        return st;
    }
    /* Words are written back into the same buffer (never longer than the input), NUL-separated. */
    size_t cap_words = raw.len / 2 + 2;
    e->word_off = ks_malloc(cap_words * sizeof *e->word_off, "essay word offsets");
    if (!e->word_off) {
        ks_strbuf_free(&raw);
        return KS_ERR_NOMEM;
    }
    size_t i = 0, w = 0;
    int in_word = 0;
    while (i < raw.len) {
        size_t at = i;
        int32_t c = ks_utf8_next(raw.s, raw.len, &i);
        if (ks_py_isspace(c)) {
            if (in_word) raw.s[w++] = 0;
            in_word = 0;
            continue;
        }
        if (!in_word) e->word_off[e->n_words++] = (uint32_t)w;
        in_word = 1;
        memmove(raw.s + w, raw.s + at, i - at);
        w += i - at;
    }
    raw.s[w] = 0;
    e->text = ks_strbuf_take(&raw);
    e->sent_end = ks_calloc((size_t)e->n_words + 1, 1, "essay sentence flags");
    if (!e->sent_end) return KS_ERR_NOMEM;
    for (int k = 0; k < e->n_words; k++)
        e->sent_end[k] = (uint8_t)ks_sentence_ends(e->text + e->word_off[k],
                                                   k + 1 < e->n_words ? e->text + e->word_off[k + 1] : NULL);
    return e->n_words ? KS_OK : ks_fail(KS_ERR_FORMAT, "%s: the essays hold no words", dir);
}

/* A word and its position, for grouping equal words. */
typedef struct word_at {
    const char *w;
    int i;
} word_at;

static int by_word(const void *a, const void *b) { return strcmp(((const word_at *)a)->w, ((const word_at *)b)->w); }

ks_status ks_essay_measure(ks_essay *e, const ks_tokenizer *tok) {
    free(e->cost);
    free(e->cost_sum);
    e->cost = ks_malloc((size_t)e->n_words * sizeof *e->cost, "essay word costs");
    e->cost_sum = ks_malloc(((size_t)e->n_words + 1) * sizeof *e->cost_sum, "essay cost sums");
    word_at *order = ks_malloc((size_t)e->n_words * sizeof *order, "essay word order");
    if (!e->cost || !e->cost_sum || !order) {
        free(order);
        return KS_ERR_NOMEM;
    }
    /* Words sorted by text, so each distinct word is encoded once. */
    for (int k = 0; k < e->n_words; k++) order[k].w = ks_essay_word(e, k), order[k].i = k;
    qsort(order, (size_t)e->n_words, sizeof *order, by_word);
    ks_ids ids = {0};
    ks_strbuf sp = {0};
    ks_status st = KS_OK;
    for (int k = 0; k < e->n_words && st == KS_OK; k++) {
        const char *word = order[k].w;
        if (k > 0 && !strcmp(word, order[k - 1].w)) {
            e->cost[order[k].i] = e->cost[order[k - 1].i];
            continue;
        }
        ks_strbuf_reset(&sp);
        ks_strbuf_append(&sp, " ", 1);
        ks_strbuf_appendz(&sp, word);
        ids.n = 0;
        st = ks_strbuf_status(&sp, "an essay word");
        if (st == KS_OK) st = ks_tokenizer_encode(tok, sp.s, sp.len, 0, &ids);
        e->cost[order[k].i] = ids.n;
    }
    e->cost_sum[0] = 0;
    for (int k = 0; st == KS_OK && k < e->n_words; k++) e->cost_sum[k + 1] = e->cost_sum[k] + e->cost[k];
    free(order);
    ks_ids_free(&ids);
    ks_strbuf_free(&sp);
    return st;
}

void ks_essay_free(ks_essay *e) {
    if (!e) return;
    free(e->text);
    free(e->word_off);
    free(e->sent_end);
    free(e->cost);
    free(e->cost_sum);
    memset(e, 0, sizeof *e);
}

const char *ks_essay_word(const ks_essay *e, long i) { return e->text + e->word_off[i % e->n_words]; }

/* Cost of the first b words of the endless essay. */
static int64_t cost_upto(const ks_essay *e, long b) {
    long laps = b / e->n_words;
    return laps * e->cost_sum[e->n_words] + e->cost_sum[b % e->n_words];
}

int64_t ks_essay_cost(const ks_essay *e, long a, long b) { return cost_upto(e, b) - cost_upto(e, a); }

/* ---- word lists ---- */

static ks_status wordlist_load(ks_wordlist *w, const char *dir, const char *name) {
    char path[4096];
    ks_path_join(path, sizeof path, dir, name);
    size_t len;
    if (!ks_file_exists(path))
        return ks_fail(KS_ERR_IO, "%s: word list not found (set wordlists_dir in the benchmark config to the folder "
                                  "holding nounlist.txt, adjectivelist.txt and verblist.txt)", path);
    KS_TRY(ks_file_read_all(path, &w->text, &len));
    int lines = 1;
    for (size_t i = 0; i < len; i++) lines += w->text[i] == '\n';
    w->words = ks_malloc((size_t)lines * sizeof *w->words, "a word list");
    if (!w->words) return KS_ERR_NOMEM;
    char *p = w->text;
    while (*p) {
        char *end = strchr(p, '\n');
        char *next = end ? end + 1 : p + strlen(p);
        if (end) *end = 0;
        size_t n = strlen(p);
        while (n && (p[n - 1] == '\r' || p[n - 1] == ' ')) p[--n] = 0;
        if (n) w->words[w->n++] = p;
        p = next;
    }
    return w->n ? KS_OK : ks_fail(KS_ERR_FORMAT, "%s: the word list is empty", path);
}

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

ks_status ks_words_load(ks_words *w, const char *dir) {
    memset(w, 0, sizeof *w);
    KS_TRY(wordlist_load(&w->nouns, dir, "nounlist.txt"));
    KS_TRY(wordlist_load(&w->adjs, dir, "adjectivelist.txt"));
    KS_TRY(wordlist_load(&w->verbs, dir, "verblist.txt"));
    int n = w->nouns.n + w->adjs.n + w->verbs.n;
    w->pool = ks_malloc((size_t)n * sizeof *w->pool, "the common-words pool");
    if (!w->pool) return KS_ERR_NOMEM;
    const ks_wordlist *lists[3] = {&w->nouns, &w->adjs, &w->verbs};
    for (int l = 0; l < 3; l++)
        for (int i = 0; i < lists[l]->n; i++) w->pool[w->n_pool++] = lists[l]->words[i];
    qsort(w->pool, (size_t)w->n_pool, sizeof *w->pool, by_str);
    int m = 0; /* sorted(set(...)) */
    for (int i = 0; i < w->n_pool; i++)
        if (m == 0 || strcmp(w->pool[m - 1], w->pool[i])) w->pool[m++] = w->pool[i];
    w->n_pool = m;
    return KS_OK;
}

static void wordlist_free(ks_wordlist *w) {
    free(w->text);
    free(w->words);
}

void ks_words_free(ks_words *w) {
    if (!w) return;
    wordlist_free(&w->nouns);
    wordlist_free(&w->adjs);
    wordlist_free(&w->verbs);
    free(w->pool);
    memset(w, 0, sizeof *w);
}
