/* sample.h — one benchmark sample: what the model is asked. What it answered is a ks_result (results/record.h).
 *
 * Samples are produced by the benchmark modules (RULER generator, LongBench reader), identified by
 * (task, length, index), and are deterministic from (run seed, task, length, index).
 *
 *     ks_sample s = {0};  ... filled by a generator ...;  ks_sample_free(&s);
 */
#ifndef KS_SAMPLE_H
#define KS_SAMPLE_H

#include <stdint.h>

#include "results/record.h" /* KS_TASK_MAX */

#define KS_METRIC_MAX 32 /* "string_match_all", "qa_f1_score", "rouge_zh_score", ... */

typedef struct ks_sample {
    char task[KS_TASK_MAX];     /* task name, e.g. "niah_single_1", "hotpotqa" */
    int length;                 /* nominal length bucket in tokens (RULER target length; LongBench: 0) */
    int index;                  /* index within (task, length) */
    uint64_t seed;              /* per-sample seed derived from (run seed, task, length, index) */
    char *prompt;               /* owned UTF-8: the full user text before any chat template */
    char *answer_prefix;        /* owned UTF-8 text the model's answer starts with, appended after the chat
                                   template's assistant header (RULER); "" or NULL when none */
    int prompt_tokens;          /* tokens of prompt + answer_prefix under the model tokenizer without specials
                                   (the count RULER sizes by) */
    char **answers;             /* (n_answers) owned reference answers */
    int n_answers;
    char **all_classes;         /* (n_classes) owned, LongBench classification tasks; else NULL */
    int n_classes;
    int max_new_tokens;         /* generation budget for this task */
    int use_template;           /* 0: feed the prompt raw (no_template_tasks); 1: apply the chat template */
    int stop_on_newline;        /* LongBench tasks that stop at "\n" (samsum etc.) */
    char metric[KS_METRIC_MAX]; /* scoring function name */
} ks_sample;

void ks_sample_free(ks_sample *s);

#endif
