/* Fused CPU kernels for the straight-through family; quasigrad._native compiles and loads them.

   Layout: `rows` rows of `n` contiguous categories (the logits x). Every kernel is parallel over
   rows with OpenMP; the shared library is linked to libgomp.so.1, which resolves to the copy
   PyTorch has already loaded, so the two share one thread pool.

   qg_sample_*: the categorical draw and its one-hot in one sweep per row, without writing the
   probabilities out:
       d   <- one_hot(k)                 (the estimator's forward value)
       idx <- k
       m   <- max_j x_j                  (saved, with x, for the backward pass)
   and the number of bad rows (a NaN or +inf logit, or only -inf logits) is returned; a bad row
   gets k = 0 and an all-zero d, and the caller raises. The draw is the inverse CDF with one
   uniform number u in [0, 1) per row: with e_j = exp(x_j - m), k is the first j whose running
   sum e_0 + ... + e_j exceeds v = u * sum_j e_j. A category with e_j = 0 (logit -inf, or so small
   that it underflows) never raises the running sum, so it is never drawn; if rounding leaves v at
   or above the final running sum, the last category with e_j > 0 is taken. The row of d holds
   e while the row is drawn. u for row r is output r of the SplitMix64 stream that starts at
   `seed` (one seed per call, drawn by the caller from a torch.Generator), so the draws depend on
   the seed and the row alone, not on the number of threads.

   qg_backward_*: the backward passes, from x, m, the drawn k and the upstream gradient g. With
   q_j = exp(x_j - m) (the softmax numerators; the max category has q = 1), GST first replaces
   q_j by min(q_j, cap) for j != k and q_k by 1 (cap = e^-gap: its surrogate at tau = 1). Then
   p = q / sum q, c = <p, g> and
       ST, GST:  out = p (g - c)                               (J(p) g)
       ZGR:      out = 1/2 p (g - g_k) + 1/2 (g_k - c) e_k
       DARN:     out = (g_k - c) (e_k - p)
   in two sweeps per row: q (stored in out) with its sum and <q, g>, then out = q (a g + b), plus
   a term at k.

   The float32 sweeps use vectors: AVX-512 intrinsics (16 lanes, masked tails, vscalefps for 2^k)
   where the compiler targets AVX-512, else AVX2 + FMA intrinsics (8 lanes) where it targets those,
   else GCC/Clang vector extensions (8 lanes; any target). No
   -ffast-math: its assumptions (no NaN, no inf) are what the NaN checks and the -inf masks here
   rely on not being made. float64, and float32 rows shorter than 8, use scalar loops and libm. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define QG_PARALLEL_FOR _Pragma("omp parallel for schedule(static) num_threads(nthreads) if(rows * n > 16384)")
#define QG_PARALLEL_FOR_COUNT_BAD _Pragma("omp parallel for schedule(static) num_threads(nthreads) if(rows * n > 16384) reduction(+:bad)")

enum { QG_ST = 0, QG_ZGR = 1, QG_DARN = 2, QG_GST = 3 };

/* u in [0, 1) for row r: SplitMix64 (Steele, Lea, Flood 2014) output r from `seed`, its top 24
   (float) or 53 (double) bits. */
static inline uint64_t qg_splitmix(uint64_t seed, int64_t r) {
    uint64_t z = seed + ((uint64_t)r + 1u) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline float qg_uniform_f32(uint64_t seed, int64_t r) { return (float)(qg_splitmix(seed, r) >> 40) * 0x1p-24f; }
static inline double qg_uniform_f64(uint64_t seed, int64_t r) { return (double)(qg_splitmix(seed, r) >> 11) * 0x1p-53; }

/* The sequential inverse-CDF search over one row of unnormalised masses e: the first j whose
   running sum exceeds v. */
#define QG_SEARCH_SEQ(T, SUF)                                                                     \
static inline int64_t qg_search_seq_##SUF(const T *e, int64_t n, T v) {                           \
    T acc = 0;                                                                                    \
    for (int64_t j = 0; j < n; ++j) {                                                             \
        acc += e[j];                                                                              \
        if (acc > v) return j;                                                                    \
    }                                                                                             \
    for (int64_t j = n - 1; j >= 0; --j) /* rounding: the last category of positive mass */       \
        if (e[j] > 0) return j;                                                                   \
    return 0; /* only on a bad row, which the caller rejects */                                   \
}
QG_SEARCH_SEQ(float, f32)
QG_SEARCH_SEQ(double, f64)

