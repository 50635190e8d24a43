/* options.c — see options.h. */
#include "cli/options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ks_options_print_help(const ks_option *opts, const char *command, const char *summary) {
    printf("usage: kvscope %s [options]\n\n%s\n\noptions:\n", command, summary);
    for (const ks_option *o = opts; o->name; o++) {
        char lhs[96];
        if (o->metavar) snprintf(lhs, sizeof lhs, "--%s %s", o->name, o->metavar);
        else snprintf(lhs, sizeof lhs, "--%s", o->name);
        printf("  %-28s %s", lhs, o->help);
        if (o->required) printf(" (required)");
        else switch (o->kind) {
            case KS_OPT_STRING:
                if (*(const char **)o->value) printf(" (default: %s)", *(const char **)o->value);
                break;
            case KS_OPT_INT: printf(" (default: %d)", *(int *)o->value); break;
            case KS_OPT_FLOAT: printf(" (default: %g)", (double)*(float *)o->value); break;
            case KS_OPT_FLAG: break;
            case KS_OPT_STRINGS: printf(" (repeatable)"); break;
            case KS_OPT_WORDS: printf(" (one or more)"); break;
            }
        printf("\n");
    }
    printf("  %-28s %s\n", "--help", "show this help");
}

static ks_status set_value(const ks_option *o, const char *v) {
    char *end;
    switch (o->kind) {
    case KS_OPT_STRING: *(const char **)o->value = v; return KS_OK;
    case KS_OPT_INT: {
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || *end || end == v || x < -2147483647L || x > 2147483647L)
            return ks_fail(KS_ERR_ARG, "option --%s: '%s' is not an integer", o->name, v);
        *(int *)o->value = (int)x;
        return KS_OK;
    }
    case KS_OPT_FLOAT: {
        errno = 0;
        float x = strtof(v, &end);
        if (errno || *end || end == v) return ks_fail(KS_ERR_ARG, "option --%s: '%s' is not a number", o->name, v);
        *(float *)o->value = x;
        return KS_OK;
    }
    case KS_OPT_FLAG: *(int *)o->value = 1; return KS_OK;
    case KS_OPT_STRINGS:
    case KS_OPT_WORDS: {
        ks_opt_strings *l = o->value;
        if (l->n == KS_OPT_STRINGS_MAX)
            return ks_fail(KS_ERR_ARG, "option --%s: at most %d values", o->name, KS_OPT_STRINGS_MAX);
        l->v[l->n++] = v;
        return KS_OK;
    }
    }
    return KS_OK;
}

ks_status ks_options_parse(const ks_option *opts, int argc, char **argv, const char *command,
                           const char *summary, int *help_shown) {
    int n_opts = 0;
    while (opts[n_opts].name) n_opts++;
    char *seen = calloc((size_t)n_opts + 1, 1);
    if (!seen) return ks_fail(KS_ERR_NOMEM, "out of memory");
    *help_shown = 0;
    ks_status st = KS_OK;
    for (int i = 1; i < argc && st == KS_OK; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ks_options_print_help(opts, command, summary);
            *help_shown = 1;
            free(seen);
            return KS_OK;
        }
        if (strncmp(a, "--", 2) != 0) {
            st = ks_fail(KS_ERR_ARG, "kvscope %s: unexpected argument '%s' (options start with --; see --help)",
                         command, a);
            break;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int k = -1;
        for (int j = 0; j < n_opts; j++)
            if (strlen(opts[j].name) == nlen && !strncmp(opts[j].name, name, nlen)) k = j;
        if (k < 0) {
            st = ks_fail(KS_ERR_ARG, "kvscope %s: unknown option '--%.*s' (see kvscope %s --help)", command,
                         (int)nlen, name, command);
            break;
        }
        const ks_option *o = &opts[k];
        seen[k] = 1;
        if (o->kind == KS_OPT_FLAG) {
            if (eq) st = ks_fail(KS_ERR_ARG, "option --%s takes no value", o->name);
            else st = set_value(o, "1");
            continue;
        }
        int words = o->kind == KS_OPT_WORDS;
        const char *v = eq ? eq + 1 : (i + 1 < argc && !(words && !strncmp(argv[i + 1], "--", 2)) ? argv[++i] : NULL);
        if (!v) st = ks_fail(KS_ERR_ARG, "option --%s needs a value (%s)", o->name, o->metavar ? o->metavar : "");
        else st = set_value(o, v);
        while (st == KS_OK && words && !eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2))
            st = set_value(o, argv[++i]);
    }
    for (int j = 0; st == KS_OK && j < n_opts; j++)
        if (opts[j].required && !seen[j])
            st = ks_fail(KS_ERR_ARG, "kvscope %s: missing required option --%s %s", command, opts[j].name,
                         opts[j].metavar ? opts[j].metavar : "");
    free(seen);
    return st;
}
