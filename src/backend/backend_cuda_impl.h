/* backend_cuda_impl.h — the CUDA backend's instance, shared by its two files (nothing else includes this):
 *   backend_cuda_mem.c  device checks, the memory layout (weights block, activation/KV arena), weight upload
 *                       or random fill, init and free;
 *   backend_cuda.c      the forward ops (backend/backend.h) and the decode step (graph capture and replay);
 *   backend_cuda_methods.c  the KV store (backend/kvstore.h): the cache primitives, the per-row scores and the
 *                       deferred compression on the side stream.
 *
 * Device memory is two blocks allocated at init, nothing after:
 *   weights  per layer: w_qkv (q_proj, k_proj, v_proj rows stacked) and w_gu (gate_proj, up_proj rows
 *            stacked) so that each is ONE GEMM, w_o, w_down, all bf16; norms fp32; biases bf16 for q|k|v (the
 *            type of their output), fp32 for o (added into the fp32 residual); embedding and LM head bf16
 *            (one copy when tied).
 *   arena    activations for max_chunk rows, logits, RoPE frequencies, positions/tokens, per-head lengths and
 *            window starts, decode and argmax scratch, the compression ops' scratch, and the KV cache: keys and
 *            values bf16, head-major as kernels/cpu/ref.h describes, laid out as backend/kvcache.h says (full
 *            mode: (n_layers, Hk, cap, d); budget mode: each layer's own rows plus the shared prefill slots).
 * A third block, the per-row scores and their scratch, is allocated only when a method reserves them
 * (kvstore.h row_scores_reserve); a fourth, KIVI's packed part (cuda_kivi), only when a quantizing method reserves
 * it (kvstore.h quant_reserve).
 * The buffers of backend.h are views: Q, K, V are column ranges of one (rows, (H + 2Hk) d) q|k|v buffer and
 * GATE, UP of one (rows, 2F) gate|up buffer, with row stride `ld`.
 */
#ifndef KS_BACKEND_CUDA_IMPL_H
#define KS_BACKEND_CUDA_IMPL_H

#include <math.h>

#include <cuda_runtime_api.h>

#include "cuda/ks_cuda.h"
#include "cuda/ks_cuda_methods.h" /* ks_cuda_xattn_work, ks_cuda_flex_work */
#include "backend/backend.h"
#include "backend/kv_kivi.h"

typedef struct cuda_layer {
    float *attn_norm, *ffn_norm; /* (hidden) */
    ks_bf16 *w_qkv;              /* ((H + 2Hk) d, hidden) */
    ks_bf16 *b_qkv;              /* ((H + 2Hk) d) when cfg.attn_bias, else NULL */
    ks_bf16 *w_o;                /* (hidden, H d) */
    float *b_o;                  /* (hidden) when cfg.o_bias, else NULL */
    ks_bf16 *w_gu;               /* (2 ffn, hidden) */
    ks_bf16 *w_down;             /* (hidden, ffn) */
} cuda_layer;

/* An activation buffer: rows of `width` elements of `type`, `ld` elements apart. */
typedef struct cuda_view {
    void *p;
    int64_t ld;
    int width;
    ks_dtype type;
} cuda_view;

/* Number of (Hk) int32 rows per layer in cuda_kivi's count mirror: nq_k, nq_v, off (KS_CUDA_KIVI_COUNTS: what the
 * decode attention reads, with the device lengths), then a flush's plan k_t0, k_n, v_t0, v_n (what the
 * quantization kernels read). */
#define KS_CUDA_KIVI_COUNTS 3
#define KS_CUDA_KIVI_ROWS 7

/* How a KIVI decode step's flushes run (cuda_kivi.step; backend_cuda.c's decode_step sets it for the step). */
typedef enum ks_cuda_kivi_mode {
    KS_CUDA_KIVI_EAGER,  /* planned on the host: counts and plan copied, grids from the plan, kv_compact releases */
    KS_CUDA_KIVI_DEVICE, /* a captured step: planned on the device (ks_cuda_kivi_decode_flush: flush and release in
                            one launch), the host advancing its counts and bookkeeping by the same rules */
    KS_CUDA_KIVI_DRY,    /* a replayed step's host pass: the bookkeeping only, no forward op or flush enqueued */
} ks_cuda_kivi_mode;

