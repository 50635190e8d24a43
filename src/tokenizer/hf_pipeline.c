/* hf_pipeline.c — the pipeline parts of a tokenizer.json: normalizer (NFC/NFD/NFKC/NFKD, Prepend, literal
 * Replace, Sequence), pre-tokenizer (Split isolated, ByteLevel, Digits, Metaspace as the first step, Sequence),
 * decoder (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence) and post-processor
 * (TemplateProcessing, ByteLevel, Sequence). Anything else is KS_ERR_UNSUPPORTED naming the file and field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "tokenizer/hf_parse.h"

#define SPACE_MARK "\xE2\x96\x81" /* U+2581 '▁' */

const char *ks_hf_type(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

ks_status ks_hf_unsupported(const ks_hf_ctx *c, const char *field, const char *value, const char *supported) {
    return ks_fail(KS_ERR_UNSUPPORTED, "%s: field '%s' is '%s', which kvscope does not support (supported: %s)",
                   c->file, field, value ? value : "(missing)", supported);
}

ks_status ks_hf_get_str(const ks_hf_ctx *c, const cJSON *o, const char *key, const char *field, const char **out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(it)) return ks_fail(KS_ERR_FORMAT, "%s: field '%s.%s' must be a string", c->file, field, key);
    *out = it->valuestring;
    return KS_OK;
}

int ks_hf_bool(const cJSON *o, const char *key, int dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(it) ? cJSON_IsTrue(it) : dflt;
}

static char *dup_str(const char *s) {
    char *d = strdup(s);
    if (!d) ks_fail(KS_ERR_NOMEM, "out of memory copying a string");
    return d;
}

/* A {"String": s} pattern (the only kind of Replace pattern supported). */
static ks_status string_pattern(const ks_hf_ctx *c, const cJSON *o, const char *field, const char **out) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
    if (!cJSON_IsString(s)) return ks_hf_unsupported(c, field, "a Regex pattern", "{\"String\": ...} patterns");
    *out = s->valuestring;
    return KS_OK;
}

/* "R[^R]*|[^R]+" for replacement R, R written as \x{...} (any code point, no escaping issues). */
static ks_status metaspace_split_regex(const ks_hf_ctx *c, const char *repl, char *buf, size_t cap) {
    size_t l = ks_utf8_seq_len((const unsigned char *)repl, strlen(repl));
    if (!l || repl[l])
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: field 'pre_tokenizer.replacement' ('%s') is not one character",
                       c->file, repl);
    unsigned cp = ks_utf8_decode((const unsigned char *)repl, l);
    snprintf(buf, cap, "\\x{%x}[^\\x{%x}]*|[^\\x{%x}]+", cp, cp, cp);
    return KS_OK;
}

/* ---- normalizer ---- */

static ks_status parse_normalizer(ks_hf_ctx *c, const cJSON *n, const char *field) {
    if (!n || cJSON_IsNull(n)) return KS_OK;
    const char *t = ks_hf_type(n);
    ks_norm_step st = {0};
    if (t && strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "normalizers"))
            KS_TRY(parse_normalizer(c, e, "normalizer.normalizers[].type"));
        return KS_OK;
    }
    if (t && strcmp(t, "NFC") == 0) st.kind = KS_NORM_NFC;
    else if (t && strcmp(t, "NFD") == 0) st.kind = KS_NORM_NFD;
    else if (t && strcmp(t, "NFKC") == 0) st.kind = KS_NORM_NFKC;
    else if (t && strcmp(t, "NFKD") == 0) st.kind = KS_NORM_NFKD;
    else if (t && strcmp(t, "Prepend") == 0) {
        const char *p = NULL;
        KS_TRY(ks_hf_get_str(c, n, "prepend", "normalizer", &p));
        st.kind = KS_NORM_PREPEND;
        if (!(st.text = dup_str(p))) return KS_ERR_NOMEM;
    } else if (t && strcmp(t, "Replace") == 0) {
        const char *p = NULL, *w = NULL;
        KS_TRY(string_pattern(c, n, "normalizer.pattern", &p));
        KS_TRY(ks_hf_get_str(c, n, "content", "normalizer", &w));
        st.kind = KS_NORM_REPLACE;
        st.text = dup_str(p);
        st.with = dup_str(w);
        if (!st.text || !st.with) {
            free(st.text);
            free(st.with);
            return KS_ERR_NOMEM;
        }
    } else {
        return ks_hf_unsupported(c, field, t, "NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence");
    }
    return ks_tok_add_norm(c->tok, st, c->file);
}

