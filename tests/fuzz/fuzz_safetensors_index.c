/* fuzz_safetensors_index.c — libFuzzer target: model.safetensors.index.json of a sharded Hugging Face model.
 *
 * The input is the index. The directory holds the tiny model of tiny_model.h split over two fixed shard files
 * and its config.json, so an index that maps every tensor to its shard loads the model; anything else must be
 * refused with an error. Seeds: tests/fuzz/make_corpus.py.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "model/model.h"
#include "tiny_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ks_fuzz_hf_dir_init(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "model.safetensors.index.json"), data, size);
    ks_fuzz_load_hf_dir();
    return 0;
}
