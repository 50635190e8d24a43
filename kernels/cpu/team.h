/* team.h — helper threads that share the calling thread's short loops: the decode step's int8 products (quant.h),
 * tens of microseconds each and about 120 per SmolLM2 token. An OpenMP team costs each such loop a wake-up of its
 * sleeping threads (libgomp spins only briefly, cpu_env.h says why) that takes about as long as the loop; these
 * helpers stay awake between loops for a while instead, yielding the core while they wait, and sleep only after
 * KS_TEAM_SPIN_NS without work.
 *
 *     ks_team team;
 *     KS_TRY(ks_team_init(&team, threads)); // threads - 1 helpers
 *     ks_team_for(&team, n, body, ctx);     // body(ctx, i) for every i in [0, n), on all threads
 *     ks_team_free(&team);
 *
 * The team owns its helper threads. Items are claimed one at a time, in order, by whichever thread is free;
 * ks_team_for returns when every item is done. A helper the scheduler keeps off the cores delays the loop only by
 * the item it holds; ks_team_for reports it (and a helper that took no item) so that the caller can run the next
 * loops alone. One thread calls ks_team_for at a time; body must not call it.
 */
#ifndef KS_KERNELS_TEAM_H
#define KS_KERNELS_TEAM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/status.h"

#define KS_TEAM_SPIN_NS 1000000 /* a helper's wait for a loop before it sleeps: longer than a decode step's gaps */
#define KS_TEAM_STALL_NS 50000  /* a wait for the helpers' last items longer than this: one was off the cores */

typedef void (*ks_team_fn)(void *ctx, int64_t item);

typedef struct ks_team {
    pthread_t *helpers; /* (n_helpers) */
    int n_helpers;
    /* the current loop: its number (bits 40..63), item count (20..39) and next unclaimed item (0..19) */
    _Atomic uint64_t state;
    char apart[64];         /* `done` on another cache line than `state`: both are written per item */
    _Atomic int64_t done;   /* items of the current loop finished */
    _Atomic int joined;     /* helpers that took an item of the current loop */
    _Atomic int sleepers;   /* helpers asleep on `wake` */
    _Atomic int stop;
    ks_team_fn fn;          /* the current loop's body and context, stable while it has unfinished items */
    void *ctx;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} ks_team;

#define KS_TEAM_MAX_ITEMS ((1 << 20) - 1)

/* threads - 1 helpers (none for threads <= 1: ks_team_for then runs the loop on the caller). */
ks_status ks_team_init(ks_team *t, int threads);
void ks_team_free(ks_team *t); /* accepts a zeroed struct */

/* How the helpers did in one loop. */
typedef enum ks_team_verdict {
    KS_TEAM_KEPT_UP, /* every helper took an item, none kept the caller waiting past KS_TEAM_STALL_NS (or none) */
    KS_TEAM_LATE,    /* a helper that was awake took no item, or kept the caller waiting */
    KS_TEAM_WOKEN,   /* a helper was asleep when the loop began: woken, not judged (it could not come in time) */
} ks_team_verdict;

/* fn(ctx, i) for every i in [0, n), n <= KS_TEAM_MAX_ITEMS. */
ks_team_verdict ks_team_for(ks_team *t, int64_t n, ks_team_fn fn, void *ctx);

/* Whether the loops of a repeated unit of work (a decode step) use the team or run on the caller alone, chosen
 * by timing whole steps both ways: on shared cores a step with the team can lose to one thread even when few
 * loops look late. Steps use the team until one of its loops is late (KS_TEAM_LATE); then a trial runs
 * KS_TEAM_PICK_TRIAL steps the other way and as many the chosen way, alternating, and the team keeps or takes
 * the steps when its total is below KS_TEAM_PICK_EDGE times the alone total (a team that only draws with one
 * thread costs the cores a helper's spinning and risks its late loops). The other way is tried again after a run of the chosen one (the team: at its next late loop after
 * the run) that starts at KS_TEAM_PICK_FIRST steps and doubles up to KS_TEAM_PICK_MAX while the choice holds.
 * On cores nobody else uses no loop is late and every step keeps the team.
 *
 *     ks_team_pick pick = KS_TEAM_PICK_INIT;
 *     int team = ks_team_pick_begin(&pick);      // this step's way
 *     ... the step's loops, on the team only when `team`; late = whether one came back KS_TEAM_LATE ...
 *     ks_team_pick_end(&pick, seconds, late);
 */
#define KS_TEAM_PICK_TRIAL 3
#define KS_TEAM_PICK_FIRST 32
#define KS_TEAM_PICK_MAX 2048
#define KS_TEAM_PICK_EDGE 0.95

typedef struct ks_team_pick {
    int team;            /* the chosen way: 1 the team, 0 the caller alone */
    int trial;           /* steps of the running trial left (even: the other way's turn); 0: none */
    int until;           /* steps of the chosen way before the other may be tried again */
    int run;             /* the length of the next such run */
    double other, chosen; /* the running trial's step seconds each way, summed */
} ks_team_pick;

#define KS_TEAM_PICK_INIT ((ks_team_pick){.team = 1, .run = KS_TEAM_PICK_FIRST})

/* 1 when this step's loops may use the team. */
int ks_team_pick_begin(const ks_team_pick *p);
/* The step took `seconds`; `late`: one of its team loops was late. */
void ks_team_pick_end(ks_team_pick *p, double seconds, int late);

#endif
