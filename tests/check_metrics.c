/* check_metrics.c — every RULER and LongBench scorer on hand-made cases whose values are worked out from the
 * Python originals (RULER constants.py, LongBench metrics.py), including Unicode, Chinese and empty predictions,
 * and the originals' quirks (classification's skipped element, ROUGE's "" word and tie-break, fuzz.ratio's
 * rounding). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/metrics.h"
#include "bench/strbuf.h"
#include "test_util.h"

#define EPS 1e-9
#define ck_near(a, b) ck_assert_msg(fabs((a) - (b)) < EPS, "%s = %.12f, expected %.12f", #a, (double)(a), (double)(b))

START_TEST(test_string_match) {
    char *refs[] = {"123", "456", "789"};
    ck_near(ks_metric_string_match_all("The numbers are 123 and 456.", refs, 3), 2.0 / 3);
    ck_near(ks_metric_string_match_part("The numbers are 123 and 456.", refs, 3), 1.0);
    ck_near(ks_metric_string_match_part("none here", refs, 3), 0.0);
    ck_near(ks_metric_string_match_all("", refs, 3), 0.0);
    char *upper[] = {"QUIZZICAL-SUV", "École"};
    ck_near(ks_metric_string_match_all("the quizzical-suv and the ÉCOLE", upper, 2), 1.0); /* Unicode lower() */
}
END_TEST

static ks_sample sample_of(const char *task, const char *metric, char **answers, int n) {
    ks_sample s = {0};
    snprintf(s.task, sizeof s.task, "%s", task);
    snprintf(s.metric, sizeof s.metric, "%s", metric);
    s.answers = answers;
    s.n_answers = n;
    return s;
}

START_TEST(test_ruler_postprocess) {
    /* strip, control characters to "\n", strip: "VAR\x07ABC" becomes "VAR\nABC". */
    char *a1[] = {"ABC"}, *a2[] = {"VAR ABC"}, *a3[] = {"1234567"};
    double v;
    ks_sample s = sample_of("vt", "string_match_all", a1, 1);
    ck_assert_int_eq(ks_bench_score(&s, "  VAR\x07" "ABC \x01 ", &v), KS_OK);
    ck_near(v, 1.0);
    s = sample_of("vt", "string_match_all", a2, 1);
    ck_assert_int_eq(ks_bench_score(&s, "  VAR\x07" "ABC \x01 ", &v), KS_OK);
    ck_near(v, 0.0);
    s = sample_of("qa_1", "string_match_part", a3, 1);
    ck_assert_int_eq(ks_bench_score(&s, "", &v), KS_OK);
    ck_near(v, 0.0);
}
END_TEST

static void check_norm(char *(*fn)(const char *), const char *in, const char *want) {
    char *got = fn(in);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got, want);
    free(got);
}

START_TEST(test_normalize) {
    check_norm(ks_normalize_answer, "The Quick, brown fox!", "quick brown fox");
    check_norm(ks_normalize_answer, "An apple a day", "apple day");
    check_norm(ks_normalize_answer, "theory of the anatomy", "theory of anatomy");
    check_norm(ks_normalize_answer, "  Élan   the CAFÉ ", "élan café");
    check_norm(ks_normalize_answer, "a—b", "—b");        /* "—" is not ASCII punctuation and not a word char */
    check_norm(ks_normalize_answer, "aé the_x", "aé thex"); /* "_" is punctuation; "aé" is one word, not "a" */
    check_norm(ks_normalize_answer, "", "");
    check_norm(ks_normalize_zh_answer, "北京，是 中国的首都。", "北京是中国的首都");
    check_norm(ks_normalize_zh_answer, "ＡBC！ d", "ａbcd");
    check_norm(ks_zh_tokens_joined, "iPhone 15发布了。", "iPhone 15 发 布 了 。");
}
END_TEST

START_TEST(test_qa_f1) {
    /* pred tokens [cat sat on mat], gt [cat on mat]: P = 3/4, R = 1. */
    ck_near(ks_metric_qa_f1("The cat sat on the mat.", "cat on mat"), 2 * 0.75 / 1.75);
    ck_near(ks_metric_qa_f1("x x y", "x y y"), 2.0 / 3); /* Counter intersection: x1 + y1 */
    ck_near(ks_metric_qa_f1("", "cat"), 0.0);
    ck_near(ks_metric_qa_f1("the", "a"), 0.0);           /* both normalise to nothing */
    ck_near(ks_metric_qa_f1("Café au lait", "CAFÉ"), 2 * (1.0 / 3) / (1.0 / 3 + 1));
}
END_TEST

