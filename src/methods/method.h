/* method.h — KV-cache compression methods: H2O, StreamingLLM, SnapKV, L2Compress, PyramidKV, CakeKV, CaM, ThinK,
 * KIVI and FullKV (none), and the sparse prefill XAttention, which composes before them. Each is a const
 * ks_method_ops table in its own file, found by name in the NULL-terminated registry ks_methods[]; an instance
 * (ks_method) holds the parsed options and per-sequence state, and the forward pass calls its hooks. `kvscope
 * generate` and `kvscope eval` use the same objects:
 *
 *     ks_method *m;
 *     const char *opts[] = {"max_capacity_prompt=1024", "pooling=maxpool"};
 *     KS_TRY(ks_method_create(&m, "snapkv", NULL, opts, 2));  // name case-insensitive; NULL: no YAML file
 *     KS_TRY(ks_forward_init(&fwd, &model, m, &fp));          // binds to the backend; state sized once
 *     KS_TRY(ks_generate(&fwd, ids, n, &gp, out, &r));        // compresses every layer after its prefill,
 *                                                             // evicts during decode where the method does
 *     ks_layer_stat st[KS_METHOD_MAX_LAYERS];
 *     int rows = ks_method_layer_stats(m, st);                // one row per layer held
 *     ks_forward_free(&fwd);  ks_method_free(m);
 *
 * Methods reach the cache only through the backend's KV store (backend/kvstore.h: window_scores,
 * attention_decode_probs, key_norms, kv_compact, decode_evict, row_scores_*): scores and keep lists cross as host
 * arrays and rows stay where the store keeps them (decode-time eviction and the cache's per-row scores never
 * cross), so every method runs unchanged on any backend. Selection is per KV head (one stored copy per KV
 * head): query-head scores are reduced over each group (knob gqa_reduce: mean, max or sum) before top-k.
 *
 * Options. The knob tables in the method files carry the defaults (compiled in, authoritative).
 * configs/methods/<file>.yaml lists every knob with its default and what it means (a test checks that file and
 * table agree); it is documentation and a template, read only when passed as `config_path`
 * (--method_config). Then `key=value` overrides (--method_opt) apply in order. Unknown keys and bad values are
 * KS_ERR_ARG naming the file and line or the --method_opt, and the key. Budget knobs take a token count
 * ("2048") or a ratio of the prompt length ("0.1", "10%").
 *
 * Statistics: after the prompt, each held layer reports its budget, kept rows, the fraction of the observation
 * window's attention (the last W prompt queries, W = the method's window or KS_METHOD_STAT_WINDOW) that falls
 * on kept rows, and the mean and max L2 norm of the kept keys. Both come from per-row host arrays (row_mass,
 * row_norm) filled at each layer's prompt end and compacted with the rows, so ks_method_end_prompt reads
 * nothing from the backend.
 *
 * Prompt-end work: at a layer's prompt end the method hands the store that layer's work (kvstore.h:
 * compress_layer), which runs it at once or, on a GPU, one layer later so that the GPU runs the next layer while
 * the host scores and selects this one; the same numbers either way. ks_method_end_prompt flushes what is left.
 *
 * Compositions (--acceleration SnapKV+ThinK+KIVI): every public function below takes the head and runs the
 * chain: each part is bound to the same store with its own scratch; plan, per-chunk scoring, decode steps and
 * finish_stage run per part in order; a layer's prompt-end work takes the key norms once (into the head's
 * row_norm), then runs the selector's after_prefill_layer (whose compaction calls every part's before_compact),
 * then each later part's after_prefill_layer in order; the window is the most any part needs; the rows a
 * budget-sized cache needs come from the selector's plan (no selector: the most any part's plan keeps); the
 * statistics are the head's rows with each part's layer_stat fields added. A part reads the chain through
 * m->selector (the selection's instance, e.g. its keep lists in before_compact) and m->next.
 */
#ifndef KS_METHOD_H
#define KS_METHOD_H

#include <stddef.h>
#include <stdint.h>

#include "results/record.h" /* ks_layer_stat */
#include "core/status.h"
#include "backend/backend.h"
#include "methods/budget.h"
#include "model/model.h"

