/* cmd_eval.c — `kvscope eval`: a benchmark config through a model and a method, a batch of samples at a time per
 * rank (--batch: prompts prefilled one at a time, decode steps shared), results appended to an HDF5 file that
 * resumes, and the score table at the end.
 *
 * Every rank parses the same options, loads the model and builds the same sample id list; rank 0 opens the
 * result file, skips the samples it already holds, and hands ids out longest first (mpi/dispatch.h), a rank
 * holding one per free slot of its batch; rank 0 computes too. Without mpirun this is the same program with one
 * rank. */
#include <stdatomic.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/stages.h"
#include "core/log.h"
#include "dispatch.h"
#include "ks_mpi.h"
#include "methods/method.h"
#include "results/report.h"
#include "results/results.h"
#include "backend/backend.h"
#include "runner/runner.h"
#include "speed/speed_model.h"
#include "cli/eval_impl.h"


/* What rank 0's store callback needs. */
typedef struct eval_store {
    ks_results *res;
    int total;        /* samples in this run, done ones included */
    int already;      /* done before this run started */
    double score_sum; /* over samples finished in this run */
    double t0;
    double prefill_s, decode_s; /* sums over samples finished in this run */
    int batch;        /* rank 0's slots */
    atomic_int busy;  /* rank 0's slots holding samples (its compute thread writes, the store reads) */
} eval_store;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ks_status store_result(void *ctx, int id, const ks_result *r, const ks_queue *q) {
    (void)id;
    eval_store *e = ctx;
    KS_TRY(ks_results_append(e->res, r));
    e->score_sum += r->score;
    e->prefill_s += r->prefill_s;
    e->decode_s += r->decode_s;
    int fresh = q->n_done, done = e->already + fresh;
    double el = now_s() - e->t0, rate = fresh / (el > 0 ? el : 1e-9);
    double eta = rate > 0 ? (e->total - done) / rate : 0;
    ks_log_info("%d/%d samples  %.3f samples/s  batch %d (%d busy on rank 0)  ETA %.0f s  running score %.2f  "
                "(last: %s/%d/%d %.1f)", done, e->total, rate, e->batch, atomic_load(&e->busy), eta,
                e->score_sum / fresh, r->task, r->length, r->index, r->score);
    return KS_OK;
}

/* "name" of a model path: the last component without a trailing '/' or ".gguf". */
static void model_name(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t len = n - b;
    if (len > 5 && !strncmp(path + n - 5, ".gguf", 5)) len -= 5;
    snprintf(out, cap, "%.*s", (int)len, path + b);
}

/* The identity of a result file: everything that changes what a sample's row would hold. --limit, the device
 * layout and --output are not part of it (a rerun with a larger limit adds to the same file). */
static char *identity_text(const eval_opts *o, const ks_bench_config *bc, const char *model, const char *method,
                           const char *method_yaml) {
    const char *fmt = "model: %s\nacceleration: %s\ntorch_dtype: %s\ncpu_weights: %s\ntemplate_override: %s\n"
                      "max_new_tokens_cap: %d\nmethod_options:\n%s---\n%s";
    const char *tmpl = o->template_name ? o->template_name : "null";
    int n = snprintf(NULL, 0, fmt, model, method, o->torch_dtype, o->cpu_weights, tmpl, o->max_new_tokens, method_yaml,
                     bc->yaml_text);
    char *s = ks_malloc((size_t)n + 1, "result identity");
    if (s)
        snprintf(s, (size_t)n + 1, fmt, model, method, o->torch_dtype, o->cpu_weights, tmpl, o->max_new_tokens,
                 method_yaml,
                 bc->yaml_text);
    return s;
}

static char *command_line(int argc, char **argv) {
    size_t n = strlen("kvscope") + 1;
    for (int i = 0; i < argc; i++) n += strlen(argv[i]) + 1;
    char *s = ks_malloc(n, "command line");
    if (!s) return NULL;
    strcpy(s, "kvscope");
    for (int i = 0; i < argc; i++) strcat(strcat(s, " "), argv[i]);
    return s;
}