START_TEST(test_qa_f1_zh) {
    /* per character: pred 北京是中国的首都 (8 tokens), gt 中国首都北京 (6); 6 in common: P = 6/8, R = 1. */
    ck_near(ks_metric_qa_f1_zh("北京是中国的首都。", "中国首都北京"), 2 * 0.75 / 1.75);
    ck_near(ks_metric_qa_f1_zh("", "北京"), 0.0);
    ck_near(ks_metric_qa_f1_zh("，。！", "北京"), 0.0); /* punctuation-only tokens are dropped */
    ck_near(ks_metric_qa_f1_zh("GPT4模型", "gpt4"), 2 * (1.0 / 3) / (1.0 / 3 + 1)); /* "gpt4" is one token */
}
END_TEST

START_TEST(test_rouge) {
    /* One sentence each: m = n = 5 distinct words, LCS "the cat on the mat" has 4 distinct words. */
    ck_near(ks_rouge_l("the cat sat on the mat", "the cat is on the mat"), 2 * (0.64 / (1.6 + 1e-8)));
    /* Two sentences each: the union of per-sentence LCS words covers all 4 words. */
    ck_near(ks_rouge_l("a b. c d", "a c. b d"), 2 * (1.0 / (2 + 1e-8)));
    /* The tie-break: the walk steps along the hypothesis, giving LCS "a a" (1 distinct word), not "a b". */
    ck_near(ks_rouge_l("a a b", "a b a"), 2 * (0.25 / (1 + 1e-8)));
    /* A whitespace-only sentence is the word "": n = 3 ({a, "", b}), m = 2, llcs = 2. */
    ck_near(ks_rouge_l("a. . b", "a b"), 2 * ((2.0 / 3) / (1 + 2.0 / 3 + 1e-8)));
    ck_near(ks_rouge_l("The cat", "the cat"), 2 * (0.25 / (1 + 1e-8))); /* no lower-casing */
    ck_near(ks_rouge_l("", "the cat"), 0.0);    /* the package raises on an empty hypothesis */
    ck_near(ks_rouge_l("...", "the cat"), 0.0);
    ck_near(ks_metric_rouge("the cat", ""), 0.0);
    /* Python's recursion limit: a 400-word walk is fine, a 2000-word one raises (scored 0). */
    ks_strbuf a = {0}, b = {0};
    for (int i = 0; i < 2000; i++) ks_strbuf_appendf(i < 400 ? &a : &b, "w%d ", i);
    ck_near(ks_rouge_l(a.s, a.s), 2 * (1.0 / (2 + 1e-8)));
    ks_strbuf_appendz(&a, b.s);
    ck_near(ks_rouge_l(a.s, a.s), 0.0);
    ks_strbuf_free(&a), ks_strbuf_free(&b);
    /* Chinese: per-character tokens; 4 of the reference's 7 characters. */
    ck_near(ks_metric_rouge_zh("我爱北京", "我爱北京天安门"), 2 * ((4.0 / 7) / (1 + 4.0 / 7 + 1e-8)));
}
END_TEST

START_TEST(test_classification) {
    char *trec[] = {"DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"};
    ck_near(ks_metric_classification("HUM", "HUM", trec, 6), 1.0);
    ck_near(ks_metric_classification("NUM or LOC", "NUM", trec, 6), 0.5);
    ck_near(ks_metric_classification("", "NUM", trec, 6), 0.0);
    /* matches [ab, a, b, abc]; removing "ab" makes the loop skip "a", then "b" goes: [a, abc] -> 1/2. */
    char *quirk[] = {"ab", "a", "b", "abc"};
    ck_near(ks_metric_classification("abc", "abc", quirk, 4), 0.5);
    char *zh[] = {"体育", "财经", "体育新闻"};
    ck_near(ks_metric_classification("这是体育新闻", "体育新闻", zh, 3), 1.0); /* "体育" is removed as part of gt */
}
END_TEST

