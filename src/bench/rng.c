/* rng.c — see rng.h. */
#include "bench/rng.h"

#include "core/status.h"

#define GOLDEN 0x9E3779B97F4A7C15ULL

uint64_t ks_rng_mix(uint64_t x, uint64_t tag) {
    uint64_t z = x + (tag + 1) * GOLDEN;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t ks_rng_sample_seed(uint64_t run_seed, const char *task, int length, int index) {
    uint64_t h = 0xCBF29CE484222325ULL; /* FNV-1a of the task name */
    for (const unsigned char *p = (const unsigned char *)task; *p; p++) h = (h ^ *p) * 0x100000001B3ULL;
    uint64_t s = ks_rng_mix(run_seed, h);
    s = ks_rng_mix(s, (uint64_t)(uint32_t)length);
    return ks_rng_mix(s, (uint64_t)(uint32_t)index);
}

void ks_rng_init(ks_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = ks_rng_mix(seed, (uint64_t)i);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ks_rng_u64(ks_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t ks_rng_below(ks_rng *r, uint64_t n) {
    KS_ASSERT(n > 0);
    __uint128_t m = (__uint128_t)ks_rng_u64(r) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (__uint128_t)ks_rng_u64(r) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

int64_t ks_rng_range(ks_rng *r, int64_t lo, int64_t hi) {
    KS_ASSERT(lo <= hi);
    return lo + (int64_t)ks_rng_below(r, (uint64_t)(hi - lo) + 1);
}

double ks_rng_double(ks_rng *r) { return (double)(ks_rng_u64(r) >> 11) * 0x1.0p-53; }

void ks_rng_shuffle(ks_rng *r, int *v, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ks_rng_below(r, (uint64_t)i + 1);
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

void ks_rng_sample_sorted(ks_rng *r, int n, int k, int *out) {
    KS_ASSERT(k >= 0 && k <= n);
    int m = 0;
    for (int j = n - k; j < n; j++) {
        int t = (int)ks_rng_below(r, (uint64_t)j + 1), seen = 0;
        for (int i = 0; i < m && !seen; i++) seen = out[i] == t;
        out[m++] = seen ? j : t;
    }
    for (int i = 1; i < m; i++) /* insertion sort: k is a handful of needles or chain links */
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
}
