/* kvstore_cpu.h — the KV store over fp32 host rows (kvstore.h): the CPU backend's, and usable alone over a
 * cache whose rows and query buffer the caller fills (the method tests do).
 *
 *     ks_kvcache cache;  KS_TRY(ks_kvcache_init(&cache, first_layer, n_layers, Hk, d, cap, cap, 1));
 *     ks_kvstore_cpu s;
 *     ks_kvstore_cpu_params p = {.cache = &cache, .q = q_buffer, .n_heads = H, .max_chunk = rows,
 *                                .scale = 1.0f / sqrtf(d)};
 *     KS_TRY(ks_kvstore_cpu_init(&s, &p));
 *     ks_kvstore *kv = &s.base;               // what the KV methods call (kv->ops->window_scores(kv, ...))
 *     ks_kvstore_cpu_free(&s);                // accepts zeroed or half-built
 *
 * The store borrows the cache and the query rows and owns its scratch, the per-row scores and KIVI's packed part
 * (once reserved; the backend's decode attention then reads it: ks_kvstore_cpu_attention_decode). Every op runs at
 * once on the calling thread (OpenMP inside), so compress_layer runs the layer's work before it returns. The
 * owner of the query buffer tells the store what its last causal prefill attention left (lse_layer, lse_pos0,
 * lse_n, rows of `lse`), so that scoring those very queries skips recomputing their log-sum-exps.
 */
#ifndef KS_KVSTORE_CPU_H
#define KS_KVSTORE_CPU_H

#include "backend/kv_kivi.h"
#include "backend/kvstore.h"

typedef struct ks_kvstore_cpu_params {
    ks_kvcache *cache; /* host storage (ks_kvcache_init host_storage = 1); borrowed */
    const float *q;    /* (max_chunk, H, d) the query rows the ops read (row r = the chunk's row r; decode: row 0);
                          borrowed */
    float *lse;        /* (max_chunk, H) log-sum-exps the query owner's prefill attention writes; NULL: none */
    int n_heads;       /* H, a multiple of the cache's Hk */
    int max_chunk;     /* query rows */
    float scale;       /* the attention logits' scale (1 / sqrt(d) for the supported models) */
    int window;        /* sliding window of the decode queries (0: none) ... */
    int window_first;  /* ... on absolute layers >= window_first */
    int packed_rows;   /* tokens per (layer, KV head) a packed part (quant_reserve) holds: ks_backend_params'
                          packed_rows (0: the cache's cap) */
} ks_kvstore_cpu_params;

typedef struct ks_kvstore_cpu {
    ks_kvstore base;           /* ops = &ks_kvstore_cpu_ops */
    ks_kvstore_cpu_params p;
    int lse_layer;             /* absolute layer whose chunk of lse_n query rows at lse_pos0 `lse` holds; -1:
                                  nothing (set by the query owner after each prefill attention) */
    int lse_pos0, lse_n;
    int32_t *start;            /* (Hk) first row a windowed decode query sees per head; owned */
    float *score_work;         /* (2 H, cap) per-query-head statistics of the scoring ops; owned */
    float *evict_p;            /* (H, cap) a decode step's probabilities for decode_evict (per query head for
                                  ACCUMULATED) and row_scores_add's chunk scores; owned */
    float *row_scores;         /* (n_layers, H, cap) the per-row scores once reserved, else NULL; owned */
    ks_kv_kivi *kivi;          /* KIVI's packed part once reserved (quant_reserve), else NULL; owned (the cache
                                  points to it) */
} ks_kvstore_cpu;

extern const ks_kvstore_ops ks_kvstore_cpu_ops;

ks_status ks_kvstore_cpu_init(ks_kvstore_cpu *s, const ks_kvstore_cpu_params *p);
void ks_kvstore_cpu_free(ks_kvstore_cpu *s);

/* 1 when the decode attention of `layer` must read a packed part (ks_kvstore_cpu_attention_decode). */
int ks_kvstore_cpu_packed(const ks_kvstore_cpu *s, int layer);
/* The decode attention of `layer` over its packed tokens and full-precision rows (ks_fast_kivi_attention_decode):
 * the store's query row 0 into out (H, d). */
void ks_kvstore_cpu_attention_decode(ks_kvstore_cpu *s, int layer, float *out);

#endif
