/* haystack.h — the text RULER hides needles in: Paul Graham essays split into words and sentences, and the
 * wonderwords lists that needle keys and common/frequent words are drawn from, as RULER draws them.
 *
 *     ks_essay e = {0};
 *     KS_TRY(ks_essay_load(&e, "data/haystack/paul_graham_essays"));
 *     KS_TRY(ks_essay_measure(&e, tok));        // token cost of every word, once per tokenizer
 *     ... ks_essay_word(&e, i), e.sent_end[i], ks_essay_cost(&e, 0, n) ...
 *     ks_essay_free(&e);
 *
 *     ks_words w = {0};
 *     KS_TRY(ks_words_load(&w, "data/wordlists"));           // nouns, adjectives, verbs, cwe pool
 *     ks_words_free(&w);
 *
 * Essay text: the *.txt files of the folder in name order, joined by one space, every whitespace run collapsed
 * to one space and split on spaces (RULER: re.sub(r'\s+', ' ', essay).split(' ')). Word i of a longer haystack
 * is word i mod n_words: current RULER repeats the essay when more words are asked for than exist.
 *
 * Sentences replace NLTK's Punkt (sent_tokenize) with a documented rule, see ks_sentence_ends(): a word ends a
 * sentence when it ends in . ! or ? (optionally followed by closing quotes or brackets), the next word starts
 * like a sentence (an upper-case letter, a digit, or an opening quote/bracket before one), and the word is not
 * a known abbreviation ("Mr.", "e.g.", "U.S.") or a single-letter initial. Because the haystack is words joined
 * by single spaces, a sentence list is fully described by these per-word flags.
 */
#ifndef KS_HAYSTACK_H
#define KS_HAYSTACK_H

#include <stdint.h>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

typedef struct ks_essay {
    char *text;          /* owned: the words, each NUL-terminated, back to back */
    uint32_t *word_off;  /* (n_words) offset of word i in text */
    int n_words;
    uint8_t *sent_end;   /* (n_words) 1 when a sentence ends at word i; the last word always ends one, so a
                            repeated essay starts a new sentence with its first word */
    int32_t *cost;       /* (n_words) tokens of " " + word i under the measured tokenizer; NULL before measure */
    int64_t *cost_sum;   /* (n_words + 1) prefix sums of cost */
} ks_essay;

ks_status ks_essay_load(ks_essay *e, const char *dir);
/* Fills cost/cost_sum for `tok` (one encode per distinct word). */
ks_status ks_essay_measure(ks_essay *e, const ks_tokenizer *tok);
void ks_essay_free(ks_essay *e);

/* Word i of the endless (repeated) essay. */
const char *ks_essay_word(const ks_essay *e, long i);
/* Sum of cost over words [a, b) of the endless essay. */
int64_t ks_essay_cost(const ks_essay *e, long a, long b);

/* The sentence rule above: 1 when `word` ends a sentence given the word after it (NULL at the end). */
int ks_sentence_ends(const char *word, const char *next);

typedef struct ks_wordlist {
    char *text;   /* owned: the file, lines NUL-terminated in place */
    char **words; /* (n) pointers into text */
    int n;
} ks_wordlist;

typedef struct ks_words {
    ks_wordlist nouns, adjs, verbs;
    char **pool; /* (n_pool) borrowed from the lists: sorted set of nouns + adjectives + verbs (cwe) */
    int n_pool;
} ks_words;

/* Reads nounlist.txt, adjectivelist.txt and verblist.txt from `dir` (one word a line, blank lines skipped). */
ks_status ks_words_load(ks_words *w, const char *dir);
void ks_words_free(ks_words *w);

#endif
