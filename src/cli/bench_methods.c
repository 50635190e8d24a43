/* bench_methods.c — `kvscope bench --acceleration`: at each length FullKV and then every KV method, each on its
 * own forward instance with the full cache, then each method whose cache KS_CACHE_AUTO sizes to its budget on
 * such an instance (cmd_bench.c's header says what each column means). One GPU. Every row has its decode floor:
 * the weights and the KV bytes the method holds after prefill (packed codes included) over the copy bandwidth
 * measured at the start of the run. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_impl.h"
#include "methods/method.h"
#include "speed/speed_model.h"

/* What one method measured at one length. */
typedef struct method_result {
    double prefill_s, method_s, decode_ms;
    int64_t kv_bytes;  /* bf16 K and V of the rows held after prefill, every layer */
    int kv_rows;       /* rows per layer and KV head the cache was sized for (max_ctx: the full cache) */
    size_t peak_bytes; /* device memory the instance held after its run, beyond what was in use before it */
    double floor_ms;   /* decode floor: (weights + kv_bytes) / the copy bandwidth */
} method_result;

/* What a decode step must read at least, and how fast the device copies. */
typedef struct decode_floor {
    double weight_bytes; /* bench_weight_bytes of every layer */
    double bytes_per_s;  /* ks_speed_copy_bandwidth */
} decode_floor;

/* Bytes of each buffer the copy bandwidth is measured with, and its timed copies. */
#define FLOOR_COPY_BYTES ((size_t)1 << 30)
#define FLOOR_COPY_REPEAT 9

