/* generate.h — greedy generation for a single-stage model: prefill the prompt, then decode until a stop token
 * or the token budget, with timings.
 *
 *     ks_ids prompt = {0};
 *     KS_TRY(ks_generate_encode_prompt(tok, text, chat, &prompt));
 *     ks_stop_set stop;
 *     ks_stop_set_build(&stop, &model.cfg, tok);            // config EOS ids + tokenizer EOS + chat end tokens
 *     KS_TRY(ks_generate_check_length(&model, prompt.n, max_new));   // KS_ERR_RANGE naming the limit
 *     ks_generate_params gp = {.max_new_tokens = max_new, .stop = &stop, .on_token = print_cb, .ctx = st};
 *     int32_t *out = malloc(sizeof(int32_t) * max_new);
 *     ks_generate_result r;
 *     KS_TRY(ks_generate(&fwd, prompt.ids, prompt.n, &gp, out, &r));   // out[0..r.n) generated ids
 */
#ifndef KS_GENERATE_H
#define KS_GENERATE_H

#include <stdint.h>

#include "engine/forward.h"
#include "tokenizer/tokenizer.h"

#define KS_MAX_STOP_IDS 16

typedef struct ks_stop_set {
    int32_t ids[KS_MAX_STOP_IDS];
    int n;
} ks_stop_set;

/* The ids that end generation: the model config's eos ids, the tokenizer's eos token, and the chat templates'
 * end-of-turn tokens (<|im_end|>, <|eot_id|>, ...) that the tokenizer holds as special tokens. tok may be NULL. */
void ks_stop_set_build(ks_stop_set *s, const ks_model_config *cfg, const ks_tokenizer *tok);
void ks_stop_set_add(ks_stop_set *s, int32_t id); /* ignores negatives and duplicates */
int ks_stop_set_has(const ks_stop_set *s, int32_t id);

typedef struct ks_generate_params {
    int max_new_tokens;     /* the most tokens generated, the stop token included */
    const ks_stop_set *stop; /* NULL: never stop early */
    /* Called after each generated token with all ids so far (e.g. to stream text); may be NULL. */
    void (*on_token)(void *ctx, const int32_t *ids, int n);
    void *ctx;
    /* Stage 0 of a model instance spread over pipeline stages (engine/pipeline.h), f being its forward: the
     * prompt and steps run on every stage, and the KV bytes count every stage's (p->stats holds the layer
     * statistics afterwards). NULL: f holds every layer. */
    struct ks_pipeline *pipeline;
} ks_generate_params;

typedef struct ks_generate_result {
    int n;              /* ids generated, the stop token included */
    int stopped;        /* 1 when the last id is a stop token */
    double prefill_s;   /* prompt prefill (including the first generated token) */
    double decode_s;    /* the n - 1 decode steps after it (the model only, not on_token) */
    double prefill_method_s; /* the part of prefill_s spent in the KV method (scoring, selection, compaction,
                                statistics) */
    int64_t kv_bytes_full;    /* KV bytes the prompt takes uncompressed (every row of every layer held) */
    int64_t kv_bytes_prefill; /* KV bytes held after prefill (after the KV method's compression) */
    int64_t kv_bytes_end;     /* KV bytes held after the last decode step */
} ks_generate_result;

/* Appends the prompt's ids to *ids: plain text with the tokenizer's own special tokens (BOS where the model
 * uses one), or with chat != 0 the user turn in the model's chat template ("auto"), adding BOS only when the
 * template did not already write it. */
ks_status ks_generate_encode_prompt(const ks_tokenizer *tok, const char *text, int chat, ks_ids *ids);

/* KS_ERR_RANGE when a prompt of n_prompt tokens plus max_new generated ones does not fit the model's
 * max_position_embeddings, naming both lengths and the limit. */
ks_status ks_generate_check_length(const ks_model *m, int n_prompt, int max_new);

/* Greedy generation from an empty cache (f is reset first). out holds max_new_tokens ids. */
ks_status ks_generate(ks_forward *f, const int32_t *prompt, int n_prompt, const ks_generate_params *p,
                      int32_t *out, ks_generate_result *r);

/* The pieces ks_generate is made of, for a scheduler that interleaves the decode steps of several sequences
 * (engine/batch.h). ks_generate_begin resets f, prefills the prompt and accepts its first generated id (*next):
 * *done = 1 when generation ends there (or max_new_tokens <= 0, with nothing run). ks_generate_step decodes *next
 * into its successor (through p->pipeline when set). ks_generate_accept appends one generated id to out and r
 * (on_token called): 1 when it ends generation (a stop id or the token budget). ks_generate_end records the KV
 * bytes at the end (every stage's, gathered, with a pipeline). The caller times its steps into r->decode_s. */
ks_status ks_generate_begin(ks_forward *f, const int32_t *prompt, int n_prompt, const ks_generate_params *p,
                            int32_t *out, ks_generate_result *r, int32_t *next, int *done);
ks_status ks_generate_step(ks_forward *f, const ks_generate_params *p, int32_t *next);
int ks_generate_accept(const ks_generate_params *p, int32_t *out, ks_generate_result *r, int32_t id);
ks_status ks_generate_end(const ks_forward *f, const ks_generate_params *p, ks_generate_result *r);

#endif
