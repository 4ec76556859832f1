/* Fused CPU kernels for the categorical estimators; quasigrad.estimators._native loads them and
   quasigrad.estimators._ops registers them as PyTorch operators.

   This file is compiled once per CPU target (generic, AVX2 + FMA, AVX-512; see _build.py and
   _qg_simd.h) with -DQG_VARIANT=<name>, which suffixes every exported name (qg_sample_f32_avx2,
   ...); the loader picks the build that the CPU supports. Layout: `rows` rows of `n` contiguous
   categories (the logits x). Every kernel is parallel over rows with OpenMP where the library was
   built with it, and gives the same result on any number of threads.

   Random numbers (the same streams as quasigrad.estimators._streams computes with PyTorch
   operators, so that every path draws the same sample from the same generator state):
     bits64(key, c) = SplitMix64 output c of the stream seeded at key (Steele, Lea, Flood 2014);
     row stream, key S (one seed per call, drawn by the caller from a torch.Generator): row r
       gets u_r = top 24 (float) or 53 (double) bits of bits64(S, r), in [0, 1);
     noise stream, key K = mix64(S ^ QG_NOISE_SALT): draw i of row r has the row key
       bits64(K, i * rows + r), and its element j the uniform U = (h32(j * 0x9E3779B9 + lo) ^ hi)
       with lo/hi the halves of that key, h32 a 32-bit integer hash (two multiplies), its top 23
       bits + 1/2 over 2^23: in (0, 1), exactly a float, the same number in float32 and float64.

   qg_sample_*: the categorical draw and its one-hot in one sweep per row, without writing the
   probabilities out: d <- one_hot(k), idx <- k, m <- max_j x_j (saved, with x, for the backward
   pass); returns the number of bad rows (a NaN or +inf logit, or only -inf logits: k = 0 and an
   all-zero d; the caller raises). The draw is the inverse CDF: with e_j = exp(x_j - m), k is the
   first j whose running sum e_0 + ... + e_j exceeds v = u_r * sum_j e_j; a category with e_j = 0
   never raises the running sum, so it is never drawn; if rounding leaves v at or above the final
   running sum, the last category with e_j > 0 is taken.

   qg_backward_*: the straight-through family's backward passes, from x, m, the drawn k and the
   upstream gradient g. With q_j = exp(x_j - m), GST first replaces q_j by min(q_j, cap) for
   j != k and q_k by 1 (cap = e^-gap). Then p = q / sum q, c = <p, g> and
       ST, GST:  out = p (g - c)                               (J(p) g)
       ZGR:      out = 1/2 p (g - g_k) + 1/2 (g_k - c) e_k
       DARN:     out = (g_k - c) (e_k - p)
   in two sweeps per row: q (stored in out) with its sum and <q, g>, then out = q (a g + b), plus
   a term at k.

   float32 rows of 8 to 15 categories are drawn QG_VL rows at a time, one row per vector lane (no
   horizontal reductions, which cost most of such a short row); their sums and running sums are
   taken in order, j = 0, 1, ..., on that path and row by row alike, so both give the same draw.

   qg_sample_keep_* / qg_backward_kept_*: the same pair with e_j = exp(x_j - m) kept from the draw
   (one more tensor of x's size) instead of recomputed from x and m: the backward pass then costs
   what softmax's does. Every value is the same as qg_sample's and qg_backward's.

   qg_gumbel_*: Gumbel-softmax with its sample drawn first: k as in qg_sample (or given), then the
   Gumbel noise conditioned on argmax(x + G) = k (Maddison et al. 2014), which together are
   exactly unconditioned Gumbel noise. With E_j = -log U_j, a = sum e / E_k and
   r_j = e_j / (a E_j + e_j) (r_k = 1), exp(x_j + G_j - x_k - G_k) = r_j, so
   y = softmax((x + G)/tau) = r^(1/tau) / sum r^(1/tau): one log and one division per element at
   tau = 1 (plus a log and an exp otherwise).

   qg_gumbel_rao_backward_*: GR-MCK's backward pass (Paulus et al. 2021): the average over `k`
   draws of that conditional noise of (1/tau) J(y) g, each draw made in the row's scratch memory
   (no memory grows with k); in float32 rows of QG_E_PASS_MIN and more, E = -log U is taken a
   vector at a time in a pass of its own before the relaxation's.

   qg_softmax_backward_*: c y (g - <y, g>), the backward pass of Gumbel-softmax (c = 1/tau).

   qg_uniform_*: u from the row stream for `count` consecutive counters (Bernoulli draws). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_qg_simd.h"

#ifndef QG_VARIANT
#define QG_VARIANT generic
#endif
#define QG_CAT2(a, b) a##_##b
#define QG_CAT(a, b) QG_CAT2(a, b)
#define QG_FN(name) QG_CAT(name, QG_VARIANT)

#define QG_PAR_IF _Pragma("omp parallel num_threads(nthreads) if(rows * n > 16384) reduction(+:bad, oom)")
#define QG_FOR _Pragma("omp for schedule(static)")
#define QG_PARALLEL_FOR _Pragma("omp parallel for schedule(static) num_threads(nthreads) if(rows * n > 16384)")
#define QG_PARALLEL_FOR_COUNT_BAD _Pragma("omp parallel for schedule(static) num_threads(nthreads) if(rows * n > 16384) reduction(+:bad)")

enum { QG_ST = 0, QG_ZGR = 1, QG_DARN = 2, QG_GST = 3 };

/* ---------------------------------------------------------------------------------------------
   Random streams. */

