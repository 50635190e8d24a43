// random.cu — deterministic uniform random fill of a device array (the random-weight benchmark model is
// built on the GPU without any host copy: 16 GB of Llama-3.1-8B weights take milliseconds).
#include "common.cuh"

// splitmix64 of (seed, index): every element is independent of the launch shape, so a fill is reproducible.
__device__ __forceinline__ float uniform01(uint64_t seed, int64_t i) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f); // [0, 1)
}

template <typename T>
__global__ void fill_uniform_kernel(T *p, int64_t n, float lo, float hi, uint64_t seed) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        ks_st(p + i, lo + (hi - lo) * uniform01(seed, i));
}

extern "C" ks_status ks_cuda_fill_uniform(void *p, ks_dtype type, int64_t n, float lo, float hi, uint64_t seed,
                                          cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(type));
    if (n <= 0) return KS_OK;
    int64_t b = (n + 255) / 256;
    int grid = (int)(b < 16384 ? b : 16384);
    if (type == KS_DTYPE_F32)
        fill_uniform_kernel<<<grid, 256, 0, s>>>(static_cast<float *>(p), n, lo, hi, seed);
    else
        fill_uniform_kernel<<<grid, 256, 0, s>>>(static_cast<bf16 *>(p), n, lo, hi, seed);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