/* LOOM's rule: --template overrides the config's template and its no_template_tasks ("none" = no template).
 * Applied to the config before the benchmark opens, so RULER sizes prompts for the template they get. */
static ks_status apply_template_override(ks_bench_config *bc, const char *name) {
    if (!name) return KS_OK;
    char *t = strcmp(name, "none") ? strdup(name) : NULL;
    if (strcmp(name, "none") && !t) return ks_fail(KS_ERR_NOMEM, "out of memory");
    free(bc->template_name);
    bc->template_name = t;
    bc->no_template_all = 0;
    for (int i = 0; i < bc->n_no_template; i++) free(bc->no_template_tasks[i]);
    free(bc->no_template_tasks);
    bc->no_template_tasks = NULL;
    bc->n_no_template = 0;
    return KS_OK;
}

/* The chat template a sample gets, NULL = none. */
static const char *sample_template(const ks_bench_config *bc, const ks_sample *s) {
    return ks_bench_config_use_template(bc, s->task, s->length) ? bc->template_name : NULL;
}

static ks_status check_opts(const eval_opts *o) {
    if (!(o->stage_timeout > 0))
        return ks_fail(KS_ERR_ARG, "--stage_timeout %g: must be a positive number of seconds",
                       (double)o->stage_timeout);
    /* LOOM-Scope's flag. kvscope's backends have one compute type each: bf16 weights and KV cache on GPUs, fp32
     * on CPUs; a dtype the chosen backend does not compute in is refused rather than silently ignored. */
    const char *dt = !strncmp(o->torch_dtype, "torch.", 6) ? o->torch_dtype + 6 : o->torch_dtype;
    int gpu = !strcmp(o->dev.device, "cuda");
    if (strcmp(dt, "bfloat16") && strcmp(dt, "float16") && strcmp(dt, "float32"))
        return ks_fail(KS_ERR_ARG, "--torch_dtype %s: use bfloat16, float16 or float32 (torch. prefix allowed)",
                       o->torch_dtype);
    if (gpu && strcmp(dt, "bfloat16"))
        return ks_fail(KS_ERR_UNSUPPORTED, "--torch_dtype %s: the cuda backend computes in bfloat16 only",
                       o->torch_dtype);
    if (!gpu && !strcmp(dt, "float16"))
        return ks_fail(KS_ERR_UNSUPPORTED, "--torch_dtype %s: the cpu backend computes in float32 (bfloat16, the "
                                           "default, is accepted too); float16 is not supported", o->torch_dtype);
    if (o->max_new_tokens < 0) return ks_fail(KS_ERR_ARG, "--max_new_tokens %d: must be 0 or more", o->max_new_tokens);
    if (o->chunk < 0) return ks_fail(KS_ERR_ARG, "--chunk %d: must be at least 1 (0: the default)", o->chunk);
    return KS_OK;
}

/* The longest context any sample of this config needs: the longest target length (RULER, whose samples are
 * built to their length) or else the truncation length (LongBench), plus room for the chat template and the
 * answer. It sizes every batch slot's cache, so a RULER run at 4K takes 4K slots whatever max_length says. */
static int config_max_ctx(const ks_bench_config *bc) {
    int m = bc->kind == KS_BENCH_RULER ? 0 : bc->max_length;
    for (int i = 0; i < bc->n_lengths; i++) m = bc->lengths[i] > m ? bc->lengths[i] : m;
    return m + 1024;
}

