/* cmd_bench.c — `kvscope bench`, the speed benchmark: the GPU speed of a random-weight model of any Hugging Face
 * config shape (Llama-3.1-8B by default; speed/speed_model.h). For each context length: prefill seconds of one prompt
 * (median of --repeat runs up to 32K, one run beyond), decode ms/token on the full cache (the cache filled by
 * that prefill, then graph-replayed greedy steps), and peak device memory; then the prefill attention kernel
 * alone in TFLOP/s, and with --sparse_densities the block-sparse prefill kernel at those densities of random
 * block lists beside the dense kernel (time, speedup, TFLOP/s of the computed blocks) and each sparse method's
 * estimation of one layer at those lengths against the dense kernel (XAttention's, FlexPrefill's). Prints a table and
 * writes JSON that `jobs/bench_torch.py --compare torch.json F.json` puts side by side with PyTorch + transformers and
 * the physical floor.
 *
 * With --acceleration (bench_methods.c; KV methods, methods/method.h; repeatable, each `NAME` or
 * `NAME:key=value:...`, plus --method_opt for all of them) each length instead runs FullKV and then every method,
 * each on its own forward instance with the full cache: prefill seconds and their increase over FullKV's, the
 * seconds spent in the method's hooks, the KV bytes held after prefill (bf16 rows actually kept, or a packed
 * format's bytes, and rows per layer and KV head), decode ms/token on the compressed cache beside its floor (the
 * weights and those KV bytes over the device's copy bandwidth, measured once at the start of the run) and device
 * memory in use; then each method whose cache
 * KS_CACHE_AUTO sizes to its budget (engine/forward.h: layer-major prefill) again on such an instance, whose device
 * memory is what that method really needs. Random weights are generated on the GPU, so a fresh instance per method
 * costs its allocation and one untimed warm-up chunk, not a weight upload.
 *
 * With --gp_num k under `mpirun -np k` the model is one instance pipelined over k ranks, each holding the layers
 * `kvscope eval --gp_num k` would give its stage (bench_stages.c); the table adds the pipeline's bubble (each
 * stage's idle time against its layers alone), the residual-row bytes sent between stages per token and the
 * device memory of every rank. --acceleration measures one GPU and is refused with --gp_num k > 1.
 *
 * With --device cpu --model F it measures that checkpoint on the CPU instead (bench_cpu.c): prefill and decode
 * tokens/s per prompt length.
 *
 * With --sweep CFG it times a whole benchmark config through `kvscope eval`'s run on the random-weight model
 * (bench_sweep.c: wall time, samples/s, prefill / decode / other). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/bench_impl.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/stages.h"
#include "core/log.h"
#include "speed/speed_model.h"

double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double bench_gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

ks_status bench_write_json(const char *path, cJSON *j) {
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!text) return ks_fail(KS_ERR_NOMEM, "bench: out of memory writing the JSON results");
    FILE *fp = fopen(path, "w");
    int ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF;
    if (fp && fclose(fp)) ok = 0;
    free(text);
    return ok ? KS_OK : ks_fail(KS_ERR_IO, "--out %s: cannot write the results file", path);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

ks_status bench_parse_lengths(const char *s, const char *opt, int *out, int *n) {
    *n = 0;
    for (const char *p = s; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || v > (1L << 30) || (*end && *end != ',') || *n == MAX_LENGTHS)
            return ks_fail(KS_ERR_ARG, "--%s '%s': expected up to %d comma-separated positive token counts", opt, s,
                           MAX_LENGTHS);
        out[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) return ks_fail(KS_ERR_ARG, "--%s: empty list", opt);
    return KS_OK;
}

/* "0.05,0.1" -> out[]; KS_ERR_ARG naming the option on anything but fractions in (0, 1]. */
static ks_status parse_densities(const char *s, double *out, int *n) {
    *n = 0;
    for (const char *p = s; *p;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v > 0 && v <= 1) || (*end && *end != ',') || *n == MAX_DENSITIES)
            return ks_fail(KS_ERR_ARG, "--sparse_densities '%s': expected up to %d comma-separated fractions in (0, 1]",
                           s, MAX_DENSITIES);
        out[(*n)++] = v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) return ks_fail(KS_ERR_ARG, "--sparse_densities: empty list");
    return KS_OK;
}

size_t bench_weight_bytes(const ks_model_config *c, int first, int last) {
    size_t D = c->hidden, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t layer = D * (qd + 2 * kvd) + qd * D + 3 * D * c->ffn + 2 * D;
    if (c->attn_bias) layer += qd + 2 * kvd;
    if (c->o_bias) layer += D;
    const int head = last == c->n_layers;
    size_t n = (size_t)(last - first) * layer;
    if (first == 0 || (head && c->tie_embeddings)) n += (size_t)c->vocab * D;
    if (head) n += D + (c->tie_embeddings ? 0 : (size_t)c->vocab * D);
    return 2 * n;
}

/* The bf16 K and V of `rows` positions in layers [first, last). */
static size_t kv_bytes(const ks_model_config *c, int first, int last, int rows) {
    return (size_t)(last - first) * 2 * c->n_kv_heads * rows * c->head_dim * 2;
}

int bench_reps(const bench_opts *o, int L) { return L <= 32768 ? o->repeat : 1; }

