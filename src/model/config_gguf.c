/* config_gguf.c — GGUF metadata → ks_model_config (llama.cpp key names, gguf-py constants.py):
 *
 *   general.architecture            llama | qwen2 (Mistral and Llama-3 GGUFs say llama)
 *   <arch>.block_count, .embedding_length, .feed_forward_length, .context_length
 *   <arch>.attention.head_count, .head_count_kv, .key_length (= head_dim), .layer_norm_rms_epsilon
 *   <arch>.rope.freq_base, .rope.dimension_count (must be head_dim), .rope.scaling.type/.factor (linear)
 *   <arch>.vocab_size, else len(tokenizer.ggml.tokens), else token_embd rows
 *   tokenizer.ggml.bos_token_id, .eos_token_id (+ .eot_token_id, .eom_token_id as extra stop ids)
 * Tensors decide the rest: no `output.weight` = tied embeddings; `blk.0.attn_q.bias` = attention biases;
 * `rope_freqs.weight` = per-dimension frequency divisors (Llama-3.1 scaling).
 */
#include "model/config.h"

#include <stdio.h>
#include <string.h>

#include "model/gguf.h"

/* <arch>.<suffix> as an int; *out unchanged when absent and !required. */
static ks_status arch_int(const ks_gguf *g, const char *arch, const char *suffix, int required, int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const ks_gguf_kv *kv = ks_gguf_find(g, key);
    if (!kv && !required) return KS_OK;
    if (kv && kv->type == KS_GGUF_ARRAY)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: metadata key '%s' varies per layer, which is not supported",
                       g->file.path, key);
    int64_t v;
    KS_TRY(ks_gguf_get_int(g, key, &v));
    if (v < 0 || v > 0x7fffffff)
        return ks_fail(KS_ERR_FORMAT, "%s: metadata key '%s' = %lld is out of range", g->file.path, key, (long long)v);
    *out = (int)v;
    return KS_OK;
}

static ks_status arch_float(const ks_gguf *g, const char *arch, const char *suffix, int required, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!required && !ks_gguf_find(g, key)) return KS_OK;
    double v;
    KS_TRY(ks_gguf_get_float(g, key, &v));
    *out = (float)v;
    return KS_OK;
}

static ks_status gguf_arch(const ks_gguf *g, ks_model_config *c, char *arch, size_t cap) {
    size_t len;
    const char *a = ks_gguf_get_str(g, "general.architecture", &len);
    if (!a) return ks_fail(KS_ERR_FORMAT, "%s: metadata key 'general.architecture' is missing", g->file.path);
    snprintf(arch, cap, "%.*s", (int)(len < cap ? len : cap - 1), a);
    if (!strcmp(arch, "llama")) c->arch = KS_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2")) c->arch = KS_ARCH_QWEN2;
    else
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: metadata key 'general.architecture' = '%s' is not supported "
                       "(supported: llama, qwen2)", g->file.path, arch);
    return KS_OK;
}

static ks_status gguf_rope(const ks_gguf *g, const char *arch, ks_model_config *c) {
    c->rope_theta = 10000.0f;
    c->rope_type = KS_ROPE_DEFAULT;
    c->rope_factor = 1.0f;
    KS_TRY(arch_float(g, arch, "rope.freq_base", 0, &c->rope_theta));
    int rot = c->head_dim;
    KS_TRY(arch_int(g, arch, "rope.dimension_count", 0, &rot));
    if (rot != c->head_dim)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: '%s.rope.dimension_count' = %d but head_dim = %d (partial rotary "
                       "embeddings are not supported)", g->file.path, arch, rot, c->head_dim);
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    size_t len;
    const char *type = ks_gguf_get_str(g, key, &len);
    float old_linear = 0.0f; /* older converters: <arch>.rope.scale_linear */
    KS_TRY(arch_float(g, arch, "rope.scale_linear", 0, &old_linear));
    if (type && len == 6 && !memcmp(type, "linear", 6)) {
        c->rope_type = KS_ROPE_LINEAR;
        c->rope_factor = 0.0f;
        KS_TRY(arch_float(g, arch, "rope.scaling.factor", 1, &c->rope_factor));
    } else if (type && !(len == 4 && !memcmp(type, "none", 4))) {
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: metadata key '%s' = '%.*s' is not supported (supported: none, "
                       "linear)", g->file.path, key, (int)len, type);
    } else if (old_linear > 0.0f && old_linear != 1.0f) {
        c->rope_type = KS_ROPE_LINEAR;
        c->rope_factor = old_linear;
    }
    const ks_gguf_tensor *rf = ks_gguf_find_tensor(g, "rope_freqs.weight");
    if (!rf) return KS_OK;
    if (rf->ggml_type != 0 || rf->ndim != 1 || rf->ne[0] != (uint64_t)c->head_dim / 2 ||
        c->head_dim / 2 > KS_MAX_ROPE_FACTORS)
        return ks_fail(KS_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' must be F32 with head_dim/2 = %d values",
                       g->file.path, c->head_dim / 2);
    c->n_rope_freq_factors = c->head_dim / 2;
    memcpy(c->rope_freq_factors, rf->data, (size_t)c->n_rope_freq_factors * sizeof(float));
    return KS_OK;
}

