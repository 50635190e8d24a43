/* check_chain.c — compositions of KV methods (--acceleration SnapKV+ThinK+KIVI; methods/method.h, "Compositions").
 *
 *     check_chain            the parts of a name and its canonical name; the sense checks and their messages
 *                            (order, two of a role, FullKV, a merge without eviction, a part that needs stable rows
 *                            after a decode-time eviction); --method_opt routing (part.key, a plain key's one part,
 *                            ambiguous and unknown keys); --method_config sections and their round trip; on the
 *                            cpu backend with the tiny model, the order of every part's hooks at the prompt's end
 *                            and at decode, before_compact right before the compaction, every part's per-row
 *                            arrays following a compaction, the merged statistics
 *     check_chain smollm2    SmolLM2 (label "model"): SnapKV+<a part that does nothing> keeps exactly SnapKV's rows,
 *                            statistics and greedy tokens, with a full and a budget-sized cache
 *
 * Besides the registry's methods the tests compose test doubles: parts of role MERGE, CHANNELS and QUANT whose
 * hooks append to a log ("ap:TestQuant:1:16" = after_prefill_layer of layer 1 with 16 rows per head).
 */
#include <check.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/generate.h"
#include "methods/chain.h"
#include "methods/method.h"
#include "test_util.h"

/* ---- test-double parts -------------------------------------------------------------------------------- */

static char hook_log[16384];

