/* method.c — the method registry, instances (options, binding, per-sequence state), the hooks the forward pass
 * calls, and the selection/compaction helpers every method shares. */
#include "methods/method.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "methods/knobs.h"
#include "methods/select.h"

const ks_method_ops *const ks_methods[] = {&ks_method_fullkv,     &ks_method_h2o,       &ks_method_streamingllm,
                                           &ks_method_snapkv,     &ks_method_l2compress, &ks_method_pyramidkv,
                                           &ks_method_cakekv,     &ks_method_cam,        NULL};

ks_status ks_method_find(const char *name, const ks_method_ops **out) {
    if (!strcasecmp(name, "none")) name = ks_method_fullkv.name;
    for (const ks_method_ops *const *o = ks_methods; *o; o++)
        if (!strcasecmp((*o)->name, name)) {
            *out = *o;
            return KS_OK;
        }
    char names[256];
    size_t n = 0;
    for (const ks_method_ops *const *o = ks_methods; *o; o++)
        n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", n ? ", " : "", (*o)->name);
    return ks_fail(KS_ERR_ARG, "--acceleration %s: unknown method (known: %s; case does not matter)", name, names);
}

ks_status ks_method_create(ks_method **out, const char *name, const char *config_path, const char *const *opts,
                           int n_opts) {
    const ks_method_ops *ops;
    KS_TRY(ks_method_find(name, &ops));
    ks_method *m = ks_calloc(1, sizeof *m, "KV method");
    if (!m) return KS_ERR_NOMEM;
    ks_status st = KS_OK;
    m->ops = ops;
    m->opts = ks_calloc(1, ops->opts_size ? ops->opts_size : 1, "KV method options");
    const char *from = config_path ? config_path : "defaults", *plus = n_opts ? " + --method_opt" : "";
    m->source = ks_malloc(strlen(from) + strlen(plus) + 1, "KV method options source");
    if (!m->opts || !m->source) {
        st = KS_ERR_NOMEM;
        goto fail;
    }
    strcat(strcpy(m->source, from), plus);
    KS_TRY_GOTO(st, ks_knobs_defaults(ops, m->opts), fail);
    if (config_path) KS_TRY_GOTO(st, ks_knobs_load_yaml(ops, m->opts, config_path), fail);
    for (int i = 0; i < n_opts; i++) KS_TRY_GOTO(st, ks_knobs_set_kv(ops, m->opts, opts[i], "--method_opt"), fail);
    if (ops->check) KS_TRY_GOTO(st, ops->check(m), fail);
    *out = m;
    return KS_OK;
fail:
    ks_method_free(m);
    return st;
}

/* Frees what ks_method_bind allocated. */
static void unbind(ks_method *m) {
    free(m->scores);
    free(m->pooled);
    free(m->keep);
    free(m->n_keep);
    free(m->row_mass);
    free(m->row_scores);
    free(m->row_norm);
    free(m->layer);
    free(m->merges);
    free(m->n_merges);
    m->merges = NULL;
    m->n_merges = NULL;
    m->scores = m->pooled = m->row_mass = m->row_scores = m->row_norm = NULL;
    m->keep = m->n_keep = NULL;
    m->layer = NULL;
    m->kv = NULL;
    m->cache = NULL;
}

void ks_method_free(ks_method *m) {
    if (!m) return;
    unbind(m);
    free(m->opts);
    free(m->source);
    free(m);
}

ks_status ks_method_options_yaml(const ks_method *m, char **out) { return ks_knobs_to_yaml(m->ops, m->opts, out); }

ks_status ks_method_bind(ks_method *m, const ks_backend_ops *ops, ks_backend *be, const ks_model *model) {
    ks_kvstore *kv = ops->kvstore(be);
    if (!kv && (m->ops->after_prefill_layer || m->ops->prefill_chunk || m->ops->on_decode_step))
        return ks_fail(KS_ERR_UNSUPPORTED, "--acceleration %s: the %s backend has no KV store for the methods",
                       m->ops->name, ops->name);
    return ks_method_bind_store(m, kv, ops->kvcache(be), model);
}

