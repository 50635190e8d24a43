/* rng.h — deterministic random numbers for benchmark generation.
 *
 * Every RULER sample is a pure function of (run seed, task, length, index): its seed comes from
 * ks_rng_sample_seed(), and each independent part of a sample (needles, haystack items, insertion positions,
 * shuffles) draws from its own stream, ks_rng_init(&r, ks_rng_mix(seed, TAG)). Re-initialising a stream
 * replays it, which is how a generator rebuilds the same sample at a different haystack size.
 *
 *     uint64_t seed = ks_rng_sample_seed(42, "niah_single_1", 4096, 7);
 *     ks_rng r; ks_rng_init(&r, ks_rng_mix(seed, 1));
 *     int v = (int)ks_rng_range(&r, 1000000, 9999999);     // inclusive bounds
 *
 * Generator: xoshiro256** seeded through splitmix64 (Blackman & Vigna). Seeds are mixed with splitmix64's
 * finaliser and the task name with 64-bit FNV-1a, so nearby inputs give unrelated streams. The streams do not
 * reproduce CPython's Mersenne Twister: samples follow RULER's construction rules and statistics, not its
 * exact draws.
 */
#ifndef KS_RNG_H
#define KS_RNG_H

#include <stdint.h>

typedef struct ks_rng {
    uint64_t s[4]; /* xoshiro256** state */
} ks_rng;

/* splitmix64 finaliser of x + tag·golden: a strong 64-bit mix for deriving seeds. */
uint64_t ks_rng_mix(uint64_t x, uint64_t tag);
/* The per-sample seed from (run seed, task name, nominal length, index). */
uint64_t ks_rng_sample_seed(uint64_t run_seed, const char *task, int length, int index);

void ks_rng_init(ks_rng *r, uint64_t seed);
uint64_t ks_rng_u64(ks_rng *r);
/* Uniform in [0, n), n > 0, without modulo bias (Lemire's multiply-and-reject). */
uint64_t ks_rng_below(ks_rng *r, uint64_t n);
/* Uniform in [lo, hi], inclusive (Python random.randint). */
int64_t ks_rng_range(ks_rng *r, int64_t lo, int64_t hi);
/* Uniform in [0, 1) with 53 bits. */
double ks_rng_double(ks_rng *r);
/* Fisher–Yates shuffle of v[0..n). */
void ks_rng_shuffle(ks_rng *r, int *v, int n);
/* k distinct values from [0, n), k <= n, in ascending order (Floyd's algorithm; out has room for k). */
void ks_rng_sample_sorted(ks_rng *r, int n, int k, int *out);

#endif