/* Everything one evaluation holds; freed by eval_free. */
typedef struct eval_job {
    ks_method **methods; /* (n_methods) one per batch slot; methods[0] names the run */
    int n_methods;
    ks_method *method;   /* methods[0] */
    char *method_yaml;
    ks_bench_config bc;
    ks_runner run;
    ks_bench *bench;
    ks_sample_id *ids;
    int n;
    char name[256], path[4096];
    ks_results *res; /* rank 0 */
    ks_queue q;      /* rank 0 */
    eval_store es;   /* rank 0 */
    ks_forward_cache cache; /* --kv_cache */
    ks_cpu_weights cpu_weights; /* --cpu_weights */
    ks_stages stages;       /* --gp_num: this rank's instance, stage, layers, GPU and link (cli/stages.h) */
    ks_model shape;         /* random_weights: the config's shape, no host weights (speed/speed_model.h) */
    double loop_s;          /* rank 0: wall seconds of the sample loop */
} eval_job;

/* The instance layout for --gp_num and this stage's layers from the model's config, on every rank before any
 * model loads. */
static ks_status eval_layout(eval_job *j, const eval_opts *o, const ks_mpi *mpi) {
    if (o->random_weights) {
        KS_TRY(ks_speed_model_init(&j->shape, o->shape_config));
        return ks_stages_layout(&j->stages, o->gp_num, mpi, &j->shape.cfg, j->shape.source);
    }
    ks_model_config cfg;
    ks_tensor_index ix;
    KS_TRY(ks_model_open_index(o->model_path, &cfg, &ix, NULL));
    ks_tensor_index_free(&ix);
    return ks_stages_layout(&j->stages, o->gp_num, mpi, &cfg, o->model_path);
}

/* The random-weight model's name in result files: "random-" and its config's (model_name rules), or the built-in
 * shape's. */
static void shape_name(const eval_opts *o, char *out, size_t cap) {
    char base[200];
    model_name(o->shape_config ? o->shape_config : "Llama-3.1-8B", base, sizeof base);
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".json")) base[n - 5] = '\0';
    snprintf(out, cap, "random-%s", base);
}

/* --lengths of kvscope bench --sweep: the RULER target lengths run, in place of the config's. */
static ks_status override_lengths(ks_bench_config *bc, const int *lengths, int n) {
    if (!lengths) return KS_OK;
    int *l = ks_malloc(sizeof *l * (size_t)n, "benchmark lengths");
    if (!l) return KS_ERR_NOMEM;
    memcpy(l, lengths, sizeof *l * (size_t)n);
    free(bc->lengths);
    bc->lengths = l;
    bc->n_lengths = n;
    return KS_OK;
}

/* Step 1, cheap: the options, the method and the benchmark config on every rank; rank 0 also opens the
 * result file (mkdir, lock, identity check), so a bad --output ends the job before any model loads. */
