/* hf_json.c — loading a Hugging Face tokenizer.json (and, for a directory, the tokenizer_config.json beside it):
 * the model (BPE only: vocab, merges as "a b" strings or ["a", "b"] pairs, ignore_merges, byte_fallback,
 * unk_token, fuse_unk), the added tokens, the configuration, and the driver; the pipeline parts are parsed by
 * hf_pipeline.c. Another model type is KS_ERR_UNSUPPORTED naming the file and field 'model.type'; two different
 * token strings with one id (in model.vocab, added_tokens or across them) are KS_ERR_FORMAT.
 *
 * From tokenizer_config.json: bos_token/eos_token (string or {"content": ...}), add_bos_token/add_eos_token
 * (when present they decide the post-processor's BOS/EOS, as transformers' Llama tokenizers do),
 * clean_up_tokenization_spaces, chat_template (string, or the "default" entry of a list).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "tokenizer/hf_parse.h"

/* ---- ids ---- */

/* The token text an id was given, as written in the file (borrowed from the JSON), and the field giving it. */
struct ks_hf_id_claim {
    const char *text, *field;
};

/* Gives `id` to `text` (from `field`). An id names one token: another text already holding it is a format
 * error naming the id and both texts. The same text again is not (special tokens are commonly listed both in
 * model.vocab and in added_tokens). */
static ks_status claim_id(ks_hf_ctx *c, int32_t id, const char *text, const char *field) {
    if (id > KS_TOK_MAX_ID)
        return ks_fail(KS_ERR_FORMAT, "%s: %s gives '%s' the id %d, beyond the largest supported id %d", c->file,
                       field, text, (int)id, KS_TOK_MAX_ID);
    if (id >= c->n_claims) {
        int32_t n = id + 1 > 2 * c->n_claims ? id + 1 : 2 * c->n_claims;
        struct ks_hf_id_claim *grown = realloc(c->claims, (size_t)n * sizeof *grown);
        if (!grown) return ks_fail(KS_ERR_NOMEM, "out of memory indexing the token ids of %s", c->file);
        memset(grown + c->n_claims, 0, (size_t)(n - c->n_claims) * sizeof *grown);
        c->claims = grown;
        c->n_claims = n;
    }
    struct ks_hf_id_claim *had = &c->claims[id];
    if (had->text && strcmp(had->text, text))
        return ks_fail(KS_ERR_FORMAT, "%s: id %d is given to two tokens, '%s' (%s) and '%s' (%s); an id must name "
                       "one token", c->file, (int)id, had->text, had->field, text, field);
    *had = (struct ks_hf_id_claim){text, field};
    return KS_OK;
}

/* ---- model ---- */

static ks_status parse_vocab(ks_hf_ctx *c, const cJSON *vocab, size_t n_merges) {
    if (!cJSON_IsObject(vocab)) return ks_fail(KS_ERR_FORMAT, "%s: field 'model.vocab' must be an object", c->file);
    KS_TRY(ks_tok_reserve(c->tok, (size_t)cJSON_GetArraySize(vocab), n_merges));
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > KS_TOK_MAX_ID + 1.0)
            return ks_fail(KS_ERR_FORMAT, "%s: field 'model.vocab.%s' must be a token id", c->file, e->string);
        KS_TRY(claim_id(c, (int32_t)e->valuedouble, e->string, "model.vocab"));
        KS_TRY(ks_tok_set_token(c->tok, (int32_t)e->valuedouble, e->string, strlen(e->string)));
    }
    return KS_OK;
}

static ks_status parse_merges(ks_hf_ctx *c, const cJSON *merges) {
    const cJSON *e;
    int32_t rank = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(e)) { /* "a b" */
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return ks_fail(KS_ERR_FORMAT, "%s: field 'model.merges[%d]' (\"%s\") is not two tokens", c->file, rank,
                               e->valuestring);
            a = e->valuestring;
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring;
            al = strlen(a);
            b = e->child->next->valuestring;
            bl = strlen(b);
        } else {
            return ks_fail(KS_ERR_FORMAT, "%s: field 'model.merges[%d]' must be \"a b\" or [\"a\", \"b\"]", c->file,
                           rank);
        }
        KS_TRY(ks_tok_add_merge(c->tok, a, al, b, bl, rank, "model.merges"));
        rank++;
    }
    return KS_OK;
}

static ks_status parse_model(ks_hf_ctx *c, const cJSON *m, const char **unk) {
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsArray(merges)) return ks_fail(KS_ERR_FORMAT, "%s: field 'model.merges' must be a list", c->file);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(drop) && drop->valuedouble > 0) return ks_hf_unsupported(c, "model.dropout", "> 0", "null or 0");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(m, affixes[i]);
        if (cJSON_IsString(a) && a->valuestring[0]) {
            char field[64];
            snprintf(field, sizeof field, "model.%s", affixes[i]);
            return ks_hf_unsupported(c, field, a->valuestring, "null or \"\"");
        }
    }
    c->tok->ignore_merges = ks_hf_bool(m, "ignore_merges", 0);
    c->tok->byte_fallback = ks_hf_bool(m, "byte_fallback", 0);
    c->tok->fuse_unk = ks_hf_bool(m, "fuse_unk", 0);
    KS_TRY(ks_json_get_string_opt(m, "unk_token", c->file, unk));
    KS_TRY(parse_vocab(c, cJSON_GetObjectItemCaseSensitive(m, "vocab"), (size_t)cJSON_GetArraySize(merges)));
    return parse_merges(c, merges);
}

