/* model.c — ks_model_load: config + tensor directory → fp32 weights for a layer range, in one arena.
 *
 * Steps: open the index (HF directory or GGUF), list the tensors this stage needs with the shape the config
 * implies, check each is present with that shape (one error naming the tensor, expected and found shapes),
 * size one arena, then convert every tensor in row chunks in parallel (OpenMP). GGUF llama Q/K rows were
 * permuted by llama.cpp's converter for adjacent-pair RoPE; they are put back in HF's rotate-half order while
 * converting (see unpermute_row). ks_model_load_packed copies the GGML-block matrices' rows as they are (in the
 * same un-permuted order) into a second block, `packed`, instead of converting them.
 */
#include "model/model.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "model/dequant.h"
#include "model/gguf.h"

#define MAX_WEIGHTS_PER_LAYER 13 /* 9 weights + 4 biases */
#define MIN_WEIGHTS_PER_LAYER 9  /* the weights alone */
#define CHUNK_ELEMS (1 << 16) /* conversion job size: small enough to balance threads, large to amortize */

ks_status ks_model_open_index(const char *path, ks_model_config *cfg, ks_tensor_index *ix, int *is_gguf) {
    memset(ix, 0, sizeof *ix);
    int gguf = !ks_is_directory(path);
    if (is_gguf) *is_gguf = gguf;
    if (gguf) {
        const char *kind = ks_special_file_kind(path); /* stat only: a FIFO is never opened */
        if (kind) return ks_fail(KS_ERR_IO, "%s: is %s, not a model directory or .gguf file", path, kind);
        if (!ks_file_exists(path))
            return ks_fail(KS_ERR_IO, "%s: no such model (expected a Hugging Face model directory or a .gguf file)",
                           path);
        /* tensors first: an unsupported tensor type is the more fundamental problem than missing metadata */
        KS_TRY(ks_tensor_index_open_gguf(ix, path));
        ks_gguf g;
        ks_status st = ks_gguf_open(&g, path);
        if (st == KS_OK) st = ks_model_config_from_gguf(&g, cfg);
        ks_gguf_close(&g);
        if (st != KS_OK) ks_tensor_index_free(ix);
        return st;
    }
    char cfg_path[PATH_MAX];
    ks_path_join(cfg_path, sizeof cfg_path, path, "config.json");
    if (!ks_file_exists(cfg_path))
        return ks_fail(KS_ERR_IO, "%s: missing (a Hugging Face model directory needs config.json next to the "
                       "safetensors files)", cfg_path);
    KS_TRY(ks_model_config_from_hf(cfg_path, cfg));
    return ks_tensor_index_open_hf(ix, path);
}

void ks_model_stage_elems(const ks_model_config *c, int64_t *per_layer, int64_t *embed, int64_t *head) {
    int64_t h = c->hidden, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    *per_layer = 2 * h + h * (q + 2 * kv) + q * h + 3 * h * c->ffn + (c->attn_bias ? q + 2 * kv : 0) +
                 (c->o_bias ? h : 0);
    *embed = (int64_t)c->vocab * h;
    *head = (int64_t)c->vocab * h + h;
}

/* ---- the load plan: which tensors, where they go, what shape they must have ----------------------------- */

typedef struct slot {
    char name[96];
    float **dst;        /* where the arena pointer is stored */
    int ndim;
    int64_t shape[2];
    int perm_heads;     /* > 0: un-permute GGUF llama Q/K rows with this many heads */
    ks_qmat *qdst;      /* a matrix's packed form, or NULL for a tensor that is always fp32 */
    int pack;           /* 1: kept in its GGML blocks at *qdst (set by plan_resolve) */
    const ks_tensor_info *t;
} slot;

typedef struct plan {
    slot *slots;
    int n, cap;
    int packed; /* keep GGML-block matrices packed */
} plan;

/* Appends a slot for tensor `name` (expected shape [d0] or [d0, d1]) that lands in *dst. */
static slot *plan_add(plan *p, const char *name, float **dst, int ndim, int64_t d0, int64_t d1) {
    KS_ASSERT(p->n < p->cap);
    slot *s = &p->slots[p->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->dst = dst;
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    return s;
}

/* A matrix slot (rows, cols) that lands in *dst, or packed in *qdst. */
static slot *plan_add_matrix(plan *p, const char *name, float **dst, ks_qmat *qdst, int64_t rows, int64_t cols) {
    slot *s = plan_add(p, name, dst, 2, rows, cols);
    s->qdst = qdst;
    return s;
}

/* "model.layers.<l>.<suffix>" */
static slot *plan_layer_add(plan *p, int l, const char *suffix, float **dst, int ndim, int64_t d0, int64_t d1) {
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);
    return plan_add(p, name, dst, ndim, d0, d1);
}

