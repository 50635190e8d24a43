/* bench_config.c — benchmark YAML via libyaml; one key table drives parsing, defaults, validation and help.
 * See bench_config.h. */
#include "bench/bench_config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "bench/longbench.h"
#include "bench/ruler.h"
#include "bench/strbuf.h"
#include "core/file.h"

typedef enum key_type {
    K_STRING,      /* char *; "null" allowed when the default is null */
    K_INT,         /* int within [lo, hi] */
    K_SEED,        /* uint64_t */
    K_BOOL,        /* int 0/1 */
    K_ENUM,        /* int: index of the value in choices */
    K_STR_LIST,    /* char ** + count */
    K_INT_LIST,    /* int * + count, each within [lo, hi] */
    K_TASK_FILTER, /* no_template_tasks: a list of names, or "all" / ["all"] */
} key_type;

typedef struct cfg_key {
    const char *name;
    key_type type;
    size_t off, count_off;   /* field offsets; count_off for lists */
    const char *def;         /* default as YAML text; NULL = required; "null" = none */
    long long lo, hi;        /* bounds for numbers */
    const char *const *choices; /* allowed strings (NULL = any) */
    const char *help;
} cfg_key;

#define F(field) offsetof(ks_bench_config, field)

static const char *const benchmarks[] = {"RULER", "LongBench", NULL};
/* In ks_ruler_variant order. */
static const char *const variants[] = {"ruler", "loom", NULL};
/* Chat template names (tokenizer/chat.h), plus LOOM's "default" = none. */
static const char *const templates[] = {"auto", "llama3", "mistral", "chatml", "qwen2", "none", "default", NULL};

static const cfg_key keys[] = {
    {"benchmark_name", K_STRING, F(benchmark_name), 0, NULL, 0, 0, benchmarks, "RULER or LongBench"},
    {"task_names", K_STR_LIST, F(task_names), F(n_tasks), NULL, 0, 0, NULL, "tasks to run (the benchmark's names)"},
    {"length", K_INT_LIST, F(lengths), F(n_lengths), "[]", 256, 4194304, NULL,
     "RULER target lengths in tokens, e.g. [4096, 8192]"},
    {"num_samples", K_INT, F(num_samples), 0, "10", 1, 1000000, NULL, "RULER samples per (task, length)"},
    {"build_data", K_BOOL, F(build_data), 0, "true", 0, 0, NULL, "accepted for LOOM-Scope configs; no effect"},
    {"no_template_tasks", K_TASK_FILTER, F(no_template_tasks), F(n_no_template), "[]", 0, 0, NULL,
     "task-name substrings fed without the chat template, or all (LongBench default: LB's list)"},
    {"template", K_STRING, F(template_name), 0, "null", 0, 0, templates, "chat template name, or null for none"},
    {"seed", K_SEED, F(seed), 0, "42", 0, 0, NULL, "run seed; samples depend on (seed, task, length, index)"},
    {"ruler_variant", K_ENUM, F(ruler_variant), 0, "ruler", 0, 0, variants,
     "ruler (NVIDIA RULER) or loom (LOOM-Scope's prompt quirks)"},
    {"data_dir", K_STRING, F(data_dir), 0, "", 0, 0, NULL, "folder with haystack/ and wordlists/ (default $KS_DATA_DIR, else the data installed with kvscope)"},
    {"essays_dir", K_STRING, F(essays_dir), 0, "", 0, 0, NULL, "essay *.txt folder (default data_dir/haystack/paul_graham_essays)"},
    {"wordlists_dir", K_STRING, F(wordlists_dir), 0, "", 0, 0, NULL, "word lists folder (default data_dir/wordlists)"},
    {"squad_path", K_STRING, F(squad_path), 0, "null", 0, 0, NULL, "SQuAD v2.0 dev-v2.0.json, for qa_1"},
    {"hotpotqa_path", K_STRING, F(hotpotqa_path), 0, "null", 0, 0, NULL, "HotpotQA hotpot_dev_distractor_v1.json, for qa_2"},
    {"longbench_dir", K_STRING, F(longbench_dir), 0, "null", 0, 0, NULL, "folder of LongBench <task>.jsonl files"},
    {"max_length", K_INT, F(max_length), 0, "1500000", 16, INT_MAX, NULL,
     "LongBench middle truncation threshold in tokens"},
};
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))