#define KS_METHOD_STAT_WINDOW 32 /* observation window of the statistics when the method has none */
#define KS_METHOD_MAX_LAYERS 512 /* layers one instance may hold (sizes callers' stat arrays) */
#define KS_METHOD_MAX_KV_HEADS 256 /* KV heads per layer the methods' per-head host loops support */
/* Rows per head above which the per-head host loops (pooling, compaction of the statistics) run on OpenMP
 * threads: long prompts, where they sit between two layers' GPU work; below it a thread team costs more. The
 * top-k selection, ~20 ns per row, compares the layer's rows in all (ks_method_keep_top). */
#define KS_METHOD_PARALLEL_ROWS 4096
#define KS_KNOB_INTS_MAX 64
#define KS_KNOB_TEXT_MAX 256

/* ---- knobs -------------------------------------------------------------------------------------------- */

typedef enum ks_knob_kind {
    KS_KNOB_INT,    /* int */
    KS_KNOB_FLOAT,  /* float */
    KS_KNOB_BOOL,   /* int 0/1; true/false/yes/no/1/0 */
    KS_KNOB_BUDGET, /* ks_budget (methods/budget.h): tokens or a ratio of the prompt */
    KS_KNOB_ENUM,   /* int: index into `choices` */
    KS_KNOB_INTS,   /* ks_ints: a YAML list [0, 1] or "0,1" */
    KS_KNOB_TEXT,   /* char[KS_KNOB_TEXT_MAX]: the value as written (a number or a file path, which the method
                       reads), non-empty */
} ks_knob_kind;

typedef struct ks_ints {
    int n;
    int v[KS_KNOB_INTS_MAX];
} ks_ints;

typedef struct ks_knob {
    const char *name;    /* YAML key and --method_opt key; NULL ends a table */
    ks_knob_kind kind;
    size_t offset;       /* of the value in the method's options struct */
    const char *def;     /* default, written as in YAML */
    const char *choices; /* KS_KNOB_ENUM: "avgpool|maxpool" (matched case-insensitively); else NULL */
    double min, max;     /* INT, FLOAT, INTS elements, BUDGET token counts: the accepted range (inclusive) */
    const char *help;    /* one line: what it means (also the comment in the YAML file) */
} ks_knob;

/* ---- the method table ------------------------------------------------------------------------------- */

typedef struct ks_method ks_method;

/* One prompt chunk of one layer, as the hooks see it: rows 0 .. n - 1 of the backend's Q/K/V buffers hold the
 * chunk's tokens at positions pos0 .. pos0 + n - 1 (roped), and the layer's cache holds positions 0 ..
 * pos0 + n - 1 (dense). */
typedef struct ks_method_chunk {
    int layer;  /* absolute layer number */
    int pos0, n;
} ks_method_chunk;

/* Scores an instance keeps per cache row and moves with the rows (ks_method_ops.row_scores). */
typedef enum ks_row_scores {
    KS_ROW_SCORES_NONE,
    KS_ROW_SCORES_KV_HEAD,    /* one per KV head (CakeKV's pooled indicator) */
    KS_ROW_SCORES_QUERY_HEAD, /* one per query head (H2O's running sums, reduced over the group only where rows
                                 are chosen, so that the prefill chunks do not change the reduction) */
} ks_row_scores;

/* What a method does, which orders the parts of a composition (--acceleration XAttention+SnapKV+ThinK+KIVI):
 * at most one PREFILL part (sparse prefill: which key blocks each prompt query attends; the cache stays whole),
 * then SELECT (token selection or layer budgets: which rows stay), then MERGE (values of the rows the
 * selection drops are merged into kept rows before they go), then CHANNELS (key channels pruned), then QUANT (the
 * kept rows stored in fewer bits). Alone, a MERGE, CHANNELS or QUANT method brings its own selection or none.
 * SELECT is 0, so that a table without .role is a selection; PREFILL sorts before it. */
typedef enum ks_method_role {
    KS_ROLE_PREFILL = -1,
    KS_ROLE_SELECT,
    KS_ROLE_MERGE,
    KS_ROLE_CHANNELS,
    KS_ROLE_QUANT
} ks_method_role;