/* ---- pre-tokenizer ---- */

/* Whether the pre-tokenizer (or any step of it) is ByteLevel: decides how the vocabulary is stored. */
int ks_hf_has_byte_level(const cJSON *p) {
    const char *t = ks_hf_type(p);
    if (!t) return 0;
    if (strcmp(t, "ByteLevel") == 0) return 1;
    const cJSON *e;
    if (strcmp(t, "Sequence") == 0)
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"))
            if (ks_hf_has_byte_level(e)) return 1;
    return 0;
}

static ks_status add_split_pattern(ks_hf_ctx *c, const cJSON *p) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
    const char *behavior = NULL;
    KS_TRY(ks_hf_get_str(c, p, "behavior", "pre_tokenizer", &behavior));
    if (strcmp(behavior, "Isolated") != 0) return ks_hf_unsupported(c, "pre_tokenizer.behavior", behavior, "Isolated");
    if (ks_hf_bool(p, "invert", 0)) return ks_hf_unsupported(c, "pre_tokenizer.invert", "true", "false");
    char what[600];
    snprintf(what, sizeof what, "%s: field 'pre_tokenizer.pattern'", c->file);
    if (cJSON_IsString(re)) return ks_tok_add_split(c->tok, re->valuestring, what);
    if (!cJSON_IsString(lit)) return ks_fail(KS_ERR_FORMAT, "%s: Split needs a Regex or String pattern", what);
    /* a literal: every code point as \x{...} */
    ks_buf rx = {0};
    const unsigned char *s = (const unsigned char *)lit->valuestring;
    size_t n = strlen(lit->valuestring);
    ks_status st = KS_OK;
    for (size_t i = 0; i < n && st == KS_OK;) {
        size_t l = ks_utf8_seq_len(s + i, n - i);
        if (!l) {
            st = ks_fail(KS_ERR_FORMAT, "%s: invalid UTF-8", what);
            break;
        }
        char esc[16];
        int k = snprintf(esc, sizeof esc, "\\x{%x}", ks_utf8_decode(s + i, l));
        st = ks_buf_append(&rx, esc, (size_t)k);
        i += l;
    }
    if (st == KS_OK) st = ks_buf_append(&rx, "", 1);
    if (st == KS_OK) st = ks_tok_add_split(c->tok, rx.data, what);
    ks_buf_free(&rx);
    return st;
}

static ks_status add_metaspace(ks_hf_ctx *c, const cJSON *p, int first_step) {
    if (!first_step)
        return ks_hf_unsupported(c, "pre_tokenizer.pretokenizers[].type", "Metaspace after another step",
                           "Metaspace as the first pre-tokenizer step");
    const char *repl = SPACE_MARK, *scheme = NULL;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "replacement");
    if (cJSON_IsString(r)) repl = r->valuestring;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
    if (cJSON_IsString(s)) scheme = s->valuestring;
    else scheme = ks_hf_bool(p, "add_prefix_space", 1) ? "always" : "never"; /* files before prepend_scheme */
    if (strcmp(scheme, "always") && strcmp(scheme, "first") && strcmp(scheme, "never"))
        return ks_hf_unsupported(c, "pre_tokenizer.prepend_scheme", scheme, "always, first, never");
    ks_norm_step rep = {KS_NORM_REPLACE, dup_str(" "), dup_str(repl), 0, 0};
    if (!rep.text || !rep.with) {
        free(rep.text);
        free(rep.with);
        return KS_ERR_NOMEM;
    }
    KS_TRY(ks_tok_add_norm(c->tok, rep, c->file));
    if (strcmp(scheme, "never") != 0) {
        ks_norm_step pre = {KS_NORM_PREPEND, dup_str(repl), NULL, 1, strcmp(scheme, "first") == 0};
        if (!pre.text) return KS_ERR_NOMEM;
        KS_TRY(ks_tok_add_norm(c->tok, pre, c->file));
    }
    if (!ks_hf_bool(p, "split", 1)) return KS_OK;
    char rx[96];
    KS_TRY(metaspace_split_regex(c, repl, rx, sizeof rx));
    return ks_tok_add_split(c->tok, rx, c->file);
}

