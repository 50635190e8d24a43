/* cuda_check.h — CUDA_CHECK for the C files that call the CUDA runtime (the CUDA backend, the benchmark):
 * on failure it records "CUDA failed: <error> (<expr> at file:line)" and returns KS_ERR_DEVICE from the
 * enclosing function (core/status.h KS_CHECK_GEN; kernels/cuda/common.cuh defines the same for .cu files).
 *
 *     CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
 */
#ifndef KS_CUDA_CHECK_H
#define KS_CUDA_CHECK_H

#include <cuda_runtime_api.h>

#include "core/status.h"

#define CUDA_CHECK(expr) KS_CHECK_GEN(expr, cudaSuccess, KS_ERR_DEVICE, "CUDA", cudaGetErrorString)

#endif
