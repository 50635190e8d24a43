/* fuzz_config.c — libFuzzer target: a Hugging Face config.json (ks_model_config_from_hf), then the RoPE
 * frequencies of any config it accepts (they divide and exponentiate the parsed factors). */
#include "fuzz_util.h"
#include "model/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ks_fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "config.json"), data, size);
    ks_model_config c;
    if (ks_model_config_from_hf(path, &c) != KS_OK) return 0;
    float inv_freq[KS_MAX_ROPE_FACTORS];
    ks_rope_inv_freq(&c, inv_freq);
    (void)ks_arch_name(c.arch);
    return 0;
}
