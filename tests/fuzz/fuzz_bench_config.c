/* fuzz_bench_config.c — libFuzzer target: the benchmark YAML (configs/benchmarks/<name>.yaml), parsed as
 * `kvscope eval --cfg_path` reads it, then asked which of its tasks take the chat template. */
#include "bench/bench_config.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ks_fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ks_bench_config c = {0};
    if (ks_bench_config_parse(&c, (const char *)data, size, "fuzz.yaml") == KS_OK) {
        for (int t = 0; t < c.n_tasks; t++)
            for (int l = 0; l < c.n_lengths; l++) (void)ks_bench_config_use_template(&c, c.task_names[t], c.lengths[l]);
        (void)ks_bench_config_use_template(&c, "niah_single_1", 4096);
    }
    ks_bench_config_free(&c); /* whatever the parse left, after success or error */
    return 0;
}
