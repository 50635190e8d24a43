/* bench_stages.c — `kvscope bench --gp_num k` under `mpirun -np k`: one model instance of random weights
 * pipelined over k ranks, rank s the pipeline stage holding the layer range cli/stages.h gives it (the split
 * `kvscope eval` uses), each rank building its forward for its own layers only, so that a shape too big for one
 * GPU fits k. Per context length, in phases that every rank enters together:
 *
 *   1. every rank notes its GPU's free memory and builds its forward (the ranks of a GPU all before any builds);
 *   2. stage 0 drives the pipeline (engine/pipeline.h) with one untimed chunk, then the timed prefills and decode
 *      steps of the one-rank bench, the others serve it (ks_pipeline_follow); each phase ends with
 *      ks_pipeline_end, after which the stages add up the residual-row bytes each sent (engine/pipeline_meter.h);
 *   3. the busy times: stage by stage in turn (so stages sharing a GPU do not overlap), the stage's own layers
 *      on the same prompt alone, chunk by chunk with no transport;
 *   4. the device memory each rank holds.
 * Stage 0 gets every stage's numbers. A failure in the middle ends the job: the other stages would otherwise wait
 * for messages that will not come (the caller aborts). */
#include <stdlib.h>
#include <string.h>

#include "cli/bench_impl.h"
#include "speed/speed_model.h"

/* Every stage's `bytes` at `mine` into all[0 .. n_stages) slots of `bytes`, stage by stage over the link. */
static ks_status all_stages(ks_stages *sg, const void *mine, void *all, size_t bytes) {
    for (int t = 0; t < sg->layout.n_stages; t++) {
        char *slot = (char *)all + (size_t)t * bytes;
        if (t == sg->layout.stage) memcpy(slot, mine, bytes);
        KS_TRY(ks_stage_link_bcast(&sg->link, t, slot, bytes));
    }
    return KS_OK;
}

/* Every stage of the instance has reached this point. */
static ks_status barrier(ks_stages *sg) {
    int one = 1, all[KS_STAGE_MAX];
    return all_stages(sg, &one, all, sizeof one);
}

/* Stage 0 ends the phase it drove (st: how its part went); the other stages serve stage 0's calls until then. */
static ks_status phase_end(ks_pipeline *p, ks_status st) {
    if (p->t->stage != 0) return ks_pipeline_follow(p);
    return st == KS_OK ? ks_pipeline_end(p) : st;
}

/* The residual-row bytes every stage sent since the meter's last reset, summed; the meter reset. */
static ks_status bytes_sent(ks_stages *sg, ks_pipeline_meter *mt, double *sum) {
    int64_t all[KS_STAGE_MAX];
    KS_TRY(all_stages(sg, &mt->hidden_bytes, all, sizeof *all));
    *sum = 0;
    for (int s = 0; s < sg->layout.n_stages; s++) *sum += (double)all[s];
    ks_pipeline_meter_reset(mt);
    return KS_OK;
}

/* Phase 2: the pipelined prefill and decode, driven by stage 0, with the bytes each sent. */
static ks_status pipelined(ks_stages *sg, ks_pipeline *p, ks_pipeline_meter *mt, const bench_opts *o, int L,
                           const int32_t *ids, length_result *r) {
    const int lead = sg->layout.stage == 0, reps = bench_reps(o, L);
    bench_drive d = {.f = p->f, .p = p};
    int32_t next = 0;
    double sum;
    /* warm-up: one chunk builds every stage's GEMM plans and sets the kernels' attributes */
    KS_TRY(phase_end(p, lead ? bench_time_prefill(&d, ids, L < o->chunk ? L : o->chunk, 1, &r->prefill_s, &next)
                             : KS_OK));
    ks_pipeline_meter_reset(mt);
    KS_TRY(phase_end(p, lead ? bench_time_prefill(&d, ids, L, reps, &r->prefill_s, &next) : KS_OK));
    KS_TRY(bytes_sent(sg, mt, &sum));
    r->prefill_bytes_per_token = sum / ((double)reps * L);
    KS_TRY(phase_end(p, lead ? bench_time_decode(&d, next, o->steps, &r->decode_ms) : KS_OK));
    KS_TRY(bytes_sent(sg, mt, &sum));
    r->decode_bytes_per_token = sum / (o->steps + 3.0); /* bench_time_decode's steps */
    return KS_OK;
}

