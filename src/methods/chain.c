/* chain.c — see chain.h: creating a method or a composition of methods, its sense checks and its options. */
#include "methods/chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "methods/knobs.h"

/* Parts parsed before the checks say which are too many: more than a composition holds (KS_METHOD_MAX_PARTS). */
#define PARSE_MAX 8

ks_status ks_method_parse(const char *name, const ks_method_ops **parts, int *n) {
    *n = 0;
    for (const char *p = name;; p++) {
        const char *plus = strchr(p, '+'), *end = plus ? plus : p + strlen(p);
        char part[256];
        if (end == p || end - p >= (long)sizeof part)
            return ks_fail(KS_ERR_ARG, "--acceleration %s: %s part (write the parts joined by '+', e.g. SnapKV+KIVI)",
                           name, end == p ? "an empty" : "an over-long");
        if (*n == PARSE_MAX)
            return ks_fail(KS_ERR_ARG, "--acceleration %s: more than %d parts (a composition takes one per role: "
                           "sparse prefill, selection, merging, channel pruning, quantization)", name, PARSE_MAX);
        snprintf(part, sizeof part, "%.*s", (int)(end - p), p);
        ks_status st = ks_method_find(part, &parts[*n]);
        if (st != KS_OK) return plus || p != name ? ks_fail_context(st, "in the composition %s", name) : st;
        ++*n;
        if (!plus) return KS_OK;
        p = plus;
    }
}

/* ---- sense checks ------------------------------------------------------------------------------------- */

/* Indexed by role - KS_ROLE_PREFILL. */
static const char *const role_plural[] = {"sparse-prefill methods", "selection methods", "merging methods",
                                          "channel-pruning methods", "quantizers"};

/* A selection that drops rows at the prompt's end or while decoding (FullKV never does). */
static int evicts(const ks_method_ops *o) { return o->after_prefill_layer || o->on_decode_step; }

/* The registry's selections that compress at the prompt's end only, "SnapKV, L2Compress, ...": what a
 * needs_stable_rows part can follow. */
static void prompt_end_selections(char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (const ks_method_ops *const *o = ks_methods; *o; o++)
        if ((*o)->role == KS_ROLE_SELECT && (*o)->after_prefill_layer && !(*o)->on_decode_step)
            n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", n ? ", " : "", (*o)->name);
}

/* A part that does nothing in a composition: a selection that never evicts. */
static ks_status check_never_evicts(const char *name, const ks_method_ops *const *p, int n) {
    for (int i = 0; i < n; i++) {
        if (p[i]->role != KS_ROLE_SELECT || evicts(p[i])) continue;
        for (int j = 0; j < n; j++)
            if (p[j]->role == KS_ROLE_MERGE)
                return ks_fail(KS_ERR_ARG, "--acceleration %s: %s with a method that never evicts (%s keeps every "
                               "row, so nothing is merged); put a selection method before it, e.g. SnapKV+%s",
                               name, p[j]->name, p[i]->name, p[j]->name);
        return ks_fail(KS_ERR_ARG, "--acceleration %s: %s keeps the whole cache and cannot be a part of a "
                       "composition; leave it out", name, p[i]->name);
    }
    return KS_OK;
}

/* At most one part of each role. */
static ks_status check_roles_distinct(const char *name, const ks_method_ops *const *p, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (p[i]->role == p[j]->role)
                return ks_fail(KS_ERR_ARG, "--acceleration %s: two %s (%s, %s); a composition takes at most one",
                               name, role_plural[p[i]->role - KS_ROLE_PREFILL], p[i]->name, p[j]->name);
    return KS_OK;
}

/* The parts in role order; else the order to write. */
static ks_status check_order(const char *name, const ks_method_ops *const *p, int n) {
    int sorted = 1;
    for (int i = 1; i < n; i++) sorted &= p[i - 1]->role < p[i]->role;
    if (sorted) return KS_OK;
    char want[KS_METHOD_NAME_MAX];
    size_t len = 0;
    for (int role = KS_ROLE_PREFILL; role <= KS_ROLE_QUANT; role++)
        for (int i = 0; i < n; i++)
            if ((int)p[i]->role == role)
                len += (size_t)snprintf(want + len, sizeof want - len, "%s%s", len ? "+" : "", p[i]->name);
    return ks_fail(KS_ERR_ARG, "--acceleration %s: the parts go in the order selection, merging, channel pruning, "
                   "quantization: write %s (a sparse-prefill part goes first)", name, want);
}

/* A MERGE part merges what a selection drops at the prompt's end: it needs one that does not evict while decoding
 * (those evictions happen inside the store, past before_compact); nor can a needs_stable_rows part follow one. */
