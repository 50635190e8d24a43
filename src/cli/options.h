/* options.h — one table drives parsing, validation and --help for every subcommand.
 *
 *     const char *model = NULL; int max_new = 64; int chat = 0;
 *     const ks_option opts[] = {
 *         {"model_path", KS_OPT_STRING, &model, "P", "HF model directory or .gguf file (required)", 1},
 *         {"max_new_tokens", KS_OPT_INT, &max_new, "N", "tokens to generate", 0},
 *         {"chat", KS_OPT_FLAG, &chat, NULL, "apply the model's chat template", 0},
 *         {0},
 *     };
 *     ks_status st = ks_options_parse(opts, argc, argv, "generate", "summary line", &help);
 *     if (help) return 0;   // --help printed the table
 *
 * Accepts `--name value` and `--name=value`. Unknown options, missing values, bad numbers and missing required
 * options are KS_ERR_ARG with a message naming the option. Defaults are whatever the variables hold before the
 * call, and --help prints them.
 */
#ifndef KS_OPTIONS_H
#define KS_OPTIONS_H

#include "core/status.h"

typedef enum ks_option_kind {
    KS_OPT_STRING, /* const char ** (borrows argv) */
    KS_OPT_INT,    /* int * */
    KS_OPT_FLOAT,  /* float * */
    KS_OPT_FLAG,   /* int *, set to 1 when present */
    KS_OPT_STRINGS, /* ks_opt_strings *: repeatable, each occurrence appends (borrows argv) */
    KS_OPT_WORDS,   /* ks_opt_strings *: one or more values, `--name a b c` (up to the next --option) or
                       `--name=a`; repeatable, appending (borrows argv) */
} ks_option_kind;

#define KS_OPT_STRINGS_MAX 64

typedef struct ks_opt_strings {
    const char *v[KS_OPT_STRINGS_MAX];
    int n;
} ks_opt_strings;

typedef struct ks_option {
    const char *name;    /* long name without the leading "--"; NULL ends the table */
    ks_option_kind kind;
    void *value;         /* where the parsed value goes (type per kind) */
    const char *metavar; /* shown in --help ("N", "PATH"); NULL for flags */
    const char *help;    /* one line */
    int required;
} ks_option;

/* Parses argv[1..argc) (argv[0] is the subcommand name). Sets *help_shown when --help/-h was given. */
ks_status ks_options_parse(const ks_option *opts, int argc, char **argv, const char *command,
                           const char *summary, int *help_shown);

void ks_options_print_help(const ks_option *opts, const char *command, const char *summary);

#endif
