/* kivi_args.h — KIVI's packed KV format (arXiv 2402.02750): its parameters, the layout of one (layer, KV head)'s
 * packed part, the fp16 conversions and the code packing, shared by the CPU reference (cpu/kivi_ref.h), the KV
 * store that holds the format (backend/kv_kivi.h) and the CUDA kernels. Includes nothing of the project; every
 * helper is inline and bit-exact on host and device (no FMA contraction left to the compiler: the dequantization
 * is an explicit fmaf, the quantization a correctly rounded fp32 division and rintf).
 *
 * Quantization of a group of values x (asymmetric min-max, b bits, B = 2^b - 1):
 *     s = half((max - min) / B), z = half(min)             (stored as IEEE fp16, round to nearest even)
 *     q = rintf(clamp((x - z) / s, 0, B))                  (s, z read back as fp32; s == 0: q = 0)
 *     x^ = fmaf(q, s, z)
 * A constant group has s = 0 and x^ = z exactly (never NaN).
 *
 * Layout of one (layer, KV head), cap = the tokens the packed part may hold, G = group, P = 32 / b codes per word
 * (code i of a word in bits [i b, (i + 1) b)):
 *   keys, per channel, grouped along tokens:
 *     k_codes (kc, k_words)   uint32, row i = stored channel i, token t in word t / P, slot t % P;
 *                             k_words = ceil(cap / P)
 *     k_scale, k_zero (kc, k_groups)   fp16 bits, token t in group t / G; k_groups = ceil(cap / G)
 *     stored channel i is head channel k_chan[i] (k_chan NULL: kc = d, channel i)
 *   values, per token, grouped along channels:
 *     v_codes (cap, v_words)  uint32, channel c in word c / P, slot c % P; v_words = ceil(d / P)
 *     v_scale, v_zero (cap, v_groups)  fp16 bits, channel c in group c / G; v_groups = d / G
 * Keys are quantized in whole blocks of tokens starting at a multiple of G (KIVI's residual flush), values one
 * token at a time.
 *
 * The raw encoding (k_bits or v_bits KS_KIVI_RAW or KS_KIVI_RAW_BF16): the cache's own element bits instead of
 * codes, without scales or zeros (k_groups, v_groups 0), exact for its store: KS_KIVI_RAW the host store's fp32
 * bits, one element per word (P = 1: k_words = cap, v_words = d); KS_KIVI_RAW_BF16 the device store's bf16 bits,
 * two per word (P = 2, element i in bits [16 (i % 2), ...) of word i / 2, as 16-bit codes). A channel-pruning
 * part (ThinK) stores its pruned prefix so: keys on the kept channels (kc < d), values whole, any number of tokens
 * at a time. */
#ifndef KS_KIVI_ARGS_H
#define KS_KIVI_ARGS_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define KS_KIVI_HD static __host__ __device__ __forceinline__
#else
#define KS_KIVI_HD static inline
#endif

#define KS_KIVI_RAW 32      /* k_bits / v_bits of the raw encoding of fp32 rows: fp32 bits, one per word */
#define KS_KIVI_RAW_BF16 16 /* the raw encoding of bf16 rows (the CUDA store's): bf16 bits, two per word */

/* The knobs of the format (the KIVI method's k_bits, v_bits, group_size, residual_length). */
typedef struct ks_kivi_params {
    int k_bits, v_bits; /* 2 or 4; KS_KIVI_RAW, KS_KIVI_RAW_BF16 */
    int group;          /* G: tokens per key group, channels per value group */
    int residual;       /* R: full-precision tokens (keys 0 .. R - 1, values the last R), a multiple of G */
} ks_kivi_params;

/* The array sizes of one (layer, KV head)'s packed part (see the layout above). */
typedef struct ks_kivi_shape {
    int d;               /* head_dim; channels per key code row at most */
    int cap;             /* tokens the packed part may hold */
    int k_bits, v_bits, group;
    int k_words, k_groups; /* per stored key channel */
    int v_words, v_groups; /* per token */
} ks_kivi_shape;

KS_KIVI_HD int ks_kivi_per_word(int bits) { return 32 / bits; }

/* 1 for the raw encodings (KS_KIVI_RAW, KS_KIVI_RAW_BF16). */
KS_KIVI_HD int ks_kivi_is_raw(int bits) { return bits == KS_KIVI_RAW || bits == KS_KIVI_RAW_BF16; }

