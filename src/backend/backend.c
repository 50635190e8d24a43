/* backend.c — the registry of built-in backends (see backend.h). */
#include "backend/backend.h"

#include <string.h>
#include <unistd.h>

#ifdef KS_HAVE_CUDA
#include "backend/backend_cuda.h"
#endif

/* Backends compiled into this build. */
static const ks_backend_ops *const built_in[] = {
    &ks_backend_cpu,
#ifdef KS_HAVE_CUDA
    &ks_backend_cuda,
#endif
};

/* Every backend kvscope knows, built in or not, so that a missing one gets "not built" rather than "unknown". */
static const char *const known[] = {"cpu", "cuda"};

ks_status ks_backend_find(const char *name, const ks_backend_ops **out) {
    for (size_t i = 0; i < sizeof built_in / sizeof built_in[0]; i++)
        if (!strcmp(built_in[i]->name, name)) {
            *out = built_in[i];
            return KS_OK;
        }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(known[i], name))
            return ks_fail(KS_ERR_UNSUPPORTED,
                           "--device %s: this kvscope build has no %s backend (rebuild with -DKS_CUDA=ON on a "
                           "machine with the CUDA toolkit, or use --device cpu)",
                           name, name);
    return ks_fail(KS_ERR_ARG, "--device %s: unknown device (known: cpu, cuda)", name);
}

int ks_backend_gpu_count(void) {
#ifdef KS_HAVE_CUDA
    return ks_backend_cuda_count();
#else
    return 0;
#endif
}

int64_t ks_backend_free_bytes(const char *device) {
    if (!strcmp(device, "cpu")) return (int64_t)sysconf(_SC_AVPHYS_PAGES) * sysconf(_SC_PAGESIZE);
#ifdef KS_HAVE_CUDA
    size_t free_bytes = 0;
    if (!strcmp(device, "cuda") && ks_backend_cuda_device(NULL, 0, NULL, NULL, &free_bytes) == KS_OK)
        return (int64_t)free_bytes;
#endif
    return 0;
}

ks_status ks_backend_use_gpu(int gpu) {
#ifdef KS_HAVE_CUDA
    return ks_backend_cuda_select(gpu);
#else
    return ks_fail(KS_ERR_UNSUPPORTED, "GPU %d: this kvscope build has no cuda backend (rebuild with -DKS_CUDA=ON)",
                   gpu);
#endif
}
