/* tensor_index.h — the tensors of a checkpoint, whatever the file format, by Hugging Face name.
 *
 * A ks_tensor_index maps canonical HF names ("model.layers.3.self_attn.q_proj.weight") to the raw bytes in
 * memory-mapped files, with dtype and shape. It is filled by the safetensors reader (single file or sharded
 * via model.safetensors.index.json) or by the GGUF reader (which renames GGUF tensors to HF names and
 * reverses GGUF dimension order, so shape[0] is always the outermost dimension as in PyTorch).
 *
 *     ks_tensor_index ix = {0};
 *     KS_TRY(ks_tensor_index_open_hf(&ix, "/models/llama"));     // or ks_tensor_index_open_gguf(&ix, f.gguf)
 *     const ks_tensor_info *t = ks_tensor_index_find(&ix, "model.norm.weight");
 *     KS_TRY(ks_tensor_to_f32(t, dst, n));                         // any dtype -> fp32 (dequantizes)
 *     ks_tensor_index_free(&ix);
 */
#ifndef KS_TENSOR_INDEX_H
#define KS_TENSOR_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "core/file.h"
#include "core/status.h"

typedef enum ks_dtype {
    KS_DTYPE_F32,
    KS_DTYPE_F16,
    KS_DTYPE_BF16,
    KS_DTYPE_Q8_0,
    KS_DTYPE_Q4_0,
    KS_DTYPE_Q4_1,
    KS_DTYPE_Q4_K,
    KS_DTYPE_Q6_K,
} ks_dtype;

const char *ks_dtype_name(ks_dtype t);

typedef struct ks_tensor_info {
    char *name;          /* owned; canonical HF name */
    char *file_name;     /* owned; the name in the file where it differs (GGUF "blk.0.attn_q.weight"), else NULL */
    ks_dtype dtype;
    int ndim;            /* 1..4 */
    int64_t shape[4];    /* PyTorch order: shape[0] outermost, shape[ndim-1] contiguous */
    const uint8_t *data; /* borrowed from the mapped file */
    size_t nbytes;
    int file;            /* index into ks_tensor_index.files */
} ks_tensor_info;

typedef struct ks_tensor_index {
    ks_tensor_info *tensors; /* (n) owned */
    int n;
    ks_mapped_file *files;   /* (n_files) owned mappings */
    int n_files;
    int *by_name;            /* (n) owned: tensor indices sorted by name, for ks_tensor_index_find */
    int cap;                 /* allocated entries in `tensors` */
    int gguf;                /* 1: read from a GGUF file, which names tensors its own way */
} ks_tensor_index;

ks_status ks_tensor_index_open_hf(ks_tensor_index *ix, const char *model_dir);
ks_status ks_tensor_index_open_gguf(ks_tensor_index *ix, const char *gguf_path);
void ks_tensor_index_free(ks_tensor_index *ix);

const ks_tensor_info *ks_tensor_index_find(const ks_tensor_index *ix, const char *name);
int64_t ks_tensor_numel(const ks_tensor_info *t);

/* Converts/dequantizes the whole tensor to fp32 (dst holds numel floats). */
ks_status ks_tensor_to_f32(const ks_tensor_info *t, float *dst);

/* A row is shape[ndim-1] contiguous elements (a whole number of quantization blocks). Converts rows
 * [row0, row0+nrows) to fp32 into dst (nrows*row_len floats). Thread-safe: used by parallel loaders. */
int64_t ks_tensor_row_len(const ks_tensor_info *t);
void ks_tensor_rows_to_f32(const ks_tensor_info *t, int64_t row0, int64_t nrows, float *dst);

/* "file.safetensors" / "model.gguf": the file a tensor lives in, for messages. */
const char *ks_tensor_file(const ks_tensor_index *ix, const ks_tensor_info *t);

/* A tensor as messages name it: as its file does, so the user can find it there. "'blk.0.attn_q.weight'
 * (model.layers.0.self_attn.q_proj.weight)" for a GGUF, "'model.norm.weight'" for safetensors. `name` is the HF
 * name and need not be in the index (a missing tensor: its GGUF name is derived). Returns buf. */
const char *ks_tensor_label(const ks_tensor_index *ix, const char *name, char *buf, size_t cap);

/* The GGUF name of HF tensor name `hf` (the inverse of the GGUF reader's renaming; other names unchanged). */
void ks_gguf_tensor_name(const char *hf, char *out, size_t cap);

/* ---- building an index (the safetensors and GGUF readers) ---- */
/* Appends a zeroed entry named name[0..len) (copied); NULL with KS_ERR_NOMEM recorded. */
ks_tensor_info *ks_tensor_index_add(ks_tensor_index *ix, const char *name, size_t len);
/* Builds the name lookup; a name present twice is KS_ERR_FORMAT naming `what`. */
ks_status ks_tensor_index_finish(ks_tensor_index *ix, const char *what);

#endif
