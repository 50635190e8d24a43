/* ruler_vt.c — variable tracking (RULER variable_tracking.py).
 *
 * One chain of num_hops + 1 = 5 variables, "VAR A = 12345", "VAR B = VAR A ", ..., hidden among n noise
 * lines (the unit of haystack size); the answer is the chain's names in order. Every sample starts with an
 * in-context example built the same way (3-letter names) and sized to 500 tokens.
 *
 * RULER: lines joined by "\n"; the example is followed by one "\n" and keeps the full template.
 * LOOM's quirks: noise lines carry their own "\n" and are joined by " "; the example's template drops
 * its last word ("above.") and its newlines, its answer follows " as", its names are re-randomised by string
 * replacement, and it is framed as " " + example + "\n\n"; the answer prefix keeps the typo "assgined". */
#include <stdlib.h>
#include <string.h>

#include "bench/ruler_impl.h"

static const char TEMPLATE[] = "Memorize and track the chain(s) of variable assignment hidden in the following "
                               "text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in "
                               "the text above.";
static const char PREFIX_RULER[] = " Answer: According to the chain(s) of variable assignment in the text above, "
                                   "{num_v} variables are assigned the value {query}, they are: ";
static const char PREFIX_LOOM[] = " Answer: According to the chain(s) of variable assignment in the text above, "
                                  "{num_v} variables are assgined the value {query}, they are: ";
#define NOISE "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

#define HOPS 4
#define N_VARS (HOPS + 1)
#define ICL_LENGTH 500 /* the example's max_seq_length */

typedef struct vt_state {
    char names[N_VARS][8];   /* chain variables in order: the answer */
    char value[8];           /* the 5-digit value assigned to names[0] */
    char stmts[N_VARS][32];  /* "VAR A = 12345", "VAR B = VAR A ", ... */
    char *tmpl;              /* owned: the template (LOOM's example uses a cut-down one) */
    const char *prefix;
    char *icl;               /* owned: the framed in-context example put before the task; NULL for the example */
    double fixed, unit, chain_cost;
} vt_state;

/* k random upper-case letters (random.choices(ascii_uppercase, k=k)). */
static void random_name(ks_rng *g, int k, char *out) {
    for (int i = 0; i < k; i++) out[i] = (char)('A' + ks_rng_below(g, 26));
    out[k] = 0;
}

static void draw_chain(vt_state *s, ks_rng *g, int name_len) {
    for (int i = 0; i < N_VARS; i++) {
        int dup;
        do { /* RULER redraws until the names are distinct */
            random_name(g, name_len, s->names[i]);
            dup = 0;
            for (int k = 0; k < i; k++) dup |= !strcmp(s->names[k], s->names[i]);
        } while (dup);
    }
    snprintf(s->value, sizeof s->value, "%d", (int)ks_rng_range(g, 10000, 99998)); /* np.random.randint(10000, 99999) */
    snprintf(s->stmts[0], sizeof s->stmts[0], "VAR %s = %s", s->names[0], s->value);
    for (int i = 1; i < N_VARS; i++)
        snprintf(s->stmts[i], sizeof s->stmts[i], "VAR %s = VAR %s ", s->names[i], s->names[i - 1]);
}

/* LOOM's example template: ' '.join(template[:answer prefix].split()[:-1]). */
static char *loom_icl_template(void) {
    ks_strbuf sb = {0};
    const char *p = TEMPLATE;
    const char *last = NULL; /* start of the last whitespace-separated word */
    for (const char *q = p; *q; q++)
        if ((q == p || q[-1] == ' ' || q[-1] == '\n') && *q != ' ' && *q != '\n') last = q;
    for (const char *q = p; q < last; q++) {
        if (*q == ' ' || *q == '\n') {
            if (sb.len && sb.s[sb.len - 1] != ' ') ks_strbuf_append(&sb, " ", 1);
        } else {
            ks_strbuf_append(&sb, q, 1);
        }
    }
    while (sb.len && sb.s[sb.len - 1] == ' ') sb.s[--sb.len] = 0;
    return ks_strbuf_take(&sb);
}

static void put_prompt(ruler_job *j, const char *context) {
    vt_state *s = j->state;
    char num_v[8];
    snprintf(num_v, sizeof num_v, "%d", N_VARS);
    const char *keys[] = {"context", "query", "num_v"};
    const char *vals[] = {context, s->value, num_v};
    if (s->icl) ks_strbuf_appendz(&j->text, s->icl);
    ruler_put_template(j, s->tmpl, s->prefix, keys, vals, 3);
}

/* The context at n noise lines: statement i goes before line pos[i]. */
static void build_context(const ruler_job *j, long n, ks_strbuf *ctx) {
    const vt_state *s = j->state;
    int loom = j->r->loom, pos[N_VARS];
    ks_rng p;
    ks_rng_init(&p, ks_rng_mix(j->seed, j->is_icl ? RNG_ICL : RNG_POSITIONS));
    ks_rng_sample_sorted(&p, (int)n, N_VARS, pos);
    const char *sep = loom ? " " : "\n";
    int next = 0, first = 1;
    for (long line = 0; line < n; line++) {
        for (; next < N_VARS && pos[next] == line; next++, first = 0) {
            if (!first) ks_strbuf_appendz(ctx, sep);
            ks_strbuf_appendz(ctx, s->stmts[next]);
        }
        if (!first) ks_strbuf_appendz(ctx, sep);
        ks_strbuf_appendz(ctx, NOISE);
        if (loom) ks_strbuf_append(ctx, "\n", 1);
        first = 0;
    }
    ks_strbuf_replace_all(ctx, ". \n", ".\n");
}

