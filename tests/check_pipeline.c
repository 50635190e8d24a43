/* check_pipeline.c — one model instance spread over pipeline stages equals the whole model on one stage: the
 * SmolLM2 GGUF split into 3 layer ranges, each stage a thread with its own forward and method, the stages
 * talking through an in-process transport (mailboxes). For every method, with the full cache (chunks pipelined
 * through the stages) and the budget-sized one (each stage layer-major): the same greedy tokens, the same KV
 * bytes and the same per-layer statistics as one stage holding every layer. The
 * MPI transport is tests/mpi_stage.c; `kvscope eval --gp_num` end to end is tests/e2e_eval.c. */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/fast.h"
#include "engine/generate.h"
#include "engine/pipeline.h"
#include "methods/method.h"
#include "model/model.h"
#include "test_util.h"

enum { STAGES = 3, CHANNELS = KS_PIPE_CHANNELS, PROMPT = 150, CHUNK = 40, NEW = 6 };

/* ---- an in-process transport: one FIFO per (from, to, channel) ---- */

typedef struct msg {
    struct msg *next;
    size_t bytes;
    unsigned char data[];
} msg;

typedef struct mailboxes {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    msg *head[STAGES][STAGES][CHANNELS], *tail[STAGES][STAGES][CHANNELS];
} mailboxes;

typedef struct endpoint {
    mailboxes *mb;
    int stage;
} endpoint;

static ks_status mb_send(void *ctx, int to, int channel, const void *buf, size_t bytes) {
    endpoint *e = ctx;
    msg *m = malloc(sizeof *m + bytes);
    ck_assert_ptr_nonnull(m);
    m->next = NULL, m->bytes = bytes;
    memcpy(m->data, buf, bytes);
    pthread_mutex_lock(&e->mb->lock);
    msg **tail = &e->mb->tail[e->stage][to][channel];
    if (*tail) (*tail)->next = m;
    else e->mb->head[e->stage][to][channel] = m;
    *tail = m;
    pthread_cond_broadcast(&e->mb->changed);
    pthread_mutex_unlock(&e->mb->lock);
    return KS_OK;
}

static ks_status mb_recv(void *ctx, int from, int channel, void *buf, size_t bytes) {
    endpoint *e = ctx;
    pthread_mutex_lock(&e->mb->lock);
    msg **head = &e->mb->head[from][e->stage][channel];
    while (!*head) pthread_cond_wait(&e->mb->changed, &e->mb->lock);
    msg *m = *head;
    *head = m->next;
    if (!*head) e->mb->tail[from][e->stage][channel] = NULL;
    pthread_mutex_unlock(&e->mb->lock);
    ks_status st = m->bytes == bytes ? KS_OK : ks_fail(KS_ERR_MPI, "got %zu bytes, expected %zu", m->bytes, bytes);
    if (st == KS_OK) memcpy(buf, m->data, bytes);
    free(m);
    return st;
}

/* ---- one stage ---- */

typedef struct stage {
    ks_model model;
    ks_method *method;
    ks_forward fwd;
    endpoint ep;
    ks_stage_transport t;
    ks_pipeline pipe;
    pthread_t thread;
    ks_status follow_status;
} stage;

static ks_method *make_method(const char *name, const char *const *opts) {
    int n = 0;
    while (opts && opts[n]) n++;
    ks_method *m = NULL;
    ck_assert_msg(ks_method_create(&m, name, NULL, opts, n) == KS_OK, "%s", ks_last_error());
    return m;
}

static void forward_on(ks_forward *f, const ks_model *model, ks_method *m, ks_forward_cache cache) {
    ks_forward_params fp = {.device = "cpu", .max_ctx = PROMPT + NEW + 8, .max_new = NEW, .chunk = CHUNK,
                            .threads = 1, .cache = cache};
    ck_assert_msg(ks_forward_init(f, model, m, &fp) == KS_OK, "%s", ks_last_error());
}

static void *follow(void *arg) {
    stage *s = arg;
    /* OpenMP's team size is a per-thread setting that the forward's init (threads = 1) made on the main thread
     * only, and the GEMM's column split changes OpenBLAS's rounding in the last bit. In a job every stage is a
     * process of its own and sets its own. */
    ks_fast_set_threads(1);
    s->follow_status = ks_pipeline_follow(&s->pipe);
    return NULL;
}

static void prompt_ids(const ks_model *m, int32_t *ids) {
    for (int i = 0; i < PROMPT; i++) ids[i] = 3 + (int32_t)((i * 7919u + 13) % (unsigned)(m->cfg.vocab - 3));
}

static const char *const *method_opts(int i, const char **name) {
    static const char *const snap[] = {"max_capacity_prompt=64", "window_size=16", NULL};
    static const char *const pyramid[] = {"max_capacity_prompt=64", "window_size=16", NULL};
    static const char *const h2o[] = {"heavy_budget=30", "recent_budget=30", NULL};
    static const char *const stream[] = {"start_size=4", "recent_size=60", NULL};
    static const char *const l2[] = {"max_capacity_prompt=80", NULL};
    static const char *const cake[] = {"cache_size=48", "window_size=16", NULL};
    static const char *const cake_once[] = {"cache_size=48", "window_size=16", "cascading=false", NULL};
    static const struct { const char *name; const char *const *opts; } all[] = {
        {"FullKV", NULL}, {"SnapKV", snap}, {"PyramidKV", pyramid}, {"H2O", h2o}, {"StreamingLLM", stream},
        {"L2Compress", l2}, {"CakeKV", cake}, {"CakeKV", cake_once}};
    *name = all[i].name;
    return all[i].opts;
}

