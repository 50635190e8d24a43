/* metrics.h — the scorers of RULER (scripts/eval/synthetic/constants.py) and LongBench v1 (metrics.py), with
 * their exact normalisation.
 *
 *     double s;
 *     KS_TRY(ks_bench_score(&sample, prediction, &s));   // the sample's metric, post-processing, max over
 *                                                        // answers; s in [0, 1] (×100 for reports)
 *     double f1 = ks_metric_qa_f1("The cat sat.", "a cat");   // one prediction against one answer
 *
 * Every ks_metric_* returns a score in [0, 1], or -1 only when memory ran out. Text is UTF-8 and handled
 * per code point with Python's rules (pychar.h). Two deliberate departures from the Python originals:
 *  - Chinese tokenisation (jieba in LongBench) is per character: each CJK character or punctuation mark is a
 *    token, runs of ASCII letters and digits are one token, whitespace separates. qa_f1_zh_score and
 *    rouge_zh_score therefore count character overlap, not jieba-word overlap.
 *  - LongBench raises on a retrieval answer without "Paragraph N"/"段落N"; here that scores 0.
 */
#ifndef KS_METRICS_H
#define KS_METRICS_H

#include "bench/sample.h"
#include "core/status.h"

/* RULER: share of refs found case-insensitively in pred / 1 if any ref is found. */
double ks_metric_string_match_all(const char *pred, char *const *refs, int n_refs);
double ks_metric_string_match_part(const char *pred, char *const *refs, int n_refs);

/* LongBench, one prediction against one ground truth (all_classes only for classification). */
double ks_metric_qa_f1(const char *pred, const char *gt);
double ks_metric_qa_f1_zh(const char *pred, const char *gt);
double ks_metric_rouge(const char *pred, const char *gt);
double ks_metric_rouge_zh(const char *pred, const char *gt);
double ks_metric_classification(const char *pred, const char *gt, char *const *classes, int n_classes);
double ks_metric_retrieval(const char *pred, const char *gt);
double ks_metric_retrieval_zh(const char *pred, const char *gt);
double ks_metric_count(const char *pred, const char *gt);
double ks_metric_code_sim(const char *pred, const char *gt);

/* 1 if `name` is a metric ks_bench_score knows. */
int ks_metric_known(const char *name);

/* Scores a prediction for a sample by its metric: RULER metrics post-process the prediction (strip, control
 * characters to "\n", strip) and score against all answers; LongBench metrics cut to the first line for the
 * tasks that ask for it and take the maximum over answers. *score is in [0, 1]. */
ks_status ks_bench_score(const ks_sample *s, const char *prediction, double *score);

/* ---- the pieces, exposed for tests (each returns a malloc'd string or NULL when out of memory) ---- */

/* LongBench normalize_answer: lower, drop ASCII punctuation, articles a/an/the to " ", collapse whitespace. */
char *ks_normalize_answer(const char *s);
/* LongBench normalize_zh_answer: lower, drop ASCII and CJK punctuation, delete all whitespace. */
char *ks_normalize_zh_answer(const char *s);
/* Python str.split(): splits `s` in place on whitespace runs; *words points into s (caller frees *words).
 * Returns the word count, or -1 when out of memory. */
int ks_split_whitespace(char *s, char ***words);
/* The per-character Chinese tokenisation above, joined by single spaces (as " ".join(jieba.cut(s))). */
char *ks_zh_tokens_joined(const char *s);
/* pltrdy/rouge ROUGE-L F (summary level, exclusive) of hyp against ref, 0 where that package raises. */
double ks_rouge_l(const char *hyp, const char *ref);
/* difflib.SequenceMatcher(None, a, b).ratio() over code points (autojunk on). */
double ks_seqmatch_ratio(const char *a, const char *b);

#endif