static ks_status vt_build(ruler_job *j, long n) {
    ks_strbuf ctx = {0};
    build_context(j, n, &ctx);
    ks_status st = ks_strbuf_status(&ctx, "a vt haystack");
    if (st == KS_OK) put_prompt(j, ctx.s);
    ks_strbuf_free(&ctx);
    return st;
}

static double vt_estimate(const ruler_job *j, long n) {
    const vt_state *s = j->state;
    return s->fixed + s->unit * (double)n + s->chain_cost;
}

static ks_status measure(ruler_job *j) {
    vt_state *s = j->state;
    ks_ruler *r = j->r;
    int c = 0, c0 = 0;
    put_prompt(j, "");
    KS_TRY(ks_strbuf_status(&j->text, "a vt prompt"));
    KS_TRY(ruler_tokens(r, j->text.s, j->text.len, &c));
    ks_strbuf_reset(&j->text);
    s->fixed = c;
    const char *line = r->loom ? NOISE "\n " : NOISE "\n";
    KS_TRY(ruler_tokens(r, line, strlen(line), &c0));
    KS_TRY(ruler_tokens2(r, line, line, &c));
    s->unit = c - c0;
    s->chain_cost = 0;
    for (int i = 0; i < N_VARS; i++) {
        KS_TRY(ruler_tokens2(r, line, s->stmts[i], &c));
        s->chain_cost += c - c0;
    }
    return KS_OK;
}

static ks_status vt_release_and(ruler_job *j, ks_status st);

/* The framed in-context example for sample j (a nested job sized to 500 tokens). */
static ks_status make_icl(ruler_job *j, char **out) {
    ks_ruler *r = j->r;
    vt_state *s = ks_calloc(1, sizeof *s, "a vt example");
    if (!s) return KS_ERR_NOMEM;
    ruler_job ex = {.r = r, .t = j->t, .length = ICL_LENGTH, .seed = j->seed, .is_icl = 1, .state = s};
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_EXAMPLE));
    draw_chain(s, &g, 3);
    s->prefix = r->loom ? PREFIX_LOOM : PREFIX_RULER;
    s->tmpl = r->loom ? loom_icl_template() : ks_strndup(TEMPLATE, sizeof TEMPLATE - 1);
    if (!s->tmpl) return vt_release_and(&ex, KS_ERR_NOMEM);
    ks_status st = measure(&ex);
    ex.n_min = N_VARS;
    ex.n_max = ICL_LENGTH;
    int tokens = 0;
    /* RULER sizes the example with nothing to generate; LOOM charges the 30 tokens and a Python list repr of
     * the answer (~20 tokens) to it. */
    if (st == KS_OK) st = ruler_fit(&ex, &ks_ruler_vt_ops, r->loom ? ICL_LENGTH - 50 : ICL_LENGTH, &tokens);
    ks_strbuf e = {0};
    if (st == KS_OK) {
        if (r->loom) ks_strbuf_append(&e, " ", 1);
        ks_strbuf_append(&e, ex.text.s, ex.text.len);
        ks_strbuf_appendz(&e, r->loom ? " as" : " ");
        for (int i = 0; i < N_VARS; i++) ks_strbuf_appendf(&e, i ? " %s" : "%s", s->names[i]);
        ks_strbuf_appendz(&e, r->loom ? "\n\n\n\n" : "\n\n");
        if (r->loom) { /* randomize_icl: replace each item after "they are: " by random letters, everywhere */
            const char *cut = strstr(e.s ? e.s : "", "they are: ");
            char items[N_VARS][16];
            int n_items = 0;
            for (const char *q = cut ? cut + 10 : ""; *q && n_items < N_VARS;) {
                while (*q == ' ' || *q == '\n') q++;
                size_t len = strcspn(q, " \n");
                if (!len || len >= sizeof items[0]) break;
                memcpy(items[n_items], q, len);
                items[n_items++][len] = 0;
                q += len;
            }
            for (int i = 0; i < n_items; i++) {
                char fresh[16];
                random_name(&g, (int)strlen(items[i]), fresh);
                ks_strbuf_replace_all(&e, items[i], fresh);
            }
        }
        st = ks_strbuf_status(&e, "the vt example");
    }
    if (st == KS_OK) *out = ks_strbuf_take(&e);
    ks_strbuf_free(&e);
    return vt_release_and(&ex, st);
}

static ks_status vt_prepare(ruler_job *j) {
    vt_state *s = ks_calloc(1, sizeof *s, "a vt sample");
    if (!s) return KS_ERR_NOMEM;
    j->state = s;
    ks_rng g;
    ks_rng_init(&g, ks_rng_mix(j->seed, RNG_NEEDLES));
    draw_chain(s, &g, 5);
    s->prefix = j->r->loom ? PREFIX_LOOM : PREFIX_RULER;
    s->tmpl = ks_strndup(TEMPLATE, sizeof TEMPLATE - 1);
    if (!s->tmpl) return KS_ERR_NOMEM;
    KS_TRY(make_icl(j, &s->icl));
    const char *answers[N_VARS];
    for (int i = 0; i < N_VARS; i++) answers[i] = s->names[i];
    KS_TRY(ruler_set_answers(j, answers, N_VARS));
    KS_TRY(measure(j));
    j->n_min = N_VARS;
    j->n_max = j->length;
    return KS_OK;
}

static void vt_release(ruler_job *j) {
    vt_state *s = j->state;
    if (!s) return;
    free(s->tmpl);
    free(s->icl);
    free(s);
    j->state = NULL;
}

static ks_status vt_release_and(ruler_job *j, ks_status st) {
    vt_release(j);
    ks_strbuf_free(&j->text);
    return st;
}

const ruler_gen_ops ks_ruler_vt_ops = {vt_prepare, vt_estimate, vt_build, vt_release};