static ks_status parse_pre_tokenizer(ks_hf_ctx *c, const cJSON *p, int first_step) {
    if (!p || cJSON_IsNull(p)) return KS_OK;
    const char *t = ks_hf_type(p);
    if (t && strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        int first = first_step;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers")) {
            KS_TRY(parse_pre_tokenizer(c, e, first));
            first = 0;
        }
        return KS_OK;
    }
    if (t && strcmp(t, "Split") == 0) return add_split_pattern(c, p);
    if (t && strcmp(t, "Digits") == 0)
        return ks_tok_add_split(c->tok, ks_hf_bool(p, "individual_digits", 0) ? KS_REGEX_DIGITS : "\\p{N}+", c->file);
    if (t && strcmp(t, "Metaspace") == 0) return add_metaspace(c, p, first_step);
    if (t && strcmp(t, "ByteLevel") == 0) {
        if (ks_hf_bool(p, "add_prefix_space", 0)) {
            /* a prefix space per piece equals one per segment only when ByteLevel comes first */
            if (!first_step)
                return ks_hf_unsupported(c, "pre_tokenizer.add_prefix_space", "true after another step",
                                   "add_prefix_space on a first ByteLevel step");
            ks_norm_step pre = {KS_NORM_PREPEND, dup_str(" "), NULL, 1, 0};
            if (!pre.text) return KS_ERR_NOMEM;
            KS_TRY(ks_tok_add_norm(c->tok, pre, c->file));
        }
        return ks_hf_bool(p, "use_regex", 1) ? ks_tok_add_split(c->tok, KS_REGEX_GPT2, c->file) : KS_OK;
    }
    return ks_hf_unsupported(c, "pre_tokenizer.type", t, "ByteLevel, Split (Isolated), Digits, Metaspace, Sequence");
}

/* ---- decoder ---- */

static ks_status parse_decoder(ks_hf_ctx *c, const cJSON *d, int top) {
    const char *t = d && !cJSON_IsNull(d) ? ks_hf_type(d) : "null";
    ks_dec_step st = {0};
    if (t && strcmp(t, "ByteLevel") == 0) {
        if (!c->tok->byte_level || !top)
            return ks_hf_unsupported(c, "decoder.type",
                                     "ByteLevel without a ByteLevel pre-tokenizer (or inside a Sequence)",
                               "ByteLevel matching the pre-tokenizer");
        return KS_OK;
    }
    if (c->tok->byte_level)
        return ks_hf_unsupported(c, "decoder.type", t, "ByteLevel (the pre-tokenizer is ByteLevel)");
    if (t && strcmp(t, "Sequence") == 0 && top) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d, "decoders")) KS_TRY(parse_decoder(c, e, 0));
        return KS_OK;
    }
    const char *a = NULL, *b = NULL;
    if (t && strcmp(t, "Replace") == 0) {
        st.kind = KS_DEC_REPLACE;
        KS_TRY(string_pattern(c, d, "decoder.pattern", &a));
        KS_TRY(ks_hf_get_str(c, d, "content", "decoder", &b));
    } else if (t && strcmp(t, "ByteFallback") == 0) {
        st.kind = KS_DEC_BYTE_FALLBACK;
    } else if (t && strcmp(t, "Fuse") == 0) {
        st.kind = KS_DEC_FUSE;
    } else if (t && strcmp(t, "Strip") == 0) {
        st.kind = KS_DEC_STRIP;
        KS_TRY(ks_hf_get_str(c, d, "content", "decoder", &a));
        int start = 0, stop = 0;
        KS_TRY(ks_json_get_int_opt(d, "start", c->file, &start));
        KS_TRY(ks_json_get_int_opt(d, "stop", c->file, &stop));
        st.start = start;
        st.stop = stop;
    } else if (t && strcmp(t, "Metaspace") == 0) {
        st.kind = KS_DEC_METASPACE;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(d, "replacement");
        a = cJSON_IsString(r) ? r->valuestring : SPACE_MARK;
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(d, "prepend_scheme");
        st.start = cJSON_IsString(s) ? strcmp(s->valuestring, "never") != 0 : ks_hf_bool(d, "add_prefix_space", 1);
    } else {
        return ks_hf_unsupported(c, "decoder.type", t,
                                 "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence");
    }
    if ((a && !(st.text = dup_str(a))) || (b && !(st.with = dup_str(b)))) {
        free(st.text);
        return KS_ERR_NOMEM;
    }
    return ks_tok_add_dec(c->tok, st, c->file);
}

