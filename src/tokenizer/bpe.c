/* bpe.c — BPE on one piece, as HF `tokenizers` (models/bpe/word.rs `merge_all`):
 *   1. ignore_merges: a piece that is itself a vocabulary entry is that token.
 *   2. Initial symbols: each byte (byte-level vocabularies), else each UTF-8 character; a character missing from
 *      the vocabulary becomes its <0xXX> byte tokens (byte_fallback) or the unk token (consecutive unks fused
 *      when fuse_unk) or is dropped.
 *   3. Repeatedly merge the adjacent pair with the lowest merge rank (leftmost first on ties). A min-heap of
 *      candidate (rank, position) pairs with lazy invalidation makes this O(n log n), which matters for
 *      SentencePiece-style vocabularies where a whole segment is one piece; such pieces are also cut where no
 *      merge can cross (tok->chunked), which keeps the heap small.
 * Scratch arrays come from ks_tok_scratch and grow only when a piece is longer than any before it. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

typedef struct ks_bpe_sym {
    int32_t id;
    int32_t prev, next; /* neighbours in the piece, -1 at the ends */
    int32_t alive;      /* 0 once merged into its left neighbour */
} ks_bpe_sym;

ks_status ks_tok_scratch_init(ks_tok_scratch *sc) {
    memset(sc, 0, sizeof *sc);
    sc->md = pcre2_match_data_create(1, NULL);
    sc->mctx = pcre2_match_context_create(NULL);
    sc->jit = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!sc->md || !sc->mctx || !sc->jit) {
        ks_tok_scratch_free(sc);
        return ks_fail(KS_ERR_NOMEM, "out of memory creating the pre-tokenizer match state");
    }
    pcre2_jit_stack_assign(sc->mctx, NULL, sc->jit);
    return KS_OK;
}

void ks_tok_scratch_free(ks_tok_scratch *sc) {
    pcre2_match_data_free(sc->md);
    pcre2_match_context_free(sc->mctx);
    pcre2_jit_stack_free(sc->jit);
    ks_buf_free(&sc->norm[0]);
    ks_buf_free(&sc->norm[1]);
    free(sc->sym);
    free(sc->heap);
    memset(sc, 0, sizeof *sc);
}

static ks_status reserve_symbols(ks_tok_scratch *sc, size_t n) {
    if (n <= sc->cap) return KS_OK;
    size_t cap = sc->cap ? sc->cap : 256;
    while (cap < n) cap *= 2;
    free(sc->sym);
    free(sc->heap);
    sc->sym = ks_malloc(cap * sizeof *sc->sym, "BPE symbols");
    sc->heap = ks_malloc(3 * cap * sizeof *sc->heap, "BPE merge queue");
    sc->cap = sc->sym && sc->heap ? cap : 0;
    return sc->cap ? KS_OK : KS_ERR_NOMEM;
}

/* ---- min-heap of (rank << 32 | left position) ---- */

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
    return top;
}

static void push_pair(const ks_tokenizer *tok, const ks_bpe_sym *sym, int32_t left, uint64_t *heap, size_t *nh) {
    int32_t right = sym[left].next;
    if (right < 0) return;
    const ks_pair_slot *m = ks_pairmap_get(&tok->merges, sym[left].id, sym[right].id);
    if (m) heap_push(heap, nh, ((uint64_t)(uint32_t)m->rank << 32) | (uint32_t)left);
}

/* ---- initial symbols ---- */

static void add_sym(ks_bpe_sym *sym, int32_t *n, int32_t id) {
    sym[*n] = (ks_bpe_sym){id, *n - 1, -1, 1};
    if (*n > 0) sym[*n - 1].next = *n;
    (*n)++;
}