static void log_hook(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_hook(const char *fmt, ...) {
    size_t n = strlen(hook_log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hook_log + n, sizeof hook_log - n, fmt, ap);
    va_end(ap);
}

typedef struct merge_opts {
    float weight;
} merge_opts;
typedef struct chan_opts {
    float ratio;
    int window_size;
} chan_opts;
typedef struct quant_opts {
    int bits;
    float ratio;
} quant_opts;

static const ks_knob merge_knobs[] = {
    {"weight", KS_KNOB_FLOAT, offsetof(merge_opts, weight), "1", NULL, 0, 1, "merge weight"},
    {0}};
static const ks_knob chan_knobs[] = {
    {"ratio", KS_KNOB_FLOAT, offsetof(chan_opts, ratio), "0.5", NULL, 0, 1, "channels pruned"},
    {"window_size", KS_KNOB_INT, offsetof(chan_opts, window_size), "12", NULL, 1, 64, "queries scored"},
    {0}};
static const ks_knob quant_knobs[] = {
    {"bits", KS_KNOB_INT, offsetof(quant_opts, bits), "2", NULL, 1, 8, "bits per element"},
    {"ratio", KS_KNOB_FLOAT, offsetof(quant_opts, ratio), "1", NULL, 0, 1, "rows quantized"},
    {0}};
static const ks_knob no_knobs[] = {{0}};

static ks_status t_after_prefill(ks_method *m, const ks_method_chunk *c) {
    log_hook("ap:%s:%d:%d ", m->ops->name, c->layer, ks_kvcache_len(m->cache, c->layer)[0]);
    return KS_OK;
}
static ks_status t_decode(ks_method *m, int layer, int qpos) {
    (void)qpos;
    log_hook("d:%s:%d ", m->ops->name, layer);
    return KS_OK;
}
static ks_status t_prefill_chunk(ks_method *m, const ks_method_chunk *c) {
    log_hook("pc:%s:%d ", m->ops->name, c->layer);
    return KS_OK;
}
/* Logs the rows the layer holds now and the rows head 0 keeps: "bc:TestMerge:0:40>16". */
static ks_status t_before_compact(ks_method *m, int layer, const int32_t *keep, const int32_t *n_keep, int ld,
                                  int decode) {
    (void)keep, (void)ld;
    log_hook("bc%s:%s:%d:%d>%d ", decode ? "d" : "", m->ops->name, layer, ks_kvcache_len(m->cache, layer)[0],
             n_keep[0]);
    return KS_OK;
}
/* TestChannels also keeps one score per (KV head, row): the row's position, to see it follow the compactions. */
static ks_status t_chan_after_prefill(ks_method *m, const ks_method_chunk *c) {
    for (int h = 0; h < m->Hk; h++)
        for (int j = 0; j < ks_kvcache_len(m->cache, c->layer)[h]; j++)
            ks_method_row_scores(m, c->layer)[(size_t)h * m->cap + j] = (float)ks_kvcache_pos(m->cache, c->layer, h)[j];
    return t_after_prefill(m, c);
}
static int t_chan_window(const ks_method *m) { return KS_METHOD_OPTS(m, chan_opts)->window_size; }
static void t_quant_stat(const ks_method *m, int layer, ks_layer_stat *row) {
    row->quant_error = 0.25f + (float)layer + (float)KS_METHOD_OPTS(m, quant_opts)->bits;
}

static const ks_method_ops t_merge = {
    .name = "TestMerge", .role = KS_ROLE_MERGE, .file = "testmerge", .summary = "test double",
    .knobs = merge_knobs, .opts_size = sizeof(merge_opts), .after_prefill_layer = t_after_prefill,
    .on_decode_step = t_decode, .before_compact = t_before_compact,
};
static const ks_method_ops t_chan = {
    .name = "TestChannels", .role = KS_ROLE_CHANNELS, .file = "testchannels", .summary = "test double",
    .knobs = chan_knobs, .opts_size = sizeof(chan_opts), .row_scores = KS_ROW_SCORES_KV_HEAD,
    .window = t_chan_window, .prefill_chunk = t_prefill_chunk, .after_prefill_layer = t_chan_after_prefill,
    .on_decode_step = t_decode,
};
static const ks_method_ops t_quant = {
    .name = "TestQuant", .role = KS_ROLE_QUANT, .file = "testquant", .summary = "test double",
    .knobs = quant_knobs, .opts_size = sizeof(quant_opts), .needs_stable_rows = 1,
    .after_prefill_layer = t_after_prefill, .on_decode_step = t_decode, .before_compact = t_before_compact,
    .layer_stat = t_quant_stat,
};
static const ks_method_ops t_quant2 = {
    .name = "OtherQuant", .role = KS_ROLE_QUANT, .file = "otherquant", .summary = "test double",
    .knobs = no_knobs,
};
/* Does nothing, through every hook a part may have at the prompt's end and at decode. */
static ks_status t_nothing(ks_method *m, const ks_method_chunk *c) { return (void)m, (void)c, KS_OK; }
static ks_status t_nothing_decode(ks_method *m, int layer, int qpos) { return (void)m, (void)layer, (void)qpos, KS_OK; }
static const ks_method_ops t_noop = {
    .name = "TestNoop", .role = KS_ROLE_QUANT, .file = "testnoop", .summary = "test double", .knobs = no_knobs,
    .after_prefill_layer = t_nothing, .on_decode_step = t_nothing_decode,
};

/* create_ops(parts) with the "key=value" options (NULL-terminated) succeeds. */
static ks_method *compose(const ks_method_ops *const *parts, int n, const char *config, const char *const *opts) {
    int k = 0;
    while (opts && opts[k]) k++;
    ks_method *m = NULL;
    ck_assert_msg(ks_method_create_ops(&m, parts, n, config, opts, k) == KS_OK, "%s", ks_last_error());
    return m;
}

/* create_ops fails with st and a message containing n1 and n2 (NULL: only n1). */
static void expect_fail(const ks_method_ops *const *parts, int n, const char *config, const char *opt,
                        ks_status st, const char *n1, const char *n2) {
    ks_method *m = NULL;
    const char *opts[1] = {opt};
    ks_status got = ks_method_create_ops(&m, parts, n, config, opts, opt ? 1 : 0);
    ck_assert_msg(got == st, "expected status %d ('%s'), got %d ('%s')", st, n1, got, got ? ks_last_error() : "");
    ck_assert_ptr_null(m);
    const char *e = ks_last_error();
    ck_assert_msg(strstr(e, n1) && (!n2 || strstr(e, n2)), "message '%s' lacks '%s' / '%s'", e, n1, n2 ? n2 : "");
}

/* ks_method_create(name) fails with KS_ERR_ARG and a message containing n1 and n2. */
static void expect_name_fail(const char *name, const char *n1, const char *n2) {
    ks_method *m = NULL;
    ck_assert_int_eq(ks_method_create(&m, name, NULL, NULL, 0), KS_ERR_ARG);
    ck_assert_ptr_null(m);
    const char *e = ks_last_error();
    ck_assert_msg(strstr(e, n1) && (!n2 || strstr(e, n2)), "%s: message '%s' lacks '%s' / '%s'", name, e, n1,
                  n2 ? n2 : "");
}

/* ---- names and sense checks --------------------------------------------------------------------------- */

START_TEST(test_names_and_links) {
    ks_method *m;
    ck_assert(ks_method_create(&m, "snapkv", NULL, NULL, 0) == KS_OK);
    ck_assert_str_eq(ks_method_name(m), "SnapKV");
    ck_assert(!m->next && !m->selector && m->head == m);
    ks_method_free(m);

    const ks_method_ops *all[] = {&ks_method_snapkv, &t_merge, &t_chan, &t_quant};
    m = compose(all, 4, NULL, NULL);
    ck_assert_str_eq(ks_method_name(m), "SnapKV+TestMerge+TestChannels+TestQuant");
    ck_assert_ptr_null(m->selector);
    int i = 0;
    for (ks_method *p = m; p; p = p->next, i++) {
        ck_assert_ptr_eq(p->ops, all[i]);
        ck_assert_ptr_eq(p->head, m);
        if (i) ck_assert_ptr_eq(p->selector, m);
        if (i) ck_assert_str_eq(ks_method_name(p), all[i]->name);
    }
    ck_assert_int_eq(i, 4);
    ks_method_free(m);

    const ks_method_ops *plain[] = {&t_chan, &t_quant}; /* no selection: no selector anywhere */
    m = compose(plain, 2, NULL, NULL);
    ck_assert_str_eq(ks_method_name(m), "TestChannels+TestQuant");
    ck_assert(!m->selector && !m->next->selector && m->next->head == m);
    ks_method_free(m);

    const ks_method_ops *parts[KS_METHOD_MAX_PARTS * 2];
    int n;
    ck_assert(ks_method_parse("pyramidkv", parts, &n) == KS_OK && n == 1 && parts[0] == &ks_method_pyramidkv);
    ck_assert(ks_method_parse("h2o+SNAPKV", parts, &n) == KS_OK && n == 2 && parts[1] == &ks_method_snapkv);
}
END_TEST

START_TEST(test_sense_errors) {
    expect_name_fail("SnapKV+H2O", "--acceleration SnapKV+H2O: two selection methods (SnapKV, H2O)", "at most one");
    expect_name_fail("SnapKV+", "an empty part", "SnapKV+KIVI");
    expect_name_fail("+SnapKV", "an empty part", NULL);
    expect_name_fail("SnapKV+Frobnicate", "in the composition SnapKV+Frobnicate: --acceleration Frobnicate: unknown "
                     "method",
                     "PyramidKV, CakeKV (selection); CaM (merging); ThinK (channels); KIVI (quantization); case does "
                     "not matter");
    expect_name_fail("FullKV+SnapKV", "FullKV keeps the whole cache and cannot be a part of a composition", NULL);
    expect_name_fail("snapkv+none", "FullKV keeps the whole cache", NULL);
    expect_name_fail("H2O+SnapKV+L2Compress+PyramidKV+CakeKV+StreamingLLM+H2O+SnapKV+H2O", "more than 8 parts", NULL);

    const ks_method_ops *backwards[] = {&t_quant, &ks_method_snapkv};
    expect_fail(backwards, 2, NULL, NULL, KS_ERR_ARG, "the parts go in the order selection, merging, channel pruning, "
                "quantization: write SnapKV+TestQuant", NULL);
    const ks_method_ops *backwards3[] = {&ks_method_snapkv, &t_quant, &t_chan};
    expect_fail(backwards3, 3, NULL, NULL, KS_ERR_ARG, "write SnapKV+TestChannels+TestQuant", NULL);
    const ks_method_ops *two_quant[] = {&ks_method_snapkv, &t_quant, &t_quant2};
    expect_fail(two_quant, 3, NULL, NULL, KS_ERR_ARG, "two quantizers (TestQuant, OtherQuant)", NULL);
    const ks_method_ops *two_sel[] = {&ks_method_h2o, &ks_method_pyramidkv};
    expect_fail(two_sel, 2, NULL, NULL, KS_ERR_ARG, "two selection methods (H2O, PyramidKV)", NULL);
    const ks_method_ops *full_merge[] = {&ks_method_fullkv, &t_merge};
    expect_fail(full_merge, 2, NULL, NULL, KS_ERR_ARG, "TestMerge with a method that never evicts", "SnapKV+TestMerge");
    const ks_method_ops *lone_merge[] = {&t_merge, &t_quant};
    expect_fail(lone_merge, 2, NULL, NULL, KS_ERR_ARG, "TestMerge merges the rows a selection drops",
                "e.g. SnapKV+TestMerge");
    const ks_method_ops *decode_evicting[] = {&ks_method_h2o, &ks_method_streamingllm, &ks_method_cakekv};
    for (int i = 0; i < 3; i++) {
        const ks_method_ops *p[] = {decode_evicting[i], &t_quant}, *merge[] = {decode_evicting[i], &t_merge};
        char want[128];
        snprintf(want, sizeof want, "TestQuant keeps rows that cannot be evicted during decode, and %s evicts while "
                 "decoding", decode_evicting[i]->name);
        expect_fail(p, 2, NULL, NULL, KS_ERR_ARG, want, "(SnapKV, L2Compress, PyramidKV)");
        snprintf(want, sizeof want, "%s evicts while decoding inside the KV store, where TestMerge cannot merge",
                 decode_evicting[i]->name);
        expect_fail(merge, 2, NULL, NULL, KS_ERR_ARG, want, "(SnapKV, L2Compress, PyramidKV)");
    }

    /* what a composition may be */
    const ks_method_ops *ok[][3] = {{&ks_method_snapkv, &t_quant}, {&ks_method_l2compress, &t_merge},
                                    {&ks_method_pyramidkv, &t_chan, &t_quant}, {&t_quant}, {&t_merge}};
    const int n_ok[] = {2, 2, 3, 1, 1};
    for (int i = 0; i < 5; i++) ks_method_free(compose(ok[i], n_ok[i], NULL, NULL));
}
END_TEST

/* ---- options ------------------------------------------------------------------------------------------ */

START_TEST(test_knob_routing) {
    const ks_method_ops *parts[] = {&ks_method_snapkv, &t_chan, &t_quant};
    const char *opts[] = {"testquant.bits=4", "TESTCHANNELS.ratio=0.25", "SnapKV.window_size=8",
                          "kernel_size=5", "testchannels.window_size=20", NULL};
    ks_method *m = compose(parts, 3, NULL, opts);
    char *y;
    ck_assert(ks_method_options_yaml(m, &y) == KS_OK);
    ck_assert_msg(strstr(y, "snapkv:\n") && strstr(y, "  window_size: 8\n") && strstr(y, "  kernel_size: 5\n") &&
                      strstr(y, "testchannels:\n  ratio: 0.25\n  window_size: 20\n") &&
                      strstr(y, "testquant:\n  bits: 4\n  ratio: 1\n"),
                  "%s", y);
    free(y);
    ck_assert_int_eq(KS_METHOD_OPTS(m->next->next, quant_opts)->bits, 4);
    ck_assert_int_eq(ks_method_window(m), 20); /* the most any part needs */
    ks_method_free(m);
    const char *plain[] = {"bits=3", NULL}; /* only TestQuant has it */
    m = compose(parts, 3, NULL, plain);
    ck_assert_int_eq(KS_METHOD_OPTS(m->next->next, quant_opts)->bits, 3);
    ks_method_free(m);

    expect_fail(parts, 3, NULL, "ratio=0.5", KS_ERR_ARG,
                "--method_opt ratio=0.5: TestChannels and TestQuant both have a knob 'ratio'",
                "write testchannels.ratio=0.5 or testquant.ratio=0.5");
    expect_fail(parts, 3, NULL, "window_size=8", KS_ERR_ARG, "SnapKV and TestChannels both have a knob 'window_size'",
                NULL);
    expect_fail(parts, 3, NULL, "nothing=1", KS_ERR_ARG,
                "no part of SnapKV+TestChannels+TestQuant has a knob 'nothing' (its parts: SnapKV (snapkv), "
                "TestChannels (testchannels), TestQuant (testquant))", "write <part>.<key>=...");
    expect_fail(parts, 3, NULL, "kivi.bits=2", KS_ERR_ARG, "'kivi' is not a part of SnapKV+TestChannels+TestQuant",
                NULL);
    expect_fail(parts, 3, NULL, "testquant.nope=1", KS_ERR_ARG,
                "--method_opt testquant.nope=1: 'nope' is not a TestQuant knob", NULL);
    expect_fail(parts, 3, NULL, "testquant.bits=9", KS_ERR_ARG, "TestQuant knob 'bits': '9'", NULL);
    expect_fail(parts, 3, NULL, "snapkv.kernel_size=4", KS_ERR_ARG, "kernel_size 4 must be odd", NULL);
    expect_fail(parts, 3, NULL, "bits", KS_ERR_ARG, "key=value", NULL);

    /* a method alone takes its own prefix too */
    ks_method *one;
    const char *own[] = {"snapkv.window_size=8"};
    ck_assert_msg(ks_method_create(&one, "SnapKV", NULL, own, 1) == KS_OK, "%s", ks_last_error());
    ks_method_free(one);
}
END_TEST


START_TEST(test_yaml_sections) {
    const ks_method_ops *parts[] = {&ks_method_snapkv, &t_chan, &t_quant2};
    const char *opts[] = {"snapkv.max_capacity_prompt=10%", "testchannels.window_size=7", NULL};
    ks_method *m = compose(parts, 3, NULL, opts), *again;
    char *y, *y2;
    ck_assert(ks_method_options_yaml(m, &y) == KS_OK);
    ck_assert_msg(strstr(y, "snapkv:\n  ") && strstr(y, "  max_capacity_prompt: 0.1\n") &&
                      strstr(y, "otherquant: {}\n"), "%s", y);
    again = compose(parts, 3, ks_test_write_tmp("chain.yaml", y), NULL); /* what it writes reads back */
    ck_assert(ks_method_options_yaml(again, &y2) == KS_OK);
    ck_assert_str_eq(y, y2);
    free(y), free(y2);
    ks_method_free(m), ks_method_free(again);

    m = compose(parts, 3, ks_test_write_tmp("sections.yaml", "SnapKV:\n  window_size: 8\ntestchannels:\n  ratio: 0.75\n"
                                                     "otherquant:\n"), NULL);
    ck_assert_float_eq(KS_METHOD_OPTS(m->next, chan_opts)->ratio, 0.75f);
    ck_assert_int_eq(KS_METHOD_OPTS(m->next, chan_opts)->window_size, 12);
    ck_assert_msg(strstr(m->source, "sections.yaml"), "%s", m->source);
    ks_method_free(m);

    expect_fail(parts, 3, ks_test_write_tmp("flat.yaml", "window_size: 8\n"), NULL, KS_ERR_ARG,
                "flat.yaml:1: 'window_size' is not a part of this composition", "(snapkv, testchannels, otherquant)");
    expect_fail(parts, 3,
                ks_test_write_tmp("twice.yaml", "snapkv:\n  window_size: 8\nSNAPKV:\n  kernel_size: 3\n"), NULL,
                KS_ERR_ARG, "twice.yaml:3: section 'SNAPKV' is given twice", NULL);
    expect_fail(parts, 3, ks_test_write_tmp("scalar.yaml", "snapkv: 3\n"), NULL, KS_ERR_FORMAT,
                "scalar.yaml:1: section 'snapkv' must be a mapping of SnapKV knobs", NULL);
    expect_fail(parts, 3, ks_test_write_tmp("knob.yaml", "testchannels:\n  ratio: 0.5\nsnapkv:\n  windw: 3\n"), NULL,
                KS_ERR_ARG, "knob.yaml:4", "'windw' is not a SnapKV knob");
    expect_fail(parts, 3, ks_test_write_tmp("dupknob.yaml", "snapkv:\n  window_size: 3\n  window_size: 4\n"), NULL,
                KS_ERR_ARG, "dupknob.yaml:3: knob 'window_size' is set twice", NULL);
    expect_fail(parts, 3, ks_test_write_tmp("list.yaml", "- snapkv\n"), NULL, KS_ERR_FORMAT, "one section per part",
                NULL);
    /* --method_opt after the file */
    const char *over[] = {"testchannels.ratio=0.125", NULL};
    m = compose(parts, 3, ks_test_write_tmp("over.yaml", "testchannels:\n  ratio: 0.75\n"), over);
    ck_assert_float_eq(KS_METHOD_OPTS(m->next, chan_opts)->ratio, 0.125f);
    ks_method_free(m);
}
END_TEST

/* ---- hooks on the cpu backend ------------------------------------------------------------------------- */

enum { PROMPT = 40, KEEP = 16, STEPS = 2 };

/* The log the chain SnapKV(16 rows)+TestMerge+TestChannels+TestQuant writes on `layers` layers: per layer at the
 * prompt's end, TestChannels' per-chunk scoring, the selection's compaction (the parts' before_compact, in order,
 * with the rows still there), then each later part's work on the kept rows; per decode step each part per layer. */
static void expected_log(char *out, size_t cap, int layers) {
    size_t n = 0;
    for (int l = 0; l < layers; l++)
        n += (size_t)snprintf(out + n, cap - n,
                              "pc:TestChannels:%d bc:TestMerge:%d:%d>%d bc:TestQuant:%d:%d>%d ap:TestMerge:%d:%d "
                              "ap:TestChannels:%d:%d ap:TestQuant:%d:%d ",
                              l, l, PROMPT, KEEP, l, PROMPT, KEEP, l, KEEP, l, KEEP, l, KEEP);
    for (int t = 0; t < STEPS; t++)
        for (int l = 0; l < layers; l++)
            n += (size_t)snprintf(out + n, cap - n, "d:TestMerge:%d d:TestChannels:%d d:TestQuant:%d ", l, l, l);
}

START_TEST(test_hook_order) {
    ks_model model = {0};
    ck_assert(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1) == KS_OK);
    const ks_method_ops *parts[] = {&ks_method_snapkv, &t_merge, &t_chan, &t_quant};
    const char *opts[] = {"max_capacity_prompt=16", "snapkv.window_size=8", NULL};
    ks_method *m = compose(parts, 4, NULL, opts), *alone;
    const char *sopts[] = {"max_capacity_prompt=16", "window_size=8"};
    ck_assert(ks_method_create(&alone, "SnapKV", NULL, sopts, 2) == KS_OK);
    ck_assert(ks_method_bounds_rows(m) && ks_method_decode_hooked(m) && !ks_method_decode_hooked(alone));
    ck_assert_int_eq(ks_method_kv_rows(m, &model, 100, 3), ks_method_kv_rows(alone, &model, 100, 3));
    ck_assert_int_eq(ks_method_window(m), 12); /* TestChannels' */

    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = 64, .max_new = STEPS, .chunk = 64, .cache = KS_CACHE_FULL};
    ck_assert_msg(ks_forward_init(&f, &model, m, &fp) == KS_OK, "%s", ks_last_error());
    int32_t ids[PROMPT], next;
    for (int i = 0; i < PROMPT; i++) ids[i] = 5 + i;
    hook_log[0] = 0;
    ck_assert_msg(ks_forward_prefill(&f, ids, PROMPT, NULL, &next) == KS_OK, "%s", ks_last_error());
    for (int t = 0; t < STEPS; t++) ck_assert(ks_forward_decode(&f, next, NULL, &next) == KS_OK);
    char want[sizeof hook_log];
    expected_log(want, sizeof want, model.cfg.n_layers);
    ck_assert_str_eq(hook_log, want);
    ck_assert(ks_method_dropped(m));

    /* one row per layer: the selection's budget and rows, TestQuant's own field */
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
    ck_assert_int_eq(ks_method_layer_stats(m, st), model.cfg.n_layers);
    for (int l = 0; l < model.cfg.n_layers; l++) {
        ck_assert(st[l].layer == l && st[l].budget == KEEP && st[l].kept == KEEP && st[l].key_norm_max > 0);
        ck_assert(st[l].attn_mass_kept > 0 && st[l].attn_mass_kept < 1.0001f && st[l].sparse_density == 1.0f);
        ck_assert_float_eq(st[l].quant_error, 0.25f + l + 2);
    }

    /* a compaction by a later part's instance (rows 1 ..): every part's before_compact (the selection has none),
     * and every part's per-row arrays follow (TestChannels' positions) */
    ks_method *merge = m->next, *chan = merge->next;
    const int32_t *len = ks_kvcache_len(merge->cache, 1);
    for (int h = 0; h < merge->Hk; h++) {
        for (int j = 0; j < len[h] - 1; j++) merge->keep[(size_t)h * merge->cap + j] = j + 1;
        merge->n_keep[h] = len[h] - 1;
    }
    hook_log[0] = 0;
    int had = len[0];
    ck_assert(ks_method_compact(merge, 1, 1) == KS_OK);
    char bc[128];
    snprintf(bc, sizeof bc, "bcd:TestMerge:1:%d>%d bcd:TestQuant:1:%d>%d ", had, had - 1, had, had - 1);
    ck_assert_str_eq(hook_log, bc);
    ck_assert_int_eq(ks_kvcache_len(merge->cache, 1)[0], had - 1);
    for (int h = 0; h < chan->Hk; h++)
        for (int j = 0; j < KEEP - 1; j++) /* the prompt's rows kept; the decode rows were never scored */
            ck_assert_float_eq(ks_method_row_scores(chan, 1)[(size_t)h * chan->cap + j],
                               (float)ks_kvcache_pos(chan->cache, 1, h)[j]);
    ks_forward_free(&f);
    ks_method_free(m);
    ks_method_free(alone);
    ks_model_free(&model);
}
END_TEST