static slot *plan_layer_matrix(plan *p, int l, const char *suffix, float **dst, ks_qmat *qdst, int64_t rows,
                               int64_t cols) {
    slot *s = plan_layer_add(p, l, suffix, dst, 2, rows, cols);
    s->qdst = qdst;
    return s;
}

static void plan_layer(plan *p, const ks_model_config *c, ks_layer_weights *w, int l, int permuted) {
    const int64_t h = c->hidden, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    const int q_perm = permuted ? c->n_heads : 0, k_perm = permuted ? c->n_kv_heads : 0;
    plan_layer_add(p, l, "input_layernorm.weight", &w->attn_norm, 1, h, 0);
    plan_layer_matrix(p, l, "self_attn.q_proj.weight", &w->wq, &w->pq, q, h)->perm_heads = q_perm;
    plan_layer_matrix(p, l, "self_attn.k_proj.weight", &w->wk, &w->pk, kv, h)->perm_heads = k_perm;
    plan_layer_matrix(p, l, "self_attn.v_proj.weight", &w->wv, &w->pv, kv, h);
    plan_layer_matrix(p, l, "self_attn.o_proj.weight", &w->wo, &w->po, h, q);
    if (c->attn_bias) { /* the converter permutes Q/K biases like their weights */
        plan_layer_add(p, l, "self_attn.q_proj.bias", &w->bq, 1, q, 0)->perm_heads = q_perm;
        plan_layer_add(p, l, "self_attn.k_proj.bias", &w->bk, 1, kv, 0)->perm_heads = k_perm;
        plan_layer_add(p, l, "self_attn.v_proj.bias", &w->bv, 1, kv, 0);
    }
    if (c->o_bias) plan_layer_add(p, l, "self_attn.o_proj.bias", &w->bo, 1, h, 0);
    plan_layer_add(p, l, "post_attention_layernorm.weight", &w->ffn_norm, 1, h, 0);
    plan_layer_matrix(p, l, "mlp.gate_proj.weight", &w->w_gate, &w->p_gate, c->ffn, h);
    plan_layer_matrix(p, l, "mlp.up_proj.weight", &w->w_up, &w->p_up, c->ffn, h);
    plan_layer_matrix(p, l, "mlp.down_proj.weight", &w->w_down, &w->p_down, h, c->ffn);
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* Finds each slot's tensor and checks its shape, decides which slots stay packed; returns the arena size in
 * floats and the packed block's size in bytes. */
static ks_status plan_resolve(plan *p, const ks_tensor_index *ix, const char *path, size_t *total, size_t *bytes) {
    *total = 0;
    *bytes = 0;
    for (int i = 0; i < p->n; i++) {
        slot *s = &p->slots[i];
        char label[512];
        s->t = ks_tensor_index_find(ix, s->name);
        if (!s->t)
            return ks_fail(KS_ERR_FORMAT, "%s: tensor %s is missing (incomplete or mismatched checkpoint?)", path,
                           ks_tensor_label(ix, s->name, label, sizeof label));
        int ok = s->t->ndim == s->ndim;
        for (int d = 0; ok && d < s->ndim; d++) ok = s->t->shape[d] == s->shape[d];
        if (!ok) {
            char want[64], got[96];
            format_shape(want, sizeof want, s->ndim, s->shape);
            format_shape(got, sizeof got, s->t->ndim, s->t->shape);
            return ks_fail(KS_ERR_FORMAT, "%s: tensor %s has shape %s but the config implies %s (config and "
                           "weights do not match)", ks_tensor_file(ix, s->t),
                           ks_tensor_label(ix, s->name, label, sizeof label), got, want);
        }
        s->pack = p->packed && s->qdst && ks_dtype_block_elems(s->t->dtype) > 1;
        if (s->pack) *bytes += s->t->nbytes;
        else *total += (size_t)ks_tensor_numel(s->t);
    }
    return KS_OK;
}

/* ---- parallel conversion --------------------------------------------------------------------------------- */

typedef struct job {
    const slot *s;
    float *dst;     /* the slot's arena block (unpacked slots) */
    int64_t row0, nrows;
} job;

/* convert_hf_to_gguf's LlamaModel.permute reshapes each head's rows as (2, hd/2) and swaps the axes, so
 * GGUF row h*hd + 2*i + j holds HF row h*hd + j*hd/2 + i. Returns the GGUF row that holds HF row r. */
static int64_t unpermute_row(int64_t r, int64_t head_dim) {
    const int64_t h = r / head_dim, rem = r % head_dim, half = head_dim / 2;
    return h * head_dim + 2 * (rem % half) + rem / half;
}

/* A packed slot's rows: copied in HF order (un-permuted like the fp32 rows). */
static void copy_packed_rows(const job *j) {
    const ks_qmat *q = j->s->qdst;
    uint8_t *dst = (uint8_t *)q->data;
    const int64_t head_dim = j->s->perm_heads ? q->rows / j->s->perm_heads : 0;
    for (int64_t r = j->row0; r < j->row0 + j->nrows; r++) {
        const int64_t src = head_dim ? unpermute_row(r, head_dim) : r;
        memcpy(dst + r * q->row_bytes, j->s->t->data + src * q->row_bytes, q->row_bytes);
    }
}

static void run_job(const job *j) {
    const ks_tensor_info *t = j->s->t;
    const int64_t row_len = ks_tensor_row_len(t);
    if (j->s->pack) {
        copy_packed_rows(j);
        return;
    }
    if (!j->s->perm_heads) {
        ks_tensor_rows_to_f32(t, j->row0, j->nrows, j->dst + j->row0 * row_len);
        return;
    }
    if (t->ndim == 2) {
        const int64_t head_dim = t->shape[0] / j->s->perm_heads;
        for (int64_t r = j->row0; r < j->row0 + j->nrows; r++)
            ks_tensor_rows_to_f32(t, unpermute_row(r, head_dim), 1, j->dst + r * row_len);
        return;
    }
    /* a permuted bias: one row holding the whole vector; reorder within each head */
    const int64_t n = t->shape[0], head_dim = n / j->s->perm_heads;
    float tmp[2 * KS_MAX_ROPE_FACTORS];
    KS_ASSERT(head_dim <= 2 * KS_MAX_ROPE_FACTORS);
    ks_tensor_rows_to_f32(t, 0, 1, j->dst);
    for (int64_t h0 = 0; h0 < n; h0 += head_dim) {
        for (int64_t r = 0; r < head_dim; r++) tmp[r] = j->dst[unpermute_row(h0 + r, head_dim)];
        memcpy(j->dst + h0, tmp, (size_t)head_dim * sizeof *tmp);
    }
}

static ks_status convert_all(const plan *p) {
    int n_jobs = 0;
    for (int i = 0; i < p->n; i++) {
        const ks_tensor_info *t = p->slots[i].t;
        const int64_t rows = ks_tensor_numel(t) / ks_tensor_row_len(t);
        const int64_t per = t->ndim == 1 ? rows : (CHUNK_ELEMS + ks_tensor_row_len(t) - 1) / ks_tensor_row_len(t);
        n_jobs += (int)((rows + per - 1) / per);
    }
    job *jobs = ks_malloc((size_t)n_jobs * sizeof *jobs, "the conversion job list");
    if (!jobs) return KS_ERR_NOMEM;
    int k = 0;
    for (int i = 0; i < p->n; i++) {
        const ks_tensor_info *t = p->slots[i].t;
        const int64_t rows = ks_tensor_numel(t) / ks_tensor_row_len(t);
        const int64_t per = t->ndim == 1 ? rows : (CHUNK_ELEMS + ks_tensor_row_len(t) - 1) / ks_tensor_row_len(t);
        for (int64_t r = 0; r < rows; r += per)
            jobs[k++] = (job){&p->slots[i], p->slots[i].pack ? NULL : *p->slots[i].dst, r,
                              rows - r < per ? rows - r : per};
    }
    KS_ASSERT(k == n_jobs);
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n_jobs; i++) run_job(&jobs[i]);
    free(jobs);
    return KS_OK;
}