static ks_status eval_open(eval_job *j, const eval_opts *o, const ks_mpi *mpi, int argc, char **argv) {
    KS_TRY(ks_forward_cache_parse(o->kv_cache, "--kv_cache", &j->cache));
    KS_TRY(ks_cpu_weights_parse(o->cpu_weights, "--cpu_weights", &j->cpu_weights));
    KS_TRY(check_opts(o));
    KS_TRY(eval_layout(j, o, mpi));
    if (o->random_weights) shape_name(o, j->name, sizeof j->name);
    else model_name(o->model_path, j->name, sizeof j->name);
    const char *accel = o->acceleration[0] ? o->acceleration : "FullKV";
    if (o->batch < 0 || o->batch > KS_FORWARD_MAX_BATCH)
        return ks_fail(KS_ERR_ARG, "--batch %d: must be 0 (as many as fit the memory) .. %d", o->batch,
                       KS_FORWARD_MAX_BATCH);
    if (o->batch > 1 && j->stages.layout.n_stages > 1)
        return ks_fail(KS_ERR_UNSUPPORTED, "--batch %d with --gp_num %s: a pipelined instance decodes one sample at "
                       "a time; use --batch 1", o->batch, o->gp_num);
    j->n_methods = j->stages.layout.n_stages > 1 ? 1 : o->batch > 0 ? o->batch : KS_BATCH_AUTO_MAX;
    j->methods = ks_calloc((size_t)j->n_methods, sizeof *j->methods, "method instances");
    if (!j->methods) return KS_ERR_NOMEM;
    for (int i = 0; i < j->n_methods; i++)
        KS_TRY(ks_method_create(&j->methods[i], accel, o->method_config, o->method_opts.v, o->method_opts.n));
    j->method = j->methods[0];
    KS_TRY(ks_method_options_yaml(j->method, &j->method_yaml));
    KS_TRY(ks_bench_config_load(&j->bc, o->cfg_path));
    KS_TRY(apply_template_override(&j->bc, o->template_name));
    KS_TRY(override_lengths(&j->bc, o->lengths, o->n_lengths));
    if (mpi->rank != 0) return KS_OK;
    KS_TRY(ks_make_dirs(o->output, "--output"));
    snprintf(j->path, sizeof j->path, "%s/%s_%s_%s.h5", o->output, j->name, j->bc.benchmark_name,
             ks_method_name(j->method));
    char *identity = identity_text(o, &j->bc, j->name, ks_method_name(j->method), j->method_yaml);
    char *cmdline = command_line(argc, argv);
    ks_status st = identity && cmdline ? KS_OK : KS_ERR_NOMEM;
    ks_results_meta meta = {.identity = identity, .version = KS_VERSION, .command_line = cmdline,
                            .model = j->name, .benchmark = j->bc.benchmark_name, .method = ks_method_name(j->method),
                            .method_options = j->method_yaml, .hardware = o->dev.device};
    if (st == KS_OK) st = ks_results_open(&j->res, j->path, &meta);
    free(identity);
    free(cmdline);
    return st;
}

/* Step 2: the GPU this rank uses (--device cuda). */
static ks_status eval_gpu(const eval_job *j, const eval_opts *o, const ks_mpi *mpi) {
    if (o->dev.chosen && mpi->rank == 0)
        ks_log_info("--device not given: %s", strcmp(o->dev.device, "cuda") ? "the CPU (no usable GPU)" : "the GPUs");
    return ks_stages_gpu(&j->stages, &o->dev, mpi);
}

/* The random-weight forward of kvscope bench --sweep (ks_runner_build): ctx is the eval_opts. */
static ks_status random_build(void *ctx, ks_forward *f, const ks_model *m, ks_method *method,
                              const ks_forward_params *p) {
    const eval_opts *o = ctx;
    return ks_speed_forward(f, m, method, p, o->seed);
}

/* Step 4: this stage's part of the model on every rank, the sample list on the instances' first stages; rank 0
 * builds the queue of samples not yet done. */
