/* bench_sweep.c — `kvscope bench --sweep CFG`: every sample of a benchmark config (configs/benchmarks/RULER.yaml:
 * 12 tasks x 6 lengths x 10 samples), built with a real tokenizer (--tokenizer), through `kvscope eval`'s own run
 * (eval_impl.h: the queue, the batch of samples per rank, the methods, the result file and the score table) on a
 * random-weight model of a config's shape on the GPU (speed/speed_model.h), timed: wall seconds, samples/s, and
 * the split into prefill, decode and other (tokenizing, building and scoring samples, writing results). With
 * random weights the answers are noise and every one runs to its task's max_new_tokens (stop ids are ignored),
 * which the output says. --model F instead times a real checkpoint (then on --device cpu too). --limit and
 * --lengths make smaller sweeps. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_impl.h"
#include "cli/eval_impl.h"
#include "core/log.h"

/* The sweep's timing as JSON at `path`. */
static ks_status write_json(const char *path, const eval_opts *o, const eval_timing *t) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tool", "kvscope bench --sweep");
    cJSON_AddStringToObject(j, "benchmark_config", o->cfg_path);
    cJSON_AddStringToObject(j, "model", o->random_weights ? (o->shape_config ? o->shape_config : "Llama-3.1-8B")
                                                          : o->model_path);
    cJSON_AddBoolToObject(j, "random_weights", o->random_weights);
    cJSON_AddStringToObject(j, "acceleration", o->acceleration);
    cJSON_AddStringToObject(j, "device", o->dev.device);
    cJSON_AddNumberToObject(j, "batch", t->batch);
    cJSON_AddNumberToObject(j, "limit", o->limit); /* the samples per task and length it ran (-1: all) */
    cJSON_AddNumberToObject(j, "samples", t->samples);
    cJSON_AddNumberToObject(j, "wall_s", t->wall_s);
    cJSON_AddNumberToObject(j, "samples_per_s", t->wall_s > 0 ? t->samples / t->wall_s : 0);
    cJSON_AddNumberToObject(j, "prefill_s", t->prefill_s);
    cJSON_AddNumberToObject(j, "decode_s", t->decode_s);
    cJSON_AddNumberToObject(j, "other_s", t->wall_s - t->prefill_s - t->decode_s);
    cJSON_AddStringToObject(j, "results", t->path);
    return bench_write_json(path, j);
}

/* The summary lines on stdout (rank 0). */
static void print_timing(const eval_opts *o, const eval_timing *t, int ranks) {
    double other = t->wall_s - t->prefill_s - t->decode_s, w = t->wall_s > 0 ? t->wall_s : 1e-9;
    printf("\nsweep %s: %d samples, %s on %s (%s), batch %d%s\n", o->cfg_path, t->samples, o->acceleration,
           o->random_weights ? (o->shape_config ? o->shape_config : "the Llama-3.1-8B shape") : o->model_path,
           o->dev.device, t->batch, ranks > 1 ? " per rank" : "");
    if (o->random_weights)
        printf("  random weights: the answers are noise and every one runs to its task's max_new_tokens (stop ids "
               "ignored); the scores mean nothing\n");
    printf("  wall %.2f s  %.3f samples/s\n", t->wall_s, t->samples / w);
    if (ranks > 1)
        printf("  prefill %.2f s  decode %.2f s  (summed over %d ranks; wall x ranks = %.2f s)\n", t->prefill_s,
               t->decode_s, ranks, t->wall_s * ranks);
    else
        printf("  prefill %.2f s (%.1f%%)  decode %.2f s (%.1f%%)  other %.2f s (%.1f%%)\n", t->prefill_s,
               100 * t->prefill_s / w, t->decode_s, 100 * t->decode_s / w, other, 100 * other / w);
    printf("  results: %s\n", t->path);
}

/* The options that make sense together. */
static ks_status check_sweep(const eval_opts *o) {
    if (o->model_path && o->shape_config)
        return ks_fail(KS_ERR_ARG, "--config: the random-weight shape; --model times a real checkpoint instead (give "
                                   "one of them)");
    if (!o->model_path && !o->tokenizer_path)
        return ks_fail(KS_ERR_ARG, "--sweep on random weights needs --tokenizer P (e.g. a Llama-3.1 tokenizer.json) "
                                   "to build the samples");
    if (!o->model_path && strcmp(o->dev.device, "cuda"))
        return ks_fail(KS_ERR_ARG, "--device %s: the random-weight model lives on the GPU; --model F times a "
                                   "checkpoint on the cpu", o->dev.device);
    return KS_OK;
}

