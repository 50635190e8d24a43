/* cmd_report.c — `kvscope report FILES... [--format md|csv] [--csv F] [--plot F.svg]`: LOOM-Scope-style
 * score tables from result files (rows = lengths; columns = tasks for one file, methods for several; plus
 * average and time) on stdout, optionally a CSV copy and an SVG plot of score vs length (see
 * results/report.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "results/report.h"

static const char *summary = "score tables (Markdown or CSV) and a score-vs-length SVG plot from result files";

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Splits argv into the positional FILES and the options (every option of this command takes a value, so the
 * argument after a bare "--name" belongs to it). opt_argv and files have room for argc entries. */
static void split_args(int argc, char **argv, char **opt_argv, int *n_opt, const char **files, int *n_files) {
    opt_argv[0] = argv[0];
    *n_opt = 1;
    *n_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int is_help = !strcmp(a, "--help") || !strcmp(a, "-h");
        if (strncmp(a, "--", 2) != 0 && !is_help) {
            files[(*n_files)++] = a;
            continue;
        }
        opt_argv[(*n_opt)++] = argv[i];
        if (!is_help && !strchr(a, '=') && i + 1 < argc) opt_argv[(*n_opt)++] = argv[++i];
    }
}

static ks_status write_csv(const ks_report *rep, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return ks_fail(KS_ERR_IO, "%s: cannot create the CSV file", path);
    ks_status st = ks_report_print(rep, f, KS_REPORT_CSV, path);
    if (fclose(f) != 0 && st == KS_OK) st = ks_fail(KS_ERR_IO, "%s: write failed", path);
    return st;
}

ks_status ks_cmd_report(int argc, char **argv) {
    const char *format = "md", *csv = NULL, *plot = NULL;
    const ks_option opts[] = {
        {"format", KS_OPT_STRING, &format, "md|csv", "table format on stdout", 0},
        {"csv", KS_OPT_STRING, &csv, "F", "also write the table as CSV to F", 0},
        {"plot", KS_OPT_STRING, &plot, "F.svg", "write a score-vs-length plot (SVG)", 0},
        {0},
    };
    char **opt_argv = ks_calloc((size_t)argc + 1, sizeof(char *), "arguments");
    const char **files = ks_calloc((size_t)argc + 1, sizeof(char *), "arguments");
    ks_status st = opt_argv && files ? KS_OK : KS_ERR_NOMEM;
    int n_opt = 0, n_files = 0, help = 0;
    if (st == KS_OK) {
        split_args(argc, argv, opt_argv, &n_opt, files, &n_files);
        st = ks_options_parse(opts, n_opt, opt_argv, "report FILES...", summary, &help);
    }
    if (st == KS_OK && !help) {
        if (strcmp(format, "md") && strcmp(format, "csv"))
            st = ks_fail(KS_ERR_ARG, "option --format: '%s' is not md or csv", format);
        else if (plot && !has_suffix(plot, ".svg"))
            st = ks_fail(KS_ERR_ARG, "option --plot: '%s': only SVG plots are written (name it .svg; convert "
                         "with e.g. rsvg-convert for PNG)", plot);
        else if (n_files == 0)
            st = ks_fail(KS_ERR_ARG, "kvscope report: give one or more result files (.h5), e.g. kvscope report "
                         "results/*.h5");
    }
    ks_report rep = {0};
    if (st == KS_OK && !help) {
        st = ks_report_load(&rep, files, n_files);
        if (st == KS_OK)
            st = ks_report_print(&rep, stdout, strcmp(format, "csv") ? KS_REPORT_MD : KS_REPORT_CSV, "stdout");
        if (st == KS_OK && csv) st = write_csv(&rep, csv);
        if (st == KS_OK && plot) st = ks_report_write_svg(&rep, plot);
        ks_report_free(&rep);
    }
    free(opt_argv);
    free(files);
    return st;
}
