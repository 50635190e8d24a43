/* config.c — Hugging Face config.json → ks_model_config, and the checks every config source goes through. */
#include "model/config.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "core/json.h"

static const struct { const char *model_type, *architecture; ks_arch arch; } known_archs[] = {
    {"llama", "LlamaForCausalLM", KS_ARCH_LLAMA},
    {"mistral", "MistralForCausalLM", KS_ARCH_MISTRAL},
    {"qwen2", "Qwen2ForCausalLM", KS_ARCH_QWEN2},
};
#define N_ARCHS (sizeof known_archs / sizeof known_archs[0])
#define SUPPORTED_ARCHS "llama (LlamaForCausalLM), mistral (MistralForCausalLM), qwen2 (Qwen2ForCausalLM)"

const char *ks_arch_name(ks_arch a) {
    for (size_t i = 0; i < N_ARCHS; i++)
        if (known_archs[i].arch == a) return known_archs[i].model_type;
    return "?";
}

/* model_type decides; architectures[0], when present, must agree with a supported causal LM class. */
static ks_status parse_arch(const cJSON *root, const char *path, ks_arch *arch) {
    const char *mt = NULL;
    KS_TRY(ks_json_get_string_opt(root, "model_type", path, &mt));
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    const char *cls = cJSON_IsString(a0) ? a0->valuestring : NULL;
    if (!mt && !cls)
        return ks_fail(KS_ERR_FORMAT, "%s: neither 'model_type' nor 'architectures' is set (is this a Hugging "
                       "Face config.json?)", path);
    int found = -1;
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (mt && !strcmp(mt, known_archs[i].model_type)) found = (int)i;
        if (!mt && !strcmp(cls, known_archs[i].architecture)) found = (int)i;
    }
    if (found < 0)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field '%s' = '%s' is not supported (supported: " SUPPORTED_ARCHS ")",
                       path, mt ? "model_type" : "architectures", mt ? mt : cls);
    if (cls && strcmp(cls, known_archs[found].architecture))
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field 'architectures' = '%s' is not supported for model_type '%s' "
                       "(expected %s)", path, cls, known_archs[found].model_type, known_archs[found].architecture);
    *arch = known_archs[found].arch;
    return KS_OK;
}

/* "a string", "a number", ... for messages about a JSON value of the wrong type. */
static const char *json_kind(const cJSON *it) {
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsBool(it)) return "true/false";
    if (cJSON_IsArray(it)) return "a list";
    return cJSON_IsObject(it) ? "an object" : "null";
}

/* root's `key` (rope_scaling or rope_parameters): an object, or absent/null (no scaling: *out = NULL). */
static ks_status rope_object(const cJSON *root, const char *key, const char *path, const cJSON **out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!it || cJSON_IsNull(it)) return KS_OK;
    if (!cJSON_IsObject(it))
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be an object (e.g. {\"rope_type\": \"linear\", \"factor\": "
                       "4.0}) or null, not %s", path, key, json_kind(it));
    *out = it;
    return KS_OK;
}

/* obj's `key`, or NULL when absent or null. */
static const cJSON *rope_member(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

/* Member `key` of the rope object named `obj_name`: absent or null leaves *out unchanged; a value of another
 * type is an error naming '<obj_name>.<key>'. */
static ks_status rope_string(const cJSON *obj, const char *obj_name, const char *key, const char *path,
                             const char **out) {
    const cJSON *it = rope_member(obj, key);
    if (it && !cJSON_IsString(it))
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s.%s' must be a string, not %s", path, obj_name, key,
                       json_kind(it));
    if (it) *out = it->valuestring;
    return KS_OK;
}

static ks_status rope_float(const cJSON *obj, const char *obj_name, const char *key, const char *path, float *out) {
    const cJSON *it = rope_member(obj, key);
    if (it && !cJSON_IsNumber(it))
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s.%s' must be a number, not %s", path, obj_name, key,
                       json_kind(it));
    if (it) *out = (float)it->valuedouble;
    return KS_OK;
}

static ks_status rope_int(const cJSON *obj, const char *obj_name, const char *key, const char *path, int *out) {
    const cJSON *it = rope_member(obj, key);
    int integral = cJSON_IsNumber(it) && it->valuedouble == floor(it->valuedouble) && fabs(it->valuedouble) < 2e9;
    if (it && !integral && cJSON_IsNumber(it))
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s.%s' must be an integer (got %g)", path, obj_name, key,
                       it->valuedouble);
    if (it && !integral)
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s.%s' must be an integer, not %s", path, obj_name, key,
                       json_kind(it));
    if (it) *out = (int)it->valuedouble;
    return KS_OK;
}