#define QG_GAMMA 0x9E3779B97F4A7C15ull
static inline uint64_t qg_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint64_t qg_bits64(uint64_t key, uint64_t c) { return qg_mix64(key + (c + 1u) * QG_GAMMA); }
static inline float qg_row_u_f32(uint64_t key, int64_t r) { return (float)(qg_bits64(key, (uint64_t)r) >> 40) * 0x1p-24f; }
static inline double qg_row_u_f64(uint64_t key, int64_t r) { return (double)(qg_bits64(key, (uint64_t)r) >> 11) * 0x1p-53; }
/* Chris Wellons' lowbias32 hash (a bijection of 32-bit integers with low avalanche bias). */
static inline uint32_t qg_h32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}
/* The noise uniforms U_j in (0, 1) of one row of one draw (a loop the compiler vectorises). */
#define QG_NOISE_ROW(T, SUF)                                                                      \
static inline void qg_noise_row_##SUF(uint64_t rowkey, T *u, int64_t n) {                         \
    const uint32_t lo = (uint32_t)rowkey, hi = (uint32_t)(rowkey >> 32);                          \
    for (int64_t j = 0; j < n; ++j) {                                                             \
        uint32_t h = qg_h32(((uint32_t)j * 0x9E3779B9u + lo) ^ hi);                               \
        u[j] = (T)(((float)(int32_t)(h >> 9) + 0.5f) * 0x1p-23f);                                 \
    }                                                                                             \
}
QG_NOISE_ROW(float, f32)
QG_NOISE_ROW(double, f64)

/* ---------------------------------------------------------------------------------------------
   Scalar row pieces: all of float64, and float32 rows shorter than 8. */

#define QG_SCALAR_PIECES(T, SUF, EXP)                                                             \
/* the row max in *m; 1 for a bad row (a NaN, +inf, or only -inf) */                             \
static inline int qg_max_##SUF##s(const T *xr, int64_t n, T *m_out) {                             \
    T m = -INFINITY;                                                                              \
    int bad = 0;                                                                                  \
    for (int64_t j = 0; j < n; ++j) { bad |= xr[j] != xr[j]; m = xr[j] > m ? xr[j] : m; }        \
    *m_out = m;                                                                                   \
    return bad || isinf(m);                                                                       \
}                                                                                                 \
/* e_j = exp(x_j - m) into e; their sum */                                                        \
static inline T qg_expsum_##SUF##s(const T *xr, T m, T *e, int64_t n) {                           \
    T s = 0;                                                                                      \
    for (int64_t j = 0; j < n; ++j) { T v = EXP(xr[j] - m); e[j] = v; s += v; }                   \
    return s;                                                                                     \
}                                                                                                 \
/* the first j whose running sum of e exceeds v (else the last j with e_j > 0) */                 \
static inline int64_t qg_search_##SUF##s(const T *e, int64_t n, T v) {                            \
    T acc = 0;                                                                                    \
    for (int64_t j = 0; j < n; ++j) {                                                             \
        acc += e[j];                                                                              \
        if (acc > v) return j;                                                                    \
    }                                                                                             \
    for (int64_t j = n - 1; j >= 0; --j)                                                          \
        if (e[j] > 0) return j;                                                                   \
    return 0; /* only on a bad row, which the caller rejects */                                   \
}
QG_SCALAR_PIECES(float, f32, expf)
QG_SCALAR_PIECES(double, f64, exp)

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

#define QG_SCALAR_ROWS(T, SUF, EXP, LOG)                                                          \
static inline void qg_backward_row_##SUF##s(const T *xr, const T *er, const T *gr, T m, int64_t k, T *o, \
                                            int64_t n, int mode, T cap) {                         \
    T s = 0, dot = 0;                                                                             \
    for (int64_t j = 0; j < n; ++j) {                                                             \
        T q = er ? er[j] : EXP(xr[j] - m);                                                        \
        if (mode == QG_GST) q = q < cap ? q : cap;                                                \
        o[j] = q; s += q; dot += q * gr[j];                                                       \
    }                                                                                             \
    T a, b, extra;                                                                                \
    qg_coefficients_##SUF(mode, s, dot, o, k, gr[k], &a, &b, &extra);                             \
    for (int64_t j = 0; j < n; ++j) o[j] *= a * gr[j] + b;                                        \
    o[k] += extra;                                                                                \
}                                                                                                 \
/* y_j = r_j = e_j / (a E_j + e_j), E = -log U, raised to 1/tau; r_k = 1 (y may be e or u: each  \
   element is read before it is written). Returns sum r, and <r, g> in *dot when g is given. */   \
