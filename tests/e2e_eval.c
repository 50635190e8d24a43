/* e2e_eval.c — `kvscope eval` end to end: SmolLM2 on the CPU, a tiny RULER config, `mpirun -np 2`.
 *
 * Run A goes through uninterrupted. Run B is killed with SIGKILL (mpirun and both ranks at once, as a node
 * failure would) once it has committed some samples, then rerun with the same command. Run C is the same
 * with only mpirun killed (as a scheduler kills a job step): its ranks must be gone within a second and the
 * rerun, started at once, must not trip over the result file's lock. The final files of B and C must hold
 * every sample exactly once, with the same predictions and scores as A: resume skips what was committed,
 * loses nothing and duplicates nothing; and the samples are deterministic whichever rank runs them.
 *
 * Model instances over pipeline stages (--gp_num): for FullKV and the compressing methods, runs of 4 ranks as
 * 2 instances of 2 stages, 3 ranks as one instance of 3 stages, and 2 instances sharing a device (--gp_num 1/2)
 * write the predictions, scores, KV bytes and per-layer statistics of one rank holding the whole model. Then a
 * stage rank is SIGKILLed mid-run: the job ends, and the rerun resumes to the same results.
 *
 * usage: e2e_eval KVSCOPE MPIEXEC CONFIG GGUF
 */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "results/results.h"
#include "test_util.h"

static const char *kvscope, *mpiexec, *config, *gguf;

#define N_SAMPLES 6 /* the config's tasks x lengths x num_samples */

/* A run's shape: ranks, --gp_num, method and its knobs, --limit (-1: all samples). */
typedef struct run_shape {
    const char *np, *gp_num, *method, *opt;
    const char *limit;
} run_shape;

static const run_shape DEFAULT_RUN = {"2", "1", "FullKV", NULL, "-1"};

/* Starts `mpiexec -np N kvscope eval ...` in its own process group, stderr to log; returns the pid. */
static pid_t start_run(const char *out_dir, const char *log, const run_shape *r) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setpgid(0, 0);
        if (!freopen(log, "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(127);
        const char *argv[40] = {mpiexec, "-np", r->np, "--oversubscribe", kvscope, "eval", "--model_path", gguf,
                                "--cfg_path", config, "--output", out_dir, "--threads", "1", "--max_new_tokens",
                                "12", "--gp_num", r->gp_num, "--acceleration", r->method, "--limit", r->limit,
                                "--device", "cpu"};
        int n = 24;
        if (r->opt) argv[n++] = "--method_opt", argv[n++] = r->opt;
        execvp(mpiexec, (char *const *)argv);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

static pid_t start_eval(const char *out_dir, const char *log) { return start_run(out_dir, log, &DEFAULT_RUN); }

static int wait_exit(pid_t pid) {
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

static void dump(const char *log) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "tail -n 30 %s >&2", log);
    if (system(cmd)) {
    }
}

static const char *method_result_path(const char *dir, const char *method) {
    static char buf[2][4200];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%.4000s/SmolLM2-135M-Instruct.Q4_1_RULER_%s.h5", dir, method);
    return buf[k];
}

static const char *result_path(const char *dir) { return method_result_path(dir, "FullKV"); }

/* Rows committed so far (0 while the file does not exist yet). */
static int committed(const char *dir) {
    ks_results_data d = {0};
    if (access(result_path(dir), R_OK) != 0) return 0;
    ck_assert_msg(ks_results_read(result_path(dir), &d) == KS_OK, "mid-run read failed: %s", ks_last_error());
    int n = d.n_rows;
    ks_results_data_free(&d);
    return n;
}

static const ks_result *find_row(const ks_results_data *d, const ks_result *key, int *count) {
    const ks_result *hit = NULL;
    *count = 0;
    for (int i = 0; i < d->n_rows; i++)
        if (!strcmp(d->rows[i].task, key->task) && d->rows[i].length == key->length &&
            d->rows[i].index == key->index) {
            hit = &d->rows[i];
            ++*count;
        }
    return hit;
}

/* /proc/<pid>/<file> (cmdline, environ) into buf with its NUL separators replaced by `sep`; 0 if unreadable. */
static int read_proc(const char *pid, const char *file, char *buf, size_t cap, char sep) {
    char path[300];
    snprintf(path, sizeof path, "/proc/%s/%s", pid, file);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t len = fread(buf, 1, cap - 1, f);
    fclose(f);
    for (size_t i = 0; i < len; i++) buf[i] = buf[i] ? buf[i] : sep;
    buf[len] = '\0';
    return 1;
}

/* Processes whose command line mentions `needle` (the ranks of a run, by its output directory). Zombies have
 * an empty command line and do not count: they compute nothing and hold no lock. */
static int running(const char *needle) {
    DIR *proc = opendir("/proc");
    ck_assert_ptr_nonnull(proc);
    int n = 0;
    struct dirent *e;
    char cmd[8192];
    while ((e = readdir(proc)))
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && read_proc(e->d_name, "cmdline", cmd, sizeof cmd, ' '))
            n += strstr(cmd, needle) != NULL;
    closedir(proc);
    return n;
}

