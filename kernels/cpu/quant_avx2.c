/* quant_avx2.c — the dot kernels of quant.c with AVX2, FMA and F16C: the same integer sum per 32-element block
 * (32 weight codes against 32 int8 activations: _mm256_maddubs_epi16 into int16 pairs, _mm256_madd_epi16 into
 * eight int32), converted to fp32 and accumulated with one FMA per block; the blocks' offset terms (a.s) are
 * summed as scalars. Q4_1 and Q8_0 (SmolLM2's layers and LM head) also come four rows at a time, the four rows'
 * integer sums reduced into one vector so that conversion, scales and FMA serve the four (half the instructions
 * per block of one row at a time). Compiled with -mavx2 -mfma -mf16c whatever the build's flags (CMakeLists.txt);
 * quant.c calls these only on a CPU that has them. */

#include <immintrin.h>
#include <string.h>

#include "cpu/quant_impl.h"
#include "model/dequant.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static float f16(const uint8_t *p) { return _cvtsh_ss(rd16(p)); }

static float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* Eight int32 sums of adjacent pairs of int16. */
static __m256i pairs(__m256i x16) { return _mm256_madd_epi16(x16, _mm256_set1_epi16(1)); }

/* unsigned codes (0..127) times signed activations, as eight fp32 partial sums. */
static __m256 dot_u8(__m256i u, const int8_t *q) { return _mm256_cvtepi32_ps(pairs(_mm256_maddubs_epi16(u, load32(q)))); }

/* The 32 nibbles of a 16-byte Q4_0 / Q4_1 block in element order: low nibbles (0..15), then high (16..31). */
static __m256i nibbles(const uint8_t *qs) {
    const __m128i x = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(0x0F));
}

static float q4_0(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float offset = 0;
    for (int64_t b = 0; b < nb; b++, w += 18) {
        const float d = f16(w);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a[b].d), dot_u8(nibbles(w + 2), a[b].q), acc);
        offset += d * a[b].s;
    }
    return hsum(acc) - 8.0f * offset;
}

static float q4_k(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    float offset = 0;
    for (int64_t sb = 0; sb < nb / 8; sb++, w += 144, a += 8) {
        const float d = f16(w), dmin = f16(w + 2);
        for (int k = 0; k < 4; k++) {
            const __m256i q = load32(w + 16 + 32 * k);
            uint8_t sc_lo, mn_lo, sc_hi, mn_hi;
            ks_q4_k_scale_min(2 * k, w + 4, &sc_lo, &mn_lo);
            ks_q4_k_scale_min(2 * k + 1, w + 4, &sc_hi, &mn_hi);
            const __m256 lo = dot_u8(_mm256_and_si256(q, mask), a[2 * k].q);
            const __m256 hi = dot_u8(_mm256_and_si256(_mm256_srli_epi16(q, 4), mask), a[2 * k + 1].q);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc_lo * a[2 * k].d), lo, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc_hi * a[2 * k + 1].d), hi, acc);
            offset += dmin * (mn_lo * a[2 * k].s + mn_hi * a[2 * k + 1].s);
        }
    }
    return hsum(acc) - offset;
}

/* One Q6_K group: (codes - 32) . a.q per int16 pair, times the group's two 16-element scales. */
static __m256 q6_group(__m256i codes, const ks_qa_block *a, const int8_t *sc) {
    const __m256i y = load32(a->q);
    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(codes, y), _mm256_maddubs_epi16(_mm256_set1_epi8(32), y));
    const __m256i scales = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, scales));
}

static float q6_k(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nb / 8; sb++, w += 210) {
        const float d = f16(w + 208);
        for (int h = 0; h < 2; h++, a += 4) {
            const __m256i ql0 = load32(w + 64 * h), ql1 = load32(w + 64 * h + 32), qh = load32(w + 128 + 32 * h);
            const int8_t *sc = (const int8_t *)(w + 192 + 8 * h);
            const __m256i g[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, _mm256_set1_epi8(0x30))),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8((char)0xC0)), 2)),
            };
            for (int k = 0; k < 4; k++)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a[k].d), q6_group(g[k], &a[k], sc + 2 * k), acc);
        }
    }
    return hsum(acc);
}

