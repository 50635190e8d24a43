/* backend_cuda.h — the "cuda" backend (backend/backend_cuda.c; built only with KS_HAVE_CUDA): its ops table,
 * registered in backend.c, and what the benchmark needs beyond the table.
 *
 *     const ks_backend_ops *ops = &ks_backend_cuda;            // or ks_backend_find("cuda", &ops)
 *     KS_TRY(ops->init(&be, &model, &params));                 // uploads the model's fp32 weights as bf16
 *     KS_TRY(ks_backend_cuda_init_random(&be, &shape_only_model, &params, seed));   // kvscope bench
 *
 * One GPU per process: the backend runs on the current CUDA device (cudaSetDevice before init picks it).
 */
#ifndef KS_BACKEND_CUDA_H
#define KS_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

extern const ks_backend_ops ks_backend_cuda;

/* As ks_backend_cuda.init, but the weights are uniform random values generated on the GPU (norms 1), so m
 * needs only its config and layer range (no host weights): a model of any shape without files or host
 * memory. The same seed gives the same weights. */
ks_status ks_backend_cuda_init_random(ks_backend **out, const ks_model *m, const ks_backend_params *p,
                                      uint64_t seed);

/* The current device: its name (into name, cap bytes), multiprocessor count, total and currently free memory
 * in bytes (each output may be NULL). KS_ERR_DEVICE with a clear message when no CUDA GPU is usable. */
ks_status ks_backend_cuda_device(char *name, size_t cap, int *sm_count, size_t *total_bytes, size_t *free_bytes);

/* CUDA's device count (0 when there is no usable driver or device), and the device the calling process uses from
 * now on (cudaSetDevice); KS_ERR_DEVICE naming the GPU when it cannot be selected. */
int ks_backend_cuda_count(void);
ks_status ks_backend_cuda_select(int gpu);

#endif
