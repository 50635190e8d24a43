/* quant_impl.h — what quant.c and quant_avx2.c share (not part of the public interface quant.h): the shape of a
 * dot kernel and the AVX2 kernel table. */
#ifndef KS_KERNELS_QUANT_IMPL_H
#define KS_KERNELS_QUANT_IMPL_H

#include "cpu/quant.h"

/* One weight row (nb * 32 elements in its block encoding, starting at w) dotted with nb activation blocks. */
typedef float (*ks_quant_dot_fn)(const uint8_t *w, const ks_qa_block *a, int64_t nb);

/* The AVX2 + FMA + F16C kernel for weight type t (a type ks_quant_supports); call only where the CPU has them. */
ks_quant_dot_fn ks_quant_avx2_kernel(ks_dtype t);

/* ks_quant_act with AVX2 (the same blocks as ks_quant_act_c); call only where the CPU has it. */
void ks_quant_act_avx2(ks_qa_block *dst, const float *x, int64_t n);

#endif