/* This stage's layers alone on the prompt of L tokens, chunk by chunk as the pipeline plans them, no transport:
 * a later stage's rows come from the host (hidden_write: the call's input, as a received chunk is; their values
 * do not change the work). Ends synchronised: the last stage on its argmax, the others reading one row back. */
static ks_status busy_alone(ks_forward *f, const int32_t *ids, int L, double *busy_s) {
    const ks_model *m = f->m;
    int first = m->first_layer == 0;
    float *rows = first ? NULL : ks_calloc((size_t)f->chunk * m->cfg.hidden, sizeof(float), "a chunk of residual rows");
    float *row = ks_malloc(sizeof(float) * m->cfg.hidden, "a residual row");
    ks_status st = (first || rows) && row ? KS_OK : KS_ERR_NOMEM;
    ks_forward_reset(f);
    double t0 = bench_now_s();
    for (int t = 0, n; t < L && st == KS_OK; t += n) {
        n = ks_forward_chunk_len(f, L, t);
        ks_forward_io io = {.tokens = first ? ids + t : NULL, .hidden_in = rows, .prompt_end = t + n == L,
                            .skip_head = t + n < L};
        st = ks_forward_chunk(f, &io, n);
    }
    if (st == KS_OK && m->last_layer < m->cfg.n_layers) st = f->ops->hidden_read(f->be, row, 1);
    *busy_s = bench_now_s() - t0;
    free(rows);
    free(row);
    return st;
}

/* Phase 3: every stage's busy time, one stage at a time. */
static ks_status busy_times(ks_stages *sg, ks_forward *f, const int32_t *ids, int L, double *busy_s) {
    for (int t = 0; t < sg->layout.n_stages; t++) {
        if (t == sg->layout.stage) KS_TRY(busy_alone(f, ids, L, &busy_s[t]));
        KS_TRY(ks_stage_link_bcast(&sg->link, t, &busy_s[t], sizeof *busy_s));
    }
    return KS_OK;
}

ks_status bench_stage_length(const ks_model *m, ks_stages *sg, const bench_opts *o, int L, const int32_t *ids,
                             float *logits, length_result *r) {
    const int max_ctx = L + o->steps + 3;
    ks_forward f = {0};
    ks_pipeline p = {0};
    ks_pipeline_meter mt;
    size_t free0, free1;
    ks_status st;
    memset(r, 0, sizeof *r);
    KS_TRY(barrier(sg)); /* the previous length's forwards are gone on every rank */
    KS_TRY(ks_speed_device(NULL, 0, NULL, NULL, &free0));
    KS_TRY(barrier(sg)); /* before any rank of this GPU builds */
    ks_forward_params fp = {.max_ctx = max_ctx, .max_new = o->steps + 3, .chunk = o->chunk, .cache = KS_CACHE_FULL};
    KS_TRY_GOTO(st, ks_speed_forward(&f, m, NULL, &fp, o->seed), done);
    ks_pipeline_meter_init(&mt, &sg->transport);
    KS_TRY_GOTO(st, ks_pipeline_init(&p, &f, &mt.t), done);
    KS_TRY_GOTO(st, pipelined(sg, &p, &mt, o, L, ids, r), done);
    if (m->last_layer == m->cfg.n_layers) KS_TRY_GOTO(st, bench_check_logits(&f, logits), done);
    KS_TRY_GOTO(st, busy_times(sg, &f, ids, L, r->busy_s), done);
    KS_TRY_GOTO(st, ks_speed_device(NULL, 0, NULL, NULL, &free1), done);
    size_t mine = free0 > free1 ? free0 - free1 : 0;
    KS_TRY_GOTO(st, all_stages(sg, &mine, r->rank_bytes, sizeof mine), done);
    r->length = L;
    for (int s = 0; s < sg->layout.n_stages; s++)
        r->peak_bytes = r->rank_bytes[s] > r->peak_bytes ? r->rank_bytes[s] : r->peak_bytes;
    ks_pipeline_bubble_of(&r->bubble, r->prefill_s, r->busy_s, sg->layout.n_stages);
done:
    ks_pipeline_free(&p);
    ks_forward_free(&f);
    return st;
}