static const char *type_name(key_type t) {
    switch (t) {
    case K_STRING: return "string";
    case K_INT: return "integer";
    case K_SEED: return "integer";
    case K_BOOL: return "bool";
    case K_ENUM: return "one of";
    case K_STR_LIST: return "list of strings";
    case K_INT_LIST: return "list of integers";
    case K_TASK_FILTER: return "list or all";
    }
    return "?";
}

void ks_bench_config_print_keys(FILE *out) {
    fprintf(out, "benchmark config keys (YAML):\n");
    for (int i = 0; i < N_KEYS; i++)
        fprintf(out, "  %-18s %-17s %-10s %s\n", keys[i].name, type_name(keys[i].type),
                keys[i].def ? (*keys[i].def ? keys[i].def : "(derived)") : "(required)", keys[i].help);
}

/* ---- parsing one value ---- */

typedef struct parse_ctx {
    ks_bench_config *c;
    const char *path;
    yaml_document_t *doc;
} parse_ctx;

static ks_status key_error(const parse_ctx *p, const cfg_key *k, const yaml_node_t *node, const char *fmt, const char *got) {
    char what[256];
    snprintf(what, sizeof what, fmt, got ? got : "");
    if (node) return ks_fail(KS_ERR_ARG, "%s:%zu: key '%s': %s", p->path, node->start_mark.line + 1, k->name, what);
    return ks_fail(KS_ERR_ARG, "%s: key '%s': %s", p->path, k->name, what);
}

static int is_null(const char *s) {
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static ks_status parse_ll(const parse_ctx *p, const cfg_key *k, const yaml_node_t *node, const char *s, long long *out) {
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno) return key_error(p, k, node, "expected an integer, got '%s'", s);
    if (k->type != K_SEED && (v < k->lo || v > k->hi)) {
        char msg[160];
        snprintf(msg, sizeof msg, "%lld is out of range [%lld, %lld]", v, k->lo, k->hi);
        return key_error(p, k, node, "%s", msg);
    }
    if (k->type == K_SEED && v < 0) return key_error(p, k, node, "the seed must not be negative, got '%s'", s);
    *out = v;
    return KS_OK;
}

static ks_status check_choice(const parse_ctx *p, const cfg_key *k, const yaml_node_t *node, const char *s) {
    if (!k->choices) return KS_OK;
    char list[256] = "";
    for (int i = 0; k->choices[i]; i++) {
        if (!strcmp(k->choices[i], s)) return KS_OK;
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, k->choices[i], sizeof list - strlen(list) - 1);
    }
    char msg[400];
    snprintf(msg, sizeof msg, "'%s' is not one of: %s", s, list);
    return key_error(p, k, node, "%s", msg);
}

/* Scalar text of a node, or NULL (with an error recorded) when it is not a scalar. */
static const char *scalar(const parse_ctx *p, const cfg_key *k, const yaml_node_t *node) {
    if (node->type != YAML_SCALAR_NODE) {
        key_error(p, k, node, "expected a %s", type_name(k->type));
        return NULL;
    }
    return (const char *)node->data.scalar.value;
}

static int quoted(const yaml_node_t *node) {
    return node->type == YAML_SCALAR_NODE && node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
}

