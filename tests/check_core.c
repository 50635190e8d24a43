/* check_core.c — status messages, JSON field errors, the option parser, what file.c says about odd paths. */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/options.h"
#include "core/file.h"
#include "core/json.h"
#include "core/status.h"
#include "test_util.h"

START_TEST(test_fail_and_context) {
    ks_status st = ks_fail(KS_ERR_IO, "x.json: cannot open (%s)", "No such file");
    ck_assert_int_eq(st, KS_ERR_IO);
    ck_assert_str_eq(ks_last_error(), "x.json: cannot open (No such file)");
    ks_fail_context(st, "loading %s", "model");
    ck_assert_str_eq(ks_last_error(), "loading model: x.json: cannot open (No such file)");
}
END_TEST

START_TEST(test_json_fields) {
    const char *txt = "{\"a\": 3, \"b\": 2.5, \"c\": \"s\", \"d\": null, \"e\": true}";
    cJSON *j;
    ck_assert_int_eq(ks_json_parse(txt, strlen(txt), "t.json", &j), KS_OK);
    int a = 0, e = 0, miss = 7;
    float b = 0;
    const char *c = NULL;
    ck_assert_int_eq(ks_json_get_int(j, "a", "t.json", &a), KS_OK);
    ck_assert_int_eq(a, 3);
    ck_assert_int_eq(ks_json_get_float_opt(j, "b", "t.json", &b), KS_OK);
    ck_assert_float_eq(b, 2.5f);
    ck_assert_int_eq(ks_json_get_string_opt(j, "c", "t.json", &c), KS_OK);
    ck_assert_str_eq(c, "s");
    ck_assert_int_eq(ks_json_get_bool_opt(j, "e", "t.json", &e), KS_OK);
    ck_assert_int_eq(e, 1);
    ck_assert_int_eq(ks_json_get_int_opt(j, "d", "t.json", &miss), KS_OK);
    ck_assert_int_eq(miss, 7);
    ck_assert_int_eq(ks_json_get_int(j, "b", "t.json", &a), KS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'b'"));
    ck_assert_int_eq(ks_json_get_int(j, "zz", "t.json", &a), KS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "t.json: required field 'zz'"));
    cJSON_Delete(j);
    ck_assert_int_eq(ks_json_parse("{\"a\":", 5, "bad.json", &j), KS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "bad.json"));
}
END_TEST

