/* cmd_eval.c — `kvscope eval`: a benchmark config through a model and a method, one sample at a time per rank,
 * results appended to an HDF5 file that resumes, and the score table at the end (DESIGN.md §1).
 *
 * Every rank parses the same options, loads the model and builds the same sample id list; rank 0 opens the
 * result file, skips the samples it already holds, and hands ids out longest first (mpi/dispatch.h); rank 0
 * computes too. Without mpirun this is the same program with one rank. */
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
#include "core/log.h"
#include "dispatch.h"
#include "ks_mpi.h"
#include "methods/method.h"
#include "results/report.h"
#include "results/results.h"
#include "runner/runner.h"

typedef struct eval_opts {
    const char *model_path, *cfg_path, *acceleration, *device, *torch_dtype, *gp_num, *output, *template_name;
    const char *method_config;
    ks_opt_strings method_opts; /* --method_opt key=value, in order */
    int limit, threads, chunk;
    const char *kv_cache; /* "budget" or "full" */
    int max_new_tokens; /* > 0: cap every sample's generation budget (quick runs); part of the identity */
} eval_opts;

/* What rank 0's store callback needs. */
typedef struct eval_store {
    ks_results *res;
    int total;        /* samples in this run, done ones included */
    int already;      /* done before this run started */
    double score_sum; /* over samples finished in this run */
    double t0;
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
    int fresh = q->n_done, done = e->already + fresh;
    double el = now_s() - e->t0, rate = fresh / (el > 0 ? el : 1e-9);
    double eta = rate > 0 ? (e->total - done) / rate : 0;
    ks_log_info("%d/%d samples  %.3f samples/s  ETA %.0f s  running score %.2f  (last: %s/%d/%d %.1f)", done,
                e->total, rate, eta, e->score_sum / fresh, r->task, r->length, r->index, r->score);
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
    const char *fmt = "model: %s\nacceleration: %s\ntorch_dtype: %s\ntemplate_override: %s\n"
                      "max_new_tokens_cap: %d\nmethod_options:\n%s---\n%s";
    const char *tmpl = o->template_name ? o->template_name : "null";
    int n = snprintf(NULL, 0, fmt, model, method, o->torch_dtype, tmpl, o->max_new_tokens, method_yaml,
                     bc->yaml_text);
    char *s = ks_malloc((size_t)n + 1, "result identity");
    if (s)
        snprintf(s, (size_t)n + 1, fmt, model, method, o->torch_dtype, tmpl, o->max_new_tokens, method_yaml,
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
    if (strcmp(o->kv_cache, "budget") && strcmp(o->kv_cache, "full"))
        return ks_fail(KS_ERR_ARG, "--kv_cache %s: must be budget or full", o->kv_cache);
    if (strcmp(o->gp_num, "1") != 0)
        return ks_fail(KS_ERR_UNSUPPORTED, "--gp_num %s: only 1 (one rank per model instance) is supported so far; "
                                           "run one rank per GPU with mpirun -np N", o->gp_num);
    /* The seed's flag. kvscope's backends have one compute type each: bf16 weights and KV cache on GPUs, fp32
     * on CPUs; a dtype the chosen backend does not compute in is refused rather than silently ignored. */
    const char *dt = !strncmp(o->torch_dtype, "torch.", 6) ? o->torch_dtype + 6 : o->torch_dtype;
    int gpu = !strcmp(o->device, "cuda");
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
    if (o->chunk < 1) return ks_fail(KS_ERR_ARG, "--chunk %d: must be at least 1", o->chunk);
    return KS_OK;
}

/* The longest context any sample of this config needs: the longest target length (RULER) or the truncation
 * length (LongBench), plus room for the chat template and the answer. */
static int config_max_ctx(const ks_bench_config *bc) {
    int m = bc->max_length;
    for (int i = 0; i < bc->n_lengths; i++) m = bc->lengths[i] > m ? bc->lengths[i] : m;
    return m + 1024;
}

/* The evaluation proper, once MPI is up; every rank returns the same status. */
static ks_status eval_run(const eval_opts *o, const ks_mpi *mpi, int argc, char **argv) {
    ks_bench_config bc = {0};
    ks_runner run = {0};
    ks_bench *bench = NULL;
    ks_sample_id *ids = NULL;
    int64_t *cost = NULL;
    unsigned char *done = NULL;
    char *identity = NULL, *cmdline = NULL, path[4096];
    ks_results *res = NULL;
    ks_queue q = {0};
    ks_dispatch d = {0};
    int n = 0;
    ks_status st;
    char name[256];
    model_name(o->model_path, name, sizeof name);
    ks_method *method = NULL;
    char *method_yaml = NULL;
    const char *accel = o->acceleration[0] ? o->acceleration : "FullKV";
    KS_TRY_GOTO(st, ks_method_create(&method, accel, o->method_config, o->method_opts.v, o->method_opts.n), out);
    KS_TRY_GOTO(st, ks_method_options_yaml(method, &method_yaml), out);

    KS_TRY_GOTO(st, ks_bench_config_load(&bc, o->cfg_path), out);
    KS_TRY_GOTO(st, apply_template_override(&bc, o->template_name), out);
    ks_runner_params rp = {.model_path = o->model_path, .device = o->device, .max_ctx = config_max_ctx(&bc),
                           .max_new = 512, .chunk = o->chunk, .threads = o->threads,
                           .method = method, .full_kv_cache = !strcmp(o->kv_cache, "full")};
    KS_TRY_GOTO(st, ks_runner_init(&run, &rp), out);
    KS_TRY_GOTO(st, ks_bench_open(&bench, &bc, run.tok), out);
    KS_TRY_GOTO(st, ks_bench_list(bench, o->limit, &ids, &n), out);

    eval_store es = {.total = n, .t0 = now_s()};
    if (mpi->rank == 0) {
        if (mkdir(o->output, 0777) != 0 && !ks_is_directory(o->output)) {
            st = ks_fail(KS_ERR_IO, "--output %s: cannot create the directory", o->output);
            goto out;
        }
        snprintf(path, sizeof path, "%s/%s_%s_%s.h5", o->output, name, bc.benchmark_name, method->ops->name);
        identity = identity_text(o, &bc, name, method->ops->name, method_yaml);
        cmdline = command_line(argc, argv);
        cost = ks_calloc((size_t)n, sizeof *cost, "sample costs");
        done = ks_calloc((size_t)n, 1, "done flags");
        if (!identity || !cmdline || !cost || !done) {
            st = KS_ERR_NOMEM;
            goto out;
        }
        ks_results_meta meta = {.identity = identity, .version = KS_VERSION, .command_line = cmdline,
                                .model = name, .benchmark = bc.benchmark_name, .method = method->ops->name,
                                .method_options = method_yaml, .hardware = o->device};
        KS_TRY_GOTO(st, ks_results_open(&res, path, &meta), out);
        for (int i = 0; i < n; i++) {
            cost[i] = ids[i].length;
            done[i] = (unsigned char)ks_results_is_done(res, ids[i].task, ids[i].length, ids[i].index);
            es.already += done[i];
        }
        es.res = res;
        ks_log_info("%s: %d samples, %d already done, %d rank(s); results in %s", bc.benchmark_name, n, es.already,
                    mpi->size, path);
        KS_TRY_GOTO(st, ks_queue_init(&q, n, cost, done, mpi->size), out);
    }
    KS_TRY_GOTO(st, ks_dispatch_init(&d, mpi->world, mpi->rank == 0 ? &q : NULL, store_result, &es), out);
    int id;
    while ((st = ks_dispatch_next(&d, &id)) == KS_OK && id >= 0) {
        ks_sample s = {0};
        ks_result r = {0};
        st = ks_bench_get(bench, &ids[id], &s);
        if (o->max_new_tokens > 0 && s.max_new_tokens > o->max_new_tokens) s.max_new_tokens = o->max_new_tokens;
        if (st == KS_OK) st = ks_runner_run(&run, &s, sample_template(&bc, &s), &r);
        if (st == KS_OK) st = ks_dispatch_submit(&d, id, &r);
        else ks_dispatch_fail(&d, id, st);
        ks_result_free(&r);
        ks_sample_free(&s);
        if (st != KS_OK) break;
    }
    if (st != KS_OK && id < 0) ks_dispatch_fail(&d, -1, st);
    st = ks_dispatch_finish(&d);
    if (mpi->rank == 0 && res) {
        ks_status cst = ks_results_close(res);
        res = NULL;
        if (st == KS_OK) st = cst;
        if (st == KS_OK) {
            ks_report rep = {0};
            const char *paths[] = {path};
            st = ks_report_load(&rep, paths, 1);
            if (st == KS_OK) st = ks_report_print(&rep, stdout, KS_REPORT_MD, "stdout");
            ks_report_free(&rep);
        }
    }
out:
    if (res) ks_results_close(res);
    ks_dispatch_free(&d);
    ks_queue_free(&q);
    free(ids);
    free(cost);
    free(done);
    free(identity);
    free(cmdline);
    ks_bench_close(bench);
    ks_runner_free(&run);
    ks_method_free(method);
    free(method_yaml);
    ks_bench_config_free(&bc);
    return st;
}

ks_status ks_cmd_eval(int argc, char **argv) {
    eval_opts o = {.acceleration = "FullKV", .device = "cpu", .torch_dtype = "bfloat16", .gp_num = "1",
                   .output = "results", .limit = -1, .chunk = 512, .kv_cache = "budget"};
    const ks_option opts[] = {
        {"model_path", KS_OPT_STRING, &o.model_path, "P", "HF model directory or .gguf file", 1},
        {"cfg_path", KS_OPT_STRING, &o.cfg_path, "F", "benchmark YAML (configs/benchmarks/*.yaml)", 1},
        {"acceleration", KS_OPT_STRING, &o.acceleration, "NAME",
         "KV method: FullKV, H2O, StreamingLLM, SnapKV, L2Compress, PyramidKV, CakeKV", 0},
        {"method_config", KS_OPT_STRING, &o.method_config, "F.yaml",
         "method knobs overriding the defaults (template: configs/methods/<name>.yaml)", 0},
        {"method_opt", KS_OPT_STRINGS, &o.method_opts, "KEY=VALUE", "one method knob, after --method_config", 0},
        {"device", KS_OPT_STRING, &o.device, "D", "compute backend: cpu or cuda", 0},
        {"torch_dtype", KS_OPT_STRING, &o.torch_dtype, "T", "bfloat16 (cuda: bf16 weights and KV; cpu: computes fp32) or float32 (cpu)", 0},
        {"gp_num", KS_OPT_STRING, &o.gp_num, "K", "ranks per model instance (1)", 0},
        {"output", KS_OPT_STRING, &o.output, "DIR", "result directory (one .h5 per model x benchmark x method)", 0},
        {"limit", KS_OPT_INT, &o.limit, "N", "the first N samples of each task and length (-1 = all)", 0},
        {"template", KS_OPT_STRING, &o.template_name, "NAME",
         "chat template for every task, overriding the config (llama3, mistral, chatml, none, auto)", 0},
        {"max_new_tokens", KS_OPT_INT, &o.max_new_tokens, "N",
         "cap every task's generation budget at N tokens (0 = the tasks' own; for quick runs)", 0},
        {"threads", KS_OPT_INT, &o.threads, "N", "CPU threads per rank (0 = all cores)", 0},
        {"chunk", KS_OPT_INT, &o.chunk, "N", "prefill chunk size in tokens", 0},
        {"kv_cache", KS_OPT_STRING, &o.kv_cache, "budget|full",
         "budget: size the KV cache for the method's budget (layer-major prefill of long prompts); full: for "
         "the whole context", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "eval",
                            "evaluate a model (and a KV method) on a benchmark config; resumable; "
                            "`mpirun -np N kvscope eval ...` spreads samples over N ranks",
                            &help));
    if (help) return KS_OK;
    KS_TRY(check_opts(&o));
    ks_mpi mpi = {0};
    KS_TRY(ks_mpi_init(&mpi, &argc, &argv));
    if (mpi.size > 1) ks_log_set_rank(mpi.rank);
    ks_status st = eval_run(&o, &mpi, argc, argv);
    /* Every rank returns the same error (ks_dispatch_finish); only rank 0 prints it. */
    if (st != KS_OK && mpi.rank != 0) ks_error_mark_reported();
    ks_mpi_finalize(&mpi);
    return st;
}