static inline T qg_relax_row_##SUF##s(const T *e, T *y, const T *u, const T *g, T *dot, int64_t k, T a, \
                                      T tau, int64_t n) {                                         \
    T s = 0, d = 0;                                                                               \
    for (int64_t j = 0; j < n; ++j) {                                                             \
        T r = e[j] / (a * -LOG(u[j]) + e[j]);                                                     \
        if (tau != 1) r = EXP(LOG(r) / tau);                                                      \
        y[j] = r;                                                                                 \
        s += r;                                                                                   \
        if (g) d += r * g[j];                                                                     \
    }                                                                                             \
    s += 1 - y[k];                                                                                \
    if (g) d += (1 - y[k]) * g[k];                                                                \
    y[k] = 1;                                                                                     \
    if (g) *dot = d;                                                                              \
    return s;                                                                                     \
}
QG_SCALAR_ROWS(float, f32, expf, logf)
QG_SCALAR_ROWS(double, f64, exp, log)

/* ---------------------------------------------------------------------------------------------
   float32 vector row pieces (rows of 8 and more). */

static inline int qg_max_f32v(const float *xr, int64_t n, float *m_out) {
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
        qv v = n >= QG_VL ? qv_load(xr + n - QG_VL) : qv_load_part(xr + j, n - j, -INFINITY);
        nan = qnan_add(nan, v);
        vm = qv_max(vm, v);
    }
    float m = qv_hmax(vm);
    *m_out = m;
    return qnan_any(nan) || isinf(m);
}

static inline float qg_expsum_f32v(const float *xr, float m, float *e, int64_t n) {
    const int64_t full = n - n % QG_VL;
    const qv vmax = qv_splat(m);
    qv acc = qv_splat(0.0f);
    int64_t j;
    for (j = 0; j < full; j += QG_VL) {
        qv v = qv_exp_nonpos(qv_load(xr + j) - vmax);
        qv_store(e + j, v);
        acc += v;
    }
    if (j < n && n >= QG_VL) {
        qv v = qv_exp_nonpos(qv_load(xr + n - QG_VL) - vmax);
        qv_store(e + n - QG_VL, v);
        acc += qv_keep_last(v, n - j, 0.0f);
    } else if (j < n) {
        qv v = qv_exp_nonpos(qv_load_part(xr + j, n - j, -INFINITY) - vmax);   /* 0 past the row */
        qv_store_part(e + j, v, n - j);
        acc += v;
    }
    return qv_hsum(acc);
}

/* The branch-free search: k = the number of running sums (QG_VL at a time: in-vector prefix
   sums plus the total so far) that are <= v. Rounding can make these running sums differ from
   the sequential ones in the last bit, so a k past the end or on a category of zero mass is redone
   by the sequential scan: a zero-mass category is never returned. */
static inline int64_t qg_search_f32v(const float *e, int64_t n, float v) {
    const int64_t full = n - n % QG_VL;
    const qv vv = qv_splat(v);
    qv run = qv_splat(0.0f);
    int64_t k = 0, j;
    for (j = 0; j < full; j += QG_VL) {
        qv t = qv_prefix(qv_load(e + j)) + run;
        k += qv_count_le(t, vv, QG_VL);
        run = qv_last(t);
    }
    if (j < n && n >= QG_VL) {
        qv t = qv_prefix(qv_keep_last(qv_load(e + n - QG_VL), n - j, 0.0f)) + run;
        k += qv_count_le(qv_keep_last(t, n - j, INFINITY), vv, QG_VL);
    } else if (j < n) {
        k += qv_count_le(qv_prefix(qv_load_part(e + j, n - j, 0.0f)) + run, vv, n - j);
    }
    if (k >= n || !(e[k] > 0)) k = qg_search_f32s(e, n, v);
    return k;
}