static ks_status drive_prefill(const bench_drive *d, const int32_t *ids, int n, int32_t *next) {
    if (d->p) return ks_pipeline_prefill(d->p, ids, n, next); /* a new sequence on every stage */
    ks_forward_reset(d->f);
    return ks_forward_prefill(d->f, ids, n, NULL, next);
}

static ks_status drive_decode(const bench_drive *d, int32_t token, int32_t *next) {
    return d->p ? ks_pipeline_decode(d->p, token, next) : ks_forward_decode(d->f, token, NULL, next);
}

ks_status bench_time_prefill(const bench_drive *d, const int32_t *ids, int n, int reps, double *median_s,
                             int32_t *next) {
    double t[16];
    KS_ASSERT(reps > 0 && reps <= 16);
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now_s();
        KS_TRY(drive_prefill(d, ids, n, next)); /* ends with the token on stage 0: synchronised */
        t[r] = bench_now_s() - t0;
    }
    qsort(t, reps, sizeof *t, cmp_double);
    *median_s = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    return KS_OK;
}

ks_status bench_time_decode(const bench_drive *d, int32_t next, int steps, double *ms) {
    for (int i = 0; i < 2; i++) KS_TRY(drive_decode(d, next, &next));
    double t0 = bench_now_s();
    for (int i = 0; i < steps; i++) KS_TRY(drive_decode(d, next, &next)); /* each ends synchronised */
    *ms = (bench_now_s() - t0) * 1e3 / steps;
    return drive_decode(d, next, &next);
}

ks_status bench_check_logits(ks_forward *f, float *logits) {
    KS_TRY(f->ops->logits_read(f->be, 1, logits));
    for (int i = 0; i < f->m->cfg.vocab; i++)
        if (!isfinite(logits[i]))
            return ks_fail(KS_ERR_DEVICE, "bench: logit %d of the decode step at position %d is %g (a broken kernel?)",
                           i, f->n_past - 1, logits[i]);
    return KS_OK;
}

static ks_status bench_length(const ks_model *m, const bench_opts *o, int L, int32_t *ids, float *logits,
                              length_result *r) {
    const int max_ctx = L + o->steps + 3;
    size_t free0, free1, free2;
    KS_TRY(ks_speed_device(NULL, 0, NULL, NULL, &free0));
    ks_forward f = {0};
    ks_forward_params fp = {.max_ctx = max_ctx, .max_new = o->steps + 3, .chunk = o->chunk, .cache = KS_CACHE_FULL};
    ks_status st;
    KS_TRY_GOTO(st, ks_speed_forward(&f, m, NULL, &fp, o->seed), done);
    KS_TRY_GOTO(st, ks_speed_device(NULL, 0, NULL, NULL, &free1), done);
    int32_t next;
    bench_drive d = {.f = &f};
    /* warm-up: one chunk builds the GEMM plans and sets the kernels' attributes */
    KS_TRY_GOTO(st, ks_forward_prefill(&f, ids, L < f.chunk ? L : f.chunk, NULL, &next), done);
    KS_TRY_GOTO(st, bench_time_prefill(&d, ids, L, bench_reps(o, L), &r->prefill_s, &next), done);
    KS_TRY_GOTO(st, bench_time_decode(&d, next, o->steps, &r->decode_ms), done);
    KS_TRY_GOTO(st, bench_check_logits(&f, logits), done);
    KS_TRY_GOTO(st, ks_speed_device(NULL, 0, NULL, NULL, &free2), done);
    r->length = L;
    r->peak_bytes = free0 > free2 ? free0 - free2 : 0;
    r->late_bytes = free1 > free2 ? free1 - free2 : 0;
    r->kv_bytes = kv_bytes(&m->cfg, 0, m->cfg.n_layers, max_ctx);
done:
    ks_forward_free(&f);
    return st;
}

static cJSON *by_length(const int *lengths, const double *values, int n) {
    cJSON *o = cJSON_CreateObject();
    char key[16];
    for (int i = 0; o && i < n; i++) {
        snprintf(key, sizeof key, "%d", lengths[i]);
        cJSON_AddNumberToObject(o, key, values[i]);
    }
    return o;
}

/* Per length, one array of n_stages values each: (field of r[i]) as doubles. */
static cJSON *by_length_stages(const length_result *r, int nl, int n_stages,
                               double (*get)(const length_result *, int)) {
    cJSON *o = cJSON_CreateObject();
    char key[16];
    for (int i = 0; o && i < nl; i++) {
        double v[KS_STAGE_MAX];
        for (int s = 0; s < n_stages; s++) v[s] = get(&r[i], s);
        snprintf(key, sizeof key, "%d", r[i].length);
        cJSON_AddItemToObject(o, key, cJSON_CreateDoubleArray(v, n_stages));
    }
    return o;
}

static double busy_of(const length_result *r, int s) { return r->busy_s[s]; }
static double idle_of(const length_result *r, int s) { return r->bubble.idle_s[s]; }
static double rank_bytes_of(const length_result *r, int s) { return (double)r->rank_bytes[s]; }

/* What a run measures besides the lengths: the shape, the stages, the attention kernel. */
typedef struct bench_run {
    const ks_model *m;     /* this rank's stage of the shape */
    const ks_stages *sg;   /* --gp_num */
    const bench_opts *o;
    const char *gpu;
} bench_run;