ks_status ks_method_bind_store(ks_method *m, ks_kvstore *kv, ks_kvcache *c, const ks_model *model) {
    unbind(m);
    if (model->cfg.n_layers > KS_METHOD_MAX_LAYERS)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: %d layers; the KV methods handle at most %d", model->source,
                       model->cfg.n_layers, KS_METHOD_MAX_LAYERS);
    int compresses = m->ops->after_prefill_layer != NULL;
    m->kv = kv;
    m->cache = c;
    KS_ASSERT(c->first_layer == model->first_layer && c->n_layers == model->last_layer - model->first_layer);
    m->first_layer = model->first_layer;
    m->last_layer = model->last_layer;
    m->n_layers_model = model->cfg.n_layers;
    m->H = model->cfg.n_heads;
    m->Hk = c->n_kv_heads;
    m->d = c->head_dim;
    m->cap = c->cap;
    m->score_rows = m->ops->row_scores == KS_ROW_SCORES_QUERY_HEAD ? m->H : m->Hk;
    size_t row = (size_t)m->Hk * m->cap, rows = (size_t)c->n_layers * row;
    size_t score_floats = (size_t)c->n_layers * m->score_rows * m->cap;
    m->layer = ks_calloc((size_t)c->n_layers + 1, sizeof *m->layer, "KV method layer records");
    m->scores = ks_malloc(sizeof(float) * row, "KV method scores");
    m->pooled = ks_malloc(sizeof(float) * row, "KV method pooled scores");
    m->keep = ks_malloc(sizeof(int32_t) * row, "KV method keep lists");
    m->n_keep = ks_malloc(sizeof(int32_t) * m->Hk, "KV method keep counts");
    if (compresses) m->row_mass = ks_malloc(sizeof(float) * (rows ? rows : 1), "KV method row masses");
    if (m->ops->row_scores)
        m->row_scores = ks_malloc(sizeof(float) * (score_floats ? score_floats : 1), "KV method row scores");
    if (kv) m->row_norm = ks_malloc(sizeof(float) * (rows ? rows : 1), "KV method key norms");
    int merges = m->ops->role == KS_ROLE_MERGE;
    if (merges) {
        m->merges = ks_malloc(sizeof(ks_merge) * (row ? row : 1), "KV method merge lists");
        m->n_merges = ks_malloc(sizeof(int32_t) * m->Hk, "KV method merge counts");
    }
    if (!m->layer || !m->scores || !m->pooled || !m->keep || !m->n_keep || (compresses && !m->row_mass) ||
        (m->ops->row_scores && !m->row_scores) || (kv && !m->row_norm) || (merges && (!m->merges || !m->n_merges))) {
        unbind(m);
        return KS_ERR_NOMEM;
    }
    ks_status st = m->ops->cache_scores ? kv->ops->row_scores_reserve(kv) : KS_OK;
    if (st != KS_OK) {
        unbind(m);
        return st;
    }
    /* work another method handed the store and abandoned would run with its context */
    ks_method_reset(m);
    return KS_OK;
}

void ks_method_reset(ks_method *m) {
    m->n_prompt = 0;
    memset(m->model_state, 0, sizeof m->model_state);
    if (m->kv) m->kv->ops->compress_cancel(m->kv); /* a prompt abandoned after an error: its work is dropped */
    if (m->layer) memset(m->layer, 0, sizeof *m->layer * (m->last_layer - m->first_layer));
}

int ks_method_window(const ks_method *m) {
    int w = m->ops->window ? m->ops->window(m) : 0;
    return w > 0 ? w : m->ops->after_prefill_layer ? KS_METHOD_STAT_WINDOW : 0;
}

void ks_method_begin_prompt(ks_method *m, int n_prompt) {
    m->n_prompt = n_prompt;
    for (int layer = m->first_layer; layer < m->last_layer; layer++)
        *ks_method_layer_at(m, layer) = (ks_method_layer){.budget = n_prompt};
    if (m->ops->plan) m->ops->plan(m);
}

/* A layer still in a prefill slot of a budget-sized cache after its compression kept every row: a compaction
 * that keeps them all moves it to its own storage (KS_ERR_RANGE there if they do not fit). */
static ks_status settle(ks_method *m, int layer) {
    if (ks_kvcache_slot(m->cache, layer) < 0) return KS_OK;
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    for (int h = 0; h < m->Hk; h++) {
        int32_t *keep = m->keep + (size_t)h * m->cap;
        for (int j = 0; j < len[h]; j++) keep[j] = j;
        m->n_keep[h] = len[h];
    }
    return m->kv->ops->kv_compact(m->kv, layer, m->keep, m->n_keep, m->cap);
}

/* A layer's prompt-end work (a ks_kvstore_work on the method): its key norms (before any row of it moves), then
 * the method's compression, over the prompt's last chunk. */
