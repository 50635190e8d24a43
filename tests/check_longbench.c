/* check_longbench.c — LongBench v1: the task table against LB's config files, prompt formatting, middle
 * truncation with the Llama-3.1 tokenizer, reading records from tests/fixtures/longbench, per-task options (no
 * chat template, stop on newline, LongBench-E ids) and bad input. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/longbench.h"
#include "bench/strbuf.h"
#include "test_util.h"

static ks_tokenizer *tok;

static void setup(void) {
    if (ks_tokenizer_load(&tok, ks_test_fixture("tokenizer/llama3_1")) != KS_OK) {
        fprintf(stderr, "check_longbench: %s\n", ks_last_error());
        exit(1);
    }
}

static void teardown(void) { ks_tokenizer_free(tok); }

/* LB config/dataset2maxlen.json and dataset2metric. */
static const struct {
    const char *task, *metric;
    int maxlen;
} table[] = {
    {"narrativeqa", "qa_f1_score", 128}, {"qasper", "qa_f1_score", 128}, {"multifieldqa_en", "qa_f1_score", 64},
    {"multifieldqa_zh", "qa_f1_zh_score", 64}, {"hotpotqa", "qa_f1_score", 32}, {"2wikimqa", "qa_f1_score", 32},
    {"musique", "qa_f1_score", 32}, {"dureader", "rouge_zh_score", 128}, {"gov_report", "rouge_score", 512},
    {"qmsum", "rouge_score", 512}, {"multi_news", "rouge_score", 512}, {"vcsum", "rouge_zh_score", 512},
    {"trec", "classification_score", 64}, {"triviaqa", "qa_f1_score", 32}, {"samsum", "rouge_score", 128},
    {"lsht", "classification_score", 64}, {"passage_count", "count_score", 32},
    {"passage_retrieval_en", "retrieval_score", 32}, {"passage_retrieval_zh", "retrieval_zh_score", 32},
    {"lcc", "code_sim_score", 64}, {"repobench-p", "code_sim_score", 64},
};

START_TEST(test_table) {
    ck_assert_int_eq(ks_longbench_task_count(), 21);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const ks_longbench_task *t = ks_longbench_task_find(table[i].task);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->metric, table[i].metric);
        ck_assert_int_eq(t->max_new_tokens, table[i].maxlen);
        ck_assert(strstr(t->prompt, "{context}"));
    }
    ck_assert_ptr_eq(ks_longbench_task_find("gov_report_e"), ks_longbench_task_find("gov_report"));
    ck_assert_ptr_null(ks_longbench_task_find("gov"));
    /* A few prompt formats verbatim (LB config/dataset2prompt.json), including LB's "asconcisely" and the
     * Chinese ones. */
    ck_assert_str_eq(ks_longbench_task_find("narrativeqa")->prompt,
                     "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
                     "question asconcisely as you can, using a single phrase if possible. Do not provide any explanation."
                     "\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as you can, using a "
                     "single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:");
    ck_assert_str_eq(ks_longbench_task_find("multifieldqa_zh")->prompt,
                     "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。"
                     "\n\n问题：{input}\n回答：");
    ck_assert_str_eq(ks_longbench_task_find("passage_retrieval_zh")->prompt,
                     "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n"
                     "{input}\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：");
    ck_assert_str_eq(ks_longbench_task_find("lcc")->prompt, "Please complete the code given below. \n{context}Next line of code:\n");
    ck_assert_str_eq(ks_longbench_task_find("repobench-p")->prompt,
                     "Please complete the code given below. \n{context}{input}Next line of code:\n");
    const char *pc = ks_longbench_task_find("passage_count")->prompt, *end = "\n\nThe final answer is: ";
    ck_assert_str_eq(pc + strlen(pc) - strlen(end), end);
    /* Scoring options: first line for the few-shot tasks, stop at "\n" for samsum only. */
    const char *first[] = {"trec", "triviaqa", "samsum", "lsht"};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(ks_longbench_task_find(first[i])->first_line, 1);
    ck_assert_int_eq(ks_longbench_task_find("hotpotqa")->first_line, 0);
    ck_assert_int_eq(ks_longbench_task_find("samsum")->stop_on_newline, 1);
    ck_assert_int_eq(ks_longbench_task_find("trec")->stop_on_newline, 0);
}
END_TEST

START_TEST(test_format) {
    char *p;
    /* Field values are inserted as they are, braces included (str.format only parses the format). */
    ck_assert_int_eq(ks_longbench_format(ks_longbench_task_find("trec"), "ctx {input}", "in {context}", &p), KS_OK);
    ck_assert_str_eq(p, "Please determine the type of the question below. Here are some examples of questions.\n\n"
                        "ctx {input}\nin {context}");
    free(p);
}
END_TEST

