/* hf_parse.h — shared by the two halves of the tokenizer.json loader: hf_pipeline.c (normalizer, pre-tokenizer,
 * decoder, post-processor) and hf_json.c (model, added tokens, tokenizer_config.json, the driver). Internal to
 * src/tokenizer. */
#ifndef KS_TOK_HF_PARSE_H
#define KS_TOK_HF_PARSE_H

#include <cjson/cJSON.h>

#include "tokenizer/tok_impl.h"

typedef struct ks_hf_ctx {
    ks_tokenizer *tok;
    const char *file; /* the tokenizer.json path, for messages */
    struct ks_hf_id_claim *claims; /* (n_claims) owned: the token text each id was given so far (hf_json.c) */
    int32_t n_claims;
} ks_hf_ctx;

/* The object's "type" string, or NULL. */
const char *ks_hf_type(const cJSON *o);
/* KS_ERR_UNSUPPORTED: "<file>: field '<field>' is '<value>', which kvscope does not support (supported: ...)". */
ks_status ks_hf_unsupported(const ks_hf_ctx *c, const char *field, const char *value, const char *supported);
/* String member `key` of o (borrowed); KS_ERR_FORMAT naming <field>.<key> when missing. */
ks_status ks_hf_get_str(const ks_hf_ctx *c, const cJSON *o, const char *key, const char *field, const char **out);
/* Boolean member `key` of o, `dflt` when absent or not a boolean. */
int ks_hf_bool(const cJSON *o, const char *key, int dflt);

/* Whether the pre-tokenizer is, or contains, ByteLevel (decides how the vocabulary is stored). */
int ks_hf_has_byte_level(const cJSON *pre_tokenizer);
ks_status ks_hf_parse_normalizer(ks_hf_ctx *c, const cJSON *normalizer);
ks_status ks_hf_parse_pre_tokenizer(ks_hf_ctx *c, const cJSON *pre_tokenizer);
ks_status ks_hf_parse_decoder(ks_hf_ctx *c, const cJSON *decoder);
ks_status ks_hf_parse_post_processor(ks_hf_ctx *c, const cJSON *post_processor);

#endif
