/* gguf.c — GGUF v2/v3 container reader; see gguf.h.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv × {string key, u32 type,
 * value}, then n_tensors × {string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset}, padding to
 * `general.alignment`, and the tensor data (offsets relative to the start of that data section). A string
 * is a u64 length followed by the bytes. Every read is bounds-checked against the mapping: a truncated or
 * corrupted file is a KS_ERR_FORMAT naming the file and the key or tensor being read.
 */
#include "model/gguf.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* ---- GGML type table (ids, names and block geometry as in ggml.c / gguf-py GGML_QUANT_SIZES) ------------- */

typedef struct ggml_type_info {
    uint32_t id;
    const char *name;
    size_t block_elems, block_bytes;
} ggml_type_info;

static const ggml_type_info ggml_types[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},  {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},  {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},        {25, "I16", 1, 2},
    {26, "I32", 1, 4},       {27, "I64", 1, 8},        {28, "F64", 1, 8},       {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},      {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},  {39, "MXFP4", 32, 17},
    {40, "NVFP4", 64, 36},   {41, "Q1_0", 128, 18},
};

static const ggml_type_info *ggml_type_find(uint32_t id) {
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].id == id) return &ggml_types[i];
    return NULL;
}

const char *ks_ggml_type_name(uint32_t ggml_type) {
    const ggml_type_info *t = ggml_type_find(ggml_type);
    return t ? t->name : NULL;
}

int ks_ggml_type_block(uint32_t ggml_type, size_t *block_elems, size_t *block_bytes) {
    const ggml_type_info *t = ggml_type_find(ggml_type);
    *block_elems = t ? t->block_elems : 0;
    *block_bytes = t ? t->block_bytes : 0;
    return t != NULL;
}

/* ---- bounds-checked cursor ------------------------------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *base;
    size_t pos, size;
    const char *path;
} cursor;

/* Reserves n bytes at the cursor: *out points at them. `what` names the item for the error message. */
static ks_status take(cursor *c, size_t n, const void **out, const char *what) {
    if (n > c->size - c->pos)
        return ks_fail(KS_ERR_FORMAT, "%s: truncated GGUF file: %s needs %zu bytes at offset %zu but the file "
                       "has %zu (re-download or re-convert the file)", c->path, what, n, c->pos, c->size);
    *out = c->base + c->pos;
    c->pos += n;
    return KS_OK;
}

static ks_status read_u32(cursor *c, uint32_t *v, const char *what) {
    const void *p = NULL;
    KS_TRY(take(c, 4, &p, what));
    memcpy(v, p, 4);
    return KS_OK;
}

static ks_status read_u64(cursor *c, uint64_t *v, const char *what) {
    const void *p = NULL;
    KS_TRY(take(c, 8, &p, what));
    memcpy(v, p, 8);
    return KS_OK;
}

/* A string: *s points at its bytes (not NUL-terminated). */
static ks_status read_str(cursor *c, const char **s, size_t *len, const char *what) {
    uint64_t n;
    const void *p = NULL;
    KS_TRY(read_u64(c, &n, what));
    if (n > c->size - c->pos)
        return ks_fail(KS_ERR_FORMAT, "%s: truncated or corrupt GGUF file: %s has length %llu at offset %zu "
                       "beyond the end of the file (%zu bytes)", c->path, what, (unsigned long long)n, c->pos,
                       c->size);
    KS_TRY(take(c, (size_t)n, &p, what));
    *s = p;
    *len = (size_t)n;
    return KS_OK;
}

