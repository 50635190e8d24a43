// rmsnorm.cu — RMSNorm, alone or fused with the residual add that precedes it in every layer.
#include "common.cuh"

// One block per row. ADD: resid += delta first (written back), then the norm of the updated row.
template <typename T, bool ADD>
__global__ void rmsnorm_kernel(T *out, float *resid, const float *delta, const float *w, int D, float eps) {
    __shared__ float red[32];
    ks_pdl_wait(); // launched with ks_launch_pdl: x comes from the kernel before
    ks_pdl_trigger();
    float *x = resid + (int64_t)blockIdx.x * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = x[i];
        if (ADD) {
            v += delta[(int64_t)blockIdx.x * D + i];
            x[i] = v;
        }
        ss += v * v;
    }
    ss = ks_block_sum(ss, red);
    float inv = rsqrtf(ss / D + eps);
    T *o = out + (int64_t)blockIdx.x * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ks_st(o + i, x[i] * inv * w[i]);
}

template <bool ADD>
static ks_status launch(void *out, ks_dtype out_type, float *x, const float *delta, const float *w, int n, int D,
                        float eps, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(out_type));
    if (n <= 0) return KS_OK;
    int threads = D >= 2048 ? 512 : 256;
    if (out_type == KS_DTYPE_F32)
        KS_LAUNCH_PDL(rmsnorm_kernel<float, ADD>, dim3(n), dim3(threads), 0, s, static_cast<float *>(out), x, delta, w, D, eps);
    else
        KS_LAUNCH_PDL(rmsnorm_kernel<bf16, ADD>, dim3(n), dim3(threads), 0, s, static_cast<bf16 *>(out), x, delta, w, D, eps);
    return KS_OK;
}

extern "C" ks_status ks_cuda_rmsnorm(void *out, ks_dtype out_type, const float *x, const float *w, int n, int D,
                                     float eps, cudaStream_t s) {
    // The kernel writes x only when ADD, so the const_cast never turns into a store.
    return launch<false>(out, out_type, const_cast<float *>(x), NULL, w, n, D, eps, s);
}

extern "C" ks_status ks_cuda_add_rmsnorm(void *out, ks_dtype out_type, float *resid, const float *delta,
                                         const float *w, int n, int D, float eps, cudaStream_t s) {
    if (!delta) return launch<false>(out, out_type, resid, NULL, w, n, D, eps, s);
    return launch<true>(out, out_type, resid, delta, w, n, D, eps, s);
}