static ks_status eval_load(eval_job *j, const eval_opts *o, const ks_mpi *mpi) {
    const ks_stages *sg = &j->stages;
    ks_runner_params rp = {.model_path = o->model_path, .tokenizer_path = o->tokenizer_path,
                           .model = o->random_weights ? &j->shape : NULL, .build = o->random_weights ? random_build : NULL,
                           .build_ctx = (void *)o, .ignore_stops = o->random_weights,
                           .device = o->dev.device, .max_ctx = config_max_ctx(&j->bc),
                           .max_new = 512, .chunk = o->chunk, .threads = o->threads,
                           .methods = j->methods, .batch = sg->layout.n_stages > 1 ? 1 : o->batch,
                           .sharing = strcmp(o->dev.device, "cpu") ? sg->gp.per_gpu : mpi->local_size,
                           .cache = j->cache, .cpu_weights = j->cpu_weights,
                           .gpu_share = sg->gp.per_gpu};
    if (sg->layout.n_stages > 1) {
        rp.first_layer = sg->first_layer, rp.last_layer = sg->last_layer;
        rp.stages = &sg->transport;
        ks_log_info("instance %d, stage %d of %d: layers [%d, %d)", sg->layout.instance, sg->layout.stage,
                    sg->layout.n_stages, rp.first_layer, rp.last_layer);
    }
    KS_TRY(ks_runner_init(&j->run, &rp));
    if (o->batch == 0 && j->stages.layout.stage == 0)
        ks_log_info("--batch 0: %d sample%s decode together on this rank (the most whose KV caches fit its memory)",
                    j->run.batch.n, j->run.batch.n > 1 ? "s" : "");
    if (j->stages.layout.stage != 0) return KS_OK;
    KS_TRY(ks_bench_open(&j->bench, &j->bc, j->run.tok));
    KS_TRY(ks_bench_list(j->bench, o->limit, &j->ids, &j->n));
    if (mpi->rank != 0) return KS_OK;
    j->es = (eval_store){.res = j->res, .total = j->n, .t0 = now_s(), .batch = j->run.batch.n};
    int64_t *cost = ks_calloc((size_t)j->n + 1, sizeof *cost, "sample costs");
    unsigned char *done = ks_calloc((size_t)j->n + 1, 1, "done flags");
    ks_status st = cost && done ? KS_OK : KS_ERR_NOMEM;
    for (int i = 0; st == KS_OK && i < j->n; i++) {
        const ks_sample_id *id = &j->ids[i];
        cost[i] = id->length;
        done[i] = (unsigned char)ks_results_is_done(j->res, id->task, id->length, id->index);
        j->es.already += done[i];
    }
    if (st == KS_OK) {
        ks_log_info("%s: %d samples, %d already done, %d instance(s) of %d rank(s); results in %s",
                    j->bc.benchmark_name, j->n, j->es.already, j->stages.layout.n_instances,
                    j->stages.layout.n_stages, j->path);
        st = ks_queue_init(&j->q, j->n, cost, done, j->stages.layout.n_instances, j->n_methods);
    }
    free(cost);
    free(done);
    return st;
}

/* An error in the middle of a pipelined sample leaves the instance's other stages waiting for messages that
 * will not come: it ends the job (its line first). */
static void end_job_if_mid_call(const eval_job *j, const ks_mpi *mpi, ks_status st) {
    if (st == KS_OK || !j->run.pipe.in_call) return;
    if (!ks_error_is_reported()) ks_log_error_now();
    ks_mpi_abort(mpi, 1);
}

/* A later pipeline stage: serves its instance's first stage until it ends; an error ends the job. */
static ks_status eval_follow(eval_job *j, const ks_mpi *mpi) {
    ks_status st = ks_runner_follow(&j->run);
    if (st != KS_OK) {
        ks_log_error_now();
        ks_mpi_abort(mpi, 1);
    }
    return st;
}

/* The samples a rank holds, one per runner slot: the id handed out (-1: none) and the sample built for it. */
typedef struct held_samples {
    int *id;         /* (n) */
    ks_sample *s;    /* (n) */
    int n;
} held_samples;

/* The first id held, or -1. */
static int first_held(const held_samples *h) {
    for (int k = 0; k < h->n; k++)
        if (h->id[k] >= 0) return h->id[k];
    return -1;
}

/* Slot k's sample is gone (collected or abandoned). */
static void drop_held(held_samples *h, int k) {
    ks_sample_free(&h->s[k]);
    memset(&h->s[k], 0, sizeof h->s[k]);
    h->id[k] = -1;
}

/* Fills the runner's free slots with samples handed out until none is free or the work runs out (*closed). A
 * sample that cannot start is failed (ks_dispatch_fail). */
