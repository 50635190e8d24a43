/* check_bench_config.c — the benchmark YAML: the repository's configs, every key's value and default, and a
 * clear KS_ERR_ARG naming the file, line and key for each kind of bad input. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_config.h"
#include "test_util.h"

static const char *repo_config(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/../../configs/benchmarks/%s", KS_FIXTURES, name);
    return buf;
}

START_TEST(test_seed_ruler_yaml) {
    ks_bench_config c = {0};
    ck_assert_int_eq(ks_bench_config_load(&c, repo_config("RULER.yaml")), KS_OK);
    ck_assert_int_eq(c.kind, KS_BENCH_RULER);
    ck_assert_int_eq(c.n_tasks, 12);
    const char *tasks[] = {"cwe", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3", "niah_multiquery",
                           "niah_multivalue", "niah_single_1", "niah_single_2", "niah_single_3", "qa_1", "qa_2", "vt"};
    for (int i = 0; i < 12; i++) ck_assert_str_eq(c.task_names[i], tasks[i]);
    ck_assert_int_eq(c.n_lengths, 6);
    for (int i = 0; i < 6; i++) ck_assert_int_eq(c.lengths[i], 4096 << i);
    ck_assert_int_eq(c.num_samples, 10);
    ck_assert_int_eq(c.n_no_template, 1);
    ck_assert_str_eq(c.no_template_tasks[0], "fwe");
    ck_assert_ptr_null(c.template_name);
    ck_assert_uint_eq(c.seed, 42);
    ck_assert_int_eq(c.ruler_variant, KS_RULER_VARIANT_RULER);
    ck_assert_ptr_null(c.squad_path);
    ck_assert_ptr_nonnull(strstr(c.yaml_text, "benchmark_name: RULER"));
    /* the timing sweep: RULER.yaml's samples, the qa tasks from the repository's stand-ins (paths from its root) */
    ks_bench_config t = {0};
    ck_assert_int_eq(ks_bench_config_load(&t, repo_config("RULER_timing.yaml")), KS_OK);
    ck_assert(t.kind == c.kind && t.n_tasks == c.n_tasks && t.n_lengths == c.n_lengths &&
              t.num_samples == c.num_samples && t.seed == c.seed && t.ruler_variant == c.ruler_variant);
    for (int i = 0; i < t.n_tasks; i++) ck_assert_str_eq(t.task_names[i], c.task_names[i]);
    for (int i = 0; i < t.n_lengths; i++) ck_assert_int_eq(t.lengths[i], c.lengths[i]);
    const char *qa[] = {t.squad_path, t.hotpotqa_path};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        ck_assert_ptr_nonnull(qa[i]);
        snprintf(path, sizeof path, "%s/../../%s", KS_FIXTURES, qa[i]);
        FILE *f = fopen(path, "rb");
        ck_assert_msg(f != NULL, "RULER_timing.yaml: %s is not a file of the repository", qa[i]);
        fclose(f);
    }
    ks_bench_config_free(&t);
    ks_bench_config_free(&c);

    ck_assert_int_eq(ks_bench_config_load(&c, repo_config("LongBench.yaml")), KS_OK);
    ck_assert_int_eq(c.kind, KS_BENCH_LONGBENCH);
    ck_assert_int_eq(c.n_tasks, 21);
    ck_assert_int_eq(c.max_length, 31500);
    ck_assert_int_eq(c.n_no_template, 6);
    ks_bench_config_free(&c);

    ck_assert_int_eq(ks_bench_config_load(&c, repo_config("quickstart.yaml")), KS_OK);
    ck_assert(c.n_tasks >= 2 && c.n_tasks <= 3 && c.lengths[c.n_lengths - 1] <= 2048 && c.num_samples <= 3);
    ks_bench_config_free(&c);
}
END_TEST

START_TEST(test_values_and_defaults) {
    ks_bench_config c = {0};
    const char *y = "benchmark_name: RULER\n"
                    "task_names: [vt, fwe]\n"
                    "length:\n  - 8192\n  - 4096\n"
                    "num_samples: 3\n"
                    "build_data: false\n"
                    "no_template_tasks: all\n"
                    "template: llama3\n"
                    "seed: 12345678901\n"
                    "ruler_variant: loom\n"
                    "data_dir: /data\n"
                    "wordlists_dir: /words\n"
                    "squad_path: ~\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "v.yaml"), KS_OK);
    ck_assert_int_eq(c.n_lengths, 2);
    ck_assert_int_eq(c.lengths[0], 8192);
    ck_assert_int_eq(c.num_samples, 3);
    ck_assert_int_eq(c.build_data, 0);
    ck_assert_int_eq(c.no_template_all, 1);
    ck_assert_int_eq(ks_bench_config_use_template(&c, "vt", 8192), 0);
    ck_assert_str_eq(c.template_name, "llama3");
    ck_assert_uint_eq(c.seed, 12345678901ULL);
    ck_assert_int_eq(c.ruler_variant, KS_RULER_VARIANT_LOOM);
    ck_assert_str_eq(c.essays_dir, "/data/haystack/paul_graham_essays"); /* derived from data_dir */
    ck_assert_str_eq(c.wordlists_dir, "/words");                         /* given */
    ck_assert_ptr_null(c.squad_path);
    ks_bench_config_free(&c);

    /* Minimal: everything else defaults; LongBench gets LB's no-template list and no truncation. */
    y = "benchmark_name: LongBench\ntask_names: [trec, gov_report_e]\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "m.yaml"), KS_OK);
    ck_assert_int_eq(c.num_samples, 10);
    ck_assert_uint_eq(c.seed, 42);
    ck_assert_int_eq(c.max_length, 1500000);
    ck_assert_int_eq(c.n_no_template, 6);
    ck_assert_ptr_null(c.template_name);
    ck_assert_ptr_nonnull(c.data_dir);
    ks_bench_config_free(&c);

    /* LOOM's "default" template means none. */
    y = "benchmark_name: RULER\ntask_names: [vt]\nlength: [4096]\ntemplate: default\n";
    ck_assert_int_eq(ks_bench_config_parse(&c, y, strlen(y), "d.yaml"), KS_OK);
    ck_assert_ptr_null(c.template_name);
    ks_bench_config_free(&c);
}
END_TEST