/* ---- load / free ----------------------------------------------------------------------------------------- */

static ks_status check_range(const ks_model *m, const char *path, int first, int last) {
    if (first < 0 || first >= last || last > m->cfg.n_layers)
        return ks_fail(KS_ERR_RANGE, "%s: layer range [%d, %d) is outside the model's %d layers", path, first, last,
                       m->cfg.n_layers);
    return KS_OK;
}

/* Points every slot at its place: fp32 slots into the arena, packed ones into the packed block. */
static void place_slots(ks_model *m, const plan *p) {
    float *cur = m->arena;
    uint8_t *bytes = m->packed;
    for (int i = 0; i < p->n; i++) {
        const slot *s = &p->slots[i];
        if (!s->pack) {
            *s->dst = cur;
            cur += ks_tensor_numel(s->t);
            continue;
        }
        *s->dst = NULL;
        *s->qdst = (ks_qmat){.type = s->t->dtype, .rows = s->shape[0], .cols = s->shape[1],
                             .row_bytes = s->t->nbytes / (size_t)s->shape[0], .data = bytes};
        bytes += s->t->nbytes;
    }
}

static ks_status build(ks_model *m, const ks_tensor_index *ix, const char *path, int packed) {
    const ks_model_config *c = &m->cfg;
    const int nl = m->last_layer - m->first_layer, last_stage = m->last_layer == c->n_layers;
    const int permuted = m->is_gguf && c->arch == KS_ARCH_LLAMA;
    /* The plan is sized by the config's layer count: a count the checkpoint's tensors cannot hold (a corrupt or
     * mismatched config, e.g. block_count 10^8 in a small file) is refused before it sizes anything. */
    if (nl > ix->n / MIN_WEIGHTS_PER_LAYER)
        return ks_fail(KS_ERR_FORMAT, "%s: the config asks for %d layers but the checkpoint holds only %d tensors "
                       "(each layer needs %d); config and weights do not match", path, nl, ix->n,
                       MIN_WEIGHTS_PER_LAYER);
    plan p = {.packed = packed};
    p.cap = nl * MAX_WEIGHTS_PER_LAYER + 3;
    p.slots = ks_calloc((size_t)p.cap, sizeof *p.slots, "the load plan");
    m->layers = ks_calloc((size_t)nl, sizeof *m->layers, "the layer table");
    if (!p.slots || !m->layers) {
        free(p.slots);
        return KS_ERR_NOMEM;
    }
    if (m->first_layer == 0 || (c->tie_embeddings && last_stage))
        plan_add_matrix(&p, "model.embed_tokens.weight", &m->embed, &m->p_embed, c->vocab, c->hidden);
    for (int l = m->first_layer; l < m->last_layer; l++) plan_layer(&p, c, ks_model_layer(m, l), l, permuted);
    if (last_stage) {
        plan_add(&p, "model.norm.weight", &m->final_norm, 1, c->hidden, 0);
        if (!c->tie_embeddings) plan_add_matrix(&p, "lm_head.weight", &m->lm_head, &m->p_lm_head, c->vocab, c->hidden);
    }
    ks_status st = plan_resolve(&p, ix, path, &m->arena_floats, &m->packed_bytes);
    if (st == KS_OK) {
        m->arena = ks_malloc(m->arena_floats * sizeof(float), "the model weights (fp32)");
        m->packed = m->packed_bytes ? ks_malloc(m->packed_bytes, "the model weights (packed)") : NULL;
        if (!m->arena || (m->packed_bytes && !m->packed)) st = KS_ERR_NOMEM;
    }
    if (st == KS_OK) {
        place_slots(m, &p);
        if (last_stage && c->tie_embeddings) {
            m->lm_head = m->embed;
            m->p_lm_head = m->p_embed;
        }
        st = convert_all(&p);
    }
    free(p.slots);
    return st;
}