/* The pipeline's fields (--gp_num k > 1) into j. */
static void stages_json(cJSON *j, const bench_run *b, const length_result *r, int nl) {
    const int k = b->sg->layout.n_stages;
    double pre[MAX_LENGTHS], dec[MAX_LENGTHS], frac[MAX_LENGTHS];
    int len[MAX_LENGTHS];
    for (int i = 0; i < nl; i++)
        len[i] = r[i].length, pre[i] = r[i].prefill_bytes_per_token, dec[i] = r[i].decode_bytes_per_token,
        frac[i] = r[i].bubble.mean_idle_fraction;
    cJSON_AddNumberToObject(j, "gp_num", k);
    cJSON_AddItemToObject(j, "stage_first_layers", cJSON_CreateIntArray(b->sg->bounds, k + 1));
    cJSON_AddStringToObject(j, "residual_rows", b->sg->own_gpus ? "nccl" : "mpi host memory");
    cJSON_AddItemToObject(j, "busy_s", by_length_stages(r, nl, k, busy_of));
    cJSON_AddItemToObject(j, "idle_s", by_length_stages(r, nl, k, idle_of));
    cJSON_AddItemToObject(j, "mean_idle_fraction", by_length(len, frac, nl));
    cJSON_AddItemToObject(j, "prefill_bytes_per_token", by_length(len, pre, nl));
    cJSON_AddItemToObject(j, "decode_bytes_per_token", by_length(len, dec, nl));
    cJSON_AddItemToObject(j, "peak_bytes_per_rank", by_length_stages(r, nl, k, rank_bytes_of));
}

/* The block-sparse kernel beside the dense one (--sparse_densities): per attention length, the dense kernel's ms
 * in the same call and per density the sparse kernel's ms, the fraction of causal blocks kept, its TFLOP/s. */
typedef struct {
    double dense_ms, ms[MAX_DENSITIES], kept[MAX_DENSITIES], tflops[MAX_DENSITIES];
    double xattn_ms; /* XAttention's estimation of the same layer (ks_speed_xattn_estimate) */
    double flex_ms, flex_aware; /* FlexPrefill's (ks_speed_flex_estimate), its query-aware heads' fraction */
} sparse_row;
typedef struct {
    int block, nd;
    double dens[MAX_DENSITIES];
    sparse_row rows[MAX_LENGTHS];
} sparse_table;

/* {"block": B, "densities": [..], "<length>": {"dense_ms": x, "ms": [..], "kept": [..], "tflops": [..],
 * "xattn_estimation_ms": x, "flex_estimation_ms": x, "flex_query_aware": x}, ..}. */
static cJSON *sparse_json(const sparse_table *sp, const int *alen, int na) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "block", sp->block);
    cJSON_AddItemToObject(o, "densities", cJSON_CreateDoubleArray(sp->dens, sp->nd));
    char key[16];
    for (int i = 0; i < na; i++) {
        const sparse_row *r = &sp->rows[i];
        cJSON *l = cJSON_CreateObject();
        cJSON_AddNumberToObject(l, "dense_ms", r->dense_ms);
        cJSON_AddItemToObject(l, "ms", cJSON_CreateDoubleArray(r->ms, sp->nd));
        cJSON_AddItemToObject(l, "kept", cJSON_CreateDoubleArray(r->kept, sp->nd));
        cJSON_AddItemToObject(l, "tflops", cJSON_CreateDoubleArray(r->tflops, sp->nd));
        cJSON_AddNumberToObject(l, "xattn_estimation_ms", r->xattn_ms);
        cJSON_AddNumberToObject(l, "flex_estimation_ms", r->flex_ms);
        cJSON_AddNumberToObject(l, "flex_query_aware", r->flex_aware);
        snprintf(key, sizeof key, "%d", alen[i]);
        cJSON_AddItemToObject(o, key, l);
    }
    return o;
}

static ks_status write_json(const char *path, const bench_run *b, const length_result *r, int nl,
                            const int *alen, const double *tflops, int na, const sparse_table *sp) {
    const ks_model_config *c = &b->m->cfg;
    int len[MAX_LENGTHS];
    double pre[MAX_LENGTHS], dec[MAX_LENGTHS], peak[MAX_LENGTHS], kv[MAX_LENGTHS];
    for (int i = 0; i < nl; i++)
        len[i] = r[i].length, pre[i] = r[i].prefill_s, dec[i] = r[i].decode_ms, peak[i] = (double)r[i].peak_bytes,
        kv[i] = (double)r[i].kv_bytes;
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tool", "kvscope bench");
    cJSON_AddStringToObject(j, "gpu", b->gpu);
    cJSON_AddStringToObject(j, "date", date);
    cJSON_AddStringToObject(j, "model", b->m->source);
    cJSON_AddNumberToObject(j, "chunk", b->o->chunk);
    cJSON_AddNumberToObject(j, "decode_steps", b->o->steps);
    cJSON_AddItemToObject(j, "lengths", cJSON_CreateIntArray(len, nl));
    cJSON_AddNumberToObject(j, "weight_bytes", (double)bench_weight_bytes(c, 0, c->n_layers));
    cJSON_AddItemToObject(j, "prefill_s", by_length(len, pre, nl));
    cJSON_AddItemToObject(j, "decode_ms", by_length(len, dec, nl));
    cJSON_AddItemToObject(j, "peak_bytes", by_length(len, peak, nl));
    cJSON_AddItemToObject(j, "kv_bytes", by_length(len, kv, nl));
    cJSON_AddItemToObject(j, "attention_tflops", by_length(alen, tflops, na));
    if (sp->nd) cJSON_AddItemToObject(j, "sparse_attention", sparse_json(sp, alen, na));
    if (b->sg->layout.n_stages > 1) stages_json(j, b, r, nl);
    return bench_write_json(path, j);
}

