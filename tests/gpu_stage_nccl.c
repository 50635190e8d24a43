/* gpu_stage_nccl.c — the pipeline stages' NCCL transport (mpi/stage_nccl.h) under `mpirun -np 2`, each rank on
 * a GPU of its own:
 *   1. the transport alone: device buffers of known values both ways (stage 0 to 1, then 1 to 0 with every
 *      value changed), several sends queued on one stream before the host waits, of a decode row's size and of
 *      a prompt chunk's; each read back on the stream it landed on and checked;
 *   2. `gpu_stage_nccl smollm2`, also: the SmolLM2 GGUF split over the two stages on the cuda backend, the
 *      pipeline (engine/pipeline.h) run once with the rows GPU to GPU through NCCL (the backend's
 *      hidden_recv/hidden_send) and once through host memory over MPI: the same greedy tokens, KV bytes and
 *      layer statistics, for a full cache (chunks pipelined; H2O's decode-time eviction; CakeKV's per-layer
 *      values over MPI between the rows) and a budget-sized one (SnapKV: layer-major stages).
 * Fewer than 2 GPUs on the node: exits 77, which CTest reports as skipped (not passed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <mpi.h>

#include "backend/backend.h"
#include "engine/generate.h"
#include "engine/pipeline.h"
#include "ks_mpi.h"
#include "methods/method.h"
#include "model/model.h"
#include "stage.h"
#include "stage_link.h"
#include "stage_nccl.h"
#include "test_util.h"

enum { SKIP = 77, HIDDEN = 576, ROUNDS = 3, QUEUED = 4, PROMPT = 150, CHUNK = 40, NEW = 8 };

static int fail_line(int line, const char *what) {
    fprintf(stderr, "gpu_stage_nccl: check failed at line %d: %s (%s)\n", line, what, ks_last_error());
    return 1;
}
#define CHECK(c) do { if (!(c)) return fail_line(__LINE__, #c); } while (0)

/* The value of element i of message q in round r from stage s. */
static float value(int s, int r, int q, size_t i) { return (float)(100000 * s + 1000 * r + 100 * q) + (float)i * 0.5f; }

/* Part 1: QUEUED messages of `rows` rows queued on one stream, from stage `from` to the other, then checked. */
static int exchange(const ks_stage_link *k, const ks_stage_transport *t, cudaStream_t stream, int from, int r,
                    int rows) {
    const size_t n = (size_t)rows * HIDDEN, bytes = n * sizeof(float);
    float *host = malloc(bytes * QUEUED), *dev = NULL;
    CHECK(host);
    CHECK(cudaMalloc((void **)&dev, bytes * QUEUED) == cudaSuccess);
    if (k->stage == from) {
        for (int q = 0; q < QUEUED; q++)
            for (size_t i = 0; i < n; i++) host[q * n + i] = value(from, r, q, i);
        CHECK(cudaMemcpyAsync(dev, host, bytes * QUEUED, cudaMemcpyHostToDevice, stream) == cudaSuccess);
        for (int q = 0; q < QUEUED; q++)
            CHECK(t->send_device(t->device_ctx, 1 - from, dev + q * n, bytes, stream) == KS_OK);
    } else {
        CHECK(cudaMemsetAsync(dev, 0xff, bytes * QUEUED, stream) == cudaSuccess); /* NaNs until the rows land */
        for (int q = 0; q < QUEUED; q++)
            CHECK(t->recv_device(t->device_ctx, from, dev + q * n, bytes, stream) == KS_OK);
        CHECK(cudaMemcpyAsync(host, dev, bytes * QUEUED, cudaMemcpyDeviceToHost, stream) == cudaSuccess);
    }
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    if (k->stage != from)
        for (int q = 0; q < QUEUED; q++)
            for (size_t i = 0; i < n; i++)
                if (host[q * n + i] != value(from, r, q, i)) {
                    fprintf(stderr, "gpu_stage_nccl: stage %d got %g at element %zu of message %d (round %d, %d "
                                    "rows), stage %d sent %g\n", k->stage, (double)host[q * n + i], i, q, r, rows, from,
                            (double)value(from, r, q, i));
                    return 1;
                }
    cudaFree(dev);
    free(host);
    return 0;
}

