/* knobs.c — see knobs.h. */
#include "methods/knobs.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "methods/budget.h"

static const ks_knob *knob_find(const ks_method_ops *ops, const char *key) {
    for (const ks_knob *k = ops->knobs; k->name; k++)
        if (!strcmp(k->name, key)) return k;
    return NULL;
}

/* "a, b, c" — the knob names, for the unknown-key message. */
static void knob_names(const ks_method_ops *ops, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (const ks_knob *k = ops->knobs; k->name && n < cap; k++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", k->name);
    if (!ops->knobs->name) snprintf(buf, cap, "none");
}

/* Index of `v` among the '|'-separated choices (case-insensitive), or -1. */
static int choice_index(const char *choices, const char *v) {
    size_t vl = strlen(v);
    int i = 0;
    for (const char *c = choices;; i++) {
        const char *bar = strchr(c, '|');
        size_t cl = bar ? (size_t)(bar - c) : strlen(c);
        if (cl == vl && !strncasecmp(c, v, vl)) return i;
        if (!bar) return -1;
        c = bar + 1;
    }
}

static int parse_long(const char *v, long *out) {
    char *end;
    errno = 0;
    *out = strtol(v, &end, 10);
    return !errno && end != v && !*end;
}

/* "[0, 1]", "0,1", "" or "[]" into l. Returns 0 and fills why on a bad element or too many. */
static int parse_ints(const ks_knob *k, const char *v, ks_ints *l, char *why, size_t cap) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", v);
    char *s = buf;
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    if (*s == '[' && n && s[n - 1] == ']') s[n - 1] = 0, s++;
    l->n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        while (isspace((unsigned char)*tok)) tok++;
        size_t tl = strlen(tok);
        while (tl && isspace((unsigned char)tok[tl - 1])) tok[--tl] = 0;
        long x;
        if (!parse_long(tok, &x) || x < k->min || x > k->max) {
            snprintf(why, cap, "'%s' is not an integer in [%g, %g]", tok, k->min, k->max);
            return 0;
        }
        if (l->n == KS_KNOB_INTS_MAX) {
            snprintf(why, cap, "more than %d entries", KS_KNOB_INTS_MAX);
            return 0;
        }
        l->v[l->n++] = (int)x;
    }
    return 1;
}

ks_status ks_knobs_set(const ks_method_ops *ops, void *opts, const char *key, const char *value, const char *where) {
    const ks_knob *k = knob_find(ops, key);
    if (!k) {
        char names[512];
        knob_names(ops, names, sizeof names);
        return ks_fail(KS_ERR_ARG, "%s: '%s' is not a %s knob (its knobs: %s)", where, key, ops->name, names);
    }
    char *p = (char *)opts + k->offset, why[256] = "";
    long x;
    char *end;
    switch (k->kind) {
    case KS_KNOB_INT:
        if (parse_long(value, &x) && x >= k->min && x <= k->max) {
            *(int *)p = (int)x;
            return KS_OK;
        }
        snprintf(why, sizeof why, "an integer in [%g, %g]", k->min, k->max);
        break;
    case KS_KNOB_FLOAT: {
        errno = 0;
        double f = strtod(value, &end);
        if (!errno && end != value && !*end && isfinite(f) && f >= k->min && f <= k->max) {
            *(float *)p = (float)f;
            return KS_OK;
        }
        snprintf(why, sizeof why, "a number in [%g, %g]", k->min, k->max);
        break;
    }
    case KS_KNOB_BOOL: {
        int t = choice_index("true|yes|on|1", value), f = choice_index("false|no|off|0", value);
        if (t >= 0 || f >= 0) {
            *(int *)p = t >= 0;
            return KS_OK;
        }
        snprintf(why, sizeof why, "true or false");
        break;
    }
    case KS_KNOB_BUDGET: {
        ks_budget b;
        if (ks_budget_parse(value, &b) && (b.is_ratio || b.tokens >= k->min)) {
            *(ks_budget *)p = b;
            return KS_OK;
        }
        snprintf(why, sizeof why, "a token count >= %g (\"2048\") or a ratio of the prompt in (0, 1], i.e. above 0%% "
                 "and at most 100%% (\"0.1\", \"10%%\")", k->min);
        break;
    }
    case KS_KNOB_ENUM: {
        int i = choice_index(k->choices, value);
        if (i >= 0) {
            *(int *)p = i;
            return KS_OK;
        }
        snprintf(why, sizeof why, "one of %s", k->choices);
        break;
    }
    case KS_KNOB_INTS: {
        ks_ints l;
        char detail[128];
        if (parse_ints(k, value, &l, detail, sizeof detail)) {
            *(ks_ints *)p = l;
            return KS_OK;
        }
        snprintf(why, sizeof why, "a list of integers like [0, 1] (%s)", detail);
        break;
    }
    case KS_KNOB_TEXT:
        if (*value && strlen(value) < KS_KNOB_TEXT_MAX) {
            strcpy(p, value);
            return KS_OK;
        }
        snprintf(why, sizeof why, "a non-empty text of fewer than %d bytes", KS_KNOB_TEXT_MAX);
        break;
    }
    return ks_fail(KS_ERR_ARG, "%s: %s knob '%s': '%s' is not %s", where, ops->name, key, value, why);
}