/* KIVI's packed part on the device (backend_cuda_methods.c: quant_reserve, quant_flush, quant_channels,
 * quant_pack, the decode attention): the arrays of kernels/kivi_args.h for every (layer, KV head) and cap tokens in
 * one device block, the counts on the host (ks_kv_kivi without host arrays; the cache's `kivi` points to them),
 * copied to the layer's rows of `dev_counts` on the stream before each kernel that reads them when they differ
 * from what those rows hold (dev_rows). A graph-served decode step advances the device counts on the device by
 * the host's rules, and the host its own and dev_rows alike, so the rows stay current without a copy. The stored
 * key channel lists (host: counts.kc, counts.k_chan) are copied to the layer's device lists when set
 * (quant_channels) and before the first kernel of a new sequence on the layer (lists_seq). */
typedef struct cuda_kivi {
    ks_kv_kivi counts;          /* host counts, key channels, released positions; plan scratch */
    void *block;                /* the device block; owned */
    uint32_t *k_codes;          /* (n_layers, Hk, d, k_words) */
    uint16_t *k_scale, *k_zero; /* (n_layers, Hk, d, k_groups) */
    uint32_t *v_codes;          /* (n_layers, Hk, cap, v_words) */
    uint16_t *v_scale, *v_zero; /* (n_layers, Hk, cap, v_groups) */
    int32_t *k_chan, *kc;       /* (n_layers, Hk, d), (n_layers, Hk) */
    int32_t *dev_counts;        /* (n_layers, KS_CUDA_KIVI_ROWS, Hk) */
    int32_t *host_counts;       /* (n_layers, 2, KS_CUDA_KIVI_ROWS, Hk) pinned staging: per layer the decode
                                   attention's rows, then the flush's; owned */
    cudaEvent_t *upload_ev;     /* (n_layers, 2) after each region's last copy out of host_counts; owned */
    int32_t *dev_rows;          /* (n_layers, KS_CUDA_KIVI_COUNTS, Hk) what the count rows of dev_counts hold once
                                   the work enqueued so far has run (the decode attention copies only when its
                                   counts differ, so that a decode step whose counts stay replays); -1: unknown
                                   (ks_cuda_kivi_forget); owned */
    int32_t *host_lists;        /* (n_layers, Hk + Hk d) pinned staging of a layer's kc, then k_chan; owned */
    cudaEvent_t *lists_ev;      /* (n_layers) after each layer's last copy out of host_lists; owned */
    unsigned *lists_seq;        /* (n_layers) the cache sequence whose lists the layer's device lists hold; owned */
    double *err;                /* (4) a flush's error parts: keys {sum d^2, sum x^2}, then values */
    float *scratch;             /* the decode attention's split partials (ks_cuda_kivi_attention_scratch_floats) */
    unsigned *done;             /* (1) ks_cuda_kivi_decode_flush's block counter: zeroed with the block, left 0 */
    ks_cuda_kivi_mode step;     /* how this decode step's flushes run; EAGER outside decode steps */
    int32_t *released;          /* (n_layers, Hk) a DEVICE or DRY step: the stale rows each head's device release
                                   dropped, which the method's compaction must match (kv_compact); owned */
    unsigned char *releasing;   /* (n_layers) that release is waiting for the method's compaction; owned */
} cuda_kivi;

