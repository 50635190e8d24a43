/* cmd_generate.c — `kvscope generate`: greedy continuation of one prompt, streamed to stdout as it is decoded,
 * then one line of token counts and speeds and one of KV-cache size on stderr. --acceleration picks a KV method
 * (methods/method.h) with --method_config / --method_opt overrides; --layer_stats prints its per-layer record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/kv_kivi.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "core/log.h"
#include "engine/generate.h"
#include "methods/method.h"
#include "tokenizer/tokenizer.h"

/* Prints the decoded continuation incrementally. The whole continuation is re-decoded each time (so
 * tokenizer rules that depend on context, like SentencePiece's leading space, stay right) and only the new
 * bytes are written; trailing U+FFFD is held back because it may be a character whose bytes are split over
 * tokens that have not arrived yet. */
typedef struct stream_state {
    const ks_tokenizer *tok;
    size_t printed; /* bytes of the decoded continuation already written */
    ks_status st;   /* first decode failure (the callback cannot return it) */
} stream_state;

static void stream_print(stream_state *s, const int32_t *ids, int n, int final) {
    char *text;
    if (s->st != KS_OK) return;
    s->st = ks_tokenizer_decode(s->tok, ids, n, 1, &text);
    if (s->st != KS_OK) return;
    size_t end = strlen(text);
    for (int i = 0; !final && i < 3 && end >= 3 && !memcmp(text + end - 3, "\xEF\xBF\xBD", 3); i++) end -= 3;
    if (end > s->printed) {
        fwrite(text + s->printed, 1, end - s->printed, stdout);
        fflush(stdout);
        s->printed = end;
    }
    free(text);
}

static void stream_token(void *ctx, const int32_t *ids, int n) { stream_print(ctx, ids, n, 0); }

/* The KV-cache line and, with per_layer, one line per layer of the method's statistics (stderr). */
static void report_kv(const ks_generate_result *r, const ks_method *m, int per_layer) {
    const double mib = 1024.0 * 1024.0;
    ks_log_info("KV cache (%s): %.2f MiB after prefill of %.2f MiB uncompressed (%.1f%%), %.2f MiB at the end",
                ks_method_name(m), r->kv_bytes_prefill / mib, r->kv_bytes_full / mib,
                r->kv_bytes_full ? 100.0 * r->kv_bytes_prefill / r->kv_bytes_full : 0.0, r->kv_bytes_end / mib);
    ks_log_info("KV method (%s): %.1f ms of the %.1f ms prefill (%.2f%%)", ks_method_name(m), 1e3 * r->prefill_method_s,
                1e3 * r->prefill_s, r->prefill_s > 0 ? 100.0 * r->prefill_method_s / r->prefill_s : 0.0);
    if (!per_layer) return;
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
    int n = ks_method_layer_stats(m, st);
    for (int i = 0; i < n; i++) {
        ks_log_info("layer %2d: budget %6d kept %6d window mass kept %.4f key norm mean %.3f max %.3f", st[i].layer,
                    st[i].budget, st[i].kept, st[i].attn_mass_kept, st[i].key_norm_mean, st[i].key_norm_max);
        if (st[i].sparse_blocks > 0)
            ks_log_info("layer %2d: sparse prefill density %.4f (%lld blocks) coverage %.4f, query-aware heads %.3f, "
                        "mean d_JS %.4f", st[i].layer, st[i].sparse_density, (long long)st[i].sparse_blocks,
                        st[i].sparse_coverage, st[i].sparse_query_aware, st[i].sparse_djs);
        if (st[i].channels_kept > 0)
            ks_log_info("layer %2d: key channels kept per KV head %.1f", st[i].layer, st[i].channels_kept);
        if (m->ops->role == KS_ROLE_QUANT)
            ks_log_info("layer %2d: relative error K %.4f V %.4f, full precision K %d V %d tokens, %.1f KiB",
                        st[i].layer, st[i].quant_error, st[i].quant_error_v, st[i].residual_k, st[i].residual_v,
                        st[i].kv_bytes / 1024.0);
    }
}