static ks_status join_samples(eval_job *j, const eval_opts *o, const ks_mpi *mpi, ks_dispatch *d, held_samples *h,
                              int *closed) {
    int k;
    while (!*closed && (k = ks_runner_free_slot(&j->run)) >= 0) {
        int id;
        ks_status st = ks_dispatch_next(d, &id);
        if (st != KS_OK) return st;
        if (id < 0) {
            *closed = 1;
            break;
        }
        h->id[k] = id;
        st = ks_bench_get(j->bench, &j->ids[id], &h->s[k]);
        if (o->max_new_tokens > 0 && h->s[k].max_new_tokens > o->max_new_tokens) h->s[k].max_new_tokens = o->max_new_tokens;
        if (st == KS_OK) st = ks_runner_join(&j->run, k, &h->s[k], sample_template(&j->bc, &h->s[k]));
        end_job_if_mid_call(j, mpi, st);
        if (st != KS_OK) {
            ks_dispatch_fail(d, id, st);
            drop_held(h, k);
            return st;
        }
        atomic_store(&j->es.busy, ks_runner_busy(&j->run));
    }
    return KS_OK;
}

/* Hands back every finished sample's result. A sample that fails is failed (ks_dispatch_fail); a result that
 * cannot be handed back sets *told (rank 0 learnt of it, or the transport failed). */
static ks_status submit_finished(eval_job *j, ks_dispatch *d, held_samples *h, int *told) {
    int k;
    while ((k = ks_runner_finished(&j->run)) >= 0) {
        ks_result r = {0};
        int id = h->id[k];
        ks_status st = ks_runner_collect(&j->run, k, &r);
        if (st == KS_OK) *told = (st = ks_dispatch_submit(d, id, &r)) != KS_OK;
        else ks_dispatch_fail(d, id, st);
        ks_result_free(&r);
        drop_held(h, k);
        atomic_store(&j->es.busy, ks_runner_busy(&j->run));
        if (st != KS_OK) return st;
    }
    return KS_OK;
}

/* Step 5: samples handed out by rank 0 (mpi/dispatch.h) to the instances' first stages until the work runs out
 * or a rank fails: each rank keeps its batch full (join_samples), steps it, and hands back what finished; every
 * first stage returns the same status, the later stages serve theirs. */
static ks_status eval_samples(eval_job *j, const eval_opts *o, const ks_mpi *mpi) {
    if (j->stages.layout.stage != 0) return eval_follow(j, mpi);
    ks_dispatch d = {0};
    ks_status st = ks_dispatch_init(&d, ks_stage_link_heads(&j->stages.link), mpi->rank == 0 ? &j->q : NULL,
                                    j->n_methods, store_result, &j->es);
    held_samples h = {.n = j->run.batch.n};
    h.id = st == KS_OK ? ks_malloc(sizeof *h.id * (size_t)h.n, "held samples") : NULL;
    h.s = st == KS_OK ? ks_calloc((size_t)h.n, sizeof *h.s, "held samples") : NULL;
    if (st == KS_OK && (!h.id || !h.s)) {
        st = KS_ERR_NOMEM;
        ks_dispatch_fail(&d, -1, st);
    }
    if (st != KS_OK) {
        free(h.id);
        free(h.s);
        if (d.closed) st = ks_dispatch_finish(&d);
        ks_dispatch_free(&d);
        return st;
    }
    for (int k = 0; k < h.n; k++) h.id[k] = -1;
    int closed = 0, told = 0;
    while (st == KS_OK) {
        st = join_samples(j, o, mpi, &d, &h, &closed);
        if (st != KS_OK || ks_runner_busy(&j->run) == 0) break;
        st = ks_runner_step(&j->run);
        end_job_if_mid_call(j, mpi, st);
        if (st == KS_OK) st = submit_finished(j, &d, &h, &told);
    }
    /* a failure outside one sample (a step, the hand-out): every sample still held fails with it; after a result
     * that could not be handed back (told), only those */
    if (st != KS_OK && (first_held(&h) >= 0 || (!d.closed && !told))) ks_dispatch_fail(&d, first_held(&h), st);
    for (int k = 0; k < h.n; k++)
        if (h.id[k] >= 0) {
            ks_runner_abandon(&j->run, k);
            drop_held(&h, k);
        }
    free(h.id);
    free(h.s);
    st = ks_dispatch_finish(&d);
    ks_dispatch_free(&d);
    ks_status ended = j->stages.layout.n_stages > 1 ? ks_runner_end(&j->run) : KS_OK;
    return st != KS_OK ? st : ended;
}