static ks_status check_needs(const char *name, const ks_method_ops *const *p, int n) {
    const ks_method_ops *sel = NULL; /* the roles are distinct */
    for (int i = 0; i < n; i++)
        if (p[i]->role == KS_ROLE_SELECT) sel = p[i];
    for (int i = 0; i < n; i++) {
        if (p[i]->role == KS_ROLE_MERGE && !sel)
            return ks_fail(KS_ERR_ARG, "--acceleration %s: %s merges the rows a selection drops and needs a "
                           "selection method before it, e.g. SnapKV+%s", name, p[i]->name, p[i]->name);
        if (p[i]->role == KS_ROLE_MERGE && ks_method_decode_evicts(sel)) {
            char ok[256];
            prompt_end_selections(ok, sizeof ok);
            return ks_fail(KS_ERR_ARG, "--acceleration %s: %s evicts while decoding inside the KV store, where %s "
                           "cannot merge the rows it drops; use %s alone, or a selection that compresses at the "
                           "prompt's end only (%s)", name, sel->name, p[i]->name, p[i]->name, ok);
        }
        if (p[i]->needs_stable_rows && sel && ks_method_decode_evicts(sel)) {
            char ok[256];
            prompt_end_selections(ok, sizeof ok);
            return ks_fail(KS_ERR_ARG, "--acceleration %s: %s keeps rows that cannot be evicted during decode, and %s "
                           "evicts while decoding; choose a selection that compresses at the prompt's end only (%s)",
                           name, p[i]->name, sel->name, ok);
        }
    }
    return KS_OK;
}

static ks_status check_parts(const char *name, const ks_method_ops *const *p, int n) {
    KS_TRY(check_never_evicts(name, p, n));
    KS_TRY(check_roles_distinct(name, p, n));
    KS_TRY(check_order(name, p, n));
    return check_needs(name, p, n);
}

/* ---- options ------------------------------------------------------------------------------------------ */

/* The part `s` (len chars) names: its name or file, case-insensitive; NULL: none. */
static ks_method *part_named(ks_method *head, const char *s, size_t len) {
    for (ks_method *p = head; p; p = p->next)
        if ((strlen(p->ops->name) == len && !strncasecmp(s, p->ops->name, len)) ||
            (strlen(p->ops->file) == len && !strncasecmp(s, p->ops->file, len)))
            return p;
    return NULL;
}

/* "SnapKV (snapkv), KIVI (kivi)": the parts, for messages. */
static void part_list(const ks_method *head, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (const ks_method *p = head; p; p = p->next)
        n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s (%s)", n ? ", " : "", p->ops->name,
                              p->ops->file);
}

/* A plain "key=value" of a composition: the one part that has the knob. */
static ks_status set_plain(ks_method *head, const char *kv, const char *key, const char *value) {
    char where[300], parts[256];
    snprintf(where, sizeof where, "--method_opt %s", kv);
    ks_method *has[KS_METHOD_MAX_PARTS];
    int n = 0;
    for (ks_method *p = head; p; p = p->next)
        if (ks_knobs_has(p->ops, key)) has[n++] = p;
    if (n == 1) return ks_knobs_set(has[0]->ops, has[0]->opts, key, value, where);
    part_list(head, parts, sizeof parts);
    if (!n)
        return ks_fail(KS_ERR_ARG, "%s: no part of %s has a knob '%s' (its parts: %s); write <part>.<key>=... with "
                       "a knob of that part (configs/methods/<file>.yaml lists them)", where, head->name, key, parts);
    return ks_fail(KS_ERR_ARG, "%s: %s and %s both have a knob '%s'; write %s.%s or %s.%s", where, has[0]->ops->name,
                   has[1]->ops->name, key, has[0]->ops->file, kv, has[1]->ops->file, kv);
}

/* One --method_opt: "part.key=value" sets that part's knob, "key=value" the method's (alone) or the one part's
 * that has it (a composition). */
static ks_status set_opt(ks_method *head, const char *kv) {
    const char *eq = strchr(kv, '=');
    const char *dot = eq ? memchr(kv, '.', (size_t)(eq - kv)) : NULL;
    ks_method *part = dot ? part_named(head, kv, (size_t)(dot - kv)) : NULL;
    if (dot && !part && head->next) {
        char parts[256];
        part_list(head, parts, sizeof parts);
        return ks_fail(KS_ERR_ARG, "--method_opt %s: '%.*s' is not a part of %s (its parts: %s)", kv,
                       (int)(dot - kv), kv, head->name, parts);
    }
    if (!part && (!head->next || !eq || eq == kv)) return ks_knobs_set_kv(head->ops, head->opts, kv, "--method_opt");
    const char *k0 = part ? dot + 1 : kv;
    char key[128], where[300];
    snprintf(key, sizeof key, "%.*s", (int)(eq - k0), k0);
    if (!part) return set_plain(head, kv, key, eq + 1);
    snprintf(where, sizeof where, "--method_opt %s", kv);
    return ks_knobs_set(part->ops, part->opts, key, eq + 1, where);
}

/* The YAML file: flat for a method alone, one section per part for a composition. */
static ks_status load_config(ks_method *head, const char *path) {
    if (!head->next) return ks_knobs_load_yaml(head->ops, head->opts, path);
    const ks_method_ops *ops[KS_METHOD_MAX_PARTS];
    void *opts[KS_METHOD_MAX_PARTS];
    int n = 0;
    for (ks_method *p = head; p; p = p->next) ops[n] = p->ops, opts[n++] = p->opts;
    return ks_knobs_load_yaml_parts(ops, opts, n, path);
}