ks_status ks_cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *device = "cpu", *accel = "FullKV", *method_config = NULL;
    const char *kv_cache = "auto", *cpu_weights_name = "packed";
    int chat = 0, max_new = 128, threads = 0, chunk = 0, layer_stats = 0;
    ks_opt_strings method_opts = {0};
    const ks_option opts[] = {
        {"model_path", KS_OPT_STRING, &model_path, "P", "HF model directory or .gguf file", 1},
        {"prompt", KS_OPT_STRING, &prompt, "TEXT", "the prompt text", 1},
        {"chat", KS_OPT_FLAG, &chat, NULL, "wrap the prompt in the model's chat template", 0},
        {"max_new_tokens", KS_OPT_INT, &max_new, "N", "the most tokens to generate", 0},
        {"device", KS_OPT_STRING, &device, "D", "compute backend: cpu or cuda", 0},
        {"threads", KS_OPT_INT, &threads, "N", "CPU threads (0 = the physical cores)", 0},
        {"chunk", KS_OPT_INT, &chunk, "N",
         "prefill chunk size in tokens (0: 512, or the whole context for FlexPrefill, which needs the whole prompt in "
         "one chunk)", 0},
        {"cpu_weights", KS_OPT_STRING, &cpu_weights_name, "packed|f32",
         "--device cpu with a GGUF: packed keeps its quantized blocks and multiplies them with int8 activations; "
         "f32 dequantizes at load (the exact fp32 path)", 0},
        {"acceleration", KS_OPT_STRING, &accel, "NAME",
         "KV method: FullKV, H2O, StreamingLLM, SnapKV, L2Compress, PyramidKV, CakeKV, CaM, ThinK, KIVI, "
         "XAttention, FlexPrefill (sparse prefill); or a composition A+B, one part per role in the order sparse prefill, "
         "selection, merging, channels, quantization (SnapKV+ThinK+KIVI, XAttention+SnapKV)", 0},
        {"method_config", KS_OPT_STRING, &method_config, "F.yaml",
         "method knobs overriding the defaults (template: configs/methods/<name>.yaml; a composition: a section "
         "per part)", 0},
        {"method_opt", KS_OPT_STRINGS, &method_opts, "KEY=VALUE",
         "one method knob, after --method_config (a composition's part: PART.KEY=VALUE)", 0},
        {"layer_stats", KS_OPT_FLAG, &layer_stats, NULL, "print the method's per-layer statistics", 0},
        {"kv_cache", KS_OPT_STRING, &kv_cache, "auto|budget|full",
         "budget: size the KV cache for the method's budget (layer-major prefill); full: for the whole sequence; "
         "auto: budget where the method bounds its rows and that saves memory", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "generate",
                            "run a prompt through a model and print its greedy continuation", &help));
    if (help) return KS_OK;
    if (max_new < 1) return ks_fail(KS_ERR_ARG, "--max_new_tokens %d: must be at least 1", max_new);
    if (chunk < 0) return ks_fail(KS_ERR_ARG, "--chunk %d: must be at least 1 (0: the default)", chunk);
    if (threads < 0) return ks_fail(KS_ERR_ARG, "--threads %d: must be 0 (the physical cores) or more", threads);
    ks_forward_cache cache;
    KS_TRY(ks_forward_cache_parse(kv_cache, "--kv_cache", &cache));
    ks_cpu_weights cpu_weights;
    KS_TRY(ks_cpu_weights_parse(cpu_weights_name, "--cpu_weights", &cpu_weights));
    const ks_backend_ops *ops;
    KS_TRY(ks_backend_find(device, &ops)); /* fail before the slow model load */
    ks_method *method = NULL;
    KS_TRY(ks_method_create(&method, accel, method_config, method_opts.v, method_opts.n));

    ks_status st;
    ks_model m = {0};
    ks_tokenizer *tok = NULL;
    ks_ids ids = {0};
    ks_forward f = {0};
    int32_t *out = NULL;
    KS_TRY_GOTO(st, ks_forward_load_model(&m, model_path, 0, -1, device, cpu_weights), done);
    KS_TRY_GOTO(st, ks_tokenizer_load(&tok, model_path), done);
    KS_TRY_GOTO(st, ks_generate_encode_prompt(tok, prompt, chat, &ids), done);
    KS_TRY_GOTO(st, ks_generate_check_length(&m, ids.n, max_new), done);
    ks_forward_params fp = {.device = device, .max_ctx = ids.n + max_new, .max_new = max_new,
                            .chunk = chunk > 0 ? chunk : ks_forward_default_chunk(method, ids.n + max_new),
                            .threads = threads, .cache = cache};
    KS_TRY_GOTO(st, ks_forward_init(&f, &m, method, &fp), done);
    out = ks_malloc(sizeof(int32_t) * max_new, "generated ids");
    if (!out) {
        st = KS_ERR_NOMEM;
        goto done;
    }
    ks_stop_set stop;
    ks_stop_set_build(&stop, &m.cfg, tok);
    stream_state ss = {.tok = tok};
    ks_generate_params gp = {.max_new_tokens = max_new, .stop = &stop, .on_token = stream_token, .ctx = &ss};
    ks_generate_result r;
    KS_TRY_GOTO(st, ks_generate(&f, ids.ids, ids.n, &gp, out, &r), done);
    stream_print(&ss, out, r.n, 1);
    KS_TRY_GOTO(st, ss.st, done);
    printf("\n");
    fflush(stdout);
    ks_log_info("prompt %d tokens, generated %d tokens%s; prefill %.1f tokens/s, decode %.1f tokens/s", ids.n,
                r.n, r.stopped ? " (stopped at EOS)" : "", ids.n / r.prefill_s,
                r.n > 1 ? (r.n - 1) / r.decode_s : 0.0);
    report_kv(&r, method, layer_stats);
    const ks_kvcache *kc = f.ops->kvcache(f.be);
    ks_log_info("KV storage: %.2f MiB allocated (%s)", (double)ks_kvcache_elems(kc) * 2 * kc->elem_bytes / (1 << 20),
                kc->n_slots ? "budget-sized: each layer's own rows plus the prefill slots" : "full");
    if (kc->kivi)
        ks_log_info("KV storage: %.2f MiB allocated for the packed tokens (KIVI's or ThinK's, the whole context)",
                    (double)ks_kv_kivi_alloc_bytes(kc->kivi) / (1 << 20));
done:
    free(out);
    ks_forward_free(&f);
    ks_method_free(method);
    ks_ids_free(&ids);
    if (tok) ks_tokenizer_free(tok);
    ks_model_free(&m);
    return st;
}
