// mma.cuh — the warp-level tensor-core and async-copy primitives the attention kernels share (sm_80+ PTX,
// fine on sm_90): cp.async 16-byte copies, ldmatrix, mma.sync m16n8k16 bf16 or fp16 -> fp32, fast exp2, and the
// swizzled shared-memory tile layout that keeps ldmatrix free of bank conflicts.
#pragma once

#include "common.cuh"

// 16-byte global -> shared copy that bypasses L1; when `valid` is false the destination is zero-filled and
// nothing is read (src must still be a mapped address).
__device__ __forceinline__ void ks_cp_async16(void *smem, const void *gmem, bool valid) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
// The same with a shared-window address (as ks_smem_addr returns).
__device__ __forceinline__ void ks_cp_async16_s(uint32_t smem, const void *gmem, bool valid) {
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void ks_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void ks_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 b16 matrices; lane l supplies the row address (a shared-window address, see ks_smem_addr) of
// matrix l / 8, row l % 8.
__device__ __forceinline__ uint32_t ks_smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void ks_ldmatrix_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ks_ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// c (16x8 fp32) += a (16x16 bf16, row-major fragment) * b (16x8 bf16, column-major fragment).
__device__ __forceinline__ void ks_mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#pragma nv_diag_suppress 550 // the dropped rows' results are set and never read, by design
// The same with fp16 operands (a KIVI tile dequantized to fp16: its codes' scale and zero are fp16 already)
// and an A whose rows 8 .. 15 are zero (a0, a2: rows 0 .. 7): c (rows 0 .. 7 of the 16x8 result, c[0], c[1] as
// an m16n8 accumulator's) += a b; the zero rows' results are dropped, so they hold no registers.
__device__ __forceinline__ void ks_mma_f16_rows8(float c[2], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
    float drop[2];
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%10, %11, %12, %12};\n"
                 : "=f"(c[0]), "=f"(c[1]), "=f"(drop[0]), "=f"(drop[1])
                 : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(0.0f));
}
#pragma nv_diag_default 550

// 2^x with the hardware approximation (relative error ~2^-22; 2^-inf = 0), the softmax's exponential.
__device__ __forceinline__ float ks_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Element offset of (row, col) in a shared tile of rows of D bf16 (D a multiple of 64), col a multiple of
// 8: the 16-byte chunk index is XORed with row % 8, so the 8 rows an ldmatrix phase reads (same logical
// chunk, consecutive rows) land in 8 different bank groups. Used by the cp.async writers; the ldmatrix
// readers compute the same layout incrementally (see ks_swz_lane).
template <int D>
__device__ __forceinline__ int ks_swz(int row, int col) {
    return row * D + ((((col >> 3) ^ row) & 7) | ((col >> 3) & ~7)) * 8;
}

// For an ldmatrix reader whose lane reads row r (r % 8 == row8) at 16-byte chunk 2 * kk + half, the byte
// offset inside the row is ((2 * kk) ^ (half ^ row8)) * 16 = (kk << 5) ^ ks_swz_lane(half, row8): one XOR
// with an immediate per k-step, no per-k-step registers.
__device__ __forceinline__ uint32_t ks_swz_lane(int half, int row8) { return (uint32_t)((half ^ row8) << 4); }

// This lane's ldmatrix row address (shared window) and XOR term (ks_swz_lane) in a swizzled tile of rows of
// D bf16, for ks_mma_abt: as its A operand, the warp's rows from row0 (row row0 + lane % 16, chunk half
// lane / 16); as its B operand (row lane % 8 + (lane / 16) * 8, chunk half (lane / 8) % 2).
template <int D>
__device__ __forceinline__ void ks_abt_a_lane(const void *tile, int row0, uint32_t *addr, uint32_t *x) {
    const int lane = threadIdx.x & 31;
    *addr = ks_smem_addr(tile) + (uint32_t)(row0 + (lane & 15)) * D * 2, *x = ks_swz_lane(lane >> 4, lane & 7);
}
template <int D>
__device__ __forceinline__ void ks_abt_b_lane(const void *tile, uint32_t *addr, uint32_t *x) {
    const int lane = threadIdx.x & 31;
    *addr = ks_smem_addr(tile) + (uint32_t)((lane & 7) + (lane >> 4) * 8) * D * 2;
    *x = ks_swz_lane((lane >> 3) & 1, lane & 7);
}

// sc = A B^T for one warp: 32 rows of A (two m16 slabs) against BN rows of B, over D, both swizzled shared
// tiles with rows of D bf16 (ks_swz), read through ldmatrix at this lane's row addresses with their XOR
// terms (ks_abt_a_lane, ks_abt_b_lane; B's at the tile's row 0). sc[s][j] is the m16n8 accumulator of slab s
// and B rows 8j .. 8j + 7 (attention: S = Q K^T; the H2O scores: S^T = K Q^T).
template <int D, int BN>
__device__ __forceinline__ void ks_mma_abt(float sc[2][BN / 8][4], uint32_t a_addr, uint32_t a_x, uint32_t b_addr,
                                           uint32_t b_x) {
    constexpr uint32_t kRow = D * 2;
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) sc[s][j][c] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t af[2][4], bf[4];
#pragma unroll
        for (int s = 0; s < 2; s++) ks_ldmatrix_x4(af[s], a_addr + s * 16 * kRow + ((kk << 5) ^ a_x));
#pragma unroll
        for (int np = 0; np < BN / 16; np++) {
            ks_ldmatrix_x4(bf, b_addr + np * 16 * kRow + ((kk << 5) ^ b_x));
#pragma unroll
            for (int s = 0; s < 2; s++) {
                ks_mma_bf16(sc[s][2 * np], af[s], bf[0], bf[1]);
                ks_mma_bf16(sc[s][2 * np + 1], af[s], bf[2], bf[3]);
            }
        }
    }
}
