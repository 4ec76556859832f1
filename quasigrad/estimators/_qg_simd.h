/* float32 vectors for _kernels.c: a type qv of QG_VL lanes and the few operations the kernels
   need beyond + - * /, for the instruction set the translation unit is compiled for.

   The build compiles _kernels.c once per target (see _build.py): with -mavx512f the AVX-512
   intrinsics below are used (16 lanes, masked tails, vscalefps/vgetexpps), with -mavx2 -mfma the
   AVX2 + FMA intrinsics (8 lanes), and otherwise GCC/Clang vector extensions (8 lanes; any
   target). Which build runs is chosen when the library is loaded, from the CPU's features. No
   -ffast-math anywhere: its assumptions (no NaN, no inf) are what the NaN checks and the -inf
   masks of the kernels rely on not being made. */
#ifndef QG_SIMD_H
#define QG_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>

#define QG_VL 16
typedef __m512 qv;
typedef __mmask16 qnan;   /* lanes seen NaN */

static inline __mmask16 qg_mask(int64_t count) {
    return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
}
static inline qv qv_splat(float a) { return _mm512_set1_ps(a); }
static inline qv qv_load(const float *p) { return _mm512_loadu_ps(p); }
static inline qv qv_load_part(const float *p, int64_t count, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), qg_mask(count), p);
}
static inline void qv_store(float *p, qv v) { _mm512_storeu_ps(p, v); }
static inline void qv_store_part(float *p, qv v, int64_t count) { _mm512_mask_storeu_ps(p, qg_mask(count), v); }
/* v with its first QG_VL - keep lanes replaced by fill */
static inline qv qv_keep_last(qv v, int64_t keep, float fill) {
    return _mm512_mask_blend_ps((__mmask16)~((1u << (16 - keep)) - 1), _mm512_set1_ps(fill), v);
}
static inline qv qv_max(qv a, qv b) { return _mm512_max_ps(a, b); }
static inline qv qv_min(qv a, qv b) { return _mm512_min_ps(a, b); }
/* a < b ? t : f, lane by lane */
static inline qv qv_lt_select(qv a, qv b, qv t, qv f) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), f, t); }
static inline qnan qnan_none(void) { return 0; }
static inline qnan qnan_add(qnan acc, qv v) { return acc | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); }
static inline int qnan_any(qnan acc) { return acc != 0; }
static inline float qv_hmax(qv v) { return _mm512_reduce_max_ps(v); }
static inline float qv_hsum(qv v) { return _mm512_reduce_add_ps(v); }
static inline qv qv_last(qv t) { return _mm512_permutexvar_ps(_mm512_set1_epi32(15), t); }
/* how many of the first `count` lanes of t are <= v */
static inline int64_t qv_count_le(qv t, qv v, int64_t count) {
    return __builtin_popcount((unsigned)_mm512_mask_cmp_ps_mask(qg_mask(count), t, v, _CMP_LE_OQ));
}
/* inclusive prefix sums of the lanes: four shifted adds (lanes moved up, zeros in) */
static inline qv qv_prefix(qv t) {
    const __m512i zero = _mm512_setzero_si512();
    t += _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(t), zero, 15));
    t += _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(t), zero, 14));
    t += _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(t), zero, 12));
    t += _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(t), zero, 8));
    return t;
}
/* a*b + c, c - a*b, rounding to the nearest integer, p 2^k by vscalefps (which rounds once into
   the denormal range and gives 0 below it), and x = m 2^e with m in [0.5, 1) for normal x > 0. */