#define KS_METHOD_MAX_PARTS 5   /* parts of a composition: one per role */
#define KS_METHOD_NAME_MAX 128  /* a composition's name, "SnapKV+ThinK+KIVI", with its terminator */

typedef struct ks_method_ops {
    const char *name;     /* "SnapKV": the --acceleration value, matched case-insensitively */
    ks_method_role role;  /* where it stands in a composition (0: SELECT) */
    const char *file;     /* "snapkv": configs/methods/<file>.yaml */
    const char *summary;  /* one line */
    const ks_knob *knobs; /* NULL-name-terminated; an empty table for FullKV */
    size_t opts_size;     /* the options struct the knobs fill */
    ks_row_scores row_scores; /* scores kept per cache row and moved with the rows (m->row_scores) */
    int rows_unplanned;   /* 1: the rows a layer keeps after the prompt are known only once every layer is seen
                             (CakeKV's allocation), so `plan`'s budgets do not bound them: no budget-sized cache */
    int cache_scores;     /* 1: keeps running scores in the cache's per-row score buffer (kvstore.h row_scores_*,
                             decode_evict's ACCUMULATED rule), reserved when the method binds */
    int needs_stable_rows; /* 1: the part keeps the rows it holds in a form that cannot lose rows once the prompt is
                             in (quantized groups, narrowed keys), so a composition refuses it after a selection
                             that evicts while decoding (a SELECT part with on_decode_step: H2O, StreamingLLM,
                             CakeKV) */
    /* Cross-knob checks once all knobs are set (KS_ERR_ARG naming the knobs); NULL: none. */
    ks_status (*check)(const ks_method *m);
    /* Prompt queries the method scores after prefill: the prompt's last chunk must hold them. NULL: none. */
    int (*window)(const ks_method *m);
    /* Budgets for the prompt of m->n_prompt tokens, before its last chunk: ks_method_layer_at(m, layer)->budget
     * for every held layer, the most rows per KV head the layer holds after the prompt (unless rows_unplanned). */
    void (*plan)(ks_method *m);
    /* Optional: after a layer's attention on every prompt chunk (H2O sums scores over all prompt queries). */
    ks_status (*prefill_chunk)(ks_method *m, const ks_method_chunk *c);
    /* After a layer's attention on the prompt's last chunk: score, select and compact that layer (the layer's
     * prefill output used the full cache already). NULL: keep everything. */
    ks_status (*after_prefill_layer)(ks_method *m, const ks_method_chunk *c);
    /* Optional: after a layer's attention in every decode step (the query is in the backend's Q row 0 at
     * position qpos, its K/V already appended): rolling eviction, as backend ops (decode_evict) so that a GPU
     * step stays one graph, unless decode_on_host says otherwise. */
    ks_status (*on_decode_step)(ks_method *m, int layer, int qpos);
    /* Optional: 1 when the next decode step's hooks will do host work (read results back), so the step cannot
     * be replayed from a graph (CakeKV's first step after a prompt that left a layer more than one row over
     * its budget); NULL: never. */
    int (*decode_on_host)(const ks_method *m);
    /* Optional, for a method whose prompt-end work reads values of every layer of the model (CakeKV allocates
     * budgets over the layers from their preference scores): it keeps one value per model layer in
     * m->model_state, filling the held layers' during their prompt-end work. Across pipeline stages the values
     * travel with the prompt (a stage's instance starts its work with the earlier stages' values, see
     * ks_method_stage_state), and once the last stage has filled the rest, every other stage calls this to finish
     * its held layers as the whole model's values say. A single stage never calls it. NULL: layers independent. */
    ks_status (*finish_stage)(ks_method *m);
    /* Optional (MERGE): right before a compaction of `layer` (at the prompt's end, or a decode-time eviction when
     * `decode`), with the lists the compaction will keep (KV head h keeps rows keep[h * ld + i], i < n_keep[h]):
     * the part may still change the rows that stay (CaM adds dropped rows' values to kept rows). m is the part's
     * own instance, bound to the same store as the selection that compacts. */
    ks_status (*before_compact)(ks_method *m, int layer, const int32_t *keep, const int32_t *n_keep, int ld,
                                int decode);
    /* Optional: adds the part's own statistics of held `layer` to `row` (ks_method_layer_stats' row, already holding
     * the first part's budget, kept rows, mass and key norms): the fields only this part sets (quant_error, ...). */
    void (*layer_stat)(const ks_method *m, int layer, ks_layer_stat *row);
    /* Optional: once the instance is bound to a KV store, reserve what the method keeps in it for the store's
     * life (QUANT: KIVI's packed part, kvstore.h quant_reserve) and its own host state (m->state); its errors
     * fail the binding. */
    ks_status (*bind)(ks_method *m);
    /* Optional (QUANT): the most full-precision rows per (layer, KV head) the cache holds at any time once a
     * layer's prompt is in, whatever the sequence's length (the rest is packed in the store): the rows of a
     * budget-sized cache (ks_method_kv_rows). NULL: the plan's budgets plus the generated tokens. */
    int (*dense_rows)(const ks_method *m);
    /* ---- sparse prefill (role PREFILL: XAttention, FlexPrefill) ---- */
    /* B, tokens per block of the method's block lists (block_list.h). The forward pass starts every prompt chunk
     * but the first on a multiple of B (ks_forward_chunk_len), so that a query block's queries are never split
     * over two chunks, and sizes the list it hands prefill_blocks from B. */
    int (*sparse_block)(const ks_method *m);
    /* Before `layer`'s attention on a prompt chunk c (its roped queries in the backend's Q rows 0 .. c->n - 1, the
     * layer's cache holding positions 0 .. c->pos0 + c->n - 1; last: the prompt's last chunk): the key blocks
     * each (query head, query block) row of the chunk attends. The caller's list l has block, H, qb0 and
     * n_qblocks set and room for every causal block of every row (row_start: H * n_qblocks + 1, cols: H *
     * n_qblocks * (qb0 + n_qblocks)); the method fills row_start and cols and sets *out = l, or *out = NULL for
     * dense attention. Decode stays dense. */
    ks_status (*prefill_blocks)(ks_method *m, const ks_method_chunk *c, int last, ks_block_list *l,
                                const ks_block_list **out);
    /* 1: a layer's lists depend on the prompt's last block of queries (FlexPrefill), which exist only once the
     * prompt's last chunk has run qkv_rope_append: the whole prompt must be one prefill chunk, and
     * ks_method_prefill_blocks fails with KS_ERR_ARG naming --chunk on a chunk before the last. */
    int sparse_whole_prompt;
} ks_method_ops;

