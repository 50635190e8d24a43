/* batch.c — see batch.h. */
#include "engine/batch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

ks_status ks_batch_init_forward(ks_batch *b, ks_forward *first, ks_method *const *methods, int max_new) {
    memset(b, 0, sizeof *b);
    int n = first->max_batch;
    b->max_new = max_new > 0 ? max_new : 1;
    b->seqs = ks_calloc((size_t)n, sizeof *b->seqs, "batch slots");
    b->rows = ks_calloc((size_t)n, sizeof *b->rows, "batch slots");
    b->ids = ks_calloc((size_t)n, sizeof *b->ids, "batch slots");
    b->next = ks_calloc((size_t)n, sizeof *b->next, "batch slots");
    b->row_slot = ks_calloc((size_t)n, sizeof *b->row_slot, "batch slots");
    if (!b->seqs || !b->rows || !b->ids || !b->next || !b->row_slot) {
        ks_forward_free(first);
        ks_batch_free(b);
        return KS_ERR_NOMEM;
    }
    b->seqs[0].fwd = *first;
    memset(first, 0, sizeof *first);
    b->n = 1;
    ks_status st = KS_OK;
    for (int i = 1; i < n && st == KS_OK; i++) {
        st = ks_forward_init_slot(&b->seqs[i].fwd, &b->seqs[0].fwd, i, methods ? methods[i] : NULL);
        if (st == KS_OK) b->n = i + 1; /* the slots built, which ks_batch_free frees */
    }
    for (int i = 0; i < b->n && st == KS_OK; i++) {
        b->seqs[i].out = ks_malloc(sizeof(int32_t) * (size_t)b->max_new, "generated ids");
        if (!b->seqs[i].out) st = KS_ERR_NOMEM;
    }
    if (st != KS_OK) ks_batch_free(b);
    return st;
}

ks_status ks_batch_init(ks_batch *b, const ks_model *m, ks_method *const *methods, const ks_forward_params *p) {
    memset(b, 0, sizeof *b);
    ks_forward first;
    KS_TRY(ks_forward_init(&first, m, methods ? methods[0] : NULL, p));
    return ks_batch_init_forward(b, &first, methods, p->max_new);
}

void ks_batch_free(ks_batch *b) {
    for (int i = b->n - 1; b->seqs && i >= 0; i--) { /* slot 0's forward frees the instance: last */
        ks_forward_free(&b->seqs[i].fwd);
        free(b->seqs[i].out);
    }
    free(b->seqs);
    free(b->rows);
    free(b->ids);
    free(b->next);
    free(b->row_slot);
    memset(b, 0, sizeof *b);
}

/* Bytes one slot adds on a device whose elements are `elem` bytes (4: the cpu's fp32, 2: bf16 on a GPU): its
 * cache (K and V) and its store's per-row scratch; on a GPU also its own activations for a prompt chunk (the cpu's
 * slots share the instance's). */
static int64_t slot_bytes(const ks_model *m, const ks_backend_params *bp, int elem) {
    const ks_model_config *c = &m->cfg;
    int64_t layers = m->last_layer - m->first_layer, own = bp->kv_rows > 0 ? bp->kv_rows : bp->max_ctx;
    int64_t rows = own < bp->max_ctx ? layers * own + (int64_t)KS_KVCACHE_SLOTS * bp->max_ctx : layers * own;
    int64_t cache = 2 * rows * c->n_kv_heads * c->head_dim * elem;
    int64_t scratch = 4 * (int64_t)c->n_heads * bp->max_ctx * 4 + (int64_t)c->n_kv_heads * bp->max_ctx * c->head_dim * 2;
    int64_t width = 2 * (int64_t)c->hidden + (int64_t)(2 * c->n_heads + 2 * c->n_kv_heads) * c->head_dim + 2 * c->ffn;
    return cache + scratch + (elem == 4 ? 0 : (int64_t)bp->max_chunk * (width * elem + c->hidden * 4));
}

/* The weights' bytes on a GPU (bf16), which slot 0 allocates before the others. */
static int64_t gpu_weight_bytes(const ks_model *m) {
    const ks_model_config *c = &m->cfg;
    int64_t qkv = (int64_t)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim, qd = (int64_t)c->n_heads * c->head_dim;
    int64_t layer = c->hidden * (qkv + qd + 3 * (int64_t)c->ffn);
    return 2 * ((m->last_layer - m->first_layer) * layer + (c->tie_embeddings ? 1 : 2) * (int64_t)c->vocab * c->hidden);
}

