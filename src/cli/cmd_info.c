/* cmd_info.c — `kvscope info --model_path P`: the parsed config (every ks_model_config field, under its
 * Hugging Face name) and the tensor inventory (name, dtype, shape, bytes; totals per dtype and overall).
 * Reads only headers and metadata: nothing is converted, so it is instant even for large checkpoints. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "model/model.h"

static const char *rope_type_name(ks_rope_type t) {
    return t == KS_ROPE_LINEAR ? "linear" : t == KS_ROPE_LLAMA3 ? "llama3" : "default";
}

static void print_config(const ks_model_config *c) {
    printf("config:\n");
    printf("  %-26s %s\n", "architecture", ks_arch_name(c->arch));
    printf("  %-26s %d\n", "num_hidden_layers", c->n_layers);
    printf("  %-26s %d\n", "hidden_size", c->hidden);
    printf("  %-26s %d\n", "num_attention_heads", c->n_heads);
    printf("  %-26s %d (GQA group %d)\n", "num_key_value_heads", c->n_kv_heads, c->n_heads / c->n_kv_heads);
    printf("  %-26s %d\n", "head_dim", c->head_dim);
    printf("  %-26s %d\n", "intermediate_size", c->ffn);
    printf("  %-26s %d\n", "vocab_size", c->vocab);
    printf("  %-26s %d\n", "max_position_embeddings", c->max_pos);
    printf("  %-26s %g\n", "rms_norm_eps", (double)c->rms_eps);
    printf("  %-26s %.10g\n", "rope_theta", (double)c->rope_theta);
    printf("  %-26s %s", "rope_type", rope_type_name(c->rope_type));
    if (c->rope_type != KS_ROPE_DEFAULT) printf(" (factor %g", (double)c->rope_factor);
    if (c->rope_type == KS_ROPE_LLAMA3)
        printf(", low_freq_factor %g, high_freq_factor %g, original_max_position_embeddings %d",
               (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_orig_max_pos);
    printf("%s\n", c->rope_type != KS_ROPE_DEFAULT ? ")" : "");
    if (c->n_rope_freq_factors)
        printf("  %-26s %d per-dimension divisors (GGUF rope_freqs)\n", "rope_freqs", c->n_rope_freq_factors);
    if (c->sliding_window) printf("  %-26s %d (layers %d..%d)\n", "sliding_window", c->sliding_window,
                                  c->swa_first_layer, c->n_layers - 1);
    else printf("  %-26s none (full attention)\n", "sliding_window");
    printf("  %-26s q/k/v %s, o %s\n", "attention_bias", c->attn_bias ? "yes" : "no", c->o_bias ? "yes" : "no");
    printf("  %-26s %s\n", "tie_word_embeddings", c->tie_embeddings ? "yes" : "no");
    if (c->bos_id >= 0) printf("  %-26s %d\n", "bos_token_id", c->bos_id);
    else printf("  %-26s none\n", "bos_token_id");
    printf("  %-26s", "eos_token_id");
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("%s\n", c->n_eos ? "" : " none");
}

static void print_tensors(const ks_tensor_index *ix) {
    int64_t params = 0;
    size_t bytes = 0, dtype_bytes[KS_DTYPE_Q6_K + 1] = {0};
    int dtype_count[KS_DTYPE_Q6_K + 1] = {0};
    printf("tensors:\n  %-48s %-5s %-16s %12s%s\n", "name", "dtype", "shape", "bytes", ix->n_files > 1 ? "  file" : "");
    for (int i = 0; i < ix->n; i++) {
        const ks_tensor_info *t = &ix->tensors[i];
        char shape[64];
        int n = snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < t->ndim && n < (int)sizeof shape; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        if (n < (int)sizeof shape) snprintf(shape + n, sizeof shape - (size_t)n, "]");
        printf("  %-48s %-5s %-16s %12zu", t->name, ks_dtype_name(t->dtype), shape, t->nbytes);
        if (ix->n_files > 1) {
            const char *f = ks_tensor_file(ix, t), *slash = strrchr(f, '/');
            printf("  %s", slash ? slash + 1 : f);
        }
        printf("\n");
        params += ks_tensor_numel(t);
        bytes += t->nbytes;
        dtype_count[t->dtype]++;
        dtype_bytes[t->dtype] += t->nbytes;
    }
    printf("totals: %d tensors in %d file%s, %lld parameters, %zu bytes (%.1f MiB)\n", ix->n, ix->n_files,
           ix->n_files == 1 ? "" : "s", (long long)params, bytes, (double)bytes / (1 << 20));
    for (int d = 0; d <= KS_DTYPE_Q6_K; d++)
        if (dtype_count[d])
            printf("  %-5s %5d tensors, %zu bytes\n", ks_dtype_name((ks_dtype)d), dtype_count[d], dtype_bytes[d]);
}

ks_status ks_cmd_info(int argc, char **argv) {
    const char *model_path = NULL;
    const ks_option opts[] = {
        {"model_path", KS_OPT_STRING, &model_path, "P", "HF model directory or .gguf file", 1},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "info", "print a model's parsed config and tensor inventory", &help));
    if (help) return KS_OK;
    ks_model_config cfg;
    ks_tensor_index ix;
    int is_gguf;
    KS_TRY(ks_model_open_index(model_path, &cfg, &ix, &is_gguf));
    printf("model: %s (%s)\n", model_path, is_gguf ? "GGUF" : "Hugging Face safetensors");
    print_config(&cfg);
    print_tensors(&ix);
    fflush(stdout);
    ks_tensor_index_free(&ix);
    return KS_OK;
}