static size_t scalar_size(ks_gguf_type t) {
    switch (t) {
    case KS_GGUF_UINT8: case KS_GGUF_INT8: case KS_GGUF_BOOL: return 1;
    case KS_GGUF_UINT16: case KS_GGUF_INT16: return 2;
    case KS_GGUF_UINT32: case KS_GGUF_INT32: case KS_GGUF_FLOAT32: return 4;
    case KS_GGUF_UINT64: case KS_GGUF_INT64: case KS_GGUF_FLOAT64: return 8;
    case KS_GGUF_STRING: case KS_GGUF_ARRAY: return 0;
    }
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------------------------- */

static ks_status read_kv(cursor *c, ks_gguf_kv *kv, uint64_t index) {
    char what[160];
    snprintf(what, sizeof what, "metadata entry %llu", (unsigned long long)index);
    KS_TRY(read_str(c, &kv->key, &kv->key_len, what));
    snprintf(what, sizeof what, "metadata key '%.*s'", (int)(kv->key_len < 100 ? kv->key_len : 100), kv->key);
    uint32_t type;
    KS_TRY(read_u32(c, &type, what));
    kv->type = (ks_gguf_type)type;
    if (type > KS_GGUF_FLOAT64)
        return ks_fail(KS_ERR_FORMAT, "%s: %s has unknown value type %u (corrupt file?)", c->path, what, type);
    if (kv->type == KS_GGUF_STRING) {
        kv->value = c->base + c->pos;
        const char *s;
        size_t len;
        return read_str(c, &s, &len, what);
    }
    if (kv->type != KS_GGUF_ARRAY) {
        const void *p = NULL;
        KS_TRY(take(c, scalar_size(kv->type), &p, what));
        kv->value = p;
        return KS_OK;
    }
    uint32_t et;
    KS_TRY(read_u32(c, &et, what));
    KS_TRY(read_u64(c, &kv->arr_n, what));
    kv->arr_type = (ks_gguf_type)et;
    kv->value = c->base + c->pos;
    if (et > KS_GGUF_FLOAT64 || et == KS_GGUF_ARRAY)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: %s is an array of value type %u (nested or unknown arrays are "
                       "not supported)", c->path, what, et);
    if (kv->arr_type != KS_GGUF_STRING) {
        size_t es = scalar_size(kv->arr_type);
        if (kv->arr_n > (c->size - c->pos) / es)
            return ks_fail(KS_ERR_FORMAT, "%s: truncated GGUF file: %s holds %llu elements beyond the end of "
                           "the file", c->path, what, (unsigned long long)kv->arr_n);
        c->pos += (size_t)kv->arr_n * es;
        return KS_OK;
    }
    /* Each string takes at least its 8-byte length prefix: bound the count before allocating. */
    if (kv->arr_n > (c->size - c->pos) / 8)
        return ks_fail(KS_ERR_FORMAT, "%s: truncated GGUF file: %s holds %llu strings beyond the end of the file",
                       c->path, what, (unsigned long long)kv->arr_n);
    kv->arr_str = ks_malloc(((size_t)kv->arr_n ? (size_t)kv->arr_n : 1) * sizeof *kv->arr_str, what);
    if (!kv->arr_str) return KS_ERR_NOMEM;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        kv->arr_str[i] = c->base + c->pos;
        const char *s;
        size_t len;
        KS_TRY(read_str(c, &s, &len, what));
    }
    return KS_OK;
}

const ks_gguf_kv *ks_gguf_find(const ks_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0) return &g->kv[i];
    return NULL;
}

/* Integer value of a scalar at p (any integer width or bool); returns 0 for non-integer types. */
static int scalar_int(ks_gguf_type t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case KS_GGUF_UINT8: case KS_GGUF_BOOL: *out = p[0]; return 1;
    case KS_GGUF_INT8: *out = (int8_t)p[0]; return 1;
    case KS_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return 1; }
    case KS_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return 1; }
    case KS_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *out = v; return 1; }
    case KS_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *out = v; return 1; }
    case KS_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); *out = v; return 1; }
    case KS_GGUF_UINT64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > (uint64_t)INT64_MAX) return 0;
        *out = (int64_t)v;
        return 1;
    }
    default: return 0;
    }
}

static int scalar_float(ks_gguf_type t, const uint8_t *p, double *out) {
    int64_t i;
    if (t == KS_GGUF_FLOAT32) { float v; memcpy(&v, p, 4); *out = v; return 1; }
    if (t == KS_GGUF_FLOAT64) { memcpy(out, p, 8); return 1; }
    if (scalar_int(t, p, &i)) { *out = (double)i; return 1; }
    return 0;
}

ks_status ks_gguf_get_int(const ks_gguf *g, const char *key, int64_t *out) {
    const ks_gguf_kv *kv = ks_gguf_find(g, key);
    if (!kv) return ks_fail(KS_ERR_FORMAT, "%s: required metadata key '%s' is missing", g->file.path, key);
    if (!scalar_int(kv->type, kv->value, out))
        return ks_fail(KS_ERR_FORMAT, "%s: metadata key '%s' must be an integer (GGUF value type %d)",
                       g->file.path, key, (int)kv->type);
    return KS_OK;
}

