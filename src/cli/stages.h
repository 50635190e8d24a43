/* stages.h — a job's pipeline stages as `kvscope eval` and `kvscope bench` set them up from --gp_num and
 * --device: the instance layout (mpi/stage.h), the layer range this rank holds, the GPU it uses, the MPI link to
 * the other stages of its instance (mpi/stage_link.h) and how the residual rows travel between them: GPU to GPU
 * through NCCL where every stage has a GPU of its own (mpi/stage_nccl.h), else through host memory over MPI.
 *
 *     ks_stage_devices dev;
 *     KS_TRY(ks_stage_devices_parse(&device_words, &dev));          // --device: cpu, cuda, GPU indices, nothing
 *     ks_stages s = {0};
 *     KS_TRY(ks_stages_layout(&s, "2", &mpi, &cfg, "model.safetensors"));  // every rank, before any model loads
 *     KS_TRY(ks_stages_link(&s, &mpi, 300.0));                      // collective over the world
 *     KS_TRY(ks_stages_gpu(&s, &dev, &mpi));                        // the GPU this rank uses (device cuda)
 *     KS_TRY(ks_stages_transport(&s, &dev));                        // collective over each instance
 *     ... s.first_layer, s.last_layer: the layers this stage holds; &s.transport: engine/pipeline.h's table ...
 *     ks_stages_free(&s);                                           // after the backend's stream is done
 *
 * The set owns its link and NCCL communicator. Each step may fail on some ranks only: the callers end each in
 * ks_mpi_agree (mpi/ks_mpi.h). With one stage per instance the layer range is the whole model and the
 * transport is unused. */
#ifndef KS_CLI_STAGES_H
#define KS_CLI_STAGES_H

#include "cli/options.h"
#include "core/status.h"
#include "ks_mpi.h"
#include "model/config.h"
#include "stage.h"
#include "stage_link.h"
#include "stage_nccl.h"

/* --device as LOOM-Scope takes it. */
typedef struct ks_stage_devices {
    const char *device;          /* the backend: "cpu" or "cuda" */
    int gpus[KS_OPT_STRINGS_MAX]; /* the GPU indices listed (n_gpus 0: every GPU of the node) */
    int n_gpus;
    int chosen;                  /* --device not given: the GPUs when there are any, else the CPU */
} ks_stage_devices;

/* `cpu`, `cuda` (every GPU of the node), GPU indices (`--device 0 1 3`: a node's ranks use those, in order; `0 0`
 * puts two ranks on GPU 0), or no word (chosen). KS_ERR_ARG naming --device otherwise. */
ks_status ks_stage_devices_parse(const ks_opt_strings *words, ks_stage_devices *d);

typedef struct ks_stages {
    ks_gp_num gp;                 /* --gp_num */
    ks_stage_layout layout;       /* this rank's instance and stage */
    int first_layer, last_layer;  /* the layers this stage holds */
    int bounds[KS_STAGE_MAX + 1]; /* stage t holds [bounds[t], bounds[t + 1]); bounds[n_stages]: the layer count */
    int own_gpus;                 /* every stage of the instance has a GPU of its own: rows through NCCL */
    ks_stage_link link;           /* to the other stages of its instance */
#ifdef KS_HAVE_CUDA
    ks_stage_nccl nccl;           /* the rows between their GPUs, where own_gpus */
#endif
    ks_stage_transport transport; /* the pipeline's table over the link (and NCCL) */
} ks_stages;

/* --gp_num `gp_num` over the job: this rank's instance, stage and layer range, the model's layers balanced over
 * the instance's stages by weight elements (ks_stage_split). `what` names the model in errors. */
ks_status ks_stages_layout(ks_stages *s, const char *gp_num, const ks_mpi *mpi, const ks_model_config *cfg,
                           const char *what);
/* Collective over the world: the link (every wait bounded by timeout_s). */
ks_status ks_stages_link(ks_stages *s, const ks_mpi *mpi, double timeout_s);
/* With device cuda: picks this rank's GPU (ks_stage_gpu from its node-local rank) and makes it current. */
ks_status ks_stages_gpu(const ks_stages *s, const ks_stage_devices *d, const ks_mpi *mpi);
/* Collective over each instance of several stages, after ks_stages_gpu: NCCL where the device is cuda and every
 * stage's GPU is its own (NCCL refuses two ranks on one device), host memory over MPI otherwise; said in the log
 * by the instance's stage 0. */
ks_status ks_stages_transport(ks_stages *s, const ks_stage_devices *d);
void ks_stages_free(ks_stages *s); /* accepts a zeroed struct */

#endif
