/* cmd_bench.c — `kvscope bench`, the speed benchmark: the GPU speed of a random-weight model of any Hugging Face
 * config shape (Llama-3.1-8B by default; speed/speed_model.h). For each context length: prefill seconds of one prompt
 * (median of --repeat runs up to 32K, one run beyond), decode ms/token on the full cache (the cache filled by
 * that prefill, then graph-replayed greedy steps), and peak device memory; then the prefill attention kernel
 * alone in TFLOP/s. Prints a table and writes JSON that `jobs/bench_torch.py --compare torch.json F.json`
 * puts side by side with PyTorch + transformers and the physical floor.
 *
 * With --acceleration (KV methods, methods/method.h; repeatable, each `NAME` or `NAME:key=value:...`, plus
 * --method_opt for all of them) each length instead runs FullKV and then every method, each on its own forward
 * instance with the full cache: prefill seconds and their increase over FullKV's, the seconds spent in the
 * method's hooks, the KV bytes held after prefill (bf16 rows actually kept, and rows per layer and KV head),
 * decode ms/token on the compressed cache and device memory in use; then each method whose cache
 * KS_CACHE_AUTO sizes to its budget (engine/forward.h: layer-major prefill) again on such an instance, whose
 * device memory is what that method really needs. Random weights are generated on the GPU, so a fresh instance
 * per method costs its allocation and one untimed warm-up chunk, not a weight upload. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/log.h"
#include "methods/method.h"
#include "speed/speed_model.h"

#define MAX_LENGTHS 32
#define MAX_METHODS 16

typedef struct bench_opts {
    int chunk, steps, repeat;
    uint64_t seed;
} bench_opts;

/* What one context length measured. */
typedef struct length_result {
    int length;
    double prefill_s, decode_ms;
    size_t peak_bytes;       /* device memory in use at the end of the run, beyond what was in use before */
    size_t late_bytes;       /* of which allocated after the backend's init (should be ~0) */
    size_t kv_bytes;         /* the full KV cache of the run (prompt + decode steps), bf16 */
} length_result;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* "4096,16384" -> out[]; KS_ERR_ARG naming the option on anything but positive integers. */
static ks_status parse_lengths(const char *s, const char *opt, int *out, int *n) {
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

/* Parameters in bf16, as PyTorch counts them (norms included): the "weights" term of the memory budget. */
static size_t weight_bytes(const ks_model_config *c) {
    size_t D = c->hidden, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t layer = D * (qd + 2 * kvd) + qd * D + 3 * D * c->ffn + 2 * D;
    if (c->attn_bias) layer += qd + 2 * kvd;
    if (c->o_bias) layer += D;
    return 2 * ((size_t)c->n_layers * layer + (size_t)c->vocab * D * (c->tie_embeddings ? 1 : 2) + D);
}

static size_t kv_bytes(const ks_model_config *c, int rows) {
    return (size_t)c->n_layers * 2 * c->n_kv_heads * rows * c->head_dim * 2;
}

/* Prefill of `ids` (n tokens), timed `reps` times from an empty cache; the median. */
static ks_status time_prefill(ks_forward *f, const int32_t *ids, int n, int reps, double *median, int32_t *next) {
    double t[16];
    KS_ASSERT(reps > 0 && reps <= 16);
    for (int r = 0; r < reps; r++) {
        ks_forward_reset(f);
        double t0 = now_s();
        KS_TRY(ks_forward_prefill(f, ids, n, NULL, next)); /* ends with argmax: synchronised */
        t[r] = now_s() - t0;
    }
    qsort(t, reps, sizeof *t, cmp_double);
    *median = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    return KS_OK;
}

/* Two untimed steps (the first runs eagerly, the second is captured as a graph), `steps` timed replays, then
 * one more step whose logits must be finite (a broken kernel shows up as NaN, not only as a time). */
static ks_status time_decode(ks_forward *f, int32_t next, int steps, float *logits, double *ms) {
    for (int i = 0; i < 2; i++) KS_TRY(ks_forward_decode(f, next, NULL, &next));
    double t0 = now_s();
    for (int i = 0; i < steps; i++) KS_TRY(ks_forward_decode(f, next, NULL, &next)); /* each ends synchronised */
    *ms = (now_s() - t0) * 1e3 / steps;
    KS_TRY(ks_forward_decode(f, next, logits, &next));
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
    /* warm-up: one chunk builds the GEMM plans and sets the kernels' attributes */
    KS_TRY_GOTO(st, ks_forward_prefill(&f, ids, L < f.chunk ? L : f.chunk, NULL, &next), done);
    KS_TRY_GOTO(st, time_prefill(&f, ids, L, L <= 32768 ? o->repeat : 1, &r->prefill_s, &next), done);
    KS_TRY_GOTO(st, time_decode(&f, next, o->steps, logits, &r->decode_ms), done);
    KS_TRY_GOTO(st, ks_speed_device(NULL, 0, NULL, NULL, &free2), done);
    r->length = L;
    r->peak_bytes = free0 > free2 ? free0 - free2 : 0;
    r->late_bytes = free1 > free2 ? free1 - free2 : 0;
    r->kv_bytes = kv_bytes(&m->cfg, max_ctx);
done:
    ks_forward_free(&f);
    return st;
}

/* ---- KV methods (--acceleration) ------------------------------------------------------------------------- */

/* One --acceleration entry: the method's name and its options (the global --method_opt ones first, then the
 * entry's own), pointing into `text` or argv. */
typedef struct method_spec {
    char text[256]; /* the entry with ':' replaced by NULs */
    const char *label, *name;
    const char *opts[KS_OPT_STRINGS_MAX];
    int n_opts;
} method_spec;

/* What one method measured at one length. */
typedef struct method_result {
    double prefill_s, method_s, decode_ms;
    int64_t kv_bytes;  /* bf16 K and V of the rows held after prefill, every layer */
    int kv_rows;       /* rows per layer and KV head the cache was sized for (max_ctx: the full cache) */
    size_t peak_bytes; /* device memory the instance held after its run, beyond what was in use before it */
} method_result;

static ks_status parse_method(const char *entry, const ks_opt_strings *global, method_spec *s) {
    if (strlen(entry) >= sizeof s->text)
        return ks_fail(KS_ERR_ARG, "--acceleration '%.40s...': longer than %zu characters", entry, sizeof s->text - 1);
    strcpy(s->text, entry);
    s->label = entry, s->name = s->text, s->n_opts = 0;
    for (int i = 0; i < global->n; i++) s->opts[s->n_opts++] = global->v[i];
    for (char *p = strchr(s->text, ':'); p; p = strchr(p + 1, ':')) {
        *p = '\0';
        if (s->n_opts == KS_OPT_STRINGS_MAX)
            return ks_fail(KS_ERR_ARG, "--acceleration '%s': more than %d options", entry, KS_OPT_STRINGS_MAX);
        s->opts[s->n_opts++] = p + 1;
    }
    ks_method *m; /* validated now, before any GPU time is spent */
    KS_TRY(ks_method_create(&m, s->name, NULL, s->opts, s->n_opts));
    ks_method_free(m);
    return KS_OK;
}


/* One method `meth` (borrowed; spec NULL and meth NULL: FullKV) on its own forward instance built with fp, r filled
 * and its table row printed; full: FullKV's result at this length (NULL: r is FullKV's). One untimed chunk first
 * builds the instance's GEMM plans and sets the kernels' attributes. */
static ks_status bench_one(const ks_model *m, const bench_opts *o, int L, int32_t *ids, float *logits,
                           const method_spec *spec, ks_method *meth, const ks_forward_params *fp,
                           const method_result *full, method_result *r) {
    ks_forward f = {0};
    int32_t next;
    size_t free0, free2;
    ks_status st;
    KS_TRY(ks_speed_device(NULL, 0, NULL, NULL, &free0));
    KS_TRY_GOTO(st, ks_speed_forward(&f, m, meth, fp, o->seed), done);
    KS_TRY_GOTO(st, ks_forward_prefill(&f, ids, L < f.chunk ? L : f.chunk, NULL, &next), done);
    KS_TRY_GOTO(st, time_prefill(&f, ids, L, L <= 32768 ? o->repeat : 1, &r->prefill_s, &next), done);
    r->method_s = f.method_s;
    r->kv_bytes = ks_kvcache_bytes(f.ops->kvcache(f.be)); /* K and V rows held, bf16 */
    r->kv_rows = f.kv_rows;
    KS_TRY_GOTO(st, time_decode(&f, next, o->steps, logits, &r->decode_ms), done);
    KS_TRY_GOTO(st, ks_speed_device(NULL, 0, NULL, NULL, &free2), done);
    r->peak_bytes = free0 > free2 ? free0 - free2 : 0;
    double rows = (double)r->kv_bytes / ((double)m->cfg.n_layers * m->cfg.n_kv_heads * m->cfg.head_dim * 4);
    char cache[48] = "full";
    if (f.kv_rows < f.max_ctx) snprintf(cache, sizeof cache, "budget: %d rows", f.kv_rows);
    printf("| %dK | %s | %s | %.3f | %+.1f%% | %.3f | %.1f | %.0f | %.2f | %.1f |\n", L / 1024,
           spec ? spec->label : "FullKV", cache, r->prefill_s,
           100.0 * (r->prefill_s / (full ? full : r)->prefill_s - 1.0), r->method_s, (double)r->kv_bytes / (1 << 20),
           rows, r->decode_ms, gib(r->peak_bytes));
    fflush(stdout);
done:
    ks_forward_free(&f);
    return st;
}

/* The method of `spec` (NULL: FullKV) at length L with the cache mode `cache` into *out; KS_CACHE_AUTO runs only
 * where it sizes the cache to the method's budget (out->kv_rows stays 0 otherwise). */
static ks_status bench_spec(const ks_model *m, const bench_opts *o, int L, int32_t *ids, float *logits,
                            const method_spec *spec, ks_forward_cache cache, const method_result *full,
                            method_result *out) {
    const ks_forward_params fp = {.max_ctx = L + o->steps + 3, .max_new = o->steps + 3, .chunk = o->chunk,
                                  .cache = cache};
    ks_method *meth = NULL;
    *out = (method_result){0};
    if (spec) KS_TRY(ks_method_create(&meth, spec->name, NULL, spec->opts, spec->n_opts));
    ks_backend_params bp;
    ks_status st = ks_forward_backend_params(m, meth, &fp, &bp);
    if (st == KS_OK && (cache != KS_CACHE_AUTO || bp.kv_rows < bp.max_ctx))
        st = bench_one(m, o, L, ids, logits, spec, meth, &fp, full, out);
    ks_method_free(meth);
    return st;
}

/* At length L: FullKV (r[0]) and then each method (r[1..n]) with the full cache; then each method whose cache
 * KS_CACHE_AUTO sizes to its budget (rb[i - 1].kv_rows > 0) with that cache. */
static ks_status bench_methods_length(const ks_model *m, const bench_opts *o, int L, int32_t *ids, float *logits,
                                      const method_spec *specs, int n, method_result *r, method_result *rb) {
    KS_TRY(bench_spec(m, o, L, ids, logits, NULL, KS_CACHE_FULL, NULL, &r[0]));
    for (int i = 0; i < n; i++) KS_TRY(bench_spec(m, o, L, ids, logits, &specs[i], KS_CACHE_FULL, &r[0], &r[i + 1]));
    for (int i = 0; i < n; i++) KS_TRY(bench_spec(m, o, L, ids, logits, &specs[i], KS_CACHE_AUTO, &r[0], &rb[i]));
    return KS_OK;
}

static cJSON *method_json(int L, const char *label, const method_result *r, const method_result *full) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "length", L);
    cJSON_AddStringToObject(o, "method", label);
    cJSON_AddNumberToObject(o, "prefill_s", r->prefill_s);
    cJSON_AddNumberToObject(o, "prefill_vs_fullkv", r->prefill_s / full->prefill_s - 1.0);
    cJSON_AddNumberToObject(o, "method_s", r->method_s);
    cJSON_AddNumberToObject(o, "kv_bytes_prefill", (double)r->kv_bytes);
    cJSON_AddNumberToObject(o, "decode_ms", r->decode_ms);
    cJSON_AddStringToObject(o, "kv_cache", r->kv_rows < L ? "budget" : "full");
    cJSON_AddNumberToObject(o, "kv_rows", r->kv_rows);
    cJSON_AddNumberToObject(o, "peak_bytes", (double)r->peak_bytes);
    return o;
}

