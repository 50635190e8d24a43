/* safetensors.c — a Hugging Face checkpoint directory as a ks_tensor_index.
 *
 * A .safetensors file is: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ..., "__metadata__": {...}},
 * then the data; offsets are relative to byte 8+N. Sharded checkpoints list name → file in
 * model.safetensors.index.json ("weight_map"). Every offset is checked against the file size and against
 * dtype × shape, so a truncated or inconsistent file is an error naming the file and tensor, never a crash.
 */
#include "model/tensor_index.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/json.h"

#define INDEX_JSON "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"

static ks_status parse_dtype(const char *file, const char *name, const char *s, ks_dtype *dt, size_t *esize) {
    if (!strcmp(s, "F32")) { *dt = KS_DTYPE_F32; *esize = 4; return KS_OK; }
    if (!strcmp(s, "F16")) { *dt = KS_DTYPE_F16; *esize = 2; return KS_OK; }
    if (!strcmp(s, "BF16")) { *dt = KS_DTYPE_BF16; *esize = 2; return KS_OK; }
    return ks_fail(KS_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype '%s'; supported: F32, F16, BF16 (convert the "
                   "checkpoint to bf16 or use a GGUF file)", file, name, s);
}

/* A non-negative integer held in a JSON number (exact below 2^53, which bounds any real file offset). */
static int json_size(const cJSON *it, uint64_t *out) {
    if (!cJSON_IsNumber(it)) return 0;
    double v = it->valuedouble;
    if (v < 0 || v != floor(v) || v > 9007199254740992.0) return 0;
    *out = (uint64_t)v;
    return 1;
}

static ks_status parse_shape(const char *file, const char *name, const cJSON *shape, ks_tensor_info *t,
                             uint64_t *numel) {
    int n = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : -1;
    if (n < 0 || n > 4)
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s': 'shape' must be an array of at most 4 sizes", file, name);
    t->ndim = n ? n : 1; /* a scalar is stored as shape [1] */
    t->shape[0] = 1;
    *numel = 1;
    for (int d = 0; d < n; d++) {
        uint64_t v;
        if (!json_size(cJSON_GetArrayItem(shape, d), &v) || v > (uint64_t)INT64_MAX)
            return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s': 'shape' entries must be non-negative integers", file,
                           name);
        if (v && *numel > UINT64_MAX / 8 / v)
            return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s': impossible shape (overflow)", file, name);
        t->shape[d] = (int64_t)v;
        *numel *= v;
    }
    return KS_OK;
}

/* One header entry: dtype, shape, data_offsets, checked against the data section [data, data+data_size). */
static ks_status parse_entry(const char *file, const cJSON *e, const uint8_t *data, size_t data_size,
                             ks_tensor_info *t) {
    const char *name = t->name;
    if (!cJSON_IsObject(e))
        return ks_fail(KS_ERR_FORMAT, "%s: header entry '%s' is not an object", file, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype))
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s' has no 'dtype' string", file, name);
    size_t esize = 0;
    uint64_t numel = 0, b = 0, en = 0;
    KS_TRY(parse_dtype(file, name, dtype->valuestring, &t->dtype, &esize));
    KS_TRY(parse_shape(file, name, cJSON_GetObjectItemCaseSensitive(e, "shape"), t, &numel));
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_size(cJSON_GetArrayItem(offs, 0), &b) ||
        !json_size(cJSON_GetArrayItem(offs, 1), &en) || b > en)
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end] with begin <= end",
                       file, name);
    if (en > data_size)
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s' data [%llu, %llu) lies beyond the end of the file (data "
                       "section holds %zu bytes; truncated download?)", file, name, (unsigned long long)b,
                       (unsigned long long)en, data_size);
    if (en - b != numel * esize)
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s' holds %llu bytes but dtype %s x shape needs %llu", file,
                       name, (unsigned long long)(en - b), dtype->valuestring,
                       (unsigned long long)(numel * esize));
    t->data = data + b;
    t->nbytes = (size_t)(en - b);
    return KS_OK;
}

/* Maps ix->files[fi] (already holding the path) and adds every tensor in its header. */
static ks_status read_file(ks_tensor_index *ix, int fi, const char *path) {
    ks_mapped_file *f = &ix->files[fi];
    KS_TRY(ks_file_map(f, path));
    uint64_t hlen = 0;
    if (f->size < 8)
        return ks_fail(KS_ERR_FORMAT, "%s: truncated safetensors file (%zu bytes, no header length)", path,
                       f->size);
    memcpy(&hlen, f->data, 8);
    if (hlen > f->size - 8)
        return ks_fail(KS_ERR_FORMAT, "%s: truncated safetensors header (header length %llu but only %zu bytes "
                       "follow; re-download the file)", path, (unsigned long long)hlen, f->size - 8);
    cJSON *h;
    KS_TRY(ks_json_parse((const char *)f->data + 8, (size_t)hlen, path, &h));
    ks_status st = cJSON_IsObject(h) ? KS_OK
                 : ks_fail(KS_ERR_FORMAT, "%s: safetensors header is not a JSON object", path);
    const uint8_t *data = f->data + 8 + hlen;
    size_t data_size = f->size - 8 - (size_t)hlen;
    for (const cJSON *e = h->child; st == KS_OK && e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        ks_tensor_info *t = ks_tensor_index_add(ix, e->string, strlen(e->string));
        if (!t) st = KS_ERR_NOMEM;
        else {
            t->file = fi;
            st = parse_entry(path, e, data, data_size, t);
        }
    }
    cJSON_Delete(h);
    return st;
}