static ks_status set_list(const parse_ctx *p, const cfg_key *k, const yaml_node_t *node) {
    char *base = (char *)p->c;
    int *count = (int *)(base + k->count_off);
    if (node->type != YAML_SEQUENCE_NODE) return key_error(p, k, node, "expected a %s, e.g. [a, b]", type_name(k->type));
    int n = (int)(node->data.sequence.items.top - node->data.sequence.items.start);
    size_t elem = k->type == K_INT_LIST ? sizeof(int) : sizeof(char *);
    void *v = ks_calloc((size_t)(n ? n : 1), elem, "a config list");
    if (!v) return KS_ERR_NOMEM;
    if (k->type == K_INT_LIST) free(*(int **)(base + k->off)), *(int **)(base + k->off) = v;
    else {
        char ***old = (char ***)(base + k->off);
        for (int i = 0; i < *count; i++) free((*old)[i]);
        free(*old);
        *old = v;
    }
    *count = 0;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
        const yaml_node_t *item = yaml_document_get_node(p->doc, *it);
        const char *s = scalar(p, k, item);
        if (!s) return KS_ERR_ARG;
        if (k->type == K_INT_LIST) {
            long long x;
            KS_TRY(parse_ll(p, k, item, s, &x));
            ((int *)v)[(*count)++] = (int)x;
        } else {
            if (!*s) return key_error(p, k, item, "empty name in the list%s", NULL);
            if (!(((char **)v)[(*count)++] = ks_strndup(s, strlen(s)))) return KS_ERR_NOMEM;
        }
    }
    return KS_OK;
}

static ks_status set_value(parse_ctx *p, const cfg_key *k, const yaml_node_t *node) {
    char *base = (char *)p->c;
    if (k->type == K_STR_LIST || k->type == K_INT_LIST) return set_list(p, k, node);
    if (k->type == K_TASK_FILTER) {
        if (node->type == YAML_SCALAR_NODE) {
            const char *s = (const char *)node->data.scalar.value;
            if (strcasecmp(s, "all") && !is_null(s)) return key_error(p, k, node, "expected a list or all, got '%s'", s);
            p->c->no_template_all = !is_null(s);
            return KS_OK;
        }
        KS_TRY(set_list(p, k, node));
        p->c->no_template_all = 0;
        for (int i = 0; i < p->c->n_no_template; i++) p->c->no_template_all |= !strcasecmp(p->c->no_template_tasks[i], "all");
        return KS_OK;
    }
    const char *s = scalar(p, k, node);
    if (!s) return KS_ERR_ARG;
    long long v;
    switch (k->type) {
    case K_STRING:
        if (!quoted(node) && is_null(s)) {
            if (!k->def || strcmp(k->def, "null")) return key_error(p, k, node, "must not be null%s", NULL);
            free(*(char **)(base + k->off));
            *(char **)(base + k->off) = NULL;
            return KS_OK;
        }
        KS_TRY(check_choice(p, k, node, s));
        free(*(char **)(base + k->off));
        return (*(char **)(base + k->off) = ks_strndup(s, strlen(s))) ? KS_OK : KS_ERR_NOMEM;
    case K_ENUM:
        KS_TRY(check_choice(p, k, node, s));
        for (int i = 0; k->choices[i]; i++)
            if (!strcmp(k->choices[i], s)) *(int *)(base + k->off) = i;
        return KS_OK;
    case K_INT:
        KS_TRY(parse_ll(p, k, node, s, &v));
        *(int *)(base + k->off) = (int)v;
        return KS_OK;
    case K_SEED:
        KS_TRY(parse_ll(p, k, node, s, &v));
        *(uint64_t *)(base + k->off) = (uint64_t)v;
        return KS_OK;
    case K_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes")) *(int *)(base + k->off) = 1;
        else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "no")) *(int *)(base + k->off) = 0;
        else return key_error(p, k, node, "expected true or false, got '%s'", s);
        return KS_OK;
    default:
        KS_ASSERT(0);
        return KS_ERR_ARG;
    }
}

/* ---- defaults and cross-key validation ---- */

/* Applies key k's default by parsing its YAML text through the same path as a file value. */
static ks_status set_default(parse_ctx *p, const cfg_key *k) {
    if (!*k->def) return KS_OK; /* derived after parsing */
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)k->def, strlen(k->def));
    ks_status st = KS_OK;
    if (!yaml_parser_load(&parser, &doc)) st = ks_fail(KS_ERR_ARG, "internal: bad default for '%s'", k->name);
    yaml_parser_delete(&parser);
    KS_TRY(st);
    yaml_document_t *saved = p->doc;
    p->doc = &doc;
    st = set_value(p, k, yaml_document_get_root_node(&doc));
    p->doc = saved;
    yaml_document_delete(&doc);
    return st;
}

