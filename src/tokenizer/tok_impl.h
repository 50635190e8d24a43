/* tok_impl.h — the tokenizer's internal representation, shared by the files of src/tokenizer only (other
 * modules use tokenizer.h and chat.h).
 *
 * Encoding follows Hugging Face `tokenizers`:
 *   text --(added.c: split out added tokens, longest match first)--> plain segments and added-token ids
 *   segment --(normalize.c: NFC/NFKC..., Prepend, Replace)--> normalized text
 *   normalized --(pretok.c: PCRE2 Split regexes, "isolated", applied in sequence)--> pieces
 *   piece --(bpe.c: whole-piece lookup if ignore_merges, else merges by rank; byte fallback; unk)--> ids
 *   + post-processor prefix/suffix ids (TemplateProcessing) when add_special.
 * Decoding (decode.c): ids -> token texts -> ByteLevel, or the list steps Replace/ByteFallback/Fuse/Strip/
 * Metaspace -> lossy UTF-8 -> optional clean_up_tokenization_spaces.
 *
 * Loaders (hf_json.c + hf_pipeline.c for tokenizer.json, gguf_vocab.c for GGUF) fill the struct with the
 * vocab.c builders and finish with ks_tok_finish() and ks_tok_check_ids().
 */
#ifndef KS_TOK_IMPL_H
#define KS_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/hashmap.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

typedef enum ks_norm_kind {
    KS_NORM_NFC,
    KS_NORM_NFD,
    KS_NORM_NFKC,
    KS_NORM_NFKD,
    KS_NORM_PREPEND, /* text = prefix */
    KS_NORM_REPLACE, /* text = literal pattern, with = replacement */
} ks_norm_kind;

typedef struct ks_norm_step {
    ks_norm_kind kind;
    char *text, *with; /* owned, NUL-terminated */
    int if_missing;    /* PREPEND only when the segment does not already start with the prefix (Metaspace) */
    int first_only;    /* PREPEND only for the segment at offset 0 of the input (Metaspace scheme "first") */
} ks_norm_step;

typedef enum ks_dec_kind {
    KS_DEC_REPLACE,       /* text -> with, in every token */
    KS_DEC_BYTE_FALLBACK, /* runs of "<0xXX>" tokens -> their bytes (U+FFFD per token if not valid UTF-8) */
    KS_DEC_FUSE,          /* all tokens -> one */
    KS_DEC_STRIP,         /* drop up to `start` leading and `stop` trailing `text` characters of each token */
    KS_DEC_METASPACE,     /* text (the replacement) -> ' ', dropped in the first token when `start` */
} ks_dec_kind;

typedef struct ks_dec_step {
    ks_dec_kind kind;
    char *text, *with; /* owned, NUL-terminated */
    int start, stop;
} ks_dec_step;

typedef struct ks_added_token {
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word;
} ks_added_token;

#define KS_TOK_MAX_STEPS 8
/* The largest token id a tokenizer file may give: 16 times the largest vocabularies in use (about 262K), so a
 * corrupt id is an error rather than gigabytes of id tables. */
#define KS_TOK_MAX_ID ((1 << 22) - 1)

struct ks_tokenizer {
    char *path; /* owned: the file loaded (tokenizer.json or .gguf), for messages */

    /* ---- model (BPE) ---- */
    int byte_level;         /* vocab stored as raw bytes (ByteLevel pre-tokenizer + decoder) */
    ks_strtab vocab;        /* id -> token text (raw bytes when byte_level) */
    ks_bytemap vocab_map;   /* encodable token text -> id */
    ks_pairmap merges;      /* (left id, right id) -> (rank, merged id) */
    int32_t byte_id[256];   /* byte_level: id of each single byte (-1: none) */
    int32_t fallback_id[256]; /* byte_fallback: id of "<0xXX>" (-1: none) */
    int ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;         /* -1: none */
    /* Without a pre-tokenizer a whole segment is one BPE piece. Two characters that are adjacent inside no
     * vocabulary token can never end up in one token, so BPE may run on either side separately: long pieces
     * are cut there (bpe.c), which keeps the merge queue small. Set only for such vocabularies. */
    int chunked;
    ks_pairmap char_pairs;  /* (code point, next code point) adjacent in some token -> (0, 0) */

    /* ---- added tokens (matched in the raw text before everything else) ---- */
    ks_added_token *added;  /* (n_added) owned, sorted by (first byte, length descending) after finish */
    ks_strtab added_text;   /* entry i = content of added[i] */
    int n_added, cap_added;
    int32_t first_start[257]; /* added[first_start[b] .. first_start[b+1]) start with byte b */
    int32_t *added_of_id;   /* (n_ids) index into added, or -1 */
    int32_t n_ids;          /* 1 + largest id of vocab and added tokens */

    /* ---- pipeline ---- */
    ks_norm_step norm[KS_TOK_MAX_STEPS];
    int n_norm;
    pcre2_code *split[KS_TOK_MAX_STEPS]; /* pre-tokenizer regexes (UTF + UCP, JIT-compiled), in order */
    int n_split;
    ks_dec_step dec[KS_TOK_MAX_STEPS]; /* unused when byte_level (the ByteLevel decoder) */
    int n_dec;
    int32_t prefix[4], suffix[4]; /* post-processor ids added when add_special */
    int n_prefix, n_suffix;

