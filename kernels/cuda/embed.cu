// embed.cu — embedding gather: out (n, D) = table (V, D, bf16) rows tokens[t], as fp32 or bf16.
#include "common.cuh"

// One block per token; threads stride over the row.
template <typename T>
__global__ void embed_kernel(T *out, const int32_t *tokens, const bf16 *table, int D) {
    ks_pdl_wait(); // launched with ks_launch_pdl (tokens may come from the kernel before)
    ks_pdl_trigger();
    const bf16 *row = table + (int64_t)tokens[blockIdx.x] * D;
    T *o = out + (int64_t)blockIdx.x * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ks_st(o + i, __bfloat162float(row[i]));
}

extern "C" ks_status ks_cuda_embed(void *out, ks_dtype out_type, const int32_t *tokens, int n, const ks_bf16 *table,
                                   int D, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(out_type));
    if (n <= 0) return KS_OK;
    const bf16 *tb = reinterpret_cast<const bf16 *>(table);
    if (out_type == KS_DTYPE_F32)
        KS_LAUNCH_PDL(embed_kernel<float>, dim3(n), dim3(256), 0, s, static_cast<float *>(out), tokens, tb, D);
    else
        KS_LAUNCH_PDL(embed_kernel<bf16>, dim3(n), dim3(256), 0, s, static_cast<bf16 *>(out), tokens, tb, D);
    return KS_OK;
}
