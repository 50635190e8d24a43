// common.cuh — what every kernels/cuda/*.cu file shares: the checked-call macros, bf16 helpers, warp and
// block reductions, and the dtype dispatch of the launchers.
//
//     CUDA_CHECK(cudaMemsetAsync(p, 0, n, s));     // on failure: records the message, returns KS_ERR_DEVICE
//     my_kernel<<<grid, block, 0, s>>>(...);
//     KS_LAUNCH_CHECK();                           // the launch's own error (bad config, no device)
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cublasLt.h>
#include <nccl.h>
#include <stdint.h>

#include "cuda/ks_cuda.h"

// ---- checked calls (on top of KS_CHECK_GEN from core/status.h) ------------------------------------------
#define CUDA_CHECK(expr) KS_CHECK_GEN(expr, cudaSuccess, KS_ERR_DEVICE, "CUDA", cudaGetErrorString)
#define CUBLAS_CHECK(expr)                                                                                   \
    KS_CHECK_GEN(expr, CUBLAS_STATUS_SUCCESS, KS_ERR_DEVICE, "cuBLASLt", cublasLtGetStatusString)
#define NCCL_CHECK(expr) KS_CHECK_GEN(expr, ncclSuccess, KS_ERR_DEVICE, "NCCL", ncclGetErrorString)
// After a <<<...>>> launch: reports a launch failure (asynchronous faults surface at the next sync).
#define KS_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

typedef __nv_bfloat16 bf16;

static inline int ks_cdiv(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

// ---- bf16 helpers ---------------------------------------------------------------------------------------
// Scalar load/store of an activation that is fp32 or bf16, so one kernel template serves both.
__device__ __forceinline__ float ks_ld(const float *p) { return *p; }
__device__ __forceinline__ float ks_ld(const bf16 *p) { return __bfloat162float(*p); }
// The same past L1 (ld.global.cg): for data another block or the kernel just before may have written.
__device__ __forceinline__ float ks_ld_l2(const float *p) { return __ldcg(p); }
__device__ __forceinline__ float ks_ld_l2(const bf16 *p) {
    return __bfloat162float(__ushort_as_bfloat16(__ldcg(reinterpret_cast<const unsigned short *>(p))));
}
__device__ __forceinline__ void ks_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void ks_st(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

// 8 bf16 in one 16-byte word <-> 8 floats (16-byte loads/stores are the fast path on Hopper).
__device__ __forceinline__ void ks_unpack8(uint4 w, float f[8]) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&w);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ uint4 ks_pack8(const float f[8]) {
    uint4 w;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&w);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return w;
}
// Two floats -> one 32-bit register of two bf16 (lo in the low half), as mma.sync operands want them.
__device__ __forceinline__ uint32_t ks_pack2(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

// ---- reductions -----------------------------------------------------------------------------------------
__device__ __forceinline__ float ks_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float ks_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over the quad of lanes that share a row of an mma/wgmma accumulator (lanes 4r .. 4r + 3): every one
// of them gets it.
template <typename T>
__device__ __forceinline__ T ks_quad_sum(T v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. `red` is
// 32 floats of shared memory; the function synchronizes, so it may be called repeatedly with one buffer.
__device__ __forceinline__ float ks_block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = ks_warp_sum(v);
    __syncthreads(); // a previous call's readers are done with `red`
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return ks_warp_sum(v);
}

// The classic last-block reduction: whether the calling block is the last of the grid to get here, every block's
// writes before the call then visible to it. done: a device counter at 0 before the launch, left at 0 (the last
// block resets it once every block has counted, ready for the next launch, which the stream orders after this
// one). Every thread of every block must call it.
__device__ __forceinline__ bool ks_last_block(unsigned *done) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(done, 1u) == gridDim.x * gridDim.y * gridDim.z - 1;
        if (last) *done = 0u;
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

// ---- programmatic dependent launch (Hopper) ---------------------------------------------------------------
// A kernel launched with ks_launch_pdl may begin while the kernel before it in the stream is still running:
// the previous one lets it start with ks_pdl_trigger(), and it must call ks_pdl_wait() — which returns once
// every earlier kernel has completed and its writes are visible — before it reads anything they write or
// writes anything they read. Only immutable data (weights) may be touched before the wait. Every block must
// reach the wait (also blocks with nothing to do), or the kernel could complete before its predecessor and let
// the next kernel see that predecessor's output half-written. In a decode step of ~10 small kernels per layer
// this hides each launch and lets a GEMV's weights stream in while the kernel before it finishes. Launched
// without the attribute (or before sm_90) both calls are no-ops and the stream orders kernels as usual.
__device__ __forceinline__ void ks_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void ks_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether the current device runs programmatic dependent launches (compute capability 9.0+), asked once;
// KS_CUDA_NO_PDL=1 in the environment turns them off (a diagnostic: docs/kernels.md measures both).
static inline bool ks_pdl_supported() {
    static int major = -1;
    if (major < 0) {
        int dev = 0;
        const char *off = getenv("KS_CUDA_NO_PDL");
        if ((off && *off && *off != '0') || cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
            major = 0;
    }
    return major >= 9;
}

// kernel<<<grid, block, smem, s>>>(args...) with the programmatic-serialisation attribute where supported: on
// sm_90+ and on a created stream (the legacy default stream 0 keeps its implicit full synchronisation).
template <typename... Params, typename... Args>
static inline cudaError_t ks_launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                        Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr, cfg.numAttrs = s && ks_pdl_supported() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}
#define KS_LAUNCH_PDL(...) CUDA_CHECK(ks_launch_pdl(__VA_ARGS__))

// ---- dtype dispatch in launchers ------------------------------------------------------------------------
// True for the activation types the launchers accept.
static inline bool ks_cuda_type_ok(ks_dtype t) { return t == KS_DTYPE_F32 || t == KS_DTYPE_BF16; }
