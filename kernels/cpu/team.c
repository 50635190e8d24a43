/* team.c — see team.h.
 *
 * A loop is published as one atomic word (loop number, item count, next item): a thread claims an item with a
 * compare-and-swap that also checks the loop number, so a helper that wakes late cannot take an item of a later
 * loop. fn and ctx are written before the word and change only once every item of the loop is done, so a
 * thread holding a claimed item reads them safely. The caller counts its own items and waits for `done` to reach
 * the rest. A helper announces itself in `sleepers` before its last look at the word and the caller publishes
 * the word before reading `sleepers` (both sequentially consistent): one of the two sees the other. */
#include "cpu/team.h"

#include <immintrin.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#define N_SHIFT 20
#define GEN_SHIFT 40
#define GEN_MASK ((UINT64_C(1) << 24) - 1)

static int64_t word_next(uint64_t w) { return (int64_t)(w & KS_TEAM_MAX_ITEMS); }
static int64_t word_n(uint64_t w) { return (int64_t)((w >> N_SHIFT) & KS_TEAM_MAX_ITEMS); }
static uint64_t word_loop(uint64_t w) { return w >> GEN_SHIFT; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The next items of loop `loop`: their count (0 when it has none left or is over), from *first on. A claim takes
 * a share of what is left (guided scheduling: the threads' first runs are long and the last ones single items), so
 * that each thread reads its rows as a few long streams and all finish together. */
static int64_t claim(ks_team *t, uint64_t loop, int64_t *first) {
    const int64_t parts = 2 * (t->n_helpers + 1);
    uint64_t w = atomic_load(&t->state);
    while (word_loop(w) == loop && word_next(w) < word_n(w)) {
        const int64_t share = (word_n(w) - word_next(w)) / parts, take = share > 1 ? share : 1;
        if (atomic_compare_exchange_weak(&t->state, &w, w + (uint64_t)take)) {
            *first = word_next(w);
            return take;
        }
    }
    return 0;
}

/* Items [first, first + count) of the current loop. */
static void run(const ks_team *t, int64_t first, int64_t count) {
    for (int64_t i = first; i < first + count; i++) t->fn(t->ctx, i);
}

/* A helper's share of loop `loop`. */
static void help(ks_team *t, uint64_t loop) {
    int took = 0;
    for (int64_t first, count; (count = claim(t, loop, &first)) > 0; took++) {
        if (!took) atomic_fetch_add(&t->joined, 1);
        run(t, first, count);
        atomic_fetch_add_explicit(&t->done, count, memory_order_release);
    }
}

static uint64_t current_loop(ks_team *t) { return word_loop(atomic_load(&t->state)); }

/* The number of the first loop after `seen` (or `seen` once the team stops): yielding the core while waiting up
 * to KS_TEAM_SPIN_NS (to whichever thread wants it: the OpenMP team's, another process'), then asleep on `wake`. */
static uint64_t wait_loop(ks_team *t, uint64_t seen) {
    const int64_t t0 = now_ns();
    for (int spin = 1;; spin++) {
        const uint64_t loop = current_loop(t);
        if (loop != seen || atomic_load(&t->stop)) return loop;
        if (spin % 64 == 0 && now_ns() - t0 > KS_TEAM_SPIN_NS) break;
        sched_yield();
    }
    pthread_mutex_lock(&t->lock);
    atomic_fetch_add(&t->sleepers, 1);
    uint64_t loop;
    while ((loop = current_loop(t)) == seen && !atomic_load(&t->stop)) pthread_cond_wait(&t->wake, &t->lock);
    atomic_fetch_sub(&t->sleepers, 1);
    pthread_mutex_unlock(&t->lock);
    return loop;
}

static void *helper_main(void *arg) {
    ks_team *t = arg;
    uint64_t seen = current_loop(t);
    for (;;) {
        const uint64_t loop = wait_loop(t, seen);
        if (atomic_load(&t->stop)) return NULL;
        help(t, loop);
        seen = loop;
    }
}

ks_status ks_team_init(ks_team *t, int threads) {
    *t = (ks_team){0};
    if (threads <= 1) return KS_OK;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    t->helpers = ks_malloc(sizeof *t->helpers * (size_t)(threads - 1), "team helper threads");
    if (!t->helpers) return KS_ERR_NOMEM;
    for (; t->n_helpers < threads - 1; t->n_helpers++)
        if (pthread_create(&t->helpers[t->n_helpers], NULL, helper_main, t)) {
            ks_team_free(t);
            return ks_fail(KS_ERR_NOMEM, "cannot start %d helper threads for the decode products (--threads %d)",
                           threads - 1, threads);
        }
    return KS_OK;
}

void ks_team_free(ks_team *t) {
    if (t->helpers) {
        pthread_mutex_lock(&t->lock);
        atomic_store(&t->stop, 1);
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->lock);
        for (int i = 0; i < t->n_helpers; i++) pthread_join(t->helpers[i], NULL);
        free(t->helpers);
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->wake);
    }
    *t = (ks_team){0};
}

