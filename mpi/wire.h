/* wire.h — a ks_result (prediction, answers, layer statistics and all) as one byte string for an MPI
 * message, and back. The job is homogeneous (one build, one architecture): values travel in native byte
 * order and sizes, behind a magic number that catches a message of another kind.
 *
 *     ks_wire_buf b = {0};
 *     KS_TRY(ks_wire_pack_result(&b, id, &res));                 // b.data[0 .. b.size)
 *     int id2; ks_result back = {0};
 *     KS_TRY(ks_wire_unpack_result(b.data, b.size, &id2, &back)); // back is owned: ks_result_free()
 *     ks_wire_buf_free(&b);
 */
#ifndef KS_WIRE_H
#define KS_WIRE_H

#include <stddef.h>

#include "results/record.h"
#include "core/status.h"

typedef struct ks_wire_buf {
    unsigned char *data; /* (cap) owned; the packed message is data[0 .. size) */
    size_t size, cap;
} ks_wire_buf;

/* Packs sample id `id` and its result into b (replacing b's contents; b grows as needed and is reused). */
ks_status ks_wire_pack_result(ks_wire_buf *b, int id, const ks_result *r);

/* Unpacks a message; a truncated or foreign message is KS_ERR_MPI ("malformed result message: ...") and
 * leaves *r zeroed. */
ks_status ks_wire_unpack_result(const void *data, size_t size, int *id, ks_result *r);

void ks_wire_buf_free(ks_wire_buf *b);

#endif