/* The registry: FullKV, H2O, StreamingLLM, SnapKV, L2Compress, PyramidKV, CakeKV, CaM, ThinK, KIVI, XAttention,
 * FlexPrefill; NULL-terminated. */
extern const ks_method_ops *const ks_methods[];
extern const ks_method_ops ks_method_fullkv, ks_method_h2o, ks_method_streamingllm, ks_method_snapkv,
    ks_method_l2compress, ks_method_pyramidkv, ks_method_cakekv, ks_method_cam, ks_method_think, ks_method_kivi,
    ks_method_xattention, ks_method_flexprefill;

/* 1 when a method of this table may evict rows during decode (a SELECT method with a decode hook: H2O,
 * StreamingLLM, CakeKV): no needs_stable_rows part may follow it in a composition (packed rows cannot be
 * evicted). */
int ks_method_decode_evicts(const ks_method_ops *o);

/* ---- an instance ------------------------------------------------------------------------------------ */

/* A QUANT method's record of a layer after its prompt (ks_layer_stat's quantization columns). */
typedef struct ks_method_quant {
    float err_k, err_v;         /* relative reconstruction errors of the keys and values quantized */
    int residual_k, residual_v; /* full-precision key / value tokens per KV head (the most over heads) */
    int held;                   /* tokens per KV head held, packed or not (the most over heads) */
    int64_t bytes;              /* bytes the layer holds */
} ks_method_quant;