/* Rank 0, after the last sample: the final commit and the score table. */
static ks_status eval_report(eval_job *j) {
    ks_status st = ks_results_close(j->res);
    j->res = NULL;
    if (st != KS_OK) return st;
    ks_report rep = {0};
    const char *paths[] = {j->path};
    st = ks_report_load(&rep, paths, 1);
    if (st == KS_OK) st = ks_report_print(&rep, stdout, KS_REPORT_MD, "stdout");
    ks_report_free(&rep);
    return st;
}

static void eval_free(eval_job *j) {
    if (j->res) ks_results_close(j->res);
    ks_queue_free(&j->q);
    free(j->ids);
    ks_bench_close(j->bench);
    ks_runner_free(&j->run);
    ks_stages_free(&j->stages); /* after the runner's backend stream */
    for (int i = 0; i < j->n_methods; i++) ks_method_free(j->methods[i]);
    free(j->methods);
    free(j->method_yaml);
    ks_bench_config_free(&j->bc);
    ks_model_free(&j->shape);
}

/* Rank 0's measure of the sample loop. */
static void eval_timing_of(const eval_job *j, eval_timing *t) {
    *t = (eval_timing){.wall_s = j->loop_s, .prefill_s = j->es.prefill_s, .decode_s = j->es.decode_s,
                       .samples = j->q.n_done, .batch = j->es.batch};
    snprintf(t->path, sizeof t->path, "%s", j->path);
}

/* The evaluation proper, once MPI is up. Each phase that may fail on some ranks only ends in ks_mpi_agree,
 * so a failure anywhere ends every rank (its line printed by the rank that hit it) and no collective is left
 * unmatched. */
ks_status eval_run(const eval_opts *o, const ks_mpi *mpi, int argc, char **argv, eval_timing *t) {
    eval_job j = {0};
    ks_status st = ks_mpi_agree(mpi, eval_open(&j, o, mpi, argc, argv));
    if (st == KS_OK) st = ks_stages_link(&j.stages, mpi, o->stage_timeout);
    if (st == KS_OK) st = ks_mpi_agree(mpi, eval_gpu(&j, o, mpi));
    if (st == KS_OK) st = ks_mpi_agree(mpi, ks_stages_transport(&j.stages, &o->dev));
    if (st == KS_OK) st = ks_mpi_agree(mpi, eval_load(&j, o, mpi));
    double t0 = now_s();
    if (st == KS_OK) st = eval_samples(&j, o, mpi);
    j.loop_s = now_s() - t0;
    /* the later stages learn how their instances' samples ended */
    if (j.stages.link.mpi && j.stages.layout.n_stages > 1)
        st = ks_mpi_agree(mpi, st);
    if (st == KS_OK && mpi->rank == 0) st = eval_report(&j);
    if (t && mpi->rank == 0) eval_timing_of(&j, t);
    eval_free(&j);
    return st;
}

