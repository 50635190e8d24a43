/* tiny_model.h — a one-layer Llama small enough for fuzz inputs (a few KB of weights), for the targets that
 * read a Hugging Face model directory: its config.json text and its tensors, which make_corpus.py writes into
 * the seeds with the same names, dtypes and shapes (keep the two tables in step).
 */
#ifndef KS_FUZZ_TINY_MODEL_H
#define KS_FUZZ_TINY_MODEL_H

#include "model/tensor_index.h"

#define KS_FUZZ_TINY_CONFIG                                                                                     \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8, "              \
    "\"intermediate_size\": 12, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "                        \
    "\"num_key_value_heads\": 1, \"vocab_size\": 16, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5, " \
    "\"rope_theta\": 10000.0, \"tie_word_embeddings\": true, \"bos_token_id\": 1, \"eos_token_id\": 2}\n"

typedef struct ks_fuzz_tensor {
    const char *name;
    const char *dtype; /* safetensors spelling: F32, F16, BF16 */
    int ndim;
    int shape[2];
    int shard;         /* 1 or 2: the shard of the two-file checkpoint (fuzz_safetensors_index) */
} ks_fuzz_tensor;

extern const ks_fuzz_tensor ks_fuzz_tiny_tensors[];
extern const int ks_fuzz_n_tiny_tensors;

/* The shard file names of the two-file checkpoint, as the index's weight_map names them. */
extern const char *const ks_fuzz_tiny_shards[2];

/* Writes a safetensors file at path holding the tiny model's tensors of `shard` (0: all of them); weights are
 * small deterministic values. */
void ks_fuzz_write_tiny_safetensors(const char *path, int shard);

/* Converts every tensor of ix to fp32 (the dequantizers read what the index accepted). */
void ks_fuzz_convert_all(const ks_tensor_index *ix);

/* Prepares ks_fuzz_dir() as a tiny Hugging Face checkpoint around the fuzzed file: one-threaded and quiet, the
 * tiny config.json, and with_shards: the two shard files an index names. For LLVMFuzzerInitialize. */
void ks_fuzz_hf_dir_init(int with_shards);

/* The Hugging Face directory ks_fuzz_dir() as the loaders see it: its tensor index with every tensor
 * converted, then the whole model (config, shapes checked, weights converted). Refusals are valid outcomes. */
void ks_fuzz_load_hf_dir(void);

#endif