struct ks_backend {
    /* Sequence slots (backend.h): slot 0 is the instance the caller holds (the front); slots 1.. are instances of
     * their own (KV cache, store, activations for their prompts, decode graph) that borrow the front's weights,
     * stream and GEMM handle. The front forwards every per-sequence op to the current slot; in a batched decode
     * step (use_batch) it runs the products on the batch's rows in its own buffers, each other slot's q|k|v and
     * attention-output pointers then pointing at its row there (aim). */
    ks_backend **slots;         /* (n_slots) slots[0] == the front; the others owned by the front */
    int n_slots;
    ks_backend *cur;            /* the current slot (the front's use_slot; itself in the others) */
    const ks_decode_batch *batch; /* the batched decode step's rows (front only), NULL: none; borrowed */
    int shares;                 /* 1: weights, stream and GEMM handle are the front's (slots 1..) */
    int logit_rows;             /* ks_backend_logit_rows(max_batch): rows of logits, ids, argmax scratch */
    const ks_model *m;          /* borrowed: config and layer range (host weights only read at init) */
    const ks_model_config *cfg; /* &m->cfg */
    int n_layers, max_chunk, cap; /* cap: rows per head a layer may reach (max_ctx) */
    int gpu_share;                /* model instances sharing the GPU (ks_backend_params.gpu_share) */
    int own_cap;                /* rows per head each layer's own storage holds (kvcache.h; cap: full mode) */
    int packed_rows;            /* tokens per (layer, KV head) of KIVI's packed part (ks_backend_params; 0: cap) */
    int qkv_width;              /* (H + 2Hk) d */
    cudaStream_t stream;        /* every op is enqueued here */
    ks_cuda_gemm_t *gemm;       /* cuBLASLt handle, workspace and plans */

    void *weights, *arena;      /* the two device blocks; owned */
    size_t weight_bytes, arena_bytes;
    cuda_layer *layers;         /* (n_layers) host array of device views */
    ks_bf16 *embed;             /* (vocab, hidden) when this stage embeds or ties; NULL otherwise */
    ks_bf16 *lm_head;           /* (vocab, hidden) on the last stage (== embed when tied) */
    float *final_norm;          /* (hidden) on the last stage */

    cuda_view view[KS_BUF_COUNT];
    float *x;                   /* rows x_row0.. of x_base: what the ops call X (residual_at) */
    float *x_base;              /* (x_rows, hidden) residual stream, fp32; a further slot uses the front's */
    int x_rows;                 /* max_chunk, or max_ctx in the cache's budget mode (a layer-major prompt) */
    ks_bf16 *xn, *qkv, *att, *gu; /* qkv, att: a batched step may aim them at the front's rows (use_batch) */
    ks_bf16 *home_qkv, *home_att; /* where qkv and att are outside a batched step */
    float *logits;              /* (logit_rows, vocab) */
    float *inv_freq;            /* (d / 2) */
    int32_t *pos, *tokens;      /* (max_chunk) positions for RoPE, token ids */
    int32_t *lens, *starts;     /* (n_layers, Hk) rows held per head; first row a windowed decode query sees */
    int32_t *ids;               /* (logit_rows) argmax results */
    ks_bf16 *kc, *vc;           /* (ks_kvcache_elems(&cache)) K and V blocks: a layer's (Hk, stride, d) rows at
                                   ks_kvcache_offset(&cache, layer) */
    void *decode_scratch, *argmax_scratch;

