/* main.c — `kvscope <subcommand> [options]`: dispatch, top-level --help, and the one error line. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/cpu_env.h"
#include "core/log.h"
#include "core/status.h"

#ifndef KS_VERSION
#define KS_VERSION "0.0.0"
#endif

static const ks_command commands[] = {
    {"generate", "run a prompt through a model and print the continuation", ks_cmd_generate},
    {"tokenize", "encode JSONL text lines to token ids", ks_cmd_tokenize},
    {"info", "print a model's parsed config and tensor inventory", ks_cmd_info},
    {"eval", "evaluate a model and a KV method on a benchmark (resumable; MPI)", ks_cmd_eval},
    {"prepare", "write a benchmark's samples (prompts, answers) as JSONL", ks_cmd_prepare},
    {"report", "score tables and a plot from result files (.h5)", ks_cmd_report},
    {"bench", "speed: a random-weight model on the GPU, or a checkpoint on the CPU (--device cpu --model F)",
     ks_cmd_bench},
};

static void usage(FILE *out) {
    fprintf(out, "kvscope %s — long-context KV-cache method evaluation\n\nusage: kvscope <command> [options]\n\n"
                 "commands:\n", KS_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`kvscope <command> --help` describes each command's options.\n");
}

int main(int argc, char **argv) {
    ks_cpu_env_settle(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("kvscope %s\n", KS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name)) continue;
        ks_status st = commands[i].run(argc - 1, argv + 1);
        if (st != KS_OK) {
            if (!ks_error_is_reported()) ks_log_error_now();
            return 1;
        }
        return 0;
    }
    fprintf(stderr, "kvscope: error: unknown command '%s' (run `kvscope --help` for the list)\n", argv[1]);
    return 2;
}