/* The --acceleration run: the table on stdout, and the rows as JSON at `out` (may be NULL). */
static ks_status bench_methods(const ks_model *m, const bench_opts *o, const int *lengths, int nl, int32_t *ids,
                               float *logits, const method_spec *specs, int n, const char *gpu, const char *out) {
    printf("| context | method | KV cache | prefill (s) | vs FullKV | method hooks (s) | KV after prefill (MiB) | rows "
           "per layer and KV head | decode (ms/tok) | device memory (GiB) |\n|---|---|---|---|---|---|---|---|---|---|\n");
    cJSON *rows = cJSON_CreateArray();
    ks_status st = KS_OK;
    for (int li = 0; li < nl && st == KS_OK; li++) {
        method_result r[MAX_METHODS + 1], rb[MAX_METHODS];
        st = bench_methods_length(m, o, lengths[li], ids, logits, specs, n, r, rb);
        if (st != KS_OK) break;
        for (int i = 0; i <= n; i++)
            cJSON_AddItemToArray(rows, method_json(lengths[li], i ? specs[i - 1].label : "FullKV", &r[i], &r[0]));
        for (int i = 0; i < n; i++)
            if (rb[i].kv_rows) cJSON_AddItemToArray(rows, method_json(lengths[li], specs[i].label, &rb[i], &r[0]));
    }
    if (st == KS_OK && out) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "tool", "kvscope bench --acceleration");
        cJSON_AddStringToObject(j, "gpu", gpu);
        cJSON_AddStringToObject(j, "model", m->source);
        cJSON_AddNumberToObject(j, "chunk", o->chunk);
        cJSON_AddItemToObject(j, "methods", rows);
        rows = NULL;
        char *text = cJSON_Print(j);
        cJSON_Delete(j);
        FILE *fp = text ? fopen(out, "w") : NULL;
        int ok = fp && fputs(text, fp) >= 0;
        if (fp && fclose(fp)) ok = 0;
        free(text);
        if (!ok) st = ks_fail(KS_ERR_IO, "--out %s: cannot write the results file", out);
    }
    cJSON_Delete(rows);
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