/* The integer sums of four rows' blocks (eight int32 partial sums each) as row 0..3's totals. */
static __m128i row_sums4(__m256i s0, __m256i s1, __m256i s2, __m256i s3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* Sum of lanes 2i and 2i + 1 of acc for i = 0..3, into out[0..4). */
static void store_pairs(__m256 acc, float *out) {
    const __m256 h = _mm256_hadd_ps(acc, acc); /* lanes 0, 1 | 4, 5: rows 0, 1 | 2, 3 */
    _mm_storel_pi((__m64 *)out, _mm256_castps256_ps128(h));
    _mm_storel_pi((__m64 *)(out + 2), _mm256_extractf128_ps(h, 1));
}

static int32_t rd32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Four rows read side by side are four streams, which the hardware prefetcher follows poorly (one core, a 66 MB
 * Q4_1 matrix: 30% slower than one row at a time without this, 20% faster with it): each block step of a four-row
 * kernel asks for its share of the rows AHEAD_ROWS further on, so that they are in cache when reached. */
#define AHEAD_ROWS 8

static void prefetch(const uint8_t *p, size_t bytes) {
    for (size_t off = 0; off < bytes + 63; off += 64) _mm_prefetch((const char *)p + off, _MM_HINT_T0);
}

/* Row r's integer sums of a Q4_1 block (its codes from byte 4 on) with the activation codes y. */
static __m256i q4_1_sums(const uint8_t *w, __m256i y) { return pairs(_mm256_maddubs_epi16(nibbles(w + 4), y)); }

/* Q4_1, four rows: per block the rows' (d, m) pairs, converted together, times (a.d, a.s), meet the rows' integer
 * sums interleaved with 1.0: lanes 2i and 2i + 1 accumulate row i's d * a.d * isum and m * a.s. */
static void q4_1x4(const uint8_t *w, size_t row_bytes, const ks_qa_block *a, int64_t nb, float *out) {
    const __m256 ones = _mm256_castsi256_ps(_mm256_set1_epi64x((int64_t)0x3F80000000000000));
    const uint8_t *w1 = w + row_bytes, *w2 = w1 + row_bytes, *w3 = w2 + row_bytes, *ahead = w + AHEAD_ROWS * row_bytes;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w += 20, w1 += 20, w2 += 20, w3 += 20, ahead += 4 * 20) {
        prefetch(ahead, 4 * 20);
        const __m256i y = load32(a[b].q);
        const __m128i sums = row_sums4(q4_1_sums(w, y), q4_1_sums(w1, y), q4_1_sums(w2, y), q4_1_sums(w3, y));
        const __m128i dm = _mm_setr_epi32(rd32(w), rd32(w1), rd32(w2), rd32(w3));
        const __m256 ds = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)&a[b])); /* a.d, a.s, a.d, .. */
        const __m256 scales = _mm256_mul_ps(_mm256_cvtph_ps(dm), ds);
        acc = _mm256_fmadd_ps(scales, _mm256_or_ps(_mm256_cvtepi32_ps(_mm256_cvtepu32_epi64(sums)), ones), acc);
    }
    store_pairs(acc, out);
}

/* Row r's integer sums of a Q8_0 block (its codes from byte 2 on) with the activation codes y. */
static __m256i q8_0_sums(const uint8_t *w, __m256i y) {
    const __m256i x = load32(w + 2);
    return pairs(_mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))); /* |x| * sign(x)y */
}

/* Q8_0, four rows: one scale multiply and FMA per block for the four. */
static void q8_0x4(const uint8_t *w, size_t row_bytes, const ks_qa_block *a, int64_t nb, float *out) {
    const uint8_t *w1 = w + row_bytes, *w2 = w1 + row_bytes, *w3 = w2 + row_bytes, *ahead = w + AHEAD_ROWS * row_bytes;
    __m128 acc = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w += 34, w1 += 34, w2 += 34, w3 += 34, ahead += 4 * 34) {
        prefetch(ahead, 4 * 34);
        const __m256i y = load32(a[b].q);
        const __m128i sums = row_sums4(q8_0_sums(w, y), q8_0_sums(w1, y), q8_0_sums(w2, y), q8_0_sums(w3, y));
        const __m128i d = _mm_setr_epi16((short)rd16(w), (short)rd16(w1), (short)rd16(w2), (short)rd16(w3), 0, 0, 0, 0);
        acc = _mm_fmadd_ps(_mm_mul_ps(_mm_cvtph_ps(d), _mm_set1_ps(a[b].d)), _mm_cvtepi32_ps(sums), acc);
    }
    _mm_storeu_ps(out, acc);
}

/* Q4_1 and Q8_0 one row at a time: the four-row kernel on the row repeated, so that a row's value is the same
 * whichever rows are computed beside it. */
static float q4_1(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    float v[4];
    q4_1x4(w, 0, a, nb, v);
    return v[0];
}

static float q8_0(const uint8_t *w, const ks_qa_block *a, int64_t nb) {
    float v[4];
    q8_0x4(w, 0, a, nb, v);
    return v[0];
}

/* ks_quant_act_c's blocks: the same scale, and cvtps rounds to nearest even as lrintf does. */
void ks_quant_act_avx2(ks_qa_block *dst, const float *x, int64_t n) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t b = 0; b < n / KS_QA_ELEMS; b++, x += KS_QA_ELEMS) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(m, _mm256_and_ps(v[k], abs_mask));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float d = _mm_cvtss_f32(h) / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(inv)));
        const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        /* packs interleave the 128-bit lanes: the permute puts the 32 codes back in element order */
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)dst[b].q,
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        dst[b].d = d;
        dst[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

ks_quant_dot_fn ks_quant_avx2_kernel(ks_dtype t) {
    switch (t) {
    case KS_DTYPE_Q8_0: return q8_0;
    case KS_DTYPE_Q4_0: return q4_0;
    case KS_DTYPE_Q4_1: return q4_1;
    case KS_DTYPE_Q4_K: return q4_k;
    case KS_DTYPE_Q6_K: return q6_k;
    default: break;
    }
    KS_ASSERT(!"ks_quant: unsupported weight type");
    return NULL;
}

ks_quant_dot4_fn ks_quant_avx2_kernel4(ks_dtype t) {
    switch (t) {
    case KS_DTYPE_Q8_0: return q8_0x4;
    case KS_DTYPE_Q4_1: return q4_1x4;
    default: return NULL;
    }
}
