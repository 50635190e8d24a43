/* cmd_prepare.c — `kvscope prepare`: write a benchmark's samples as JSON lines, to inspect the data a run
 * would use.
 *
 *     kvscope prepare --cfg_path configs/benchmarks/RULER.yaml --model_path M --output ruler.jsonl [--limit N]
 *
 * M is anything ks_tokenizer_load accepts (a model directory, a .gguf, a tokenizer.json): RULER sizes its
 * prompts with the model's own tokenizer, LongBench truncates with it. Each line holds task, length, index,
 * seed, prompt, answer_prefix, prompt_tokens, answers, max_new_tokens, metric, use_template, stop_on_newline
 * (and all_classes where the task has them). A progress line per finished (task, length) goes to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench.h"
#include "bench/bench_config.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "tokenizer/tokenizer.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A JSON string literal: quotes, backslashes and control characters escaped, UTF-8 kept as is. */
static void put_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*p < 0x20) fprintf(out, "\\u%04x", *p);
            else fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void put_strings(FILE *out, char *const *v, int n) {
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", out);
        put_string(out, v[i]);
    }
    fputc(']', out);
}

static void write_sample(FILE *out, const ks_sample *s) {
    fputs("{\"task\": ", out);
    put_string(out, s->task);
    fprintf(out, ", \"length\": %d, \"index\": %d, \"seed\": %llu, \"prompt\": ", s->length, s->index,
            (unsigned long long)s->seed);
    put_string(out, s->prompt);
    fputs(", \"answer_prefix\": ", out);
    put_string(out, s->answer_prefix);
    fprintf(out, ", \"prompt_tokens\": %d, \"answers\": ", s->prompt_tokens);
    put_strings(out, s->answers, s->n_answers);
    if (s->all_classes) {
        fputs(", \"all_classes\": ", out);
        put_strings(out, s->all_classes, s->n_classes);
    }
    fprintf(out, ", \"max_new_tokens\": %d, \"metric\": ", s->max_new_tokens);
    put_string(out, s->metric);
    fprintf(out, ", \"use_template\": %s, \"stop_on_newline\": %s}\n", s->use_template ? "true" : "false",
            s->stop_on_newline ? "true" : "false");
}

static ks_status prepare(const ks_bench_config *cfg, const ks_tokenizer *tok, const char *path, int limit) {
    ks_bench *b;
    double t0 = now_s();
    KS_TRY(ks_bench_open(&b, cfg, tok));
    ks_sample_id *ids = NULL;
    int n = 0;
    ks_status st = ks_bench_list(b, limit, &ids, &n);
    FILE *out = st == KS_OK ? fopen(path, "w") : NULL;
    if (st == KS_OK && !out) st = ks_fail(KS_ERR_IO, "%s: cannot create the output file", path);
    long tokens = 0;
    double group_t = now_s();
    for (int i = 0; i < n && st == KS_OK; i++) {
        ks_sample s;
        st = ks_bench_get(b, &ids[i], &s);
        if (st != KS_OK) break;
        write_sample(out, &s);
        tokens += s.prompt_tokens;
        ks_sample_free(&s);
        if (ferror(out)) st = ks_fail(KS_ERR_IO, "%s: write failed", path);
        int last_of_group = i + 1 == n || strcmp(ids[i + 1].task, ids[i].task) || ids[i + 1].length != ids[i].length;
        if (last_of_group) {
            double t = now_s();
            fprintf(stderr, "prepare: %d/%d samples  %s", i + 1, n, ids[i].task);
            if (ids[i].length) fprintf(stderr, " @ %d", ids[i].length);
            fprintf(stderr, " done in %.2f s  (total %.1f s)\n", t - group_t, t - t0);
            group_t = t;
        }
    }
    if (out && fclose(out) != 0 && st == KS_OK) st = ks_fail(KS_ERR_IO, "%s: write failed", path);
    if (st == KS_OK)
        fprintf(stderr, "prepare: wrote %d samples (%ld prompt tokens) to %s in %.1f s\n", n, tokens, path, now_s() - t0);
    free(ids);
    ks_bench_close(b);
    return st;
}

ks_status ks_cmd_prepare(int argc, char **argv) {
    const char *cfg_path = NULL, *model_path = NULL, *output = NULL;
    int limit = 0;
    const ks_option opts[] = {
        {"cfg_path", KS_OPT_STRING, &cfg_path, "F", "benchmark YAML (configs/benchmarks/NAME.yaml)", 1},
        {"model_path", KS_OPT_STRING, &model_path, "M", "model directory, .gguf or tokenizer.json (for its tokenizer)", 1},
        {"output", KS_OPT_STRING, &output, "F", "JSONL file to write, one sample per line", 1},
        {"limit", KS_OPT_INT, &limit, "N", "first N samples per task (and length); 0 = all", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "prepare", "write a benchmark's samples (prompts, answers) as JSONL", &help));
    if (help) {
        fputc('\n', stdout);
        ks_bench_config_print_keys(stdout);
        return KS_OK;
    }
    if (limit < 0) return ks_fail(KS_ERR_ARG, "prepare: --limit must be 0 (all) or positive");
    ks_bench_config cfg = {0};
    ks_tokenizer *tok = NULL;
    ks_status st = ks_bench_config_load(&cfg, cfg_path);
    if (st == KS_OK) st = ks_tokenizer_load(&tok, model_path);
    if (st == KS_OK) st = prepare(&cfg, tok, output, limit);
    ks_tokenizer_free(tok); /* one exit: both are released whichever step failed */
    ks_bench_config_free(&cfg);
    return st;
}