KS_KIVI_HD ks_kivi_shape ks_kivi_shape_of(const ks_kivi_params *p, int d, int cap) {
    ks_kivi_shape s;
    int pk = ks_kivi_per_word(p->k_bits), pv = ks_kivi_per_word(p->v_bits);
    s.d = d, s.cap = cap, s.k_bits = p->k_bits, s.v_bits = p->v_bits, s.group = p->group;
    s.k_words = (cap + pk - 1) / pk, s.k_groups = ks_kivi_is_raw(p->k_bits) ? 0 : (cap + p->group - 1) / p->group;
    s.v_words = (d + pv - 1) / pv, s.v_groups = ks_kivi_is_raw(p->v_bits) ? 0 : d / p->group;
    return s;
}

/* One KV head of a layer after a flush (kvstore.h quant_flush): tokens n = off + the cache rows it holds; keys
 * of tokens < nq_k and values of tokens < nq_v packed; the cache's rows start at token off, and its rows before
 * min(nq_k, nq_v) - off are stale (packed in both; a compaction may release them). */
typedef struct ks_kivi_counts {
    int32_t nq_k, nq_v, off, n;
} ks_kivi_counts;

/* One head's part of a flush: the keys of tokens k_t0 .. k_t0 + k_n - 1 and the values of v_t0 .. v_t0 + v_n - 1
 * are quantized (a flush: k_n a multiple of R; a raw pack: any count; 0: none). */
typedef struct ks_kivi_job {
    int32_t k_t0, k_n, v_t0, v_n;
} ks_kivi_job;

/* KIVI's flush rules for one head holding n tokens, nq_k keys and nq_v values packed (R = residual): the keys'
 * full-precision tail is packed in whole blocks of R, the values' tail is cut to R. The one statement of the
 * rules, shared by the host store (backend/kv_kivi.c ks_kv_kivi_plan) and the device-planned decode flush
 * (kernels/cuda/kivi_quant.cu). */
KS_KIVI_HD ks_kivi_job ks_kivi_flush_job(int n, int nq_k, int nq_v, int R) {
    int nk = (n - nq_k) / R * R, nv = n - nq_v - R;
    ks_kivi_job j;
    j.k_t0 = nq_k, j.k_n = nk > 0 ? nk : 0, j.v_t0 = nq_v, j.v_n = nv > 0 ? nv : 0;
    return j;
}

/* A head's stale rows: cache rows whose tokens are packed in both keys and values (a release may drop them). */
KS_KIVI_HD int ks_kivi_stale(int nq_k, int nq_v, int off) { return (nq_k < nq_v ? nq_k : nq_v) - off; }

/* KIVI's release rule (methods/kivi.c): a layer's stale rows are released, every head's at once, when some head
 * holds at least this many of them: one after the prompt, R during decode (one compaction per R steps). */
KS_KIVI_HD int ks_kivi_release_least(int R, int decode) { return decode ? R : 1; }

/* The two parts of the relative reconstruction errors ||X - X^|| / ||X|| of what a flush quantized, in double:
 * k[0] = sum (K - K^)^2, k[1] = sum K^2; v the same for the values. */
typedef struct ks_kivi_error {
    double k[2], v[2];
} ks_kivi_error;

/* One (layer, KV head) as the decode attention reads it: tokens 0 .. n - 1, keys of tokens < nq_k and values of
 * tokens < nq_v packed, the others full precision in the dense rows k, v ((rows, d), token t at row t - off,
 * off <= min(nq_k, nq_v)). */
typedef struct ks_kivi_head {
    const uint32_t *k_codes;          /* (kc, k_words) */
    const uint16_t *k_scale, *k_zero; /* (kc, k_groups) */
    const int32_t *k_chan;            /* (kc) head channel of each stored key channel; NULL: all d in order */
    int kc;                           /* stored key channels */
    const uint32_t *v_codes;          /* (cap, v_words) */
    const uint16_t *v_scale, *v_zero; /* (cap, v_groups) */
    int nq_k, nq_v, n, off;
    const float *k, *v;               /* dense rows */
} ks_kivi_head;

