/* chat.h — chat templates for the known formats, written in C (no Jinja engine).
 *
 *     char *prompt;
 *     int has_bos;
 *     KS_TRY(ks_chat_apply(tok, "auto", NULL, user_text, &prompt, &has_bos));   // NULL system = default
 *     ... encode `prompt` with add_special = !has_bos to avoid a double BOS (HF's encode() of a templated
 *     string doubles it) ...
 *
 * Names: "llama3" (Llama-3.x header format with the default "Cutting Knowledge Date" system block),
 * "mistral" ("<s>[INST] {user} [/INST]"), "chatml"/"qwen2" (<|im_start|>role\n...<|im_end|>\n, default
 * system prompt taken from the model's template when it has one, else "You are a helpful assistant."),
 * "none" (text unchanged), and "auto" (chosen from the tokenizer's special tokens: <|start_header_id|> ->
 * llama3, <|im_start|> -> chatml, a SentencePiece vocabulary with <s> -> mistral, else none).
 */
#ifndef KS_CHAT_H
#define KS_CHAT_H

#include "core/status.h"
#include "tokenizer/tokenizer.h"

/* Writes the templated prompt (ending with the assistant header) to *out (caller frees). Unknown names are
 * KS_ERR_ARG listing the known ones. Sets *has_bos (if non-NULL) when the result already starts with BOS. */
ks_status ks_chat_apply(const ks_tokenizer *tok, const char *template_name, const char *system,
                        const char *user, char **out, int *has_bos);

#endif
