/* method.c — the method registry, instances (binding, per-sequence state; creation and options in chain.c), the
 * hooks the forward pass calls, run over a composition's parts, and the selection/compaction helpers every
 * method shares. */
#include "methods/method.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "methods/select.h"

const ks_method_ops *const ks_methods[] = {&ks_method_fullkv,     &ks_method_h2o,       &ks_method_streamingllm,
                                           &ks_method_snapkv,     &ks_method_l2compress, &ks_method_pyramidkv,
                                           &ks_method_cakekv,     &ks_method_cam,        &ks_method_think,
                                           &ks_method_kivi,       &ks_method_xattention,
                                           &ks_method_flexprefill, NULL};

ks_status ks_method_find(const char *name, const ks_method_ops **out) {
    if (!strcasecmp(name, "none")) name = ks_method_fullkv.name;
    for (const ks_method_ops *const *o = ks_methods; *o; o++)
        if (!strcasecmp((*o)->name, name)) {
            *out = *o;
            return KS_OK;
        }
    static const char *const roles[] = {"sparse prefill", "selection", "merging", "channels", "quantization"};
    char names[512];
    size_t n = 0;
    for (int role = KS_ROLE_PREFILL; role <= KS_ROLE_QUANT; role++) { /* "A, B (selection); C (quantization)" */
        size_t n0 = n;
        for (const ks_method_ops *const *o = ks_methods; *o; o++)
            if ((int)(*o)->role == role && n < sizeof names)
                n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", n == n0 ? (n ? "; " : "") : ", ",
                                      (*o)->name);
        if (n > n0 && n < sizeof names)
            n += (size_t)snprintf(names + n, sizeof names - n, " (%s)", roles[role - KS_ROLE_PREFILL]);
    }
    return ks_fail(KS_ERR_ARG, "--acceleration %s: unknown method (known: %s; case does not matter; parts of "
                   "different roles compose as A+B)", name, names);
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
    free(m->chan_scores);
    free(m->chan_keep);
    free(m->n_chan);
    free(m->sparse);
    free(m->state);
    m->sparse = NULL;
    m->state = NULL;
    m->merges = NULL;
    m->n_merges = NULL;
    m->chan_scores = NULL;
    m->chan_keep = m->n_chan = NULL;
    m->scores = m->pooled = m->row_mass = m->row_scores = m->row_norm = NULL;
    m->keep = m->n_keep = NULL;
    m->layer = NULL;
    m->kv = NULL;
    m->cache = NULL;
}

void ks_method_free(ks_method *m) {
    while (m) {
        ks_method *next = m->next;
        unbind(m);
        free(m->opts);
        free(m->source);
        free(m);
        m = next;
    }
}

/* The part whose per-layer record is the statistics' row and that takes the key norms: the first part that
 * acts on the cache (a PREFILL part only computes the prompt's attention), or the head when none does. */
static ks_method *stat_part(const ks_method *m) {
    for (const ks_method *p = m; p; p = p->next)
        if (p->ops->role != KS_ROLE_PREFILL) return (ks_method *)p;
    return (ks_method *)m;
}

ks_status ks_method_bind(ks_method *m, const ks_backend_ops *ops, ks_backend *be, const ks_model *model) {
    ks_kvstore *kv = ops->kvstore(be);
    for (const ks_method *p = m; p && !kv; p = p->next)
        if (p->ops->after_prefill_layer || p->ops->prefill_chunk || p->ops->on_decode_step || p->ops->prefill_blocks)
            return ks_fail(KS_ERR_UNSUPPORTED, "--acceleration %s: the %s backend has no KV store for the methods",
                           m->name, ops->name);
    return ks_method_bind_store(m, kv, ops->kvcache(be), model);
}

/* One part bound: its scratch and per-row arrays (row_norm on the statistics' part only: a layer's key norms are
 * taken once). */
