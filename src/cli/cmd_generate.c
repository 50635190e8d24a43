/* cmd_generate.c — `kvscope generate`: greedy continuation of one prompt, streamed to stdout as it is decoded,
 * then one line of token counts and speeds on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/log.h"
#include "engine/generate.h"
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

ks_status ks_cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *device = "cpu";
    int chat = 0, max_new = 128, threads = 0, chunk = 512;
    const ks_option opts[] = {
        {"model_path", KS_OPT_STRING, &model_path, "P", "HF model directory or .gguf file", 1},
        {"prompt", KS_OPT_STRING, &prompt, "TEXT", "the prompt text", 1},
        {"chat", KS_OPT_FLAG, &chat, NULL, "wrap the prompt in the model's chat template", 0},
        {"max_new_tokens", KS_OPT_INT, &max_new, "N", "the most tokens to generate", 0},
        {"device", KS_OPT_STRING, &device, "D", "compute backend: cpu or cuda", 0},
        {"threads", KS_OPT_INT, &threads, "N", "CPU threads (0 = all cores)", 0},
        {"chunk", KS_OPT_INT, &chunk, "N", "prefill chunk size in tokens", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "generate",
                            "run a prompt through a model and print its greedy continuation", &help));
    if (help) return KS_OK;
    if (max_new < 1) return ks_fail(KS_ERR_ARG, "--max_new_tokens %d: must be at least 1", max_new);
    if (chunk < 1) return ks_fail(KS_ERR_ARG, "--chunk %d: must be at least 1", chunk);
    if (threads < 0) return ks_fail(KS_ERR_ARG, "--threads %d: must be 0 (all cores) or more", threads);
    const ks_backend_ops *ops;
    KS_TRY(ks_backend_find(device, &ops)); /* fail before the slow model load */

    ks_status st;
    ks_model m = {0};
    ks_tokenizer *tok = NULL;
    ks_ids ids = {0};
    ks_forward f = {0};
    int32_t *out = NULL;
    KS_TRY_GOTO(st, ks_model_load(&m, model_path, 0, -1), done);
    KS_TRY_GOTO(st, ks_tokenizer_load(&tok, model_path), done);
    KS_TRY_GOTO(st, ks_generate_encode_prompt(tok, prompt, chat, &ids), done);
    KS_TRY_GOTO(st, ks_generate_check_length(&m, ids.n, max_new), done);
    ks_forward_params fp = {.device = device, .max_ctx = ids.n + max_new, .chunk = chunk, .threads = threads};
    KS_TRY_GOTO(st, ks_forward_init(&f, &m, &fp), done);
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
done:
    free(out);
    ks_forward_free(&f);
    ks_ids_free(&ids);
    if (tok) ks_tokenizer_free(tok);
    ks_model_free(&m);
    return st;
}
