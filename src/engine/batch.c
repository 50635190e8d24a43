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

ks_status ks_batch_init(ks_batch *b, const ks_model *m, ks_method *const *methods, const ks_forward_params *p) {
    memset(b, 0, sizeof *b);
    int n = p->batch > 1 ? p->batch : 1;
    b->max_new = p->max_new > 0 ? p->max_new : 1;
    b->seqs = ks_calloc((size_t)n, sizeof *b->seqs, "batch slots");
    b->rows = ks_calloc((size_t)n, sizeof *b->rows, "batch slots");
    b->ids = ks_calloc((size_t)n, sizeof *b->ids, "batch slots");
    b->next = ks_calloc((size_t)n, sizeof *b->next, "batch slots");
    b->row_slot = ks_calloc((size_t)n, sizeof *b->row_slot, "batch slots");
    if (!b->seqs || !b->rows || !b->ids || !b->next || !b->row_slot) {
        ks_batch_free(b);
        return KS_ERR_NOMEM;
    }
    ks_status st = KS_OK;
    for (int i = 0; i < n && st == KS_OK; i++) {
        ks_method *meth = methods ? methods[i] : NULL;
        st = i == 0 ? ks_forward_init(&b->seqs[0].fwd, m, meth, p)
                    : ks_forward_init_slot(&b->seqs[i].fwd, &b->seqs[0].fwd, i, meth);
        b->n = st == KS_OK ? i + 1 : i; /* the slots built, which ks_batch_free frees */
        b->seqs[i].out = st == KS_OK ? ks_malloc(sizeof(int32_t) * (size_t)b->max_new, "generated ids") : NULL;
        if (st == KS_OK && !b->seqs[i].out) st = KS_ERR_NOMEM;
    }
    if (st != KS_OK) ks_batch_free(b);
    return st;
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
    KS_ASSERT(s >= 0 && s < b->n && !b->seqs[s].busy && !gp->pipeline);
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
    if (done) ks_generate_end(&q->fwd, &q->r);
    return KS_OK;
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
    KS_TRY(ks_forward_decode_batch(b->rows, n, b->ids, b->next));
    double share = (now_s() - t0) / n;
    for (int k = 0; k < n; k++) {
        ks_batch_seq *q = &b->seqs[b->row_slot[k]];
        q->r.decode_s += share;
        q->next = b->next[k];
        if (ks_generate_accept(&q->gp, q->out, &q->r, q->next)) {
            q->decoding = 0;
            ks_generate_end(&q->fwd, &q->r);
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
    KS_ASSERT(s >= 0 && s < b->n && b->seqs[s].busy && !b->seqs[s].decoding);
    b->seqs[s].busy = 0;
    b->seqs[s].tag = NULL;
}