/* The llama3 parameters of rope object rs, each required. */
static ks_status parse_rope_llama3(const cJSON *rs, const char *obj_name, const char *path, ks_model_config *c) {
    static const char *const keys[] = {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
    for (int i = 0; i < 3; i++)
        if (!rope_member(rs, keys[i]))
            return ks_fail(KS_ERR_FORMAT, "%s: field '%s.%s' is required for rope type 'llama3'", path, obj_name,
                           keys[i]);
    KS_TRY(rope_float(rs, obj_name, "low_freq_factor", path, &c->rope_low_freq_factor));
    KS_TRY(rope_float(rs, obj_name, "high_freq_factor", path, &c->rope_high_freq_factor));
    return rope_int(rs, obj_name, "original_max_position_embeddings", path, &c->rope_orig_max_pos);
}

/* `rope_scaling` (transformers < 5) or `rope_parameters` (>= 5), with `rope_type` or the older `type`. Each is
 * an object or null; a value of another type is an error, never "no scaling". */
static ks_status parse_rope(const cJSON *root, const char *path, ks_model_config *c) {
    const cJSON *params, *scaling;
    KS_TRY(rope_object(root, "rope_parameters", path, &params));
    KS_TRY(rope_object(root, "rope_scaling", path, &scaling));
    const char *obj_name = scaling ? "rope_scaling" : "rope_parameters";
    const cJSON *rs = scaling ? scaling : params;
    c->rope_theta = 10000.0f;
    c->rope_type = KS_ROPE_DEFAULT;
    c->rope_factor = 1.0f;
    KS_TRY(ks_json_get_float_opt(root, "rope_theta", path, &c->rope_theta));
    if (params) KS_TRY(rope_float(params, "rope_parameters", "rope_theta", path, &c->rope_theta));
    if (!rs) return KS_OK;
    const char *type = NULL, *type_key = "rope_type";
    KS_TRY(rope_string(rs, obj_name, "rope_type", path, &type));
    if (!type) {
        type_key = "type";
        KS_TRY(rope_string(rs, obj_name, "type", path, &type));
    }
    if (!type || !strcmp(type, "default")) return KS_OK;
    if (!strcmp(type, "linear")) c->rope_type = KS_ROPE_LINEAR;
    else if (!strcmp(type, "llama3")) c->rope_type = KS_ROPE_LLAMA3;
    else
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field '%s.%s' = '%s' is not supported (supported: default, linear, "
                       "llama3)", path, obj_name, type_key, type);
    c->rope_factor = 0.0f; /* required below: 0 fails validation with the field named */
    KS_TRY(rope_float(rs, obj_name, "factor", path, &c->rope_factor));
    if (c->rope_factor <= 0.0f)
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s.factor' must be a positive number for rope type '%s'", path,
                       obj_name, type);
    return c->rope_type == KS_ROPE_LLAMA3 ? parse_rope_llama3(rs, obj_name, path, c) : KS_OK;
}

/* Qwen2 `layer_types`: sliding layers must be a suffix (what max_window_layers expresses). */
static ks_status parse_layer_types(const cJSON *lt, const char *path, ks_model_config *c) {
    if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->n_layers)
        return ks_fail(KS_ERR_FORMAT, "%s: field 'layer_types' must list num_hidden_layers (%d) entries", path,
                       c->n_layers);
    int first = c->n_layers;
    for (int i = 0; i < c->n_layers; i++) {
        const cJSON *e = cJSON_GetArrayItem(lt, i);
        int sliding = cJSON_IsString(e) && !strcmp(e->valuestring, "sliding_attention");
        if (!sliding && !(cJSON_IsString(e) && !strcmp(e->valuestring, "full_attention")))
            return ks_fail(KS_ERR_UNSUPPORTED, "%s: field 'layer_types[%d]' must be 'full_attention' or "
                           "'sliding_attention'", path, i);
        if (sliding && first == c->n_layers) first = i;
        if (!sliding && first < c->n_layers)
            return ks_fail(KS_ERR_UNSUPPORTED, "%s: field 'layer_types': a full-attention layer (%d) after a sliding "
                           "one is not supported", path, i);
    }
    c->swa_first_layer = first;
    if (first == c->n_layers) c->sliding_window = 0;
    return KS_OK;
}