    /* The compression ops (backend_cuda_methods.c), sized at init from (H, Hk, d, cap, max_chunk): */
    float *score_out;           /* (H, cap) device results of window_scores, decode probabilities, key norms,
                                   decode_evict's probabilities (every use but decode_evict's ends in a host wait;
                                   decode_evict runs in decode steps, when nothing is deferred); Hk rows, or H
                                   for results per query head (KS_GQA_NONE) */
    float *score_sums;          /* (H, cap) window_scores' optional second output (ks_window_args.sums; Hk rows),
                                   decode_evict's score scratch (H rows) */
    float *score_lse;           /* (score_lse_floats) log-sum-exp scratch of ks_cuda_scores */
    size_t score_lse_floats;    /* H (max_chunk + cap): n_q * H * segments for n_q <= max_chunk and, with
                                   LOOM's chunked softmax, n_q * segments <= max_chunk + cap */
    double *score_sum;          /* (2) the window summary (entropy, var_sum) */
    float *att_lse;             /* (max_chunk, H) the last causal prefill attention's log-sum-exps, which
                                   window_scores reuses for those queries (ks_window_lse_serves); NULL for head
                                   dims the attention cannot give them for */
    int lse_layer, lse_pos0, lse_n; /* what att_lse holds: absolute layer (-1: nothing), the chunk's position
                                   and rows */
    int sparse_block;           /* ks_backend_params.sparse_block: B of the block lists below, 0: none */
    int32_t *block_rows;        /* (H (max_chunk / B + 2) + 1) a sparse prefill chunk's row offsets, device */
    int32_t *block_cols;        /* (H (max_chunk / B + 2) (cap / B + 1)) its key blocks, device */
    int sparse_whole_prompt;    /* ks_backend_params.sparse_whole_prompt: which of the two scratches below is placed */
    ks_cuda_xattn_work xattn;   /* XAttention's chunk estimation scratch (sparse_block, not sparse_whole_prompt;
                                   backend_cuda_mem.c; zero when not placed) */
    ks_cuda_flex_work flex;     /* FlexPrefill's whole-prompt estimation scratch (sparse_block and
                                   sparse_whole_prompt; zero when not placed) */
    int32_t *compact_idx;       /* (Hk * cap + Hk) device keep lists, then counts */
    ks_merge *merge_list;       /* (Hk * cap) device merge lists (v_merge), then Hk int32 counts */
    /* The per-row scores (kvstore.h), one device block allocated by row_scores_reserve; NULL until then: */
    void *scores_block;         /* owned */
    float *row_scores;          /* (n_layers, H, cap) one row per query head: a method's running scores
                                   (row_scores_add, row_scores_load), decode_evict's ACCUMULATED */
    float *add_out, *add_lse;   /* (H, cap), (score_lse_floats): row_scores_add's own score_out and score_lse,
                                   as it does not wait (a deferred layer's ops on `side` may use those meanwhile) */
    /* Decode-time eviction (decode_evict, backend_cuda_methods.c): the device drops a row per head and logs it;
     * the host applies the log to its bookkeeping once it has waited for the stream since (sync_epoch counts
     * those waits), per layer before that layer's next append, all layers before anything else reads them. */
    int32_t *drop_dev;          /* (n_layers, Hk) the row each head dropped in the layer's last eviction, or -1 */
    int32_t *host_drops;        /* (n_layers, Hk) pinned copy of drop_dev; owned */
    unsigned char *drop_pending;/* (n_layers) host: an eviction's log not applied yet; owned */
    unsigned *drop_epoch;       /* (n_layers) host: sync_epoch when that eviction was enqueued; owned */
    unsigned sync_epoch;        /* host waits for `stream` so far */
    unsigned char *graph_evicts;/* (n_layers) host: the decode graph evicts on the layer; owned */
    int graph_hooked;           /* the graph holds a method's decode ops (a KS_DECODE_HOOKED step) */
    unsigned graph_sequence;    /* cache.sequence of the last graph-served step (a hooked graph, or one over a packed
                                   part, serves one sequence only) */
    unsigned prompts;           /* prompts whose compression ended (compress_flush): a prompt continuing a
                                   sequence re-plans the method's budgets, which a hooked graph holds */
    unsigned graph_prompts;     /* `prompts` at the last graph-served step */
    ks_bf16 *compact_scratch;   /* (Hk, cap, d) the gathered rows of one of K, V */
    float *host_scores;         /* (H, cap) pinned host staging of score_out and row_scores; owned */
    int32_t *host_idx;          /* (Hk * cap + Hk) pinned host staging of compact_idx; owned */
    ks_merge *host_merge;       /* pinned host staging of merge_list (the same layout); owned */

    cuda_kivi *kivi;            /* KIVI's packed part once reserved (quant_reserve), else NULL; owned */

