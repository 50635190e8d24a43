// block_rows.cuh — the CSR row offsets of a device block list (block_list.h) from its rows' counts, on the device:
// what FlexPrefill's and XAttention's estimations (flex_estimate.cu, sparse_estimate.cu) share so that no list
// crosses to the host.
#pragma once

#include <cub/block/block_scan.cuh>

#include "cuda/common.cuh"

namespace {

constexpr int KS_ROWS_SCAN_THREADS = 1024;

// row_start (rows + 1) = 0, then the running sums of count (rows): one block, each thread a contiguous run of
// rows, the runs' totals scanned across the block. Launch <<<1, KS_ROWS_SCAN_THREADS>>>.
__global__ void ks_rows_scan(int32_t *row_start, const int32_t *count, int rows) {
    using scan = cub::BlockScan<int32_t, KS_ROWS_SCAN_THREADS>;
    __shared__ typename scan::TempStorage tmp;
    const int per = (rows + KS_ROWS_SCAN_THREADS - 1) / KS_ROWS_SCAN_THREADS;
    const int r0 = min((int)threadIdx.x * per, rows), r1 = min(r0 + per, rows);
    int32_t run = 0;
    for (int r = r0; r < r1; r++) run += count[r];
    int32_t at;
    scan(tmp).ExclusiveSum(run, at);
    if (threadIdx.x == 0) row_start[0] = 0;
    for (int r = r0; r < r1; r++) row_start[r + 1] = at += count[r];
}

} // namespace

// The launch of ks_rows_scan on s.
static inline ks_status ks_rows_offsets(int32_t *row_start, const int32_t *count, int rows, cudaStream_t s) {
    ks_rows_scan<<<1, KS_ROWS_SCAN_THREADS, 0, s>>>(row_start, count, rows);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