/* ---------------------------------------------------------------------------------------------
   Scalar rows: all of float64, and float32 rows shorter than 8. */

#define QG_SCALAR_ROWS(T, SUF, EXP)                                                               \
static inline int qg_sample_row_##SUF(const T *xr, T *dr, int64_t *idx, T *mr, T u, int64_t n) {  \
    T m = -INFINITY;                                                                              \
    int bad = 0;                                                                                  \
    for (int64_t j = 0; j < n; ++j) { bad |= xr[j] != xr[j]; m = xr[j] > m ? xr[j] : m; }        \
    if (bad || isinf(m)) { memset(dr, 0, (size_t)n * sizeof(T)); *idx = 0; *mr = 0; return 1; }  \
    T s = 0;                                                                                      \
    for (int64_t j = 0; j < n; ++j) { T e = EXP(xr[j] - m); dr[j] = e; s += e; }                  \
    int64_t k = qg_search_seq_##SUF(dr, n, u * s);                                                \
    memset(dr, 0, (size_t)n * sizeof(T));                                                         \
    dr[k] = 1;                                                                                    \
    *idx = k;                                                                                     \
    *mr = m;                                                                                      \
    return 0;                                                                                     \
}                                                                                                 \
static inline void qg_backward_row_##SUF(const T *xr, const T *gr, T m, int64_t k, T *o, int64_t n, \
                                         int mode, T cap) {                                      \
    T s = 0, dot = 0;                                                                             \
    for (int64_t j = 0; j < n; ++j) {                                                             \
        T q = EXP(xr[j] - m);                                                                     \
        if (mode == QG_GST) q = q < cap ? q : cap;                                                \
        o[j] = q; s += q; dot += q * gr[j];                                                       \
    }                                                                                             \
    T a, b, extra;                                                                                \
    qg_coefficients_##SUF(mode, s, dot, o, k, gr[k], &a, &b, &extra);                             \
    for (int64_t j = 0; j < n; ++j) o[j] *= a * gr[j] + b;                                        \
    o[k] += extra;                                                                                \
}

/* After the first sweep of a backward row (q in o, s = sum q, dot = <q, g>): GST's q_k = 1, then
   the coefficients of out_j = q_j (a g_j + b) and out_k += extra (see the header). */
#define QG_COEFFICIENTS(T, SUF)                                                                   \
static inline void qg_coefficients_##SUF(int mode, T s, T dot, T *o, int64_t k, T gk, T *a, T *b,   \
                                         T *extra) {                                              \
    if (mode == QG_GST) { s += 1 - o[k]; dot += (1 - o[k]) * gk; o[k] = 1; }                      \
    T inv = (T)1 / s, c = dot * inv;                                                              \
    switch (mode) {                                                                               \
    case QG_ZGR: *a = (T)0.5 * inv; *b = (T)-0.5 * gk * inv; *extra = (T)0.5 * (gk - c); break;  \
    case QG_DARN: *a = 0; *b = -(gk - c) * inv; *extra = gk - c; break;                           \
    default: *a = inv; *b = -c * inv; *extra = 0; break; /* ST, GST */                            \
    }                                                                                             \
}
QG_COEFFICIENTS(float, f32)
QG_COEFFICIENTS(double, f64)
QG_SCALAR_ROWS(float, f32, expf)
QG_SCALAR_ROWS(double, f64, exp)

/* ---------------------------------------------------------------------------------------------
   float32 vectors: qv (QG_VL lanes) and the few operations the rows need beyond + - *. */

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
static inline qv qv_max(qv a, qv b) { return _mm512_max_ps(a, b); }
static inline qv qv_min(qv a, qv b) { return _mm512_min_ps(a, b); }
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
/* For qv_exp_nonpos: a*b + c, c - a*b, rounding to the nearest integer, and p 2^k by
   vscalefps, which rounds once into the denormal range and gives 0 below it. */