int ks_batch_auto_slots(const ks_model *m, const ks_method *method, const ks_forward_params *p, int sharing,
                        int most) {
    ks_backend_params bp;
    if (ks_forward_backend_params(m, method, p, &bp) != KS_OK) return 1;
    const int cpu = !strcmp(p->device, "cpu");
    int64_t free_bytes = ks_backend_free_bytes(p->device) / 4 * 3 / (sharing > 1 ? sharing : 1);
    if (!cpu) free_bytes -= gpu_weight_bytes(m);
    int64_t n = free_bytes / slot_bytes(m, &bp, cpu ? 4 : 2);
    return n < 1 ? 1 : n > most ? most : (int)n;
}

int ks_batch_free_slot(const ks_batch *b) {
    for (int i = 0; i < b->n; i++)
        if (!b->seqs[i].busy) return i;
    return -1;
}

int ks_batch_busy(const ks_batch *b) {
    int n = 0;
    for (int i = 0; i < b->n; i++) n += b->seqs[i].busy;
    return n;
}

int ks_batch_decoding(const ks_batch *b) {
    int n = 0;
    for (int i = 0; i < b->n; i++) n += b->seqs[i].decoding;
    return n;
}

ks_status ks_batch_join(ks_batch *b, int s, const int32_t *prompt, int n_prompt, const ks_generate_params *gp,
                        void *tag) {
    KS_ASSERT(s >= 0 && s < b->n && !b->seqs[s].busy && (!gp->pipeline || b->n == 1));
    ks_batch_seq *q = &b->seqs[s];
    if (gp->max_new_tokens > b->max_new)
        return ks_fail(KS_ERR_RANGE, "a sample asks for %d new tokens; the batch was sized for %d",
                       gp->max_new_tokens, b->max_new);
    q->stop = gp->stop ? *gp->stop : (ks_stop_set){0};
    q->gp = *gp;
    q->gp.stop = &q->stop;
    q->tag = tag;
    int done;
    KS_TRY(ks_generate_begin(&q->fwd, prompt, n_prompt, &q->gp, q->out, &q->r, &q->next, &done));
    q->busy = 1;
    q->decoding = !done;
    return done ? ks_generate_end(&q->fwd, &q->gp, &q->r) : KS_OK;
}

/* One decode token of the sequences in b->rows[0 .. n): a batched step, or a pipelined sample's own step. */
static ks_status decode_rows(ks_batch *b, int n) {
    const ks_batch_seq *q = &b->seqs[b->row_slot[0]];
    if (!q->gp.pipeline) return ks_forward_decode_batch(b->rows, n, b->ids, b->next);
    b->next[0] = b->ids[0];
    return ks_generate_step(b->rows[0], &q->gp, &b->next[0]);
}

ks_status ks_batch_step(ks_batch *b) {
    int n = 0;
    for (int i = 0; i < b->n; i++)
        if (b->seqs[i].decoding) {
            b->rows[n] = &b->seqs[i].fwd;
            b->ids[n] = b->seqs[i].next;
            b->row_slot[n++] = i;
        }
    if (!n) return KS_OK;
    double t0 = now_s();
    KS_TRY(decode_rows(b, n));
    double share = (now_s() - t0) / n;
    for (int k = 0; k < n; k++) {
        ks_batch_seq *q = &b->seqs[b->row_slot[k]];
        q->r.decode_s += share;
        q->next = b->next[k];
        if (ks_generate_accept(&q->gp, q->out, &q->r, q->next)) {
            q->decoding = 0;
            KS_TRY(ks_generate_end(&q->fwd, &q->gp, &q->r));
        }
    }
    return KS_OK;
}

int ks_batch_finished(const ks_batch *b) {
    for (int i = 0; i < b->n; i++)
        if (b->seqs[i].busy && !b->seqs[i].decoding) return i;
    return -1;
}

void ks_batch_leave(ks_batch *b, int s) {
    KS_ASSERT(s >= 0 && s < b->n);
    b->seqs[s].busy = 0;
    b->seqs[s].decoding = 0;
    b->seqs[s].tag = NULL;
}