ks_status ks_knobs_defaults(const ks_method_ops *ops, void *opts) {
    memset(opts, 0, ops->opts_size);
    for (const ks_knob *k = ops->knobs; k->name; k++)
        KS_TRY(ks_knobs_set(ops, opts, k->name, k->def, "compiled-in default"));
    return KS_OK;
}

ks_status ks_knobs_set_kv(const ks_method_ops *ops, void *opts, const char *kv, const char *where) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return ks_fail(KS_ERR_ARG, "%s %s: expected key=value (e.g. window_size=32)", where, kv);
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    char w[256];
    snprintf(w, sizeof w, "%s %s", where, kv);
    return ks_knobs_set(ops, opts, key, eq + 1, w);
}

/* The text of a value node: a scalar, or a sequence of scalars joined with commas (list knobs). */
static int node_text(yaml_document_t *doc, yaml_node_t *n, char *buf, size_t cap) {
    if (n->type == YAML_SCALAR_NODE) {
        snprintf(buf, cap, "%.*s", (int)n->data.scalar.length, (const char *)n->data.scalar.value);
        return 1;
    }
    if (n->type != YAML_SEQUENCE_NODE) return 0;
    size_t len = 0;
    buf[0] = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = yaml_document_get_node(doc, *it);
        if (!e || e->type != YAML_SCALAR_NODE) return 0;
        len += (size_t)snprintf(buf + len, len < cap ? cap - len : 0, "%s%.*s", len ? "," : "",
                                (int)e->data.scalar.length, (const char *)e->data.scalar.value);
    }
    return len < cap;
}

int ks_knobs_has(const ks_method_ops *ops, const char *key) { return knob_find(ops, key) != NULL; }

/* 1 when a key of `map` before `pr` equals key; its line in *line. */
static int key_seen(yaml_document_t *doc, yaml_node_t *map, yaml_node_pair_t *pr, const char *key, size_t *line) {
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pr; q++) {
        yaml_node_t *qk = yaml_document_get_node(doc, q->key);
        if (qk->type == YAML_SCALAR_NODE && qk->data.scalar.length == strlen(key) &&
            !memcmp(qk->data.scalar.value, key, strlen(key))) {
            *line = qk->start_mark.line + 1;
            return 1;
        }
    }
    return 0;
}