static int32_t initial_symbols(const ks_tokenizer *tok, const char *s, size_t n, ks_bpe_sym *sym) {
    const unsigned char *u = (const unsigned char *)s;
    int32_t ns = 0;
    if (tok->byte_level) {
        for (size_t i = 0; i < n; i++)
            if (tok->byte_id[u[i]] >= 0) add_sym(sym, &ns, tok->byte_id[u[i]]);
        return ns;
    }
    int prev_unk = 0;
    for (size_t i = 0; i < n;) {
        size_t l = ks_utf8_seq_len(u + i, n - i);
        if (!l) l = 1; /* not reached: encode validates its input */
        int32_t id = ks_bytemap_get(&tok->vocab_map, &tok->vocab, s + i, l);
        if (id >= 0) {
            add_sym(sym, &ns, id);
            prev_unk = 0;
        } else {
            int all = tok->byte_fallback;
            for (size_t k = 0; k < l && all; k++) all = tok->fallback_id[u[i + k]] >= 0;
            if (all) {
                for (size_t k = 0; k < l; k++) add_sym(sym, &ns, tok->fallback_id[u[i + k]]);
                prev_unk = 0;
            } else if (tok->unk_id >= 0) {
                if (!(prev_unk && tok->fuse_unk)) add_sym(sym, &ns, tok->unk_id);
                prev_unk = 1;
            }
        }
        i += l;
    }
    return ns;
}

/* BPE of s[0..n) from its initial symbols. */
static ks_status bpe_run(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, ks_ids *out) {
    KS_TRY(reserve_symbols(sc, n));
    ks_bpe_sym *sym = sc->sym;
    int32_t ns = initial_symbols(tok, s, n, sym);
    if (ns > 1) {
        uint64_t *heap = sc->heap;
        size_t nh = 0;
        for (int32_t i = 0; i + 1 < ns; i++) push_pair(tok, sym, i, heap, &nh);
        while (nh) {
            uint64_t top = heap_pop(heap, &nh);
            int32_t left = (int32_t)(uint32_t)top, right = sym[left].next;
            if (!sym[left].alive || right < 0) continue;
            const ks_pair_slot *m = ks_pairmap_get(&tok->merges, sym[left].id, sym[right].id);
            if (!m || (uint32_t)m->rank != (uint32_t)(top >> 32)) continue; /* stale candidate */
            sym[left].id = m->id;
            sym[right].alive = 0;
            sym[left].next = sym[right].next;
            if (sym[right].next >= 0) sym[sym[right].next].prev = left;
            if (sym[left].prev >= 0) push_pair(tok, sym, sym[left].prev, heap, &nh);
            push_pair(tok, sym, left, heap, &nh);
        }
    }
    for (int32_t i = 0; i < ns; i = sym[i].next) {
        KS_TRY(ks_ids_push(out, sym[i].id));
        if (sym[i].next < 0) break;
    }
    return KS_OK;
}

/* Pieces longer than this are cut into independent chunks when the vocabulary allows it (tok->chunked). */
#define BPE_CHUNK_MIN 64

/* BPE of a long piece, cut between two characters that are both vocabulary tokens and adjacent inside no
 * token: no merge can cross such a cut, and unknown characters (unk fusion, byte fallback) never sit at one. */
static ks_status bpe_chunked(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, ks_ids *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t start = 0;
    int32_t prev = -1; /* previous character, -1 when it is not a vocabulary token */
    for (size_t i = 0, l; i < n; i += l) {
        l = ks_utf8_seq_len(u + i, n - i);
        if (!l) l = 1; /* not reached: encode validates its input */
        int known = ks_bytemap_get(&tok->vocab_map, &tok->vocab, s + i, l) >= 0;
        int32_t cp = known ? (int32_t)ks_utf8_decode(u + i, l) : -1;
        if (prev >= 0 && cp >= 0 && !ks_pairmap_get(&tok->char_pairs, prev, cp)) {
            KS_TRY(bpe_run(tok, sc, s + start, i - start, out));
            start = i;
        }
        prev = cp;
    }
    return bpe_run(tok, sc, s + start, n - start, out);
}

ks_status ks_bpe_encode(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, ks_ids *out) {
    if (tok->ignore_merges) { /* the whole piece only, as HF: never its chunks */
        int32_t id = ks_bytemap_get(&tok->vocab_map, &tok->vocab, s, n);
        if (id >= 0) return ks_ids_push(out, id);
    }
    return tok->chunked && n > BPE_CHUNK_MIN ? bpe_chunked(tok, sc, s, n, out) : bpe_run(tok, sc, s, n, out);
}