static inline qv qv_fmadd(qv a, qv b, qv c) { return _mm512_fmadd_ps(a, b, c); }
static inline qv qv_fnmadd(qv a, qv b, qv c) { return _mm512_fnmadd_ps(a, b, c); }
static inline qv qv_round(qv y) { return _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline qv qv_ldexp(qv p, qv k) { return _mm512_scalef_ps(p, k); }
static inline qv qv_frexp(qv x, qv *e) {
    *e = _mm512_getexp_ps(x) + qv_splat(1.0f);
    return _mm512_getmant_ps(x, _MM_MANT_NORM_p5_1, _MM_MANT_SIGN_zero);
}

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* AVX2 + FMA: the same operations on 8 lanes (masked tails by vmaskmovps). */
#define QG_VL 8
typedef __m256 qv;
typedef __m256 qnan;      /* lanes seen NaN (all ones) */

static inline __m256i qg_mask(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(count < 8 ? count : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline qv qv_splat(float a) { return _mm256_set1_ps(a); }
static inline qv qv_load(const float *p) { return _mm256_loadu_ps(p); }
static inline qv qv_load_part(const float *p, int64_t count, float fill) {
    __m256i mask = qg_mask(count);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, mask), _mm256_castsi256_ps(mask));
}
static inline void qv_store(float *p, qv v) { _mm256_storeu_ps(p, v); }
static inline void qv_store_part(float *p, qv v, int64_t count) { _mm256_maskstore_ps(p, qg_mask(count), v); }
static inline qv qv_keep_last(qv v, int64_t keep, float fill) {
    __m256i last = _mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)(7 - keep)));
    return _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(last));
}
static inline qv qv_max(qv a, qv b) { return _mm256_max_ps(a, b); }
static inline qv qv_min(qv a, qv b) { return _mm256_min_ps(a, b); }
static inline qv qv_lt_select(qv a, qv b, qv t, qv f) { return _mm256_blendv_ps(f, t, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
static inline qnan qnan_none(void) { return _mm256_setzero_ps(); }
static inline qnan qnan_add(qnan acc, qv v) { return _mm256_or_ps(acc, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); }
static inline int qnan_any(qnan acc) { return _mm256_movemask_ps(acc) != 0; }
static inline float qv_hmax(qv v) {
    __m128 t = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_max_ps(t, _mm_movehl_ps(t, t));
    t = _mm_max_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(t);
}
static inline float qv_hsum(qv v) {
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(t);
}
static inline qv qv_last(qv t) { return _mm256_permutevar8x32_ps(t, _mm256_set1_epi32(7)); }
static inline int64_t qv_count_le(qv t, qv v, int64_t count) {
    unsigned hits = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(t, v, _CMP_LE_OQ));
    return __builtin_popcount(count >= 8 ? hits : hits & ((1u << count) - 1));
}
static inline qv qv_prefix(qv t) {
    const qv zero = _mm256_setzero_ps();
    t += _mm256_blend_ps(_mm256_permutevar8x32_ps(t, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6)), zero, 0x01);
    t += _mm256_blend_ps(_mm256_permutevar8x32_ps(t, _mm256_setr_epi32(0, 0, 0, 1, 2, 3, 4, 5)), zero, 0x03);
    t += _mm256_permute2f128_ps(t, t, 0x08);   /* [0, low half] */
    return t;
}
/* p 2^k with 2^k applied in two halves, so that each factor is a normal number and results
   below FLT_MIN are denormal; frexp from the bits. */
static inline qv qv_fmadd(qv a, qv b, qv c) { return _mm256_fmadd_ps(a, b, c); }
static inline qv qv_fnmadd(qv a, qv b, qv c) { return _mm256_fnmadd_ps(a, b, c); }
static inline qv qv_round(qv y) { return _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline qv qv_ldexp(qv p, qv k) {
    __m256i ki = _mm256_cvtps_epi32(k), k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    qv f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    qv f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return p * f1 * f2;
}
static inline qv qv_frexp(qv x, qv *e) {
    __m256i bits = _mm256_castps_si256(x);
    *e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
    bits = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F000000));
    return _mm256_castsi256_ps(bits);
}

#else

#define QG_VL 8
typedef float qv __attribute__((vector_size(32)));
typedef int32_t qvi __attribute__((vector_size(32)));
typedef qvi qnan;

