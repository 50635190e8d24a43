/* e2e_eval.c — `kvscope eval` end to end: SmolLM2 on the CPU, a tiny RULER config, `mpirun -np 2`.
 *
 * Run A goes through uninterrupted. Run B is killed with SIGKILL (mpirun and both ranks at once, as a node
 * failure would) once it has committed some samples, then rerun with the same command. Run C is the same
 * with only mpirun killed (as a scheduler kills a job step): its ranks must be gone within a second and the
 * rerun, started at once, must not trip over the result file's lock. The final files of B and C must hold
 * every sample exactly once, with the same predictions and scores as A: resume skips what was committed,
 * loses nothing and duplicates nothing; and the samples are deterministic whichever rank runs them.
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

/* Starts `mpiexec -np 2 kvscope eval ...` in its own process group, stderr to log; returns the pid. */
static pid_t start_eval(const char *out_dir, const char *log) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setpgid(0, 0);
        if (!freopen(log, "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(127);
        execl(mpiexec, mpiexec, "-np", "2", "--oversubscribe", kvscope, "eval", "--model_path", gguf, "--cfg_path",
              config, "--output", out_dir, "--threads", "1", "--max_new_tokens", "12", (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

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

static const char *result_path(const char *dir) {
    static char buf[2][4200];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%.4000s/SmolLM2-135M-Instruct.Q4_1_RULER_FullKV.h5", dir);
    return buf[k];
}

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

/* Processes whose command line mentions `needle` (the ranks of a run, by its output directory). Zombies have
 * an empty command line and do not count: they compute nothing and hold no lock. */
static int running(const char *needle) {
    DIR *proc = opendir("/proc");
    ck_assert_ptr_nonnull(proc);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(proc))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], cmd[8192];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        size_t len = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        for (size_t i = 0; i < len; i++) cmd[i] = cmd[i] ? cmd[i] : ' ';
        cmd[len] = '\0';
        n += strstr(cmd, needle) != NULL;
    }
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
    return ks_test_run(s, 1);
}
