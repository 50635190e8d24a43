/* speed_model.h — the speed benchmark's model (`kvscope bench`, src/cli/cmd_bench.c): the shape of any Hugging
 * Face config (Llama-3.1-8B by default, no files needed) with random bf16 weights generated directly on the GPU,
 * and the device measurements the benchmark reports besides the forward pass. The task benchmarks (RULER,
 * LongBench) are src/bench.
 *
 *     ks_model m = {0};
 *     KS_TRY(ks_speed_model_init(&m, NULL));                   // or a config.json path; config only, no weights
 *     ks_forward f = {0};
 *     ks_forward_params p = {.max_ctx = max_ctx, .max_new = steps, .chunk = chunk, .cache = KS_CACHE_FULL};
 *     KS_TRY(ks_speed_forward(&f, &m, method, &p, seed));      // the cuda backend, random weights
 *     KS_TRY(ks_forward_prefill(&f, ids, n, NULL, &next));  ...  ks_forward_decode(...)
 *     ks_forward_free(&f);
 *     ks_model_free(&m);
 *
 * Builds without CUDA: the device functions then return KS_ERR_UNSUPPORTED naming the fix.
 */
#ifndef KS_SPEED_MODEL_H
#define KS_SPEED_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/forward.h"

/* m = the config of config_path (HF config.json; NULL: Llama-3.1-8B) over all its layers, with no host
 * weights (m->layers NULL). ks_model_free releases it. */
ks_status ks_speed_model_init(ks_model *m, const char *config_path);

/* f = ks_forward_init(f, m, method, p) on the cuda backend (p->device is not read) with uniform random weights
 * from `seed` (std 0.02, norms 1) generated on the GPU. ks_forward_free releases it. */
ks_status ks_speed_forward(ks_forward *f, const ks_model *m, ks_method *method, const ks_forward_params *p,
                           uint64_t seed);

/* *n = the GPUs this process sees; KS_ERR_UNSUPPORTED naming the fix in a build without the cuda backend. */
ks_status ks_speed_gpu_count(int *n);

/* The current GPU: name, multiprocessor count, total and free memory in bytes (outputs may be NULL). */
ks_status ks_speed_device(char *name, size_t cap, int *sm_count, size_t *total_bytes, size_t *free_bytes);

/* The device's copy bandwidth, the ceiling of a memory-bound step: device-to-device copies of `bytes` between two
 * buffers allocated here and freed after, the median of `repeat` timed copies after one warm-up, counting the
 * bytes read and written (2 bytes / time, as jobs/bench_torch.py's ceiling). */
ks_status ks_speed_copy_bandwidth(size_t bytes, int repeat, double *bytes_per_s);

/* The prefill attention kernel alone (ks_cuda_attention_prefill): causal self-attention of n tokens from
 * position 0, H query heads, Hk KV heads of dimension d, random bf16 inputs in buffers allocated here and
 * freed after; the median of `repeat` timed calls after one warm-up, in TFLOP/s counting 4 n^2 d H / 2. */
ks_status ks_speed_attention_tflops(int n, int H, int Hk, int d, int repeat, double *tflops);

/* The block-sparse prefill kernel (ks_cuda_attention_prefill_sparse) beside the dense one, in one call on the same
 * inputs as ks_speed_attention_tflops: *dense_ms, the dense kernel's median; then for each density dens[i] in
 * (0, 1] a random block list of blocks of `block` tokens (from `seed`: each row lists column 0, its diagonal and
 * every other causal block with probability dens[i]; 1 is the full list), ms[i] its median, kept[i] the fraction
 * of the causal blocks listed, tflops[i] counting 4 d per visible (query, key) pair of the listed blocks (the
 * full list counts what the dense figure counts). */
ks_status ks_speed_attention_sparse(int n, int H, int Hk, int d, int block, const double *dens, int nd, int repeat,
                                    uint64_t seed, double *dense_ms, double *ms, double *kept, double *tflops);

/* XAttention's estimation of one layer (ks_cuda_xattn_blocks: stride 16, threshold 0.9, blocks of 128) over a
 * causal prompt of n random tokens from position 0 in prefill chunks of `chunk` tokens (rounded down to whole
 * blocks), on the inputs ks_speed_attention_tflops uses: the median device ms of `repeat` timed runs after one
 * warm-up (the lists' copies to the host, which the KV store adds, not counted). */
ks_status ks_speed_xattn_estimate(int n, int H, int Hk, int d, int chunk, int repeat, double *ms);

/* FlexPrefill's estimation of one layer (ks_cuda_flex_blocks: blocks of 128, gamma 0.9, tau 0.1, budgets 512 and
 * 32768 tokens, FlexPrefill's defaults) over a causal prompt of n random tokens, on the inputs
 * ks_speed_attention_tflops uses: the median ms of `repeat` timed runs after one warm-up, the estimation, the
 * choice, the list built on the device and the records' copy to the host counted (what the KV store does per
 * layer); *aware the fraction of query heads that chose query-aware blocks. */
ks_status ks_speed_flex_estimate(int n, int H, int Hk, int d, int repeat, double *ms, double *aware);

#endif