/* Waits until the helpers finished `items` items; returns 1 when that took longer than KS_TEAM_STALL_NS (from
 * then on it yields the core, which may be the one a stalled helper waits for). */
static int wait_done(ks_team *t, int64_t items) {
    int64_t t0 = 0;
    int stalled = 0;
    for (int spin = 1; atomic_load_explicit(&t->done, memory_order_acquire) < items; spin++) {
        if (stalled) {
            sched_yield();
        } else if (spin % 64 == 0) {
            const int64_t now = now_ns();
            if (!t0) t0 = now;
            stalled = now - t0 > KS_TEAM_STALL_NS;
        } else {
            _mm_pause();
        }
    }
    return stalled;
}

ks_team_verdict ks_team_for(ks_team *t, int64_t n, ks_team_fn fn, void *ctx) {
    KS_ASSERT(n >= 0 && n <= KS_TEAM_MAX_ITEMS);
    if (!t->n_helpers) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return KS_TEAM_KEPT_UP;
    }
    t->fn = fn;
    t->ctx = ctx;
    atomic_store(&t->done, 0);
    atomic_store(&t->joined, 0);
    const uint64_t loop = (current_loop(t) + 1) & GEN_MASK;
    atomic_store(&t->state, loop << GEN_SHIFT | (uint64_t)n << N_SHIFT);
    const int asleep = atomic_load(&t->sleepers);
    if (asleep) {
        pthread_mutex_lock(&t->lock);
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->lock);
    }
    int64_t own = 0;
    for (int64_t first, count; (count = claim(t, loop, &first)) > 0; own += count) run(t, first, count);
    const int stalled = wait_done(t, n - own);
    if (asleep) return KS_TEAM_WOKEN;
    return !stalled && atomic_load(&t->joined) == t->n_helpers ? KS_TEAM_KEPT_UP : KS_TEAM_LATE;
}

/* A trial's steps alternate, the other way first, so that both ways see the same stretch of the run (a decode
 * step grows with the context). */
static int trial_other(const ks_team_pick *p) { return p->trial % 2 == 0; }

int ks_team_pick_begin(const ks_team_pick *p) { return p->trial && trial_other(p) ? !p->team : p->team; }

void ks_team_pick_end(ks_team_pick *p, double seconds, int late) {
    if (p->trial) {
        *(trial_other(p) ? &p->other : &p->chosen) += seconds;
        if (--p->trial) return;
        const double team_s = p->team ? p->chosen : p->other, alone_s = p->team ? p->other : p->chosen;
        const int team = team_s < KS_TEAM_PICK_EDGE * alone_s;
        if (team != p->team) { /* the other way wins: it runs from now on, tried against again soon */
            p->team = team;
            p->run = KS_TEAM_PICK_FIRST;
        } else {
            p->run = 2 * p->run < KS_TEAM_PICK_MAX ? 2 * p->run : KS_TEAM_PICK_MAX;
        }
        p->until = p->run;
        return;
    }
    if (p->until > 0) p->until--;
    if (p->until == 0 && (!p->team || late)) {
        p->trial = 2 * KS_TEAM_PICK_TRIAL;
        p->other = p->chosen = 0;
    }
}
