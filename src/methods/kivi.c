/* kivi.c — KIVI, tuning-free asymmetric 2-bit quantization of the KV cache (arXiv 2402.02750; docs/methods.md).
 *
 * Keys are quantized per channel (groups of group_size tokens), values per token (groups of group_size
 * channels), both asymmetric min-max in k_bits / v_bits with fp16 scales and zeros (kernels/kivi_args.h). The
 * prompt is attended in full precision; at the layer's prompt end (after any selection: in a composition KIVI
 * runs after the selector, on the rows it kept) the flush rules of backend/kv_kivi.h pack the keys of the first
 * L - L mod R tokens and the values of all but the last R; every decode step appends full-precision K/V, the
 * decode attention reads the packed tokens and the full-precision ones together, and then the rules run again
 * (the key tail packed as one block when it reaches R, the oldest value once the value tail exceeds R).
 *
 * The cache keeps only the full-precision rows: the rows packed in both keys and values are released after
 * the prompt and, during decode, whenever R of them have gathered (one compaction per R steps, not a move per
 * step), so a layer never holds 2 R rows; a budget-sized cache takes 2 R rows per layer (dense_rows), the
 * prompt itself passing through a prefill slot in full precision. Packed storage is reserved for the cache's
 * whole capacity when the method binds. */
#include <math.h>
#include <stddef.h>

#include "backend/kv_kivi.h"
#include "methods/method.h"

typedef struct kivi_opts {
    int k_bits, v_bits, group_size, residual_length;
} kivi_opts;

static const ks_knob knobs[] = {
    {"k_bits", KS_KNOB_INT, offsetof(kivi_opts, k_bits), "2", NULL, 2, 4,
     "bits per key code, 2 or 4 (keys quantized per channel, grouped along tokens)"},
    {"v_bits", KS_KNOB_INT, offsetof(kivi_opts, v_bits), "2", NULL, 2, 4,
     "bits per value code, 2 or 4 (values quantized per token, grouped along channels)"},
    {"group_size", KS_KNOB_INT, offsetof(kivi_opts, group_size), "32", NULL, 1, 4096,
     "G: tokens per key group and channels per value group (one fp16 scale and zero each); divides head_dim"},
    {"residual_length", KS_KNOB_INT, offsetof(kivi_opts, residual_length), "128", NULL, 1, 1e6,
     "R: recent tokens kept in full precision (keys: 0 .. R - 1, packed R at a time; values: the last R); a "
     "multiple of group_size"},
    {0},
};

static ks_kivi_params params_of(const ks_method *m) {
    const kivi_opts *o = KS_METHOD_OPTS(m, kivi_opts);
    return (ks_kivi_params){.k_bits = o->k_bits, .v_bits = o->v_bits, .group = o->group_size,
                            .residual = o->residual_length};
}

/* Bits and the residual's grouping (head_dim is checked when the store reserves the format). */
static ks_status kivi_check(const ks_method *m) {
    ks_kivi_params p = params_of(m);
    ks_status st = ks_kivi_params_check(&p, 0);
    return st == KS_OK ? KS_OK : ks_fail_context(st, "--acceleration KIVI (options from %s)", m->source);
}

static ks_status kivi_bind(ks_method *m) {
    ks_kivi_params p = params_of(m);
    return m->kv->ops->quant_reserve(m->kv, &p);
}

/* After a flush no head holds R full-precision keys, its values' tail is at most R, and fewer than R stale rows
 * wait: 2 R - 1 rows, one more while a decode step appends. */
static int kivi_dense_rows(const ks_method *m) { return 2 * KS_METHOD_OPTS(m, kivi_opts)->residual_length; }

/* Releases each head's stale rows (packed in both keys and values) from the cache when some head has at least
 * ks_kivi_release_least of them, or the layer sits in a prefill slot; a compaction keeping each head's later rows.
 * The CUDA store's graph-served decode step applies the same rule on the device and expects this compaction. */
