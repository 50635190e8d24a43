/* fullkv.c — FullKV: no compression, the dense full cache every other method is compared with. It has no
 * knobs and no hooks; its statistics still report the layer's rows and key norms. */
#include "methods/method.h"

static const ks_knob knobs[] = {{0}};

const ks_method_ops ks_method_fullkv = {
    .name = "FullKV",
    .file = "fullkv",
    .summary = "no compression: every prompt and generated token stays in the KV cache",
    .knobs = knobs,
};