/* Shard file names from weight_map, each once, in first-seen order; checks each value is a plain name. */
static ks_status shard_names(const cJSON *wm, const char *index_path, const char ***names, int *n) {
    int cap = cJSON_GetArraySize(wm);
    *names = ks_calloc((size_t)(cap ? cap : 1), sizeof **names, "the shard list");
    if (!*names) return KS_ERR_NOMEM;
    *n = 0;
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/'))
            return ks_fail(KS_ERR_FORMAT, "%s: weight_map entry '%s' must name a file in the same directory",
                           index_path, e->string);
        int seen = 0;
        for (int i = 0; i < *n && !seen; i++) seen = !strcmp((*names)[i], e->valuestring);
        if (!seen) (*names)[(*n)++] = e->valuestring;
    }
    if (*n == 0) return ks_fail(KS_ERR_FORMAT, "%s: 'weight_map' is empty", index_path);
    return KS_OK;
}

/* Every weight_map entry must be in the header of the shard it names. */
static ks_status check_weight_map(const ks_tensor_index *ix, const cJSON *wm, const char *index_path) {
    for (const cJSON *e = wm->child; e; e = e->next) {
        const ks_tensor_info *t = ks_tensor_index_find(ix, e->string);
        const char *file = t ? ks_tensor_file(ix, t) : NULL;
        const char *base = file ? strrchr(file, '/') : NULL;
        if (!t || strcmp(base ? base + 1 : file, e->valuestring))
            return ks_fail(KS_ERR_FORMAT, "%s: weight_map puts tensor '%s' in %s, but that file's header does not "
                           "list it (incomplete download?)", index_path, e->string, e->valuestring);
    }
    return KS_OK;
}

static ks_status open_sharded(ks_tensor_index *ix, const char *dir, const char *index_path) {
    cJSON *root;
    KS_TRY(ks_json_load(index_path, &root));
    const char **names = NULL;
    int n = 0;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    ks_status st = cJSON_IsObject(wm) ? KS_OK
                 : ks_fail(KS_ERR_FORMAT, "%s: required object 'weight_map' is missing", index_path);
    if (st == KS_OK) st = shard_names(wm, index_path, &names, &n);
    if (st == KS_OK) {
        ix->files = ks_calloc((size_t)n, sizeof *ix->files, "the shard mappings");
        if (!ix->files) st = KS_ERR_NOMEM;
        else ix->n_files = n;
    }
    for (int i = 0; st == KS_OK && i < n; i++) {
        char path[PATH_MAX];
        st = read_file(ix, i, ks_path_join(path, sizeof path, dir, names[i]));
    }
    if (st == KS_OK) st = ks_tensor_index_finish(ix, index_path);
    if (st == KS_OK) st = check_weight_map(ix, wm, index_path);
    free(names);
    cJSON_Delete(root);
    return st;
}

ks_status ks_tensor_index_open_hf(ks_tensor_index *ix, const char *model_dir) {
    memset(ix, 0, sizeof *ix);
    char index_path[PATH_MAX], single[PATH_MAX];
    ks_path_join(index_path, sizeof index_path, model_dir, INDEX_JSON);
    ks_path_join(single, sizeof single, model_dir, SINGLE_FILE);
    ks_status st;
    if (ks_file_exists(index_path)) {
        st = open_sharded(ix, model_dir, index_path);
    } else if (ks_file_exists(single)) {
        ix->files = ks_calloc(1, sizeof *ix->files, "the tensor index");
        st = ix->files ? KS_OK : KS_ERR_NOMEM;
        if (st == KS_OK) {
            ix->n_files = 1;
            st = read_file(ix, 0, single);
        }
        if (st == KS_OK) st = ks_tensor_index_finish(ix, single);
    } else {
        st = ks_fail(KS_ERR_IO, "%s: no " SINGLE_FILE " or " INDEX_JSON " (kvscope reads safetensors "
                     "checkpoints or .gguf files; convert .bin/.pth weights first)", model_dir);
    }
    if (st != KS_OK) ks_tensor_index_free(ix);
    return st;
}