static ks_status parse_added(ks_hf_ctx *c, const cJSON *added) {
    const cJSON *e;
    cJSON_ArrayForEach(e, added) {
        int id = -1;
        const char *content = NULL;
        KS_TRY(ks_json_get_int(e, "id", c->file, &id));
        KS_TRY(ks_hf_get_str(c, e, "content", "added_tokens[]", &content));
        if (id < 0) return ks_fail(KS_ERR_FORMAT, "%s: added token '%s' has a negative id", c->file, content);
        KS_TRY(claim_id(c, id, content, "added_tokens"));
        ks_added_token f = {0};
        f.special = (uint8_t)ks_hf_bool(e, "special", 0);
        f.lstrip = (uint8_t)ks_hf_bool(e, "lstrip", 0);
        f.rstrip = (uint8_t)ks_hf_bool(e, "rstrip", 0);
        f.single_word = (uint8_t)ks_hf_bool(e, "single_word", 0);
        KS_TRY(ks_tok_add_added(c->tok, id, content, strlen(content), f));
    }
    return KS_OK;
}

/* ---- tokenizer_config.json ---- */

/* bos_token / eos_token: a string, {"content": "..."} (older files), or null. */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(it)) return it->valuestring;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
    return cJSON_IsString(content) ? content->valuestring : NULL;
}

static ks_status config_token_id(ks_tokenizer *tok, const cJSON *cfg, const char *key, const char *file, int32_t *id) {
    const char *s = config_token(cfg, key);
    if (!s) return KS_OK;
    *id = ks_tokenizer_token_id(tok, s);
    if (*id < 0)
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s' is '%s', which is not a token of the tokenizer", file, key, s);
    return KS_OK;
}

static ks_status parse_config(ks_tokenizer *tok, const char *path) {
    cJSON *cfg;
    KS_TRY(ks_json_load(path, &cfg));
    ks_status st = KS_OK;
    int add_bos = -1, add_eos = -1, clean = 0;
    KS_TRY_GOTO(st, config_token_id(tok, cfg, "bos_token", path, &tok->bos), done);
    KS_TRY_GOTO(st, config_token_id(tok, cfg, "eos_token", path, &tok->eos), done);
    KS_TRY_GOTO(st, ks_json_get_bool_opt(cfg, "add_bos_token", path, &add_bos), done);
    KS_TRY_GOTO(st, ks_json_get_bool_opt(cfg, "add_eos_token", path, &add_eos), done);
    KS_TRY_GOTO(st, ks_json_get_bool_opt(cfg, "clean_up_tokenization_spaces", path, &clean), done);
    tok->clean_up_spaces = clean;
    if (add_bos >= 0) { /* transformers' Llama-family tokenizers rebuild the post-processor from these */
        tok->n_prefix = add_bos && tok->bos >= 0;
        tok->prefix[0] = tok->bos;
    }
    if (add_eos >= 0) {
        tok->n_suffix = add_eos && tok->eos >= 0;
        tok->suffix[0] = tok->eos;
    }
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), *e;
    const cJSON *list = cJSON_IsArray(tpl) ? tpl : NULL; /* [{"name": ..., "template": ...}] */
    const char *text = cJSON_IsString(tpl) ? tpl->valuestring : NULL;
    cJSON_ArrayForEach(e, list) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (cJSON_IsString(t) && (!text || (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0)))
            text = t->valuestring;
    }
    if (text && !(tok->chat_template = strdup(text)))
        st = ks_fail(KS_ERR_NOMEM, "out of memory copying the chat template");
done:
    cJSON_Delete(cfg);
    return st;
}

ks_status ks_tok_load_hf(ks_tokenizer *tok, const char *json_path, const char *config_path) {
    cJSON *root;
    KS_TRY(ks_json_load(json_path, &root));
    ks_hf_ctx c = {.tok = tok, .file = json_path};
    ks_status st = KS_OK;
    const char *unk = NULL;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        st = ks_fail(KS_ERR_FORMAT, "%s: field 'model' is missing (is this a Hugging Face tokenizer.json?)", json_path);
        goto done;
    }
    const char *type = ks_hf_type(model);
    if (type ? strcmp(type, "BPE") != 0 : !cJSON_GetObjectItemCaseSensitive(model, "merges")) {
        st = ks_hf_unsupported(&c, "model.type", type, "BPE");
        goto done;
    }
    tok->byte_level = ks_hf_has_byte_level(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
    KS_TRY_GOTO(st, ks_hf_parse_normalizer(&c, cJSON_GetObjectItemCaseSensitive(root, "normalizer")), done);
    KS_TRY_GOTO(st, ks_hf_parse_pre_tokenizer(&c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer")), done);
    KS_TRY_GOTO(st, ks_hf_parse_decoder(&c, cJSON_GetObjectItemCaseSensitive(root, "decoder")), done);
    KS_TRY_GOTO(st, parse_model(&c, model, &unk), done);
    KS_TRY_GOTO(st, parse_added(&c, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")), done);
    KS_TRY_GOTO(st, ks_hf_parse_post_processor(&c, cJSON_GetObjectItemCaseSensitive(root, "post_processor")), done);
    KS_TRY_GOTO(st, ks_tok_finish(tok), done);
    if (unk && (tok->unk_id = ks_tokenizer_token_id(tok, unk)) < 0) {
        st = ks_fail(KS_ERR_FORMAT, "%s: field 'model.unk_token' ('%s') is not in the vocabulary", json_path, unk);
        goto done;
    }
    if (tok->n_prefix > 0) tok->bos = tok->prefix[0]; /* overridden by the config's bos_token */
    if (config_path) KS_TRY_GOTO(st, parse_config(tok, config_path), done);
    st = ks_tok_check_ids(tok);
done:
    free(c.claims);
    cJSON_Delete(root);
    return st;
}