ks_status ks_gguf_get_float(const ks_gguf *g, const char *key, double *out) {
    const ks_gguf_kv *kv = ks_gguf_find(g, key);
    if (!kv) return ks_fail(KS_ERR_FORMAT, "%s: required metadata key '%s' is missing", g->file.path, key);
    if (!scalar_float(kv->type, kv->value, out))
        return ks_fail(KS_ERR_FORMAT, "%s: metadata key '%s' must be a number (GGUF value type %d)",
                       g->file.path, key, (int)kv->type);
    return KS_OK;
}

/* A string value at p (length prefix then bytes), already bounds-checked at open. */
static const char *str_at(const uint8_t *p, size_t *len) {
    uint64_t n;
    memcpy(&n, p, 8);
    if (len) *len = (size_t)n;
    return (const char *)p + 8;
}

const char *ks_gguf_get_str(const ks_gguf *g, const char *key, size_t *len) {
    const ks_gguf_kv *kv = ks_gguf_find(g, key);
    if (!kv || kv->type != KS_GGUF_STRING) return NULL;
    return str_at(kv->value, len);
}

const char *ks_gguf_arr_str(const ks_gguf_kv *kv, uint64_t i, size_t *len) {
    KS_ASSERT(kv->type == KS_GGUF_ARRAY && kv->arr_type == KS_GGUF_STRING && i < kv->arr_n);
    return str_at(kv->arr_str[i], len);
}

int64_t ks_gguf_arr_int(const ks_gguf_kv *kv, uint64_t i) {
    KS_ASSERT(kv->type == KS_GGUF_ARRAY && i < kv->arr_n);
    int64_t v = 0;
    int ok = scalar_int(kv->arr_type, kv->value + i * scalar_size(kv->arr_type), &v);
    KS_ASSERT(ok);
    return v;
}

double ks_gguf_arr_float(const ks_gguf_kv *kv, uint64_t i) {
    KS_ASSERT(kv->type == KS_GGUF_ARRAY && kv->arr_type != KS_GGUF_STRING && i < kv->arr_n);
    double v = 0;
    int ok = scalar_float(kv->arr_type, kv->value + i * scalar_size(kv->arr_type), &v);
    KS_ASSERT(ok);
    return v;
}

/* ---- tensor directory ----------------------------------------------------------------------------------- */

static ks_status read_tensor_info(cursor *c, ks_gguf_tensor *t, uint64_t index, uint64_t *offset) {
    char what[160];
    snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)index);
    KS_TRY(read_str(c, &t->name, &t->name_len, what));
    snprintf(what, sizeof what, "tensor '%.*s'", (int)(t->name_len < 100 ? t->name_len : 100), t->name);
    uint32_t ndim;
    KS_TRY(read_u32(c, &ndim, what));
    if (ndim < 1 || ndim > GGUF_MAX_DIMS)
        return ks_fail(KS_ERR_FORMAT, "%s: %s has %u dimensions (1..%d allowed)", c->path, what, ndim,
                       GGUF_MAX_DIMS);
    t->ndim = (int)ndim;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < ndim; d++) KS_TRY(read_u64(c, &t->ne[d], what));
    KS_TRY(read_u32(c, &t->ggml_type, what));
    return read_u64(c, offset, what);
}

/* Computes nbytes (when the type is known) and places data; checks divisibility, overflow and bounds. */
static ks_status place_tensor(const ks_gguf *g, ks_gguf_tensor *t, size_t data_start, uint64_t offset) {
    const char *path = g->file.path;
    int nl = (int)(t->name_len < 100 ? t->name_len : 100);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->ne[d] != 0 && numel > UINT64_MAX / 2 / t->ne[d])
            return ks_fail(KS_ERR_FORMAT, "%s: tensor '%.*s' has an impossible shape (overflow)", path, nl,
                           t->name);
        numel *= t->ne[d];
    }
    size_t be, bb;
    if (ks_ggml_type_block(t->ggml_type, &be, &bb)) {
        if (t->ne[0] % be != 0)
            return ks_fail(KS_ERR_FORMAT, "%s: tensor '%.*s': row length %llu is not a multiple of the %s block "
                           "size %zu", path, nl, t->name, (unsigned long long)t->ne[0],
                           ks_ggml_type_name(t->ggml_type), be);
        t->nbytes = (size_t)(numel / be * bb);
    }
    if (offset % g->alignment != 0)
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%.*s' data offset %llu is not a multiple of the alignment %zu",
                       path, nl, t->name, (unsigned long long)offset, g->alignment);
    size_t avail = g->file.size - data_start;
    if (offset > avail || t->nbytes > avail - offset)
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%.*s' data [%llu, %llu) lies beyond the end of the file (data "
                       "section holds %zu bytes; truncated download?)", path, nl, t->name,
                       (unsigned long long)offset, (unsigned long long)(offset + t->nbytes), avail);
    t->data = g->file.data + data_start + offset;
    return KS_OK;
}