static ks_status prompt_end_work(void *ctx, int layer) {
    ks_method *m = ctx;
    ks_method_chunk c = m->last_chunk;
    c.layer = layer;
    KS_TRY(m->kv->ops->key_norms(m->kv, layer, ks_method_row_norm(m, layer), m->cap));
    if (m->ops->after_prefill_layer) KS_TRY(m->ops->after_prefill_layer(m, &c));
    return settle(m, layer);
}

ks_status ks_method_prefill_layer(ks_method *m, int layer, int pos0, int n, int last) {
    ks_method_chunk c = {.layer = layer, .pos0 = pos0, .n = n};
    KS_ASSERT(layer >= m->first_layer && layer < m->last_layer);
    /* per-chunk scoring reads this chunk's queries: before the layer's work is handed over */
    if (m->ops->prefill_chunk) KS_TRY(m->ops->prefill_chunk(m, &c));
    if (!last || !m->kv) return KS_OK;
    m->last_chunk = c;
    int w = ks_method_window(m) < n ? ks_method_window(m) : n; /* the rows window_scores may read */
    return m->kv->ops->compress_layer(m->kv, layer, n - w, w, prompt_end_work, m);
}

int ks_method_decode_on_host(const ks_method *m) {
    if (!m->ops->decode_on_host) return 0;
    m->kv->ops->cache(m->kv); /* the lengths current: a store may apply the last step's evictions late */
    return m->ops->decode_on_host(m);
}

ks_status ks_method_decode_layer(ks_method *m, int layer, int qpos) {
    if (!m->ops->on_decode_step) return KS_OK;
    return m->ops->on_decode_step(m, layer, qpos);
}

/* Each held layer's statistics from the rows it holds now. */
static void record_stats(ks_method *m) {
    for (int layer = m->first_layer; layer < m->last_layer; layer++) {
        ks_method_layer *ly = ks_method_layer_at(m, layer);
        const int32_t *len = ks_kvcache_len(m->cache, layer);
        const float *norm_rows = m->row_norm ? ks_method_row_norm(m, layer) : NULL;
        const float *mass_rows = ly->mass_total > 0 ? ks_method_row_mass(m, layer) : NULL;
        /* Per-head partials combined in head order: the same statistics whatever the thread count. */
        double mass = 0, nsum = 0, p_mass[KS_METHOD_MAX_KV_HEADS], p_nsum[KS_METHOD_MAX_KV_HEADS];
        float nmax = 0, p_nmax[KS_METHOD_MAX_KV_HEADS];
        int64_t rows = 0;
        ly->kept = 0;
        KS_ASSERT(m->Hk <= KS_METHOD_MAX_KV_HEADS);
#pragma omp parallel for if (len[0] > KS_METHOD_PARALLEL_ROWS)
        for (int h = 0; h < m->Hk; h++) {
            const float *norm = norm_rows ? norm_rows + (size_t)h * m->cap : NULL;
            const float *rm = mass_rows ? mass_rows + (size_t)h * m->cap : NULL;
            double ms = 0, ns = 0;
            float nm = 0;
            for (int j = 0; norm && j < len[h]; j++) ns += norm[j], nm = norm[j] > nm ? norm[j] : nm;
            for (int j = 0; rm && j < len[h]; j++) ms += rm[j];
            p_mass[h] = ms, p_nsum[h] = ns, p_nmax[h] = nm;
        }
        for (int h = 0; h < m->Hk; h++) {
            ly->kept = len[h] > ly->kept ? len[h] : ly->kept;
            rows += len[h];
            mass += p_mass[h], nsum += p_nsum[h], nmax = p_nmax[h] > nmax ? p_nmax[h] : nmax;
        }
        ly->key_norm_mean = rows ? (float)(nsum / rows) : 0;
        ly->key_norm_max = nmax;
        ly->mass_kept = ly->mass_total > 0 ? (float)(mass / ly->mass_total) : 1.0f;
    }
}

ks_status ks_method_end_prompt(ks_method *m) {
    if (m->kv) KS_TRY(m->kv->ops->compress_flush(m->kv));
    record_stats(m);
    return KS_OK;
}

double *ks_method_stage_state(ks_method *m) { return m->ops->finish_stage ? m->model_state : NULL; }

ks_status ks_method_finish_stage(ks_method *m) {
    KS_TRY(m->ops->finish_stage(m));
    if (m->kv) KS_TRY(m->kv->ops->compress_flush(m->kv));
    record_stats(m);
    return KS_OK;
}

