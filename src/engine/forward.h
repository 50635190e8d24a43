/* forward.h — the transformer forward pass over a model's layer range, written once against the backend ops
 * table (backend/backend.h): chunked prefill and one-token decode steps with a KV cache.
 *
 *     ks_forward f = {0};
 *     ks_forward_params p = {.device = "cpu", .max_ctx = n_prompt + max_new, .chunk = 512, .threads = 0};
 *     KS_TRY(ks_forward_init(&f, &model, &p));
 *     int32_t next;
 *     KS_TRY(ks_forward_prefill(&f, prompt, n_prompt, NULL, &next));   // whole prompt, chunk by chunk
 *     while (...) KS_TRY(ks_forward_decode(&f, next, NULL, &next));     // greedy decode
 *     ks_forward_reset(&f);                                             // next sequence, same buffers
 *     ks_forward_free(&f);
 *
 * A pipeline stage holding layers [first, last) uses ks_forward_chunk/ks_forward_step with a ks_forward_io:
 * the first stage takes token ids, later stages take the previous stage's hidden states; the last stage
 * produces logits (final norm + LM head on the last row only) and the greedy next token, the others hand
 * their hidden states on. Positions are implicit: the next token processed sits at position f->n_past.
 *
 * KV compression: ks_forward_set_method(&f, m) attaches a method (methods/method.h; NULL = FullKV). Every
 * layer's attention on a prompt chunk and on a decode step is followed by the method's hook; on the chunk
 * flagged prompt_end the method compresses each layer (its prefill output already used the full cache), so the
 * prompt's last chunk must hold the method's observation window: ks_forward_chunk_len plans chunks so
 * (ks_forward_prefill uses it; pipeline callers should too). Once the method has dropped rows, the sequence
 * cannot take more prefill (a new prompt_end would plan again over all tokens so far otherwise).
 *
 * Budget mode (kv_rows < max_ctx; needs a method that compresses every layer): each layer keeps at most kv_rows
 * rows after the prompt, and ks_forward_prefill runs a prompt longer than that layer-major: every chunk through
 * layer 0, then through layer 1, ..., with the whole prompt's residual stream on the backend, so that each layer
 * is compressed before the next one starts and only a few layers ever hold the full prompt (kvcache.h). The
 * tokens, kept rows and statistics equal chunk-major prefill's; ks_forward_chunk then serves only prompts that
 * fit kv_rows.
 */
#ifndef KS_FORWARD_H
#define KS_FORWARD_H

#include <stdint.h>

#include "backend/backend.h"
#include "methods/method.h"
#include "model/model.h"

typedef struct ks_forward_params {
    const char *device; /* backend name ("cpu", "cuda") */
    int max_ctx;        /* tokens per sequence (prompt + generated) the KV cache holds */
    int chunk;          /* prefill chunk: the most tokens per forward call (activation rows) */
    int threads;        /* CPU threads (<= 0: default) */
    int kv_rows;        /* rows per (layer, KV head) the cache keeps for a sequence; 0 or >= max_ctx: max_ctx.
                           Fewer (a KV method's budget plus generation: ks_method_kv_rows): the cache's memory
                           scales with the budget and ks_forward_prefill runs longer prompts layer by layer */
} ks_forward_params;

typedef struct ks_forward {
    const ks_model *m;         /* borrowed */
    const ks_backend_ops *ops; /* the backend's table */
    ks_backend *be;            /* owned instance */
    int max_ctx, chunk;        /* as initialised */
    int kv_rows;               /* rows per (layer, KV head) the cache holds after a prompt (max_ctx: full) */
    int n_past;                /* tokens already in the KV cache = position of the next token */
    ks_method *method;         /* KV compression, borrowed; NULL = none (FullKV) */
    double method_s;           /* wall seconds in the method's hooks since the last reset (device backends: with
                                  the wait for queued work the hooks' results depend on) */
} ks_forward;

/* One forward call's inputs and outputs (which ones apply depends on where the stage sits). */
typedef struct ks_forward_io {
    const int32_t *tokens;  /* (n) ids; first stage (m->first_layer == 0) */
    const float *hidden_in; /* (n, hidden) from the previous stage; other stages */
    float *hidden_out;      /* (n, hidden) for the next stage; all but the last stage */
    float *logits;          /* (vocab) the last row's logits, copied out when non-NULL; last stage */
    int skip_head;          /* last stage: 1 = no final norm / LM head (a prompt chunk before the last one) */
    int prompt_end;         /* 1 on the prompt's last chunk: the KV method compresses after it (every stage) */
    int32_t next;           /* out, last stage unless skip_head: argmax of the last row's logits */
} ks_forward_io;

ks_status ks_forward_init(ks_forward *f, const ks_model *m, const ks_forward_params *p);
void ks_forward_free(ks_forward *f); /* accepts a zeroed or half-built struct */

/* Starts a new sequence: empties the KV cache (and resets the method's state). */
void ks_forward_reset(ks_forward *f);

/* Attaches KV method m (borrowed; it must outlive f or be detached with NULL) to f's backend and layer range and
 * resets the sequence. KS_ERR_ARG when the method's observation window exceeds the prefill chunk (unless the
 * chunk spans the whole context), and in budget mode when m is NULL or does not bound every layer's rows. */
ks_status ks_forward_set_method(ks_forward *f, ks_method *m);

/* kv_rows (ks_forward_params) for method m (NULL: FullKV) on `model` with sequences of up to max_ctx tokens, up
 * to max_new of them generated: ks_method_kv_rows over every prompt length, when a cache of that many rows per
 * layer plus the budget mode's prefill slots is smaller than the full cache; else 0 (the full cache). */
int ks_forward_kv_rows(const ks_method *m, const ks_model *model, int max_ctx, int max_new);

/* Length of the prompt chunk that starts at token `done` of an n_prompt-token prompt: at most f->chunk, and
 * split so that the last chunk holds the method's observation window (min(window, n_prompt) tokens). */
int ks_forward_chunk_len(const ks_forward *f, int n_prompt, int done);

/* n <= chunk tokens of prefill at positions n_past .. n_past+n-1 (causal attention within the chunk and over
 * the cache). KS_ERR_RANGE if the sequence would exceed max_ctx; KS_ERR_ARG if io->prompt_end and the chunk is
 * shorter than the method's window needs (see ks_forward_chunk_len). */
ks_status ks_forward_chunk(ks_forward *f, ks_forward_io *io, int n);

/* One decode token at position n_past: attention over each KV head's kept rows (per-head lengths). */
ks_status ks_forward_step(ks_forward *f, ks_forward_io *io);

/* Single-stage helpers (the model holds every layer): the whole prompt in chunks, then one token at a time.
 * logits (vocab) receives the last position's logits when non-NULL; *next its argmax. */
ks_status ks_forward_prefill(ks_forward *f, const int32_t *tokens, int n, float *logits, int32_t *next);
ks_status ks_forward_decode(ks_forward *f, int32_t token, float *logits, int32_t *next);

#endif
