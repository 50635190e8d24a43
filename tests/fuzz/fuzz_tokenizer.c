/* fuzz_tokenizer.c — libFuzzer target: a tokenizer.json (with an optional tokenizer_config.json), loaded, then
 * used: a text encoded with and without the post-processor, the chat template applied to it, and ids decoded.
 *
 * Input: TOKENIZER_JSON [NUL TEXT [NUL TOKENIZER_CONFIG_JSON]]. Without a config the tokenizer.json is loaded
 * alone; with one, the directory holding both (as `--tokenizer DIR` does). No TEXT (or an empty one) means a
 * fixed text. The ids decoded are the encoded ones plus ids taken from the text's bytes (out of range and
 * negative ones included, which decode must skip). Seeds: tests/fuzz/make_corpus.py.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static const char default_text[] = "Hello, world! It's 2024: \xc3\xa9t\xc3\xa9 \xe4\xb8\x96\xe7\x95\x8c  tabs\tand "
                                   "\xf0\x9f\x98\x80 <s> </s> <|im_start|> 12345";

/* Decodes the encoded ids followed by ids made of the text's bytes, both with and without special tokens. */
static void decode_all(const ks_tokenizer *tok, const ks_ids *enc, const uint8_t *text, size_t n) {
    ks_ids ids = {0};
    int ok = 1;
    for (int i = 0; ok && i < enc->n; i++) ok = ks_ids_push(&ids, enc->ids[i]) == KS_OK;
    for (size_t i = 0; ok && i + 2 <= n && i < 512; i += 2)
        ok = ks_ids_push(&ids, (int32_t)(int16_t)(text[i] | text[i + 1] << 8)) == KS_OK;
    for (int skip = 0; ok && skip < 2; skip++) {
        char *s;
        if (ks_tokenizer_decode(tok, ids.ids, ids.n, skip, &s) == KS_OK) free(s);
    }
    ks_ids_free(&ids);
}

static void use(const ks_tokenizer *tok, const char *text, size_t n) {
    ks_ids ids = {0};
    for (int add_special = 0; add_special < 2; add_special++) {
        ids.n = 0;
        (void)ks_tokenizer_encode(tok, text, n, add_special, &ids);
    }
    decode_all(tok, &ids, (const uint8_t *)text, n);
    ks_ids_free(&ids);
    char *user = strndup(text, n), *prompt;
    if (user && ks_chat_apply(tok, "auto", NULL, user, &prompt, NULL) == KS_OK) {
        ks_ids chat = {0};
        (void)ks_tokenizer_encode(tok, prompt, strlen(prompt), 0, &chat);
        ks_ids_free(&chat);
        free(prompt);
    }
    free(user);
    (void)ks_tokenizer_token_id(tok, "<s>");
    (void)ks_tokenizer_is_special(tok, ks_tokenizer_eos(tok));
    (void)ks_tokenizer_is_special(tok, ks_tokenizer_vocab_size(tok));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ks_fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *json, *rest, *text, *config;
    size_t n_json, n_rest, n_text, n_config;
    ks_fuzz_split(data, size, &json, &n_json, &rest, &n_rest);
    ks_fuzz_split(rest, n_rest, &text, &n_text, &config, &n_config);
    int has_config = n_text < n_rest; /* a second NUL: the config follows, even if empty */
    if (n_rest == 0) text = (const uint8_t *)default_text, n_text = sizeof default_text - 1;
    char path[512], config_path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "tokenizer.json"), json, n_json);
    ks_fuzz_path(config_path, sizeof config_path, "tokenizer_config.json");
    if (has_config) ks_fuzz_write(config_path, config, n_config);
    else unlink(config_path);
    ks_tokenizer *tok;
    if (ks_tokenizer_load(&tok, has_config ? ks_fuzz_dir() : path) != KS_OK) return 0;
    use(tok, (const char *)text, n_text);
    ks_tokenizer_free(tok);
    return 0;
}