static inline void qg_backward_row_f32v(const float *xr, const float *er, const float *gr, float m, int64_t k,
                                        float *o, int64_t n, int mode, float cap) {
    const int64_t full = n - n % QG_VL;
    const qv vmax = qv_splat(m), vcap = qv_splat(cap);
    qv vs = qv_splat(0.0f), vdot = qv_splat(0.0f);
    int64_t j;
    for (j = 0; j < full; j += QG_VL) {
        qv q = er ? qv_load(er + j) : qv_exp_nonpos(qv_load(xr + j) - vmax);
        if (mode == QG_GST) q = qv_min(q, vcap);
        qv_store(o + j, q);
        vs += q;
        vdot += q * qv_load(gr + j);
    }
    if (j < n && n >= QG_VL) {
        qv q = er ? qv_load(er + n - QG_VL) : qv_exp_nonpos(qv_load(xr + n - QG_VL) - vmax);
        if (mode == QG_GST) q = qv_min(q, vcap);
        qv_store(o + n - QG_VL, q);
        q = qv_keep_last(q, n - j, 0.0f);
        vs += q;
        vdot += q * qv_load(gr + n - QG_VL);
    } else if (j < n) {
        qv q = er ? qv_load_part(er + j, n - j, 0.0f)
                   : qv_exp_nonpos(qv_load_part(xr + j, n - j, -INFINITY) - vmax);
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

static inline qv qv_neg_log(qv u) { qv out = qv_splat(0.0f) - qv_log_normal(u); return out; }
/* E = -log U from the uniforms at u, or read as they are where `is_e` */
static inline qv qg_e_of(const float *u, int is_e) { return is_e ? qv_load(u) : qv_neg_log(qv_load(u)); }
static inline qv qg_e_of_part(const float *u, int64_t count, int is_e) {
    return is_e ? qv_load_part(u, count, 1.0f) : qv_neg_log(qv_load_part(u, count, 0.5f));
}
/* u: the noise uniforms U, or with `is_e` their -log U already taken. */
static inline float qg_relax_row_f32v(const float *ep, float *y, const float *u, int is_e, const float *g, float *dot,
                                      int64_t k, float a, float tau, int64_t n) {
    const int64_t full = n - n % QG_VL;
    const qv va = qv_splat(a), vinv = qv_splat(1.0f / tau), zero = qv_splat(0.0f);
    qv vs = zero, vd = zero;
    int64_t j;
    /* the row's end, read before y (which may be e or u) is written */
    const qv e_end = n >= QG_VL ? qv_load(ep + n - QG_VL) : zero;
    const qv u_end = n >= QG_VL ? qv_load(u + n - QG_VL) : zero;
    for (j = 0; j < full; j += QG_VL) {
        qv e = qv_load(ep + j);
        qv r = e / qv_fmadd(va, qg_e_of(u + j, is_e), e);
        if (tau != 1.0f) r = qv_exp_nonpos(qv_log(r) * vinv);
        qv_store(y + j, r);
        vs += r;
        if (g) vd += r * qv_load(g + j);
    }
    if (j < n && n >= QG_VL) {
        qv r = e_end / qv_fmadd(va, (is_e ? u_end : qv_neg_log(u_end)), e_end);
        if (tau != 1.0f) r = qv_exp_nonpos(qv_log(r) * vinv);
        qv_store(y + n - QG_VL, r);
        r = qv_keep_last(r, n - j, 0.0f);
        vs += r;
        if (g) vd += r * qv_load(g + n - QG_VL);
    } else if (j < n) {   /* past the row: e = 0 and U = 1/2, so r = 0 */
        qv e = qv_load_part(ep + j, n - j, 0.0f);
        qv r = e / qv_fmadd(va, qg_e_of_part(u + j, n - j, is_e), e);
        if (tau != 1.0f) r = qv_exp_nonpos(qv_log(r) * vinv);
        qv_store_part(y + j, r, n - j);
        vs += r;
        if (g) vd += r * qv_load_part(g + j, n - j, 0.0f);
    }
    float s = qv_hsum(vs) + (1.0f - y[k]);
    if (g) *dot = qv_hsum(vd) + (1.0f - y[k]) * g[k];
    y[k] = 1.0f;
    return s;
}

/* out_j += c r_j (g_j - dot) */
static inline void qg_accumulate_f32v(float *out, const float *r, const float *g, float c, float dot, int64_t n) {
    const int64_t full = n - n % QG_VL;
    const qv vc = qv_splat(c), vdot = qv_splat(dot);
    int64_t j;
    for (j = 0; j < full; j += QG_VL)
        qv_store(out + j, qv_load(out + j) + vc * qv_load(r + j) * (qv_load(g + j) - vdot));
    for (; j < n; ++j) out[j] += c * r[j] * (g[j] - dot);
}
static inline void qg_scale_f32v(float *y, float c, int64_t n) {
    const int64_t full = n - n % QG_VL;
    const qv vc = qv_splat(c);
    int64_t j;
    for (j = 0; j < full; j += QG_VL) qv_store(y + j, qv_load(y + j) * vc);
    for (; j < n; ++j) y[j] *= c;
}

/* Row pieces by length: vectors from 8 categories up (float32), scalars otherwise. Rows of
   QG_SHORT_MIN to QG_SHORT_MAX categories take their exponentials from the vector code but sum
   and search them in order, j = 0, 1, ..., as qg_sample_block_f32 does for QG_VL rows at once:
   the same draw row by row or by blocks. */
#define QG_SHORT_MIN 8
#define QG_SHORT_MAX 15
static inline int qg_short_f32(int64_t n) { return n >= QG_SHORT_MIN && n <= QG_SHORT_MAX; }
static inline int qg_max_f32(const float *x, int64_t n, float *m) { return n < 8 ? qg_max_f32s(x, n, m) : qg_max_f32v(x, n, m); }
static inline float qg_expsum_f32(const float *x, float m, float *e, int64_t n) {
    if (n < 8) return qg_expsum_f32s(x, m, e, n);
    float s = qg_expsum_f32v(x, m, e, n);
    if (qg_short_f32(n)) {
        s = 0;
        for (int64_t j = 0; j < n; ++j) s += e[j];
    }
    return s;
}
static inline int64_t qg_search_f32(const float *e, int64_t n, float v) {
    return n < 8 || qg_short_f32(n) ? qg_search_f32s(e, n, v) : qg_search_f32v(e, n, v);
}

/* The draw for QG_VL consecutive rows of QG_SHORT_MIN to QG_SHORT_MAX categories, lane L of each
   vector holding row r0 + L: the row max, the exponentials, their sum and the running sums, each
   in the order the row-by-row code uses, so each row gets the same k, e and m as there. Writes
   the one-hot d, idx, and e (unless NULL) or the row max m (unless NULL); returns -1 and writes
   nothing if a row is bad (the caller then takes the rows one by one). */
static int qg_sample_block_f32(const float *x, float *d, float *e, int64_t *idx, float *m_out, uint64_t key,
                               int64_t r0, int64_t n) {
    float t[QG_SHORT_MAX][QG_VL] __attribute__((aligned(64)));
    float lane[QG_VL] __attribute__((aligned(64)));
    for (int64_t l = 0; l < QG_VL; ++l)
        for (int64_t j = 0; j < n; ++j) t[j][l] = x[l * n + j];
    qv m = qv_splat(-INFINITY);
    qnan nan = qnan_none();
    for (int64_t j = 0; j < n; ++j) {
        qv v = qv_load(t[j]);
        nan = qnan_add(nan, v);
        m = qv_max(m, v);
    }
    if (qnan_any(nan)) return -1;
    qv_store(lane, m);
    for (int64_t l = 0; l < QG_VL; ++l)
        if (isinf(lane[l])) return -1;
    if (m_out) memcpy(m_out, lane, sizeof lane);
    qv s = qv_splat(0.0f);
    for (int64_t j = 0; j < n; ++j) {
        qv v = qv_exp_nonpos(qv_load(t[j]) - m);
        qv_store(t[j], v);
        s += v;
    }
    for (int64_t l = 0; l < QG_VL; ++l) lane[l] = qg_row_u_f32(key, r0 + l);
    const qv v = qv_load(lane) * s, zero = qv_splat(0.0f), one = qv_splat(1.0f);
    qv run = zero, count = zero;
    for (int64_t j = 0; j < n; ++j) {          /* k = how many running sums are <= v */
        run += qv_load(t[j]);
        count += qv_lt_select(v, run, zero, one);
    }
    qv_store(lane, count);
    memset(d, 0, (size_t)(QG_VL * n) * sizeof(float));
    for (int64_t l = 0; l < QG_VL; ++l) {
        int64_t k = (int64_t)lane[l];
        if (k >= n)                              /* rounding: the last category of positive mass */
            for (k = n - 1; k > 0 && !(t[k][l] > 0); --k) {}
        d[l * n + k] = 1;
        idx[l] = k;
        if (e)
            for (int64_t j = 0; j < n; ++j) e[l * n + j] = t[j][l];
    }
    return 0;
}
static inline int qg_short_f64(int64_t n) { (void)n; return 0; }
static int qg_sample_block_f64(const double *x, double *d, double *e, int64_t *idx, double *m_out, uint64_t key,
                               int64_t r0, int64_t n) {
    (void)x; (void)d; (void)e; (void)idx; (void)m_out; (void)key; (void)r0; (void)n;
    return -1;
}
static inline void qg_backward_row_f32(const float *x, const float *e, const float *g, float m, int64_t k, float *o,
                                       int64_t n, int mode, float cap) {
    if (n < 8) qg_backward_row_f32s(x, e, g, m, k, o, n, mode, cap);
    else qg_backward_row_f32v(x, e, g, m, k, o, n, mode, cap);
}
static inline float qg_relax_row_f32(const float *e, float *y, const float *u, const float *g, float *dot, int64_t k,
                                     float a, float tau, int64_t n) {
    return n < 8 ? qg_relax_row_f32s(e, y, u, g, dot, k, a, tau, n) : qg_relax_row_f32v(e, y, u, 0, g, dot, k, a, tau, n);
}
#ifndef QG_E_PASS_MIN
#define QG_E_PASS_MIN 32
#endif
/* qg_relax_row for one draw of the row stream `rowkey`, with a = s / E_k, y as the scratch: in
   rows of 8 and more E = -log U is taken a vector at a time before the pass (E_k from it too). */
static inline float qg_relax_noise_row_f32(const float *e, float *y, uint64_t rowkey, const float *g, float *dot,
                                           int64_t k, float s, float tau, int64_t n) {
    qg_noise_row_f32(rowkey, y, n);
    if (n < 8) return qg_relax_row_f32s(e, y, y, g, dot, k, s / -logf(y[k]), tau, n);
    if (n < QG_E_PASS_MIN) return qg_relax_row_f32v(e, y, y, 0, g, dot, k, s / -logf(y[k]), tau, n);
    const int64_t full = n - n % QG_VL;
    const qv zero = qv_splat(0.0f);
    int64_t j;
    for (j = 0; j < full; j += QG_VL) qv_store(y + j, zero - qv_log_normal(qv_load(y + j)));
    if (j < n) qv_store_part(y + j, zero - qv_log_normal(qv_load_part(y + j, n - j, 0.5f)), n - j);
    return qg_relax_row_f32v(e, y, y, 1, g, dot, k, s / y[k], tau, n);
}
static inline void qg_accumulate_f32(float *out, const float *r, const float *g, float c, float dot, int64_t n) {
    qg_accumulate_f32v(out, r, g, c, dot, n);
}
static inline void qg_scale_f32(float *y, float c, int64_t n) { qg_scale_f32v(y, c, n); }
static inline float qg_dot_f32(const float *a, const float *b, int64_t n) {
    const int64_t full = n - n % QG_VL;
    qv acc = qv_splat(0.0f);
    int64_t j;
    for (j = 0; j < full; j += QG_VL) acc += qv_load(a + j) * qv_load(b + j);
    float s = qv_hsum(acc);
    for (; j < n; ++j) s += a[j] * b[j];
    return s;
}

static inline int qg_max_f64(const double *x, int64_t n, double *m) { return qg_max_f64s(x, n, m); }
static inline double qg_expsum_f64(const double *x, double m, double *e, int64_t n) { return qg_expsum_f64s(x, m, e, n); }
static inline int64_t qg_search_f64(const double *e, int64_t n, double v) { return qg_search_f64s(e, n, v); }
static inline void qg_backward_row_f64(const double *x, const double *e, const double *g, double m, int64_t k, double *o,
                                       int64_t n, int mode, double cap) {
    qg_backward_row_f64s(x, e, g, m, k, o, n, mode, cap);
}
static inline double qg_relax_row_f64(const double *e, double *y, const double *u, const double *g, double *dot,
                                      int64_t k, double a, double tau, int64_t n) {
    return qg_relax_row_f64s(e, y, u, g, dot, k, a, tau, n);
}
static inline double qg_relax_noise_row_f64(const double *e, double *y, uint64_t rowkey, const double *g,
                                            double *dot, int64_t k, double s, double tau, int64_t n) {
    qg_noise_row_f64(rowkey, y, n);
    return qg_relax_row_f64s(e, y, y, g, dot, k, s / -log(y[k]), tau, n);
}
static inline void qg_accumulate_f64(double *out, const double *r, const double *g, double c, double dot, int64_t n) {
    for (int64_t j = 0; j < n; ++j) out[j] += c * r[j] * (g[j] - dot);
}
static inline void qg_scale_f64(double *y, double c, int64_t n) { for (int64_t j = 0; j < n; ++j) y[j] *= c; }
static inline double qg_dot_f64(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
    return s;
}

/* ---------------------------------------------------------------------------------------------
   Rows and entry points, for float and double. */

#define QG_ENTRY_POINTS(T, SUF, LOG)                                                              \
static inline int qg_sample_row_##SUF(const T *xr, T *dr, int64_t *idx, T *mr, T u, int64_t n) {  \
    T m;                                                                                          \
    if (qg_max_##SUF(xr, n, &m)) { memset(dr, 0, (size_t)n * sizeof(T)); *idx = 0; *mr = 0; return 1; } \
    T s = qg_expsum_##SUF(xr, m, dr, n);                                                          \
    int64_t k = qg_search_##SUF(dr, n, u * s);                                                    \
    memset(dr, 0, (size_t)n * sizeof(T));                                                         \
    dr[k] = 1;                                                                                    \
    *idx = k;                                                                                     \
    *mr = m;                                                                                      \
    return 0;                                                                                     \
}                                                                                                 \
                                                                                                  \
static inline int qg_sample_keep_row_##SUF(const T *xr, T *dr, T *er, int64_t *idx, T u, int64_t n) { \
    T m;                                                                                          \
    memset(dr, 0, (size_t)n * sizeof(T));                                                         \
    if (qg_max_##SUF(xr, n, &m)) { memset(er, 0, (size_t)n * sizeof(T)); *idx = 0; return 1; }  \
    T s = qg_expsum_##SUF(xr, m, er, n);                                                          \
    int64_t k = qg_search_##SUF(er, n, u * s);                                                    \
    dr[k] = 1;                                                                                    \
    *idx = k;                                                                                     \
    return 0;                                                                                     \
}                                                                                                 \
                                                                                                  \
/* The rows of a draw: QG_VL at a time where n is short (unit b < blocks), then one by one;     \
   e (kept exponentials) or m (row maxima), the other NULL. */                                    \
static int64_t qg_sample_rows_##SUF(const T *x, T *d, T *e, int64_t *idx, T *m, uint64_t key, int64_t rows, \
                                    int64_t n, int nthreads) {                                    \
    (void)nthreads;   /* unused when built without OpenMP */                                      \
    const int64_t blocks = qg_short_##SUF(n) ? rows / QG_VL : 0;                                  \
    const int64_t units = blocks + (rows - blocks * QG_VL);                                       \
    int64_t bad = 0;                                                                              \
    QG_PARALLEL_FOR_COUNT_BAD                                                                     \
    for (int64_t b = 0; b < units; ++b) {                                                         \
        int64_t r0 = b < blocks ? b * QG_VL : blocks * QG_VL + (b - blocks);                     \
        int64_t r1 = b < blocks ? r0 + QG_VL : r0 + 1;                                           \
        if (b < blocks && qg_sample_block_##SUF(x + r0 * n, d + r0 * n, e ? e + r0 * n : NULL, idx + r0, \
                                                 m ? m + r0 : NULL, key, r0, n) == 0)             \
            continue;                                                                             \
        for (int64_t r = r0; r < r1; ++r)                                                         \
            bad += e ? qg_sample_keep_row_##SUF(x + r * n, d + r * n, e + r * n, idx + r, qg_row_u_##SUF(key, r), n) \
                     : qg_sample_row_##SUF(x + r * n, d + r * n, idx + r, m + r, qg_row_u_##SUF(key, r), n); \
    }                                                                                             \
    return bad;                                                                                   \
}                                                                                                 \
                                                                                                  \