/* Applies every "key: value" of the mapping node `map` (a list value for list knobs). */
static ks_status apply_mapping(const ks_method_ops *ops, void *opts, yaml_document_t *doc, yaml_node_t *map,
                               const char *path) {
    ks_status st = KS_OK;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top && st == KS_OK;
         pr++) {
        yaml_node_t *kn = yaml_document_get_node(doc, pr->key), *vn = yaml_document_get_node(doc, pr->value);
        char key[128], val[1024], where[1200];
        size_t first;
        snprintf(where, sizeof where, "%s:%zu", path, kn->start_mark.line + 1);
        if (kn->type != YAML_SCALAR_NODE || !node_text(doc, kn, key, sizeof key))
            st = ks_fail(KS_ERR_FORMAT, "%s: a knob name must be a plain key", where);
        else if (!node_text(doc, vn, val, sizeof val))
            st = ks_fail(KS_ERR_ARG, "%s: %s knob '%s' needs a value or a list of values", where, ops->name, key);
        else if (key_seen(doc, map, pr, key, &first))
            st = ks_fail(KS_ERR_ARG, "%s: knob '%s' is set twice (first on line %zu)", where, key, first);
        else
            st = ks_knobs_set(ops, opts, key, val, where);
    }
    return st;
}

/* The YAML file `path` parsed into doc (*f, *parser open until close_yaml). */
static ks_status open_yaml(const char *path, FILE **f, yaml_parser_t *parser, yaml_document_t *doc) {
    *f = fopen(path, "rb");
    if (!*f) return ks_fail(KS_ERR_IO, "--method_config %s: cannot open (%s)", path, strerror(errno));
    yaml_parser_initialize(parser);
    yaml_parser_set_input_file(parser, *f);
    if (yaml_parser_load(parser, doc)) return KS_OK;
    ks_status st = ks_fail(KS_ERR_FORMAT, "%s:%zu: not valid YAML (%s)", path, parser->problem_mark.line + 1,
                           parser->problem ? parser->problem : "parse error");
    yaml_parser_delete(parser);
    fclose(*f);
    return st;
}

static void close_yaml(FILE *f, yaml_parser_t *parser, yaml_document_t *doc) {
    yaml_document_delete(doc);
    yaml_parser_delete(parser);
    fclose(f);
}

ks_status ks_knobs_load_yaml(const ks_method_ops *ops, void *opts, const char *path) {
    FILE *f;
    yaml_parser_t parser;
    yaml_document_t doc;
    KS_TRY(open_yaml(path, &f, &parser, &doc));
    ks_status st = KS_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type != YAML_MAPPING_NODE)
        st = ks_fail(KS_ERR_FORMAT, "%s:%zu: expected a mapping of %s knobs (key: value lines)", path,
                     root->start_mark.line + 1, ops->name);
    else if (root)
        st = apply_mapping(ops, opts, &doc, root, path);
    close_yaml(f, &parser, &doc);
    return st;
}

/* The part a section key names (its name or file, case-insensitive), or -1. */
static int section_part(const ks_method_ops *const *ops, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcasecmp(key, ops[i]->name) || !strcasecmp(key, ops[i]->file)) return i;
    return -1;
}

/* 1 when a section's value is empty ("snapkv:" alone, "~", "null"): no change. */
static int empty_section(const yaml_node_t *v) {
    if (v->type != YAML_SCALAR_NODE || v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *t = (const char *)v->data.scalar.value;
    size_t len = v->data.scalar.length;
    return !len || (len == 1 && *t == '~') || (len == 4 && !strncasecmp(t, "null", 4));
}

/* One section of a composition's file: the key names a part, once, and holds a mapping of its knobs. */
static ks_status apply_section(const ks_method_ops *const *ops, void *const *opts, int n, yaml_document_t *doc,
                               yaml_node_t *root, yaml_node_pair_t *pr, const char *path) {
    yaml_node_t *kn = yaml_document_get_node(doc, pr->key), *vn = yaml_document_get_node(doc, pr->value);
    char key[128], parts[256];
    size_t line = kn->start_mark.line + 1, len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(parts + len, sizeof parts - len, "%s%s", i ? ", " : "", ops[i]->file);
    int i = kn->type == YAML_SCALAR_NODE && node_text(doc, kn, key, sizeof key) ? section_part(ops, n, key) : -1;
    if (i < 0)
        return ks_fail(KS_ERR_ARG, "%s:%zu: '%s' is not a part of this composition: its file holds one section per "
                       "part (%s), each a mapping of that part's knobs", path, line,
                       kn->type == YAML_SCALAR_NODE ? key : "?", parts);
    for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < pr; q++) { /* earlier sections name parts */
        yaml_node_t *qk = yaml_document_get_node(doc, q->key);
        char earlier[128];
        if (node_text(doc, qk, earlier, sizeof earlier) && section_part(ops, n, earlier) == i)
            return ks_fail(KS_ERR_ARG, "%s:%zu: section '%s' is given twice (first on line %zu as '%s')", path, line,
                           key, qk->start_mark.line + 1, earlier);
    }
    if (empty_section(vn)) return KS_OK;
    if (vn->type != YAML_MAPPING_NODE)
        return ks_fail(KS_ERR_FORMAT, "%s:%zu: section '%s' must be a mapping of %s knobs (key: value lines, "
                       "indented)", path, line, key, ops[i]->name);
    return apply_mapping(ops[i], opts[i], doc, vn, path);
}

