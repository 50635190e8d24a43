// attention_prefill_sparse.cu — the block-sparse causal prefill launchers (ks_cuda.h): the checks of the block
// list against the call, then the prefill kernels with the ks_sparse_cta policy (attention_prefill_sparse.cuh):
// the wgmma kernel for head dim 128 on Hopper, the mma.sync kernel otherwise.
#include "attention_prefill_sparse.cuh"

namespace {

// The head dim and block size the kernels have (a clear error: both come from a model or a method's options),
// the list's shape against the call (a programmer error), and the device view of the list.
ks_status sparse_list_of(const ks_block_list *l, int n, int H, int d, int q_pos0, ks_sparse_list *v) {
    if (d != 64 && d != 128)
        return ks_fail(KS_ERR_UNSUPPORTED, "block-sparse prefill attention on CUDA needs head_dim 64 or 128, not %d",
                       d);
    if (l->block != 64 && l->block != 128)
        return ks_fail(KS_ERR_UNSUPPORTED,
                       "block-sparse prefill attention on CUDA needs a block size of 64 or 128 tokens, not %d",
                       l->block);
    KS_ASSERT(l->H == H && l->qb0 == q_pos0 / l->block && l->n_qblocks == ks_block_rows_of(q_pos0, n, l->block));
    KS_ASSERT(l->row_start && l->cols);
    v->row_start = l->row_start, v->cols = l->cols;
    v->block = l->block, v->qb0 = l->qb0, v->n_qblocks = l->n_qblocks;
    return KS_OK;
}

} // namespace

extern "C" ks_status ks_cuda_attention_prefill_sparse(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q,
                                                      const ks_bf16 *kc, const ks_bf16 *vc, int n, int n_kv, int cap,
                                                      int H, int Hk, int d, int q_pos0, int window, float scale,
                                                      float *lse, const ks_block_list *l, cudaStream_t s) {
    if (n <= 0) return KS_OK;
    ks_sparse_list v;
    KS_TRY(sparse_list_of(l, n, H, d, q_pos0, &v));
    const prefill_args a =
        ks_prefill_make_args(out, ld_o, q, ld_q, kc, vc, n, n_kv, cap, H, Hk, d, q_pos0, window, scale, lse);
    if (d == 128 && ks_device_major() == 9) return ks_prefill_sparse_launch_sm90(a, v, Hk, s);
    return ks_prefill_sparse_launch_sm80(a, v, d, s);
}

extern "C" ks_status ks_cuda_attention_prefill_sparse_sm80(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q,
                                                           int64_t ld_q, const ks_bf16 *kc, const ks_bf16 *vc, int n,
                                                           int n_kv, int cap, int H, int Hk, int d, int q_pos0,
                                                           int window, float scale, float *lse,
                                                           const ks_block_list *l, cudaStream_t s) {
    if (n <= 0) return KS_OK;
    ks_sparse_list v;
    KS_TRY(sparse_list_of(l, n, H, d, q_pos0, &v));
    const prefill_args a =
        ks_prefill_make_args(out, ld_o, q, ld_q, kc, vc, n, n_kv, cap, H, Hk, d, q_pos0, window, scale, lse);
    return ks_prefill_sparse_launch_sm80(a, v, d, s);
}
