// gemm.cu — y = x W^T (+ bias) (+ y) through cuBLASLt, bf16 operands, fp32 accumulation.
//
// Transposes: row-major y (n, out) is column-major y^T (out, n) = W x^T. Row-major W (out, in) read as
// column-major is W^T (in, out) with ld = in, so A = W with op T; row-major x (n, in) is column-major x^T
// (in, n), so B = x with op N. That is cuBLAS's "TN" case, the one its bf16 kernels are fastest at.
#include <string.h>

#include "common.cuh"

enum { kPlans = 64 };

// Everything a cuBLASLt matmul needs besides the pointers; built on a shape's first call, reused after.
struct gemm_plan {
    int n, in, out, align; // align: the largest power of two <= 256 dividing every pointer
    int64_t ld_x, ld_y;    // row strides of x and y in elements
    ks_dtype y_type;
    bool bias, accumulate, used;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

struct ks_cuda_gemm {
    cublasLtHandle_t lt;
    void *ws; // device workspace, ws_bytes
    size_t ws_bytes;
    gemm_plan plans[kPlans];
    int next; // the slot replaced on the next miss (round robin once all are used)
};

static void plan_release(gemm_plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

static ks_status plan_build(ks_cuda_gemm *g, gemm_plan *p) {
    cudaDataType_t yt = p->y_type == KS_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (p->bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, p->in, p->out, p->in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, p->in, p->n, p->ld_x));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, yt, p->out, p->n, p->ld_y));

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint32_t al = (uint32_t)p->align;
    cublasLtMatmulPreferenceAttributes_t attrs[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &g->ws_bytes, sizeof g->ws_bytes);
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0] && st == CUBLAS_STATUS_SUCCESS; i++)
        st = cublasLtMatmulPreferenceSetAttribute(pref, attrs[i], &al, sizeof al);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(g->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    CUBLAS_CHECK(st);
    if (found == 0)
        return ks_fail(KS_ERR_DEVICE, "cuBLASLt: no algorithm for y (%d, %d) = x W^T with in = %d (%s output%s)",
                       p->n, p->out, p->in, p->y_type == KS_DTYPE_F32 ? "fp32" : "bf16", p->bias ? ", bias" : "");
    p->algo = res.algo;
    return KS_OK;
}

static int pointer_align(const void *const *ptrs, int count) {
    uintptr_t bits = 256;
    for (int i = 0; i < count; i++) bits |= (uintptr_t)ptrs[i]; // NULL (no bias) adds no bits
    return (int)(bits & (~bits + 1)); // lowest set bit, at most 256
}

static ks_status gemm_setup(ks_cuda_gemm *g, size_t workspace_bytes) {
    g->ws_bytes = workspace_bytes;
    CUBLAS_CHECK(cublasLtCreate(&g->lt));
    if (workspace_bytes) CUDA_CHECK(cudaMalloc(&g->ws, workspace_bytes));
    return KS_OK;
}

extern "C" ks_status ks_cuda_gemm_init(ks_cuda_gemm_t **out, size_t workspace_bytes) {
    *out = NULL;
    ks_cuda_gemm *g = static_cast<ks_cuda_gemm *>(ks_calloc(1, sizeof *g, "cuBLASLt plan cache"));
    if (!g) return KS_ERR_NOMEM;
    ks_status st = gemm_setup(g, workspace_bytes);
    if (st != KS_OK) {
        ks_cuda_gemm_free(g);
        return st;
    }
    *out = g;
    return KS_OK;
}

extern "C" void ks_cuda_gemm_free(ks_cuda_gemm_t *g) {
    if (!g) return;
    for (int i = 0; i < kPlans; i++) plan_release(&g->plans[i]);
    if (g->ws) cudaFree(g->ws);
    if (g->lt) cublasLtDestroy(g->lt);
    free(g);
}

extern "C" ks_status ks_cuda_gemm_run(ks_cuda_gemm_t *g, void *y, ks_dtype y_type, const ks_bf16 *x,
                                      const ks_bf16 *w, const void *bias, int n, int in, int out, float beta,
                                      cudaStream_t s) {
    return ks_cuda_gemm_run_ld(g, y, out, y_type, x, in, w, bias, n, in, out, beta, s);
}

extern "C" ks_status ks_cuda_gemm_run_ld(ks_cuda_gemm_t *g, void *y, int64_t ld_y, ks_dtype y_type, const ks_bf16 *x,
                                         int64_t ld_x, const ks_bf16 *w, const void *bias, int n, int in, int out,
                                         float beta, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(y_type) && (beta == 0.0f || beta == 1.0f) && ld_x >= in && ld_y >= out);
    if (n <= 0 || out <= 0) return KS_OK;
    // a decode step's rows: faster than cuBLASLt's n = 1, and each row rounds as it would alone
    if (n <= KS_CUDA_GEMV_ROWS) return ks_cuda_gemv(y, ld_y, y_type, x, ld_x, w, bias, n, in, out, beta, s);
    // The alignment every column start has: the pointers' and the row strides' (in bytes).
    const void *ptrs[] = {y, x, w, bias, (const void *)(uintptr_t)(ld_x * 2),
                          (const void *)(uintptr_t)(ld_y * (y_type == KS_DTYPE_F32 ? 4 : 2))};
    gemm_plan key = {};
    key.n = n, key.in = in, key.out = out, key.align = pointer_align(ptrs, 6);
    key.ld_x = ld_x, key.ld_y = ld_y;
    key.y_type = y_type, key.bias = bias != NULL, key.accumulate = beta != 0.0f, key.used = true;

    gemm_plan *p = NULL;
    for (int i = 0; i < kPlans && !p; i++) {
        gemm_plan *c = &g->plans[i];
        if (c->used && c->n == n && c->in == in && c->out == out && c->align == key.align && c->ld_x == ld_x &&
            c->ld_y == ld_y &&
            c->y_type == y_type && c->bias == key.bias && c->accumulate == key.accumulate)
            p = c;
    }
    if (!p) {
        p = &g->plans[g->next];
        g->next = (g->next + 1) % kPlans;
        plan_release(p);
        *p = key;
        ks_status st = plan_build(g, p);
        if (st != KS_OK) {
            plan_release(p);
            return st;
        }
    }
    if (bias) CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                          sizeof bias));
    float alpha = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(g->lt, p->op, &alpha, w, p->a, x, p->b, &beta, y, p->c, y, p->c, &p->algo, g->ws,
                                g->ws_bytes, s));
    return KS_OK;
}
