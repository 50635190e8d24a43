/* cpu_env.c — see cpu_env.h. */
#include "cli/cpu_env.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "cpu/fast.h"

void ks_cpu_env_settle(char **argv) {
    int set = 0;
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) set |= !setenv("GOMP_SPINCOUNT", KS_CPU_SPIN_COUNT, 1);
    const char *core = ks_fast_blas_coretype_hint();
    if (core && !getenv("OPENBLAS_CORETYPE")) set |= !setenv("OPENBLAS_CORETYPE", core, 1);
    if (!set) return;
    execv("/proc/self/exe", argv);
    ks_log_warn("could not restart with the CPU libraries' settings (GOMP_SPINCOUNT, OPENBLAS_CORETYPE): %s; "
                "running with their defaults", strerror(errno));
}