/* ---- post-processor ---- */

static ks_status special_ids(ks_hf_ctx *c, const cJSON *specials, const char *name, int32_t *ids, int *n) {
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(specials, name);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(sp, "ids"), *e;
    if (!cJSON_IsArray(arr))
        return ks_fail(KS_ERR_FORMAT, "%s: field 'post_processor.special_tokens.%s.ids' is missing", c->file, name);
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e)) return ks_fail(KS_ERR_FORMAT, "%s: post_processor ids must be numbers", c->file);
        if (*n == 4) return ks_fail(KS_ERR_UNSUPPORTED, "%s: more than 4 post-processor tokens", c->file);
        ids[(*n)++] = (int32_t)e->valuedouble;
    }
    return KS_OK;
}

static ks_status parse_template(ks_hf_ctx *c, const cJSON *p) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens"), *e;
    if (!cJSON_IsArray(single))
        return ks_fail(KS_ERR_FORMAT, "%s: field 'post_processor.single' must be a list", c->file);
    int after = 0;
    cJSON_ArrayForEach(e, single) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) {
            after = 1;
            continue;
        }
        const char *name = NULL;
        KS_TRY(ks_hf_get_str(c, sp, "id", "post_processor.single[].SpecialToken", &name));
        if (after) KS_TRY(special_ids(c, specials, name, c->tok->suffix, &c->tok->n_suffix));
        else KS_TRY(special_ids(c, specials, name, c->tok->prefix, &c->tok->n_prefix));
    }
    return KS_OK;
}

ks_status ks_hf_parse_post_processor(ks_hf_ctx *c, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return KS_OK;
    const char *t = ks_hf_type(p);
    if (t && strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "processors"))
            KS_TRY(ks_hf_parse_post_processor(c, e));
        return KS_OK;
    }
    if (t && strcmp(t, "ByteLevel") == 0) return KS_OK; /* offsets only */
    if (t && strcmp(t, "TemplateProcessing") == 0) return parse_template(c, p);
    return ks_hf_unsupported(c, "post_processor.type", t, "TemplateProcessing, ByteLevel, Sequence");
}

ks_status ks_hf_parse_normalizer(ks_hf_ctx *c, const cJSON *normalizer) {
    return parse_normalizer(c, normalizer, "normalizer.type");
}

ks_status ks_hf_parse_pre_tokenizer(ks_hf_ctx *c, const cJSON *pre_tokenizer) {
    return parse_pre_tokenizer(c, pre_tokenizer, 1);
}

ks_status ks_hf_parse_decoder(ks_hf_ctx *c, const cJSON *decoder) { return parse_decoder(c, decoder, 1); }
