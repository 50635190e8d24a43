/* batch.h — continuous batching of greedy generations on one model instance: a backend instance with a sequence
 * slot per sample (forward.h "Batched decode"), each slot's forward with its own KV method instance. A sample
 * joins a free slot (its prompt prefilled alone), every step decodes one token of each joined sample that has
 * not finished (one batched step reads the weights once for all of them), a finished sample leaves and frees its
 * slot for a waiting one. Each sample's ids equal its unbatched ks_generate run.
 *
 *     ks_batch b = {0};
 *     ks_forward_params p = {.device = "cpu", .max_ctx = 8192, .max_new = 128, .chunk = 512, .batch = 4};
 *     KS_TRY(ks_batch_init(&b, &model, methods, &p));   // methods: p.batch instances (or NULL: FullKV)
 *     int s;
 *     while ((s = ks_batch_free_slot(&b)) >= 0 && more_samples)
 *         KS_TRY(ks_batch_join(&b, s, ids, n, &gp, tag));  // gp: max_new_tokens, stop (copied)
 *     KS_TRY(ks_batch_step(&b));                           // one token of every decoding sample
 *     while ((s = ks_batch_finished(&b)) >= 0) {           // b.seqs[s]: out, r, tag
 *         ... ks_batch_leave(&b, s);
 *     }
 *     ks_batch_free(&b);
 *
 * Timings (ks_generate_result): prefill_s is the sample's own prefill; decode_s its share of the batched steps
 * it took part in (each step's wall time divided by its rows), so the samples' decode_s add up to the steps'.
 */
#ifndef KS_BATCH_H
#define KS_BATCH_H

#include "engine/forward.h"
#include "engine/generate.h"

typedef struct ks_batch_seq {
    ks_forward fwd;           /* the slot's sequence (slot 0's forward owns the backend instance) */
    int busy;                 /* a sample holds the slot (joined, not yet left) */
    int decoding;             /* its prompt is in and its generation has not ended */
    int32_t next;             /* the id the next step feeds */
    int32_t *out;             /* (max_new) generated ids; owned */
    ks_stop_set stop;         /* the sample's stop ids (copied at join) */
    ks_generate_params gp;    /* the sample's generation (stop points to `stop`) */
    ks_generate_result r;     /* ids generated, timings, KV bytes */
    void *tag;                /* the caller's, given at join */
} ks_batch_seq;

typedef struct ks_batch {
    ks_batch_seq *seqs;       /* (n) one per slot; owned */
    int n;                    /* slots */
    int max_new;              /* out's length */
    ks_forward **rows;        /* (n) a step's forwards; owned */
    int32_t *ids, *next;      /* (n) a step's input and output ids; owned */
    int *row_slot;            /* (n) a step's slots; owned */
} ks_batch;

/* Builds p->batch slots (at least 1) for model m (borrowed): methods[i] (borrowed, may be NULL: FullKV) bound to
 * slot i; methods may be NULL (FullKV everywhere). On failure b holds nothing. */
ks_status ks_batch_init(ks_batch *b, const ks_model *m, ks_method *const *methods, const ks_forward_params *p);
/* The same around slot 0's forward built by the caller (e.g. ks_speed_forward: random weights on the GPU) with
 * first->max_batch slots, which b owns from the call on (freed on failure); max_new: the most ids a sample
 * generates. */
ks_status ks_batch_init_forward(ks_batch *b, ks_forward *first, ks_method *const *methods, int max_new);
void ks_batch_free(ks_batch *b); /* accepts a zeroed or half-built struct */

/* The most slots --batch 0 takes. */
#define KS_BATCH_AUTO_MAX 16

/* The slots of a batch on p->device for model m and method `method` (the shape of every slot's) when the caller
 * gives none: the most whose KV caches (each sized as ks_forward_init sizes one: full or budget), the stores'
 * per-row scratch and (on a GPU) their own activations fit 3/4 of the device's memory free now (less the
 * weights on a GPU, which the instance allocates first), shared by `sharing` processes (the ranks on this node or
 * GPU), at least 1 and at most `most`. */
int ks_batch_auto_slots(const ks_model *m, const ks_method *method, const ks_forward_params *p, int sharing,
                        int most);

/* A slot no sample holds, or -1. */
int ks_batch_free_slot(const ks_batch *b);
/* Samples holding slots. */
int ks_batch_busy(const ks_batch *b);
/* Samples decoding (joined, not finished). */
int ks_batch_decoding(const ks_batch *b);

/* The sample `tag` takes free slot s: its prompt is prefilled (ks_generate_begin with *gp, whose stop set is
 * copied) and its first id accepted. A pipelined sample (gp->pipeline, slot 0's forward being its stage 0) needs a
 * batch of one slot. */
ks_status ks_batch_join(ks_batch *b, int s, const int32_t *prompt, int n_prompt, const ks_generate_params *gp,
                        void *tag);
/* One decode token of every decoding sample, in one batched step (ks_forward_decode_batch). */
ks_status ks_batch_step(ks_batch *b);
/* A slot whose sample has finished generating and not yet left, or -1. */
int ks_batch_finished(const ks_batch *b);
/* Slot s's sample leaves, finished (its out and r are read before) or abandoned after an error: the slot is
 * free. */
void ks_batch_leave(ks_batch *b, int s);

#endif