static ks_status bind_part(ks_method *m, ks_kvstore *kv, ks_kvcache *c, const ks_model *model) {
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
    int norms = kv && stat_part(m->head) == m;
    if (norms) m->row_norm = ks_malloc(sizeof(float) * (rows ? rows : 1), "KV method key norms");
    int merges = m->ops->role == KS_ROLE_MERGE;
    if (merges) {
        m->merges = ks_malloc(sizeof(ks_merge) * (row ? row : 1), "KV method merge lists");
        m->n_merges = ks_malloc(sizeof(int32_t) * m->Hk, "KV method merge counts");
    }
    int channels = m->ops->role == KS_ROLE_CHANNELS;
    if (channels) {
        m->chan_scores = ks_malloc(sizeof(float) * (m->H + m->Hk) * m->d, "KV method channel scores");
        m->chan_keep = ks_malloc(sizeof(int32_t) * m->Hk * m->d, "KV method channel lists");
        m->n_chan = ks_malloc(sizeof(int32_t) * m->Hk, "KV method channel counts");
    }
    int sparse = m->ops->role == KS_ROLE_PREFILL;
    if (sparse) m->sparse = ks_calloc((size_t)c->n_layers + 1, sizeof *m->sparse, "sparse prefill records");
    if (!m->layer || !m->scores || !m->pooled || !m->keep || !m->n_keep || (compresses && !m->row_mass) ||
        (sparse && !m->sparse) ||
        (m->ops->row_scores && !m->row_scores) || (norms && !m->row_norm) || (merges && (!m->merges || !m->n_merges)) ||
        (channels && (!m->chan_scores || !m->chan_keep || !m->n_chan))) {
        unbind(m);
        return KS_ERR_NOMEM;
    }
    ks_status st = m->ops->cache_scores ? kv->ops->row_scores_reserve(kv) : KS_OK;
    if (st == KS_OK && m->ops->bind) st = m->ops->bind(m);
    if (st != KS_OK) unbind(m);
    return st;
}

ks_status ks_method_bind_store(ks_method *m, ks_kvstore *kv, ks_kvcache *c, const ks_model *model) {
    for (ks_method *p = m; p; p = p->next) KS_TRY(bind_part(p, kv, c, model));
    /* work another method handed the store and abandoned would run with its context */
    ks_method_reset(m);
    return KS_OK;
}

void ks_method_reset(ks_method *m) {
    for (ks_method *p = m; p; p = p->next) {
        p->n_prompt = 0;
        memset(p->model_state, 0, sizeof p->model_state);
        if (p->layer) memset(p->layer, 0, sizeof *p->layer * (p->last_layer - p->first_layer));
        if (p->sparse) memset(p->sparse, 0, sizeof *p->sparse * (p->last_layer - p->first_layer));
    }
    if (m->kv) m->kv->ops->compress_cancel(m->kv); /* a prompt abandoned after an error: its work is dropped */
}

/* The prompt queries one part scores after prefill (the statistics' window for a part that compresses). */
static int part_window(const ks_method *m) {
    int w = m->ops->window ? m->ops->window(m) : 0;
    return w > 0 ? w : m->ops->after_prefill_layer ? KS_METHOD_STAT_WINDOW : 0;
}

/* The statistics' part's window (its statistics' window when it compresses without one), or the most another
 * part scores: a part that scores prompt queries says how many through ops->window. */
int ks_method_window(const ks_method *m) {
    const ks_method *s = stat_part(m);
    int most = part_window(s);
    for (const ks_method *p = m; p; p = p->next) {
        int w = p != s && p->ops->window ? p->ops->window(p) : 0;
        most = w > most ? w : most;
    }
    return most;
}

