/* model.h — a loaded checkpoint: config plus fp32 host weights for a contiguous layer range.
 *
 *     ks_model m = {0};
 *     KS_TRY(ks_model_load(&m, "/models/Llama-3.1-8B", 0, -1));  // HF directory or .gguf file; all layers
 *     ... m.cfg.n_layers, ks_model_layer(&m, layer)->wq ...        // layer: an absolute number
 *     ks_model_free(&m);                                          // accepts half-built structs
 *
 * A pipeline stage loads [first, last): the embedding is loaded when first == 0, the final norm and LM head
 * when last == n_layers (with tied embeddings the LM head is the embedding matrix). Weights are converted to
 * fp32 (GGUF quantized types dequantized; GGUF llama Q/K rows un-permuted back to HF's rotate-half layout),
 * so every backend sees the same HF-convention tensors. The CUDA backend uploads them as bf16.
 *
 * ks_model_load_packed keeps the GGUF matrices that are stored in GGML blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) in
 * those blocks instead (ks_qmat; Q/K rows un-permuted the same way): the CPU backend computes on them directly
 * (kernels/cpu/quant.h). Their float pointers are then NULL; norms, biases and fp32/16-bit matrices stay fp32.
 */
#ifndef KS_MODEL_H
#define KS_MODEL_H

#include "core/status.h"
#include "model/config.h"
#include "model/tensor_index.h"

/* A weight matrix (rows, cols) in a GGML block encoding: each row is row_bytes bytes, cols / block elements
 * blocks of `type`. type KS_DTYPE_F32 with data NULL: the matrix is not packed (its fp32 pointer holds it). */
typedef struct ks_qmat {
    ks_dtype type;
    int64_t rows, cols;
    size_t row_bytes;
    const uint8_t *data; /* points into ks_model.packed */
} ks_qmat;

typedef struct ks_layer_weights {
    float *attn_norm;           /* (hidden) input_layernorm */
    float *wq;                  /* (n_heads*head_dim, hidden) q_proj, row-major [out][in] */
    float *wk;                  /* (n_kv_heads*head_dim, hidden) */
    float *wv;                  /* (n_kv_heads*head_dim, hidden) */
    float *wo;                  /* (hidden, n_heads*head_dim) o_proj */
    float *bq, *bk, *bv;        /* biases (out) when cfg.attn_bias, else NULL */
    float *bo;                  /* (hidden) o_proj bias when cfg.o_bias, else NULL */
    float *ffn_norm;            /* (hidden) post_attention_layernorm */
    float *w_gate;              /* (ffn, hidden) */
    float *w_up;                /* (ffn, hidden) */
    float *w_down;              /* (hidden, ffn) */
    /* The packed forms of wq, wk, wv, wo, w_gate, w_up, w_down (ks_model_load_packed); see ks_qmat. */
    ks_qmat pq, pk, pv, po, p_gate, p_up, p_down;
} ks_layer_weights;

typedef struct ks_model {
    ks_model_config cfg;
    char *source;               /* owned: the path it was loaded from */
    int is_gguf;
    int first_layer, last_layer; /* [first, last) held here */
    float *embed;               /* (vocab, hidden) when first_layer == 0, or when tied and last stage */
    float *final_norm;          /* (hidden) when last_layer == n_layers */
    float *lm_head;             /* (vocab, hidden) when last stage; == embed when tied (not separately owned) */
    ks_layer_weights *layers;   /* (last_layer - first_layer) owned array; tensors point into `arena` */
    ks_qmat p_embed, p_lm_head; /* packed forms of embed and lm_head (see ks_qmat); p_lm_head = p_embed when tied */
    float *arena;               /* owned block holding every fp32 tensor above */
    size_t arena_floats;
    uint8_t *packed;            /* owned block holding every packed matrix (NULL when none) */
    size_t packed_bytes;
} ks_model;

/* The weights of held `layer` (an absolute number, first_layer <= layer < last_layer): the one place that
 * indexes `layers`. */
static inline ks_layer_weights *ks_model_layer(const ks_model *m, int layer) {
    KS_ASSERT(layer >= m->first_layer && layer < m->last_layer);
    return &m->layers[layer - m->first_layer];
}

/* path: a directory with config.json + safetensors, or a .gguf file. last < 0 means n_layers. */
ks_status ks_model_load(ks_model *m, const char *path, int first_layer, int last_layer);
/* ks_model_load, keeping GGUF matrices in their GGML blocks (see above); an HF directory loads as fp32. */
ks_status ks_model_load_packed(ks_model *m, const char *path, int first_layer, int last_layer);
void ks_model_free(ks_model *m);

/* 1 when any matrix of m is packed (only the CPU backend computes on those). */
int ks_model_is_packed(const ks_model *m);

/* The config and the tensor directory of a checkpoint (HF directory or .gguf file), without converting any
 * weights: what ks_model_load starts from and `kvscope info` prints. *is_gguf may be NULL. On failure both
 * outputs are freed. */
ks_status ks_model_open_index(const char *path, ks_model_config *cfg, ks_tensor_index *ix, int *is_gguf);

/* Weight elements by where a pipeline stage holds them: each layer's, the embedding's (first stage), and the
 * final norm's plus the LM head's (last stage; with tied embeddings the last stage keeps the embedding matrix
 * as its head, so it counts again). Every backend stores every weight in one type, so elements weigh stages. */
void ks_model_stage_elems(const ks_model_config *c, int64_t *per_layer, int64_t *embed, int64_t *head);

#endif
