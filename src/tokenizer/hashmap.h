/* hashmap.h — the two open-addressing hash maps behind the tokenizer (no external hash library):
 *
 *   ks_bytemap: byte string -> int32 value. The map stores only values; the key bytes of value v live in a
 *     ks_strtab (entry v), so the vocabulary text is stored once. Used for token text -> id.
 *   ks_pairmap: (int32 a, int32 b) -> (int32 rank, int32 id). Used for BPE merges: (left id, right id) ->
 *     (merge rank, merged id).
 *
 *     ks_strtab tab = {0};  ks_bytemap m = {0};
 *     KS_TRY(ks_strtab_set(&tab, id, "hello", 5));
 *     KS_TRY(ks_bytemap_init(&m, expected_count));
 *     KS_TRY(ks_bytemap_put(&m, &tab, id));            // key = tab entry `id`
 *     int32_t v = ks_bytemap_get(&m, &tab, "hello", 5); // -1 when absent
 *
 * Both maps size themselves to a load factor of at most 1/2 at init and grow when needed; lookups never
 * allocate. Linear probing; capacity is a power of two.
 */
#ifndef KS_TOK_HASHMAP_H
#define KS_TOK_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define KS_STRTAB_ABSENT UINT32_MAX

/* Strings indexed by a dense int id (gaps allowed): entry i is bytes[off[i] .. off[i]+len[i]). */
typedef struct ks_strtab {
    char *bytes;   /* (cap_bytes) concatenated entries, owned; entries are not NUL-terminated */
    size_t n_bytes, cap_bytes;
    uint32_t *off; /* (cap) byte offset of entry i, KS_STRTAB_ABSENT when entry i was never set */
    uint32_t *len; /* (cap) byte length of entry i */
    int32_t n;     /* 1 + the largest id set */
    int32_t cap;
} ks_strtab;

ks_status ks_strtab_set(ks_strtab *t, int32_t id, const char *s, size_t len);
/* Entry id's bytes, never NULL for a set entry (NULL, *len = 0 when absent or out of range). */
const char *ks_strtab_get(const ks_strtab *t, int32_t id, size_t *len);
void ks_strtab_free(ks_strtab *t);

typedef struct ks_byte_slot {
    uint32_t hash; /* hash of the key */
    int32_t val;   /* value, -1 = empty slot */
} ks_byte_slot;

typedef struct ks_bytemap {
    ks_byte_slot *slots; /* (cap) owned; hash and value side by side: one cache line per probe */
    uint32_t cap, n;
} ks_bytemap;

uint32_t ks_hash_bytes(const char *s, size_t len);
ks_status ks_bytemap_init(ks_bytemap *m, size_t expected);
/* Inserts tab entry `val` as its own key; an existing equal key keeps its first value (HF vocab semantics
 * for duplicate strings). */
ks_status ks_bytemap_put(ks_bytemap *m, const ks_strtab *tab, int32_t val);
int32_t ks_bytemap_get(const ks_bytemap *m, const ks_strtab *tab, const char *key, size_t len);
void ks_bytemap_free(ks_bytemap *m);

typedef struct ks_pair_slot {
    uint64_t key; /* (a << 32) | b; UINT64_MAX = empty */
    int32_t rank, id;
} ks_pair_slot;

typedef struct ks_pairmap {
    ks_pair_slot *slots; /* (cap) owned */
    uint32_t cap, n;
} ks_pairmap;

ks_status ks_pairmap_init(ks_pairmap *m, size_t expected);
/* Inserts (a, b) -> (rank, id) unless (a, b) is present (the first, lowest-rank merge wins, as in HF). */
ks_status ks_pairmap_put(ks_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
/* The slot for (a, b), or NULL. */
const ks_pair_slot *ks_pairmap_get(const ks_pairmap *m, int32_t a, int32_t b);
void ks_pairmap_free(ks_pairmap *m);

#endif
