/* hashmap.c — see hashmap.h. */
#include "tokenizer/hashmap.h"

#include <stdlib.h>
#include <string.h>

/* ---- ks_strtab ---------------------------------------------------------------------------------------- */

static ks_status strtab_reserve_ids(ks_strtab *t, int32_t id) {
    if (id < t->cap) return KS_OK;
    int32_t cap = t->cap ? t->cap : 1024;
    while (cap <= id) cap *= 2;
    uint32_t *off = realloc(t->off, (size_t)cap * sizeof *off);
    if (!off) return ks_fail(KS_ERR_NOMEM, "out of memory growing the token table to %d entries", cap);
    t->off = off;
    uint32_t *len = realloc(t->len, (size_t)cap * sizeof *len);
    if (!len) return ks_fail(KS_ERR_NOMEM, "out of memory growing the token table to %d entries", cap);
    t->len = len;
    for (int32_t i = t->cap; i < cap; i++) {
        t->off[i] = KS_STRTAB_ABSENT;
        t->len[i] = 0;
    }
    t->cap = cap;
    return KS_OK;
}

ks_status ks_strtab_set(ks_strtab *t, int32_t id, const char *s, size_t len) {
    KS_ASSERT(id >= 0);
    KS_TRY(strtab_reserve_ids(t, id));
    if (t->n_bytes + len > UINT32_MAX - 1)
        return ks_fail(KS_ERR_RANGE, "token table: more than 4 GiB of token text");
    if (t->n_bytes + len > t->cap_bytes) {
        size_t cap = t->cap_bytes ? t->cap_bytes : 65536;
        while (cap < t->n_bytes + len) cap *= 2;
        char *b = realloc(t->bytes, cap);
        if (!b) return ks_fail(KS_ERR_NOMEM, "out of memory growing the token text to %zu bytes", cap);
        t->bytes = b;
        t->cap_bytes = cap;
    }
    if (len) memcpy(t->bytes + t->n_bytes, s, len);
    t->off[id] = (uint32_t)t->n_bytes;
    t->len[id] = (uint32_t)len;
    t->n_bytes += len;
    if (id >= t->n) t->n = id + 1;
    return KS_OK;
}

const char *ks_strtab_get(const ks_strtab *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n || t->off[id] == KS_STRTAB_ABSENT) {
        *len = 0;
        return NULL;
    }
    *len = t->len[id];
    return t->bytes ? t->bytes + t->off[id] : ""; /* only empty entries so far: no text buffer yet */
}

void ks_strtab_free(ks_strtab *t) {
    free(t->bytes);
    free(t->off);
    free(t->len);
    memset(t, 0, sizeof *t);
}

/* ---- ks_bytemap --------------------------------------------------------------------------------------- */

uint32_t ks_hash_bytes(const char *s, size_t len) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)len;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8;
        len -= 8;
    }
    uint64_t w = 0;
    if (len) memcpy(&w, s, len);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

static uint32_t capacity_for(size_t expected) {
    uint32_t cap = 16;
    while ((size_t)cap < 2 * expected) cap *= 2;
    return cap;
}

ks_status ks_bytemap_init(ks_bytemap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = capacity_for(expected);
    m->slots = ks_malloc((size_t)m->cap * sizeof *m->slots, "token hash map");
    if (!m->slots) return KS_ERR_NOMEM;
    for (uint32_t i = 0; i < m->cap; i++) m->slots[i].val = -1;
    return KS_OK;
}

static void bytemap_insert_slot(ks_bytemap *m, ks_byte_slot s) {
    uint32_t mask = m->cap - 1;
    uint32_t i = s.hash & mask;
    while (m->slots[i].val >= 0) i = (i + 1) & mask;
    m->slots[i] = s;
    m->n++;
}

ks_status ks_bytemap_put(ks_bytemap *m, const ks_strtab *tab, int32_t val) {
    size_t len;
    const char *key = ks_strtab_get(tab, val, &len);
    KS_ASSERT(key != NULL || len == 0);
    if (ks_bytemap_get(m, tab, key, len) >= 0) return KS_OK;
    if (2 * (m->n + 1) > m->cap) {
        ks_bytemap bigger;
        KS_TRY(ks_bytemap_init(&bigger, m->cap));
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->slots[i].val >= 0) bytemap_insert_slot(&bigger, m->slots[i]);
        ks_bytemap_free(m);
        *m = bigger;
    }
    bytemap_insert_slot(m, (ks_byte_slot){ks_hash_bytes(key, len), val});
    return KS_OK;
}

int32_t ks_bytemap_get(const ks_bytemap *m, const ks_strtab *tab, const char *key, size_t len) {
    uint32_t h = ks_hash_bytes(key, len);
    uint32_t mask = m->cap - 1;
    for (uint32_t i = h & mask; m->slots[i].val >= 0; i = (i + 1) & mask) {
        if (m->slots[i].hash != h) continue;
        int32_t v = m->slots[i].val;
        if (tab->len[v] == len && memcmp(tab->bytes + tab->off[v], key, len) == 0) return v;
    }
    return -1;
}

void ks_bytemap_free(ks_bytemap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- ks_pairmap --------------------------------------------------------------------------------------- */

#define PAIR_EMPTY UINT64_MAX

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static inline uint32_t pair_hash(uint64_t key) {
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32) ^ (uint32_t)key;
}

ks_status ks_pairmap_init(ks_pairmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = capacity_for(expected);
    m->slots = ks_malloc((size_t)m->cap * sizeof *m->slots, "merge hash map");
    if (!m->slots) return KS_ERR_NOMEM;
    for (uint32_t i = 0; i < m->cap; i++) m->slots[i].key = PAIR_EMPTY;
    return KS_OK;
}

static void pairmap_insert_slot(ks_pairmap *m, const ks_pair_slot *s) {
    uint32_t mask = m->cap - 1;
    uint32_t i = pair_hash(s->key) & mask;
    while (m->slots[i].key != PAIR_EMPTY) i = (i + 1) & mask;
    m->slots[i] = *s;
    m->n++;
}

ks_status ks_pairmap_put(ks_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if (ks_pairmap_get(m, a, b)) return KS_OK;
    if (2 * (m->n + 1) > m->cap) {
        ks_pairmap bigger;
        KS_TRY(ks_pairmap_init(&bigger, m->cap));
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->slots[i].key != PAIR_EMPTY) pairmap_insert_slot(&bigger, &m->slots[i]);
        ks_pairmap_free(m);
        *m = bigger;
    }
    ks_pair_slot s = {pair_key(a, b), rank, id};
    pairmap_insert_slot(m, &s);
    return KS_OK;
}

const ks_pair_slot *ks_pairmap_get(const ks_pairmap *m, int32_t a, int32_t b) {
    uint64_t key = pair_key(a, b);
    uint32_t mask = m->cap - 1;
    for (uint32_t i = pair_hash(key) & mask; m->slots[i].key != PAIR_EMPTY; i = (i + 1) & mask)
        if (m->slots[i].key == key) return &m->slots[i];
    return NULL;
}

void ks_pairmap_free(ks_pairmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}