/* bos, eos and the chat stop tokens; each id once. */
static ks_status gguf_special_ids(const ks_gguf *g, ks_model_config *c) {
    static const char *const stop_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                            "tokenizer.ggml.eom_token_id"};
    int64_t v;
    c->bos_id = -1;
    if (ks_gguf_find(g, "tokenizer.ggml.bos_token_id")) {
        KS_TRY(ks_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v));
        c->bos_id = (int)v;
    }
    for (size_t k = 0; k < sizeof stop_keys / sizeof stop_keys[0]; k++) {
        if (!ks_gguf_find(g, stop_keys[k])) continue;
        KS_TRY(ks_gguf_get_int(g, stop_keys[k], &v));
        int dup = 0;
        for (int i = 0; i < c->n_eos; i++) dup |= c->eos_ids[i] == (int)v;
        if (!dup) c->eos_ids[c->n_eos++] = (int)v;
    }
    return KS_OK;
}

static ks_status gguf_vocab(const ks_gguf *g, const char *arch, ks_model_config *c) {
    KS_TRY(arch_int(g, arch, "vocab_size", 0, &c->vocab));
    if (c->vocab) return KS_OK;
    const ks_gguf_kv *toks = ks_gguf_find(g, "tokenizer.ggml.tokens");
    const ks_gguf_tensor *emb = ks_gguf_find_tensor(g, "token_embd.weight");
    if (toks && toks->type == KS_GGUF_ARRAY) c->vocab = (int)toks->arr_n;
    else if (emb && emb->ndim == 2) c->vocab = (int)emb->ne[1];
    return KS_OK;
}

ks_status ks_model_config_from_gguf(const ks_gguf *g, ks_model_config *c) {
    memset(c, 0, sizeof *c);
    char arch[32];
    KS_TRY(gguf_arch(g, c, arch, sizeof arch));
    KS_TRY(arch_int(g, arch, "block_count", 1, &c->n_layers));
    KS_TRY(arch_int(g, arch, "embedding_length", 1, &c->hidden));
    KS_TRY(arch_int(g, arch, "feed_forward_length", 1, &c->ffn));
    KS_TRY(arch_int(g, arch, "context_length", 1, &c->max_pos));
    KS_TRY(arch_int(g, arch, "attention.head_count", 1, &c->n_heads));
    c->n_kv_heads = c->n_heads;
    KS_TRY(arch_int(g, arch, "attention.head_count_kv", 0, &c->n_kv_heads));
    c->head_dim = c->n_heads > 0 ? c->hidden / c->n_heads : 0;
    KS_TRY(arch_int(g, arch, "attention.key_length", 0, &c->head_dim));
    int vdim = c->head_dim;
    KS_TRY(arch_int(g, arch, "attention.value_length", 0, &vdim));
    if (vdim != c->head_dim)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: '%s.attention.value_length' (%d) differs from the key length (%d)",
                       g->file.path, arch, vdim, c->head_dim);
    KS_TRY(arch_float(g, arch, "attention.layer_norm_rms_epsilon", 1, &c->rms_eps));
    KS_TRY(arch_int(g, arch, "attention.sliding_window", 0, &c->sliding_window));
    KS_TRY(gguf_rope(g, arch, c));
    KS_TRY(gguf_vocab(g, arch, c));
    KS_TRY(gguf_special_ids(g, c));
    c->tie_embeddings = ks_gguf_find_tensor(g, "output.weight") == NULL;
    c->attn_bias = ks_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->o_bias = ks_gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    return ks_model_config_validate(c, g->file.path);
}