int64_t QG_FN(qg_sample_##SUF)(const T *x, T *d, int64_t *idx, T *m, uint64_t key, int64_t rows, int64_t n, \
                               int nthreads) {                                                    \
    return qg_sample_rows_##SUF(x, d, NULL, idx, m, key, rows, n, nthreads);                      \
}                                                                                                 \
                                                                                                  \
void QG_FN(qg_backward_##SUF)(const T *x, const T *m, const int64_t *idx, const T *g, T *out, int mode, T cap, \
                              int64_t rows, int64_t n, int nthreads) {                            \
    (void)nthreads;                                                                               \
    QG_PARALLEL_FOR                                                                               \
    for (int64_t r = 0; r < rows; ++r)                                                            \
        qg_backward_row_##SUF(x + r * n, NULL, g + r * n, m[r], idx[r], out + r * n, n, mode, cap); \
}                                                                                                 \
                                                                                                  \
/* qg_sample with e_j = exp(x_j - m) kept in e for qg_backward_kept (no row max written). */      \
int64_t QG_FN(qg_sample_keep_##SUF)(const T *x, T *d, T *e, int64_t *idx, uint64_t key, int64_t rows, \
                                    int64_t n, int nthreads) {                                    \
    return qg_sample_rows_##SUF(x, d, e, idx, NULL, key, rows, n, nthreads);                      \
}                                                                                                 \
                                                                                                  \