/* ---- SmolLM2 ------------------------------------------------------------------------------------------ */

/* Greedy tokens, kept positions of every (layer, KV head) and statistics of one run. */
typedef struct run_out {
    int32_t tokens[4];
    int32_t *pos; /* (layers * Hk, cap) */
    int32_t len[2048];
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
    int n_st, kv_rows, cap;
} run_out;

static void run_smollm2(const ks_model *model, const ks_ids *ids, ks_method *m, ks_forward_cache cache,
                        run_out *o) {
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = ids->n + 4, .max_new = 4, .chunk = 512, .cache = cache};
    ck_assert_msg(ks_forward_init(&f, model, m, &fp) == KS_OK, "%s", ks_last_error());
    ks_generate_params gp = {.max_new_tokens = 4};
    ks_generate_result r;
    ck_assert_msg(ks_generate(&f, ids->ids, ids->n, &gp, o->tokens, &r) == KS_OK, "%s", ks_last_error());
    const ks_kvcache *c = f.ops->kvcache(f.be);
    o->pos = calloc((size_t)c->n_layers * c->n_kv_heads * c->cap, sizeof(int32_t));
    ck_assert(c->n_layers * c->n_kv_heads <= 2048);
    for (int l = 0, i = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++, i++) {
            o->len[i] = ks_kvcache_len(c, l)[h];
            memcpy(o->pos + (size_t)i * c->cap, ks_kvcache_pos(c, l, h), sizeof(int32_t) * o->len[i]);
        }
    o->n_st = ks_method_layer_stats(m, o->st);
    o->kv_rows = f.kv_rows;
    o->cap = c->cap;
    ks_forward_free(&f);
}