START_TEST(test_truncate) {
    ks_strbuf sb = {0};
    ks_strbuf_appendz(&sb, "BEGIN ");
    for (int i = 0; i < 300; i++) ks_strbuf_appendf(&sb, "word%d ", i);
    ks_strbuf_appendz(&sb, "END");
    char *out;
    int truncated;
    /* Short enough: unchanged. */
    ck_assert_int_eq(ks_longbench_truncate(tok, "Hello world", 64, &out, &truncated), KS_OK);
    ck_assert_int_eq(truncated, 0);
    ck_assert_str_eq(out, "Hello world");
    free(out);
    /* Too long: the first and last 32 tokens (BOS counted in the first half and skipped on decode). */
    ck_assert_int_eq(ks_longbench_truncate(tok, sb.s, 64, &out, &truncated), KS_OK);
    ck_assert_int_eq(truncated, 1);
    ck_assert(!strncmp(out, "BEGIN word0", 11));
    ck_assert(strlen(out) > 4 && !strcmp(out + strlen(out) - 4, " END"));
    ks_ids all = {0}, ids = {0};
    ck_assert_int_eq(ks_tokenizer_encode(tok, sb.s, sb.len, 1, &all), KS_OK);
    char *head, *tail;
    ck_assert_int_eq(ks_tokenizer_decode(tok, all.ids, 32, 1, &head), KS_OK);
    ck_assert_int_eq(ks_tokenizer_decode(tok, all.ids + all.n - 32, 32, 1, &tail), KS_OK);
    ck_assert(!strncmp(out, head, strlen(head)) && !strcmp(out + strlen(head), tail));
    ck_assert_int_eq(ks_tokenizer_encode(tok, out, strlen(out), 1, &ids), KS_OK);
    ck_assert(ids.n >= 60 && ids.n <= 66); /* re-tokenizing the joined halves may shift a token or two */
    free(head), free(tail), free(out);
    ks_ids_free(&all), ks_ids_free(&ids);
    ks_strbuf_free(&sb);
}
END_TEST

static void parse(ks_bench_config *c, const char *extra) {
    char yaml[8192];
    snprintf(yaml, sizeof yaml,
             "benchmark_name: LongBench\ntask_names: [hotpotqa, hotpotqa_e, trec, samsum, multifieldqa_zh, lcc]\n"
             "template: llama3\nlongbench_dir: %s\n%s",
             ks_test_fixture("longbench"), extra);
    ck_assert_int_eq(ks_bench_config_parse(c, yaml, strlen(yaml), "lb.yaml"), KS_OK);
}

START_TEST(test_records) {
    ks_bench_config c = {0};
    parse(&c, "max_length: 100000\n");
    ks_longbench *lb;
    ck_assert_int_eq(ks_longbench_open(&lb, &c, tok), KS_OK);
    ck_assert_int_eq(ks_longbench_count(lb, "hotpotqa"), 2);
    ck_assert_int_eq(ks_longbench_count(lb, "trec"), 1);
    ck_assert_int_eq(ks_longbench_count(lb, "qasper"), 0);

    ks_sample s;
    ck_assert_int_eq(ks_longbench_get(lb, "hotpotqa", 1, &s), KS_OK);
    ck_assert_str_eq(s.prompt, "Answer the question based on the given passages. Only give me the answer and do not output "
                               "any other words.\n\nThe following are given passages.\nPassage 1:\nJames Douglass designed "
                               "the present tower {context}.\n\nAnswer the question based on the given passages. Only give "
                               "me the answer and do not output any other words.\n\nQuestion: Who designed {the} tower?\n"
                               "Answer:");
    ck_assert_int_eq(s.n_answers, 2);
    ck_assert_str_eq(s.answers[1], "Douglass");
    ck_assert_int_eq(s.max_new_tokens, 32);
    ck_assert_str_eq(s.metric, "qa_f1_score");
    ck_assert_int_eq(s.use_template, 1);
    ck_assert_int_eq(s.stop_on_newline, 0);
    ck_assert_ptr_null(s.all_classes);
    ck_assert_int_eq(s.index, 1);
    ks_ids ids = {0};
    ck_assert_int_eq(ks_tokenizer_encode(tok, s.prompt, strlen(s.prompt), 0, &ids), KS_OK);
    ck_assert_int_eq(s.prompt_tokens, ids.n);
    ks_ids_free(&ids);
    ks_sample_free(&s);

    /* trec: classes, no chat template (LB's list is the default), first-line scoring in the table. */
    ck_assert_int_eq(ks_longbench_get(lb, "trec", 0, &s), KS_OK);
    ck_assert_int_eq(s.n_classes, 4);
    ck_assert_str_eq(s.all_classes[2], "City");
    ck_assert_int_eq(s.use_template, 0);
    ck_assert(strstr(s.prompt, "Type: Distance\n\nWhat is the capital of Peru?"));
    ks_sample_free(&s);

    ck_assert_int_eq(ks_longbench_get(lb, "samsum", 0, &s), KS_OK);
    ck_assert_int_eq(s.stop_on_newline, 1);
    ck_assert_int_eq(s.max_new_tokens, 128);
    ks_sample_free(&s);

    ck_assert_int_eq(ks_longbench_get(lb, "multifieldqa_zh", 0, &s), KS_OK);
    ck_assert_str_eq(s.prompt, "阅读以下文字并用中文简短回答：\n\n埃迪斯通灯塔现存的塔楼于1882年建成。\n\n现在请基于上面的文章回答下面的问题，"
                               "只告诉我答案，不要输出任何其他字词。\n\n问题：灯塔建于哪一年？\n回答：");
    ck_assert_str_eq(s.metric, "qa_f1_zh_score");
    ks_sample_free(&s);

    ck_assert_int_eq(ks_longbench_get(lb, "hotpotqa_e", 0, &s), KS_OK); /* LongBench-E: own file, base format */
    ck_assert(strstr(s.prompt, "Passage 1:\nSmeaton's Tower stands on Plymouth Hoe.\n\nAnswer the question"));
    ck_assert_int_eq(s.max_new_tokens, 32);
    ks_sample_free(&s);

    ck_assert_int_eq(ks_longbench_get(lb, "lcc", 0, &s), KS_OK);
    ck_assert_str_eq(s.prompt, "Please complete the code given below. \ndef add(a, b):\n    Next line of code:\n");
    ck_assert_int_eq(s.use_template, 0);
    ks_sample_free(&s);

    ck_assert_int_eq(ks_longbench_get(lb, "hotpotqa", 2, &s), KS_ERR_RANGE);
    ks_longbench_close(lb);
    ks_bench_config_free(&c);
}
END_TEST

