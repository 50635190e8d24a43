/* streamingllm.c — StreamingLLM, attention sinks (arXiv 2309.17453).
 *
 * variant original (streaming-llm's StartRecentKVCache as its evaluation loop drives it): keep the first
 * start_size tokens (the sinks) and the last recent_size tokens; after the prompt and after every decode step
 * the middle is evicted, so the cache never holds more than start + recent rows after a step. The authors
 * cache keys before RoPE and re-rotate them with positions inside the cache; kvscope (like LOOM-Scope and
 * KVCache-Factory) stores roped keys at their original positions, so there is no re-rotation.
 *
 * variant loom (LOOM-Scope): for prompts of at least C = max_capacity_prompt tokens keep tokens [0, C - W) and
 * the last W, once after prefill; no decode-time eviction. With W = 32 and C = 2048 the "sink" is 2016 tokens:
 * a prefix + recent truncation (KVCache-Factory sets W = C - 4 to get the paper's 4 sinks). */
#include <stddef.h>

#include "methods/budget.h"
#include "methods/method.h"

typedef struct streamingllm_opts {
    int variant;
    ks_budget start_size, recent_size; /* original */
    int window_size;                   /* loom */
    ks_budget max_capacity_prompt;     /* loom */
} streamingllm_opts;

static const ks_knob knobs[] = {
    KS_KNOB_VARIANT(streamingllm_opts, "original: start + recent tokens, evicting while decoding; loom: LOOM's "
                                       "one-shot [0, C - W) + last W"),
    {"start_size", KS_KNOB_BUDGET, offsetof(streamingllm_opts, start_size), "4", NULL, 0, 0,
     "original: attention-sink tokens kept from the start of the sequence"},
    {"recent_size", KS_KNOB_BUDGET, offsetof(streamingllm_opts, recent_size), "2000", NULL, 0, 0,
     "original: most recent tokens kept (tokens, or a ratio of the prompt)"},
    {"window_size", KS_KNOB_INT, offsetof(streamingllm_opts, window_size), "32", NULL, 1, 1e6,
     "loom: W, the last W prompt tokens kept"},
    {"max_capacity_prompt", KS_KNOB_BUDGET, offsetof(streamingllm_opts, max_capacity_prompt), "2048", NULL, 1, 0,
     "loom: C, tokens kept per KV head after prefill: the first C - W and the last W"},
    {0},
};

static int loom(const ks_method *m) { return KS_METHOD_OPTS(m, streamingllm_opts)->variant == KS_VARIANT_LOOM; }

static ks_status streamingllm_check(const ks_method *m) {
    const streamingllm_opts *o = KS_METHOD_OPTS(m, streamingllm_opts);
    return loom(m) ? ks_method_check_window(m, "max_capacity_prompt", &o->max_capacity_prompt, o->window_size, 0)
                   : KS_OK;
}

static int streamingllm_window(const ks_method *m) {
    return loom(m) ? KS_METHOD_OPTS(m, streamingllm_opts)->window_size : 0;
}

/* The rows kept: the first `start` and the last `recent` (original), or C - W and W (loom). */
static void sizes(const ks_method *m, int *start, int *recent) {
    const streamingllm_opts *o = KS_METHOD_OPTS(m, streamingllm_opts);
    if (loom(m)) {
        *recent = o->window_size;
        *start = ks_budget_tokens(&o->max_capacity_prompt, m->n_prompt, 0) - o->window_size;
    } else {
        *start = ks_budget_tokens(&o->start_size, m->n_prompt, 0);
        *recent = ks_budget_tokens(&o->recent_size, m->n_prompt, 0);
    }
}

static void streamingllm_plan(ks_method *m) {
    int start, recent;
    sizes(m, &start, &recent);
    for (int layer = m->first_layer; layer < m->last_layer; layer++)
        ks_method_layer_at(m, layer)->budget = start + recent;
}

static ks_status streamingllm_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    int start, recent, L = m->n_prompt;
    sizes(m, &start, &recent);
    if (loom(m) ? L < start + recent : L <= start + recent) return KS_OK;
    KS_TRY(ks_method_observe(m, c, NULL));
    ks_method_keep_ends(m, c->layer, start, recent);
    return ks_method_compact(m, c->layer, 0);
}

/* Past start + recent rows, the oldest row after the sinks goes (on the backend). */
static ks_status streamingllm_on_decode_step(ks_method *m, int layer, int qpos) {
    if (loom(m)) return KS_OK;
    int start, recent;
    sizes(m, &start, &recent);
    ks_evict_args a = {.rule = KS_EVICT_SINK, .keep = start + recent, .head = start, .tail = recent};
    return m->kv->ops->decode_evict(m->kv, layer, qpos, &a);
}

const ks_method_ops ks_method_streamingllm = {
    .name = "StreamingLLM",
    .file = "streamingllm",
    .summary = "attention sinks: the first tokens plus a rolling window of the most recent ones",
    .knobs = knobs,
    .opts_size = sizeof(streamingllm_opts),
    .check = streamingllm_check,
    .window = streamingllm_window,
    .plan = streamingllm_plan,
    .after_prefill_layer = streamingllm_after_prefill_layer,
    .on_decode_step = streamingllm_on_decode_step,
};
