/* bench_cpu.c — `kvscope bench --device cpu --model F`: the CPU speed of a real checkpoint, its weights held as
 * generate and eval hold them (--cpu_weights). Per length L: prefill tokens/s of a random L-token prompt (one
 * untimed warm-up, then the median of --repeat runs; one chunk unless --chunk says otherwise) and decode tokens/s
 * of --decode_steps greedy steps after it: the two numbers llama.cpp's llama-bench reports as ppL and tgN
 * (jobs/llama_bench.sh runs both on the same GGUF). */
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/bench_impl.h"
#include "core/log.h"
#include "cpu/fast.h"

typedef struct cpu_result {
    int length;
    double prefill_tps, decode_tps;
} cpu_result;

static ks_status measure(const ks_model *m, const bench_cpu_args *a, int L, const int32_t *ids, cpu_result *r) {
    const bench_opts *o = a->o;
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = L + o->steps + 3, .max_new = o->steps + 3,
                            .chunk = o->chunk > 0 ? o->chunk : L, .threads = a->threads, .cache = KS_CACHE_FULL};
    ks_status st;
    KS_TRY_GOTO(st, ks_forward_init(&f, m, NULL, &fp), done);
    bench_drive d = {.f = &f};
    int32_t next;
    double prefill_s, decode_ms;
    KS_TRY_GOTO(st, bench_time_prefill(&d, ids, L, 1, &prefill_s, &next), done); /* warm-up: pages, caches */
    KS_TRY_GOTO(st, bench_time_prefill(&d, ids, L, o->repeat, &prefill_s, &next), done);
    KS_TRY_GOTO(st, bench_time_decode(&d, next, o->steps, &decode_ms), done);
    *r = (cpu_result){.length = L, .prefill_tps = L / prefill_s, .decode_tps = 1e3 / decode_ms};
done:
    ks_forward_free(&f);
    return st;
}

static ks_status write_json(const bench_cpu_args *a, const ks_model *m, const cpu_result *r, int threads) {
    cJSON *j = cJSON_CreateObject(), *rows = cJSON_CreateArray();
    cJSON_AddStringToObject(j, "tool", "kvscope bench --device cpu");
    cJSON_AddStringToObject(j, "model", m->source);
    cJSON_AddStringToObject(j, "cpu_weights", ks_model_is_packed(m) ? "packed" : "f32");
    cJSON_AddNumberToObject(j, "threads", threads);
    cJSON_AddNumberToObject(j, "decode_steps", a->o->steps);
    for (int i = 0; i < a->nl; i++) {
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "length", r[i].length);
        cJSON_AddNumberToObject(row, "prefill_tokens_per_s", r[i].prefill_tps);
        cJSON_AddNumberToObject(row, "decode_tokens_per_s", r[i].decode_tps);
        cJSON_AddItemToArray(rows, row);
    }
    cJSON_AddItemToObject(j, "results", rows);
    return bench_write_json(a->out, j);
}

ks_status bench_cpu(const bench_cpu_args *a) {
    if (!a->model) return ks_fail(KS_ERR_ARG, "--device cpu: kvscope bench needs --model F (a .gguf file or HF directory)");
    ks_model m = {0};
    int32_t *ids = NULL;
    cpu_result r[MAX_LENGTHS];
    ks_status st;
    KS_TRY_GOTO(st, ks_forward_load_model(&m, a->model, 0, -1, "cpu", a->weights), done);
    int longest = 0;
    for (int i = 0; i < a->nl; i++) longest = a->lengths[i] > longest ? a->lengths[i] : longest;
    ids = ks_malloc(sizeof(int32_t) * (size_t)longest, "prompt ids");
    if (!ids) {
        st = KS_ERR_NOMEM;
        goto done;
    }
    uint64_t s = a->o->seed * 0x9e3779b97f4a7c15ull + 1; /* xorshift64: a random prompt */
    for (int i = 0; i < longest; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        ids[i] = (int32_t)(s % (uint64_t)m.cfg.vocab);
    }
    ks_fast_set_threads(a->threads);
    const int threads = omp_get_max_threads();
    ks_log_info("bench: %s on the CPU, %d thread%s, %s weights", m.source, threads, threads == 1 ? "" : "s",
                ks_model_is_packed(&m) ? "packed" : "fp32");
    printf("| prompt | prefill (tok/s) | decode %d (tok/s) |\n|---|---|---|\n", a->o->steps);
    for (int i = 0; i < a->nl; i++) {
        KS_TRY_GOTO(st, measure(&m, a, a->lengths[i], ids, &r[i]), done);
        printf("| %d | %.1f | %.1f |\n", r[i].length, r[i].prefill_tps, r[i].decode_tps);
        fflush(stdout);
    }
    if (a->out) st = write_json(a, &m, r, threads);
done:
    free(ids);
    ks_model_free(&m);
    return st;
}