static int transport_both_ways(ks_stage_link *k, const ks_stage_transport *t) {
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    for (int r = 0; r < ROUNDS; r++)
        for (int from = 0; from < 2; from++) {
            CHECK(exchange(k, t, stream, from, r, 1) == 0);     /* a decode step's row */
            CHECK(exchange(k, t, stream, from, r, CHUNK) == 0); /* a prompt chunk's */
        }
    CHECK(cudaStreamDestroy(stream) == cudaSuccess);
    return 0;
}

/* ---- part 2: the pipeline over both transports ---- */

typedef struct run_out {
    int32_t tokens[NEW];
    ks_generate_result r;
    ks_layer_stat stats[KS_METHOD_MAX_LAYERS];
    int n_stats;
} run_out;

/* One sample through the two stages over transport t; stage 0 fills *out. */
static int pipeline_once(const ks_model *m, const char *method, const char *const *opts, ks_forward_cache cache,
                         const ks_stage_transport *t, run_out *out) {
    int n_opts = 0;
    while (opts && opts[n_opts]) n_opts++;
    ks_method *meth = NULL;
    CHECK(ks_method_create(&meth, method, NULL, opts, n_opts) == KS_OK);
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cuda", .max_ctx = PROMPT + NEW + 8, .max_new = NEW, .chunk = CHUNK,
                            .cache = cache};
    CHECK(ks_forward_init(&f, m, meth, &fp) == KS_OK);
    ks_pipeline p;
    CHECK(ks_pipeline_init(&p, &f, t) == KS_OK);
    CHECK((p.rows == NULL) == (t->send_device != NULL)); /* the device path whenever the transport has one */
    if (t->stage == 0) {
        int32_t ids[PROMPT];
        for (int i = 0; i < PROMPT; i++) ids[i] = 3 + (int32_t)((i * 7919u + 13) % (unsigned)(m->cfg.vocab - 3));
        ks_generate_params gp = {.max_new_tokens = NEW, .pipeline = &p};
        CHECK(ks_generate(&f, ids, PROMPT, &gp, out->tokens, &out->r) == KS_OK);
        out->n_stats = p.n_stats;
        memcpy(out->stats, p.stats, sizeof(ks_layer_stat) * (size_t)p.n_stats);
        CHECK(ks_pipeline_end(&p) == KS_OK);
    } else {
        CHECK(ks_pipeline_follow(&p) == KS_OK);
    }
    ks_pipeline_free(&p);
    ks_forward_free(&f);
    ks_method_free(meth);
    return 0;
}

/* The same tokens and KV bytes; the same statistics too where `exact` (CakeKV's window summary is a sum of
 * double atomics, whose order may change its last bits from one run to the next). */
static int same_run(const run_out *a, const run_out *b, const char *method, int exact) {
    CHECK(a->r.n == b->r.n);
    for (int i = 0; i < a->r.n; i++)
        if (a->tokens[i] != b->tokens[i]) {
            fprintf(stderr, "gpu_stage_nccl: %s: token %d is %d through NCCL, %d through MPI\n", method, i,
                    a->tokens[i], b->tokens[i]);
            return 1;
        }
    CHECK(a->r.kv_bytes_full == b->r.kv_bytes_full && a->r.kv_bytes_prefill == b->r.kv_bytes_prefill &&
          a->r.kv_bytes_end == b->r.kv_bytes_end);
    CHECK(a->n_stats == b->n_stats);
    CHECK(!exact || !memcmp(a->stats, b->stats, sizeof(ks_layer_stat) * (size_t)a->n_stats));
    return 0;
}