/* Every sample of `dir` exactly once, with the predictions and scores of the uninterrupted run `ref`. */
static void assert_same_results(const char *ref, const char *dir) {
    ks_results_data da = {0}, db = {0};
    ck_assert_int_eq(ks_results_read(result_path(ref), &da), KS_OK);
    ck_assert_int_eq(ks_results_read(result_path(dir), &db), KS_OK);
    ck_assert_int_eq(da.n_rows, N_SAMPLES);
    ck_assert_int_eq(db.n_rows, N_SAMPLES);
    for (int i = 0; i < da.n_rows; i++) {
        int ca, cb;
        find_row(&da, &da.rows[i], &ca);
        const ks_result *rb = find_row(&db, &da.rows[i], &cb);
        ck_assert_int_eq(ca, 1);
        ck_assert_msg(cb == 1, "%s/%d/%d is in the resumed file %d times", da.rows[i].task, da.rows[i].length,
                      da.rows[i].index, cb);
        ck_assert_str_eq(rb->prediction, da.rows[i].prediction);
        ck_assert(rb->score == da.rows[i].score);
        ck_assert_int_eq(rb->prompt_tokens, da.rows[i].prompt_tokens);
        ck_assert_int_eq(rb->generated_tokens, da.rows[i].generated_tokens);
    }
    ks_results_data_free(&da);
    ks_results_data_free(&db);
}

/* Starts a run into `dir`, SIGKILLs it once 2 samples are committed, reruns the same command and checks it
 * resumed and ends like `ref`. whole_job: mpirun and both ranks at once (a node failure); otherwise mpirun
 * only (a scheduler killing the launcher): its ranks must stop at once, and the rerun starts immediately. */
static void kill_and_resume(const char *ref, const char *dir, const char *log, int whole_job) {
    pid_t pid = start_eval(dir, log);
    int n = 0;
    for (int t = 0; t < 6000 && (n = committed(dir)) < 2; t++) usleep(20000);
    ck_assert_msg(n >= 2, "%s committed only %d samples before the deadline", dir, n);
    ck_assert_int_eq(kill(whole_job ? -pid : pid, SIGKILL), 0);
    ck_assert_int_eq(wait_exit(pid), 128 + SIGKILL);
    char needle[4200];
    snprintf(needle, sizeof needle, "--output %s ", dir);
    int left = running(needle);
    for (int t = 0; t < 25 && left > 0; t++) { /* the ranks poll for their launcher every 50 ms */
        usleep(20000);
        left = running(needle);
    }
    ck_assert_msg(left == 0, "%d process(es) of the killed run still run 0.5 s after the kill", left);
    int after_kill = committed(dir);
    ck_assert_int_ge(after_kill, 2);
    fprintf(stderr, "e2e: killed %s with %d of %d samples committed\n", whole_job ? "the whole job" : "mpirun",
            after_kill, N_SAMPLES);

    int rc = wait_exit(start_eval(dir, log));
    if (rc != 0) dump(log);
    ck_assert_int_eq(rc, 0);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "grep -q '%d already done' %s", after_kill, log);
    ck_assert_msg(system(cmd) == 0, "the rerun did not report resuming from %d samples", after_kill);
    assert_same_results(ref, dir);
}