const ks_gguf_tensor *ks_gguf_find_tensor(const ks_gguf *g, const char *name) {
    size_t n = strlen(name);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name_len == n && memcmp(g->tensors[i].name, name, n) == 0) return &g->tensors[i];
    return NULL;
}

/* ---- open / close --------------------------------------------------------------------------------------- */

static ks_status read_header(ks_gguf *g, cursor *c) {
    uint32_t magic;
    KS_TRY(read_u32(c, &magic, "the magic number"));
    if (magic != GGUF_MAGIC)
        return ks_fail(KS_ERR_FORMAT, "%s: not a GGUF file (missing 'GGUF' magic)", c->path);
    KS_TRY(read_u32(c, &g->version, "the header"));
    if (g->version != 2 && g->version != 3)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (supported: 2, 3 little-endian;"
                       " re-convert with a current llama.cpp)", c->path, g->version);
    KS_TRY(read_u64(c, &g->n_tensors, "the header"));
    KS_TRY(read_u64(c, &g->n_kv, "the header"));
    /* Each entry takes at least 8+4 bytes: reject absurd counts before allocating. */
    if (g->n_kv > c->size / 12 || g->n_tensors > c->size / 12)
        return ks_fail(KS_ERR_FORMAT, "%s: corrupt GGUF header (%llu tensors, %llu metadata entries in a %zu-byte "
                       "file)", c->path, (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv, c->size);
    return KS_OK;
}

static ks_status read_alignment(ks_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!ks_gguf_find(g, "general.alignment")) return KS_OK;
    int64_t a;
    KS_TRY(ks_gguf_get_int(g, "general.alignment", &a));
    if (a <= 0 || (a & (a - 1)) != 0 || a > (1 << 20))
        return ks_fail(KS_ERR_FORMAT, "%s: metadata key 'general.alignment' = %lld must be a power of two",
                       g->file.path, (long long)a);
    g->alignment = (size_t)a;
    return KS_OK;
}

static ks_status gguf_parse(ks_gguf *g) {
    cursor c = {g->file.data, 0, g->file.size, g->file.path};
    KS_TRY(read_header(g, &c));
    g->kv = ks_calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof *g->kv, "GGUF metadata");
    g->tensors = ks_calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *g->tensors, "GGUF tensor infos");
    uint64_t *offsets = ks_calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *offsets, "GGUF offsets");
    ks_status st = (!g->kv || !g->tensors || !offsets) ? KS_ERR_NOMEM : KS_OK;
    for (uint64_t i = 0; st == KS_OK && i < g->n_kv; i++) st = read_kv(&c, &g->kv[i], i);
    if (st == KS_OK) st = read_alignment(g);
    for (uint64_t i = 0; st == KS_OK && i < g->n_tensors; i++)
        st = read_tensor_info(&c, &g->tensors[i], i, &offsets[i]);
    size_t data_start = st == KS_OK ? (c.pos + g->alignment - 1) / g->alignment * g->alignment : 0;
    if (st == KS_OK && data_start > g->file.size && g->n_tensors > 0)
        st = ks_fail(KS_ERR_FORMAT, "%s: truncated GGUF file: no tensor data after the header", g->file.path);
    for (uint64_t i = 0; st == KS_OK && i < g->n_tensors; i++)
        st = place_tensor(g, &g->tensors[i], data_start, offsets[i]);
    free(offsets);
    return st;
}

ks_status ks_gguf_open(ks_gguf *g, const char *path) {
    memset(g, 0, sizeof *g);
    KS_TRY(ks_file_map(&g->file, path));
    ks_status st = gguf_parse(g);
    if (st != KS_OK) ks_gguf_close(g);
    return st;
}

void ks_gguf_close(ks_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].arr_str);
    free(g->kv);
    free(g->tensors);
    ks_file_unmap(&g->file);
    memset(g, 0, sizeof *g);
}