/* qg_backward from the e that qg_sample_keep kept: no exponential is recomputed. */              \
void QG_FN(qg_backward_kept_##SUF)(const T *e, const int64_t *idx, const T *g, T *out, int mode, T cap, \
                                   int64_t rows, int64_t n, int nthreads) {                       \
    (void)nthreads;                                                                               \
    QG_PARALLEL_FOR                                                                               \
    for (int64_t r = 0; r < rows; ++r)                                                            \
        qg_backward_row_##SUF(NULL, e + r * n, g + r * n, 0, idx[r], out + r * n, n, mode, cap);  \
}                                                                                                 \
                                                                                                  \
/* One row of qg_gumbel: y (and the one-hot d, if given) for the drawn or the given k. */         \
static inline int qg_gumbel_row_##SUF(const T *xr, T *yr, T *dr, T *u, int64_t given, int64_t *idx, T ur, \
                                      uint64_t rowkey, T tau, int64_t n) {                        \
    T m;                                                                                          \
    int bad = qg_max_##SUF(xr, n, &m) || given >= n;                                              \
    T s = bad ? 0 : qg_expsum_##SUF(xr, m, yr, n);                                                \
    int64_t k = bad ? 0 : given >= 0 ? given : qg_search_##SUF(yr, n, ur * s);                    \
    if (bad || !(yr[k] > 0)) {                                                                    \
        memset(yr, 0, (size_t)n * sizeof(T));                                                     \
        if (dr) memset(dr, 0, (size_t)n * sizeof(T));                                             \
        *idx = 0;                                                                                 \
        return 1;                                                                                 \
    }                                                                                             \
    qg_noise_row_##SUF(rowkey, u, n);                                                             \
    T total = qg_relax_row_##SUF(yr, yr, u, NULL, NULL, k, s / -LOG(u[k]), tau, n);               \
    qg_scale_##SUF(yr, (T)1 / total, n);                                                          \
    if (dr) { memset(dr, 0, (size_t)n * sizeof(T)); dr[k] = 1; }                                  \
    *idx = k;                                                                                     \
    return 0;                                                                                     \
}                                                                                                 \
                                                                                                  \