int ks_method_bounds_rows(const ks_method *m) { return m->ops->after_prefill_layer && !m->ops->rows_unplanned; }

int ks_method_kv_rows(const ks_method *m, const ks_model *model, int max_prompt, int max_new) {
    if (!ks_method_bounds_rows(m) || max_prompt < 1) return 0;
    ks_method t = *m; /* plan() reads the options, the layer range and n_prompt, and writes t.layer */
    t.first_layer = model->first_layer;
    t.last_layer = model->last_layer;
    t.n_layers_model = model->cfg.n_layers;
    t.layer = ks_calloc((size_t)(t.last_layer - t.first_layer) + 1, sizeof *t.layer, "KV method plan");
    if (!t.layer) return 0;
    int most = 0;
    for (int n = 1; n <= max_prompt; n++) { /* budgets need not grow with the prompt (PyramidKV's schedule) */
        t.n_prompt = n;
        for (int layer = t.first_layer; layer < t.last_layer; layer++)
            *ks_method_layer_at(&t, layer) = (ks_method_layer){.budget = n};
        if (t.ops->plan) t.ops->plan(&t);
        for (int layer = t.first_layer; layer < t.last_layer; layer++) {
            int budget = ks_method_layer_at(&t, layer)->budget, rows = budget < n ? budget : n;
            most = rows > most ? rows : most;
        }
    }
    free(t.layer);
    return most + max_new;
}

int ks_method_dropped(const ks_method *m) {
    if (m->kv) m->kv->ops->cache(m->kv); /* the positions current (a store may apply evictions late) */
    /* decode_evict leaves no mark but the positions */
    for (int layer = m->first_layer; m->layer && layer < m->last_layer; layer++) {
        const int32_t *len = ks_kvcache_len(m->cache, layer);
        if (ks_method_layer_at(m, layer)->compressed || !ks_kvcache_is_dense(m->cache, layer, len[0]))
            return 1;
    }
    return 0;
}

int ks_method_layer_stats(const ks_method *m, ks_layer_stat *out) {
    int rows = 0;
    for (int layer = m->first_layer; layer < m->last_layer; layer++) {
        const ks_method_layer *ly = ks_method_layer_at(m, layer);
        out[rows++] = (ks_layer_stat){.layer = layer,
                                 .kv_head = -1,
                                 .budget = ly->budget,
                                 .kept = ly->kept,
                                 .attn_mass_kept = ly->mass_kept,
                                 .key_norm_mean = ly->key_norm_mean,
                                 .key_norm_max = ly->key_norm_max,
                                 .sparse_density = 1.0f,
                                 .quant_error = 0.0f,
                                 .merges_prompt = ly->merges_prompt,
                                 .merges_decode = ly->merges_decode,
                                 .merge_prob_mean = ly->leaving ? (float)(ly->prob_sum / ly->leaving) : 0.0f,
                                 .merge_dv_rel = ly->dv_rel};
    }
    return rows;
}

/* ---- helpers for the methods ------------------------------------------------------------------------ */

ks_status ks_method_window_scores(ks_method *m, const ks_method_chunk *c, ks_window_args a, float *out,
                                  ks_window_summary *sum) {
    KS_ASSERT(a.n_q > 0 && a.n_q <= c->n);
    a.q_row0 = c->n - a.n_q;
    a.q_pos0 = c->pos0;
    a.n_keys = c->pos0 + c->n;
    return m->kv->ops->window_scores(m->kv, c->layer, &a, out, m->cap, sum);
}

ks_status ks_method_observe(ks_method *m, const ks_method_chunk *c, const float *sums) {
    float *mass = ks_method_row_mass(m, c->layer);
    int n_keys = c->pos0 + c->n;
    if (sums) {
#pragma omp parallel for if (n_keys > KS_METHOD_PARALLEL_ROWS)
        for (int h = 0; h < m->Hk; h++)
            memcpy(mass + (size_t)h * m->cap, sums + (size_t)h * m->cap, sizeof(float) * n_keys);
    } else {
        int w = ks_method_window(m);
        ks_window_args a = {.n_q = w < c->n ? w : c->n, .stat = KS_SCORE_SUM, .reduce = KS_GQA_MEAN};
        KS_TRY(ks_method_window_scores(m, c, a, mass, NULL));
    }
    /* Per-head partial sums, added in head order: the same total whatever the thread count. */
    double total = 0, part[KS_METHOD_MAX_KV_HEADS];
    KS_ASSERT(m->Hk <= KS_METHOD_MAX_KV_HEADS);
#pragma omp parallel for if (n_keys > KS_METHOD_PARALLEL_ROWS)
    for (int h = 0; h < m->Hk; h++) {
        double t = 0;
        for (int j = 0; j < n_keys; j++) t += mass[(size_t)h * m->cap + j];
        part[h] = t;
    }
    for (int h = 0; h < m->Hk; h++) total += part[h];
    ks_method_layer_at(m, c->layer)->mass_total = (float)total;
    return KS_OK;
}

