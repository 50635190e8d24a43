/* fuzz_method_config.c — libFuzzer target: a KV method's options, from a method YAML file (--method_config,
 * configs/methods/<name>.yaml) and "key=value" overrides (--method_opt), as ks_method_create applies them; the
 * resolved options are then written back as YAML.
 *
 * Oracle beyond the sanitizers: the options YAML that result files record (ks_method_options_yaml) must load
 * back, as a --method_config, to the same options; a difference aborts with both texts.
 *
 * Input: METHOD_BYTE YAML [NUL OVERRIDE [NUL OVERRIDE ...]]. METHOD_BYTE picks the method (modulo the count)
 * from the registry, then from the compositions of each prompt-end selection with each registry part of another
 * role ("SnapKV+KIVI": a file of one section per part, "part.key=value" overrides), so every method's knob table
 * and cross-knob check is reached. Seeds: tests/fuzz/make_corpus.py (every file under configs/methods with its
 * method byte: the registry's index).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "methods/method.h"

#define MAX_OPTS 16
#define MAX_NAMES 64

static char names[MAX_NAMES][KS_METHOD_NAME_MAX]; /* what METHOD_BYTE picks: the registry's, then compositions */
static int n_names;

static void list_names(void) {
    for (const ks_method_ops *const *o = ks_methods; *o && n_names < MAX_NAMES; o++)
        snprintf(names[n_names++], KS_METHOD_NAME_MAX, "%s", (*o)->name);
    for (const ks_method_ops *const *s = ks_methods; *s; s++) {
        if ((*s)->role != KS_ROLE_SELECT || !(*s)->after_prefill_layer || (*s)->on_decode_step) continue;
        for (const ks_method_ops *const *x = ks_methods; *x && n_names < MAX_NAMES; x++)
            if ((*x)->role != KS_ROLE_SELECT)
                snprintf(names[n_names++], KS_METHOD_NAME_MAX, "%s+%s", (*s)->name, (*x)->name);
    }
}

/* Writes m's options as YAML, loads that file into a new instance and compares the two texts. */
static void check_round_trip(const ks_method *m) {
    char *first, *second = NULL, path[512];
    if (ks_method_options_yaml(m, &first) != KS_OK) return;
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "round_trip.yaml"), first, strlen(first));
    ks_method *again;
    ks_status st = ks_method_create(&again, ks_method_name(m), path, NULL, 0);
    if (st == KS_OK) {
        st = ks_method_options_yaml(again, &second);
        ks_method_free(again);
    }
    if (st != KS_OK || strcmp(first, second)) {
        fprintf(stderr, "fuzz_method_config: %s's options do not load back\n--- written:\n%s--- read back:\n%s\n%s\n",
                ks_method_name(m), first, second ? second : "(nothing)", st != KS_OK ? ks_last_error() : "");
        abort();
    }
    free(first);
    free(second);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ks_fuzz_quiet();
    list_names();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *name = names[data[0] % n_names];
    const uint8_t *yaml, *rest;
    size_t n_yaml, n_rest;
    ks_fuzz_split(data + 1, size - 1, &yaml, &n_yaml, &rest, &n_rest);
    char path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "method.yaml"), yaml, n_yaml);
    char *opts[MAX_OPTS];
    int n_opts = 0;
    while (n_rest > 0 && n_opts < MAX_OPTS) {
        const uint8_t *opt;
        size_t n_opt;
        ks_fuzz_split(rest, n_rest, &opt, &n_opt, &rest, &n_rest);
        if (!(opts[n_opts] = strndup((const char *)opt, n_opt))) break;
        n_opts++;
    }
    ks_method *m;
    if (ks_method_create(&m, name, path, (const char *const *)opts, n_opts) == KS_OK) {
        check_round_trip(m);
        ks_method_free(m);
    }
    for (int i = 0; i < n_opts; i++) free(opts[i]);
    return 0;
}