START_TEST(test_options) {
    const char *path = NULL;
    int n = 5, flag = 0;
    float f = 1.0f;
    const ks_option opts[] = {
        {"path", KS_OPT_STRING, &path, "P", "a path", 1},
        {"n", KS_OPT_INT, &n, "N", "a count", 0},
        {"f", KS_OPT_FLOAT, &f, "X", "a number", 0},
        {"flag", KS_OPT_FLAG, &flag, NULL, "a flag", 0},
        {0},
    };
    int help;
    char *ok[] = {"cmd", "--path", "p.gguf", "--n=12", "--flag", "--f", "0.5"};
    ck_assert_int_eq(ks_options_parse(opts, 7, ok, "cmd", "s", &help), KS_OK);
    ck_assert_str_eq(path, "p.gguf");
    ck_assert_int_eq(n, 12);
    ck_assert_int_eq(flag, 1);
    ck_assert_float_eq(f, 0.5f);
    char *bad_int[] = {"cmd", "--path", "p", "--n", "12x"};
    ck_assert_int_eq(ks_options_parse(opts, 5, bad_int, "cmd", "s", &help), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--n"));
    char *unknown[] = {"cmd", "--path", "p", "--nope"};
    ck_assert_int_eq(ks_options_parse(opts, 4, unknown, "cmd", "s", &help), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--nope"));
    char *missing[] = {"cmd", "--n", "3"};
    ck_assert_int_eq(ks_options_parse(opts, 3, missing, "cmd", "s", &help), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--path"));
    char *novalue[] = {"cmd", "--path"};
    ck_assert_int_eq(ks_options_parse(opts, 2, novalue, "cmd", "s", &help), KS_ERR_ARG);
}
END_TEST

/* KS_OPT_WORDS: `--device 0 1 3` takes the words up to the next option; `--device=2` one; repeats append. */
START_TEST(test_option_words) {
    ks_opt_strings dev = {0};
    int n = 0;
    const ks_option opts[] = {
        {"device", KS_OPT_WORDS, &dev, "D", "devices", 0},
        {"n", KS_OPT_INT, &n, "N", "a count", 0},
        {0},
    };
    int help;
    char *list[] = {"cmd", "--device", "0", "1", "3", "--n", "2", "--device=5", "--device", "cpu"};
    ck_assert_int_eq(ks_options_parse(opts, 10, list, "cmd", "s", &help), KS_OK);
    ck_assert_int_eq(dev.n, 5);
    const char *want[] = {"0", "1", "3", "5", "cpu"};
    for (int i = 0; i < 5; i++) ck_assert_str_eq(dev.v[i], want[i]);
    ck_assert_int_eq(n, 2);
    char *empty[] = {"cmd", "--device", "--n", "2"};
    ck_assert_int_eq(ks_options_parse(opts, 4, empty, "cmd", "s", &help), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--device"));
    char *last[] = {"cmd", "--n", "1", "--device"};
    ck_assert_int_eq(ks_options_parse(opts, 4, last, "cmd", "s", &help), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--device"));
}
END_TEST

/* ks_make_dirs makes every missing folder of a path, accepts one that exists (with a trailing slash too), and
 * names the option, the path and the reason when a component is a regular file. */
START_TEST(test_make_dirs) {
    char dir[4096], nested[4200], file[4200], under_file[4300];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    snprintf(nested, sizeof nested, "%s/a/b/c", dir);
    ck_assert_int_eq(ks_make_dirs(nested, "--output"), KS_OK);
    ck_assert(ks_is_directory(nested));
    ck_assert_int_eq(ks_make_dirs(nested, "--output"), KS_OK);
    snprintf(nested + strlen(nested), sizeof nested - strlen(nested), "/");
    ck_assert_int_eq(ks_make_dirs(nested, "--output"), KS_OK);
    snprintf(file, sizeof file, "%s/a/plain", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(under_file, sizeof under_file, "%s/d", file);
    ck_assert_int_eq(ks_make_dirs(under_file, "--output"), KS_ERR_IO);
    ck_assert_msg(strstr(ks_last_error(), "--output") && strstr(ks_last_error(), file) &&
                      strstr(ks_last_error(), "a file of that name exists"),
                  "message: %s", ks_last_error());
}
END_TEST

/* What is wrong with a path that is not a regular file is said, not "not found" or "read error"; a FIFO is
 * never opened (that would wait for a writer). */
START_TEST(test_file_kinds) {
    char dir[4096], fifo[4200], file[4200];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(file, sizeof file, "%s/file.txt", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("x", f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_str_eq(ks_special_file_kind(fifo), "a FIFO");
    ck_assert_str_eq(ks_special_file_kind("/dev/null"), "a character device");
    ck_assert_ptr_null(ks_special_file_kind(file));
    ck_assert_ptr_null(ks_special_file_kind(dir));
    ck_assert_ptr_null(ks_special_file_kind("/nonexistent/x"));
    char *text = (char *)1;
    size_t n;
    ck_assert_int_eq(ks_file_read_all(dir, &text, &n), KS_ERR_IO);
    ck_assert_ptr_null(text);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), dir));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "is a directory, expected a file"));
    FILE *in = (FILE *)1;
    ck_assert_int_eq(ks_file_open_read(dir, &in), KS_ERR_IO);
    ck_assert_ptr_null(in);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "is a directory, expected a file"));
    ck_assert_int_eq(ks_file_open_read(file, &in), KS_OK);
    ck_assert_int_eq(fgetc(in), 'x');
    fclose(in);
    remove(fifo);
    remove(file);
    remove(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fail_and_context);
    tcase_add_test(tc, test_json_fields);
    tcase_add_test(tc, test_options);
    tcase_add_test(tc, test_option_words);
    tcase_add_test(tc, test_file_kinds);
    tcase_add_test(tc, test_make_dirs);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