START_TEST(test_kill_and_resume) {
    char tmpl[] = "/tmp/kvscope-e2e-XXXXXX";
    const char *root = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(root);
    char a[4096], b[4096], c[4096], log[4096];
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);
    snprintf(c, sizeof c, "%s/c", root);
    snprintf(log, sizeof log, "%s/log", root);

    int rc = wait_exit(start_eval(a, log)); /* uninterrupted */
    if (rc != 0) dump(log);
    ck_assert_int_eq(rc, 0);
    kill_and_resume(a, b, log, 1);
    kill_and_resume(a, c, log, 0);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
}
END_TEST

/* Every row of `ref` is in `got` once, with the same prediction, score, token counts, KV bytes and per-layer
 * statistics (bit for bit: every rank computes with one thread). */
static void assert_same_rows(const char *ref, const char *got, const char *what) {
    ks_results_data da = {0}, db = {0};
    ck_assert_msg(ks_results_read(ref, &da) == KS_OK, "%s: %s", what, ks_last_error());
    ck_assert_msg(ks_results_read(got, &db) == KS_OK, "%s: %s", what, ks_last_error());
    ck_assert_int_eq(db.n_rows, da.n_rows);
    for (int i = 0; i < da.n_rows; i++) {
        const ks_result *a = &da.rows[i];
        int count;
        const ks_result *b = find_row(&db, a, &count);
        ck_assert_msg(count == 1, "%s: %s/%d/%d is there %d times", what, a->task, a->length, a->index, count);
        ck_assert_msg(!strcmp(b->prediction, a->prediction), "%s: %s/%d/%d predicts '%s', one rank '%s'", what,
                      a->task, a->length, a->index, b->prediction, a->prediction);
        ck_assert(b->score == a->score && b->prompt_tokens == a->prompt_tokens &&
                  b->generated_tokens == a->generated_tokens);
        ck_assert_msg(b->kv_bytes_before == a->kv_bytes_before && b->kv_bytes_after == a->kv_bytes_after,
                      "%s: KV bytes %lld/%lld, one rank %lld/%lld", what, (long long)b->kv_bytes_before,
                      (long long)b->kv_bytes_after, (long long)a->kv_bytes_before, (long long)a->kv_bytes_after);
        ck_assert_int_eq(b->n_layers, a->n_layers);
        for (int l = 0; l < a->n_layers; l++)
            ck_assert_msg(!memcmp(&b->layers[l], &a->layers[l], sizeof a->layers[l]),
                          "%s: %s/%d/%d layer %d: kept %d mass %.9g, one rank kept %d mass %.9g", what, a->task,
                          a->length, a->index, a->layers[l].layer, b->layers[l].kept, b->layers[l].attn_mass_kept,
                          a->layers[l].kept, a->layers[l].attn_mass_kept);
    }
    ks_results_data_free(&da);
    ks_results_data_free(&db);
}

static void run_ok(const char *dir, const char *log, const run_shape *r) {
    int rc = wait_exit(start_run(dir, log, r));
    if (rc != 0) dump(log);
    ck_assert_msg(rc == 0, "-np %s --gp_num %s --acceleration %s exited %d", r->np, r->gp_num, r->method, rc);
}

static const run_shape stage_methods[] = {
    {.method = "FullKV"},
    {.method = "SnapKV", .opt = "max_capacity_prompt=128"},
    {.method = "PyramidKV", .opt = "max_capacity_prompt=128"},
    {.method = "CakeKV", .opt = "cache_size=128"},
    {.method = "H2O"},
};

/* One method: one rank with the whole model, then 2 instances x 2 stages, 1 x 3 stages and 2 instances of one
 * stage on a shared device; the first sample of each task. */
