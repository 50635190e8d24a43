/* stages.c — see stages.h. */
#include "cli/stages.h"

#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/log.h"
#include "methods/method.h"
#include "model/model.h"

ks_status ks_stage_devices_parse(const ks_opt_strings *w, ks_stage_devices *d) {
    memset(d, 0, sizeof *d);
    if (w->n == 0) {
        d->device = ks_backend_gpu_count() > 0 ? "cuda" : "cpu";
        d->chosen = 1;
        return KS_OK;
    }
    if (w->n == 1 && (!strcmp(w->v[0], "cpu") || !strcmp(w->v[0], "cuda"))) {
        d->device = w->v[0];
        return KS_OK;
    }
    for (int i = 0; i < w->n; i++) {
        char *end;
        long g = strtol(w->v[i], &end, 10);
        if (*w->v[i] == '\0' || *end || g < 0 || g > 4096)
            return ks_fail(KS_ERR_ARG, "--device %s: use cpu, cuda, or GPU indices (--device 0 1 3)", w->v[i]);
        d->gpus[d->n_gpus++] = (int)g;
    }
    d->device = "cuda";
    return KS_OK;
}

/* The stage's layers: every layer for one stage; else the model's balanced over the instance's stages by weight
 * elements, the embedding counted on stage 0 and the final norm and LM head on the last. */
static ks_status split_layers(ks_stages *s, const ks_model_config *cfg, const char *what) {
    if (s->layout.n_stages == 1) {
        s->bounds[0] = s->first_layer = 0, s->bounds[1] = s->last_layer = cfg->n_layers;
        return KS_OK;
    }
    if (cfg->n_layers > KS_METHOD_MAX_LAYERS)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: %d layers; at most %d", what, cfg->n_layers, KS_METHOD_MAX_LAYERS);
    int64_t per_layer, embed, head, layer_elems[KS_METHOD_MAX_LAYERS];
    ks_model_stage_elems(cfg, &per_layer, &embed, &head);
    for (int i = 0; i < cfg->n_layers; i++) layer_elems[i] = per_layer;
    KS_TRY(ks_stage_split(layer_elems, cfg->n_layers, embed, head, s->layout.n_stages, s->bounds));
    s->first_layer = s->bounds[s->layout.stage], s->last_layer = s->bounds[s->layout.stage + 1];
    return KS_OK;
}

ks_status ks_stages_layout(ks_stages *s, const char *gp_num, const ks_mpi *mpi, const ks_model_config *cfg,
                           const char *what) {
    KS_TRY(ks_gp_num_parse(gp_num, &s->gp));
    KS_TRY(ks_stage_layout_init(&s->layout, &s->gp, mpi->size, mpi->rank, cfg->n_layers));
    return split_layers(s, cfg, what);
}

ks_status ks_stages_link(ks_stages *s, const ks_mpi *mpi, double timeout_s) {
    return ks_stage_link_init(&s->link, mpi, &s->layout, timeout_s);
}

ks_status ks_stages_gpu(const ks_stages *s, const ks_stage_devices *d, const ks_mpi *mpi) {
    if (strcmp(d->device, "cuda")) return KS_OK;
    int gpu;
    KS_TRY(ks_stage_gpu(d->gpus, d->n_gpus, ks_backend_gpu_count(), mpi->local_rank, mpi->local_size,
                        s->gp.per_gpu, &gpu));
    KS_TRY(ks_backend_use_gpu(gpu));
    if (mpi->size > 1) ks_log_info("GPU %d", gpu);
    return KS_OK;
}

ks_status ks_stages_transport(ks_stages *s, const ks_stage_devices *d) {
    if (s->layout.n_stages == 1) return KS_OK;
    int cuda = !strcmp(d->device, "cuda");
#ifdef KS_HAVE_CUDA
    if (cuda) KS_TRY(ks_stage_nccl_own_gpus(&s->link, &s->own_gpus));
    if (s->own_gpus) KS_TRY(ks_stage_nccl_init(&s->nccl, &s->link));
    ks_stage_nccl_transport(&s->nccl, &s->link, &s->transport);
#else
    ks_stage_link_transport(&s->link, &s->transport);
#endif
    if (s->layout.stage == 0)
        ks_log_info("instance %d: its stages pass the residual rows %s", s->layout.instance,
                    s->own_gpus ? "GPU to GPU through NCCL"
                    : cuda      ? "through host memory over MPI (they share a GPU, which NCCL refuses)"
                                : "through host memory over MPI");
    return KS_OK;
}

void ks_stages_free(ks_stages *s) {
#ifdef KS_HAVE_CUDA
    ks_stage_nccl_free(&s->nccl); /* after the backend's stream, which its sends and receives ran on */
#endif
    ks_stage_link_free(&s->link);
}