    /* The KV store (kvstore.h) the methods see; its ops find the instance around it. */
    ks_kvstore kvs;
    /* Deferred compression (kvstore.h: compress_layer / compress_flush; backend_cuda_methods.c, which creates and
     * frees all of this in ks_cuda_methods_init / ks_cuda_methods_free, except `snap`, carved from the arena).
     * A layer's prompt-end work is deferred by one layer: its query rows are stashed (snapshot and event), the
     * previous layer's work runs, and this one's waits in `pending` for the next layer's compress_layer or the
     * flush. A deferred layer's ops run on `side`, which first waits for that layer's stash event; the host
     * waits only on `side` for their results. score_out, score_lse, score_sum and host_scores serve both
     * streams: every use ends in a host wait, so the two never overlap; compact_idx, merge_list and
     * compact_scratch are used on `side` only while layers are deferred (kvstore.h's rule). */
    cudaStream_t side;          /* high priority, so its small kernels slip between the main stream's */
    cudaEvent_t stash_ev[2];    /* per snapshot slot: recorded on `stream` after the snapshot copy */
    cudaEvent_t side_ev;        /* recorded on `side` at the join; `stream` waits on it */
    cudaEvent_t idx_ev;         /* after host_idx's last upload: host_idx is not rewritten before it */
    cudaEvent_t merge_ev;       /* the same for host_merge */
    cudaEvent_t slot_ev[KS_KVCACHE_SLOTS]; /* budget mode: recorded on the stream that moved a layer's kept rows
                                   out of the prefill slot; the next layer taking the slot waits for it */
    ks_bf16 *snap;              /* (2, snap_rows, H d) device snapshots of stashed Q rows (arena view) */
    int snap_rows;              /* min(max_chunk, KS_KVSTORE_DEFER_ROWS) */
    struct {
        int layer, row0, n;     /* absolute layer (-1: empty) and the chunk rows row0 .. row0 + n - 1 */
    } snap_slot[2];             /* by layer parity */
    unsigned char *deferred;    /* (n_layers) 0: not deferred; 1: stashed, `side` not yet ordered after the
                                   stash; 2: `side` ordered after it; host; owned */
    struct {
        ks_kvstore_work work;   /* the stashed layer's work not run yet; NULL: none */
        void *ctx;
        int layer;
    } pending;
    double *host_sum;           /* (2) pinned staging of score_sum; owned */

    ks_kvcache cache;           /* host bookkeeping (no host storage) */
    int32_t *lens_on_device;    /* (n_layers, Hk) host copy of what `lens` holds: reset or compaction on the
                                   host side shows as a difference, uploaded before the next forward call */
    int32_t *host_starts;       /* (n_layers, Hk) staging for `starts` */
    int any_window;             /* some layer has a sliding window */

    unsigned *norm_done; /* (1) ks_cuda_gemv_norm's block counter: zeroed at init, left zero by every launch */

    /* Decode graph: the first decode step runs eagerly (first-call set-up), the second is captured, the rest
     * replay it. */
    cudaGraphExec_t graph;
    int decode_steps;           /* decode steps begun while no graph existed */
    int capturing;              /* the stream is recording the step */
    int graph_bound;            /* the decode attention's row bound the graph was captured with */
    int step_bound;             /* that bound for the step graph_begin began (0: outside such a step) */
    int graph_tokens;           /* KIVI: the packed decode attention's token bound the graph was captured with */
    int step_tokens;            /* that bound for the step graph_begin began (0: outside such a step) */
    int graph_packed;           /* KIVI: the layers attending through packed tokens when the graph was captured */
};

/* backend_cuda_mem.c: an instance with every buffer allocated and the weights uploaded from the model's host
 * tensors (random = 0) or filled on the device with uniform random values from `seed` (random = 1), and its
 * p->max_batch - 1 further sequence slots sharing them. */
ks_status ks_cuda_backend_create(ks_backend **out, const ks_model *m, const ks_backend_params *p, int random,
                                 uint64_t seed);
void ks_cuda_backend_destroy(ks_backend *b); /* accepts NULL and half-built instances; the front frees its slots */

/* backend_cuda.c: shared with backend_cuda_methods.c. */
ks_status ks_cuda_wait_main(ks_backend *b, const char *what);  /* synchronise `stream` (a sync epoch) */
ks_status ks_cuda_wait_stream(cudaStream_t s, const char *what); /* synchronise s, naming the work on failure */
/* Window starts of the decode query at qpos for the layer (into host_starts), then to the device. */
ks_status ks_cuda_upload_starts(ks_backend *b, int layer, int qpos);

/* backend_cuda_methods.c: the KV store (kvstore.h) of the instance. */
ks_kvstore *ks_cuda_kvstore(ks_backend *b);
/* The logged evictions of the layer (-1: every layer) applied to the bookkeeping, waiting for the stream first
 * only if no wait has followed them. */
ks_status ks_cuda_apply_drops(ks_backend *b, int layer);
/* The KV store's table, deferred-compression stream, events, pinned staging and marks (sets snap_rows before the
 * arena layout); free accepts a half-built instance and waits for the side stream first, and frees the per-row
 * scores. */
