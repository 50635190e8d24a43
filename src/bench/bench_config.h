/* bench_config.h — the benchmark YAML (configs/benchmarks/<name>.yaml), in LOOM-Scope's format.
 *
 *     ks_bench_config c = {0};
 *     KS_TRY(ks_bench_config_load(&c, "configs/benchmarks/RULER.yaml"));
 *     for (int t = 0; t < c.n_tasks; t++) ... c.task_names[t] ...
 *     int chat = ks_bench_config_use_template(&c, "fwe", 4096);   // 0: feed the prompt raw
 *     ks_bench_config_free(&c);
 *
 * Loading is all or nothing: on an error the struct is left zeroed (nothing to free), so returning at the error
 * as above leaks nothing; ks_bench_config_free also accepts a zeroed struct.
 *
 * The keys are LOOM-Scope's (benchmark_name, task_names, length, num_samples, build_data, no_template_tasks,
 * template) plus kvscope's own: seed, ruler_variant, data paths and max_length. One table in bench_config.c
 * lists every key with its type, default and bounds; parsing, defaults, validation and `kvscope prepare --help`
 * text all come from it. Unknown keys, wrong types, out-of-range values and task names the benchmark does not
 * have are KS_ERR_ARG with a message naming the file, line and key.
 *
 * Relative paths are taken relative to the current directory (run kvscope from the repository root, as
 * LOOM-Scope is run). data_dir defaults to $KS_DATA_DIR, else the data installed with kvscope
 * (<bin>/../share/kvscope/data), else the data/ folder of the source tree it was built from.
 */
#ifndef KS_BENCH_CONFIG_H
#define KS_BENCH_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef enum ks_bench_kind { KS_BENCH_RULER, KS_BENCH_LONGBENCH } ks_bench_kind;

/* Where LOOM-Scope's RULER copy differs from NVIDIA RULER (ruler.h lists the differences). */
typedef enum ks_ruler_variant {
    KS_RULER_VARIANT_RULER, /* current RULER: answer prefix kept apart (after the chat template's assistant
                               header), VT/FWE fixes, essay repetition */
    KS_RULER_VARIANT_LOOM,  /* LOOM-Scope: answer prefix inside the user text, VT ICL quirks, FWE budget L */
} ks_ruler_variant;

typedef struct ks_bench_config {
    char *path;                /* owned copy of the file path (for messages) */
    char *yaml_text;           /* owned: the file as read (echoed into result files) */
    ks_bench_kind kind;        /* from benchmark_name */
    char *benchmark_name;      /* owned: "RULER" or "LongBench" */
    char **task_names;         /* (n_tasks) owned */
    int n_tasks;
    int *lengths;              /* (n_lengths) owned; RULER target lengths in tokens */
    int n_lengths;
    int num_samples;           /* RULER: samples per (task, length) */
    int build_data;            /* accepted for LOOM compatibility; generation is always on the fly */
    char **no_template_tasks;  /* (n_no_template) owned task-name substrings */
    int n_no_template;
    int no_template_all;       /* no_template_tasks: all (or ["all"]) */
    char *template_name;       /* owned chat template name, NULL = none (YAML null) */
    uint64_t seed;             /* run seed: every sample is a function of (seed, task, length, index) */
    ks_ruler_variant ruler_variant;
    char *data_dir;            /* owned; the shared data folder the defaults below hang off */
    char *essays_dir;          /* owned; *.txt essays for the essay haystack */
    char *wordlists_dir;       /* owned; nounlist.txt, adjectivelist.txt, verblist.txt */
    char *squad_path;          /* owned or NULL; SQuAD v2.0 dev JSON for qa_1 */
    char *hotpotqa_path;       /* owned or NULL; HotpotQA dev-distractor JSON for qa_2 */
    char *longbench_dir;       /* owned or NULL; folder of <task>.jsonl files */
    int max_length;            /* LongBench middle truncation threshold in tokens (with BOS) */
} ks_bench_config;

ks_status ks_bench_config_load(ks_bench_config *c, const char *path);
/* Parses YAML text; `path` names it in messages (tests use this with inline text). */
ks_status ks_bench_config_parse(ks_bench_config *c, const char *text, size_t len, const char *path);
void ks_bench_config_free(ks_bench_config *c);

/* 1 when the chat template applies to this task: a template is set and no no_template_tasks entry is a
 * substring of the task id ("{task}_{length}" for RULER, the task name for LongBench). */
int ks_bench_config_use_template(const ks_bench_config *c, const char *task, int length);

/* Prints the table of keys (name, type, default, meaning) for --help. */
void ks_bench_config_print_keys(FILE *out);

#endif