    /* ---- configuration ---- */
    int32_t bos, eos;       /* -1: none */
    int clean_up_spaces;    /* transformers' clean_up_tokenization_spaces after decode */
    char *chat_template;    /* owned Jinja text, or NULL */
};

/* Per-call scratch of encode (one per call, so a tokenizer can be shared by threads). */
typedef struct ks_tok_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    ks_buf norm[2];      /* normalizer ping-pong buffers */
    struct ks_bpe_sym *sym; /* (cap) BPE symbols */
    uint64_t *heap;      /* (3 * cap) BPE merge candidates */
    size_t cap;
} ks_tok_scratch;

ks_status ks_tok_scratch_init(ks_tok_scratch *sc);
void ks_tok_scratch_free(ks_tok_scratch *sc);

/* ---- vocab.c: building the tables ---- */
/* A zeroed tokenizer (bos/eos/unk -1) remembering `path`; NULL with a recorded KS_ERR_NOMEM. */
ks_tokenizer *ks_tok_new(const char *path);
/* Sizes the vocabulary and merge maps (call once, before the first ks_tok_set_token). */
ks_status ks_tok_reserve(ks_tokenizer *tok, size_t n_vocab, size_t n_merges);
/* Sets id's text and maps text -> id (the first id wins for a repeated text). Byte-level text is converted
 * to raw bytes; a token that is not fully byte-level keeps its UTF-8 for decoding but is never produced by
 * encoding, as in HF. */
ks_status ks_tok_set_token(ks_tokenizer *tok, int32_t id, const char *s, size_t len);
/* Adds merge (a, b) with the given rank; `field` names the list for messages ("model.merges"). A merge whose
 * parts or result are not in the vocabulary is an error, as in HF. */
ks_status ks_tok_add_merge(ks_tokenizer *tok, const char *a, size_t alen, const char *b, size_t blen, int32_t rank,
                           const char *field);
ks_status ks_tok_add_added(ks_tokenizer *tok, int32_t id, const char *content, size_t len, ks_added_token flags);
/* Id of a vocabulary token given as written in the vocabulary (byte-level form when byte_level), or -1. */
int32_t ks_tok_vocab_id(const ks_tokenizer *tok, const char *s, size_t len);
/* Id of an added token by content, or -1. */
int32_t ks_tok_added_id(const ks_tokenizer *tok, const char *s, size_t len);
/* After the vocabulary and added tokens are in: sorts and indexes added tokens, fills the byte and
 * fallback ids and n_ids. Token lookups by text work from here on. */
ks_status ks_tok_finish(ks_tokenizer *tok);
/* Checks that bos/eos/unk and the post-processor ids name tokens (errors name tok->path). */
ks_status ks_tok_check_ids(const ks_tokenizer *tok);
/* Compiles a pre-tokenizer Split regex and appends it; errors name `what`. */
ks_status ks_tok_add_split(ks_tokenizer *tok, const char *pattern, const char *what);
/* Append a step, taking ownership of its strings (freed on failure too). */
ks_status ks_tok_add_norm(ks_tokenizer *tok, ks_norm_step step, const char *what);
ks_status ks_tok_add_dec(ks_tokenizer *tok, ks_dec_step step, const char *what);
/* Content of id's added token, else its vocabulary entry (as stored), or NULL. */
const char *ks_tok_text(const ks_tokenizer *tok, int32_t id, size_t *len);

/* The pre-tokenizer regexes of the byte-level families (HF tokenizer.json files and llama.cpp agree). */
extern const char KS_REGEX_GPT2[];
extern const char KS_REGEX_LLAMA3[];
extern const char KS_REGEX_QWEN2[];
extern const char KS_REGEX_DIGITS[];

/* ---- loaders ---- */
ks_status ks_tok_load_hf(ks_tokenizer *tok, const char *json_path, const char *config_path);
ks_status ks_tok_load_gguf(ks_tokenizer *tok, const char *gguf_path);

/* ---- encode stages ---- */
/* Finds the first added token at or after `from` in text[0..len): match [*start, *end) (lstrip/rstrip
 * whitespace included) and its index in tok->added. Returns 0 when there is none. */
int ks_added_find(const ks_tokenizer *tok, const char *text, size_t len, size_t from, size_t *start, size_t *end,
                  int *which);
/* Normalizes segment s[0..n) that starts at byte `offset` of the input; *out points into sc->norm or at s. */
ks_status ks_normalize(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, size_t offset,
                       const char **out, size_t *out_n);
typedef ks_status (*ks_piece_fn)(void *ctx, const char *s, size_t n);
/* Splits s[0..n) with the pre-tokenizer regexes and calls fn for each piece, in order. */
ks_status ks_pretokenize(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, ks_piece_fn fn,
                         void *ctx);
/* Appends the ids of one piece. */
ks_status ks_bpe_encode(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, ks_ids *out);

#endif