ks_status bench_parse_method(const char *entry, const ks_opt_strings *global, method_spec *s) {
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
static ks_status bench_one(const ks_model *m, const bench_opts *o, const decode_floor *fl, int L, int32_t *ids,
                           float *logits, const method_spec *spec, ks_method *meth, const ks_forward_params *fp,
                           const method_result *full, method_result *r) {
    ks_forward f = {0};
    int32_t next;
    size_t free0, free2;
    ks_status st;
    KS_TRY(ks_speed_device(NULL, 0, NULL, NULL, &free0));
    KS_TRY_GOTO(st, ks_speed_forward(&f, m, meth, fp, o->seed), done);
    bench_drive d = {.f = &f};
    KS_TRY_GOTO(st, ks_forward_prefill(&f, ids, L < f.chunk ? L : f.chunk, NULL, &next), done);
    KS_TRY_GOTO(st, bench_time_prefill(&d, ids, L, bench_reps(o, L), &r->prefill_s, &next), done);
    r->method_s = f.method_s;
    r->kv_bytes = ks_kvcache_bytes(f.ops->kvcache(f.be)); /* K and V rows held, bf16 */
    r->kv_rows = f.kv_rows;
    r->floor_ms = (fl->weight_bytes + (double)r->kv_bytes) / fl->bytes_per_s * 1e3;
    KS_TRY_GOTO(st, bench_time_decode(&d, next, o->steps, &r->decode_ms), done);
    KS_TRY_GOTO(st, bench_check_logits(&f, logits), done);
    KS_TRY_GOTO(st, ks_speed_device(NULL, 0, NULL, NULL, &free2), done);
    r->peak_bytes = free0 > free2 ? free0 - free2 : 0;
    double rows = (double)r->kv_bytes / ((double)m->cfg.n_layers * m->cfg.n_kv_heads * m->cfg.head_dim * 4);
    char cache[48] = "full";
    if (f.kv_rows < f.max_ctx) snprintf(cache, sizeof cache, "budget: %d rows", f.kv_rows);
    printf("| %dK | %s | %s | %.3f | %+.1f%% | %.3f | %.1f | %.0f | %.2f | %.2f | %.2fx | %.1f |\n", L / 1024,
           spec ? spec->label : "FullKV", cache, r->prefill_s,
           100.0 * (r->prefill_s / (full ? full : r)->prefill_s - 1.0), r->method_s, (double)r->kv_bytes / (1 << 20),
           rows, r->decode_ms, r->floor_ms, r->decode_ms / r->floor_ms, bench_gib(r->peak_bytes));
    fflush(stdout);
done:
    ks_forward_free(&f);
    return st;
}

/* The method of `spec` (NULL: FullKV) at length L with the cache mode `cache` into *out; KS_CACHE_AUTO runs only
 * where it sizes the cache to the method's budget (out->kv_rows stays 0 otherwise). */
static ks_status bench_spec(const ks_model *m, const bench_opts *o, const decode_floor *fl, int L, int32_t *ids,
                            float *logits, const method_spec *spec, ks_forward_cache cache, const method_result *full,
                            method_result *out) {
    ks_method *meth = NULL;
    *out = (method_result){0};
    if (spec) KS_TRY(ks_method_create(&meth, spec->name, NULL, spec->opts, spec->n_opts));
    /* FlexPrefill chooses its blocks from the prompt's last queries: with the automatic chunk it prefills the
     * whole prompt at once, as it does in kvscope eval */
    const int whole = o->chunk_auto && meth && ks_method_whole_prompt(meth);
    const ks_forward_params fp = {.max_ctx = L + o->steps + 3, .max_new = o->steps + 3, .chunk = whole ? L : o->chunk,
                                  .cache = cache};
    ks_backend_params bp;
    ks_status st = ks_forward_backend_params(m, meth, &fp, &bp);
    if (st == KS_OK && (cache != KS_CACHE_AUTO || bp.kv_rows < bp.max_ctx))
        st = bench_one(m, o, fl, L, ids, logits, spec, meth, &fp, full, out);
    ks_method_free(meth);
    return st;
}

/* At length L: FullKV (r[0]) and then each method (r[1..n]) with the full cache; then each method whose cache
 * KS_CACHE_AUTO sizes to its budget (rb[i - 1].kv_rows > 0) with that cache. */
static ks_status bench_methods_length(const ks_model *m, const bench_opts *o, const decode_floor *fl, int L,
                                      int32_t *ids, float *logits, const method_spec *specs, int n, method_result *r,
                                      method_result *rb) {
    KS_TRY(bench_spec(m, o, fl, L, ids, logits, NULL, KS_CACHE_FULL, NULL, &r[0]));
    for (int i = 0; i < n; i++)
        KS_TRY(bench_spec(m, o, fl, L, ids, logits, &specs[i], KS_CACHE_FULL, &r[0], &r[i + 1]));
    for (int i = 0; i < n; i++)
        KS_TRY(bench_spec(m, o, fl, L, ids, logits, &specs[i], KS_CACHE_AUTO, &r[0], &rb[i]));
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
    cJSON_AddNumberToObject(o, "decode_floor_ms", r->floor_ms);
    cJSON_AddStringToObject(o, "kv_cache", r->kv_rows < L ? "budget" : "full");
    cJSON_AddNumberToObject(o, "kv_rows", r->kv_rows);
    cJSON_AddNumberToObject(o, "peak_bytes", (double)r->peak_bytes);
    return o;
}

/* The --acceleration run: the table on stdout, and the rows as JSON at `out` (may be NULL). */
ks_status bench_methods(const ks_model *m, const bench_opts *o, const int *lengths, int nl, int32_t *ids,
                               float *logits, const method_spec *specs, int n, const char *gpu, const char *out) {
    decode_floor fl = {.weight_bytes = (double)bench_weight_bytes(&m->cfg, 0, m->cfg.n_layers)};
    KS_TRY(ks_speed_copy_bandwidth(FLOOR_COPY_BYTES, FLOOR_COPY_REPEAT, &fl.bytes_per_s));
    printf("copy bandwidth %.2f TB/s (device to device, read + write); decode floor = (weights %.2f GiB + KV after "
           "prefill) / that\n\n", fl.bytes_per_s / 1e12, bench_gib((size_t)fl.weight_bytes));
    printf("| context | method | KV cache | prefill (s) | vs FullKV | method hooks (s) | KV after prefill (MiB) | rows "
           "per layer and KV head | decode (ms/tok) | decode floor (ms/tok) | vs floor | device memory (GiB) |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    cJSON *rows = cJSON_CreateArray();
    ks_status st = KS_OK;
    for (int li = 0; li < nl && st == KS_OK; li++) {
        method_result r[MAX_METHODS + 1], rb[MAX_METHODS];
        st = bench_methods_length(m, o, &fl, lengths[li], ids, logits, specs, n, r, rb);
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
        cJSON_AddNumberToObject(j, "copy_bytes_per_s", fl.bytes_per_s);
        cJSON_AddNumberToObject(j, "weight_bytes", fl.weight_bytes);
        cJSON_AddItemToObject(j, "methods", rows);
        rows = NULL;
        st = bench_write_json(out, j);
    }
    cJSON_Delete(rows);
    return st;
}