static ks_status write_json(const char *path, const char *gpu, const ks_model *m, const bench_opts *o,
                            const length_result *r, int nl, const int *alen, const double *tflops, int na) {
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
    cJSON_AddStringToObject(j, "gpu", gpu);
    cJSON_AddStringToObject(j, "date", date);
    cJSON_AddStringToObject(j, "model", m->source);
    cJSON_AddNumberToObject(j, "chunk", o->chunk);
    cJSON_AddNumberToObject(j, "decode_steps", o->steps);
    cJSON_AddItemToObject(j, "lengths", cJSON_CreateIntArray(len, nl));
    cJSON_AddNumberToObject(j, "weight_bytes", (double)weight_bytes(&m->cfg));
    cJSON_AddItemToObject(j, "prefill_s", by_length(len, pre, nl));
    cJSON_AddItemToObject(j, "decode_ms", by_length(len, dec, nl));
    cJSON_AddItemToObject(j, "peak_bytes", by_length(len, peak, nl));
    cJSON_AddItemToObject(j, "kv_bytes", by_length(len, kv, nl));
    cJSON_AddItemToObject(j, "attention_tflops", by_length(alen, tflops, na));
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return ks_fail(KS_ERR_NOMEM, "bench: out of memory writing the JSON results");
    FILE *fp = fopen(path, "w");
    int ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF;
    if (fp && fclose(fp)) ok = 0;
    free(text);
    if (!ok) return ks_fail(KS_ERR_IO, "--out %s: cannot write the results file", path);
    return KS_OK;
}

