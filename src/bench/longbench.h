/* longbench.h — LongBench v1 (THUDM/LongBench): the published JSONL records, LB's
 * per-task prompt formats and generation lengths, middle truncation, and the per-task scoring options.
 *
 *     ks_longbench *lb;
 *     KS_TRY(ks_longbench_open(&lb, &cfg, tok));     // indexes <longbench_dir>/<task>.jsonl for each task
 *     int n = ks_longbench_count(lb, "hotpotqa");
 *     ks_sample s = {0};
 *     KS_TRY(ks_longbench_get(lb, "hotpotqa", 0, &s)); // record 0 (file order), prompt formatted and truncated
 *     ks_sample_free(&s);
 *     ks_longbench_close(lb);
 *
 * Task ids with the LongBench-E suffix "_e" read <task>_e.jsonl and use the base task's format and limits.
 * Records are read on demand from byte offsets found when opening, so the full data set is never in memory.
 */
#ifndef KS_LONGBENCH_H
#define KS_LONGBENCH_H

#include "bench/bench_config.h"
#include "bench/sample.h"
#include "tokenizer/tokenizer.h"

typedef struct ks_longbench_task {
    const char *name;
    const char *prompt;      /* LB config/dataset2prompt.json format with {context} and {input} */
    int max_new_tokens;      /* LB config/dataset2maxlen.json */
    const char *metric;      /* LB dataset2metric */
    int first_line;          /* score only the first line of the prediction (trec, triviaqa, samsum, lsht) */
    int stop_on_newline;     /* generation stops at "\n" and produces at least one token (samsum) */
} ks_longbench_task;

/* The task for an id ("hotpotqa" or "hotpotqa_e"), or NULL. */
const ks_longbench_task *ks_longbench_task_find(const char *name);
const ks_longbench_task *ks_longbench_task_at(int i);
int ks_longbench_task_count(void);

/* LB pred.py's tasks that skip the chat template (NULL-terminated); the config default for LongBench. */
extern const char *const ks_longbench_no_template_tasks[];

/* The prompt: t->prompt with {context} and {input} replaced by the record's fields. *out is caller-freed. */
ks_status ks_longbench_format(const ks_longbench_task *t, const char *context, const char *input, char **out);

/* LB middle truncation: if encode(prompt) (with BOS etc.) is longer than max_length tokens, keep
 * decode(first half) + decode(last half) of floor(max_length / 2) tokens each, special tokens skipped.
 * *out is the (possibly unchanged) prompt, caller-freed; *truncated tells which. */
ks_status ks_longbench_truncate(const ks_tokenizer *tok, const char *prompt, int max_length, char **out, int *truncated);

typedef struct ks_longbench ks_longbench;

/* Indexes the configured tasks' files. A missing longbench_dir or file is KS_ERR_IO naming it. */
ks_status ks_longbench_open(ks_longbench **out, const ks_bench_config *cfg, const ks_tokenizer *tok);
/* Records of `task` (0 if it is not configured). */
int ks_longbench_count(const ks_longbench *lb, const char *task);
/* Reads record `index` of `task` into *out (zeroed first). */
ks_status ks_longbench_get(ks_longbench *lb, const char *task, int index, ks_sample *out);
void ks_longbench_close(ks_longbench *lb);

#endif