START_TEST(test_stage_layouts) {
    const run_shape *m = &stage_methods[_i];
    char tmpl[] = "/tmp/kvscope-stages-XXXXXX";
    const char *root = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(root);
    char dir[4096], log[4096], ref[4200];
    snprintf(log, sizeof log, "%s/log", root);
    const char *shapes[][2] = {{"1", "1"}, {"4", "2"}, {"3", "3"}, {"2", "1/2"}}; /* -np, --gp_num */
    for (int k = 0; k < 4; k++) {
        run_shape r = {shapes[k][0], shapes[k][1], m->method, m->opt, "1"};
        snprintf(dir, sizeof dir, "%s/%d", root, k);
        run_ok(dir, log, &r);
        if (k == 0) {
            snprintf(ref, sizeof ref, "%s", method_result_path(dir, m->method));
            continue;
        }
        char what[200];
        snprintf(what, sizeof what, "%s, -np %s --gp_num %s", m->method, r.np, r.gp_num);
        assert_same_rows(ref, method_result_path(dir, m->method), what);
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
}
END_TEST

/* The pid of world rank `rank` among the processes of the run writing to `needle` (their command lines). */
static pid_t rank_pid(const char *needle, int rank) {
    DIR *proc = opendir("/proc");
    ck_assert_ptr_nonnull(proc);
    pid_t found = -1;
    char want[64], buf[65536];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    struct dirent *e;
    while (found < 0 && (e = readdir(proc))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || !read_proc(e->d_name, "cmdline", buf, sizeof buf, ' '))
            continue;
        if (!strstr(buf, needle) || !strstr(buf, "kvscope eval") || strstr(buf, "mpirun") || strstr(buf, "mpiexec"))
            continue;
        if (!read_proc(e->d_name, "environ", buf, sizeof buf, '\n')) continue;
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
            if (!strcmp(line, want)) found = (pid_t)atoi(e->d_name);
    }
    closedir(proc);
    return found;
}

/* A later stage (world rank 3: instance 1, stage 1) SIGKILLed mid-run: the job ends within a bounded time with a
 * nonzero status, nothing of it keeps running, and the rerun resumes to the results of one rank. */
START_TEST(test_stage_killed) {
    char tmpl[] = "/tmp/kvscope-stagekill-XXXXXX";
    const char *root = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(root);
    char a[4096], b[4096], log[4096];
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);
    snprintf(log, sizeof log, "%s/log", root);
    const run_shape one = {"1", "1", "FullKV", NULL, "-1"}, staged = {"4", "2", "FullKV", NULL, "-1"};
    run_ok(a, log, &one);
    pid_t pid = start_run(b, log, &staged);
    int n = 0;
    for (int t = 0; t < 6000 && (n = committed(b)) < 2; t++) usleep(20000);
    ck_assert_msg(n >= 2, "committed only %d samples before the deadline", n);
    char needle[4200];
    snprintf(needle, sizeof needle, "--output %s ", b);
    pid_t victim = rank_pid(needle, 3);
    ck_assert_msg(victim > 0, "no process of world rank 3 found");
    time_t t0 = time(NULL);
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    int rc = wait_exit(pid);
    ck_assert_msg(rc != 0, "the job exited 0 after a stage was killed");
    ck_assert_msg(time(NULL) - t0 <= 60, "the job took %ld s to end after a stage was killed", (long)(time(NULL) - t0));
    int left = running(needle);
    for (int t = 0; t < 50 && left > 0; t++) usleep(20000), left = running(needle);
    ck_assert_msg(left == 0, "%d process(es) of the job still run after it ended", left);
    int after_kill = committed(b);
    fprintf(stderr, "e2e: killed stage rank 3 with %d of %d samples committed\n", after_kill, N_SAMPLES);
    run_ok(b, log, &staged);
    assert_same_results(a, b);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
}
END_TEST

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: e2e_eval KVSCOPE MPIEXEC CONFIG GGUF\n");
        return 2;
    }
    kvscope = argv[1];
    mpiexec = argv[2];
    config = argv[3];
    gguf = argv[4];
    Suite *s = suite_create("e2e_eval");
    TCase *tc = tcase_create("kill_and_resume");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_kill_and_resume);
    suite_add_tcase(s, tc);
    TCase *stages = tcase_create("stages");
    tcase_set_timeout(stages, 900);
    tcase_add_loop_test(stages, test_stage_layouts, 0, (int)(sizeof stage_methods / sizeof stage_methods[0]));
    tcase_add_test(stages, test_stage_killed);
    suite_add_tcase(s, stages);
    return ks_test_run(s, 1);
}