typedef struct ks_method_layer {
    int budget;            /* rows per KV head the layer may keep after the prompt (window included) */
    int kept;              /* rows per KV head after the prompt's compression (the most over heads) */
    int compressed;        /* rows were dropped at prefill */
    float mass_total;      /* observation-window attention mass on all rows (the sum over KV heads) */
    float mass_kept;       /* fraction of it on the rows kept after the prompt */
    float key_norm_mean, key_norm_max; /* L2 norms of the keys kept after the prompt */
    int cascade_past;      /* CakeKV cascading: the fewest past tokens any allocation so far gave the layer */
    ks_method_quant quant; /* QUANT methods' record after the prompt (ThinK's: held, bytes of its own storage) */
    /* A MERGE part (CaM): the rows that left the layer and their merges, at the prompt's end and while decoding */
    int merges_prompt, merges_decode; /* merges (over KV heads) */
    int64_t leaving;       /* rows that left (merged or not), prompt end and decode */
    double prob_sum;       /* their merge probabilities, summed */
    float dv_rel;          /* ||dV|| / ||V|| of the prompt end's merges over the layer (0: none) */
    float channels_kept;   /* a CHANNELS part (ThinK): key channels stored per KV head, mean over KV heads (0: not
                              pruned yet) */
} ks_method_layer;

/* A PREFILL part's record of a layer's prompt, summed over its chunks (the statistics' sparse columns). */
typedef struct ks_method_sparse_layer {
    int64_t blocks;   /* key blocks computed, over query heads and query blocks */
    int64_t causal;   /* the causal key blocks of those rows (the dense attention's) */
    int64_t rows;     /* (query head, query block) rows */
    double coverage;  /* the rows' estimated attention mass on their computed blocks, as a fraction of the row's,
                         summed over the rows */
} ks_method_sparse_layer;

struct ks_method {
    const ks_method_ops *ops;
    char name[KS_METHOD_NAME_MAX]; /* the first part: the composition's parts' names joined by '+' ("SnapKV+KIVI"),
                              or the method's name alone; a later part: its own name */
    /* A composition (--acceleration SnapKV+ThinK+KIVI) is a chain of instances, one per part in role order, each
     * with its own options and scratch, bound to the same store; callers hold the first part (the head). */
    ks_method *next;       /* the next part; owned (ks_method_free frees the chain); NULL: the last part */
    ks_method *head;       /* the first part (borrowed); the instance itself when it is the first or alone */
    ks_method *selector;   /* the chain's SELECT part (borrowed), on the parts after it; NULL on the selector itself,
                              on every part of a chain without one, and on a method alone */
    void *opts;            /* (ops->opts_size) the parsed options; owned */
    char *source;          /* where the options came from ("defaults", the YAML path); owned */
    /* Bound by ks_method_bind (borrowed): */
    ks_kvstore *kv;        /* the backend's KV store; NULL for a method that never calls it on a backend without */
    ks_kvcache *cache;     /* the cache's bookkeeping: per-head lengths and positions */
    int first_layer, last_layer; /* the layers held, [first_layer, last_layer): absolute numbers, which every
                              hook and helper takes; the per-layer state below is indexed from first_layer
                              (ks_method_index) and read through the accessors after this struct */
    int n_layers_model;    /* N: all layers of the model (PyramidKV's schedule) */
    int H, Hk, d, cap;     /* query heads, KV heads, head_dim, rows per head */
    /* Host scratch and state, allocated at bind from the maximum shapes: */
    float *scores;         /* (Hk, cap) scores of the layer being compressed */
    float *pooled;         /* (Hk, cap) pooled scores / key norms */
    int32_t *keep;         /* (Hk, cap) rows each KV head keeps */
    int32_t *n_keep;       /* (Hk) */
    float *row_mass;       /* (layers held, Hk, cap) observation-window mass of each cache row */
    float *row_scores;     /* (layers held, score_rows, cap) method scores of each cache row, if ops->row_scores;
                              else NULL */
    int score_rows;        /* rows of row_scores per layer: Hk, or H for KS_ROW_SCORES_QUERY_HEAD (row h of query
                              head h moves with the rows of KV head h / (H / Hk)) */
    float *row_norm;       /* (layers held, Hk, cap) L2 norm of each cache row's key, taken by the layer's prompt-end
                              work before any of its rows moves, and moved with them by prefill compaction: the
                              statistics' key norms, L2Compress's scores. NULL: no KV store */
    ks_method_layer *layer; /* (layers held) */
    int n_prompt;          /* length of the current prompt; 0 before its last chunk */
    double model_state[KS_METHOD_MAX_LAYERS]; /* ops->finish_stage: one value per model layer (absolute number),
                                                 CakeKV's preference scores P_l; zeroed per sequence */
    ks_method_chunk last_chunk; /* the prompt's last chunk (its layer field unused): what a layer's prompt-end
                              work scores, whenever the store runs it */
    ks_merge *merges;      /* (Hk, cap) a MERGE method's merge lists (kvstore.h v_merge), allocated at bind; else
                              NULL */
    int32_t *n_merges;     /* (Hk) their lengths */
    float *chan_scores;    /* (H + Hk, d) a CHANNELS method's channel scores of the layer being pruned: per query
                              head, then their group means per KV head; allocated at bind, else NULL */
    int32_t *chan_keep;    /* (Hk, d) its kept-channel lists (kvstore.h quant_channels) */
    int32_t *n_chan;       /* (Hk) their lengths */
    ks_method_sparse_layer *sparse; /* (layers held) a PREFILL part's record of the prompt per layer, allocated at
                              bind and zeroed per sequence; else NULL */
    void *state;           /* a part's own host state (XAttention's thresholds and scratch): one block its bind
                              callback allocates, freed with the binding; NULL: none */
};