ks_status ks_cmd_eval(int argc, char **argv) {
    eval_opts o = {.acceleration = "FullKV", .torch_dtype = "bfloat16", .gp_num = "1",
                   .output = "results", .limit = -1, .chunk = 0, .kv_cache = "auto", .cpu_weights = "packed",
                   .stage_timeout = 300};
    const ks_option opts[] = {
        {"model_path", KS_OPT_STRING, &o.model_path, "P", "HF model directory or .gguf file", 1},
        {"cfg_path", KS_OPT_STRING, &o.cfg_path, "F", "benchmark YAML (configs/benchmarks/*.yaml)", 1},
        {"acceleration", KS_OPT_STRING, &o.acceleration, "NAME",
         "KV method: FullKV, H2O, StreamingLLM, SnapKV, L2Compress, PyramidKV, CakeKV, CaM, ThinK, KIVI, "
         "XAttention, FlexPrefill (sparse prefill); or a composition A+B, one part per role in the order sparse prefill, "
         "selection, merging, channels, quantization (SnapKV+ThinK+KIVI, XAttention+SnapKV)", 0},
        {"method_config", KS_OPT_STRING, &o.method_config, "F.yaml",
         "method knobs overriding the defaults (template: configs/methods/<name>.yaml; a composition: a section "
         "per part)", 0},
        {"method_opt", KS_OPT_STRINGS, &o.method_opts, "KEY=VALUE",
         "one method knob, after --method_config (a composition's part: PART.KEY=VALUE)", 0},
        {"device", KS_OPT_WORDS, &o.device_words, "D",
         "cpu, cuda (every GPU of a node), or GPU indices (--device 0 1 3: a node's ranks use those, in order); "
         "default: the GPUs when there are any, else the CPU", 0},
        {"torch_dtype", KS_OPT_STRING, &o.torch_dtype, "T", "bfloat16 (cuda: bf16 weights and KV; cpu: computes fp32) or float32 (cpu)", 0},
        {"gp_num", KS_OPT_STRING, &o.gp_num, "K|1/K",
         "K: ranks (GPUs) per model instance, each a pipeline stage holding a range of layers; 1/K: K instances "
         "share each GPU", 0},
        {"stage_timeout", KS_OPT_FLOAT, &o.stage_timeout, "S",
         "seconds a pipeline stage waits for its neighbour before the job ends with an error naming it", 0},
        {"output", KS_OPT_STRING, &o.output, "DIR", "result directory (one .h5 per model x benchmark x method)", 0},
        {"limit", KS_OPT_INT, &o.limit, "N", "the first N samples of each task and length (-1 = all)", 0},
        {"template", KS_OPT_STRING, &o.template_name, "NAME",
         "chat template for every task, overriding the config (llama3, mistral, chatml, none, auto)", 0},
        {"max_new_tokens", KS_OPT_INT, &o.max_new_tokens, "N",
         "cap every task's generation budget at N tokens (0 = the tasks' own; for quick runs)", 0},
        {"threads", KS_OPT_INT, &o.threads, "N", "CPU threads per rank (0 = the physical cores)", 0},
        {"batch", KS_OPT_INT, &o.batch, "N",
         "samples decoding together per rank: prompts are prefilled one at a time, every decode step runs one token "
         "of each (the same tokens as alone); 0 = as many as fit the memory", 0},
        {"chunk", KS_OPT_INT, &o.chunk, "N",
         "prefill chunk size in tokens (0: 512, or the whole context for FlexPrefill, which needs the whole prompt in "
         "one chunk)", 0},
        {"cpu_weights", KS_OPT_STRING, &o.cpu_weights, "packed|f32",
         "--device cpu with a GGUF: packed keeps its quantized blocks and multiplies them with int8 activations; "
         "f32 dequantizes at load (the exact fp32 path)", 0},
        {"kv_cache", KS_OPT_STRING, &o.kv_cache, "auto|budget|full",
         "budget: size the KV cache for the method's budget (layer-major prefill); full: for the whole context; "
         "auto: budget where the method bounds its rows and that saves memory", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "eval",
                            "evaluate a model (and a KV method) on a benchmark config; resumable; "
                            "`mpirun -np N kvscope eval ...` spreads samples over N ranks",
                            &help));
    if (help) return KS_OK;
    KS_TRY(ks_stage_devices_parse(&o.device_words, &o.dev));
    ks_mpi mpi = {0};
    KS_TRY(ks_mpi_init(&mpi, &argc, &argv));
    ks_status st = eval_run(&o, &mpi, argc, argv, NULL);
    ks_mpi_finalize(&mpi);
    return st;
}