static inline qv qv_splat(float a) { qv v = {a, a, a, a, a, a, a, a}; return v; }
static inline qv qv_load(const float *p) { qv v; memcpy(&v, p, sizeof v); return v; }
static inline qv qv_load_part(const float *p, int64_t count, float fill) {
    qv v = qv_splat(fill);
    for (int64_t t = 0; t < count; ++t) v[t] = p[t];
    return v;
}
static inline void qv_store(float *p, qv v) { memcpy(p, &v, sizeof v); }
static inline void qv_store_part(float *p, qv v, int64_t count) { for (int64_t t = 0; t < count; ++t) p[t] = v[t]; }
static inline qv qv_keep_last(qv v, int64_t keep, float fill) {
    const qvi lane = {0, 1, 2, 3, 4, 5, 6, 7};
    qv f = {fill, fill, fill, fill, fill, fill, fill, fill};
    qvi last = lane > (int32_t)(7 - keep);
    return (qv)(((qvi)v & last) | ((qvi)f & ~last));
}
static inline qv qv_select(qvi mask, qv a, qv b) { return (qv)(((qvi)a & mask) | ((qvi)b & ~mask)); }
static inline qv qv_max(qv a, qv b) { return qv_select(a > b, a, b); }
static inline qv qv_min(qv a, qv b) { return qv_select(a < b, a, b); }
static inline qv qv_lt_select(qv a, qv b, qv t, qv f) { return qv_select(a < b, t, f); }
static inline qnan qnan_none(void) { qnan z = {0}; return z; }
static inline qnan qnan_add(qnan acc, qv v) { return acc | (v != v); }
static inline int qnan_any(qnan acc) { int r = 0; for (int t = 0; t < 8; ++t) r |= acc[t]; return r != 0; }
static inline float qv_hmax(qv v) { float m = v[0]; for (int t = 1; t < 8; ++t) m = v[t] > m ? v[t] : m; return m; }
static inline float qv_hsum(qv v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
static inline qv qv_last(qv t) { return __builtin_shufflevector(t, t, 7, 7, 7, 7, 7, 7, 7, 7); }
static inline int64_t qv_count_le(qv t, qv v, int64_t count) {
    const qvi lane = {0, 1, 2, 3, 4, 5, 6, 7};
    qvi hit = (t <= v) & (lane < (int32_t)count);   /* true is -1 */
    int64_t k = 0;
    for (int u = 0; u < 8; ++u) k -= hit[u];
    return k;
}
static inline qv qv_prefix(qv t) {
    const qv zero = qv_splat(0.0f);
    t += __builtin_shufflevector(t, zero, 8, 0, 1, 2, 3, 4, 5, 6);
    t += __builtin_shufflevector(t, zero, 8, 8, 0, 1, 2, 3, 4, 5);
    t += __builtin_shufflevector(t, zero, 8, 8, 8, 8, 0, 1, 2, 3);
    return t;
}
/* rounding (of y <= 0: truncating y - 1/2 rounds half down), p 2^k with 2^k applied in two
   halves as above, frexp from the bits. */
static inline qv qv_fmadd(qv a, qv b, qv c) { return a * b + c; }
static inline qv qv_fnmadd(qv a, qv b, qv c) { return c - a * b; }
static inline qv qv_round(qv y) { return __builtin_convertvector(__builtin_convertvector(y - 0.5f, qvi), qv); }
static inline qv qv_ldexp(qv p, qv k) {
    qvi ki = __builtin_convertvector(k, qvi), k1 = ki >> 1, k2 = ki - k1;
    return p * (qv)((k1 + 127) << 23) * (qv)((k2 + 127) << 23);
}
static inline qv qv_frexp(qv x, qv *e) {
    qvi bits = (qvi)x;
    *e = __builtin_convertvector(((bits >> 23) & 0xFF) - 126, qv);
    return (qv)((bits & 0x007FFFFF) | 0x3F000000);
}

#endif

/* The tail of a row of n >= QG_VL elements is read as the QG_VL elements that end the row, whose
   first QG_VL - (n - j) lanes were already read in the last full vector (an overlapping load, no
   masks): an elementwise result stored back there rewrites those lanes with the same values, and
   reductions drop them with qv_keep_last. Shorter rows use masked loads and stores. */

/* exp(x) for x <= 0 or -inf (and small positive x), on every target: Cephes' single-precision
   range reduction (x = k ln 2 + r, ln 2 in two parts) and polynomial for e^r (relative error
   about 1e-7), after clamping at -110, whose exp rounds to 0 (so -inf gives 0). */
static inline qv qv_exp_nonpos(qv x) {
    x = qv_max(x, qv_splat(-110.0f));
    qv k = qv_round(x * 1.44269504088896341f);
    qv r = qv_fnmadd(k, qv_splat(0.693359375f), x);
    r = qv_fnmadd(k, qv_splat(-2.12194440e-4f), r);
    qv poly = qv_fmadd(qv_splat(1.9875691500e-4f), r, qv_splat(1.3981999507e-3f));
    poly = qv_fmadd(poly, r, qv_splat(8.3334519073e-3f));
    poly = qv_fmadd(poly, r, qv_splat(4.1665795894e-2f));
    poly = qv_fmadd(poly, r, qv_splat(1.6666665459e-1f));
    poly = qv_fmadd(poly, r, qv_splat(5.0000001201e-1f));
    poly = qv_fmadd(poly, r * r, r + 1.0f);
    return qv_ldexp(poly, k);
}

/* log(m 2^e) from frexp's m in [1/2, 1) and exponent e, on every target: Cephes' single-precision
   logf (m moved into [sqrt(1/2), sqrt(2)), a degree-9 polynomial in m - 1; relative error about
   1e-7). */
static inline qv qv_log_frexp(qv m, qv e) {
    const qv zero = qv_splat(0.0f);
    qv low = qv_lt_select(m, qv_splat(0.707106781186547524f), qv_splat(1.0f), zero);
    e = e - low;
    m = m + m * low - 1.0f;
    qv z = m * m;
    qv y = qv_fmadd(qv_splat(7.0376836292e-2f), m, qv_splat(-1.1514610310e-1f));
    y = qv_fmadd(y, m, qv_splat(1.1676998740e-1f));
    y = qv_fmadd(y, m, qv_splat(-1.2420140846e-1f));
    y = qv_fmadd(y, m, qv_splat(1.4249322787e-1f));
    y = qv_fmadd(y, m, qv_splat(-1.6668057665e-1f));
    y = qv_fmadd(y, m, qv_splat(2.0000714765e-1f));
    y = qv_fmadd(y, m, qv_splat(-2.4999993993e-1f));
    y = qv_fmadd(y, m, qv_splat(3.3333331174e-1f));
    y = y * m * z;
    y = qv_fmadd(e, qv_splat(-2.12194440e-4f), y);
    y = qv_fnmadd(z, qv_splat(0.5f), y);
    return qv_fmadd(e, qv_splat(0.693359375f), m + y);
}

/* log(x) for normal x > 0. */
static inline qv qv_log_normal(qv x) {
    qv e, m = qv_frexp(x, &e);
    return qv_log_frexp(m, e);
}

/* log(x) for finite x >= 0 (0 gives -inf): denormal x are scaled by 2^24 first. */
static inline qv qv_log(qv x) {
    const qv zero = qv_splat(0.0f);
    qv small = qv_lt_select(x, qv_splat(1.17549435e-38f), qv_splat(1.0f), zero);
    x = qv_lt_select(zero, small, x * 16777216.0f, x);
    qv e, m = qv_frexp(x, &e);
    qv out = qv_log_frexp(m, e - small * 24.0f);
    return qv_lt_select(zero, x, out, qv_splat(-INFINITY));
}

#endif
