/* eval_impl.h — `kvscope eval`'s options and run (cmd_eval.c), shared with `kvscope bench --sweep`
 * (bench_sweep.c), which runs the same evaluation (scheduler, methods, result file, score table) on a
 * random-weight model of a config's shape and times it:
 *
 *     eval_opts o = {... as ks_cmd_eval's defaults ..., .random_weights = 1, .tokenizer_path = "tokenizer.json"};
 *     eval_timing t;
 *     KS_TRY(eval_run(&o, &mpi, argc, argv, &t));   // rank 0: t.wall_s, t.prefill_s, t.decode_s, t.samples
 */
#ifndef KS_EVAL_IMPL_H
#define KS_EVAL_IMPL_H

#include <stdint.h>

#include "cli/options.h"
#include "cli/stages.h"
#include "ks_mpi.h"

typedef struct eval_opts {
    const char *model_path, *cfg_path, *acceleration, *torch_dtype, *gp_num, *output, *template_name;
    const char *method_config;
    ks_opt_strings method_opts; /* --method_opt key=value, in order */
    int limit, threads, chunk;
    int batch; /* samples decoding together per instance; 0: as many as fit the memory (the cpu) */
    const char *kv_cache; /* "auto", "budget" or "full" (ks_forward_cache) */
    const char *cpu_weights; /* "packed" or "f32" (ks_cpu_weights) */
    int max_new_tokens; /* > 0: cap every sample's generation budget (quick runs); part of the identity */
    float stage_timeout; /* seconds a pipeline stage waits for its neighbour before the job ends */
    ks_opt_strings device_words; /* --device: cpu, cuda, or GPU indices */
    ks_stage_devices dev;        /* the backend and GPUs they name (cli/stages.h) */
    /* kvscope bench --sweep */
    int random_weights;          /* 1: the shape of shape_config (NULL: Llama-3.1-8B) with random weights from
                                    `seed` on the GPU (speed/speed_model.h) in place of model_path; every answer
                                    then runs to its max_new_tokens (stop ids ignored) */
    const char *shape_config;
    uint64_t seed;
    const char *tokenizer_path;  /* NULL: model_path's */
    const int *lengths;          /* (n_lengths) RULER target lengths in place of the config's; NULL: the config's */
    int n_lengths;
} eval_opts;

/* What rank 0 measured of the sample loop: its wall seconds, the samples run in it and the sums of their prefill
 * and decode seconds (a batched step's time divided among its samples), the slots of its batch, the result file. */
typedef struct eval_timing {
    double wall_s, prefill_s, decode_s;
    int samples, batch;
    char path[4096];
} eval_timing;

/* The evaluation once MPI is up (o->dev parsed); t (may be NULL) filled on rank 0. */
ks_status eval_run(const eval_opts *o, const ks_mpi *mpi, int argc, char **argv, eval_timing *t);

#endif