/* ---- the command ------------------------------------------------------------------------------------------ */

/* The options, parsed and checked. */
typedef struct bench_args {
    const char *config, *out, *gp_num;
    int lengths[MAX_LENGTHS], alen[MAX_LENGTHS], nl, na, longest;
    int sparse_block, nd;
    double dens[MAX_DENSITIES];
    bench_opts o;
    method_spec specs[MAX_METHODS];
    int n_specs;
    ks_gp_num gp;
    ks_opt_strings device_words;
    float stage_timeout;
} bench_args;

/* Everything one run holds; freed by job_free. */
typedef struct bench_job {
    ks_stage_devices dev;
    ks_stages sg;
    ks_model m;            /* the shape; its layer range this rank's stage */
    char gpu[256];
    int32_t *ids;          /* (longest) a random prompt */
    float *logits;         /* (vocab) */
} bench_job;

/* --gp_num: k ranks (GPUs) for the one instance measured; 1/k (instances sharing a GPU) is eval's only. */
static ks_status parse_gp_num(bench_args *a) {
    KS_TRY(ks_gp_num_parse(a->gp_num, &a->gp));
    if (a->gp.per_gpu > 1)
        return ks_fail(KS_ERR_ARG, "--gp_num %s: kvscope bench measures one model instance; use --gp_num k to split "
                                   "it over k GPUs (mpirun -np k)", a->gp_num);
    if (a->gp.stages > 1 && a->n_specs)
        return ks_fail(KS_ERR_UNSUPPORTED, "--acceleration with --gp_num %d: the KV methods are measured on one GPU "
                                           "(--gp_num 1)", a->gp.stages);
    return KS_OK;
}


/* -np must be --gp_num's k: the job is the one instance measured. Said by rank 0; the others learn it from
 * ks_mpi_agree. */
static ks_status check_ranks(const bench_args *a, const ks_mpi *mpi) {
    const int k = a->gp.stages;
    if (mpi->size == k || mpi->rank != 0) return KS_OK;
    return ks_fail(KS_ERR_ARG, "--gp_num %d with %d rank%s (mpirun -np %d): kvscope bench measures one model "
                               "instance, one rank per stage; start it as mpirun -np %d kvscope bench --gp_num %d",
                   k, mpi->size, mpi->size == 1 ? "" : "s", mpi->size, k, k);
}

/* The GPUs: kvscope bench measures one; a build without the cuda backend, a machine without a GPU and
 * --device cpu say so. */
static ks_status bench_device(bench_job *j, const bench_args *a) {
    int n;
    KS_TRY(ks_speed_gpu_count(&n));
    if (n == 0)
        return ks_fail(KS_ERR_DEVICE, "kvscope bench measures the GPU, but this machine has no usable GPU (check the "
                                      "driver and CUDA_VISIBLE_DEVICES)");
    KS_TRY(ks_stage_devices_parse(&a->device_words, &j->dev));
    if (strcmp(j->dev.device, "cuda"))
        return ks_fail(KS_ERR_ARG, "--device %s: kvscope bench measures the GPU (--device cuda or GPU indices)",
                       j->dev.device);
    return KS_OK;
}

/* Step 1, cheap, every rank: the GPUs, the shape, this rank's stage and its layers, a random prompt. */
static ks_status job_open(bench_job *j, const bench_args *a, const ks_mpi *mpi) {
    KS_TRY(bench_device(j, a));
    KS_TRY(ks_speed_model_init(&j->m, a->config));
    KS_TRY(ks_stages_layout(&j->sg, a->gp_num, mpi, &j->m.cfg, j->m.source));
    j->m.first_layer = j->sg.first_layer, j->m.last_layer = j->sg.last_layer;
    const ks_model_config *c = &j->m.cfg;
    j->ids = ks_malloc(sizeof(int32_t) * a->longest, "prompt ids");
    j->logits = ks_malloc(sizeof(float) * c->vocab, "logits");
    if (!j->ids || !j->logits) return KS_ERR_NOMEM;
    uint64_t s = a->o.seed * 0x9e3779b97f4a7c15ull + 1; /* xorshift64: a random prompt */
    for (int i = 0; i < a->longest; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        j->ids[i] = (int32_t)(s % (uint64_t)c->vocab);
    }
    return KS_OK;
}

/* This rank's weights and its KV cache at the longest length against its GPU's memory: a shape that cannot fit
 * says so, in bytes, before anything is allocated. */
