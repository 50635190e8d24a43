/* tokenizer.c — loading (tokenizer.json, a directory, or a .gguf), the encode driver, accessors. The stages
 * live in added.c, normalize.c, pretok.c, bpe.c and decode.c (see tok_impl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tokenizer/bytelevel.h"
#include "tokenizer/tok_impl.h"

ks_status ks_ids_push(ks_ids *v, int32_t id) {
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 256;
        int32_t *ids = realloc(v->ids, (size_t)cap * sizeof *ids);
        if (!ids) return ks_fail(KS_ERR_NOMEM, "out of memory growing a token list to %d ids", cap);
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return KS_OK;
}

void ks_ids_free(ks_ids *v) {
    free(v->ids);
    memset(v, 0, sizeof *v);
}

/* ---- load / free ---- */

/* A GGUF file starts with the magic "GGUF" (whatever its name). */
static int is_gguf(const char *path) {
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

ks_status ks_tokenizer_load(ks_tokenizer **out, const char *path) {
    *out = NULL;
    char json[4096], config[4096];
    const char *json_path = path, *config_path = NULL;
    int gguf = 0;
    if (ks_is_directory(path)) {
        ks_path_join(json, sizeof json, path, "tokenizer.json");
        if (!ks_file_exists(json))
            return ks_fail(KS_ERR_IO, "%s: directory has no tokenizer.json (pass the tokenizer.json or a .gguf file)",
                           path);
        json_path = json;
        ks_path_join(config, sizeof config, path, "tokenizer_config.json");
        if (ks_file_exists(config)) config_path = config;
    } else if (ks_special_file_kind(path)) { /* stat only: a FIFO is never opened */
        return ks_fail(KS_ERR_IO, "%s: is %s, not a tokenizer.json, a directory holding one, or a .gguf file", path,
                       ks_special_file_kind(path));
    } else if (!ks_file_exists(path)) {
        return ks_fail(KS_ERR_IO, "%s: tokenizer file not found (expected a tokenizer.json, a directory holding one, "
                       "or a .gguf file)", path);
    } else {
        gguf = is_gguf(path);
    }
    ks_tokenizer *tok = ks_tok_new(json_path);
    if (!tok) return KS_ERR_NOMEM;
    ks_status st = gguf ? ks_tok_load_gguf(tok, path) : ks_tok_load_hf(tok, json_path, config_path);
    if (st != KS_OK) {
        ks_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return KS_OK;
}

void ks_tokenizer_free(ks_tokenizer *tok) {
    if (!tok) return;
    free(tok->path);
    ks_strtab_free(&tok->vocab);
    ks_bytemap_free(&tok->vocab_map);
    ks_pairmap_free(&tok->merges);
    ks_pairmap_free(&tok->char_pairs);
    free(tok->added);
    ks_strtab_free(&tok->added_text);
    free(tok->added_of_id);
    for (int i = 0; i < tok->n_norm; i++) {
        free(tok->norm[i].text);
        free(tok->norm[i].with);
    }
    for (int i = 0; i < tok->n_split; i++) pcre2_code_free(tok->split[i]);
    for (int i = 0; i < tok->n_dec; i++) {
        free(tok->dec[i].text);
        free(tok->dec[i].with);
    }
    free(tok->chat_template);
    free(tok);
}

/* ---- encode ---- */

typedef struct piece_ctx {
    const ks_tokenizer *tok;
    ks_tok_scratch *sc;
    ks_ids *out;
} piece_ctx;

static ks_status encode_piece(void *ctx, const char *s, size_t n) {
    piece_ctx *c = ctx;
    return ks_bpe_encode(c->tok, c->sc, s, n, c->out);
}

/* Text between added tokens: normalize, pre-tokenize, BPE. `offset` is its byte offset in the input. */
static ks_status encode_segment(piece_ctx *c, const char *s, size_t n, size_t offset) {
    if (n == 0) return KS_OK;
    const char *norm;
    size_t nn;
    KS_TRY(ks_normalize(c->tok, c->sc, s, n, offset, &norm, &nn));
    return ks_pretokenize(c->tok, c->sc, norm, nn, encode_piece, c);
}

static ks_status encode(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *text, size_t len, int add_special,
                        ks_ids *out) {
    piece_ctx c = {tok, sc, out};
    if (add_special)
        for (int i = 0; i < tok->n_prefix; i++) KS_TRY(ks_ids_push(out, tok->prefix[i]));
    size_t pos = 0, ms, me;
    int which;
    while (ks_added_find(tok, text, len, pos, &ms, &me, &which)) {
        KS_TRY(encode_segment(&c, text + pos, ms - pos, pos));
        KS_TRY(ks_ids_push(out, tok->added[which].id));
        pos = me;
    }
    KS_TRY(encode_segment(&c, text + pos, len - pos, pos));
    if (add_special)
        for (int i = 0; i < tok->n_suffix; i++) KS_TRY(ks_ids_push(out, tok->suffix[i]));
    return KS_OK;
}

ks_status ks_tokenizer_encode(const ks_tokenizer *tok, const char *text, size_t len, int add_special, ks_ids *out) {
    size_t bad = ks_utf8_validate(text, len);
    if (bad < len)
        return ks_fail(KS_ERR_ARG, "text to tokenize is not valid UTF-8 (byte offset %zu of %zu)", bad, len);
    ks_tok_scratch sc;
    KS_TRY(ks_tok_scratch_init(&sc));
    ks_status st = encode(tok, &sc, text, len, add_special, out);
    ks_tok_scratch_free(&sc);
    return st;
}

/* ---- accessors ---- */

int ks_tokenizer_vocab_size(const ks_tokenizer *tok) { return tok->n_ids; }
int ks_tokenizer_bos(const ks_tokenizer *tok) { return tok->bos; }
int ks_tokenizer_eos(const ks_tokenizer *tok) { return tok->eos; }

int ks_tokenizer_is_special(const ks_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_ids || tok->added_of_id[id] < 0) return 0;
    return tok->added[tok->added_of_id[id]].special;
}

int32_t ks_tokenizer_token_id(const ks_tokenizer *tok, const char *token) {
    size_t n = strlen(token);
    int32_t id = ks_tok_added_id(tok, token, n);
    return id >= 0 ? id : ks_tok_vocab_id(tok, token, n);
}

const char *ks_tokenizer_chat_template(const ks_tokenizer *tok) { return tok->chat_template; }
