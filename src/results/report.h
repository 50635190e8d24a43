/* report.h — LOOM-Scope-style score tables and a score-vs-length plot from result files (`kvscope report`;
 * `kvscope eval` prints the table at the end of a run).
 *
 *     ks_report rep = {0};
 *     KS_TRY(ks_report_load(&rep, paths, n_paths));     // reads each file with ks_results_read()
 *     ks_report_print(&rep, stdout, KS_REPORT_MD);      // or KS_REPORT_CSV
 *     KS_TRY(ks_report_write_svg(&rep, "scores.svg"));
 *     ks_report_free(&rep);
 *
 * One file: rows = nominal lengths ascending (4K ... 128K; LongBench's length 0 shows as "all"), then "Avg";
 * columns = the file's tasks (sorted by name), "Avg" (mean over the row's samples, i.e. weighted by sample
 * count as LOOM-Scope's tables are) and "Time" (summed prefill + decode seconds of the row's samples).
 * Several files: the same rows, one column per file (its `method` attribute, else its file name; the file
 * name when methods repeat), then a "Reasoning time" row with each run's wall time (wall_seconds).
 * Markdown prints scores with 2 decimals and times as H:MM:SS; CSV keeps 4 decimals and seconds. A cell
 * without samples is "-" in Markdown and empty in CSV. The plot draws one line per column over the lengths.
 */
#ifndef KS_REPORT_H
#define KS_REPORT_H

#include <stdio.h>

#include "core/status.h"

typedef enum ks_report_format {
    KS_REPORT_MD,
    KS_REPORT_CSV,
} ks_report_format;

typedef struct ks_report {
    int by_method;         /* 1: one column per file (several files); 0: one column per task (one file) */
    int n_lengths;
    int *lengths;          /* (n_lengths) nominal lengths, ascending */
    int n_cols;
    char **cols;           /* (n_cols) owned column names: tasks or methods */
    double *score;         /* (n_lengths + 1) x n_cols row-major mean scores, NAN where no sample; the last row
                              is the mean over every length */
    double *row_avg;       /* (n_lengths + 1) one file: mean over the row's samples; NULL when by_method */
    double *row_seconds;   /* (n_lengths + 1) one file: summed prefill + decode seconds; NULL when by_method */
    double *wall_seconds;  /* (n_cols) by_method: each run's wall time in seconds; NULL otherwise */
    int n_samples;         /* samples over all files */
    char *title;           /* owned caption, e.g. "RULER · SmolLM2-135M · SnapKV" ("" if nothing is known) */
} ks_report;

/* Reads the files and fills the tables; errors name the file. */
ks_status ks_report_load(ks_report *rep, const char *const *paths, int n_paths);
void ks_report_free(ks_report *rep);

/* Writes the table; the status reports a failed write (e.g. a full disk) naming `what` (a path or "stdout"). */
ks_status ks_report_print(const ks_report *rep, FILE *out, ks_report_format fmt, const char *what);

/* "4K" for 4096, "all" for 0, else the number: the row label of a nominal length. */
void ks_report_length_label(int length, char *out, size_t cap);

/* Writes an SVG line plot of score vs length, one line per column (plus the row average for one file). */
ks_status ks_report_write_svg(const ks_report *rep, const char *path);

#endif
