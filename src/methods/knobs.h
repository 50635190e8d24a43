/* knobs.h — the knob tables of the KV methods (method.h) turned into options structs: compiled-in defaults,
 * a YAML file of overrides (libyaml), "key=value" overrides, and back to YAML text.
 *
 *     KS_TRY(ks_knobs_defaults(ops, opts));                       // every knob's `def`
 *     KS_TRY(ks_knobs_load_yaml(ops, opts, "configs/methods/snapkv.yaml"));
 *     KS_TRY(ks_knobs_set_kv(ops, opts, "window_size=16", "--method_opt"));
 *     char *y;  KS_TRY(ks_knobs_to_yaml(ops, opts, &y));  ...  free(y);
 *     KS_TRY(ks_knobs_load_yaml_parts(parts, opts_of_parts, n, "chain.yaml"));  // a composition's sections
 *
 * Errors are KS_ERR_ARG (KS_ERR_IO for an unreadable file, KS_ERR_FORMAT for broken YAML) whose message names
 * where the value came from (file:line or --method_opt), the method, the key and what is accepted.
 */
#ifndef KS_KNOBS_H
#define KS_KNOBS_H

#include "methods/method.h"

ks_status ks_knobs_defaults(const ks_method_ops *ops, void *opts);

/* Sets knob `key` from text; `where` names the source for messages ("file.yaml:3", "--method_opt"). */
ks_status ks_knobs_set(const ks_method_ops *ops, void *opts, const char *key, const char *value, const char *where);

/* "key=value" (value may be empty only for a list knob). */
ks_status ks_knobs_set_kv(const ks_method_ops *ops, void *opts, const char *kv, const char *where);

/* Applies every "key: value" of a YAML mapping file (a list value for list knobs); an empty file is no change. */
ks_status ks_knobs_load_yaml(const ks_method_ops *ops, void *opts, const char *path);

/* A composition's file (method.h, "Compositions"): one section per part, keyed by the part's name or file
 * (case-insensitive), each a mapping of that part's knobs applied to opts[i] as ks_knobs_load_yaml does; an
 * empty section, or none, is no change. A key naming no part, a section given twice or one that is not a
 * mapping is an error naming the file, line and parts. */
ks_status ks_knobs_load_yaml_parts(const ks_method_ops *const *ops, void *const *opts, int n, const char *path);

/* 1 when ops has a knob `key`. */
int ks_knobs_has(const ks_method_ops *ops, const char *key);

/* "key: value\n" for every knob, in table order. *out is caller-freed. */
ks_status ks_knobs_to_yaml(const ks_method_ops *ops, const void *opts, char **out);

#endif
