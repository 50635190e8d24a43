/* tokenizer.h — exact Hugging Face tokenization in C: byte-level BPE (Llama-3, Qwen2, GPT-2/SmolLM style
 * pre-tokenizer regexes, NFC normaliser), SentencePiece-style BPE (Metaspace '▁', byte fallback), and the
 * vocabularies embedded in GGUF files (`tokenizer.ggml.*`, models gpt2 and llama). Added/special tokens are
 * matched in the text before pre-tokenization, as HF does.
 *
 *     ks_tokenizer *tok;
 *     KS_TRY(ks_tokenizer_load(&tok, path));   // tokenizer.json, a directory holding one, or a .gguf
 *     ks_ids ids = {0};
 *     KS_TRY(ks_tokenizer_encode(tok, text, strlen(text), 1, &ids));   // 1 = add BOS etc. as configured
 *     char *s; KS_TRY(ks_tokenizer_decode(tok, ids.ids, ids.n, 0, &s)); free(s);
 *     ks_ids_free(&ids); ks_tokenizer_free(tok);
 *
 * A loaded tokenizer is read-only: encode and decode may run concurrently on it from several threads.
 * `kvscope tokenize --bench F` measures encode speed (src/cli/cmd_tokenize.c).
 */
#ifndef KS_TOKENIZER_H
#define KS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct ks_tokenizer ks_tokenizer; /* opaque */

/* A growable id buffer; encode appends to it. */
typedef struct ks_ids {
    int32_t *ids; /* (cap) owned */
    int n, cap;
} ks_ids;

ks_status ks_ids_push(ks_ids *v, int32_t id);
void ks_ids_free(ks_ids *v);

/* path: a tokenizer.json (read alone), a directory holding tokenizer.json (and tokenizer_config.json, read
 * when present: bos/eos tokens, add_bos_token/add_eos_token, clean_up_tokenization_spaces, chat_template), or
 * a GGUF file (recognised by its magic; `tokenizer.ggml.*` keys, models gpt2 and llama). Errors name the file
 * and field; model types other than BPE (WordPiece, Unigram ...) are KS_ERR_UNSUPPORTED. */
ks_status ks_tokenizer_load(ks_tokenizer **out, const char *path);
void ks_tokenizer_free(ks_tokenizer *tok);

/* Appends the ids of text[0..len) to *out. add_special: apply the post-processor (BOS for Llama-3 and
 * SentencePiece vocabularies, nothing for Qwen2), as HF `encode(add_special_tokens=True)`. The text must be
 * valid UTF-8 (else KS_ERR_ARG with the byte offset); it may contain NUL bytes. */
ks_status ks_tokenizer_encode(const ks_tokenizer *tok, const char *text, size_t len, int add_special,
                              ks_ids *out);

/* Decodes ids to UTF-8 (invalid sequences become U+FFFD; ids outside the vocabulary are skipped), then applies
 * transformers' clean_up_tokenization_spaces when the tokenizer config asks for it. skip_special drops special
 * tokens. *out is NUL-terminated (a decoded NUL byte ends it early) and owned by the caller. */
ks_status ks_tokenizer_decode(const ks_tokenizer *tok, const int32_t *ids, int n, int skip_special, char **out);

int ks_tokenizer_vocab_size(const ks_tokenizer *tok);
int ks_tokenizer_bos(const ks_tokenizer *tok); /* -1 if none */
int ks_tokenizer_eos(const ks_tokenizer *tok); /* -1 if none; the tokenizer config's eos_token */
/* 1 if id is an added special token (for stop conditions and skip_special). */
int ks_tokenizer_is_special(const ks_tokenizer *tok, int32_t id);
/* Id of an exact token string (added tokens first, then vocabulary), or -1. */
int32_t ks_tokenizer_token_id(const ks_tokenizer *tok, const char *token);
/* The model's Jinja chat template text (tokenizer_config.json `chat_template` or GGUF
 * `tokenizer.chat_template`), or NULL. Borrowed; chat.h uses it for the chatml default system prompt. */
const char *ks_tokenizer_chat_template(const ks_tokenizer *tok);

#endif