static int pipeline_both_ways(ks_stage_link *k, ks_stage_nccl *nccl, const char *gguf) {
    static const char *const snap[] = {"max_capacity_prompt=64", "window_size=16", NULL};
    static const char *const h2o[] = {"heavy_budget=30", "recent_budget=30", NULL};
    static const char *const cake[] = {"cache_size=48", "window_size=16", NULL};
    static const struct {
        const char *name;
        const char *const *opts;
        ks_forward_cache cache;
    } cases[] = {{"FullKV", NULL, KS_CACHE_FULL}, {"SnapKV", snap, KS_CACHE_AUTO}, {"H2O", h2o, KS_CACHE_FULL},
                 {"CakeKV", cake, KS_CACHE_FULL}};
    ks_model_config cfg;
    ks_tensor_index ix;
    CHECK(ks_model_open_index(gguf, &cfg, &ix, NULL) == KS_OK);
    ks_tensor_index_free(&ix);
    int half = cfg.n_layers / 2;
    ks_model m = {0};
    CHECK(ks_model_load(&m, gguf, k->stage ? half : 0, k->stage ? cfg.n_layers : half) == KS_OK);
    ks_stage_transport over_nccl, over_mpi;
    ks_stage_nccl_transport(nccl, k, &over_nccl);
    ks_stage_link_transport(k, &over_mpi);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        static run_out a, b;
        memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
        CHECK(pipeline_once(&m, cases[c].name, cases[c].opts, cases[c].cache, &over_nccl, &a) == 0);
        CHECK(pipeline_once(&m, cases[c].name, cases[c].opts, cases[c].cache, &over_mpi, &b) == 0);
        if (k->stage == 0) CHECK(same_run(&a, &b, cases[c].name, strcmp(cases[c].name, "CakeKV") != 0) == 0);
        if (k->stage == 0) printf("gpu_stage_nccl: %s through NCCL equals MPI (%d tokens)\n", cases[c].name, a.r.n);
    }
    ks_model_free(&m);
    return 0;
}

static int run(const ks_mpi *mpi, int with_model) {
    CHECK(ks_backend_use_gpu(mpi->local_rank) == KS_OK);
    ks_gp_num g = {.stages = 2, .per_gpu = 1};
    ks_stage_layout s;
    CHECK(ks_stage_layout_init(&s, &g, mpi->size, mpi->rank, 32) == KS_OK);
    ks_stage_link link;
    CHECK(ks_stage_link_init(&link, mpi, &s, 120.0) == KS_OK);
    int own = 0;
    CHECK(ks_stage_nccl_own_gpus(&link, &own) == KS_OK);
    CHECK(own == 1);
    ks_stage_nccl nccl = {0};
    CHECK(ks_stage_nccl_init(&nccl, &link) == KS_OK);
    ks_stage_transport t;
    ks_stage_nccl_transport(&nccl, &link, &t);
    CHECK(t.send_device && t.recv_device);
    CHECK(transport_both_ways(&link, &t) == 0);
    if (mpi->rank == 0) printf("gpu_stage_nccl: device rows both ways: ok\n");
    if (with_model) {
        const char *gguf = ks_test_smollm2_gguf();
        CHECK(gguf); /* asked for: its absence is a failure, not a skip */
        CHECK(pipeline_both_ways(&link, &nccl, gguf) == 0);
    }
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    ks_stage_nccl_free(&nccl);
    ks_stage_link_free(&link);
    return 0;
}

int main(int argc, char **argv) {
    ks_mpi mpi;
    if (ks_mpi_init(&mpi, &argc, &argv) != KS_OK) return 1;
    int with_model = argc > 1 && !strcmp(argv[1], "smollm2");
    int gpus = ks_backend_gpu_count(), enough = mpi.size == 2 && gpus >= mpi.local_size, all = 0;
    MPI_Allreduce(&enough, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all) {
        if (mpi.rank == 0)
            fprintf(stderr, "gpu_stage_nccl: SKIPPED: needs 2 ranks (mpirun -np 2), each on a GPU of its own; "
                            "%d rank(s), this node has %d GPU(s)\n", mpi.size, gpus);
        ks_mpi_finalize(&mpi);
        return SKIP;
    }
    int rc = run(&mpi, with_model);
    if (rc) ks_mpi_abort(&mpi, 1);
    if (mpi.rank == 0) printf("gpu_stage_nccl: ok\n");
    ks_mpi_finalize(&mpi);
    return 0;
}