/* SnapKV+TestNoop against SnapKV, with a full cache and a budget-sized one. */
START_TEST(test_smollm2_noop_part) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    const char *opts[] = {"max_capacity_prompt=16", "window_size=8", NULL};
    const ks_method_ops *snap[] = {&ks_method_snapkv}, *chain[] = {&ks_method_snapkv, &t_noop};
    const ks_forward_cache caches[] = {KS_CACHE_FULL, KS_CACHE_BUDGET};
    for (int c = 0; c < 2; c++) {
        ks_method *a = compose(snap, 1, NULL, opts), *b = compose(chain, 2, NULL, opts);
        ck_assert_str_eq(ks_method_name(b), "SnapKV+TestNoop");
        static run_out ra, rb;
        run_smollm2(&model, &ids, a, caches[c], &ra);
        run_smollm2(&model, &ids, b, caches[c], &rb);
        ck_assert_int_eq(ra.kv_rows, rb.kv_rows);
        ck_assert_int_eq(ra.cap, rb.cap);
        ck_assert_int_eq(ra.len[0], 16 + 4 - 1); /* SnapKV's 16 rows, then the decode steps' */
        ck_assert_mem_eq(ra.tokens, rb.tokens, sizeof ra.tokens);
        int heads = model.cfg.n_layers * model.cfg.n_kv_heads;
        ck_assert_mem_eq(ra.len, rb.len, sizeof(int32_t) * heads);
        for (int i = 0; i < heads; i++)
            ck_assert_mem_eq(ra.pos + (size_t)i * ra.cap, rb.pos + (size_t)i * rb.cap, sizeof(int32_t) * ra.len[i]);
        ck_assert_int_eq(ra.n_st, rb.n_st);
        ck_assert_mem_eq(ra.st, rb.st, sizeof(ks_layer_stat) * ra.n_st);
        free(ra.pos), free(rb.pos);
        ks_method_free(a), ks_method_free(b);
    }
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

int main(int argc, char **argv) {
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("chain");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "chain");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2_noop_part);
    } else {
        tcase_add_test(tc, test_names_and_links);
        tcase_add_test(tc, test_sense_errors);
        tcase_add_test(tc, test_knob_routing);
        tcase_add_test(tc, test_yaml_sections);
        tcase_add_test(tc, test_hook_order);
    }
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
