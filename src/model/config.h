/* config.h — the model hyper-parameters kvscope needs, from a Hugging Face config.json or GGUF metadata.
 *
 *     ks_model_config c;
 *     KS_TRY(ks_model_config_from_hf("/models/Llama-3.1-8B/config.json", &c));
 *
 * Accepts both transformers < 5 (`rope_theta`, `rope_scaling` with `type` or `rope_type`) and >= 5
 * (`rope_parameters`) spellings; `head_dim` defaults to hidden/heads; Mistral's `sliding_window` may be null;
 * Qwen2 uses `use_sliding_window` (+ `max_window_layers`/`layer_types`: which layers slide). Unsupported
 * architectures, RoPE types and inconsistent sizes are errors naming the field.
 */
#ifndef KS_MODEL_CONFIG_H
#define KS_MODEL_CONFIG_H

#include "core/status.h"

typedef enum ks_arch { KS_ARCH_LLAMA, KS_ARCH_MISTRAL, KS_ARCH_QWEN2 } ks_arch;

typedef enum ks_rope_type { KS_ROPE_DEFAULT, KS_ROPE_LINEAR, KS_ROPE_LLAMA3 } ks_rope_type;

#define KS_MAX_EOS 8
#define KS_MAX_ROPE_FACTORS 256 /* head_dim / 2 for head_dim up to 512 */

typedef struct ks_model_config {
    ks_arch arch;
    int n_layers;       /* num_hidden_layers */
    int hidden;         /* hidden_size */
    int n_heads;        /* num_attention_heads */
    int n_kv_heads;     /* num_key_value_heads (GQA group = n_heads / n_kv_heads) */
    int head_dim;       /* per-head dimension */
    int ffn;            /* intermediate_size */
    int vocab;          /* vocab_size */
    int max_pos;        /* max_position_embeddings: the longest prompt+generation we accept */
    float rms_eps;      /* rms_norm_eps */
    float rope_theta;
    ks_rope_type rope_type;
    float rope_factor;              /* linear and llama3 */
    float rope_low_freq_factor;     /* llama3 */
    float rope_high_freq_factor;    /* llama3 */
    int rope_orig_max_pos;          /* llama3: original_max_position_embeddings */
    int sliding_window;             /* 0 = full attention; else each query sees the last `sliding_window` keys */
    int swa_first_layer;            /* sliding_window applies to layers >= this (Qwen2 max_window_layers or
                                       layer_types); 0 = every layer (Mistral) */
    int n_rope_freq_factors;        /* 0, or head_dim/2: GGUF `rope_freqs` (Llama-3 scaling stored as a tensor) */
    float rope_freq_factors[KS_MAX_ROPE_FACTORS]; /* inv_freq[i] is divided by these (llama.cpp freq_factors) */
    int attn_bias;                  /* 1 for Qwen2: q/k/v projections carry biases */
    int o_bias;                     /* 1 when o_proj carries a bias too (Llama `attention_bias: true`) */
    int tie_embeddings;             /* lm_head = embed_tokens */
    int bos_id;                     /* -1 if none */
    int eos_ids[KS_MAX_EOS];        /* generation stops on any of these */
    int n_eos;
} ks_model_config;

ks_status ks_model_config_from_hf(const char *config_json_path, ks_model_config *out);

/* From GGUF metadata (<arch>.block_count, .embedding_length, .attention.head_count ...; general.architecture
 * llama or qwen2 — Mistral GGUFs say llama) and, for vocab/ties/biases/rope_freqs, the tensor directory. */
struct ks_gguf;
ks_status ks_model_config_from_gguf(const struct ks_gguf *g, ks_model_config *out);

/* Checks sizes are positive and consistent (KV heads divide heads, even head_dim, token ids inside the vocab,
 * RoPE parameters usable); head_dim * heads may differ from hidden (Mistral-Nemo). `what` names the source. */
ks_status ks_model_config_validate(const ks_model_config *c, const char *what);

const char *ks_arch_name(ks_arch a);

/* Per-dimension inverse frequencies for RoPE (head_dim/2 values), with the config's scaling applied exactly
 * as transformers' modeling_rope_utils (default, linear, llama3), then divided by rope_freq_factors if any. */
void ks_rope_inv_freq(const ks_model_config *c, float *inv_freq);

#endif