ks_status ks_cuda_methods_init(ks_backend *b);
void ks_cuda_methods_free(ks_backend *b);

static inline float ks_cuda_attn_scale(const ks_model_config *c) { return 1.0f / sqrtf((float)c->head_dim); }

/* Layers are absolute numbers everywhere; the instance's per-layer arrays (layers, deferred, the eviction marks
 * and the (n_layers, Hk) per-head arrays) are indexed as the cache's, by ks_kvcache_index(&b->cache, layer). */

/* The layer's K and V rows, (Hk, ks_kvcache_stride(&b->cache, layer), d), where they are now. */
static inline ks_bf16 *ks_cuda_layer_k(const ks_backend *b, int layer) {
    return b->kc + ks_kvcache_offset(&b->cache, layer);
}
static inline ks_bf16 *ks_cuda_layer_v(const ks_backend *b, int layer) {
    return b->vc + ks_kvcache_offset(&b->cache, layer);
}
/* The layer's Hk entries of an (n_layers, Hk) per-head array: lens, starts, drop_dev and their host copies. */
static inline int32_t *ks_cuda_layer_heads(const ks_backend *b, int32_t *a, int layer) {
    return a + (size_t)ks_kvcache_index(&b->cache, layer) * b->cfg->n_kv_heads;
}

/* Enqueues on s the move of the layer's first max-length rows per head, K and V, from (from, from_stride) to
 * where the cache bookkeeping now puts them (a prefill slot taken or left). */
ks_status ks_cuda_move_layer_rows(ks_backend *b, int layer, size_t from, int from_stride, cudaStream_t s);

/* backend_cuda_methods.c: when `layer` holds packed tokens (KIVI), its decode attention over them and its
 * full-precision rows into ATT (*done = 1); *done = 0 otherwise, nothing enqueued. Its grids follow
 * ks_cuda_kivi_token_bound (step_tokens within a graph_begin step), so an eager and a captured step agree. */
ks_status ks_cuda_kivi_attention(ks_backend *b, int layer, int *done);

/* KIVI's graph-served decode step (backend_cuda.c decode_step; backend_cuda_methods.c):
 *   token_bound: the packed decode attention's token bound: the smallest power of two >= 256 and >= every head's
 *     tokens + extra, at most the capacity;
 *   packed_layers: the layers holding packed tokens now (which attend through them);
 *   graph_serves: 1 when every layer's flush for a step appending one token fits the device-planned flush (at
 *     most R keys and one value a head, within the packed part, a release's kept rows within R) — checked before
 *     the step, so that a step that would fail or outgrow the graph runs eagerly and fails there;
 *   sync: every layer's device counts and key channel lists current (copied where they differ), before a
 *     capture or a replay;
 *   begin_step / end_step: the step's mode; end_step checks that every device release met the method's
 *     compaction and, when the step failed (st), forgets the device state (returns the step's status);
 *   forget: the host's mirrors of the device counts, key channel lists and lengths marked unknown, so the next
 *     use copies every layer's. */
int ks_cuda_kivi_token_bound(const ks_backend *b, int extra);
int ks_cuda_kivi_packed_layers(const ks_backend *b);
int ks_cuda_kivi_graph_serves(const ks_backend *b);
ks_status ks_cuda_kivi_sync(ks_backend *b);
void ks_cuda_kivi_begin_step(ks_backend *b, ks_cuda_kivi_mode mode);
ks_status ks_cuda_kivi_end_step(ks_backend *b, ks_status st);
void ks_cuda_kivi_forget(ks_backend *b);

/* A replayed KIVI step's host pass: the forward ops enqueue nothing (the graph did), the store keeps its books. */
static inline int ks_cuda_dry(const ks_backend *b) { return b->kivi && b->kivi->step == KS_CUDA_KIVI_DRY; }

/* The layer's sliding window (0 = full attention): Qwen2 slides only from swa_first_layer on. */
static inline int ks_cuda_layer_window(const ks_model_config *c, int layer) {
    return layer >= c->swa_first_layer ? c->sliding_window : 0;
}

#endif
