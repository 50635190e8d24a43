// tma.cuh — Hopper (sm_90) asynchronous-copy plumbing for warp-specialised kernels: shared-memory mbarriers
// (init, arrive, arrive with an expected byte count, parity wait), the bulk tensor copy engine (TMA) loading a
// 3-D box into shared memory and completing on an mbarrier, named barriers, and the host-side encoding of a
// tensor map through the driver entry point (no link against libcuda).
//
// A producer/consumer ring of S stages uses two barriers per stage:
//     full[s]  (count 1):  the producer's arrive_expect_tx(bytes) + the TMA bytes landing complete it;
//     empty[s] (count C):  each of the C consumers arrives once it has finished reading the stage.
// Load t uses stage t % S in round t / S; consumers wait full with parity (t / S) & 1, the producer waits
// empty with parity ((t / S) & 1) ^ 1 (a fresh barrier counts its "previous" phase as complete, so the
// first round passes at once).
#pragma once

#include <cuda.h>

#include "common.cuh"

__device__ __forceinline__ void ks_mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the async proxy (TMA) and the other threads (with a barrier after).
__device__ __forceinline__ void ks_mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void ks_mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void ks_mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Spins until the phase of parity `parity` of the barrier has completed.
__device__ __forceinline__ void ks_mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}

// TMA: the box at coordinates (c0, c1, c2) of the tensor map (a __grid_constant__ kernel parameter) into
// shared memory at dst (1024-byte aligned for the 128-byte swizzle), completing `bar`'s transaction bytes.
// Elements outside the tensor's extents arrive as zeros.
__device__ __forceinline__ void ks_tma_load_3d(uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2,
                                               uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
                 "%3, %4}], [%5];\n" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
}

// Named barrier (id 1..15; 0 is __syncthreads): waits until `count` threads, a multiple of 32, have reached it.
__device__ __forceinline__ void ks_named_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

// Host: a tensor map over a bf16 array of extents dims[0] (contiguous) x dims[1] x dims[2] with byte strides
// strides[0] (of dim 1) and strides[1] (of dim 2), loaded in boxes of box[0] x box[1] x box[2] elements with
// the 128-byte swizzle (box[0] * 2 must be 128). Returns KS_ERR_DEVICE with a message if the driver refuses.
ks_status ks_tma_map_bf16_3d(CUtensorMap *map, const void *base, const uint64_t dims[3], const uint64_t strides[2],
                             const uint32_t box[3]);
