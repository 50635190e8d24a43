/* dequant.h — fp32 conversion of every tensor encoding the loader supports: 16-bit floats and GGML blocks.
 *
 *     size_t be = ks_dtype_block_elems(KS_DTYPE_Q4_K);          // 256 elements per 144-byte block
 *     ks_dequant(KS_DTYPE_Q4_K, row_bytes, out, n);             // n a multiple of be
 *
 * The block layouts and arithmetic follow ggml's dequantize_row_* (ggml-quants.c) operation for operation, so
 * results match llama.cpp and gguf-py's `gguf.quants.dequantize` bit for bit (tests/check_model.c).
 */
#ifndef KS_DEQUANT_H
#define KS_DEQUANT_H

#include <stddef.h>
#include <stdint.h>

#include "model/tensor_index.h"

float ks_fp16_to_f32(uint16_t h);
float ks_bf16_to_f32(uint16_t b);

/* Elements per block and bytes per block (1 and the element size for F32/F16/BF16). */
size_t ks_dtype_block_elems(ks_dtype t);
size_t ks_dtype_block_bytes(ks_dtype t);

/* Q4_K's j-th (0..7) 6-bit sub-block scale and min, packed into its 12 scale bytes (ggml's get_scale_min_k4). */
void ks_q4_k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m);

/* Converts n elements (a whole number of blocks) starting at src to fp32 in dst. */
void ks_dequant(ks_dtype t, const uint8_t *src, float *dst, size_t n);

#endif
