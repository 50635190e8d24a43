/* sentence.c — the sentence-boundary rule that stands in for NLTK Punkt on the essay haystack (haystack.h).
 *
 * Punkt learns abbreviations and sentence starters from a corpus; RULER only needs "roughly sentences" to place
 * needles at depths, so a fixed rule does: terminal punctuation, a capitalised (or numeric, or quoted) next
 * word, and a short list of abbreviations and initials that do not end sentences. */
#include <string.h>
#include <strings.h>
#include <utf8proc.h>

#include "bench/haystack.h"
#include "bench/pychar.h"

/* Lower-case abbreviations (without their final period) that do not end a sentence. */
static const char *const abbreviations[] = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "inc", "ltd", "co", "corp", "no",
    "vol", "fig", "cf", "al", "approx", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "u.s", "u.k", "a.m", "p.m", "ph.d", "mt", "gen", "gov", "rev", "sen", "rep",
};

static int is_closer(int32_t c) { return c == '"' || c == '\'' || c == ')' || c == ']' || c == 0x201D || c == 0x2019; }
static int is_opener(int32_t c) { return c == '"' || c == '\'' || c == '(' || c == '[' || c == 0x201C || c == 0x2018; }

/* Length of `word` without trailing closing quotes/brackets (ASCII or the two-byte-free UTF-8 closers). */
static size_t strip_closers(const char *word, size_t n) {
    for (;;) {
        if (n >= 1 && is_closer((unsigned char)word[n - 1])) n--;
        else if (n >= 3 && (unsigned char)word[n - 3] == 0xE2 && (unsigned char)word[n - 2] == 0x80 &&
                 ((unsigned char)word[n - 1] == 0x9D || (unsigned char)word[n - 1] == 0x99))
            n -= 3; /* ” ’ */
        else return n;
    }
}

/* "J." or "e.g." style: single letters separated by periods. */
static int initials(const char *w, size_t n) {
    int letters = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];
        if (c == '.') continue;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return 0;
        if (i + 1 < n && w[i + 1] != '.') return 0;
        letters++;
    }
    return letters > 0;
}

static int abbreviation(const char *w, size_t n) {
    while (n && is_opener((unsigned char)w[0])) w++, n--;
    if (!n) return 0;
    if (initials(w, n)) return 1;
    for (size_t i = 0; i < sizeof abbreviations / sizeof abbreviations[0]; i++)
        if (strlen(abbreviations[i]) == n && !strncasecmp(w, abbreviations[i], n)) return 1;
    return 0;
}

/* The next word starts like a sentence: after any opening quotes/brackets, an upper-case letter or a digit. */
static int starts_sentence(const char *next) {
    size_t len = strlen(next), i = 0;
    while (i < len) {
        int32_t c = ks_utf8_next(next, len, &i);
        if (is_opener(c)) continue;
        return ks_py_isdigit(c) || utf8proc_category(c) == UTF8PROC_CATEGORY_LU ||
               utf8proc_category(c) == UTF8PROC_CATEGORY_LT;
    }
    return 0;
}

int ks_sentence_ends(const char *word, const char *next) {
    size_t n = strip_closers(word, strlen(word));
    if (!n) return 0;
    char last = word[n - 1];
    if (last != '.' && last != '!' && last != '?') return 0;
    if (!next) return 1;
    if (!starts_sentence(next)) return 0;
    if (last != '.') return 1;
    if (n >= 2 && word[n - 2] == '.') return 1; /* an ellipsis before a capitalised word */
    return !abbreviation(word, n - 1);
}