static ks_status parse_sliding_window(const cJSON *root, const char *path, ks_model_config *c) {
    c->sliding_window = 0;
    c->swa_first_layer = 0;
    if (c->arch == KS_ARCH_MISTRAL) return ks_json_get_int_opt(root, "sliding_window", path, &c->sliding_window);
    if (c->arch != KS_ARCH_QWEN2) return KS_OK;
    int use = 0;
    KS_TRY(ks_json_get_bool_opt(root, "use_sliding_window", path, &use));
    if (!use) return KS_OK;
    KS_TRY(ks_json_get_int_opt(root, "sliding_window", path, &c->sliding_window));
    if (c->sliding_window <= 0)
        return ks_fail(KS_ERR_FORMAT, "%s: 'use_sliding_window' is true but field 'sliding_window' is not a positive "
                       "integer", path);
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
    if (lt && !cJSON_IsNull(lt)) return parse_layer_types(lt, path, c);
    c->swa_first_layer = 28; /* transformers' Qwen2Config default max_window_layers */
    KS_TRY(ks_json_get_int_opt(root, "max_window_layers", path, &c->swa_first_layer));
    if (c->swa_first_layer >= c->n_layers) c->sliding_window = c->swa_first_layer = 0;
    return KS_OK;
}

/* A token id field: an integer, a list of integers (eos), or null/absent. */
static ks_status parse_token_ids(const cJSON *root, const char *key, const char *path, int *ids, int max, int *n) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    *n = 0;
    if (!it || cJSON_IsNull(it)) return KS_OK;
    int count = cJSON_IsArray(it) ? cJSON_GetArraySize(it) : 1;
    if (count > max)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field '%s' lists %d ids (at most %d supported)", path, key, count, max);
    for (int i = 0; i < count; i++) {
        const cJSON *e = cJSON_IsArray(it) ? cJSON_GetArrayItem(it, i) : it;
        if (!cJSON_IsNumber(e))
            return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be a token id or a list of token ids", path, key);
        /* range first: converting a double outside int's range to int is undefined */
        double v = e->valuedouble;
        if (!(v >= INT_MIN && v <= INT_MAX) || v != floor(v))
            return ks_fail(KS_ERR_FORMAT, "%s: field '%s' holds %g, which is not a token id (an integer)", path, key,
                           v);
        ids[(*n)++] = (int)v;
    }
    return KS_OK;
}

/* hidden_act, quantization, biases: what the forward pass supports. */
static ks_status parse_features(const cJSON *root, const char *path, ks_model_config *c) {
    const char *act = NULL;
    int mlp_bias = 0, attention_bias = 0;
    KS_TRY(ks_json_get_string_opt(root, "hidden_act", path, &act));
    if (act && strcmp(act, "silu"))
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field 'hidden_act' = '%s' is not supported (supported: silu)", path,
                       act);
    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "quantization_config")))
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field 'quantization_config' is set: pre-quantized Hugging Face "
                       "checkpoints (GPTQ, AWQ, FP8, bitsandbytes) are not supported; use the bf16/fp16 checkpoint "
                       "or a GGUF file", path);
    KS_TRY(ks_json_get_bool_opt(root, "mlp_bias", path, &mlp_bias));
    if (mlp_bias)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field 'mlp_bias' = true is not supported", path);
    if (c->arch == KS_ARCH_LLAMA) KS_TRY(ks_json_get_bool_opt(root, "attention_bias", path, &attention_bias));
    c->attn_bias = c->arch == KS_ARCH_QWEN2 || attention_bias;
    c->o_bias = attention_bias;
    return KS_OK;
}

static ks_status parse_config(const cJSON *root, const char *path, ks_model_config *c) {
    if (!cJSON_IsObject(root)) return ks_fail(KS_ERR_FORMAT, "%s: not a JSON object", path);
    KS_TRY(parse_arch(root, path, &c->arch));
    KS_TRY(ks_json_get_int(root, "num_hidden_layers", path, &c->n_layers));
    KS_TRY(ks_json_get_int(root, "hidden_size", path, &c->hidden));
    KS_TRY(ks_json_get_int(root, "num_attention_heads", path, &c->n_heads));
    KS_TRY(ks_json_get_int(root, "intermediate_size", path, &c->ffn));
    KS_TRY(ks_json_get_int(root, "vocab_size", path, &c->vocab));
    KS_TRY(ks_json_get_int(root, "max_position_embeddings", path, &c->max_pos));
    c->n_kv_heads = c->n_heads;
    KS_TRY(ks_json_get_int_opt(root, "num_key_value_heads", path, &c->n_kv_heads));
    c->head_dim = c->n_heads > 0 ? c->hidden / c->n_heads : 0;
    KS_TRY(ks_json_get_int_opt(root, "head_dim", path, &c->head_dim));
    c->rms_eps = 1e-6f;
    KS_TRY(ks_json_get_float_opt(root, "rms_norm_eps", path, &c->rms_eps));
    KS_TRY(parse_rope(root, path, c));
    KS_TRY(parse_sliding_window(root, path, c));
    KS_TRY(parse_features(root, path, c));
    KS_TRY(ks_json_get_bool_opt(root, "tie_word_embeddings", path, &c->tie_embeddings));
    int n_bos = 0;
    KS_TRY(parse_token_ids(root, "bos_token_id", path, &c->bos_id, 1, &n_bos));
    if (!n_bos) c->bos_id = -1;
    return parse_token_ids(root, "eos_token_id", path, c->eos_ids, KS_MAX_EOS, &c->n_eos);
}

