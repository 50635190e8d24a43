/* record.c — see record.h. */
#include "results/record.h"

#include <stdlib.h>
#include <string.h>

void ks_result_free(ks_result *r) {
    if (!r) return;
    free(r->prediction);
    free(r->answers_json);
    free(r->layers);
    memset(r, 0, sizeof *r);
}
