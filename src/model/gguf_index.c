/* gguf_index.c — a GGUF file as a ks_tensor_index: GGUF tensor names → Hugging Face names, GGML dims →
 * PyTorch order, GGML type ids → ks_dtype (unsupported ids are an error naming the tensor and type).
 *
 * Names (llama.cpp's gguf-py tensor_mapping.py, llama/qwen2 subset):
 *   token_embd → model.embed_tokens    output_norm → model.norm    output → lm_head
 *   blk.N.attn_q/attn_k/attn_v/attn_output → model.layers.N.self_attn.q_proj/k_proj/v_proj/o_proj
 *   blk.N.ffn_gate/ffn_up/ffn_down → model.layers.N.mlp.gate_proj/up_proj/down_proj
 *   blk.N.attn_norm → model.layers.N.input_layernorm   blk.N.ffn_norm → model.layers.N.post_attention_layernorm
 * with the ".weight"/".bias" suffix kept. Other names (rope_freqs.weight, …) are kept as they are. Each renamed
 * tensor keeps its GGUF name (file_name) for messages.
 * The data is left as stored: llama Q/K rows stay permuted here; ks_model_load un-permutes them.
 */
#include "model/tensor_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

static const struct { const char *gguf, *hf; } global_names[] = {
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
};

static const struct { const char *gguf, *hf; } block_names[] = {
    {"attn_q", "self_attn.q_proj"},       {"attn_k", "self_attn.k_proj"},  {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},  {"ffn_gate", "mlp.gate_proj"},   {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},        {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
};

/* Renames tensor `in` (NUL-terminated, < 256 bytes) from GGUF to HF naming (to_hf) or back, into out. Names
 * outside the tables are copied unchanged. */
static void rename_tensor(const char *in, int to_hf, char *out, size_t cap) {
    const char *dot = strrchr(in, '.');
    const char *suffix = dot && (!strcmp(dot, ".weight") || !strcmp(dot, ".bias")) ? dot : NULL;
    size_t stem = suffix ? (size_t)(suffix - in) : strlen(in);
    for (size_t i = 0; suffix && i < sizeof global_names / sizeof global_names[0]; i++) {
        const char *from = to_hf ? global_names[i].gguf : global_names[i].hf;
        if (strlen(from) == stem && !strncmp(in, from, stem)) {
            snprintf(out, cap, "%s%s", to_hf ? global_names[i].hf : global_names[i].gguf, suffix);
            return;
        }
    }
    int layer, used = 0;
    int scanned = 0;
    if (suffix && to_hf) scanned = sscanf(in, "blk.%d.%n", &layer, &used);
    else if (suffix) scanned = sscanf(in, "model.layers.%d.%n", &layer, &used);
    if (scanned == 1 && used > 0 && layer >= 0) {
        const char *part = in + used;
        size_t plen = stem - (size_t)used;
        for (size_t i = 0; i < sizeof block_names / sizeof block_names[0]; i++) {
            const char *from = to_hf ? block_names[i].gguf : block_names[i].hf;
            if (strlen(from) == plen && !strncmp(part, from, plen)) {
                snprintf(out, cap, "%s%d.%s%s", to_hf ? "model.layers." : "blk.", layer,
                         to_hf ? block_names[i].hf : block_names[i].gguf, suffix);
                return;
            }
        }
    }
    snprintf(out, cap, "%s", in);
}

void ks_gguf_tensor_name(const char *hf, char *out, size_t cap) { rename_tensor(hf, 0, out, cap); }

static ks_status to_dtype(const char *path, const char *name, uint32_t ggml_type, ks_dtype *out) {
    switch (ggml_type) {
    case 0: *out = KS_DTYPE_F32; return KS_OK;
    case 1: *out = KS_DTYPE_F16; return KS_OK;
    case 30: *out = KS_DTYPE_BF16; return KS_OK;
    case 8: *out = KS_DTYPE_Q8_0; return KS_OK;
    case 2: *out = KS_DTYPE_Q4_0; return KS_OK;
    case 3: *out = KS_DTYPE_Q4_1; return KS_OK;
    case 12: *out = KS_DTYPE_Q4_K; return KS_OK;
    case 14: *out = KS_DTYPE_Q6_K; return KS_OK;
    default: break;
    }
    const char *tn = ks_ggml_type_name(ggml_type);
    return ks_fail(KS_ERR_UNSUPPORTED, "%s: tensor '%s' has GGML type %u (%s); supported: F32, F16, BF16, Q8_0, "
                   "Q4_0, Q4_1, Q4_K, Q6_K (use a GGUF quantized to one of these, e.g. Q4_K_M, Q8_0 or F16)",
                   path, name, ggml_type, tn ? tn : "unknown");
}

static ks_status add_tensors(ks_tensor_index *ix, const ks_gguf *g) {
    const char *path = ix->files[0].path; /* g->file was handed over to ix */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ks_gguf_tensor *gt = &g->tensors[i];
        char gname[256], name[320];
        if (gt->name_len >= sizeof gname)
            return ks_fail(KS_ERR_FORMAT, "%s: tensor %llu has a %zu-byte name (longer than 255)", path,
                           (unsigned long long)i, gt->name_len);
        memcpy(gname, gt->name, gt->name_len);
        gname[gt->name_len] = '\0';
        rename_tensor(gname, 1, name, sizeof name);
        ks_tensor_info *t = ks_tensor_index_add(ix, name, strlen(name));
        if (!t) return KS_ERR_NOMEM;
        if (strcmp(gname, name) && !(t->file_name = strdup(gname)))
            return ks_fail(KS_ERR_NOMEM, "out of memory copying a tensor name");
        KS_TRY(to_dtype(path, gname, gt->ggml_type, &t->dtype));
        t->ndim = gt->ndim;
        for (int d = 0; d < gt->ndim; d++) t->shape[gt->ndim - 1 - d] = (int64_t)gt->ne[d];
        t->data = gt->data;
        t->nbytes = gt->nbytes;
        t->file = 0;
    }
    return KS_OK;
}

ks_status ks_tensor_index_open_gguf(ks_tensor_index *ix, const char *gguf_path) {
    memset(ix, 0, sizeof *ix);
    ks_gguf g;
    KS_TRY(ks_gguf_open(&g, gguf_path));
    ix->files = ks_calloc(1, sizeof *ix->files, "the tensor index");
    if (!ix->files) {
        ks_gguf_close(&g);
        return KS_ERR_NOMEM;
    }
    /* The index takes over the mapping: tensor data pointers stay valid after the GGUF directory is closed. */
    ix->files[0] = g.file;
    ix->n_files = 1;
    ix->gguf = 1;
    memset(&g.file, 0, sizeof g.file);
    ks_status st = add_tensors(ix, &g);
    ks_gguf_close(&g);
    if (st == KS_OK) st = ks_tensor_index_finish(ix, gguf_path);
    if (st != KS_OK) ks_tensor_index_free(ix);
    return st;
}