ks_status ks_model_config_from_hf(const char *config_json_path, ks_model_config *out) {
    memset(out, 0, sizeof *out);
    cJSON *root;
    KS_TRY(ks_json_load(config_json_path, &root));
    ks_status st = parse_config(root, config_json_path, out);
    cJSON_Delete(root);
    if (st == KS_OK) st = ks_model_config_validate(out, config_json_path);
    return st;
}

#define REQUIRE(cond, ...)                                                                                   \
    do {                                                                                                     \
        if (!(cond)) return ks_fail(KS_ERR_FORMAT, __VA_ARGS__);                                             \
    } while (0)

ks_status ks_model_config_validate(const ks_model_config *c, const char *what) {
    REQUIRE(c->n_layers > 0, "%s: 'num_hidden_layers' must be positive (got %d)", what, c->n_layers);
    REQUIRE(c->hidden > 0, "%s: 'hidden_size' must be positive (got %d)", what, c->hidden);
    REQUIRE(c->n_heads > 0, "%s: 'num_attention_heads' must be positive (got %d)", what, c->n_heads);
    REQUIRE(c->n_kv_heads > 0 && c->n_heads % c->n_kv_heads == 0,
            "%s: 'num_key_value_heads' (%d) must be positive and divide 'num_attention_heads' (%d)", what,
            c->n_kv_heads, c->n_heads);
    REQUIRE(c->head_dim > 0 && c->head_dim % 2 == 0 && c->head_dim / 2 <= KS_MAX_ROPE_FACTORS,
            "%s: 'head_dim' (%d) must be even and in 2..%d (head_dim defaults to hidden_size / "
            "num_attention_heads)", what, c->head_dim, 2 * KS_MAX_ROPE_FACTORS);
    REQUIRE(c->ffn > 0, "%s: 'intermediate_size' must be positive (got %d)", what, c->ffn);
    REQUIRE(c->vocab > 0, "%s: 'vocab_size' must be positive (got %d)", what, c->vocab);
    REQUIRE(c->max_pos > 0, "%s: 'max_position_embeddings' must be positive (got %d)", what, c->max_pos);
    REQUIRE(c->rms_eps > 0.0f, "%s: 'rms_norm_eps' must be positive (got %g)", what, c->rms_eps);
    REQUIRE(c->rope_theta > 0.0f, "%s: 'rope_theta' must be positive (got %g)", what, c->rope_theta);
    REQUIRE(c->rope_factor > 0.0f, "%s: rope scaling 'factor' must be positive (got %g)", what, c->rope_factor);
    if (c->rope_type == KS_ROPE_LLAMA3) {
        REQUIRE(c->rope_low_freq_factor > 0.0f && c->rope_high_freq_factor > c->rope_low_freq_factor,
                "%s: llama3 rope scaling needs 0 < 'low_freq_factor' (%g) < 'high_freq_factor' (%g)", what,
                c->rope_low_freq_factor, c->rope_high_freq_factor);
        REQUIRE(c->rope_orig_max_pos > 0, "%s: llama3 rope scaling needs a positive "
                "'original_max_position_embeddings' (got %d)", what, c->rope_orig_max_pos);
    }
    REQUIRE(c->n_rope_freq_factors == 0 || c->n_rope_freq_factors == c->head_dim / 2,
            "%s: 'rope_freqs' holds %d values, expected head_dim/2 = %d", what, c->n_rope_freq_factors,
            c->head_dim / 2);
    REQUIRE(c->sliding_window >= 0, "%s: 'sliding_window' must be >= 0 (got %d)", what, c->sliding_window);
    REQUIRE(c->swa_first_layer >= 0 && c->swa_first_layer <= c->n_layers,
            "%s: 'max_window_layers' (%d) must be in 0..num_hidden_layers", what, c->swa_first_layer);
    REQUIRE(c->bos_id >= -1 && c->bos_id < c->vocab, "%s: 'bos_token_id' (%d) is outside the vocabulary (%d)",
            what, c->bos_id, c->vocab);
    for (int i = 0; i < c->n_eos; i++)
        REQUIRE(c->eos_ids[i] >= 0 && c->eos_ids[i] < c->vocab,
                "%s: 'eos_token_id' %d is outside the vocabulary (%d)", what, c->eos_ids[i], c->vocab);
    return KS_OK;
}
