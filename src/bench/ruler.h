/* ruler.h — NVIDIA RULER's 13 synthetic tasks, generated in C.
 *
 *     ks_ruler *r;
 *     KS_TRY(ks_ruler_open(&r, &cfg, tok));        // loads the essays / word lists / QA files the tasks need
 *     ks_sample s = {0};
 *     KS_TRY(ks_ruler_generate(r, "niah_single_2", 32768, 3, &s));
 *     ... s.prompt, s.answer_prefix, s.prompt_tokens, s.answers ...
 *     ks_sample_free(&s);
 *     ks_ruler_close(r);
 *
 * A sample is a pure function of (cfg->seed, task, length, index): any rank, any order, any resumed run
 * rebuilds it byte for byte. Sizing follows RULER: the haystack grows until
 *     prompt_tokens + tokens_to_generate <= length
 * where prompt_tokens counts prompt + answer_prefix with the model's tokenizer and no special tokens, and
 * (variant ruler) the budget is also reduced by what the model input adds around the prompt: BOS, and the
 * chat template's markup for tasks that get the template, as RULER sizes the templated input. Each
 * sample takes the largest haystack (in the task's units: noise lines, essay words, distractor needles, list
 * words, coded words or documents) that fits, which is what RULER's binary search finds for its probe sample;
 * the prompt therefore lands within about one unit below the target (slack_for() in tests/check_ruler.c
 * states the bound per unit). The search counts tokens by summing per-unit costs measured once and
 * tokenizes a candidate prompt only to confirm it, so a 128K prompt is encoded two or three times, not dozens.
 *
 * Variants (cfg->ruler_variant): KS_RULER_VARIANT_RULER (default) keeps the answer prefix in
 * sample.answer_prefix, to be appended after the chat template's assistant header (RULER prepare.py);
 * KS_RULER_VARIANT_LOOM folds it into the prompt and reproduces LOOM-Scope's differences: the VT
 * example quirks and the "assgined" typo, FWE sized against L, no essay repetition, the CWE example answer
 * glued to its prefix, vt's 80-token generation limit. Both variants use the per-sample search above; LOOM's
 * coarse linear growth steps and its answer-in-the-count probe are not reproduced.
 */
#ifndef KS_RULER_H
#define KS_RULER_H

#include "bench/bench_config.h"
#include "bench/sample.h"
#include "tokenizer/tokenizer.h"

typedef enum ks_ruler_gen {
    KS_RULER_NIAH,
    KS_RULER_VT,   /* variable_tracking */
    KS_RULER_CWE,  /* common_words_extraction */
    KS_RULER_FWE,  /* freq_words_extraction */
    KS_RULER_QA,
} ks_ruler_gen;

/* One row of the task table (RULER's scripts/synthetic.yaml + constants.py). */
typedef struct ks_ruler_task {
    const char *name;
    ks_ruler_gen gen;
    const char *haystack;       /* niah: "noise", "essay" or "needle" */
    const char *type_k, *type_v;/* niah: "words", "numbers" or "uuids" */
    int num_k, num_v, num_q;    /* niah: keys, values per key, queried keys */
    const char *dataset;        /* qa: "squad" or "hotpotqa" */
    int tokens_to_generate;     /* the sizing budget (RULER constants) */
    int loom_max_new_tokens;    /* LOOM's generation limit (LLM_params: vt 80); RULER generates tokens_to_generate */
    const char *metric;         /* "string_match_all" or "string_match_part" */
} ks_ruler_task;

/* The task named `name`, or NULL. */
const ks_ruler_task *ks_ruler_task_find(const char *name);
/* Task i of the table (0 <= i < ks_ruler_task_count()). */
const ks_ruler_task *ks_ruler_task_at(int i);
int ks_ruler_task_count(void);

typedef struct ks_ruler ks_ruler; /* opaque: config, tokenizer and the data the configured tasks need */

/* Loads what cfg->task_names need (essays, word lists, SQuAD/HotpotQA files) and measures token costs with
 * `tok`. Both must outlive the generator. A missing file is KS_ERR_IO naming the file and the config key. */
ks_status ks_ruler_open(ks_ruler **out, const ks_bench_config *cfg, const ks_tokenizer *tok);
/* Builds sample `index` of `task` at target length `length` into *out (which it zeroes first). Not
 * thread-safe: use one ks_ruler per thread. */
ks_status ks_ruler_generate(ks_ruler *r, const char *task, int length, int index, ks_sample *out);
void ks_ruler_close(ks_ruler *r);

#endif