static ks_status check_fits(const bench_job *j, const bench_args *a, size_t total) {
    const ks_model_config *c = &j->m.cfg;
    const int rows = a->longest + a->o.steps + 3, k = j->sg.layout.n_stages;
    const int first = j->m.first_layer, last = j->m.last_layer;
    const size_t w = bench_weight_bytes(c, first, last), kv = kv_bytes(c, first, last, rows);
    if (w + kv <= total) return KS_OK;
    const double all = (double)(bench_weight_bytes(c, 0, c->n_layers) + kv_bytes(c, 0, c->n_layers, rows));
    int need = (int)ceil(all / (0.9 * (double)total));
    need = need > k ? need : k + 1;
    if (k == 1)
        return ks_fail(KS_ERR_NOMEM, "%s does not fit one GPU: its bf16 weights (%.1f GiB) and the KV cache of %d "
                                     "tokens (--lengths %d: %.1f GiB) need %.1f GiB, more than the GPU's %.1f GiB; "
                                     "split its layers over GPUs: mpirun -np %d kvscope bench --gp_num %d (or "
                                     "shorter --lengths)", j->m.source, bench_gib(w), rows, a->longest, bench_gib(kv),
                       bench_gib(w + kv), bench_gib(total), need, need);
    return ks_fail(KS_ERR_NOMEM, "%s, stage %d of %d (layers [%d, %d)): its bf16 weights (%.1f GiB) and the KV "
                                 "cache of %d tokens (--lengths %d: %.1f GiB) need %.1f GiB, more than its GPU's "
                                 "%.1f GiB; use more stages (mpirun -np %d kvscope bench --gp_num %d) or shorter "
                                 "--lengths", j->m.source, j->sg.layout.stage, k, first, last, bench_gib(w), rows,
                   a->longest, bench_gib(kv), bench_gib(w + kv), bench_gib(total), need, need);
}

/* Step 3, every rank: its GPU, the prefill chunk (stage 0's: every stage must plan the same chunks), whether
 * its part fits. */
static ks_status job_gpu(bench_job *j, bench_opts *o, const bench_args *a, const ks_mpi *mpi) {
    KS_TRY(ks_stages_gpu(&j->sg, &j->dev, mpi));
    size_t total;
    int sms;
    KS_TRY(ks_speed_device(j->gpu, sizeof j->gpu, &sms, &total, NULL));
    /* 64 tokens per SM: with Llama's 32 heads the attention kernel's 128-row blocks (and 128-row GEMM tiles)
     * come in whole waves over the multiprocessors (8448 on an H100/H200: 16 waves of 132 blocks) */
    o->chunk_auto = o->chunk == 0;
    if (o->chunk == 0) o->chunk = 64 * sms;
    KS_TRY(ks_stage_link_bcast(&j->sg.link, 0, &o->chunk, sizeof o->chunk));
    KS_TRY(check_fits(j, a, total));
    if (j->sg.layout.n_stages > 1)
        ks_log_info("stage %d of %d: layers [%d, %d) on %s", j->sg.layout.stage, j->sg.layout.n_stages,
                    j->m.first_layer, j->m.last_layer, j->gpu);
    return KS_OK;
}

static void job_free(bench_job *j) {
    free(j->ids);
    free(j->logits);
    ks_model_free(&j->m);
    ks_stages_free(&j->sg);
}

/* The block-sparse kernel at each --sparse_densities beside the dense kernel, per attention length; then each
 * sparse method's estimation of one layer at that length against the dense kernel (XAttention's chunk by chunk,
 * FlexPrefill's of the whole prompt with its choice on the host). */
static ks_status sparse_attention_table(const ks_model_config *c, const bench_args *a, int chunk, sparse_table *sp) {
    sp->block = a->sparse_block, sp->nd = a->nd;
    memcpy(sp->dens, a->dens, sizeof(double) * a->nd);
    printf("\n| sparse attention kernel, causal, %d/%d heads x %d, blocks of %d | density | blocks kept | ms "
           "| dense ms | speedup | TFLOP/s (computed blocks) |\n|---|---|---|---|---|---|---|\n",
           c->n_heads, c->n_kv_heads, c->head_dim, a->sparse_block);
    for (int i = 0; i < a->na; i++) {
        sparse_row *r = &sp->rows[i];
        KS_TRY(ks_speed_attention_sparse(a->alen[i], c->n_heads, c->n_kv_heads, c->head_dim, a->sparse_block, a->dens,
                                         a->nd, 5, a->o.seed, &r->dense_ms, r->ms, r->kept, r->tflops));
        for (int k = 0; k < a->nd; k++)
            printf("| %dK | %g | %.3f | %.3f | %.3f | %.2fx | %.0f |\n", a->alen[i] / 1024, a->dens[k], r->kept[k],
                   r->ms[k], r->dense_ms, r->dense_ms / r->ms[k], r->tflops[k]);
        fflush(stdout);
    }
    printf("\n| estimation of one layer, prefill chunks of %d | method | ms | dense attention ms | share |\n"
           "|---|---|---|---|---|\n", chunk);
    for (int i = 0; i < a->na; i++) {
        sparse_row *r = &sp->rows[i];
        KS_TRY(ks_speed_xattn_estimate(a->alen[i], c->n_heads, c->n_kv_heads, c->head_dim, chunk, 3, &r->xattn_ms));
        printf("| %dK | XAttention (stride 16, threshold 0.9) | %.3f | %.3f | %.1f%% |\n", a->alen[i] / 1024,
               r->xattn_ms, r->dense_ms, 100.0 * r->xattn_ms / r->dense_ms);
        KS_TRY(ks_speed_flex_estimate(a->alen[i], c->n_heads, c->n_kv_heads, c->head_dim, 3, &r->flex_ms,
                                      &r->flex_aware));
        printf("| %dK | FlexPrefill (gamma 0.9, tau 0.1: %.0f%% query-aware heads) | %.3f | %.3f | %.1f%% |\n",
               a->alen[i] / 1024, 100.0 * r->flex_aware, r->flex_ms, r->dense_ms, 100.0 * r->flex_ms / r->dense_ms);
        fflush(stdout);
    }
    return KS_OK;
}

