/* kv_kivi.h — KIVI's packed part of a KV cache (kernels/kivi_args.h describes the format): per (layer, KV head)
 * the packed keys and values of its oldest tokens, the counts, and the flush rules that move tokens from the
 * cache's full-precision rows into it. A KV store holds one once a method reserves it (kvstore.h quant_reserve)
 * and runs the flush on its rows (host rows here; a device store keeps these counts on the host and the arrays on
 * its device).
 *
 *     ks_kv_kivi q;
 *     KS_TRY(ks_kv_kivi_init(&q, &cache, &params, 0)); // sized for cache.cap tokens per (layer, KV head), once
 *     cache.kivi = &q;                                 // ks_kvcache_bytes counts what is held
 *     KS_TRY(ks_kv_kivi_flush(&q, &cache, layer, counts, &err));  // after a layer's prompt, after each decode step
 *     ks_kivi_head h = ks_kv_kivi_head(&q, &cache, layer, head);  // what the decode attention reads
 *     ks_kv_kivi_free(&q);
 *
 * Tokens of a head: 0 .. n - 1 in the order the cache holds them (positions in the cache's bookkeeping for its
 * rows, in `pos` here for the tokens before them). Flush rules (KIVI, R = residual, L = tokens the head holds):
 * keys: the full-precision tail of L - nq_k tokens is quantized in blocks of R while it holds R or more (after a
 * prompt: the first L - L mod R; in decode: the whole block when the tail reaches R), so 0 .. R - 1 stay; values:
 * while the tail holds more than R, its oldest tokens are quantized, so exactly min(L, R) stay. Rows packed in
 * both (stale) stay in the cache until a compaction releases them (ks_kv_kivi_compacted): the KIVI method
 * releases them after the prompt and whenever R have gathered, so the cache's rows per head stay below 2 R.
 *
 * A device store keeps the counts here (ks_kv_kivi_init_counts: no host arrays) and runs each flush or raw pack as
 * its plan (ks_kv_kivi_plan, ks_kv_kivi_plan_pack: the tokens each head packs), its kernels on the device rows,
 * then ks_kv_kivi_advance (a graph-served decode step plans on the device by the same rules, kivi_args.h's
 * ks_kivi_flush_job); it mirrors the stored key channels (kc, k_chan) on its device.
 *
 * Counts belong to the cache's sequence (ks_kvcache.sequence): after a reset they read as zero.
 */
#ifndef KS_KV_KIVI_H
#define KS_KV_KIVI_H

#include <stdint.h>

#include "core/status.h"
#include "kivi_args.h"
#include "backend/kvcache.h"

typedef struct ks_kv_kivi {
    ks_kivi_params p;
    ks_kivi_shape shape;  /* one (layer, KV head)'s arrays, cap = the tokens a head may hold packed */
    int n_layers, Hk;     /* the cache's */
    unsigned sequence;    /* the cache sequence the counts below belong to */
    int32_t *nq_k, *nq_v; /* (n_layers, Hk) tokens whose keys / values are packed */
    int32_t *off;         /* (n_layers, Hk) tokens before the cache's row 0 (packed in both, released) */
    int32_t *kc;          /* (n_layers, Hk) key channels stored per head (d: all; fewer once a channel-pruning
                             part set them for the sequence) */
    int32_t *k_chan;      /* (n_layers, Hk, d) the head channel of each stored key channel */
    int32_t *pos;         /* (n_layers, Hk, shape.cap) positions of the released tokens 0 .. off - 1 */
    ks_kivi_job *jobs;    /* (Hk) scratch: a flush's plan */
    uint32_t *k_codes;    /* (n_layers, Hk, d, k_words); NULL with ks_kv_kivi_init_counts, as the arrays below */
    uint16_t *k_scale, *k_zero; /* (n_layers, Hk, d, k_groups) fp16 */
    uint32_t *v_codes;    /* (n_layers, Hk, cap, v_words) */
    uint16_t *v_scale, *v_zero; /* (n_layers, Hk, cap, v_groups) fp16 */
    ks_kivi_head *view;   /* (Hk) scratch: a layer's heads as the decode attention reads them */
} ks_kv_kivi;

/* KS_ERR_ARG naming the knob when params do not fit a head of head_dim d: bits 2 or 4, group_size dividing
 * head_dim (d 0: not checked, the model unknown yet), residual_length a positive multiple of group_size. */
ks_status ks_kivi_params_check(const ks_kivi_params *p, int d);

/* The packed part for every (layer, KV head) of cache c (its layer range, Hk, d) for `tokens` tokens a head
 * (0 or more than c->cap: c->cap; fewer: the most a sequence packs, e.g. a selection's budget plus the generated
 * tokens), allocated here once; every key channel stored. */
ks_status ks_kv_kivi_init(ks_kv_kivi *q, const ks_kvcache *c, const ks_kivi_params *p, int tokens);
/* The counts, key channels and released positions only, for a store whose packed arrays live elsewhere (its
 * device): no codes, scales, zeros or head views, so ks_kv_kivi_flush and ks_kv_kivi_head do not apply. */
ks_status ks_kv_kivi_init_counts(ks_kv_kivi *q, const ks_kvcache *c, const ks_kivi_params *p, int tokens);
void ks_kv_kivi_free(ks_kv_kivi *q); /* accepts zeroed or half-built */

/* KS_ERR_UNSUPPORTED naming KIVI when layers at window_first and above of cache c attend within a sliding window
 * (window > 0): the packed part serves full attention only. */