/* The index of held `layer` (an absolute number) in the per-layer state: the one place that converts. */
static inline int ks_method_index(const ks_method *m, int layer) {
    KS_ASSERT(layer >= m->first_layer && layer < m->last_layer);
    return layer - m->first_layer;
}
/* The record of held `layer`. */
static inline ks_method_layer *ks_method_layer_at(const ks_method *m, int layer) {
    return &m->layer[ks_method_index(m, layer)];
}
/* The layer's (Hk, cap) rows of row_mass and row_norm, and its (score_rows, cap) rows of row_scores. */
static inline float *ks_method_row_mass(const ks_method *m, int layer) {
    return m->row_mass + (size_t)ks_method_index(m, layer) * m->Hk * m->cap;
}
static inline float *ks_method_row_norm(const ks_method *m, int layer) {
    return m->row_norm + (size_t)ks_method_index(m, layer) * m->Hk * m->cap;
}
static inline float *ks_method_row_scores(const ks_method *m, int layer) {
    return m->row_scores + (size_t)ks_method_index(m, layer) * m->score_rows * m->cap;
}

/* The table called `name` (case-insensitive; "none" and "FullKV" are FullKV). KS_ERR_ARG listing the names. */
ks_status ks_method_find(const char *name, const ks_method_ops **out);

/* A new instance with the compiled-in defaults, then the YAML file config_path (NULL: none), then the n_opts
 * "key=value" overrides. A name of parts joined by '+' ("SnapKV+KIVI") creates a composition: one instance per
 * part, linked by `next`, checked for sense (distinct roles in the order SELECT, MERGE, CHANNELS, QUANT; no
 * FullKV part; a MERGE part after a selection that drops rows; no needs_stable_rows part after a selection that
 * evicts while decoding), each error KS_ERR_ARG naming the parts and the fix. A composition's options:
 * "part.key=value" sets a part's knob (part: its name or file, case-insensitive), "key=value" the one part that
 * has the knob; its YAML file holds one mapping per part, keyed by the part's name or file. */
ks_status ks_method_create(ks_method **out, const char *name, const char *config_path, const char *const *opts,
                           int n_opts);
void ks_method_free(ks_method *m); /* accepts NULL; frees the chain of a composition */

/* The name to show and record: "SnapKV", or a composition's "SnapKV+KIVI" (the parts' own capitalisation). */
const char *ks_method_name(const ks_method *m);

/* The resolved options as YAML lines "key: value\n" (every knob; for result files and logs); for a composition one
 * section per part, "snapkv:\n  key: value\n..." keyed by the part's file name, which --method_config reads back.
 * Caller frees. */
ks_status ks_method_options_yaml(const ks_method *m, char **out);

/* ---- called by the forward pass (engine/forward.c) ---------------------------------------------------- */