static ks_status set_path(char **field, const char *dir, const char *rel) {
    if (*field) return KS_OK;
    char buf[4096];
    ks_path_join(buf, sizeof buf, dir, rel);
    return (*field = ks_strndup(buf, strlen(buf))) ? KS_OK : KS_ERR_NOMEM;
}

static int key_index(const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].name, name)) return i;
    KS_ASSERT(0);
    return -1;
}

/* The data folder that holds haystack/ and wordlists/ when the config names none: $KS_DATA_DIR, else the
 * installed copy beside the program (<bin>/../share/kvscope/data), else the source tree's data/ folder the
 * program was built from. The first that exists wins; with none, the source tree's path, so the error that
 * follows names where the files were expected. */
static ks_status default_data_dir(char **out) {
    const char *env = getenv("KS_DATA_DIR");
    char installed[4200] = "", exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(installed, sizeof installed, "%s/../%s", exe, KS_INSTALL_DATA_DIR);
        }
    }
    const char *d = env && *env ? env : installed[0] && ks_is_directory(installed) ? installed : KS_SOURCE_DATA_DIR;
    *out = ks_strndup(d, strlen(d));
    return *out ? KS_OK : KS_ERR_NOMEM;
}
static ks_status validate(parse_ctx *p, const int *seen) {
    ks_bench_config *c = p->c;
    for (int i = 0; i < N_KEYS; i++)
        if (!seen[i] && !keys[i].def) return ks_fail(KS_ERR_ARG, "%s: required key '%s' is missing (%s)", p->path, keys[i].name, keys[i].help);
    c->kind = !strcmp(c->benchmark_name, "RULER") ? KS_BENCH_RULER : KS_BENCH_LONGBENCH;
    if (c->n_tasks == 0) return ks_fail(KS_ERR_ARG, "%s: key 'task_names': the list is empty", p->path);
    for (int i = 0; i < c->n_tasks; i++) {
        const char *t = c->task_names[i];
        int known = c->kind == KS_BENCH_RULER ? ks_ruler_task_find(t) != NULL : ks_longbench_task_find(t) != NULL;
        if (!known)
            return ks_fail(KS_ERR_ARG, "%s: key 'task_names': '%s' is not a %s task (kvscope prepare --help lists them)",
                           p->path, t, c->benchmark_name);
    }
    if (c->kind == KS_BENCH_RULER && c->n_lengths == 0)
        return ks_fail(KS_ERR_ARG, "%s: key 'length': RULER needs at least one target length, e.g. [4096]", p->path);
    if (c->kind == KS_BENCH_LONGBENCH && !seen[key_index("no_template_tasks")]) { /* absent: LongBench's list */
        c->n_no_template = 0;
        free(c->no_template_tasks);
        c->no_template_tasks = ks_calloc(8, sizeof *c->no_template_tasks, "no_template_tasks");
        if (!c->no_template_tasks) return KS_ERR_NOMEM;
        for (const char *const *t = ks_longbench_no_template_tasks; *t; t++)
            if (!(c->no_template_tasks[c->n_no_template++] = ks_strndup(*t, strlen(*t)))) return KS_ERR_NOMEM;
    }
    if (c->template_name && !strcmp(c->template_name, "default")) { /* LOOM's name for "unchanged" */
        free(c->template_name);
        c->template_name = NULL;
    }
    if (!c->data_dir) KS_TRY(default_data_dir(&c->data_dir));
    KS_TRY(set_path(&c->essays_dir, c->data_dir, "haystack/paul_graham_essays"));
    KS_TRY(set_path(&c->wordlists_dir, c->data_dir, "wordlists"));
    return KS_OK;
}

