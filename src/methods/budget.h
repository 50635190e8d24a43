/* budget.h — token budgets of the KV methods: counts or ratios of the prompt, and the per-layer allocations of
 * PyramidKV and CakeKV computed exactly as their reference code does (integer division, truncation and the
 * order of the adjustments included), so the budgets equal the references' exactly.
 *
 *     ks_budget b;
 *     if (!ks_budget_parse("10%", &b)) ...bad value...;       // "2048" tokens, "0.1" or "10%" of the prompt
 *     int tokens = ks_budget_tokens(&b, n_prompt, 0);          // floor(0.1 * n_prompt)
 *     int k[32];  ks_pyramid_budgets(2048, 32, 20, 32768, 32, k);   // past tokens per layer
 *     ks_cake_allocate(pref, n_layers, total, L - W, budgets);       // CakeKV's layer budgets
 */
#ifndef KS_BUDGET_H
#define KS_BUDGET_H

#include <stdint.h>

typedef struct ks_budget {
    int is_ratio; /* 1: ratio of the prompt length; 0: a token count */
    double ratio; /* > 0 when is_ratio */
    int tokens;   /* >= 0 when !is_ratio */
} ks_budget;

/* "2048" is a token count; "0.25" (anything with a decimal point or exponent) or "25%" is a ratio of the prompt
 * length, which must be in (0, 1]: above 100% a method keeps the whole prompt, so a larger ratio is a slip (a
 * count or a percentage meant). Returns 1 on success, 0 for anything else (the caller names the knob). */
int ks_budget_parse(const char *text, ks_budget *b);

/* Tokens for a prompt of n_prompt tokens: the count, or floor(ratio * n_prompt) (round_up: ceil, as
 * L2Compress's authors round), never negative. */
int ks_budget_tokens(const ks_budget *b, int n_prompt, int round_up);

/* PyramidKV's branches for a prompt of L tokens with capacity C and window W. */
typedef enum ks_pyramid_branch {
    KS_PYRAMID_NONE,    /* L < C: nothing is compressed */
    KS_PYRAMID_UNIFORM, /* C <= L < 2(C - W): SnapKV with C - W past tokens in every layer */
    KS_PYRAMID_LAYERED, /* otherwise: layer l keeps k_l past tokens */
} ks_pyramid_branch;

/* Past tokens (the window excluded) each of n_layers layers keeps, k (n_layers), as PyramidKV's reference
 * computes them:
 *     min = (C - W) // beta;  max = 2(C - W) - min;  if max >= L - W: max = L - W, min = 2(C - W) - max
 *     steps = (max - min) // (N - 1);  k_l = max - l * steps
 * with Python's floor division, clipped to [0, L - W]; N = 1 takes steps = 0 (the reference divides by zero).
 * In the NONE branch k_l = L - W (everything), in the UNIFORM branch C - W. Returns the branch. */
ks_pyramid_branch ks_pyramid_budgets(int C, int W, int beta, int L, int n_layers, int *k);

/* CakeKV's `adjust_budgets` (cake/utils.py) on budgets already truncated to integers, in place: cap each at
 * seq_len and share the excess equally among the layers below the cap (the remainder to the first of them),
 * then add or remove the difference to `total` evenly (over the layers below seq_len when adding, over those
 * above 1 when removing; remainder to the first). Like the reference it does not re-clip afterwards. */
void ks_cake_adjust(int *budget, int n, int64_t total, int seq_len);

/* CakeKV's layer budgets (CakeprefillKVCache): budget_i = int(pref_i / sum(pref) * total), then
 * ks_cake_adjust. A sum of preferences that is not positive and finite gives every layer total / n before the
 * adjustment (the reference would divide by zero). */
void ks_cake_allocate(const double *pref, int n, int64_t total, int seq_len, int *budget);

#endif
