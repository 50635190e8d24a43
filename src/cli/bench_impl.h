/* bench_impl.h — what the parts of `kvscope bench` share: cmd_bench.c (options, set-up, one rank, the table and
 * JSON), bench_methods.c (--acceleration), bench_stages.c (`--gp_num k`: one model instance pipelined over k
 * ranks) and bench_cpu.c (`--device cpu --model F`). Internal to src/cli. */
#ifndef KS_CLI_BENCH_IMPL_H
#define KS_CLI_BENCH_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cli/stages.h"
#include "engine/pipeline.h"
#include "engine/pipeline_meter.h"
#include "ks_mpi.h"

#define MAX_LENGTHS 32 /* --lengths */
#define MAX_METHODS 16 /* --acceleration */
#define MAX_DENSITIES 8 /* --sparse_densities */

typedef struct bench_opts {
    int chunk, steps, repeat;
    int chunk_auto; /* --chunk was left at 0: a method that needs the whole prompt in one chunk gets it */
    uint64_t seed;
} bench_opts;

/* What one context length measured. */
typedef struct length_result {
    int length;
    double prefill_s, decode_ms;
    size_t peak_bytes;       /* device memory in use at the end of the run, beyond what was in use before (with
                                --gp_num k: the largest rank's) */
    size_t late_bytes;       /* of which allocated after the backend's init (should be ~0; one rank only) */
    size_t kv_bytes;         /* the full KV cache of the run (prompt + decode steps), bf16, every layer */
    /* --gp_num k > 1, per stage: */
    double busy_s[KS_STAGE_MAX];         /* the stage's layers alone on the prompt, no transport */
    ks_pipeline_bubble bubble;           /* against the pipelined prefill's wall time (prefill_s) */
    double prefill_bytes_per_token;      /* residual rows sent between stages, over every stage */
    double decode_bytes_per_token;
    size_t rank_bytes[KS_STAGE_MAX];     /* device memory per rank (its GPU's, where ranks share one) */
} length_result;

/* What the timing drives: one forward holding every layer, or (p set) the pipeline from its stage 0. */
typedef struct bench_drive {
    ks_forward *f; /* this rank's forward */
    ks_pipeline *p; /* NULL: f alone */
} bench_drive;

double bench_now_s(void);
/* Parameters in bf16 of layers [first, last) of c, as PyTorch counts them (norms included), with the embedding where
 * layer 0 is held and the final norm and LM head where the last layer is (tied: the embedding, held once): the
 * "weights" term of the memory budget and of the decode floor. */
size_t bench_weight_bytes(const ks_model_config *c, int first, int last);
double bench_gib(size_t bytes);

/* A prompt of n tokens from an empty cache, timed `reps` times; the median into *median_s. */
ks_status bench_time_prefill(const bench_drive *d, const int32_t *ids, int n, int reps, double *median_s,
                             int32_t *next);
/* Two untimed steps (the first runs eagerly, the second is captured as a graph), `steps` timed ones, then one
 * more whose logits the last stage checks (bench_check_logits). */
ks_status bench_time_decode(const bench_drive *d, int32_t next, int steps, double *ms);
/* The last decode step's logits of f (the last stage) read into `logits` (vocab floats) and checked finite: a
 * broken kernel shows up as NaN, not only as a time. */
ks_status bench_check_logits(ks_forward *f, float *logits);

/* Prefill runs at length L: o->repeat up to 32K, one beyond. */
int bench_reps(const bench_opts *o, int L);

/* This rank's stage of a --gp_num k > 1 run at length L (every rank calls it): m holds the stage's layer range.
 * r: every stage's busy time, idle time, bytes and memory on every rank; prefill_s and decode_ms on stage 0, which
 * drives (the caller fills kv_bytes). */
ks_status bench_stage_length(const ks_model *m, ks_stages *sg, const bench_opts *o, int L, const int32_t *ids,
                             float *logits, length_result *r);

/* One --acceleration entry: the method's name and its options (the global --method_opt ones first, then the
 * entry's own), pointing into `text` or argv. */
typedef struct method_spec {
    char text[256]; /* the entry with ':' replaced by NULs */
    const char *label, *name;
    const char *opts[KS_OPT_STRINGS_MAX];
    int n_opts;
} method_spec;

/* s = entry `NAME[:key=value...]` with the --method_opt knobs `global` first; the method is created once to
 * check it before any GPU time is spent. */
ks_status bench_parse_method(const char *entry, const ks_opt_strings *global, method_spec *s);

/* The --acceleration run on one GPU: the table on stdout, the rows as JSON at `out` (NULL: none). */
ks_status bench_methods(const ks_model *m, const bench_opts *o, const int *lengths, int nl, int32_t *ids,
                        float *logits, const method_spec *specs, int n, const char *gpu, const char *out);

/* j printed at `path` (--out); j is deleted. */
ks_status bench_write_json(const char *path, cJSON *j);

/* "4096,16384" -> out[] (room for MAX_LENGTHS); KS_ERR_ARG naming --opt on anything but positive integers. */
ks_status bench_parse_lengths(const char *s, const char *opt, int *out, int *n);

/* `kvscope bench --sweep CFG ...` (bench_sweep.c): its own options; argv starts at "bench". */
ks_status bench_sweep(int argc, char **argv);

/* `kvscope bench --device cpu`: a real checkpoint on the CPU, as generate and eval hold it. */
typedef struct bench_cpu_args {
    const char *model;          /* --model: a .gguf file or HF directory */
    int threads;                /* --threads (0: the physical cores) */
    ks_cpu_weights weights;     /* --cpu_weights */
    const int *lengths;         /* (nl) prompt lengths */
    int nl;
    const bench_opts *o;        /* chunk (0: the whole prompt in one), steps, repeat, seed */
    const char *out;            /* JSON results, or NULL */
} bench_cpu_args;

/* Per length: prefill tokens/s of a random prompt (median of o->repeat runs after one warm-up) and decode
 * tokens/s of o->steps greedy steps after it; a table on stdout and JSON at a->out. */
ks_status bench_cpu(const bench_cpu_args *a);

#endif