static ks_status load(ks_model *m, const char *path, int first_layer, int last_layer, int packed) {
    memset(m, 0, sizeof *m);
    ks_tensor_index ix;
    KS_TRY(ks_model_open_index(path, &m->cfg, &ix, &m->is_gguf));
    if (last_layer < 0) last_layer = m->cfg.n_layers;
    m->first_layer = first_layer;
    m->last_layer = last_layer;
    ks_status st = check_range(m, path, first_layer, last_layer);
    if (st == KS_OK) {
        m->source = strdup(path);
        st = m->source ? build(m, &ix, path, packed && m->is_gguf) : ks_fail(KS_ERR_NOMEM, "out of memory");
    }
    ks_tensor_index_free(&ix);
    if (st != KS_OK) ks_model_free(m);
    return st;
}

ks_status ks_model_load(ks_model *m, const char *path, int first_layer, int last_layer) {
    return load(m, path, first_layer, last_layer, 0);
}

ks_status ks_model_load_packed(ks_model *m, const char *path, int first_layer, int last_layer) {
    return load(m, path, first_layer, last_layer, 1);
}

int ks_model_is_packed(const ks_model *m) { return m->packed != NULL; }

void ks_model_free(ks_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->arena);
    free(m->packed);
    free(m->source);
    memset(m, 0, sizeof *m);
}
