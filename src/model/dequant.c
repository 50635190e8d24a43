/* dequant.c — 16-bit floats and GGML blocks to fp32; see dequant.h.
 *
 * Block layouts (ggml-common.h), all little-endian, f16 = IEEE half:
 *   Q8_0 (32 el, 34 B): f16 d; int8 qs[32]                       y = d*q
 *   Q4_0 (32 el, 18 B): f16 d; u8 qs[16] (low nibbles = el 0..15, high = 16..31)    y = d*(q-8)
 *   Q4_1 (32 el, 20 B): f16 d; f16 m; u8 qs[16] (as Q4_0)       y = d*q + m
 *   Q4_K (256 el, 144 B): f16 d; f16 dmin; u8 scales[12] (8 6-bit scales + 8 6-bit mins); u8 qs[128];
 *        each 64 elements use 32 bytes of qs: low nibbles with scale/min 2k, high nibbles with 2k+1;
 *        y = d*sc*q - dmin*m
 *   Q6_K (256 el, 210 B): u8 ql[128] (low 4 bits); u8 qh[64] (high 2 bits); int8 scales[16]; f16 d;
 *        y = d*scale[16-element group]*(q-32)
 */
#include "model/dequant.h"

#include <string.h>

#include "core/status.h"

#define QK 32
#define QK_K 256

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

float ks_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in fp32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (mant << 13); /* inf / nan */
    else bits = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float ks_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

size_t ks_dtype_block_elems(ks_dtype t) {
    switch (t) {
    case KS_DTYPE_F32: case KS_DTYPE_F16: case KS_DTYPE_BF16: return 1;
    case KS_DTYPE_Q8_0: case KS_DTYPE_Q4_0: case KS_DTYPE_Q4_1: return QK;
    case KS_DTYPE_Q4_K: case KS_DTYPE_Q6_K: return QK_K;
    }
    KS_ASSERT(!"unknown dtype");
    return 0;
}

size_t ks_dtype_block_bytes(ks_dtype t) {
    switch (t) {
    case KS_DTYPE_F32: return 4;
    case KS_DTYPE_F16: case KS_DTYPE_BF16: return 2;
    case KS_DTYPE_Q8_0: return 34;
    case KS_DTYPE_Q4_0: return 18;
    case KS_DTYPE_Q4_1: return 20;
    case KS_DTYPE_Q4_K: return 144;
    case KS_DTYPE_Q6_K: return 210;
    }
    KS_ASSERT(!"unknown dtype");
    return 0;
}

static void dequant_q8_0(const uint8_t *b, float *y) {
    const float d = ks_fp16_to_f32(rd16(b));
    for (int j = 0; j < QK; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

static void dequant_q4_0(const uint8_t *b, float *y) {
    const float d = ks_fp16_to_f32(rd16(b));
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)((qs[j] & 0x0F) - 8) * d;
        y[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void dequant_q4_1(const uint8_t *b, float *y) {
    const float d = ks_fp16_to_f32(rd16(b)), m = ks_fp16_to_f32(rd16(b + 2));
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)(qs[j] & 0x0F) * d + m;
        y[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
    }
}

void ks_q4_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void dequant_q4_k(const uint8_t *b, float *y) {
    const float d = ks_fp16_to_f32(rd16(b)), dmin = ks_fp16_to_f32(rd16(b + 2));
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
        uint8_t sc, m;
        ks_q4_k_scale_min(is, scales, &sc, &m);
        const float d1 = d * sc, m1 = dmin * m;
        ks_q4_k_scale_min(is + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
    }
}

static void dequant_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = ks_fp16_to_f32(rd16(b + 208));
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * (float)q1;
            y[l + 32] = d * sc[is + 2] * (float)q2;
            y[l + 64] = d * sc[is + 4] * (float)q3;
            y[l + 96] = d * sc[is + 6] * (float)q4;
        }
    }
}

void ks_dequant(ks_dtype t, const uint8_t *src, float *dst, size_t n) {
    const size_t be = ks_dtype_block_elems(t), bb = ks_dtype_block_bytes(t);
    KS_ASSERT(n % be == 0);
    switch (t) {
    case KS_DTYPE_F32: memcpy(dst, src, n * 4); return;
    case KS_DTYPE_F16: for (size_t i = 0; i < n; i++) dst[i] = ks_fp16_to_f32(rd16(src + 2 * i)); return;
    case KS_DTYPE_BF16: for (size_t i = 0; i < n; i++) dst[i] = ks_bf16_to_f32(rd16(src + 2 * i)); return;
    default: break;
    }
    void (*block_fn)(const uint8_t *, float *) =
        t == KS_DTYPE_Q8_0 ? dequant_q8_0 : t == KS_DTYPE_Q4_0 ? dequant_q4_0 : t == KS_DTYPE_Q4_1 ? dequant_q4_1
        : t == KS_DTYPE_Q4_K ? dequant_q4_k : dequant_q6_k;
    for (size_t i = 0; i < n / be; i++) block_fn(src + i * bb, dst + i * be);
}
