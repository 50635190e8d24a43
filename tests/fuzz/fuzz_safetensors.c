/* fuzz_safetensors.c — libFuzzer target: a model.safetensors file in a Hugging Face model directory.
 *
 * The input is the whole file (u64 header length, JSON header, data). The directory also holds a fixed
 * config.json for the tiny model of tiny_model.h, so an input that carries that model's tensors loads all the
 * way (shape checks, conversion to fp32); any other header is read as a tensor index and each tensor of it
 * converted. Seeds: tests/fuzz/make_corpus.py.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "model/model.h"
#include "tiny_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ks_fuzz_hf_dir_init(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "model.safetensors"), data, size);
    ks_fuzz_load_hf_dir();
    return 0;
}