ks_status ks_cmd_bench(int argc, char **argv) {
    const char *config = NULL, *lengths_s = "4096,16384,32768,65536,131072", *alen_s = "4096,16384,32768";
    const char *out = NULL;
    int steps = 32, chunk = 0, repeat = 3, seed = 1;
    ks_opt_strings accel = {0}, method_opts = {0};
    const ks_option opts[] = {
        {"config", KS_OPT_STRING, &config, "F", "HF config.json of the model shape (default: Llama-3.1-8B)", 0},
        {"lengths", KS_OPT_STRING, &lengths_s, "L,..", "context lengths in tokens", 0},
        {"decode_steps", KS_OPT_INT, &steps, "N", "timed decode steps per length", 0},
        {"chunk", KS_OPT_INT, &chunk, "N", "prefill chunk in tokens (0: 64 x the GPU's multiprocessors)", 0},
        {"repeat", KS_OPT_INT, &repeat, "N", "prefill runs per length up to 32K (median); 1 beyond", 0},
        {"attention_lengths", KS_OPT_STRING, &alen_s, "L,..", "lengths for the attention kernel alone", 0},
        {"seed", KS_OPT_INT, &seed, "N", "seed of the random weights and prompt", 0},
        {"out", KS_OPT_STRING, &out, "F", "write the results as JSON here", 0},
        {"acceleration", KS_OPT_STRINGS, &accel, "NAME[:K=V..]",
         "a KV method to measure against FullKV (its own options after ':')", 0},
        {"method_opt", KS_OPT_STRINGS, &method_opts, "KEY=VALUE", "a knob for every --acceleration method", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "bench",
                            "GPU speed of a random-weight model: prefill, decode, peak memory, attention kernel",
                            &help));
    if (help) return KS_OK;
    if (steps < 1) return ks_fail(KS_ERR_ARG, "--decode_steps %d: must be at least 1", steps);
    if (chunk < 0) return ks_fail(KS_ERR_ARG, "--chunk %d: must be 0 (automatic) or more", chunk);
    if (repeat < 1 || repeat > 16) return ks_fail(KS_ERR_ARG, "--repeat %d: must be 1 to 16", repeat);
    int lengths[MAX_LENGTHS], alen[MAX_LENGTHS], nl, na;
    KS_TRY(parse_lengths(lengths_s, "lengths", lengths, &nl));
    KS_TRY(parse_lengths(alen_s, "attention_lengths", alen, &na));
    if (method_opts.n && !accel.n) return ks_fail(KS_ERR_ARG, "--method_opt needs an --acceleration method");
    if (accel.n > MAX_METHODS) return ks_fail(KS_ERR_ARG, "--acceleration: at most %d methods", MAX_METHODS);
    method_spec specs[MAX_METHODS];
    for (int i = 0; i < accel.n; i++) KS_TRY(parse_method(accel.v[i], &method_opts, &specs[i]));
    char gpu[256];
    size_t total;
    int sms;
    KS_TRY(ks_speed_device(gpu, sizeof gpu, &sms, &total, NULL));
    /* 64 tokens per SM: with Llama's 32 heads the attention kernel's 128-row blocks (and 128-row GEMM tiles)
     * come in whole waves over the multiprocessors (8448 on an H100/H200: 16 waves of 132 blocks) */
    if (chunk == 0) chunk = 64 * sms;

    ks_model m = {0};
    length_result res[MAX_LENGTHS] = {{0}};
    double tflops[MAX_LENGTHS];
    int32_t *ids = NULL;
    float *logits = NULL;
    ks_status st;
    KS_TRY_GOTO(st, ks_speed_model_init(&m, config), done);
    const ks_model_config *c = &m.cfg;
    int longest = 0;
    for (int i = 0; i < nl; i++) longest = lengths[i] > longest ? lengths[i] : longest;
    ids = ks_malloc(sizeof(int32_t) * longest, "prompt ids");
    logits = ks_malloc(sizeof(float) * c->vocab, "logits");
    st = ids && logits ? KS_OK : KS_ERR_NOMEM;
    if (st != KS_OK) goto done;
    uint64_t s = (uint64_t)seed * 0x9e3779b97f4a7c15ull + 1; /* xorshift64: a random prompt */
    for (int i = 0; i < longest; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        ids[i] = (int32_t)(s % (uint64_t)c->vocab);
    }
    bench_opts o = {.chunk = chunk, .steps = steps, .repeat = repeat, .seed = (uint64_t)seed};
    if (accel.n) {
        ks_log_info("bench: %s on %s, %d KV method(s) against FullKV, prefill chunk %d", m.source, gpu, accel.n,
                    chunk);
        st = bench_methods(&m, &o, lengths, nl, ids, logits, specs, accel.n, gpu, out);
        goto done;
    }
    ks_log_info("bench: %s on %s (%.0f GiB), %d layers, hidden %d, heads %d/%d x %d, prefill chunk %d", m.source,
                gpu, gib(total), c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, chunk);
    printf("| context | prefill (s) | prefill (tok/s) | decode (ms/tok) | peak (GiB) | budget: weights + KV + 4 GiB |"
           " allocated after init |\n|---|---|---|---|---|---|---|\n");
    const size_t wbytes = weight_bytes(c);
    for (int i = 0; i < nl; i++) {
        KS_TRY_GOTO(st, bench_length(&m, &o, lengths[i], ids, logits, &res[i]), done);
        const length_result *r = &res[i];
        double budget = gib(wbytes + r->kv_bytes) + 4.0;
        printf("| %dK | %.3f | %.0f | %.2f | %.1f | %.1f %s | %.0f MiB |\n", r->length / 1024, r->prefill_s,
               r->length / r->prefill_s, r->decode_ms, gib(r->peak_bytes), budget,
               gib(r->peak_bytes) <= budget ? "ok" : "OVER", (double)r->late_bytes / (1 << 20));
        fflush(stdout);
    }
    printf("\n| attention kernel, causal, %d/%d heads x %d | TFLOP/s |\n|---|---|\n", c->n_heads, c->n_kv_heads,
           c->head_dim);
    for (int i = 0; i < na; i++) {
        KS_TRY_GOTO(st, ks_speed_attention_tflops(alen[i], c->n_heads, c->n_kv_heads, c->head_dim, 5, &tflops[i]),
                    done);
        printf("| %dK | %.0f |\n", alen[i] / 1024, tflops[i]);
    }
    if (out) KS_TRY_GOTO(st, write_json(out, gpu, &m, &o, res, nl, alen, tflops, na), done);
done:
    free(ids);
    free(logits);
    ks_model_free(&m);
    return st;
}