ks_status ks_method_options_yaml(const ks_method *m, char **out) {
    if (!m->next) return ks_knobs_to_yaml(m->ops, m->opts, out);
    size_t cap = 1, len = 0;
    char *part[KS_METHOD_MAX_PARTS] = {0}, *s = NULL;
    int n = 0;
    ks_status st = KS_OK;
    for (const ks_method *p = m; p && st == KS_OK; p = p->next, n++) {
        st = ks_knobs_to_yaml(p->ops, p->opts, &part[n]);
        if (st == KS_OK) cap += strlen(p->ops->file) + 8 + strlen(part[n]) * 2; /* "  " before each line */
    }
    if (st == KS_OK && !(s = ks_malloc(cap, "method options text"))) st = KS_ERR_NOMEM;
    n = 0;
    for (const ks_method *p = m; p && st == KS_OK; p = p->next, n++) {
        len += (size_t)snprintf(s + len, cap - len, "%s:%s\n", p->ops->file, *part[n] ? "" : " {}");
        for (const char *line = part[n]; *line;) {
            const char *nl = strchr(line, '\n');
            len += (size_t)snprintf(s + len, cap - len, "  %.*s\n", (int)(nl - line), line);
            line = nl + 1;
        }
    }
    for (int i = 0; i < KS_METHOD_MAX_PARTS; i++) free(part[i]);
    if (st == KS_OK) *out = s;
    return st;
}

/* ---- the chain ---------------------------------------------------------------------------------------- */

/* One part with its compiled-in defaults; its options' source for messages. */
static ks_status part_create(ks_method **out, const ks_method_ops *ops, const char *config_path, int n_opts) {
    ks_method *m = ks_calloc(1, sizeof *m, "KV method");
    if (!m) return KS_ERR_NOMEM;
    *out = m;
    m->ops = ops;
    m->head = m;
    snprintf(m->name, sizeof m->name, "%s", ops->name);
    m->opts = ks_calloc(1, ops->opts_size ? ops->opts_size : 1, "KV method options");
    const char *from = config_path ? config_path : "defaults", *plus = n_opts ? " + --method_opt" : "";
    m->source = ks_malloc(strlen(from) + strlen(plus) + 1, "KV method options source");
    if (!m->opts || !m->source) return KS_ERR_NOMEM;
    strcat(strcpy(m->source, from), plus);
    return ks_knobs_defaults(ops, m->opts);
}

/* The instances linked: next, head, selector (on the parts after the SELECT part), and the head's name "A+B". */
static void link_parts(ks_method *const *m, int n) {
    size_t len = 0;
    int s = 0;
    while (s < n && m[s]->ops->role != KS_ROLE_SELECT) s++;
    ks_method *sel = s < n && n > 1 ? m[s] : NULL;
    for (int i = 0; i < n; i++) {
        m[i]->next = i + 1 < n ? m[i + 1] : NULL;
        m[i]->head = m[0];
        m[i]->selector = i > s ? sel : NULL;
    }
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(m[0]->name + len, sizeof m[0]->name - len, "%s%s", i ? "+" : "", m[i]->ops->name);
}

ks_status ks_method_create_ops(ks_method **out, const ks_method_ops *const *parts, int n, const char *config_path,
                               const char *const *opts, int n_opts) {
    char name[KS_METHOD_NAME_MAX];
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(name + len, len < sizeof name ? sizeof name - len : 0, "%s%s", i ? "+" : "",
                                parts[i]->name);
    if (n > 1) KS_TRY(check_parts(name, parts, n));
    KS_ASSERT(n >= 1 && n <= KS_METHOD_MAX_PARTS); /* distinct roles */
    ks_method *m[KS_METHOD_MAX_PARTS] = {0};
    ks_status st = KS_OK;
    for (int i = 0; i < n && st == KS_OK; i++) st = part_create(&m[i], parts[i], config_path, n_opts);
    while (n && !m[n - 1]) n--; /* the parts made (a failed allocation leaves its slot NULL) */
    if (n) link_parts(m, n);    /* even when a part failed: the head frees them all */
    if (st == KS_OK && config_path) st = load_config(m[0], config_path);
    for (int i = 0; i < n_opts && st == KS_OK; i++) st = set_opt(m[0], opts[i]);
    for (ks_method *p = m[0]; p && st == KS_OK; p = p->next)
        if (p->ops->check) st = p->ops->check(p);
    if (st != KS_OK) {
        ks_method_free(m[0]);
        return st;
    }
    *out = m[0];
    return KS_OK;
}

ks_status ks_method_create(ks_method **out, const char *name, const char *config_path, const char *const *opts,
                           int n_opts) {
    const ks_method_ops *parts[PARSE_MAX];
    int n;
    KS_TRY(ks_method_parse(name, parts, &n));
    return ks_method_create_ops(out, parts, n, config_path, opts, n_opts);
}

const char *ks_method_name(const ks_method *m) { return m->name; }
