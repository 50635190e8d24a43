/* mpi_stage.c — the pipeline stages' link under mpirun: `mpi_stage K` (the job's ranks in instances of K
 * stages) passes numbered chunks down every instance's stages, each stage adding its stage number, and the last
 * stage's sum back to all by broadcast; every rank checks what it got against the arithmetic. `mpi_stage K hang
 * T`: the last stage of instance 0 never answers; its predecessor must end the job within T + a few seconds with
 * one error line naming that stage (tests/CMakeLists.txt checks the line and the time). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "ks_mpi.h"
#include "stage.h"
#include "stage_link.h"

enum { CHUNKS = 6, ROWS = 300, HIDDEN = 2, STATS = 3 };

static int fail_line(int line, const char *what) {
    fprintf(stderr, "mpi_stage: check failed at line %d: %s (%s)\n", line, what, ks_last_error());
    return 1;
}
#define CHECK(c) do { if (!(c)) return fail_line(__LINE__, #c); } while (0)

static int run(const ks_mpi *m, int k, int hang, double timeout_s) {
    ks_gp_num g = {.stages = k, .per_gpu = 1};
    ks_stage_layout s;
    CHECK(ks_stage_layout_init(&s, &g, m->size, m->rank, 32) == KS_OK);
    ks_stage_link link;
    CHECK(ks_stage_link_init(&link, m, &s, timeout_s) == KS_OK);
    float rows[ROWS];
    for (int c = 0; c < CHUNKS; c++) {
        ks_stage_link_context(&link, "chunk %d", c);
        if (s.stage == 0)
            for (int i = 0; i < ROWS; i++) rows[i] = (float)(1000 * s.instance + 10 * c + i);
        else
            CHECK(ks_stage_link_recv(&link, s.stage - 1, HIDDEN, rows, sizeof rows) == KS_OK);
        for (int i = 0; i < ROWS; i++) rows[i] += (float)s.stage;
        if (s.stage + 1 < s.n_stages) {
            CHECK(ks_stage_link_send(&link, s.stage + 1, HIDDEN, rows, sizeof rows) == KS_OK);
            continue;
        }
        if (hang && s.instance == 0) pause(); /* the predecessor's next send waits on it, bounded */
        /* the last stage's rows: stage 0's plus 0 + 1 + ... + (k - 1) */
        for (int i = 0; i < ROWS; i++) CHECK(rows[i] == (float)(1000 * s.instance + 10 * c + i + k * (k - 1) / 2));
    }
    int token = s.stage == s.n_stages - 1 ? 4242 + s.instance : -1;
    CHECK(ks_stage_link_bcast(&link, s.n_stages - 1, &token, sizeof token) == KS_OK);
    CHECK(token == 4242 + s.instance);
    if (s.n_stages > 1) { /* a size mismatch is an error, not garbage */
        if (s.stage == 1) CHECK(ks_stage_link_send(&link, 0, STATS, rows, 8) == KS_OK);
        if (s.stage == 0) CHECK(ks_stage_link_recv(&link, 1, STATS, rows, 12) == KS_ERR_MPI);
    }
    ks_stage_link_free(&link);
    return 0;
}

int main(int argc, char **argv) {
    ks_mpi m;
    if (ks_mpi_init(&m, &argc, &argv) != KS_OK) return 1;
    int k = argc > 1 ? atoi(argv[1]) : 1, hang = argc > 2 && !strcmp(argv[2], "hang");
    double timeout_s = argc > 3 ? atof(argv[3]) : 60;
    int rc = run(&m, k, hang, timeout_s);
    if (!rc && m.rank == 0) printf("mpi_stage: %d ranks in instances of %d stages: ok\n", m.size, k);
    if (rc) ks_mpi_abort(&m, 1);
    ks_mpi_finalize(&m);
    return rc;
}