static inline qv qv_fmadd(qv a, qv b, qv c) { return _mm512_fmadd_ps(a, b, c); }
static inline qv qv_fnmadd(qv a, qv b, qv c) { return _mm512_fnmadd_ps(a, b, c); }
static inline qv qv_round(qv y) { return _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline qv qv_ldexp(qv p, qv k) { return _mm512_scalef_ps(p, k); }

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
static inline qv qv_max(qv a, qv b) { return _mm256_max_ps(a, b); }
static inline qv qv_min(qv a, qv b) { return _mm256_min_ps(a, b); }
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
/* For qv_exp_nonpos: a*b + c, c - a*b, rounding to the nearest integer, and p 2^k with 2^k
   applied in two halves, so that each factor is a normal number and results below FLT_MIN are
   denormal. */
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
static inline qv qv_select(qvi mask, qv a, qv b) { return (qv)(((qvi)a & mask) | ((qvi)b & ~mask)); }
static inline qv qv_max(qv a, qv b) { return qv_select(a > b, a, b); }
static inline qv qv_min(qv a, qv b) { return qv_select(a < b, a, b); }
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
/* For qv_exp_nonpos: a*b + c, c - a*b, rounding (of y <= 0: truncating y - 1/2 rounds half
   down), and p 2^k with 2^k applied in two halves as above. */
static inline qv qv_fmadd(qv a, qv b, qv c) { return a * b + c; }
static inline qv qv_fnmadd(qv a, qv b, qv c) { return c - a * b; }
static inline qv qv_round(qv y) { return __builtin_convertvector(__builtin_convertvector(y - 0.5f, qvi), qv); }
static inline qv qv_ldexp(qv p, qv k) {
    qvi ki = __builtin_convertvector(k, qvi), k1 = ki >> 1, k2 = ki - k1;
    return p * (qv)((k1 + 127) << 23) * (qv)((k2 + 127) << 23);
}

#endif

/* exp(x) for x <= 0 or -inf, on every target: Cephes' single-precision range reduction
   (x = k ln 2 + r, ln 2 in two parts) and polynomial for e^r (relative error about 1e-7), after
   clamping at -110, whose exp rounds to 0 (so -inf gives 0). */
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

/* ---------------------------------------------------------------------------------------------
   float32 vector rows. */

/* Sweeps: the max (and the NaN check); e = exp(x - m) into the row of d and its sum s; the
   branch-free search, k = the number of running sums (QG_VL at a time: in-vector prefix sums
   plus the total so far) that are <= u s; the one-hot. Rounding can make these running sums
   differ from the sequential ones in the last bit, so a k past the end or on a category of zero
   mass is redone by the sequential scan: a zero-mass category is never returned. */
static inline int qg_sample_row_f32v(const float *xr, float *dr, int64_t *idx, float *mr, float u, int64_t n) {
    const int64_t full = n - n % QG_VL;
    int64_t j;
    qv vm = qv_splat(-INFINITY);
    qnan nan = qnan_none();
    for (j = 0; j < full; j += QG_VL) {
        qv v = qv_load(xr + j);
        nan = qnan_add(nan, v);
        vm = qv_max(vm, v);
    }
    if (j < n) {
        qv v = qv_load_part(xr + j, n - j, -INFINITY);
        nan = qnan_add(nan, v);
        vm = qv_max(vm, v);
    }
    float m = qv_hmax(vm);
    if (qnan_any(nan) || isinf(m)) { memset(dr, 0, (size_t)n * sizeof(float)); *idx = 0; *mr = 0; return 1; }
    const qv vmax = qv_splat(m);
    qv acc = qv_splat(0.0f);
    for (j = 0; j < full; j += QG_VL) {
        qv e = qv_exp_nonpos(qv_load(xr + j) - vmax);
        qv_store(dr + j, e);
        acc += e;
    }
    if (j < n) {
        qv e = qv_exp_nonpos(qv_load_part(xr + j, n - j, -INFINITY) - vmax);   /* 0 past the row */
        qv_store_part(dr + j, e, n - j);
        acc += e;
    }
    const float v = u * qv_hsum(acc);
    const qv vv = qv_splat(v);
    qv run = qv_splat(0.0f);
    int64_t k = 0;
    for (j = 0; j < full; j += QG_VL) {
        qv t = qv_prefix(qv_load(dr + j)) + run;
        k += qv_count_le(t, vv, QG_VL);
        run = qv_last(t);
    }
    if (j < n) k += qv_count_le(qv_prefix(qv_load_part(dr + j, n - j, 0.0f)) + run, vv, n - j);
    if (k >= n || !(dr[k] > 0)) k = qg_search_seq_f32(dr, n, v);
    memset(dr, 0, (size_t)n * sizeof(float));
    dr[k] = 1.0f;
    *idx = k;
    *mr = m;
    return 0;
}

static inline void qg_backward_row_f32v(const float *xr, const float *gr, float m, int64_t k, float *o, int64_t n,
                                        int mode, float cap) {
    const int64_t full = n - n % QG_VL;
    const qv vmax = qv_splat(m), vcap = qv_splat(cap);
    qv vs = qv_splat(0.0f), vdot = qv_splat(0.0f);
    int64_t j;
    for (j = 0; j < full; j += QG_VL) {
        qv q = qv_exp_nonpos(qv_load(xr + j) - vmax);
        if (mode == QG_GST) q = qv_min(q, vcap);
        qv_store(o + j, q);
        vs += q;
        vdot += q * qv_load(gr + j);
    }
    if (j < n) {
        qv q = qv_exp_nonpos(qv_load_part(xr + j, n - j, -INFINITY) - vmax);
        if (mode == QG_GST) q = qv_min(q, vcap);
        qv_store_part(o + j, q, n - j);
        vs += q;
        vdot += q * qv_load_part(gr + j, n - j, 0.0f);
    }
    float a, b, extra;
    qg_coefficients_f32(mode, qv_hsum(vs), qv_hsum(vdot), o, k, gr[k], &a, &b, &extra);
    const qv va = qv_splat(a), vb = qv_splat(b);
    for (j = 0; j < full; j += QG_VL) qv_store(o + j, qv_load(o + j) * (va * qv_load(gr + j) + vb));
    for (; j < n; ++j) o[j] *= a * gr[j] + b;
    o[k] += extra;
}

/* ---------------------------------------------------------------------------------------------
   Entry points. */

int64_t qg_sample_f32(const float *x, float *d, int64_t *idx, float *m, uint64_t seed, int64_t rows, int64_t n,
                      int nthreads) {
    (void)nthreads;   /* unused when built without OpenMP */
    int64_t bad = 0;
    QG_PARALLEL_FOR_COUNT_BAD
    for (int64_t r = 0; r < rows; ++r) {
        float u = qg_uniform_f32(seed, r);
        if (n < 8)
            bad += qg_sample_row_f32(x + r * n, d + r * n, idx + r, m + r, u, n);
        else
            bad += qg_sample_row_f32v(x + r * n, d + r * n, idx + r, m + r, u, n);
    }
    return bad;
}

int64_t qg_sample_f64(const double *x, double *d, int64_t *idx, double *m, uint64_t seed, int64_t rows, int64_t n,
                      int nthreads) {
    (void)nthreads;   /* unused when built without OpenMP */
    int64_t bad = 0;
    QG_PARALLEL_FOR_COUNT_BAD
    for (int64_t r = 0; r < rows; ++r)
        bad += qg_sample_row_f64(x + r * n, d + r * n, idx + r, m + r, qg_uniform_f64(seed, r), n);
    return bad;
}

void qg_backward_f32(const float *x, const float *m, const int64_t *idx, const float *g, float *out, int mode,
                     float cap, int64_t rows, int64_t n, int nthreads) {
    (void)nthreads;
    QG_PARALLEL_FOR
    for (int64_t r = 0; r < rows; ++r) {
        if (n < 8)
            qg_backward_row_f32(x + r * n, g + r * n, m[r], idx[r], out + r * n, n, mode, cap);
        else
            qg_backward_row_f32v(x + r * n, g + r * n, m[r], idx[r], out + r * n, n, mode, cap);
    }
}

void qg_backward_f64(const double *x, const double *m, const int64_t *idx, const double *g, double *out, int mode,
                     double cap, int64_t rows, int64_t n, int nthreads) {
    (void)nthreads;
    QG_PARALLEL_FOR
    for (int64_t r = 0; r < rows; ++r)
        qg_backward_row_f64(x + r * n, g + r * n, m[r], idx[r], out + r * n, n, mode, cap);
}

int qg_abi_version(void) { return 2; }
