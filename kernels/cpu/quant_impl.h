/* quant_impl.h — what quant.c and quant_avx2.c share (not part of the public interface quant.h): the shape of a
 * dot kernel and the AVX2 kernel table. */
#ifndef KS_KERNELS_QUANT_IMPL_H
#define KS_KERNELS_QUANT_IMPL_H

#include "cpu/quant.h"

/* One weight row (nb * 32 elements in its block encoding, starting at w) dotted with nb activation blocks. */
typedef float (*ks_quant_dot_fn)(const uint8_t *w, const ks_qa_block *a, int64_t nb);

/* Four weight rows (w, w + row_bytes, ..) dotted with the same nb activation blocks into out[0..4): one load
 * of each activation block serves the four, and their integer sums share one conversion and one scale FMA. */
typedef void (*ks_quant_dot4_fn)(const uint8_t *w, size_t row_bytes, const ks_qa_block *a, int64_t nb, float *out);

/* The AVX2 + FMA + F16C kernel for weight type t (a type ks_quant_supports); call only where the CPU has them. */
ks_quant_dot_fn ks_quant_avx2_kernel(ks_dtype t);

/* The four-row AVX2 kernel for weight type t, or NULL where t has none (rows then go one at a time). */
ks_quant_dot4_fn ks_quant_avx2_kernel4(ks_dtype t);

/* ks_quant_act with AVX2 (the same blocks as ks_quant_act_c); call only where the CPU has it. */
void ks_quant_act_avx2(ks_qa_block *dst, const float *x, int64_t n);

#endif