/* The prefill attention kernel alone, rank 0's GPU; the sparse one beside it when --sparse_densities asks. */
static ks_status attention_table(const ks_model_config *c, const bench_args *a, int chunk, double *tflops,
                                 sparse_table *sp) {
    printf("\n| attention kernel, causal, %d/%d heads x %d | TFLOP/s |\n|---|---|\n", c->n_heads, c->n_kv_heads,
           c->head_dim);
    for (int i = 0; i < a->na; i++) {
        KS_TRY(ks_speed_attention_tflops(a->alen[i], c->n_heads, c->n_kv_heads, c->head_dim, 5, &tflops[i]));
        printf("| %dK | %.0f |\n", a->alen[i] / 1024, tflops[i]);
    }
    sp->nd = 0;
    return a->nd ? sparse_attention_table(c, a, chunk, sp) : KS_OK;
}

/* One rank, no --acceleration: the table per length, the attention kernel, the JSON. */
static ks_status bench_single(bench_job *j, const bench_opts *o, const bench_args *a) {
    const ks_model_config *c = &j->m.cfg;
    size_t total;
    KS_TRY(ks_speed_device(NULL, 0, NULL, &total, NULL));
    ks_log_info("bench: %s on %s (%.0f GiB), %d layers, hidden %d, heads %d/%d x %d, prefill chunk %d",
                j->m.source, j->gpu, bench_gib(total), c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim,
                o->chunk);
    printf("| context | prefill (s) | prefill (tok/s) | decode (ms/tok) | peak (GiB) | budget: weights + KV + 4 GiB |"
           " allocated after init |\n|---|---|---|---|---|---|---|\n");
    const size_t wbytes = bench_weight_bytes(c, 0, c->n_layers);
    length_result res[MAX_LENGTHS];
    for (int i = 0; i < a->nl; i++) {
        memset(&res[i], 0, sizeof res[i]);
        KS_TRY(bench_length(&j->m, o, a->lengths[i], j->ids, j->logits, &res[i]));
        const length_result *r = &res[i];
        double budget = bench_gib(wbytes + r->kv_bytes) + 4.0;
        printf("| %dK | %.3f | %.0f | %.2f | %.1f | %.1f %s | %.0f MiB |\n", r->length / 1024, r->prefill_s,
               r->length / r->prefill_s, r->decode_ms, bench_gib(r->peak_bytes), budget,
               bench_gib(r->peak_bytes) <= budget ? "ok" : "OVER", (double)r->late_bytes / (1 << 20));
        fflush(stdout);
    }
    double tflops[MAX_LENGTHS];
    sparse_table sp;
    KS_TRY(attention_table(c, a, o->chunk, tflops, &sp));
    bench_run b = {.m = &j->m, .sg = &j->sg, .o = o, .gpu = j->gpu};
    return a->out ? write_json(a->out, &b, res, a->nl, a->alen, tflops, a->na, &sp) : KS_OK;
}

