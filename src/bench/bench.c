/* bench.c — the benchmark facade over the RULER generator and the LongBench reader; see bench.h. */
#include "bench/bench.h"

#include <stdio.h>
#include <stdlib.h>

#include "bench/longbench.h"
#include "bench/ruler.h"

struct ks_bench {
    const ks_bench_config *cfg;
    ks_ruler *ruler;         /* RULER */
    ks_longbench *longbench; /* LongBench */
};

ks_status ks_bench_open(ks_bench **out, const ks_bench_config *cfg, const ks_tokenizer *tok) {
    ks_bench *b = ks_calloc(1, sizeof *b, "a benchmark");
    if (!b) return KS_ERR_NOMEM;
    b->cfg = cfg;
    ks_status st = cfg->kind == KS_BENCH_RULER ? ks_ruler_open(&b->ruler, cfg, tok) : ks_longbench_open(&b->longbench, cfg, tok);
    if (st != KS_OK) {
        free(b);
        return st;
    }
    *out = b;
    return KS_OK;
}

ks_status ks_bench_list(const ks_bench *b, int limit, ks_sample_id **ids, int *n) {
    const ks_bench_config *c = b->cfg;
    long total = 0;
    if (c->kind == KS_BENCH_RULER) {
        int per = limit > 0 && limit < c->num_samples ? limit : c->num_samples;
        total = (long)c->n_lengths * c->n_tasks * per;
    } else {
        for (int t = 0; t < c->n_tasks; t++) {
            int m = ks_longbench_count(b->longbench, c->task_names[t]);
            total += limit > 0 && limit < m ? limit : m;
        }
    }
    ks_sample_id *v = ks_calloc((size_t)(total ? total : 1), sizeof *v, "the sample list");
    if (!v) return KS_ERR_NOMEM;
    long k = 0;
    if (c->kind == KS_BENCH_RULER) {
        int per = limit > 0 && limit < c->num_samples ? limit : c->num_samples;
        for (int l = 0; l < c->n_lengths; l++)
            for (int t = 0; t < c->n_tasks; t++)
                for (int i = 0; i < per; i++, k++) {
                    snprintf(v[k].task, sizeof v[k].task, "%s", c->task_names[t]);
                    v[k].length = c->lengths[l];
                    v[k].index = i;
                }
    } else {
        for (int t = 0; t < c->n_tasks; t++) {
            int m = ks_longbench_count(b->longbench, c->task_names[t]);
            if (limit > 0 && limit < m) m = limit;
            for (int i = 0; i < m; i++, k++) {
                snprintf(v[k].task, sizeof v[k].task, "%s", c->task_names[t]);
                v[k].index = i;
            }
        }
    }
    *ids = v;
    *n = (int)total;
    return KS_OK;
}

ks_status ks_bench_get(ks_bench *b, const ks_sample_id *id, ks_sample *out) {
    if (b->ruler) return ks_ruler_generate(b->ruler, id->task, id->length, id->index, out);
    return ks_longbench_get(b->longbench, id->task, id->index, out);
}

void ks_bench_close(ks_bench *b) {
    if (!b) return;
    ks_ruler_close(b->ruler);
    ks_longbench_close(b->longbench);
    free(b);
}