/* y = softmax((x + G)/tau) (and d = one_hot(k) unless d is NULL) with k drawn from the row       \
   stream `key` (or taken from idx_in unless NULL) and G from the noise stream `noise_key`; the   \
   number of bad rows (a bad row of x, or a given k of zero mass), or -1 if out of memory. */     \
int64_t QG_FN(qg_gumbel_##SUF)(const T *x, T *y, T *d, const int64_t *idx_in, int64_t *idx, uint64_t key, \
                               uint64_t noise_key, T tau, int64_t rows, int64_t n, int nthreads) { \
    (void)nthreads;                                                                               \
    int64_t bad = 0, oom = 0;                                                                     \
    QG_PAR_IF                                                                                     \
    {                                                                                             \
        T *u = (T *)malloc((size_t)n * sizeof(T));                                                \
        oom += u == NULL;                                                                         \
        QG_FOR                                                                                    \
        for (int64_t r = 0; r < rows; ++r) {                                                      \
            if (!u) continue;                                                                     \
            int64_t given = idx_in ? (idx_in[r] >= 0 ? idx_in[r] : n) : -1;                       \
            bad += qg_gumbel_row_##SUF(x + r * n, y + r * n, d ? d + r * n : NULL, u, given, idx + r, \
                                       qg_row_u_##SUF(key, r), qg_bits64(noise_key, (uint64_t)r), tau, n); \
        }                                                                                         \
        free(u);                                                                                  \
    }                                                                                             \
    return oom ? -1 : bad;                                                                        \
}                                                                                                 \
                                                                                                  \