/* "v0 / v1 / ..." of n values into buf. */
static const char *per_stage(char *buf, size_t cap, const double *v, int n, double scale) {
    size_t at = 0;
    buf[0] = '\0';
    for (int s = 0; s < n && at < cap; s++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%.*f", s ? " / " : "", scale == 1.0 ? 3 : 1, v[s] * scale);
    return buf;
}

static void stages_row(const length_result *r, int k) {
    char busy[256], idle[256], mem[256];
    double bytes[KS_STAGE_MAX];
    for (int s = 0; s < k; s++) bytes[s] = (double)r->rank_bytes[s];
    printf("| %dK | %.3f | %.0f | %.2f | %s | %s | %.1f%% | %.0f / %.0f | %s |\n", r->length / 1024, r->prefill_s,
           r->length / r->prefill_s, r->decode_ms, per_stage(busy, sizeof busy, r->busy_s, k, 1.0),
           per_stage(idle, sizeof idle, r->bubble.idle_s, k, 1.0), 100.0 * r->bubble.mean_idle_fraction,
           r->prefill_bytes_per_token, r->decode_bytes_per_token,
           per_stage(mem, sizeof mem, bytes, k, 1.0 / (1024.0 * 1024.0 * 1024.0)));
    fflush(stdout);
}

/* --gp_num k > 1, every rank: the lengths through the pipeline (bench_stages.c), rank 0 printing. */
static ks_status bench_pipeline(bench_job *j, const bench_opts *o, const bench_args *a, const ks_mpi *mpi) {
    const ks_model_config *c = &j->m.cfg;
    const int k = j->sg.layout.n_stages, lead = j->sg.layout.stage == 0;
    if (lead) {
        ks_log_info("bench: %s pipelined over %d stages, %d layers, hidden %d, heads %d/%d x %d, prefill chunk %d",
                    j->m.source, k, c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, o->chunk);
        printf("| context | prefill (s) | prefill (tok/s) | decode (ms/tok) | busy per stage (s) | idle per stage "
               "(s) | mean idle | bytes sent per token: prefill / decode | device memory per rank (GiB) |\n"
               "|---|---|---|---|---|---|---|---|---|\n");
    }
    length_result res[MAX_LENGTHS];
    for (int i = 0; i < a->nl; i++) {
        ks_status st = bench_stage_length(&j->m, &j->sg, o, a->lengths[i], j->ids, j->logits, &res[i]);
        if (st != KS_OK) { /* the other stages may wait for this one: end the job */
            if (!ks_error_is_reported()) ks_log_error_now();
            ks_mpi_abort(mpi, 1);
        }
        res[i].kv_bytes = kv_bytes(c, 0, c->n_layers, a->lengths[i] + o->steps + 3);
        if (lead) stages_row(&res[i], k);
    }
    if (!lead) return KS_OK;
    double tflops[MAX_LENGTHS];
    sparse_table sp;
    KS_TRY(attention_table(c, a, o->chunk, tflops, &sp));
    bench_run b = {.m = &j->m, .sg = &j->sg, .o = o, .gpu = j->gpu};
    return a->out ? write_json(a->out, &b, res, a->nl, a->alen, tflops, a->na, &sp) : KS_OK;
}

/* The run, once MPI is up: each set-up step ends in ks_mpi_agree, so a failure on any rank ends every rank. */
static ks_status bench_main(const bench_args *a, const ks_mpi *mpi) {
    bench_job j = {0};
    bench_opts o = a->o;
    ks_status st = ks_mpi_agree(mpi, check_ranks(a, mpi));
    if (st == KS_OK) st = ks_mpi_agree(mpi, job_open(&j, a, mpi));
    if (st == KS_OK) st = ks_stages_link(&j.sg, mpi, a->stage_timeout);
    if (st == KS_OK) st = ks_mpi_agree(mpi, job_gpu(&j, &o, a, mpi));
    if (st == KS_OK) st = ks_mpi_agree(mpi, ks_stages_transport(&j.sg, &j.dev));
    if (st == KS_OK && j.sg.layout.n_stages > 1) st = bench_pipeline(&j, &o, a, mpi);
    else if (st == KS_OK && a->n_specs) {
        ks_log_info("bench: %s on %s, %d KV method(s) against FullKV, prefill chunk %d", j.m.source, j.gpu,
                    a->n_specs, o.chunk);
        st = bench_methods(&j.m, &o, a->lengths, a->nl, j.ids, j.logits, a->specs, a->n_specs, j.gpu, a->out);
    } else if (st == KS_OK) {
        st = bench_single(&j, &o, a);
    }
    job_free(&j);
    return st;
}

static const char *const bench_summary =
    "GPU speed of a random-weight model: prefill, decode, peak memory, attention kernel.\n"
    "A whole benchmark config timed through kvscope eval's run on it: kvscope bench --sweep CFG --tokenizer P\n"
    "(kvscope bench --sweep CFG --help lists its options).\n"
    "CPU speed of a checkpoint: kvscope bench --device cpu --model F.gguf [--threads N] (prefill, decode tok/s).\n"
    "One model instance over k GPUs (each rank a pipeline stage holding a range of layers, the split `kvscope eval\n"
    "--gp_num k` uses), for a shape that does not fit one GPU:\n"
    "  mpirun -np 2 kvscope bench --config configs/models/llama-3.1-70b.json --gp_num 2 --lengths 4096,32768\n"
    "adds per length each stage's busy time (its layers alone) and idle time against the pipelined prefill, the\n"
    "residual-row bytes sent between stages per token and the device memory of every rank. Ranks of a node take its\n"
    "GPUs in turn (--device 0 0: two ranks share GPU 0, their rows then go through host memory). --acceleration\n"
    "needs --gp_num 1.";

ks_status ks_cmd_bench(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--sweep") || !strncmp(argv[i], "--sweep=", 8)) return bench_sweep(argc, argv);
    const char *lengths_s = NULL, *alen_s = "4096,16384,32768", *dens_s = NULL, *model = NULL, *cpu_weights = "packed";
    int sparse_block = 128;
    int steps = 0, chunk = 0, repeat = 3, seed = 1, threads = 0;
    ks_opt_strings accel = {0}, method_opts = {0};
    bench_args a = {.gp_num = "1", .stage_timeout = 600};
    const ks_option opts[] = {
        {"config", KS_OPT_STRING, &a.config, "F",
         "HF config.json of the model shape (default: Llama-3.1-8B; configs/models/*.json)", 0},
        {"lengths", KS_OPT_STRING, &lengths_s, "L,..",
         "context lengths in tokens (default: 4096,16384,32768,65536,131072; --device cpu: 512)", 0},
        {"decode_steps", KS_OPT_INT, &steps, "N", "timed decode steps per length (default 32; --device cpu: 128)", 0},
        {"chunk", KS_OPT_INT, &chunk, "N",
         "prefill chunk in tokens (0: 64 x the GPU's multiprocessors; the whole prompt for a method that needs it in "
         "one chunk, as in kvscope eval)", 0},
        {"repeat", KS_OPT_INT, &repeat, "N", "prefill runs per length up to 32K (median); 1 beyond", 0},
        {"attention_lengths", KS_OPT_STRING, &alen_s, "L,..", "lengths for the attention kernel alone", 0},
        {"sparse_densities", KS_OPT_STRING, &dens_s, "D,..",
         "also the block-sparse prefill kernel at these fractions of key blocks (random lists, column 0 and the "
         "diagonal always) beside the dense one, at the attention lengths",
         0},
        {"sparse_block", KS_OPT_INT, &sparse_block, "N", "block size of --sparse_densities' lists: 64 or 128", 0},
        {"seed", KS_OPT_INT, &seed, "N", "seed of the random weights, prompt and sparse block lists", 0},
        {"out", KS_OPT_STRING, &a.out, "F", "write the results as JSON here", 0},
        {"acceleration", KS_OPT_STRINGS, &accel, "NAME[:K=V..]",
         "a KV method to measure against FullKV (its own options after ':'; one GPU only)", 0},
        {"method_opt", KS_OPT_STRINGS, &method_opts, "KEY=VALUE", "a knob for every --acceleration method", 0},
        {"gp_num", KS_OPT_STRING, &a.gp_num, "K",
         "GPUs (ranks, mpirun -np K) the one model instance is pipelined over, each a stage holding a range of layers",
         0},
        {"device", KS_OPT_WORDS, &a.device_words, "D",
         "cuda (every GPU of a node) or GPU indices a node's ranks use in order (--device 0 0: two on GPU 0)", 0},
        {"stage_timeout", KS_OPT_FLOAT, &a.stage_timeout, "S",
         "seconds a pipeline stage waits for another before the job ends with an error naming it", 0},
        {"model", KS_OPT_STRING, &model, "F", "--device cpu: the checkpoint to measure (.gguf file or HF directory)", 0},
        {"threads", KS_OPT_INT, &threads, "N", "--device cpu: threads (0 = the physical cores)", 0},
        {"cpu_weights", KS_OPT_STRING, &cpu_weights, "packed|f32",
         "--device cpu: GGUF weights in their quantized blocks (int8 products) or dequantized to fp32", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "bench", bench_summary, &help));
    if (help) return KS_OK;
    const int cpu = a.device_words.n == 1 && !strcmp(a.device_words.v[0], "cpu");
    if (!lengths_s) lengths_s = cpu ? "512" : "4096,16384,32768,65536,131072";
    if (!steps) steps = cpu ? 128 : 32;
    if (steps < 1) return ks_fail(KS_ERR_ARG, "--decode_steps %d: must be at least 1", steps);
    if (threads < 0) return ks_fail(KS_ERR_ARG, "--threads %d: must be 0 (the physical cores) or more", threads);
    if (!cpu && model)
        return ks_fail(KS_ERR_ARG, "--model: kvscope bench measures a checkpoint on --device cpu; the GPU bench takes a "
                                   "shape (--config) with random weights");
    if (chunk < 0) return ks_fail(KS_ERR_ARG, "--chunk %d: must be 0 (automatic) or more", chunk);
    if (repeat < 1 || repeat > 16) return ks_fail(KS_ERR_ARG, "--repeat %d: must be 1 to 16", repeat);
    if (!(a.stage_timeout > 0))
        return ks_fail(KS_ERR_ARG, "--stage_timeout %g: must be a positive number of seconds",
                       (double)a.stage_timeout);
    KS_TRY(bench_parse_lengths(lengths_s, "lengths", a.lengths, &a.nl));
    KS_TRY(bench_parse_lengths(alen_s, "attention_lengths", a.alen, &a.na));
    if (dens_s) KS_TRY(parse_densities(dens_s, a.dens, &a.nd));
    if (sparse_block != 64 && sparse_block != 128)
        return ks_fail(KS_ERR_ARG, "--sparse_block %d: must be 64 or 128", sparse_block);
    a.sparse_block = sparse_block;
    for (int i = 0; i < a.nl; i++) a.longest = a.lengths[i] > a.longest ? a.lengths[i] : a.longest;
    if (method_opts.n && !accel.n) return ks_fail(KS_ERR_ARG, "--method_opt needs an --acceleration method");
    if (a.nd && accel.n)
        return ks_fail(KS_ERR_ARG, "--sparse_densities times the attention kernel alone: it does not go with "
                                   "--acceleration (which measures methods, not the kernel)");
    if (accel.n > MAX_METHODS) return ks_fail(KS_ERR_ARG, "--acceleration: at most %d methods", MAX_METHODS);
    for (int i = 0; i < accel.n; i++) KS_TRY(bench_parse_method(accel.v[i], &method_opts, &a.specs[i]));
    a.n_specs = accel.n;
    KS_TRY(parse_gp_num(&a));
    a.o = (bench_opts){.chunk = chunk, .steps = steps, .repeat = repeat, .seed = (uint64_t)seed};
    if (cpu) {
        bench_cpu_args ca = {.model = model, .threads = threads, .lengths = a.lengths, .nl = a.nl, .o = &a.o,
                             .out = a.out};
        KS_TRY(ks_cpu_weights_parse(cpu_weights, "--cpu_weights", &ca.weights));
        return bench_cpu(&ca);
    }
    ks_mpi mpi = {0};
    KS_TRY(ks_mpi_init(&mpi, &argc, &argv));
    ks_status st = bench_main(&a, &mpi);
    ks_mpi_finalize(&mpi);
    return st;
}
