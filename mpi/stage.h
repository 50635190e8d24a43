/* stage.h — how the ranks of a job form model instances (--gp_num), and which layers each stage holds.
 *
 *     ks_gp_num g;
 *     KS_TRY(ks_gp_num_parse("2", &g));                      // "k": k ranks per instance; "1/k": k per GPU
 *     ks_stage_layout s;
 *     KS_TRY(ks_stage_layout_init(&s, &g, world_size, rank, n_layers));
 *     ... s.instance, s.stage (0 .. s.n_stages - 1), s.first_rank (the instance's stage 0) ...
 *     int first[KS_STAGE_MAX + 1];
 *     KS_TRY(ks_stage_split(layer_bytes, n_layers, embed_bytes, head_bytes, s.n_stages, first));
 *     // stage s holds layers [first[s], first[s + 1])
 *
 * An instance is n_stages consecutive ranks: ranks r with r / n_stages equal. Stage s of an instance holds a
 * contiguous layer range; stage 0 also holds the embedding and the last stage the final norm and LM head, so
 * the ranges are balanced by weight bytes with those counted where they sit (ks_stage_split). With "1/k" an
 * instance is one rank and k ranks share each GPU (ks_gp_num.per_gpu).
 */
#ifndef KS_STAGE_H
#define KS_STAGE_H

#include <stdint.h>

#include "core/status.h"

#define KS_STAGE_MAX 64 /* stages per instance */

typedef struct ks_gp_num {
    int stages;  /* ranks (GPUs) per model instance: k of "k"; 1 for "1/k" */
    int per_gpu; /* model instances sharing one GPU: k of "1/k"; 1 for "k" */
} ks_gp_num;

/* "k" (1 <= k <= KS_STAGE_MAX) or "1/k" (k >= 1). KS_ERR_ARG naming --gp_num otherwise. */
ks_status ks_gp_num_parse(const char *text, ks_gp_num *out);

typedef struct ks_stage_layout {
    int n_instances; /* world_size / stages */
    int instance;    /* this rank's instance: rank / stages */
    int n_stages;    /* ranks per instance */
    int stage;       /* this rank's stage: rank % stages */
    int first_rank;  /* the instance's stage 0 */
} ks_stage_layout;

/* The layout of `rank` in a job of world_size ranks. KS_ERR_ARG when world_size is not a multiple of the
 * stages, or when there are more stages than the model's n_layers: both before any model loads. */
ks_status ks_stage_layout_init(ks_stage_layout *s, const ks_gp_num *g, int world_size, int rank, int n_layers);

/* Splits layers 0 .. n_layers - 1 into n_stages contiguous non-empty ranges minimising the largest stage's
 * weight bytes: layer_bytes[i] per layer, embed_bytes added to stage 0 and head_bytes to the last stage.
 * first[s] is stage s's first layer, first[n_stages] = n_layers. Ties go to the split with earlier
 * boundaries, so every rank computes the same split. KS_ERR_ARG when n_stages > n_layers. */
ks_status ks_stage_split(const int64_t *layer_bytes, int n_layers, int64_t embed_bytes, int64_t head_bytes,
                         int n_stages, int *first);

/* The GPU (CUDA's index, after CUDA_VISIBLE_DEVICES) that the rank local_rank of the local_size ranks on its
 * node uses: local_rank / per_gpu into `devices` (the --device list, n_devices of them) or, with n_devices 0,
 * into all n_gpus. KS_ERR_ARG naming --device when a listed index is not a GPU of the node, and when the node has
 * more ranks than its GPUs × per_gpu instances (before any model loads). */
ks_status ks_stage_gpu(const int *devices, int n_devices, int n_gpus, int local_rank, int local_size, int per_gpu,
                       int *gpu);

#endif
