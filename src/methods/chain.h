/* chain.h — creating KV methods and compositions of them (method.h, "Compositions"): a name parsed into parts,
 * the composition's sense checks, the chain of instances and its options. Internal to src/methods; the tests
 * build compositions of their own parts with ks_method_create_ops:
 *
 *     const ks_method_ops *parts[] = {&ks_method_snapkv, &my_quant_part};
 *     KS_TRY(ks_method_create_ops(&m, parts, 2, NULL, opts, n_opts));  // as ks_method_create("SnapKV+...")
 *
 * The chain owns nothing beyond its instances (method.h: next, head, selector).
 */
#ifndef KS_METHODS_CHAIN_H
#define KS_METHODS_CHAIN_H

#include "methods/method.h"

/* The parts of --acceleration `name` ("SnapKV+KIVI"; a single name is one part), looked up in ks_methods[]:
 * KS_ERR_ARG for an empty or unknown part, or more than KS_METHOD_MAX_PARTS * 2 parts. parts holds that many. */
ks_status ks_method_parse(const char *name, const ks_method_ops **parts, int *n);

/* ks_method_create on parts already found: the sense checks (n > 1), the instances with their defaults, the YAML
 * file (flat for one part, one section per part otherwise), the "key=value" / "part.key=value" overrides, then
 * each part's cross-knob check. */
ks_status ks_method_create_ops(ks_method **out, const ks_method_ops *const *parts, int n, const char *config_path,
                               const char *const *opts, int n_opts);

#endif
