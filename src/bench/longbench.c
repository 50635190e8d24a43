/* longbench.c — LongBench v1 records, prompts and truncation; see longbench.h. */
#include "bench/longbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/rng.h"
#include "bench/strbuf.h"
#include "core/file.h"
#include "core/json.h"

/* LB config/dataset2prompt.json (exact strings, including the original "asconcisely"), dataset2maxlen.json,
 * dataset2metric; first_line for trec/triviaqa/samsum/lsht (eval.py), stop_on_newline for samsum (pred.py). */
static const ks_longbench_task tasks[] = {
    {"narrativeqa",
     "You are given a story, which can be either a novel or a movie script, and a question. Answer the question "
     "asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\n"
     "Now, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not "
     "provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
     128, "qa_f1_score", 0, 0},
    {"qasper",
     "You are given a scientific article and a question. Answer the question as concisely as you can, using a single "
     "phrase or sentence if possible. If the question cannot be answered based on the information in the article, "
     "write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not "
     "provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely "
     "as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the "
     "information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", "
     "\"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
     128, "qa_f1_score", 0, 0},
    {"multifieldqa_en",
     "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the "
     "above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
     64, "qa_f1_score", 0, 0},
    {"multifieldqa_zh",
     "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。"
     "\n\n问题：{input}\n回答：",
     64, "qa_f1_zh_score", 0, 0},
    {"hotpotqa",
     "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
     "The following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me "
     "the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
     32, "qa_f1_score", 0, 0},
    {"2wikimqa",
     "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
     "The following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me "
     "the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
     32, "qa_f1_score", 0, 0},
    {"musique",
     "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
     "The following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me "
     "the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
     32, "qa_f1_score", 0, 0},
    {"dureader", "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：", 128,
     "rouge_zh_score", 0, 0},
    {"gov_report",
     "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\n"
     "Now, write a one-page summary of the report.\n\nSummary:",
     512, "rouge_score", 0, 0},
    {"qmsum",
     "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or "
     "more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one "
     "or more sentences.\n\nQuery: {input}\nAnswer:",
     512, "rouge_score", 0, 0},
    {"multi_news",
     "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a "
     "one-page summary of all the news.\n\nSummary:",
     512, "rouge_score", 0, 0},
    {"vcsum", "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：", 512,
     "rouge_zh_score", 0, 0},
    {"trec",
     "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}", 64,
     "classification_score", 1, 0},
    {"triviaqa",
     "Answer the question based on the given passage. Only give me the answer and do not output any other words. The "
     "following are some examples.\n\n{context}\n\n{input}",
     32, "qa_f1_score", 1, 0},
    {"samsum", "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
     128, "rouge_score", 1, 1},
    {"lsht", "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}", 64, "classification_score", 1, 0},
    {"passage_count",
     "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read "
     "these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, "
     "how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique "
     "paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so "
     "on.\n\nThe final answer is: ",
     32, "count_score", 0, 0},
    {"passage_retrieval_en",
     "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is "
     "from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that "
     "the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: ",
     32, "retrieval_score", 0, 0},
    {"passage_retrieval_zh",
     "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n"
     "请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：",
     32, "retrieval_zh_score", 0, 0},
    {"lcc", "Please complete the code given below. \n{context}Next line of code:\n", 64, "code_sim_score", 0, 0},
    {"repobench-p", "Please complete the code given below. \n{context}{input}Next line of code:\n", 64, "code_sim_score", 0,
     0},
};
#define N_TASKS ((int)(sizeof tasks / sizeof tasks[0]))

const char *const ks_longbench_no_template_tasks[] = {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p", NULL};

const ks_longbench_task *ks_longbench_task_find(const char *name) {
    size_t n = strlen(name);
    if (n > 2 && !strcmp(name + n - 2, "_e")) n -= 2; /* LongBench-E */
    for (int i = 0; i < N_TASKS; i++)
        if (strlen(tasks[i].name) == n && !strncmp(tasks[i].name, name, n)) return &tasks[i];
    return NULL;
}

const ks_longbench_task *ks_longbench_task_at(int i) { return i >= 0 && i < N_TASKS ? &tasks[i] : NULL; }
int ks_longbench_task_count(void) { return N_TASKS; }

ks_status ks_longbench_format(const ks_longbench_task *t, const char *context, const char *input, char **out) {
    ks_strbuf sb = {0};
    const char *keys[] = {"context", "input"};
    const char *vals[] = {context, input};
    ks_strbuf_format(&sb, t->prompt, keys, vals, 2);
    KS_TRY(ks_strbuf_status(&sb, "a LongBench prompt"));
    *out = ks_strbuf_take(&sb);
    return KS_OK;
}

ks_status ks_longbench_truncate(const ks_tokenizer *tok, const char *prompt, int max_length, char **out, int *truncated) {
    ks_ids ids = {0};
    char *head = NULL, *tail = NULL;
    ks_status st = ks_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids);
    *truncated = st == KS_OK && ids.n > max_length;
    if (st == KS_OK && !*truncated) {
        *out = ks_strndup(prompt, strlen(prompt));
        if (!*out) st = KS_ERR_NOMEM;
    } else if (st == KS_OK) {
        int half = max_length / 2;
        st = ks_tokenizer_decode(tok, ids.ids, half, 1, &head);
        if (st == KS_OK) st = ks_tokenizer_decode(tok, ids.ids + ids.n - half, half, 1, &tail);
        if (st == KS_OK) {
            ks_strbuf sb = {0};
            ks_strbuf_appendz(&sb, head);
            ks_strbuf_appendz(&sb, tail);
            st = ks_strbuf_status(&sb, "a truncated prompt");
            if (st == KS_OK) *out = ks_strbuf_take(&sb);
            ks_strbuf_free(&sb);
        }
    }
    free(head);
    free(tail);
    ks_ids_free(&ids);
    return st;
}