void ks_method_begin_prompt(ks_method *m, int n_prompt) {
    for (ks_method *p = m; p; p = p->next) {
        p->n_prompt = n_prompt;
        for (int layer = p->first_layer; layer < p->last_layer; layer++)
            *ks_method_layer_at(p, layer) = (ks_method_layer){.budget = n_prompt};
        if (p->ops->plan) p->ops->plan(p);
    }
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

/* A layer's prompt-end work (a ks_kvstore_work on the head): its key norms (before any row of it moves; into the
 * statistics' part's row_norm), then each
 * part's work over the prompt's last chunk in order (the selection's first; its compaction calls the parts'
 * before_compact), then the layer out of a prefill slot. */
static ks_status prompt_end_work(void *ctx, int layer) {
    ks_method *m = ctx;
    ks_method_chunk c = m->last_chunk;
    c.layer = layer;
    KS_TRY(m->kv->ops->key_norms(m->kv, layer, ks_method_row_norm(stat_part(m), layer), m->cap));
    for (ks_method *p = m; p; p = p->next)
        if (p->ops->after_prefill_layer) KS_TRY(p->ops->after_prefill_layer(p, &c));
    return settle(m, layer);
}

ks_status ks_method_prefill_layer(ks_method *m, int layer, int pos0, int n, int last) {
    ks_method_chunk c = {.layer = layer, .pos0 = pos0, .n = n};
    KS_ASSERT(layer >= m->first_layer && layer < m->last_layer);
    /* per-chunk scoring reads this chunk's queries: before the layer's work is handed over */
    for (ks_method *p = m; p; p = p->next)
        if (p->ops->prefill_chunk) KS_TRY(p->ops->prefill_chunk(p, &c));
    if (!last || !m->kv) return KS_OK;
    for (ks_method *p = m; p; p = p->next) p->last_chunk = c;
    int w = ks_method_window(m) < n ? ks_method_window(m) : n; /* the rows window_scores may read */
    return m->kv->ops->compress_layer(m->kv, layer, n - w, w, prompt_end_work, m);
}

int ks_method_sparse_block(const ks_method *m) {
    for (const ks_method *p = m; p; p = p->next)
        if (p->ops->role == KS_ROLE_PREFILL) return p->ops->sparse_block(p);
    return 0;
}

ks_status ks_method_prefill_blocks(ks_method *m, int layer, int pos0, int n, int last, ks_block_list *l,
                                   const ks_block_list **out) {
    *out = NULL;
    KS_ASSERT(layer >= m->first_layer && layer < m->last_layer);
    ks_method *p = m;
    while (p && p->ops->role != KS_ROLE_PREFILL) p = p->next;
    if (!p) return KS_OK;
    if (p->ops->sparse_whole_prompt && !(pos0 == 0 && last))
        return ks_fail(KS_ERR_ARG, "--acceleration %s: %s chooses each layer's key blocks from the prompt's last "
                       "block of queries, so the whole prompt must be one prefill chunk, not tokens %d .. %d of it: "
                       "raise --chunk to the prompt's length", m->name, p->ops->name, pos0, pos0 + n - 1);
    ks_method_chunk c = {.layer = layer, .pos0 = pos0, .n = n};
    return p->ops->prefill_blocks(p, &c, last, l, out);
}

int ks_method_whole_prompt(const ks_method *m) {
    for (const ks_method *p = m; p; p = p->next)
        if (p->ops->sparse_whole_prompt) return 1;
    return 0;
}

int ks_method_decode_on_host(const ks_method *m) {
    int host = 0;
    for (const ks_method *p = m; p; p = p->next) host |= p->ops->decode_on_host != NULL;
    if (!host) return 0;
    m->kv->ops->cache(m->kv); /* the lengths current: a store may apply the last step's evictions late */
    for (const ks_method *p = m; p; p = p->next)
        if (p->ops->decode_on_host && p->ops->decode_on_host(p)) return 1;
    return 0;
}

int ks_method_decode_hooked(const ks_method *m) {
    for (const ks_method *p = m; p; p = p->next)
        if (p->ops->on_decode_step) return 1;
    return 0;
}

ks_status ks_method_decode_layer(ks_method *m, int layer, int qpos) {
    for (ks_method *p = m; p; p = p->next)
        if (p->ops->on_decode_step) KS_TRY(p->ops->on_decode_step(p, layer, qpos));
    return KS_OK;
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
    for (ks_method *p = m; p; p = p->next) record_stats(p);
    return KS_OK;
}

double *ks_method_stage_state(ks_method *m) {
    for (ks_method *p = m; p; p = p->next) /* the parts' checks leave at most one: a SELECT part's */
        if (p->ops->finish_stage) return p->model_state;
    return NULL;
}

ks_status ks_method_finish_stage(ks_method *m) {
    for (ks_method *p = m; p; p = p->next)
        if (p->ops->finish_stage) KS_TRY(p->ops->finish_stage(p));
    if (m->kv) KS_TRY(m->kv->ops->compress_flush(m->kv));
    for (ks_method *p = m; p; p = p->next) record_stats(p);
    return KS_OK;
}

int ks_method_decode_evicts(const ks_method_ops *o) { return o->role == KS_ROLE_SELECT && o->on_decode_step; }

/* One part bounds the rows it leaves after the prompt by its plan. */
static int part_bounds(const ks_method *m) { return m->ops->after_prefill_layer && !m->ops->rows_unplanned; }

/* Whose plan bounds the rows of a composition: its selection, the head; without one (no part drops rows), every
 * part's plan, and none may leave its rows unplanned. */
int ks_method_bounds_rows(const ks_method *m) {
    m = stat_part(m); /* a PREFILL part keeps every row */
    if (m->ops->role == KS_ROLE_SELECT) return part_bounds(m);
    int some = 0;
    for (const ks_method *p = m; p; p = p->next) {
        if (p->ops->rows_unplanned) return 0;
        some |= part_bounds(p);
    }
    return some;
}

/* The most rows one part's plan keeps of any layer of `model` after prompts of 1 .. max_prompt tokens: the place
 * where the rows a part keeps in the dense cache are counted. -1: out of memory. */
static int plan_rows(const ks_method *m, const ks_model *model, int max_prompt) {
    ks_method t = *m; /* plan() reads the options, the layer range and n_prompt, and writes t.layer */
    t.first_layer = model->first_layer;
    t.last_layer = model->last_layer;
    t.n_layers_model = model->cfg.n_layers;
    t.layer = ks_calloc((size_t)(t.last_layer - t.first_layer) + 1, sizeof *t.layer, "KV method plan");
    if (!t.layer) return -1;
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
    return most;
}

/* The most rows the plans of m (its statistics' part on) keep after prompts of 1 .. max_prompt tokens: the
 * selection's, or without one every part's but those that pack rows out of the cache (dense_rows); -1: out of
 * memory. */
static int plans_most(const ks_method *m, const ks_model *model, int max_prompt) {
    int most = 0;
    for (const ks_method *p = m; p; p = m->ops->role == KS_ROLE_SELECT ? NULL : p->next) {
        int rows = part_bounds(p) && !p->ops->dense_rows ? plan_rows(p, model, max_prompt) : 0;
        if (rows < 0) return -1;
        most = rows > most ? rows : most;
    }
    return most;
}

/* The rows a budget-sized cache needs: the most the plans keep after the prompt, plus the generated tokens; with a
 * part that packs rows out of the cache (dense_rows: KIVI), the most of those plans and its bound instead, since
 * the selection compacts into the layer's rows before the part packs them and generated tokens are packed too. */
int ks_method_kv_rows(const ks_method *m, const ks_model *model, int max_prompt, int max_new) {
    if (!ks_method_bounds_rows(m) || max_prompt < 1) return 0;
    m = stat_part(m);
    int most = plans_most(m, model, max_prompt), dense = 0;
    if (most < 0) return 0;
    for (const ks_method *p = m; p; p = p->next)
        if (p->ops->dense_rows) dense = p->ops->dense_rows(p) > dense ? p->ops->dense_rows(p) : dense;
    return dense ? (most > dense ? most : dense) : most + max_new;
}

/* A packing part packs at most the rows the plans keep after the prompt and the generated tokens; without such a
 * plan (KIVI alone packs the whole context) there is no bound. */
int ks_method_packed_rows(const ks_method *m, const ks_model *model, int max_prompt, int max_new) {
    if (!ks_method_bounds_rows(m) || max_prompt < 1) return 0;
    int most = plans_most(stat_part(m), model, max_prompt);
    return most > 0 ? most + max_new : 0;
}

int ks_method_dropped(const ks_method *m) {
    if (m->kv) m->kv->ops->cache(m->kv); /* the positions current (a store may apply evictions late) */
    /* decode_evict leaves no mark but the positions */
    for (int layer = m->first_layer; m->layer && layer < m->last_layer; layer++) {
        const int32_t *len = ks_kvcache_len(m->cache, layer);
        if (!ks_kvcache_is_dense(m->cache, layer, len[0])) return 1;
        for (const ks_method *p = m; p; p = p->next)
            if (ks_method_layer_at(p, layer)->compressed) return 1;
    }
    return 0;
}

/* A PREFILL part's columns of held `layer`'s row. */
static void sparse_stat(const ks_method *p, int layer, ks_layer_stat *row) {
    const ks_method_sparse_layer *s = &p->sparse[ks_method_index(p, layer)];
    if (!s->causal) return; /* no prompt chunk ran */
    row->sparse_density = (float)((double)s->blocks / (double)s->causal);
    row->sparse_blocks = s->blocks;
    row->sparse_coverage = (float)(s->coverage / (double)s->rows);
}

int ks_method_layer_stats(const ks_method *m, ks_layer_stat *out) {
    int rows = 0;
    for (int layer = m->first_layer; layer < m->last_layer; layer++) {
        const ks_method_layer *ly = ks_method_layer_at(stat_part(m), layer);
        ks_layer_stat *row = &out[rows++];
        *row = (ks_layer_stat){.layer = layer,
                               .kv_head = -1,
                               .budget = ly->budget,
                               .kept = ly->kept,
                               .attn_mass_kept = ly->mass_kept,
                               .key_norm_mean = ly->key_norm_mean,
                               .key_norm_max = ly->key_norm_max,
                               .sparse_density = 1.0f,
                               .quant_error = 0.0f};
        for (const ks_method *p = m; p; p = p->next) {
            if (p->sparse) sparse_stat(p, layer, row);
            if (p->ops->layer_stat) p->ops->layer_stat(p, layer, row);
        }
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
        int w = part_window(m);
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
    /* a CHANNELS or QUANT part's compaction releases rows it holds packed (the tokens stay): nothing is dropped to
     * merge */
    for (ks_method *p = m->head; p && dropped && m->ops->role < KS_ROLE_CHANNELS; p = p->next)
        if (p->ops->before_compact) KS_TRY(p->ops->before_compact(p, layer, m->keep, m->n_keep, m->cap, decode));
    for (ks_method *p = m->head; p; p = p->next) { /* every part's per-row arrays follow m's lists */
        if (p->row_mass) compact_rows(m, ks_method_row_mass(p, layer), 1);
        if (p->row_scores) compact_rows(m, ks_method_row_scores(p, layer), p->score_rows / m->Hk);
        if (p->row_norm && !decode) /* decode eviction: the statistics are taken */
            compact_rows(m, ks_method_row_norm(p, layer), 1);
    }
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