void ks_method_keep_top(ks_method *m, int layer, const float *scores, int k, int tail) {
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    /* Threads once the layer's lists hold more than KS_METHOD_PARALLEL_ROWS rows in all: a radix select costs
     * ~20 ns per row, so 8 heads of 2K rows (a decode-time eviction, CakeKV's final shrink of each layer) take
     * ~0.3 ms on one thread against a few microseconds for a thread team. */
#pragma omp parallel for if ((int64_t)len[0] * m->Hk > KS_METHOD_PARALLEL_ROWS)
    for (int h = 0; h < m->Hk; h++) {
        int sel = len[h] - tail > 0 ? len[h] - tail : 0;
        int32_t *keep = m->keep + (size_t)h * m->cap;
        int n = ks_select_topk(keep, scores + (size_t)h * m->cap, sel, k);
        for (int j = sel; j < len[h]; j++) keep[n++] = j;
        m->n_keep[h] = n;
    }
}

void ks_method_keep_ends(ks_method *m, int layer, int start, int recent) {
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    for (int h = 0; h < m->Hk; h++) {
        int32_t *keep = m->keep + (size_t)h * m->cap;
        int n = 0, tail = len[h] - recent > start ? len[h] - recent : start;
        for (int j = 0; j < start && j < len[h]; j++) keep[n++] = j;
        for (int j = tail; j < len[h]; j++) keep[n++] = j;
        m->n_keep[h] = n;
    }
}

/* Moves the rows of one layer's array of per_head rows per KV head (cap floats each) as the KV heads' keep lists
 * say. */
static void compact_rows(const ks_method *m, float *rows, int per_head) {
#pragma omp parallel for if (m->n_keep[0] > KS_METHOD_PARALLEL_ROWS)
    for (int r = 0; r < m->Hk * per_head; r++) {
        float *x = rows + (size_t)r * m->cap;
        int h = r / per_head;
        const int32_t *keep = m->keep + (size_t)h * m->cap;
        for (int i = 0; i < m->n_keep[h]; i++) x[i] = x[keep[i]];
    }
}

ks_status ks_method_compact(ks_method *m, int layer, int decode) {
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    int64_t dropped = 0;
    for (int h = 0; h < m->Hk; h++) dropped += len[h] - m->n_keep[h];
    if (!dropped && ks_kvcache_slot(m->cache, layer) < 0) return KS_OK; /* keeping every row; in a slot: settle() */
    if (dropped && m->ops->before_compact)
        KS_TRY(m->ops->before_compact(m, layer, m->keep, m->n_keep, m->cap, decode));
    compact_rows(m, ks_method_row_mass(m, layer), 1);
    if (m->row_scores) compact_rows(m, ks_method_row_scores(m, layer), m->score_rows / m->Hk);
    if (m->row_norm && !decode) /* decode eviction: the statistics are taken */
        compact_rows(m, ks_method_row_norm(m, layer), 1);
    KS_TRY(m->kv->ops->kv_compact(m->kv, layer, m->keep, m->n_keep, m->cap));
    if (!decode && dropped) ks_method_layer_at(m, layer)->compressed = 1; /* decode evictions show in the positions */
    return KS_OK;
}

ks_status ks_method_check_window(const ks_method *m, const char *cap_name, const ks_budget *capacity, int window,
                                 int kernel) {
    if (kernel > 0 && kernel % 2 == 0)
        return ks_fail(KS_ERR_ARG, "%s options (%s): kernel_size %d must be odd", m->ops->name, m->source, kernel);
    if (!capacity->is_ratio && capacity->tokens <= window)
        return ks_fail(KS_ERR_ARG, "%s options (%s): %s %d must exceed window_size %d", m->ops->name, m->source,
                       cap_name, capacity->tokens, window);
    return KS_OK;
}