ks_status ks_knobs_load_yaml_parts(const ks_method_ops *const *ops, void *const *opts, int n, const char *path) {
    FILE *f;
    yaml_parser_t parser;
    yaml_document_t doc;
    KS_TRY(open_yaml(path, &f, &parser, &doc));
    ks_status st = KS_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type != YAML_MAPPING_NODE)
        st = ks_fail(KS_ERR_FORMAT, "%s:%zu: expected one section per part of the composition (snapkv: ...)", path,
                     root->start_mark.line + 1);
    for (yaml_node_pair_t *pr = root && st == KS_OK ? root->data.mapping.pairs.start : NULL;
         pr && pr < root->data.mapping.pairs.top && st == KS_OK; pr++)
        st = apply_section(ops, opts, n, &doc, root, pr, path);
    close_yaml(f, &parser, &doc);
    return st;
}

/* The value of knob k in opts as YAML text. */
static void value_text(const ks_knob *k, const void *opts, char *buf, size_t cap) {
    const char *p = (const char *)opts + k->offset;
    switch (k->kind) {
    case KS_KNOB_INT: snprintf(buf, cap, "%d", *(const int *)p); break;
    case KS_KNOB_FLOAT: snprintf(buf, cap, "%g", (double)*(const float *)p); break;
    case KS_KNOB_BOOL: snprintf(buf, cap, "%s", *(const int *)p ? "true" : "false"); break;
    case KS_KNOB_BUDGET: {
        const ks_budget *b = (const ks_budget *)p;
        if (b->is_ratio) {
            snprintf(buf, cap, "%.10g", b->ratio);
            if (!strpbrk(buf, ".e")) snprintf(buf + strlen(buf), cap - strlen(buf), ".0"); /* stays a ratio */
        } else
            snprintf(buf, cap, "%d", b->tokens);
        break;
    }
    case KS_KNOB_ENUM: {
        const char *c = k->choices;
        for (int i = *(const int *)p; i > 0; i--) c = strchr(c, '|') + 1;
        const char *bar = strchr(c, '|');
        snprintf(buf, cap, "%.*s", bar ? (int)(bar - c) : (int)strlen(c), c);
        break;
    }
    case KS_KNOB_INTS: {
        const ks_ints *l = (const ks_ints *)p;
        size_t n = (size_t)snprintf(buf, cap, "[");
        for (int i = 0; i < l->n && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s%d", i ? ", " : "", l->v[i]);
        if (n < cap) snprintf(buf + n, cap - n, "]");
        break;
    }
    case KS_KNOB_TEXT: snprintf(buf, cap, "%s", p); break;
    }
}

ks_status ks_knobs_to_yaml(const ks_method_ops *ops, const void *opts, char **out) {
    size_t cap = 64, len = 0;
    for (const ks_knob *k = ops->knobs; k->name; k++) cap += strlen(k->name) + 300;
    char *s = ks_malloc(cap, "method options text");
    if (!s) return KS_ERR_NOMEM;
    s[0] = 0;
    for (const ks_knob *k = ops->knobs; k->name; k++) {
        char v[280];
        value_text(k, opts, v, sizeof v);
        len += (size_t)snprintf(s + len, cap - len, "%s: %s\n", k->name, v);
    }
    *out = s;
    return KS_OK;
}