/* A failed load owns nothing: a caller that returns at the error (KS_TRY) leaks nothing. */
static void assert_released(const ks_bench_config *c, const char *what) {
    static const ks_bench_config zero;
    ck_assert_msg(!memcmp(c, &zero, sizeof zero), "%s: the failed load left the config holding allocations "
                  "(path %p, yaml_text %p, data_dir %p)", what, (void *)c->path, (void *)c->yaml_text,
                  (void *)c->data_dir);
}

/* Parses `yaml` and expects KS_ERR_ARG with every `want` piece in the message, and nothing left allocated. */
static void bad(const char *yaml, const char *want1, const char *want2) {
    ks_bench_config c = {0};
    ks_status st = ks_bench_config_parse(&c, yaml, strlen(yaml), "bad.yaml");
    ck_assert_msg(st == KS_ERR_ARG, "accepted:\n%s", yaml);
    ck_assert_msg(strstr(ks_last_error(), "bad.yaml"), "no file in '%s'", ks_last_error());
    ck_assert_msg(strstr(ks_last_error(), want1), "'%s' not in '%s'", want1, ks_last_error());
    if (want2) ck_assert_msg(strstr(ks_last_error(), want2), "'%s' not in '%s'", want2, ks_last_error());
    assert_released(&c, yaml);
}

START_TEST(test_errors) {
    const char *ok = "benchmark_name: RULER\ntask_names: [vt]\nlength: [4096]\n";
    char y[1024];
    bad("benchmark_name: RULER\ntask_names: [vt]\nlength: [4096]\nlenght: [1]\n", "unknown key 'lenght'", ":4:");
    bad("benchmark_name: RULER\ntask_names: [vt]\nlength: [4096, abc]\n", "key 'length'", "'abc'");
    bad("benchmark_name: RULER\ntask_names: [vt]\nlength: 4096\n", "key 'length'", "list");
    bad("benchmark_name: RULER\ntask_names: [vt]\nlength: [100]\n", "key 'length'", "out of range");
    snprintf(y, sizeof y, "%snum_samples: 0\n", ok);
    bad(y, "key 'num_samples'", "out of range");
    snprintf(y, sizeof y, "%sruler_variant: nvidia\n", ok);
    bad(y, "key 'ruler_variant'", "ruler, loom");
    snprintf(y, sizeof y, "%stemplate: llama9\n", ok);
    bad(y, "key 'template'", "llama9");
    snprintf(y, sizeof y, "%sbuild_data: maybe\n", ok);
    bad(y, "key 'build_data'", "true or false");
    snprintf(y, sizeof y, "%sseed: -1\n", ok);
    bad(y, "key 'seed'", NULL);
    snprintf(y, sizeof y, "%sno_template_tasks: some\n", ok);
    bad(y, "key 'no_template_tasks'", NULL);
    snprintf(y, sizeof y, "%sseed: 1\nseed: 2\n", ok);
    bad(y, "key 'seed' is given twice", NULL);
    bad("benchmark_name: RULER\ntask_names: [vt, niah_single_9]\nlength: [4096]\n", "key 'task_names'", "niah_single_9");
    bad("benchmark_name: LongBench\ntask_names: [vt]\n", "key 'task_names'", "'vt' is not a LongBench task");
    bad("benchmark_name: RULER\ntask_names: []\nlength: [4096]\n", "key 'task_names'", "empty");
    bad("benchmark_name: Ruler\ntask_names: [vt]\nlength: [4096]\n", "key 'benchmark_name'", "RULER, LongBench");
    bad("task_names: [vt]\nlength: [4096]\n", "required key 'benchmark_name'", NULL);
    bad("benchmark_name: RULER\ntask_names: [vt]\n", "key 'length'", NULL);
    bad("benchmark_name: RULER\ntask_names: [vt\nlength: [4096]\n", "YAML syntax error", NULL);
    bad("- just\n- a list\n", "mapping", NULL);
    bad("benchmark_name: null\ntask_names: [vt]\nlength: [4096]\n", "key 'benchmark_name'", "null");

    ks_bench_config c = {0};
    ck_assert_int_eq(ks_bench_config_load(&c, "/nonexistent/x.yaml"), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "/nonexistent/x.yaml"));
    /* from a file, as `kvscope prepare` and `eval` load it */
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.yaml", ks_test_tmpdir());
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("benchmark_name: RULER\ntask_names: [vt]\nlength: [4096]\nnonsense_key: 3\n", f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(ks_bench_config_load(&c, path), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "nonsense_key"));
    assert_released(&c, path);
    remove(path);
}
END_TEST

int main(void) {
    Suite *s = suite_create("bench_config");
    TCase *tc = tcase_create("bench_config");
    tcase_add_test(tc, test_seed_ruler_yaml);
    tcase_add_test(tc, test_values_and_defaults);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