/* Attaches m to a backend instance holding `model`'s layer range with max_ctx rows per head (its KV store and
 * cache); allocates the state once. A method may be bound again (to another backend) after the previous one is
 * gone. KS_ERR_UNSUPPORTED when the method needs a KV store and the backend has none. */
ks_status ks_method_bind(ks_method *m, const ks_backend_ops *ops, ks_backend *be, const ks_model *model);
/* The same on a KV store and its cache directly (kv may be NULL for a method that never calls it): for tests
 * that fill a store's cache themselves. */
ks_status ks_method_bind_store(ks_method *m, ks_kvstore *kv, ks_kvcache *cache, const ks_model *model);
void ks_method_reset(ks_method *m);              /* a new sequence (drops an abandoned prompt's pending work) */
int ks_method_window(const ks_method *m); /* queries the prompt's last chunk must hold: the most any part needs */
void ks_method_begin_prompt(ks_method *m, int n_prompt); /* before the prompt's last chunk: plan */
/* After the attention of `layer` on a prompt chunk at pos0 with n rows (last: the prompt's last chunk; its
 * compression is handed to the store, which may run it during a later call or ks_method_end_prompt). */
ks_status ks_method_prefill_layer(ks_method *m, int layer, int pos0, int n, int last);
/* After the prompt's last chunk: the store's pending work (compress_flush), the statistics. */
ks_status ks_method_end_prompt(ks_method *m);
ks_status ks_method_decode_layer(ks_method *m, int layer, int qpos);
/* Sparse prefill: B of the PREFILL part's block lists (ks_method_ops.sparse_block); 0 without one (dense). */
int ks_method_sparse_block(const ks_method *m);
/* Before the attention of `layer` on a prompt chunk at pos0 with n rows (last: the prompt's last chunk): *out =
 * the PREFILL part's block list for it, written into l (sized as ks_method_ops.prefill_blocks says), or NULL for
 * dense attention (no PREFILL part, or it chose dense). KS_ERR_ARG naming --chunk when the part needs the whole
 * prompt in one chunk (sparse_whole_prompt) and this chunk is not all of it. */
ks_status ks_method_prefill_blocks(ks_method *m, int layer, int pos0, int n, int last, ks_block_list *l,
                                   const ks_block_list **out);
/* 1 when a part needs the whole prompt in one prefill chunk (ks_method_ops.sparse_whole_prompt: FlexPrefill). */
int ks_method_whole_prompt(const ks_method *m);
/* 1 when the next decode step's hooks do host work (method_ops.decode_on_host of any part). */
int ks_method_decode_on_host(const ks_method *m);
/* 1 when some part has a decode-step hook (ks_method_decode_layer does anything). */
int ks_method_decode_hooked(const ks_method *m);

/* 1 when the method bounds every layer's rows after the prompt by its plan (it compresses, and is not
 * rows_unplanned): a budget-sized cache (engine/forward.h: KS_CACHE_BUDGET) can hold its sequences. */
int ks_method_bounds_rows(const ks_method *m);

/* The rows per (layer, KV head) a budget-sized cache needs for `model`'s layer range (held or not: this needs
 * no binding), prompts of 1 .. max_prompt tokens and max_new generated tokens: the most any layer's plan keeps
 * after the prompt, plus max_new (a QUANT method: its dense_rows). 0 when the method does not bound them
 * (ks_method_bounds_rows). */
int ks_method_kv_rows(const ks_method *m, const ks_model *model, int max_prompt, int max_new);

/* The tokens per (layer, KV head) a packing part (KIVI, ThinK's pruned prefix) may pack for `model`'s layer range,
 * prompts of 1 .. max_prompt tokens and max_new generated tokens: the most the selection's plan keeps (or, without
 * a selection, the plans of the parts that drop rows) plus max_new. 0 when nothing bounds them (KIVI alone packs
 * the whole context; a method that does not bound its rows). */
int ks_method_packed_rows(const ks_method *m, const ks_model *model, int max_prompt, int max_new);

