/* select.c — see select.h. */
#include "methods/select.h"

#include <math.h>

#include "core/status.h"
#include "kv_args.h" /* ks_order_key */

void ks_select_pool(float *out, const float *in, int n, int k, ks_pool mode) {
    KS_ASSERT(k >= 1 && k % 2 == 1 && out != in);
    int r = k / 2;
    for (int j = 0; j < n; j++) {
        int lo = j - r < 0 ? 0 : j - r, hi = j + r + 1 > n ? n : j + r + 1;
        if (mode == KS_POOL_AVG) {
            double s = 0; /* padding contributes zeros, and the divisor stays k */
            for (int i = lo; i < hi; i++) s += in[i];
            out[j] = (float)(s / k);
        } else {
            float m = -INFINITY;
            for (int i = lo; i < hi; i++) m = in[i] > m ? in[i] : m;
            out[j] = m;
        }
    }
}

int ks_select_topk(int32_t *idx, const float *s, int n, int k) {
    if (k <= 0 || n <= 0) return 0;
    if (k >= n) {
        for (int i = 0; i < n; i++) idx[i] = i;
        return n;
    }
    if (k == n - 1) { /* one out (a decode-time eviction): the lowest key, the latest of equal ones; one pass */
        int drop = 0, m = 0;
        for (int i = 1; i < n; i++)
            if (ks_order_key(s[i]) <= ks_order_key(s[drop])) drop = i;
        for (int i = 0; i < n; i++)
            if (i != drop) idx[m++] = i;
        return m;
    }
    /* Find the k-th largest key T byte by byte from the top; `need` ends as how many keys equal to T are
     * taken (the earliest ones), all keys above T being taken. */
    uint32_t prefix = 0, mask = 0;
    int need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        int hist[256] = {0};
        for (int i = 0; i < n; i++) {
            uint32_t key = ks_order_key(s[i]);
            if ((key & mask) == prefix) hist[(key >> shift) & 0xFF]++;
        }
        int b = 255;
        while (hist[b] < need) need -= hist[b--];
        prefix |= (uint32_t)b << shift;
        mask |= 0xFFu << shift;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        uint32_t key = ks_order_key(s[i]);
        if (key > prefix || (key == prefix && need-- > 0)) idx[m++] = i;
    }
    KS_ASSERT(m == k);
    return m;
}