/* ---- the data set ---- */

typedef struct lb_file {
    const char *task;            /* borrowed from the config */
    const ks_longbench_task *t;
    char path[4096];
    long *offsets;               /* (n) owned: byte offset of each record line */
    int n;
} lb_file;

struct ks_longbench {
    const ks_bench_config *cfg;
    const ks_tokenizer *tok;
    lb_file *files;              /* (n_files) owned, one per configured task */
    int n_files;
    ks_ids ids;                  /* scratch */
};

static ks_status index_file(lb_file *f) {
    FILE *in = fopen(f->path, "r");
    if (!in)
        return ks_fail(KS_ERR_IO, "%s: LongBench file not found (download LongBench's data.zip and unpack it into "
                                  "longbench_dir, or remove '%s' from task_names)", f->path, f->task);
    char *line = NULL;
    size_t cap = 0, n_cap = 0;
    ssize_t len;
    long at = 0;
    ks_status st = KS_OK;
    while ((len = getline(&line, &cap, in)) >= 0) {
        int blank = 1;
        for (ssize_t i = 0; i < len && blank; i++) blank = line[i] == ' ' || line[i] == '\n' || line[i] == '\r';
        if (!blank) {
            if ((size_t)f->n == n_cap) {
                n_cap = n_cap ? 2 * n_cap : 256;
                long *o = realloc(f->offsets, n_cap * sizeof *o);
                if (!o) {
                    st = ks_fail(KS_ERR_NOMEM, "out of memory indexing %s", f->path);
                    break;
                }
                f->offsets = o;
            }
            f->offsets[f->n++] = at;
        }
        at += len;
    }
    if (st == KS_OK && ferror(in)) st = ks_fail(KS_ERR_IO, "%s: read error", f->path);
    if (st == KS_OK && f->n == 0) st = ks_fail(KS_ERR_FORMAT, "%s: no records", f->path);
    free(line);
    fclose(in);
    return st;
}

ks_status ks_longbench_open(ks_longbench **out, const ks_bench_config *cfg, const ks_tokenizer *tok) {
    if (!cfg->longbench_dir)
        return ks_fail(KS_ERR_ARG, "%s: LongBench needs 'longbench_dir: <folder of <task>.jsonl files>' (the unpacked "
                                   "data.zip of THUDM/LongBench)", cfg->path);
    if (!ks_is_directory(cfg->longbench_dir))
        return ks_fail(KS_ERR_IO, "%s: LongBench folder not found (key 'longbench_dir' in %s)", cfg->longbench_dir,
                       cfg->path);
    ks_longbench *lb = ks_calloc(1, sizeof *lb, "the LongBench reader");
    if (!lb) return KS_ERR_NOMEM;
    lb->cfg = cfg;
    lb->tok = tok;
    lb->files = ks_calloc((size_t)cfg->n_tasks, sizeof *lb->files, "LongBench files");
    ks_status st = lb->files ? KS_OK : KS_ERR_NOMEM;
    for (int i = 0; i < cfg->n_tasks && st == KS_OK; i++) {
        lb_file *f = &lb->files[lb->n_files++];
        f->task = cfg->task_names[i];
        f->t = ks_longbench_task_find(f->task);
        if (!f->t) {
            st = ks_fail(KS_ERR_ARG, "%s: unknown LongBench task '%s'", cfg->path, f->task);
            break;
        }
        char name[256];
        snprintf(name, sizeof name, "%s.jsonl", f->task);
        ks_path_join(f->path, sizeof f->path, cfg->longbench_dir, name);
        st = index_file(f);
    }
    if (st != KS_OK) {
        ks_longbench_close(lb);
        return st;
    }
    *out = lb;
    return KS_OK;
}

static const lb_file *file_of(const ks_longbench *lb, const char *task) {
    for (int i = 0; i < lb->n_files; i++)
        if (!strcmp(lb->files[i].task, task)) return &lb->files[i];
    return NULL;
}