static ks_status release(ks_method *m, int layer, const ks_kivi_counts *n, int decode) {
    const int least = ks_kivi_release_least(KS_METHOD_OPTS(m, kivi_opts)->residual_length, decode);
    const int32_t *len = ks_kvcache_len(m->cache, layer);
    int most = 0;
    for (int h = 0; h < m->Hk; h++) {
        int stale = ks_kivi_stale(n[h].nq_k, n[h].nq_v, n[h].off);
        int32_t *keep = m->keep + (size_t)h * m->cap;
        for (int j = stale; j < len[h]; j++) keep[j - stale] = j;
        m->n_keep[h] = len[h] - stale;
        most = stale > most ? stale : most;
    }
    if (most < least && ks_kvcache_slot(m->cache, layer) < 0) return KS_OK;
    return ks_method_compact(m, layer, decode);
}

/* The layer's record after its prompt: errors, residuals, tokens and bytes held. */
static void record(ks_method *m, int layer, const ks_kivi_counts *n, const ks_kivi_error *e) {
    ks_method_layer *ly = ks_method_layer_at(m, layer);
    ks_method_quant *q = &ly->quant;
    *q = (ks_method_quant){.err_k = e->k[1] > 0 ? (float)sqrt(e->k[0] / e->k[1]) : 0.0f,
                           .err_v = e->v[1] > 0 ? (float)sqrt(e->v[0] / e->v[1]) : 0.0f,
                           .bytes = ks_kv_kivi_layer_bytes(m->cache->kivi, m->cache, layer)};
    for (int h = 0; h < m->Hk; h++) {
        q->residual_k = n[h].n - n[h].nq_k > q->residual_k ? n[h].n - n[h].nq_k : q->residual_k;
        q->residual_v = n[h].n - n[h].nq_v > q->residual_v ? n[h].n - n[h].nq_v : q->residual_v;
        q->held = n[h].n > q->held ? n[h].n : q->held;
        if (n[h].nq_k || n[h].nq_v) ly->compressed = 1; /* no prompt may continue a quantized sequence */
    }
}

static ks_status kivi_after_prefill_layer(ks_method *m, const ks_method_chunk *c) {
    ks_kivi_counts n[KS_METHOD_MAX_KV_HEADS];
    ks_kivi_error e = {{0, 0}, {0, 0}};
    KS_ASSERT(m->Hk <= KS_METHOD_MAX_KV_HEADS);
    KS_TRY(m->kv->ops->quant_flush(m->kv, c->layer, n, &e));
    KS_TRY(release(m, c->layer, n, 0));
    for (int h = 0; h < m->Hk; h++) n[h] = ks_kv_kivi_counts(m->cache->kivi, m->cache, c->layer, h);
    record(m, c->layer, n, &e);
    return KS_OK;
}

static ks_status kivi_on_decode_step(ks_method *m, int layer, int qpos) {
    (void)qpos;
    ks_kivi_counts n[KS_METHOD_MAX_KV_HEADS];
    KS_TRY(m->kv->ops->quant_flush(m->kv, layer, n, NULL));
    ks_method_layer *ly = ks_method_layer_at(m, layer);
    for (int h = 0; h < m->Hk; h++)
        if (n[h].nq_k || n[h].nq_v) ly->compressed = 1;
    return release(m, layer, n, 1);
}

/* The quantization columns of the layer's statistics row; `kept` counts every token held, packed or not. */
static void kivi_layer_stat(const ks_method *m, int layer, ks_layer_stat *row) {
    const ks_method_quant *q = &ks_method_layer_at(m, layer)->quant;
    if (q->held) row->kept = q->held;
    row->quant_error = q->err_k;
    row->quant_error_v = q->err_v;
    row->residual_k = q->residual_k;
    row->residual_v = q->residual_v;
    row->kv_bytes = q->bytes;
}

const ks_method_ops ks_method_kivi = {
    .name = "KIVI",
    .role = KS_ROLE_QUANT,
    .file = "kivi",
    .summary = "2/4-bit asymmetric KV quantization: keys per channel, values per token, a full-precision residual",
    .knobs = knobs,
    .opts_size = sizeof(kivi_opts),
    .check = kivi_check,
    .after_prefill_layer = kivi_after_prefill_layer,
    .on_decode_step = kivi_on_decode_step,
    .bind = kivi_bind,
    .dense_rows = kivi_dense_rows,
    .layer_stat = kivi_layer_stat,
    .needs_stable_rows = 1,
};
