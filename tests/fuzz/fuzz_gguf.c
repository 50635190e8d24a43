/* fuzz_gguf.c — libFuzzer target: a GGUF file, read the ways kvscope reads one.
 *
 * The input is the whole file. It is opened with the container reader (every metadata value read back through
 * the typed accessors), then as a model (tensor index, config from metadata, weights dequantized to fp32) and
 * as a tokenizer (the embedded vocabulary; a short text encoded and decoded). Seeds: tests/fuzz/make_corpus.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "model/gguf.h"
#include "model/model.h"
#include "tiny_model.h"
#include "tokenizer/tokenizer.h"

/* Elements of one array read back: enough to reach every element type without slowing each run. */
#define MAX_ELEMS 4096

/* Reads every metadata value through the accessors callers use; the values are discarded. */
static void walk_metadata(const ks_gguf *g) {
    volatile double sink = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const ks_gguf_kv *kv = &g->kv[i];
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(kv->key_len < 255 ? kv->key_len : 255), kv->key);
        int64_t iv;
        double fv;
        size_t len;
        if (ks_gguf_get_int(g, key, &iv) == KS_OK) sink += (double)iv;
        if (ks_gguf_get_float(g, key, &fv) == KS_OK) sink += fv;
        if (ks_gguf_get_str(g, key, &len)) sink += (double)len;
        if (kv->type != KS_GGUF_ARRAY) continue;
        for (uint64_t e = 0; e < kv->arr_n && e < MAX_ELEMS; e++) {
            if (kv->arr_type == KS_GGUF_STRING) {
                const char *s = ks_gguf_arr_str(kv, e, &len);
                if (len) sink += (unsigned char)s[len - 1];
            } else if (kv->arr_type == KS_GGUF_FLOAT32 || kv->arr_type == KS_GGUF_FLOAT64) {
                sink += ks_gguf_arr_float(kv, e);
            } else {
                sink += (double)ks_gguf_arr_int(kv, e) + ks_gguf_arr_float(kv, e);
            }
        }
    }
    (void)sink;
}

static void as_container(const char *path) {
    ks_gguf g;
    if (ks_gguf_open(&g, path) != KS_OK) return;
    walk_metadata(&g);
    for (uint64_t t = 0; t < g.n_tensors; t++) {
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(g.tensors[t].name_len < 255 ? g.tensors[t].name_len : 255),
                 g.tensors[t].name);
        (void)ks_gguf_find_tensor(&g, name);
        (void)ks_ggml_type_name(g.tensors[t].ggml_type);
    }
    ks_gguf_close(&g);
}

/* The tensor index with every tensor of a supported type converted, then the whole model (config from the
 * metadata, shapes checked against it, weights converted and un-permuted). */
static void as_model(const char *path) {
    ks_tensor_index ix;
    if (ks_tensor_index_open_gguf(&ix, path) == KS_OK) {
        ks_fuzz_convert_all(&ix);
        ks_tensor_index_free(&ix);
    }
    ks_model m;
    if (ks_model_load(&m, path, 0, -1) == KS_OK) ks_model_free(&m);
}

static void as_tokenizer(const char *path) {
    static const char text[] = "Hello, world! 123  \xc3\xa9t\xc3\xa9 \xe4\xb8\x96\xe7\x95\x8c <s></s>\n\tend";
    ks_tokenizer *tok;
    if (ks_tokenizer_load(&tok, path) != KS_OK) return;
    ks_ids ids = {0};
    if (ks_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids) == KS_OK) {
        char *s;
        if (ks_tokenizer_decode(tok, ids.ids, ids.n, 0, &s) == KS_OK) free(s);
        if (ks_tokenizer_decode(tok, ids.ids, ids.n, 1, &s) == KS_OK) free(s);
    }
    ks_ids_free(&ids);
    ks_tokenizer_free(tok);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    setenv("OMP_NUM_THREADS", "1", 0); /* the weight conversion's thread team costs more than these tensors */
    ks_fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "model.gguf"), data, size);
    as_container(path);
    as_model(path);
    as_tokenizer(path);
    return 0;
}
