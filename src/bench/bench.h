/* bench.h — one benchmark, opened from its config: the list of sample ids and the samples themselves.
 *
 *     ks_bench *b;
 *     KS_TRY(ks_bench_open(&b, &cfg, tok));          // RULER generator or LongBench reader
 *     ks_sample_id *ids; int n;
 *     KS_TRY(ks_bench_list(b, limit, &ids, &n));      // deterministic order; limit <= 0 = all
 *     for (int i = 0; i < n; i++) {
 *         ks_sample s;
 *         KS_TRY(ks_bench_get(b, &ids[i], &s));       // a pure function of (config, id)
 *         ... ks_sample_free(&s);
 *     }
 *     free(ids); ks_bench_close(b);
 *
 * An id is small and self-contained, so rank 0 can hand ids out and every rank builds its own samples.
 * Order: RULER loops over lengths, then tasks, then indexes (LOOM's "{task}_{length}" expansion); LongBench
 * over tasks, then records in file order. `limit` keeps the first `limit` indexes of each (task, length).
 */
#ifndef KS_BENCH_H
#define KS_BENCH_H

#include "bench/bench_config.h"
#include "bench/sample.h"
#include "tokenizer/tokenizer.h"

typedef struct ks_sample_id {
    char task[KS_TASK_MAX];
    int length; /* RULER target length; 0 for LongBench */
    int index;
} ks_sample_id;

typedef struct ks_bench ks_bench; /* opaque */

/* cfg and tok must outlive the benchmark. Loads or indexes the data the configured tasks need. */
ks_status ks_bench_open(ks_bench **out, const ks_bench_config *cfg, const ks_tokenizer *tok);
/* *ids (n entries) is caller-freed. */
ks_status ks_bench_list(const ks_bench *b, int limit, ks_sample_id **ids, int *n);
/* Builds the sample for an id into *out (zeroed first). Not thread-safe: one ks_bench per thread. */
ks_status ks_bench_get(ks_bench *b, const ks_sample_id *id, ks_sample *out);
void ks_bench_close(ks_bench *b);

#endif
