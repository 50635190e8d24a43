// tma.cu — host side of tma.cuh: tensor-map encoding through the driver entry point that the runtime hands
// out (so that nothing links against libcuda directly).
#include <cudaTypedefs.h>

#include "tma.cuh"

ks_status ks_tma_map_bf16_3d(CUtensorMap *map, const void *base, const uint64_t dims[3], const uint64_t strides[2],
                             const uint32_t box[3]) {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = NULL; // looked up once per process
    if (!encode) {
        cudaDriverEntryPointQueryResult q;
        void *fn = NULL;
        CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
        if (q != cudaDriverEntryPointSuccess || !fn)
            return ks_fail(KS_ERR_DEVICE, "CUDA driver: no cuTensorMapEncodeTiled (driver too old for TMA?)");
        encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    const cuuint64_t d[3] = {dims[0], dims[1], dims[2]}, st[2] = {strides[0], strides[1]};
    const cuuint32_t bx[3] = {box[0], box[1], box[2]}, es[3] = {1, 1, 1};
    CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void *>(base), d, st, bx, es,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return ks_fail(KS_ERR_DEVICE, "cuTensorMapEncodeTiled failed (error %d): dims %llu x %llu x %llu, box %u x %u",
                       (int)r, (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)dims[2],
                       box[0], box[1]);
    return KS_OK;
}