/* GR-MCK's gradient: out = 1/(k tau) sum over draws i < k of J(y_i) g, y_i the relaxed sample of \
   draw i (noise row keys bits64(noise_key, i * rows + r)) conditioned on idx. 0, or -1 if out   \
   of memory. */                                                                                  \
int64_t QG_FN(qg_gumbel_rao_backward_##SUF)(const T *x, const int64_t *idx, const T *g, T *out, uint64_t noise_key, \
                                            T tau, int64_t k, int64_t rows, int64_t n, int nthreads) { \
    (void)nthreads;                                                                               \
    int64_t bad = 0, oom = 0;                                                                     \
    QG_PAR_IF                                                                                     \
    {                                                                                             \
        T *e = (T *)malloc(2 * (size_t)n * sizeof(T));                                            \
        oom += e == NULL;                                                                         \
        QG_FOR                                                                                    \
        for (int64_t r = 0; r < rows; ++r) {                                                      \
            if (!e) continue;                                                                     \
            const T *xr = x + r * n, *gr = g + r * n;                                             \
            T *o = out + r * n, *y = e + n, m;                                                    \
            int64_t c = idx[r];                                                                   \
            memset(o, 0, (size_t)n * sizeof(T));                                                  \
            if (qg_max_##SUF(xr, n, &m) || c < 0 || c >= n) { bad += 1; continue; }               \
            T s = qg_expsum_##SUF(xr, m, e, n), dot = 0;                                          \
            for (int64_t i = 0; i < k; ++i) {                                                     \
                T total = qg_relax_noise_row_##SUF(e, y, qg_bits64(noise_key, (uint64_t)i * (uint64_t)rows + (uint64_t)r), \
                                                   gr, &dot, c, s, tau, n);                        \
                qg_accumulate_##SUF(o, y, gr, (T)1 / total, dot / total, n);                      \
            }                                                                                     \
            qg_scale_##SUF(o, (T)1 / ((T)k * tau), n);                                            \
        }                                                                                         \
        free(e);                                                                                  \
    }                                                                                             \
    return oom ? -1 : bad;                                                                        \
}                                                                                                 \
                                                                                                  \
/* out = c y (g - <y, g>) row by row: the softmax's backward at its output y, scaled by c. */     \
void QG_FN(qg_softmax_backward_##SUF)(const T *y, const T *g, T *out, T c, int64_t rows, int64_t n, int nthreads) { \
    (void)nthreads;                                                                               \
    QG_PARALLEL_FOR                                                                               \
    for (int64_t r = 0; r < rows; ++r) {                                                          \
        const T *yr = y + r * n, *gr = g + r * n;                                                 \
        T *o = out + r * n;                                                                       \
        memset(o, 0, (size_t)n * sizeof(T));                                                      \
        qg_accumulate_##SUF(o, yr, gr, c, qg_dot_##SUF(yr, gr, n), n);                            \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void QG_FN(qg_uniform_##SUF)(uint64_t key, int64_t offset, int64_t count, T *out, int nthreads) {  \
    (void)nthreads;                                                                               \
    const int64_t rows = count, n = 1;                                                            \
    QG_PARALLEL_FOR                                                                               \
    for (int64_t i = 0; i < count; ++i) out[i] = qg_row_u_##SUF(key, offset + i);                 \
}

QG_ENTRY_POINTS(float, f32, logf)
QG_ENTRY_POINTS(double, f64, log)