ks_status bench_sweep(int argc, char **argv) {
    eval_opts o = {.acceleration = "FullKV", .torch_dtype = "bfloat16", .gp_num = "1", .output = "results/sweep",
                   .limit = -1, .kv_cache = "auto", .cpu_weights = "packed", .stage_timeout = 300};
    const char *lengths_s = NULL, *out = NULL;
    int seed = 1;
    int lengths[MAX_LENGTHS];
    const ks_option opts[] = {
        {"sweep", KS_OPT_STRING, &o.cfg_path, "CFG", "the benchmark YAML to run whole (configs/benchmarks/*.yaml)", 1},
        {"tokenizer", KS_OPT_STRING, &o.tokenizer_path, "P",
         "tokenizer.json (or a directory holding one, or a .gguf) the samples are built and encoded with", 0},
        {"config", KS_OPT_STRING, &o.shape_config, "F",
         "HF config.json of the random-weight model's shape (default: Llama-3.1-8B; configs/models/*.json)", 0},
        {"model", KS_OPT_STRING, &o.model_path, "P", "time this checkpoint instead of random weights", 0},
        {"lengths", KS_OPT_STRING, &lengths_s, "L,..", "RULER target lengths to run (default: the config's)", 0},
        {"limit", KS_OPT_INT, &o.limit, "N", "the first N samples of each task and length (-1 = all)", 0},
        {"batch", KS_OPT_INT, &o.batch, "N",
         "samples decoding together per rank (0 = as many as fit the memory)", 0},
        {"acceleration", KS_OPT_STRING, &o.acceleration, "NAME", "the KV method (as kvscope eval's)", 0},
        {"method_config", KS_OPT_STRING, &o.method_config, "F.yaml", "method knobs (as kvscope eval's)", 0},
        {"method_opt", KS_OPT_STRINGS, &o.method_opts, "KEY=VALUE", "one method knob (as kvscope eval's)", 0},
        {"kv_cache", KS_OPT_STRING, &o.kv_cache, "auto|budget|full", "KV cache sizing (as kvscope eval's)", 0},
        {"chunk", KS_OPT_INT, &o.chunk, "N", "prefill chunk in tokens (0: as kvscope eval's)", 0},
        {"max_new_tokens", KS_OPT_INT, &o.max_new_tokens, "N", "cap every task's generation budget (0: the tasks')",
         0},
        {"template", KS_OPT_STRING, &o.template_name, "NAME", "chat template override (as kvscope eval's)", 0},
        {"device", KS_OPT_WORDS, &o.device_words, "D", "cuda, GPU indices, or cpu (with --model)", 0},
        {"threads", KS_OPT_INT, &o.threads, "N", "--device cpu: threads (0 = the physical cores)", 0},
        {"cpu_weights", KS_OPT_STRING, &o.cpu_weights, "packed|f32", "--device cpu: how GGUF weights are held", 0},
        {"seed", KS_OPT_INT, &seed, "N", "seed of the random weights", 0},
        {"output", KS_OPT_STRING, &o.output, "DIR", "result directory (default results/sweep; a file there is "
                                                     "resumed, so a new timing needs a fresh one)", 0},
        {"out", KS_OPT_STRING, &out, "F", "write the timing as JSON here", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "bench --sweep",
                            "a whole benchmark config through kvscope eval's run on a random-weight model, timed "
                            "(wall, samples/s, prefill / decode / other)", &help));
    if (help) return KS_OK;
    if (lengths_s) KS_TRY(bench_parse_lengths(lengths_s, "lengths", lengths, &o.n_lengths));
    o.lengths = lengths_s ? lengths : NULL;
    o.random_weights = !o.model_path;
    o.seed = (uint64_t)seed;
    KS_TRY(ks_stage_devices_parse(&o.device_words, &o.dev));
    KS_TRY(check_sweep(&o));
    ks_mpi mpi = {0};
    KS_TRY(ks_mpi_init(&mpi, &argc, &argv));
    eval_timing t = {0};
    ks_status st = eval_run(&o, &mpi, argc, argv, &t);
    if (st == KS_OK && mpi.rank == 0) {
        print_timing(&o, &t, mpi.size);
        if (out) st = write_json(out, &o, &t);
    }
    ks_mpi_finalize(&mpi);
    return st;
}