START_TEST(test_bench_facade_and_truncation) {
    ks_bench_config c = {0};
    parse(&c, "max_length: 40\n");
    ks_bench *b;
    ck_assert_int_eq(ks_bench_open(&b, &c, tok), KS_OK);
    ks_sample_id *ids;
    int n;
    ck_assert_int_eq(ks_bench_list(b, 0, &ids, &n), KS_OK);
    ck_assert_int_eq(n, 7);
    ck_assert_str_eq(ids[0].task, "hotpotqa");
    ck_assert_int_eq(ids[1].index, 1);
    free(ids);
    ck_assert_int_eq(ks_bench_list(b, 1, &ids, &n), KS_OK);
    ck_assert_int_eq(n, 6);
    ks_sample s;
    ck_assert_int_eq(ks_bench_get(b, &ids[0], &s), KS_OK);
    /* 40 tokens with BOS: the middle of the hotpotqa prompt is cut. */
    ck_assert(s.prompt_tokens <= 42);
    ck_assert(!strncmp(s.prompt, "Answer the question based on", 28));
    ck_assert(strlen(s.prompt) > 7 && !strcmp(s.prompt + strlen(s.prompt) - 7, "Answer:"));
    ck_assert_ptr_null(strstr(s.prompt, "Smeaton")); /* the middle passage is gone */
    ks_sample_free(&s);
    free(ids);
    ks_bench_close(b);
    ks_bench_config_free(&c);
}
END_TEST

START_TEST(test_errors) {
    ks_bench_config c = {0};
    ks_longbench *lb = NULL;
    const char *y = "benchmark_name: LongBench\ntask_names: [hotpotqa]\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "nodir.yaml"), KS_OK);
    ck_assert_int_eq(ks_longbench_open(&lb, &c, tok), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "longbench_dir"));

    y = "benchmark_name: LongBench\ntask_names: [hotpotqa]\nlongbench_dir: /nonexistent/lb\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "missing.yaml"), KS_OK);
    ck_assert_int_eq(ks_longbench_open(&lb, &c, tok), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "/nonexistent/lb"));

    char yaml[4096];
    snprintf(yaml, sizeof yaml, "benchmark_name: LongBench\ntask_names: [qasper]\nlongbench_dir: %s\n",
             ks_test_fixture("longbench"));
    ck_assert_int_eq(ks_bench_config_parse(&c, yaml, strlen(yaml), "nofile.yaml"), KS_OK);
    ck_assert_int_eq(ks_longbench_open(&lb, &c, tok), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "qasper.jsonl"));

    snprintf(yaml, sizeof yaml, "benchmark_name: LongBench\ntask_names: [narrativeqa]\nlongbench_dir: %s\n",
             ks_test_fixture("longbench/bad"));
    ck_assert_int_eq(ks_bench_config_parse(&c, yaml, strlen(yaml), "bad.yaml"), KS_OK);
    ck_assert_int_eq(ks_longbench_open(&lb, &c, tok), KS_OK);
    ks_sample s;
    ck_assert_int_eq(ks_longbench_get(lb, "narrativeqa", 0, &s), KS_OK);
    ks_sample_free(&s);
    ck_assert_int_eq(ks_longbench_get(lb, "narrativeqa", 1, &s), KS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "narrativeqa.jsonl: record 2"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'context'"));
    ck_assert_int_eq(ks_longbench_get(lb, "narrativeqa", 2, &s), KS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "record 3"));
    ks_longbench_close(lb);
    ks_bench_config_free(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("longbench");
    TCase *tc = tcase_create("longbench");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_table);
    tcase_add_test(tc, test_format);
    tcase_add_test(tc, test_truncate);
    tcase_add_test(tc, test_records);
    tcase_add_test(tc, test_bench_facade_and_truncation);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