ks_status ks_kivi_window_check(int window, int window_first, const ks_kvcache *c);

/* Applies the flush rules to every head of `layer`, quantizing from the cache's host rows. counts (Hk; NULL:
 * not wanted) receives each head's counts after it; err (NULL: not wanted) accumulates what was quantized.
 * KS_ERR_RANGE as ks_kv_kivi_plan's (nothing changes then). */
ks_status ks_kv_kivi_flush(ks_kv_kivi *q, const ks_kvcache *c, int layer, ks_kivi_counts *counts, ks_kivi_error *err);

/* Packs each head h of `layer` up to token upto[h] (Hk, host; at most the tokens it holds; tokens packed already
 * stay): its keys on its stored channels and its values, in the raw encoding (both KS_KIVI_RAW or
 * KS_KIVI_RAW_BF16: any count is a whole block). A channel-pruning part's prefix (ThinK alone); counts (may be
 * NULL) as ks_kv_kivi_flush's. */
ks_status ks_kv_kivi_pack(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *upto,
                          ks_kivi_counts *counts);

/* The flush rules' plan for every head of `layer` (jobs: Hk), from the counts now; nothing changes but a new
 * sequence's counts reading as zero. KS_ERR_RANGE naming the head when the plan would pack more tokens than the
 * part holds (shape.cap). */
ks_status ks_kv_kivi_plan(ks_kv_kivi *q, const ks_kvcache *c, int layer, ks_kivi_job *jobs);
/* ks_kv_kivi_pack's plan (jobs: Hk): each head's tokens not yet packed up to upto[h], keys and values; the same
 * KS_ERR_RANGE. */
ks_status ks_kv_kivi_plan_pack(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *upto,
                               ks_kivi_job *jobs);
/* The counts after the plan's quantization ran; counts (Hk; NULL: not wanted) receives them. */
void ks_kv_kivi_advance(ks_kv_kivi *q, const ks_kvcache *c, int layer, const ks_kivi_job *jobs,
                        ks_kivi_counts *counts);

/* KS_ERR_UNSUPPORTED naming KIVI when `layer` holds packed tokens (q NULL: none): no decode-time eviction there. */
ks_status ks_kv_kivi_refuse_evict(const ks_kv_kivi *q, const ks_kvcache *c, int layer);

/* The counts of (layer, head) now. */
ks_kivi_counts ks_kv_kivi_counts(const ks_kv_kivi *q, const ks_kvcache *c, int layer, int head);

/* Sets the key channels (layer, head) stores in its packed keys: chan[0 .. kc - 1], strictly increasing head
 * channels (a channel-pruning part, ThinK: every key the head packs from then on keeps those channels only; its
 * full-precision rows keep all d). For the cache's current sequence: a new sequence stores every channel again.
 * KS_ERR_ARG when the list is not strictly increasing within 1 .. d channels; KS_ERR_UNSUPPORTED when the head
 * already holds packed keys. */
ks_status ks_kv_kivi_set_channels(ks_kv_kivi *q, const ks_kvcache *c, int layer, int head, const int32_t *chan,
                                  int kc);
/* ks_kv_kivi_set_channels for every KV head h of `layer`: chan[h * ld ..], n_chan[h] (a store's quant_channels);
 * q NULL (the store holds no packed part): KS_ERR_UNSUPPORTED. */
ks_status ks_kv_kivi_set_layer_channels(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *chan,
                                        const int32_t *n_chan, int ld);

/* 1 when some head of `layer` holds packed tokens. */
int ks_kv_kivi_packed(const ks_kv_kivi *q, const ks_kvcache *c, int layer);

/* Before a compaction of `layer` (kvstore.h kv_compact) with keep lists (Hk, ld): when the layer holds packed
 * tokens, each head may only release a prefix of its stale rows (keep = rows s .. len - 1, s <= the stale rows),
 * whose positions are recorded here; KS_ERR_UNSUPPORTED naming KIVI otherwise (nothing changes then). */
ks_status ks_kv_kivi_compacted(ks_kv_kivi *q, const ks_kvcache *c, int layer, const int32_t *keep,
                               const int32_t *n_keep, int ld);

/* (layer, head) as the decode attention reads it, over the cache's host rows. */
ks_kivi_head ks_kv_kivi_head(const ks_kv_kivi *q, const ks_kvcache *c, int layer, int head);

/* Bytes `layer` holds: packed key codes (ceil(nq_k / (32 / k_bits)) words per stored channel; raw: nq_k words
 * for KS_KIVI_RAW, ceil(nq_k / 2) for KS_KIVI_RAW_BF16), value codes (v_words words per packed token; raw: d or
 * ceil(d / 2)), fp16 scales and zeros of the packed groups (raw: none), and c->elem_bytes per element of the
 * full-precision keys (n - nq_k rows) and values (n - nq_v rows) of each head. Stale rows (packed in both) are not
 * counted: a compaction releases them (capacity the cache reserved, as every row past a head's length). */
int64_t ks_kv_kivi_layer_bytes(const ks_kv_kivi *q, const ks_kvcache *c, int layer);
/* The same summed over the cache's layers. */
int64_t ks_kv_kivi_bytes(const ks_kv_kivi *q, const ks_kvcache *c);
/* Bytes of the packed arrays allocated (codes, scales and zeros for cap tokens of every (layer, KV head)). */
int64_t ks_kv_kivi_alloc_bytes(const ks_kv_kivi *q);

#endif