START_TEST(test_three_stages_equal_one) {
    const char *gguf = ks_test_smollm2_gguf();
    ck_assert_msg(gguf, "the SmolLM2 GGUF is missing (jobs/setup.sh installs it)");
    const char *name;
    const char *const *opts = method_opts(_i / 2, &name);
    ks_forward_cache cache = _i % 2 ? KS_CACHE_FULL : KS_CACHE_AUTO; /* AUTO: budget-sized, layer-major stages */

    /* One stage holding every layer. */
    ks_model whole = {0};
    ck_assert(ks_model_load(&whole, gguf, 0, -1) == KS_OK);
    int32_t ids[PROMPT], want[NEW], got[NEW];
    prompt_ids(&whole, ids);
    ks_method *wm = make_method(name, opts);
    ks_forward wf = {0};
    forward_on(&wf, &whole, wm, cache);
    ks_generate_params gp = {.max_new_tokens = NEW};
    ks_generate_result wr, pr;
    ck_assert_msg(ks_generate(&wf, ids, PROMPT, &gp, want, &wr) == KS_OK, "%s", ks_last_error());
    ks_layer_stat want_stats[KS_METHOD_MAX_LAYERS];
    int n_want = wm ? ks_method_layer_stats(wm, want_stats) : 0;
    int L = whole.cfg.n_layers;

    /* The same model in three stages. */
    const int first[STAGES + 1] = {0, 11, 20, L};
    mailboxes mb = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};
    stage st[STAGES];
    memset(st, 0, sizeof st);
    for (int s = 0; s < STAGES; s++) {
        ck_assert_msg(ks_model_load(&st[s].model, gguf, first[s], first[s + 1]) == KS_OK, "%s", ks_last_error());
        st[s].method = make_method(name, opts);
        forward_on(&st[s].fwd, &st[s].model, st[s].method, cache);
        ck_assert_int_eq(st[s].fwd.kv_rows < st[s].fwd.max_ctx, wf.kv_rows < wf.max_ctx);
        st[s].ep = (endpoint){&mb, s};
        st[s].t = (ks_stage_transport){.stage = s, .n_stages = STAGES, .ctx = &st[s].ep, .send = mb_send,
                                       .recv = mb_recv};
        ck_assert_msg(ks_pipeline_init(&st[s].pipe, &st[s].fwd, &st[s].t) == KS_OK, "%s", ks_last_error());
        if (s) ck_assert(pthread_create(&st[s].thread, NULL, follow, &st[s]) == 0);
    }
    gp.pipeline = &st[0].pipe;
    for (int rep = 0; rep < 2; rep++) { /* a second sample on the same stages: the reset reaches them all */
        ck_assert_msg(ks_generate(&st[0].fwd, ids, PROMPT, &gp, got, &pr) == KS_OK, "%s", ks_last_error());
        ck_assert_int_eq(pr.n, wr.n);
        for (int i = 0; i < wr.n; i++)
            ck_assert_msg(got[i] == want[i], "%s: token %d: %d, one stage %d", name, i, got[i], want[i]);
        ck_assert_msg(pr.kv_bytes_full == wr.kv_bytes_full && pr.kv_bytes_prefill == wr.kv_bytes_prefill &&
                      pr.kv_bytes_end == wr.kv_bytes_end, "%s: KV bytes %lld/%lld/%lld, one stage %lld/%lld/%lld",
                      name, (long long)pr.kv_bytes_full, (long long)pr.kv_bytes_prefill, (long long)pr.kv_bytes_end,
                      (long long)wr.kv_bytes_full, (long long)wr.kv_bytes_prefill, (long long)wr.kv_bytes_end);
        ck_assert_int_eq(st[0].pipe.n_stats, n_want);
        for (int i = 0; i < n_want; i++)
            ck_assert_msg(!memcmp(&st[0].pipe.stats[i], &want_stats[i], sizeof want_stats[i]),
                          "%s: row %d's statistics differ: layer %d/%d kept %d/%d mass %.9g/%.9g norms %.9g/%.9g "
                          "%.9g/%.9g (pipeline/one stage)", name, i, st[0].pipe.stats[i].layer, want_stats[i].layer,
                          st[0].pipe.stats[i].kept, want_stats[i].kept, st[0].pipe.stats[i].attn_mass_kept,
                          want_stats[i].attn_mass_kept, st[0].pipe.stats[i].key_norm_mean, want_stats[i].key_norm_mean,
                          st[0].pipe.stats[i].key_norm_max, want_stats[i].key_norm_max);
    }
    ck_assert(ks_pipeline_end(&st[0].pipe) == KS_OK);
    for (int s = 0; s < STAGES; s++) {
        if (s) {
            pthread_join(st[s].thread, NULL);
            ck_assert_msg(st[s].follow_status == KS_OK, "stage %d: %s", s, ks_last_error());
        }
        ks_pipeline_free(&st[s].pipe);
        ks_forward_free(&st[s].fwd);
        ks_method_free(st[s].method);
        ks_model_free(&st[s].model);
    }
    ks_forward_free(&wf);
    ks_method_free(wm);
    ks_model_free(&whole);
}
END_TEST

int main(void) {
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("pipeline");
    tcase_add_loop_test(tc, test_three_stages_equal_one, 0, 16);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
