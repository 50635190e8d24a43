/* gguf.h — GGUF v3 reader: metadata key/values and tensor directory over a memory-mapped file.
 *
 *     ks_gguf g = {0};
 *     KS_TRY(ks_gguf_open(&g, "model.gguf"));
 *     const ks_gguf_kv *kv = ks_gguf_find(&g, "llama.block_count");
 *     int64_t n; KS_TRY(ks_gguf_get_int(&g, "llama.block_count", &n));
 *     const ks_gguf_kv *toks = ks_gguf_find(&g, "tokenizer.ggml.tokens");   // array of strings
 *     for (uint64_t i = 0; i < toks->arr_n; i++) { size_t len; const char *s = ks_gguf_arr_str(toks, i, &len); }
 *     ks_gguf_close(&g);
 *
 * Strings inside the file are not NUL-terminated: every string accessor returns (pointer, length).
 */
#ifndef KS_GGUF_H
#define KS_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/file.h"
#include "core/status.h"

typedef enum ks_gguf_type {
    KS_GGUF_UINT8 = 0, KS_GGUF_INT8 = 1, KS_GGUF_UINT16 = 2, KS_GGUF_INT16 = 3, KS_GGUF_UINT32 = 4,
    KS_GGUF_INT32 = 5, KS_GGUF_FLOAT32 = 6, KS_GGUF_BOOL = 7, KS_GGUF_STRING = 8, KS_GGUF_ARRAY = 9,
    KS_GGUF_UINT64 = 10, KS_GGUF_INT64 = 11, KS_GGUF_FLOAT64 = 12,
} ks_gguf_type;

typedef struct ks_gguf_kv {
    const char *key;      /* borrowed from the mapping, not NUL-terminated */
    size_t key_len;
    ks_gguf_type type;    /* for arrays: KS_GGUF_ARRAY, and arr_type is the element type */
    const uint8_t *value; /* scalar value bytes, or a string's length prefix, or the first array element */
    ks_gguf_type arr_type;
    uint64_t arr_n;
    const uint8_t **arr_str; /* (arr_n) for string arrays: pointers to each element's length prefix; owned */
} ks_gguf_kv;

typedef struct ks_gguf_tensor {
    const char *name;     /* borrowed, not NUL-terminated */
    size_t name_len;
    uint32_t ggml_type;   /* raw GGML type id */
    int ndim;
    uint64_t ne[4];       /* GGML order: ne[0] is the contiguous dimension */
    const uint8_t *data;  /* inside the mapping; bounds-checked at open */
    size_t nbytes;        /* 0 when the type id is unknown (its size cannot be computed) */
} ks_gguf_tensor;

typedef struct ks_gguf {
    ks_mapped_file file;
    uint32_t version;
    ks_gguf_kv *kv;         /* (n_kv) owned */
    uint64_t n_kv;
    ks_gguf_tensor *tensors; /* (n_tensors) owned */
    uint64_t n_tensors;
    size_t alignment;        /* general.alignment, default 32 */
} ks_gguf;

/* Accepts GGUF v2 and v3 (same layout; little-endian only). On failure *g is left closed. */
ks_status ks_gguf_open(ks_gguf *g, const char *path);
void ks_gguf_close(ks_gguf *g);

const ks_gguf_kv *ks_gguf_find(const ks_gguf *g, const char *key);
/* Integer/bool scalars of any width; KS_ERR_FORMAT naming the key if missing or not an integer. */
ks_status ks_gguf_get_int(const ks_gguf *g, const char *key, int64_t *out);
ks_status ks_gguf_get_float(const ks_gguf *g, const char *key, double *out);
/* String scalar; NULL when absent. */
const char *ks_gguf_get_str(const ks_gguf *g, const char *key, size_t *len);
/* Element i of a string array. */
const char *ks_gguf_arr_str(const ks_gguf_kv *kv, uint64_t i, size_t *len);
/* Element i of a numeric array (integer/bool elements for _int; any numeric element for _float);
 * calling them on another element type is a programmer error. */
int64_t ks_gguf_arr_int(const ks_gguf_kv *kv, uint64_t i);
double ks_gguf_arr_float(const ks_gguf_kv *kv, uint64_t i);

/* The tensor called `name` (NUL-terminated), or NULL. */
const ks_gguf_tensor *ks_gguf_find_tensor(const ks_gguf *g, const char *name);

/* GGML tensor type id -> "Q4_K" etc.; NULL for ids this build does not know. Block geometry: elements per
 * block and bytes per block (0 when unknown). The reader knows every type's size (for bounds checks) but
 * ks_tensor_index converts only F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K. */
const char *ks_ggml_type_name(uint32_t ggml_type);
int ks_ggml_type_block(uint32_t ggml_type, size_t *block_elems, size_t *block_bytes);

#endif
