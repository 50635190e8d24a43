/* sample.c — see sample.h. */
#include "bench/sample.h"

#include <stdlib.h>
#include <string.h>

static void free_strv(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

void ks_sample_free(ks_sample *s) {
    if (!s) return;
    free(s->prompt);
    free(s->answer_prefix);
    free_strv(s->answers, s->n_answers);
    free_strv(s->all_classes, s->n_classes);
    memset(s, 0, sizeof *s);
}
