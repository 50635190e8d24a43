/* tiny_model.c — see tiny_model.h. */
#include "tiny_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "model/model.h"

const ks_fuzz_tensor ks_fuzz_tiny_tensors[] = {
    {"model.embed_tokens.weight", "F16", 2, {16, 8}, 1},
    {"model.layers.0.input_layernorm.weight", "F32", 1, {8, 0}, 1},
    {"model.layers.0.self_attn.q_proj.weight", "BF16", 2, {8, 8}, 1},
    {"model.layers.0.self_attn.k_proj.weight", "BF16", 2, {4, 8}, 1},
    {"model.layers.0.self_attn.v_proj.weight", "F16", 2, {4, 8}, 1},
    {"model.layers.0.self_attn.o_proj.weight", "F32", 2, {8, 8}, 1},
    {"model.layers.0.post_attention_layernorm.weight", "F32", 1, {8, 0}, 2},
    {"model.layers.0.mlp.gate_proj.weight", "BF16", 2, {12, 8}, 2},
    {"model.layers.0.mlp.up_proj.weight", "F16", 2, {12, 8}, 2},
    {"model.layers.0.mlp.down_proj.weight", "F32", 2, {8, 12}, 2},
    {"model.norm.weight", "F32", 1, {8, 0}, 2},
};
const int ks_fuzz_n_tiny_tensors = (int)(sizeof ks_fuzz_tiny_tensors / sizeof ks_fuzz_tiny_tensors[0]);

const char *const ks_fuzz_tiny_shards[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};

static size_t tensor_bytes(const ks_fuzz_tensor *t) {
    size_t n = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
    return n * (strcmp(t->dtype, "F32") ? 2 : 4);
}

void ks_fuzz_write_tiny_safetensors(const char *path, int shard) {
    char header[4096];
    size_t hn = 0, off = 0;
    hn += (size_t)snprintf(header + hn, sizeof header - hn, "{");
    for (int i = 0; i < ks_fuzz_n_tiny_tensors; i++) {
        const ks_fuzz_tensor *t = &ks_fuzz_tiny_tensors[i];
        if (shard && t->shard != shard) continue;
        char shape[32];
        if (t->ndim == 2) snprintf(shape, sizeof shape, "[%d, %d]", t->shape[0], t->shape[1]);
        else snprintf(shape, sizeof shape, "[%d]", t->shape[0]);
        hn += (size_t)snprintf(header + hn, sizeof header - hn,
                               "%s\"%s\": {\"dtype\": \"%s\", \"shape\": %s, \"data_offsets\": [%zu, %zu]}",
                               off ? ", " : "", t->name, t->dtype, shape, off, off + tensor_bytes(t));
        off += tensor_bytes(t);
    }
    hn += (size_t)snprintf(header + hn, sizeof header - hn, "}");
    if (hn >= sizeof header) abort(); /* the table outgrew the buffer */
    size_t total = 8 + hn + off;
    unsigned char *file = malloc(total);
    if (!file) abort();
    uint64_t hlen = hn;
    memcpy(file, &hlen, 8);
    memcpy(file + 8, header, hn);
    /* bytes 00 3c 00 3c ...: finite values in every dtype (1.0 in F16) */
    for (size_t i = 0; i < off; i++) file[8 + hn + i] = (unsigned char)(i % 2 ? 0x3c : 0x00);
    ks_fuzz_write(path, file, total);
    free(file);
}

void ks_fuzz_convert_all(const ks_tensor_index *ix) {
    for (int i = 0; i < ix->n; i++) {
        const ks_tensor_info *t = &ix->tensors[i];
        int64_t n = ks_tensor_numel(t);
        float *dst = n > 0 && n <= (1 << 20) ? malloc((size_t)n * sizeof *dst) : NULL;
        if (dst) (void)ks_tensor_to_f32(t, dst); /* a refusal is a valid outcome */
        free(dst);
    }
}

void ks_fuzz_load_hf_dir(void) {
    ks_tensor_index ix;
    if (ks_tensor_index_open_hf(&ix, ks_fuzz_dir()) == KS_OK) {
        ks_fuzz_convert_all(&ix);
        ks_tensor_index_free(&ix);
    }
    ks_model m;
    if (ks_model_load(&m, ks_fuzz_dir(), 0, -1) == KS_OK) ks_model_free(&m);
}

void ks_fuzz_hf_dir_init(int with_shards) {
    setenv("OMP_NUM_THREADS", "1", 0);
    ks_fuzz_quiet();
    char path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "config.json"), KS_FUZZ_TINY_CONFIG, strlen(KS_FUZZ_TINY_CONFIG));
    for (int s = 0; with_shards && s < 2; s++)
        ks_fuzz_write_tiny_safetensors(ks_fuzz_path(path, sizeof path, ks_fuzz_tiny_shards[s]), s + 1);
}
