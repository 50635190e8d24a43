/* budget.c — see budget.h. */
#include "methods/budget.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int ks_budget_parse(const char *text, ks_budget *b) {
    char *end;
    size_t n = strlen(text);
    if (!n) return 0;
    if (text[n - 1] == '%' || strpbrk(text, ".eE")) {
        errno = 0;
        double r = strtod(text, &end);
        int pct = *end == '%';
        double ratio = pct ? r / 100 : r;
        if (errno || end == text || *(end + pct) || !isfinite(r) || ratio <= 0 || ratio > 1) return 0;
        *b = (ks_budget){.is_ratio = 1, .ratio = ratio};
        return 1;
    }
    errno = 0;
    long t = strtol(text, &end, 10);
    if (errno || end == text || *end || t < 0 || t > 1000000000L) return 0;
    *b = (ks_budget){.tokens = (int)t};
    return 1;
}

int ks_budget_tokens(const ks_budget *b, int n_prompt, int round_up) {
    if (!b->is_ratio) return b->tokens;
    double t = b->ratio * n_prompt;
    t = round_up ? ceil(t - 1e-9 * t) : floor(t + 1e-9 * t); /* 0.1 * 30 is 3, not 2.9999999999999996 */
    return t < 0 ? 0 : t > 1e9 ? 1000000000 : (int)t;
}

/* Python's a // b (rounds toward -infinity). */
static int floordiv(int a, int b) {
    int q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

ks_pyramid_branch ks_pyramid_budgets(int C, int W, int beta, int L, int n_layers, int *k) {
    int past = L - W > 0 ? L - W : 0;
    ks_pyramid_branch br = L < C ? KS_PYRAMID_NONE : L < 2 * (C - W) ? KS_PYRAMID_UNIFORM : KS_PYRAMID_LAYERED;
    int min_num = floordiv(C - W, beta), max_num = 2 * (C - W) - min_num;
    if (max_num >= L - W) {
        max_num = L - W;
        min_num = 2 * (C - W) - max_num;
    }
    int steps = n_layers > 1 ? floordiv(max_num - min_num, n_layers - 1) : 0;
    for (int l = 0; l < n_layers; l++) {
        int kl = br == KS_PYRAMID_NONE ? past : br == KS_PYRAMID_UNIFORM ? C - W : max_num - l * steps;
        k[l] = kl < 0 ? 0 : kl > past ? past : kl;
    }
    return br;
}

/* Whether layer i takes part in a share-out: below the cap when adding, above 1 when removing. Each test
 * reads only budget[i], and every layer is tested before it changes, so testing while sharing out equals the
 * reference's mask computed up front. */
static int shares(int b, int adding, int seq_len) { return adding ? b < seq_len : b > 1; }

/* budget[i] += sign * (per + 1 for the first `rem` sharing layers) over the sharing layers, per = mag / count. */
static void share_out(int *budget, int n, int64_t mag, int sign, int seq_len) {
    int64_t count = 0;
    for (int i = 0; i < n; i++) count += shares(budget[i], sign > 0, seq_len);
    if (count == 0) return;
    int64_t per = mag / count, rem = mag % count;
    for (int i = 0; i < n; i++)
        if (shares(budget[i], sign > 0, seq_len)) budget[i] += sign * (int)(per + (rem-- > 0));
}

void ks_cake_adjust(int *budget, int n, int64_t total, int seq_len) {
    int64_t excess = 0, sum = 0;
    for (int i = 0; i < n; i++)
        if (budget[i] > seq_len) excess += budget[i] - seq_len, budget[i] = seq_len;
    if (excess > 0) share_out(budget, n, excess, 1, seq_len);
    for (int i = 0; i < n; i++) sum += budget[i];
    if (total != sum) share_out(budget, n, total > sum ? total - sum : sum - total, total > sum ? 1 : -1, seq_len);
}

void ks_cake_allocate(const double *pref, int n, int64_t total, int seq_len, int *budget) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += pref[i];
    for (int i = 0; i < n; i++) {
        double raw = sum > 0 && isfinite(sum) ? pref[i] / sum * (double)total : (double)total / n;
        budget[i] = raw > 0 ? (int)raw : 0; /* numpy's int cast truncates */
    }
    ks_cake_adjust(budget, n, total, seq_len);
}