/* Pipeline stages (engine/pipeline.h): the per-model-layer values a method shares across stages (NULL when its
 * layers are independent, ops->finish_stage NULL), n_layers_model of them: a stage copies the previous stage's
 * in before its prompt-end work and hands its own on after it. ks_method_finish_stage, on every stage but the last
 * once the last has filled them all: the held layers finished as the whole model's values say, then their
 * statistics recorded again. */
double *ks_method_stage_state(ks_method *m);
ks_status ks_method_finish_stage(ks_method *m);

/* 1 when the method has dropped rows of this sequence (at prefill or decode): the cache is no longer dense. */
int ks_method_dropped(const ks_method *m);

/* One row per held layer (kv_head -1: over all heads), as recorded after the prompt; returns the count. */
int ks_method_layer_stats(const ks_method *m, ks_layer_stat *out);

/* ---- for method implementations (method.c) ------------------------------------------------------------ */

/* The method's options struct, typed. */
#define KS_METHOD_OPTS(m, type) ((const type *)(m)->opts)

/* The `variant` and `gqa_reduce` knobs most methods share (their options structs hold int fields of these
 * names). variant: original = the method as its authors define it; loom = LOOM-Scope's port where it differs. */
typedef enum ks_variant { KS_VARIANT_ORIGINAL, KS_VARIANT_LOOM } ks_variant;
#define KS_KNOB_VARIANT(type, help)                                                                             \
    {"variant", KS_KNOB_ENUM, offsetof(type, variant), "original", "original|loom", 0, 0, help}
#define KS_KNOB_GQA_REDUCE(type)                                                                                \
    {"gqa_reduce", KS_KNOB_ENUM, offsetof(type, gqa_reduce), "mean", "mean|max|sum", 0, 0,                     \
     "how the query heads sharing a KV head combine their scores before the KV head's one selection"}

/* Window scores of the chunk's last a.n_q rows against all its keys (a.q_row0, a.q_pos0 and a.n_keys are filled
 * from c) into out (Hk, cap); see ks_window_args. */
ks_status ks_method_window_scores(ks_method *m, const ks_method_chunk *c, ks_window_args a, float *out,
                                  ks_window_summary *sum);

/* Records the observation-window mass of each row of the chunk's layer, from `sums` (Hk, cap): window SUM
 * scores of the last W rows (m's own window, as ks_method_window says for m alone) with the group mean
 * (SnapKV's scores with gqa_reduce mean);
 * NULL: computed here. Call before the layer's first compaction. */
ks_status ks_method_observe(ks_method *m, const ks_method_chunk *c, const float *sums);

/* Fills m->keep / m->n_keep for every KV head h of the layer: its last `tail` rows (the window, the recent
 * tokens) and the top k of the rows before them by scores[h * cap + j]. */
void ks_method_keep_top(ks_method *m, int layer, const float *scores, int k, int tail);

/* Fills m->keep / m->n_keep for every KV head of the layer: its first `start` rows and its last `recent` rows
 * (every row when it holds at most start + recent): StreamingLLM's sinks and recent window, CaM's cache. */
void ks_method_keep_ends(ks_method *m, int layer, int start, int recent);

/* Compacts the layer to m->keep / m->n_keep (backend kv_compact; the row_mass and row_scores of every part of m's
 * chain follow, row_norm too at prefill). Right before, when rows go, every part with a before_compact hook (m
 * included) sees the keep lists (not for a CHANNELS or QUANT part's compaction: it releases rows that stay held,
 * packed). At prefill (decode 0) it marks m's layer compressed when rows go. No-op when every row is kept (except
 * to move a layer out of a prefill slot). */
ks_status ks_method_compact(ks_method *m, int layer, int decode);

/* The checks shared by the window methods: a token-count `capacity` (knob cap_name) must exceed window_size;
 * kernel_size (when > 0) must be odd. */
ks_status ks_method_check_window(const ks_method *m, const char *cap_name, const ks_budget *capacity, int window,
                                 int kernel);

/* SnapKV's selection on the chunk's layer (PyramidKV reuses it with its per-layer k): window SUM scores of the
 * last W queries, pooled over the past rows, top-k past rows plus the window, compacted. */
ks_status ks_snapkv_compress(ks_method *m, const ks_method_chunk *c, int W, int k, int kernel, int pooling,
                             int gqa_reduce);

#endif