/* Fills the zeroed c; on an error c may hold part of the result. */
static ks_status parse(ks_bench_config *c, const char *text, size_t len, const char *path) {
    parse_ctx p = {.c = c, .path = path};
    if (!(c->path = ks_strndup(path, strlen(path))) || !(c->yaml_text = ks_strndup(text, len))) return KS_ERR_NOMEM;
    int seen[N_KEYS] = {0};
    for (int i = 0; i < N_KEYS; i++)
        if (keys[i].def) KS_TRY(set_default(&p, &keys[i]));

    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        ks_status st = ks_fail(KS_ERR_ARG, "%s:%zu: YAML syntax error: %s", path, parser.problem_mark.line + 1,
                               parser.problem ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        return st;
    }
    yaml_parser_delete(&parser);
    p.doc = &doc;
    ks_status st = KS_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE)
        st = ks_fail(KS_ERR_ARG, "%s: expected a YAML mapping of keys (benchmark_name, task_names, ...)", path);
    for (yaml_node_pair_t *pr = st == KS_OK ? root->data.mapping.pairs.start : NULL;
         pr && pr < root->data.mapping.pairs.top && st == KS_OK; pr++) {
        yaml_node_t *kn = yaml_document_get_node(&doc, pr->key), *vn = yaml_document_get_node(&doc, pr->value);
        const char *name = kn->type == YAML_SCALAR_NODE ? (const char *)kn->data.scalar.value : "?";
        int k = -1;
        for (int i = 0; i < N_KEYS && k < 0; i++)
            if (!strcmp(keys[i].name, name)) k = i;
        if (k < 0) {
            char known[1024] = "";
            for (int i = 0; i < N_KEYS; i++) {
                strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
                strncat(known, keys[i].name, sizeof known - strlen(known) - 1);
            }
            st = ks_fail(KS_ERR_ARG, "%s:%zu: unknown key '%s' (known keys: %s)", path, kn->start_mark.line + 1, name,
                         known);
        } else if (seen[k]) {
            st = ks_fail(KS_ERR_ARG, "%s:%zu: key '%s' is given twice", path, kn->start_mark.line + 1, name);
        } else {
            seen[k] = 1;
            st = set_value(&p, &keys[k], vn);
        }
    }
    if (st == KS_OK) st = validate(&p, seen);
    yaml_document_delete(&doc);
    return st;
}

ks_status ks_bench_config_parse(ks_bench_config *c, const char *text, size_t len, const char *path) {
    ks_bench_config_free(c);
    ks_status st = parse(c, text, len, path);
    if (st != KS_OK) ks_bench_config_free(c); /* all or nothing: a caller that returns at the error leaks nothing */
    return st;
}

ks_status ks_bench_config_load(ks_bench_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    char *text;
    size_t len;
    if (!ks_file_exists(path)) return ks_fail(KS_ERR_IO, "%s: benchmark config not found", path);
    KS_TRY(ks_file_read_all(path, &text, &len));
    ks_status st = ks_bench_config_parse(c, text, len, path);
    free(text);
    return st;
}

static void free_strv(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

void ks_bench_config_free(ks_bench_config *c) {
    if (!c) return;
    free(c->path);
    free(c->yaml_text);
    free(c->benchmark_name);
    free_strv(c->task_names, c->n_tasks);
    free(c->lengths);
    free_strv(c->no_template_tasks, c->n_no_template);
    free(c->template_name);
    free(c->data_dir);
    free(c->essays_dir);
    free(c->wordlists_dir);
    free(c->squad_path);
    free(c->hotpotqa_path);
    free(c->longbench_dir);
    memset(c, 0, sizeof *c);
}

int ks_bench_config_use_template(const ks_bench_config *c, const char *task, int length) {
    if (!c->template_name || c->no_template_all) return 0;
    char id[128];
    if (c->kind == KS_BENCH_RULER) snprintf(id, sizeof id, "%s_%d", task, length);
    else snprintf(id, sizeof id, "%s", task);
    for (int i = 0; i < c->n_no_template; i++)
        if (strstr(id, c->no_template_tasks[i])) return 0;
    return 1;
}
