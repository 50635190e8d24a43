/* stage.c — see stage.h. */
#include "stage.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* A whole decimal number in [lo, hi] spanning [s, end); -1 otherwise. */
static int parse_count(const char *s, const char *end, int lo, int hi) {
    if (s == end || end - s > 6) return -1;
    int v = 0;
    for (const char *p = s; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
    }
    return v >= lo && v <= hi ? v : -1;
}

ks_status ks_gp_num_parse(const char *text, ks_gp_num *out) {
    const char *slash = strchr(text, '/');
    const char *end = text + strlen(text);
    if (!slash) {
        int k = parse_count(text, end, 1, KS_STAGE_MAX);
        if (k > 0) return *out = (ks_gp_num){.stages = k, .per_gpu = 1}, KS_OK;
    } else if (parse_count(text, slash, 1, 1) == 1) {
        int k = parse_count(slash + 1, end, 1, 1024);
        if (k > 0) return *out = (ks_gp_num){.stages = 1, .per_gpu = k}, KS_OK;
    }
    return ks_fail(KS_ERR_ARG, "--gp_num %s: use k (1 to %d GPUs per model instance) or 1/k (k instances on each "
                               "GPU), e.g. --gp_num 2 or --gp_num 1/2", text, KS_STAGE_MAX);
}

ks_status ks_stage_layout_init(ks_stage_layout *s, const ks_gp_num *g, int world_size, int rank, int n_layers) {
    int k = g->stages;
    if (k > n_layers)
        return ks_fail(KS_ERR_ARG, "--gp_num %d: the model has %d layers, fewer than the %d pipeline stages; use at "
                                   "most --gp_num %d", k, n_layers, k, n_layers);
    if (world_size % k)
        return ks_fail(KS_ERR_ARG, "--gp_num %d: the job's %d rank%s cannot form whole model instances of %d ranks "
                                   "each; start a multiple of %d ranks (mpirun -np)", k, world_size,
                       world_size == 1 ? "" : "s", k, k);
    *s = (ks_stage_layout){.n_instances = world_size / k, .instance = rank / k, .n_stages = k, .stage = rank % k,
                           .first_rank = rank - rank % k};
    return KS_OK;
}

ks_status ks_stage_split(const int64_t *layer_bytes, int n_layers, int64_t embed_bytes, int64_t head_bytes,
                         int n_stages, int *first) {
    if (n_stages < 1 || n_stages > n_layers)
        return ks_fail(KS_ERR_ARG, "%d pipeline stages cannot split %d layers (each stage needs a layer)", n_stages,
                       n_layers);
    int n = n_layers, k = n_stages;
    int64_t *prefix = malloc((size_t)(n + 1) * sizeof *prefix);
    int64_t *best = malloc((size_t)k * (n + 1) * sizeof *best); /* best[s][i]: layers [0, i) over stages 0..s */
    int *from = malloc((size_t)k * (n + 1) * sizeof *from);     /* stage s's first layer in that optimum */
    if (!prefix || !best || !from) {
        free(prefix), free(best), free(from);
        return ks_fail(KS_ERR_NOMEM, "out of memory splitting %d layers", n);
    }
    prefix[0] = 0;
    for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + layer_bytes[i];
#define BEST(s, i) best[(size_t)(s) * (n + 1) + (i)]
#define FROM(s, i) from[(size_t)(s) * (n + 1) + (i)]
    for (int s = 0; s < k; s++)
        for (int i = s + 1; i <= n - (k - 1 - s); i++) {
            int64_t extra = (s == 0 ? embed_bytes : 0) + (s == k - 1 ? head_bytes : 0);
            if (s == 0) {
                BEST(0, i) = prefix[i] + extra, FROM(0, i) = 0;
                continue;
            }
            BEST(s, i) = INT64_MAX;
            for (int j = s; j < i; j++) { /* stage s holds [j, i); stages before it hold [0, j) */
                int64_t own = prefix[i] - prefix[j] + extra, worst = BEST(s - 1, j) > own ? BEST(s - 1, j) : own;
                if (worst < BEST(s, i)) BEST(s, i) = worst, FROM(s, i) = j;
            }
        }
    first[k] = n;
    for (int s = k - 1; s >= 0; s--) first[s] = FROM(s, first[s + 1]);
#undef BEST
#undef FROM
    free(prefix), free(best), free(from);
    return KS_OK;
}

ks_status ks_stage_gpu(const int *devices, int n_devices, int n_gpus, int local_rank, int local_size, int per_gpu,
                       int *gpu) {
    if (n_gpus < 1)
        return ks_fail(KS_ERR_DEVICE, "--device: no usable GPU (none found on this node, or this kvscope build has "
                                      "no cuda backend; check the driver and CUDA_VISIBLE_DEVICES), or use --device "
                                      "cpu");
    for (int i = 0; i < n_devices; i++)
        if (devices[i] < 0 || devices[i] >= n_gpus)
            return ks_fail(KS_ERR_ARG, "--device %d: this node has %d GPU%s (0 to %d, numbered after "
                                       "CUDA_VISIBLE_DEVICES)", devices[i], n_gpus, n_gpus == 1 ? "" : "s",
                           n_gpus - 1);
    int usable = n_devices ? n_devices : n_gpus;
    if (local_size > usable * per_gpu)
        return ks_fail(KS_ERR_ARG, "%d rank%s on this node but %d GPU%s%s for them, %d rank%s each (--gp_num 1/k "
                                   "puts k on one GPU): start at most %d ranks per node", local_size,
                       local_size == 1 ? "" : "s", usable, usable == 1 ? "" : "s", n_devices ? " in --device" : "",
                       per_gpu, per_gpu == 1 ? "" : "s", usable * per_gpu);
    int slot = local_rank / per_gpu;
    *gpu = n_devices ? devices[slot] : slot;
    return KS_OK;
}