/* fp32 -> IEEE fp16 bits, round to nearest even (overflow to inf, subnormals kept, NaN stays NaN). */
KS_KIVI_HD uint16_t ks_kivi_half(float f) {
    union { float f; uint32_t u; } b;
    b.f = f;
    uint32_t sign = (b.u >> 16) & 0x8000u, ax = b.u & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x33000000u) return (uint16_t)sign;               /* < 2^-25 rounds to 0 */
    uint32_t r, rem, half;
    if (ax < 0x38800000u) { /* a subnormal half: ax * 2^24 in units of 2^-24 */
        uint32_t mant = (ax & 0x7fffffu) | 0x800000u, shift = 126u - (ax >> 23);
        r = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    } else {
        r = (ax - 0x38000000u) >> 13, rem = ax & 0x1fffu, half = 0x1000u;
    }
    if (rem > half || (rem == half && (r & 1u))) r++; /* a carry into the exponent is the right encoding */
    return (uint16_t)(sign | r);
}

/* IEEE fp16 bits -> fp32 (exact). */
KS_KIVI_HD float ks_kivi_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
    if (e == 0 && m == 0) {
        bits = sign;
    } else if (e == 0) { /* subnormal: normalise */
        e = 113;
        while (!(m & 0x400u)) m <<= 1, e--;
        bits = sign | (e << 23) | ((m & 0x3ffu) << 13);
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (m << 13);
    } else {
        bits = sign | ((e + 112u) << 23) | (m << 13);
    }
    union { uint32_t u; float f; } b;
    b.u = bits;
    return b.f;
}

/* The raw encoding's word of x, and back (the bits themselves). */
KS_KIVI_HD uint32_t ks_kivi_raw(float x) {
    union { float f; uint32_t u; } b;
    b.f = x;
    return b.u;
}
KS_KIVI_HD float ks_kivi_unraw(uint32_t w) {
    union { uint32_t u; float f; } b;
    b.u = w;
    return b.f;
}

/* fp32 -> bf16 bits, round to nearest even (NaN stays NaN); and back (exact). */
KS_KIVI_HD uint16_t ks_kivi_bf16(float x) {
    uint32_t u = ks_kivi_raw(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet, never rounded to inf */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
KS_KIVI_HD float ks_kivi_unbf16(uint16_t h) { return ks_kivi_unraw((uint32_t)h << 16); }

/* Code i of a packed row (words), b bits (below 32). */
KS_KIVI_HD unsigned ks_kivi_code(const uint32_t *words, int i, int bits) {
    int p = 32 / bits;
    return (words[i / p] >> ((i % p) * bits)) & ((1u << bits) - 1u);
}
/* Sets code i of a packed row to q (< 2^bits), leaving the other codes of its word. */
KS_KIVI_HD void ks_kivi_set_code(uint32_t *words, int i, int bits, unsigned q) {
    int p = 32 / bits, sh = (i % p) * bits;
    words[i / p] = (words[i / p] & ~(((1u << bits) - 1u) << sh)) | (q << sh);
}

/* Element i of a row (words) in a raw encoding of `bits` (KS_KIVI_RAW, KS_KIVI_RAW_BF16), as fp32. */
KS_KIVI_HD float ks_kivi_raw_get(const uint32_t *words, int i, int bits) {
    return bits == KS_KIVI_RAW ? ks_kivi_unraw(words[i]) : ks_kivi_unbf16((uint16_t)ks_kivi_code(words, i, bits));
}
/* Sets element i of such a row to x (KS_KIVI_RAW_BF16: x rounded to bf16), leaving the word's other element. */
KS_KIVI_HD void ks_kivi_raw_set(uint32_t *words, int i, int bits, float x) {
    if (bits == KS_KIVI_RAW) words[i] = ks_kivi_raw(x);
    else ks_kivi_set_code(words, i, bits, ks_kivi_bf16(x));
}

/* The code of x in a group of scale s and zero z (fp32 values of the stored fp16), b bits. */
KS_KIVI_HD unsigned ks_kivi_quantize(float x, float s, float z, int bits) {
    float top = (float)((1 << bits) - 1);
    if (s == 0.0f) return 0u;
    float t = (x - z) / s;
    t = t > 0.0f ? (t < top ? t : top) : 0.0f; /* clamped first, then rounded (NaN: 0) */
    return (unsigned)rintf(t);
}
/* x^ of code q. */
KS_KIVI_HD float ks_kivi_dequantize(unsigned q, float s, float z) { return fmaf((float)q, s, z); }

#endif