int ks_longbench_count(const ks_longbench *lb, const char *task) {
    const lb_file *f = file_of(lb, task);
    return f ? f->n : 0;
}

/* A JSON array of strings into an owned vector (NULL/empty allowed when `optional`). */
static ks_status str_array(const cJSON *a, const char *where, const char *key, int optional, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    if (!a || cJSON_IsNull(a)) {
        return optional ? KS_OK : ks_fail(KS_ERR_FORMAT, "%s: field '%s' is missing", where, key);
    }
    if (!cJSON_IsArray(a)) return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be a list of strings", where, key);
    int m = cJSON_GetArraySize(a);
    *out = ks_calloc((size_t)(m ? m : 1), sizeof **out, "LongBench answers");
    if (!*out) return KS_ERR_NOMEM;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) {
        if (!cJSON_IsString(v)) return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be a list of strings", where, key);
        if (!((*out)[(*n)++] = ks_strndup(v->valuestring, strlen(v->valuestring)))) return KS_ERR_NOMEM;
    }
    if (!optional && *n == 0) return ks_fail(KS_ERR_FORMAT, "%s: field '%s' is empty", where, key);
    return KS_OK;
}

static ks_status read_line(const lb_file *f, int index, char **line, size_t *len) {
    FILE *in = fopen(f->path, "r");
    if (!in) return ks_fail(KS_ERR_IO, "%s: cannot open the LongBench file", f->path);
    size_t cap = 0;
    ssize_t n = -1;
    if (fseek(in, f->offsets[index], SEEK_SET) == 0) n = getline(line, &cap, in);
    fclose(in);
    if (n < 0) return ks_fail(KS_ERR_IO, "%s: cannot read record %d (was the file changed?)", f->path, index);
    *len = (size_t)n;
    return KS_OK;
}

ks_status ks_longbench_get(ks_longbench *lb, const char *task, int index, ks_sample *out) {
    memset(out, 0, sizeof *out);
    const lb_file *f = file_of(lb, task);
    if (!f) return ks_fail(KS_ERR_ARG, "LongBench task '%s' is not in the config", task);
    if (index < 0 || index >= f->n) return ks_fail(KS_ERR_RANGE, "%s: no record %d (the file has %d)", f->path, index, f->n);
    char *line = NULL, *prompt = NULL, where[4200];
    size_t len = 0;
    cJSON *j = NULL;
    snprintf(where, sizeof where, "%s: record %d", f->path, index + 1);
    ks_status st = read_line(f, index, &line, &len);
    if (st == KS_OK) st = ks_json_parse(line, len, where, &j);
    const cJSON *input = j ? cJSON_GetObjectItemCaseSensitive(j, "input") : NULL;
    const cJSON *context = j ? cJSON_GetObjectItemCaseSensitive(j, "context") : NULL;
    if (st == KS_OK && (!cJSON_IsString(input) || !cJSON_IsString(context)))
        st = ks_fail(KS_ERR_FORMAT, "%s: fields 'input' and 'context' must be strings", where);
    if (st == KS_OK) st = str_array(cJSON_GetObjectItemCaseSensitive(j, "answers"), where, "answers", 0, &out->answers, &out->n_answers);
    if (st == KS_OK)
        st = str_array(cJSON_GetObjectItemCaseSensitive(j, "all_classes"), where, "all_classes", 1, &out->all_classes,
                       &out->n_classes);
    if (st == KS_OK) st = ks_longbench_format(f->t, context->valuestring, input->valuestring, &prompt);
    int truncated = 0;
    if (st == KS_OK) st = ks_longbench_truncate(lb->tok, prompt, lb->cfg->max_length, &out->prompt, &truncated);
    if (st == KS_OK) {
        lb->ids.n = 0;
        st = ks_tokenizer_encode(lb->tok, out->prompt, strlen(out->prompt), 0, &lb->ids);
        out->prompt_tokens = lb->ids.n;
    }
    if (st == KS_OK && !(out->answer_prefix = ks_strndup("", 0))) st = KS_ERR_NOMEM;
    if (st == KS_OK) {
        snprintf(out->task, sizeof out->task, "%s", task);
        snprintf(out->metric, sizeof out->metric, "%s", f->t->metric);
        out->length = 0;
        out->index = index;
        out->seed = ks_rng_sample_seed(lb->cfg->seed, task, 0, index);
        out->max_new_tokens = f->t->max_new_tokens;
        out->use_template = ks_bench_config_use_template(lb->cfg, task, 0);
        out->stop_on_newline = f->t->stop_on_newline;
    }
    free(prompt);
    free(line);
    cJSON_Delete(j);
    if (st != KS_OK) ks_sample_free(out);
    return st;
}

void ks_longbench_close(ks_longbench *lb) {
    if (!lb) return;
    for (int i = 0; i < lb->n_files; i++) free(lb->files[i].offsets);
    free(lb->files);
    ks_ids_free(&lb->ids);
    free(lb);
}