START_TEST(test_retrieval_count) {
    ck_near(ks_metric_retrieval("Paragraph 3", "Paragraph 3"), 1.0);
    ck_near(ks_metric_retrieval("Paragraph 3 and Paragraph 12", "Paragraph 3"), 0.5);
    ck_near(ks_metric_retrieval("I do not know", "Paragraph 3"), 0.0);
    ck_near(ks_metric_retrieval("Paragraph ３ or 3", "Paragraph 3"), 0.5); /* full-width digits are \d, but not "3" */
    ck_near(ks_metric_retrieval("Paragraph 3", "no label"), 0.0);
    ck_near(ks_metric_retrieval_zh("段落5", "段落5"), 1.0);
    ck_near(ks_metric_retrieval_zh("答案是段落5和段落15", "段落5"), 0.5);
    ck_near(ks_metric_count("There are 12 unique paragraphs.", "12"), 1.0);
    ck_near(ks_metric_count("12 or 13", "12"), 0.5);
    ck_near(ks_metric_count("", "12"), 0.0);
    ck_near(ks_metric_count("012", "12"), 0.0); /* compared as strings */
}
END_TEST

START_TEST(test_code_sim) {
    ck_near(ks_metric_code_sim("\n# comment\n    return x + 1\nfoo()", "    return x + 1"), 1.0);
    ck_near(ks_metric_code_sim("// c\nint x;", "int x;"), 1.0);
    ck_near(ks_metric_code_sim("x = 1", "x = 2"), 0.8);        /* M = 4 of 10 */
    ck_near(ks_metric_code_sim("abcdefgh", "abcdexyz"), 0.62); /* 62.5 rounds half to even */
    ck_near(ks_metric_code_sim("abcxxxxx", "abcyyyyy"), 0.38); /* 37.5 -> 38 */
    ck_near(ks_metric_code_sim("héllo", "hello"), 0.8);        /* code points, not bytes */
    ck_near(ks_metric_code_sim("", "foo"), 0.0);
    ck_near(ks_metric_code_sim("```", ""), 1.0);               /* no usable line: "" equals "" */
    /* autojunk: b has 200 code points, so 'a' and 'b' (more than 3 each) never seed a match; the empty match at
     * the start still extends over the 149 equal 'a's, and the 50 'b's are never found (without autojunk: 199). */
    ks_strbuf a = {0}, b = {0};
    for (int i = 0; i < 150; i++) ks_strbuf_append(&b, "a", 1), ks_strbuf_append(&a, "a", i < 149);
    for (int i = 0; i < 50; i++) ks_strbuf_append(&b, "b", 1), ks_strbuf_append(&a, "b", 1);
    ck_near(ks_seqmatch_ratio(a.s, b.s), 2.0 * 149 / 399);
    ck_near(ks_seqmatch_ratio("abxcd", "abcd"), 8.0 / 9);
    ks_strbuf_free(&a), ks_strbuf_free(&b);
}
END_TEST

START_TEST(test_bench_score_longbench) {
    double v;
    char *trec_classes[] = {"HUM", "NUM"}, *hum[] = {"HUM"};
    ks_sample s = sample_of("trec", "classification_score", hum, 1);
    s.all_classes = trec_classes;
    s.n_classes = 2;
    ck_assert_int_eq(ks_bench_score(&s, "\n\nHUM\nNUM", &v), KS_OK); /* trec scores the first line only */
    ck_near(v, 1.0);
    char *ans[] = {"foo bar", "cat"};
    s = sample_of("hotpotqa", "qa_f1_score", ans, 2);
    ck_assert_int_eq(ks_bench_score(&s, "cat\nfoo", &v), KS_OK); /* max over answers; no first-line cut */
    ck_near(v, 2 * (0.5 * 1) / 1.5);
    s = sample_of("triviaqa_e", "qa_f1_score", ans, 2);
    ck_assert_int_eq(ks_bench_score(&s, "cat\nfoo", &v), KS_OK); /* LongBench-E ids share the rules */
    ck_near(v, 1.0);
    s = sample_of("hotpotqa", "bleu", ans, 2);
    ck_assert_int_eq(ks_bench_score(&s, "cat", &v), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "bleu"));
    ck_assert(ks_metric_known("rouge_zh_score") && !ks_metric_known("bleu"));
}
END_TEST

int main(void) {
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_string_match);
    tcase_add_test(tc, test_ruler_postprocess);
    tcase_add_test(tc, test_normalize);
    tcase_add_test(tc, test_qa_f1);
    tcase_add_test(tc, test_qa_f1_zh);
    tcase_add_test(tc, test_rouge);
    tcase_add_test(tc, test_classification);
    tcase_add_test(tc, test_retrieval_count);
    tcase_add_test(tc, test_code_sim);
    tcase_add_test(tc, test_bench_score_longbench);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
