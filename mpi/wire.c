/* wire.c — see wire.h. Layout: magic, id, the fixed-size fields of ks_result in declaration order, then
 * prediction and answers as (u32 byte count, bytes), then n_layers and the ks_layer_stat array. */
#include "wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KS_WIRE_MAGIC 0x3152534bu /* "KSR1" */

static ks_status put(ks_wire_buf *b, const void *p, size_t n) {
    if (b->size + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->size + n) cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d) return ks_fail(KS_ERR_NOMEM, "out of memory packing a result message (%zu bytes)", cap);
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
    return KS_OK;
}

static ks_status put_text(ks_wire_buf *b, const char *s) {
    uint32_t n = s ? (uint32_t)strlen(s) : 0;
    KS_TRY(put(b, &n, sizeof n));
    return put(b, s ? s : "", n);
}

ks_status ks_wire_pack_result(ks_wire_buf *b, int id, const ks_result *r) {
    uint32_t magic = KS_WIRE_MAGIC;
    b->size = 0;
    KS_TRY(put(b, &magic, sizeof magic));
    KS_TRY(put(b, &id, sizeof id));
    KS_TRY(put(b, r->task, sizeof r->task));
    KS_TRY(put(b, &r->length, sizeof r->length));
    KS_TRY(put(b, &r->index, sizeof r->index));
    KS_TRY(put(b, &r->seed, sizeof r->seed));
    KS_TRY(put(b, &r->prompt_tokens, sizeof r->prompt_tokens));
    KS_TRY(put(b, &r->generated_tokens, sizeof r->generated_tokens));
    KS_TRY(put(b, &r->score, sizeof r->score));
    KS_TRY(put(b, &r->prefill_s, sizeof r->prefill_s));
    KS_TRY(put(b, &r->decode_s, sizeof r->decode_s));
    KS_TRY(put(b, &r->peak_bytes, sizeof r->peak_bytes));
    KS_TRY(put(b, &r->kv_bytes_before, sizeof r->kv_bytes_before));
    KS_TRY(put(b, &r->kv_bytes_after, sizeof r->kv_bytes_after));
    KS_TRY(put_text(b, r->prediction));
    KS_TRY(put_text(b, r->answers_json));
    KS_TRY(put(b, &r->n_layers, sizeof r->n_layers));
    return put(b, r->layers, (size_t)r->n_layers * sizeof *r->layers);
}

typedef struct reader {
    const unsigned char *p;
    size_t left;
    const char *bad; /* first problem found, NULL while fine */
} reader;

static void get(reader *rd, void *dst, size_t n, const char *what) {
    if (rd->bad) return;
    if (n > rd->left) {
        rd->bad = what;
        return;
    }
    memcpy(dst, rd->p, n);
    rd->p += n;
    rd->left -= n;
}

static char *get_text(reader *rd, const char *what) {
    uint32_t n = 0;
    get(rd, &n, sizeof n, what);
    if (rd->bad) return NULL;
    if (n > rd->left) {
        rd->bad = what;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        rd->bad = "out of memory";
        return NULL;
    }
    get(rd, s, n, what);
    s[n] = '\0';
    return s;
}

ks_status ks_wire_unpack_result(const void *data, size_t size, int *id, ks_result *r) {
    memset(r, 0, sizeof *r);
    reader rd = {data, size, NULL};
    uint32_t magic = 0;
    get(&rd, &magic, sizeof magic, "header");
    if (!rd.bad && magic != KS_WIRE_MAGIC) rd.bad = "not a result message (bad magic)";
    get(&rd, id, sizeof *id, "sample id");
    get(&rd, r->task, sizeof r->task, "task");
    if (!rd.bad && !memchr(r->task, '\0', sizeof r->task)) rd.bad = "task name not terminated";
    get(&rd, &r->length, sizeof r->length, "length");
    get(&rd, &r->index, sizeof r->index, "index");
    get(&rd, &r->seed, sizeof r->seed, "seed");
    get(&rd, &r->prompt_tokens, sizeof r->prompt_tokens, "prompt_tokens");
    get(&rd, &r->generated_tokens, sizeof r->generated_tokens, "generated_tokens");
    get(&rd, &r->score, sizeof r->score, "score");
    get(&rd, &r->prefill_s, sizeof r->prefill_s, "prefill_s");
    get(&rd, &r->decode_s, sizeof r->decode_s, "decode_s");
    get(&rd, &r->peak_bytes, sizeof r->peak_bytes, "peak_bytes");
    get(&rd, &r->kv_bytes_before, sizeof r->kv_bytes_before, "kv_bytes_before");
    get(&rd, &r->kv_bytes_after, sizeof r->kv_bytes_after, "kv_bytes_after");
    r->prediction = get_text(&rd, "prediction");
    r->answers_json = get_text(&rd, "answers");
    int n_layers = 0;
    get(&rd, &n_layers, sizeof n_layers, "n_layers");
    if (!rd.bad && (n_layers < 0 || (size_t)n_layers * sizeof(ks_layer_stat) != rd.left))
        rd.bad = "layer statistics (count does not match the message size)";
    if (!rd.bad && n_layers > 0) {
        r->layers = malloc((size_t)n_layers * sizeof *r->layers);
        if (!r->layers) rd.bad = "out of memory";
        get(&rd, r->layers, (size_t)n_layers * sizeof *r->layers, "layer statistics");
        r->n_layers = n_layers;
    }
    if (rd.bad) {
        ks_result_free(r);
        return ks_fail(KS_ERR_MPI, "malformed result message (%zu bytes): %s", size, rd.bad);
    }
    return KS_OK;
}

void ks_wire_buf_free(ks_wire_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}
