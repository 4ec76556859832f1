/* Fused CPU kernels for the straight-through family; quasigrad._native compiles and loads them.

   Layout: `rows` rows of `n` contiguous categories. Every kernel is parallel over rows with
   OpenMP; the shared library is linked to libgomp.so.1, which resolves to the copy PyTorch has
   already loaded, so the two share one thread pool.

   qg_sample_*: softmax, the categorical draw and the one-hot in one sweep per row:
       p     <- softmax(x)                   (saved for the backward pass)
       d     <- one_hot(k)                   (the estimator's forward value)
       idx   <- k
       total <- sum_j exp(x_j - max x)       (NaN for a bad row: a NaN or +inf logit, or all -inf)
   The draw is the inverse CDF with the row's uniform number u in [0, 1): with e_j = exp(x_j - m),
   k is the first j whose running sum e_0 + ... + e_j exceeds v = u * sum_j e_j. A category with
   e_j = 0 (logit -inf, or so small that it underflows) never raises the running sum, so it is
   never drawn; if rounding leaves v at or above the final running sum, the last category with
   e_j > 0 is taken.

   qg_gst_*: in place on p, GST's surrogate at tau = 1: q_j = min(p_j, p_max e^-gap) for j != k,
   q_k = p_max, then q normalised.

   qg_zgr_*, qg_darn_*: backward passes (g the upstream gradient, k the drawn index):
       ZGR:  out = 1/2 p (g - g_k) + 1/2 (g_k - <p, g>) e_k
       DARN: out = (g_k - <p, g>) (e_k - p)

   The float32 sweeps are written with GCC/Clang vector extensions (8 lanes) so that they
   vectorise without -ffast-math, whose assumptions (no NaN, no inf) the NaN checks and the -inf
   masks here rely on not being made. float64 uses plain loops and libm's exp. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define QG_PAR _Pragma("omp parallel for schedule(static) num_threads(nthreads) if(rows * n > 16384)")

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f v8_splat(float a) { v8f v = {a, a, a, a, a, a, a, a}; return v; }
static inline v8f v8_load(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
static inline void v8_store(float *p, v8f v) { memcpy(p, &v, sizeof v); }
/* the first `count` (< 8) lanes from p, the others `fill` */
static inline v8f v8_load_part(const float *p, int64_t count, float fill) {
    v8f v = v8_splat(fill);
    for (int64_t t = 0; t < count; ++t) v[t] = p[t];
    return v;
}
static inline void v8_store_part(float *p, v8f v, int64_t count) {
    for (int64_t t = 0; t < count; ++t) p[t] = v[t];
}
static inline v8f v8_select(v8i mask, v8f a, v8f b) { return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask)); }
static inline float v8_sum(v8f v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

/* exp(x) for x <= 0 (or NaN): Cephes' single-precision range reduction and polynomial; relative
   error about 1e-7 on normal results; -inf gives 0, NaN gives NaN, and results below FLT_MIN are
   denormal (2^k is applied in two halves so that each factor is a normal number). */
static inline v8f v8_exp_nonpos(v8f x) {
    const v8f lo = v8_splat(-110.0f);
    v8f xc = v8_select(x < lo, lo, x); /* NaN compares false and stays NaN */
    v8i k = __builtin_convertvector(xc * 1.44269504088896341f - 0.5f, v8i); /* xc <= 0: truncation is ceil */
    v8f kf = __builtin_convertvector(k, v8f);
    v8f r = xc - kf * 0.693359375f;
    r = r + kf * 2.12194440e-4f;
    v8f r2 = r * r;
    v8f poly = r * 1.9875691500e-4f + 1.3981999507e-3f;
    poly = poly * r + 8.3334519073e-3f;
    poly = poly * r + 4.1665795894e-2f;
    poly = poly * r + 1.6666665459e-1f;
    poly = poly * r + 5.0000001201e-1f;
    poly = poly * r2 + r + 1.0f;
    v8i k1 = k >> 1, k2 = k - k1;
    return poly * (v8f)((k1 + 127) << 23) * (v8f)((k2 + 127) << 23);
}

/* The inverse-CDF search of one row of unnormalised masses e: the first j whose running sum
   exceeds v, scanning in order. */
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

/* Inclusive prefix sums of the 8 lanes, by three shifted adds. */
static inline v8f v8_prefix(v8f t) {
    const v8f zero = v8_splat(0.0f);
    t += __builtin_shufflevector(t, zero, 8, 0, 1, 2, 3, 4, 5, 6);
    t += __builtin_shufflevector(t, zero, 8, 8, 0, 1, 2, 3, 4, 5);
    t += __builtin_shufflevector(t, zero, 8, 8, 8, 8, 0, 1, 2, 3);
    return t;
}

/* The same search without branches: k = the number of running sums (8 lanes at a time, each
   vector's in-lane prefix sums plus the running total) that are <= v. Rounding can make these
   running sums differ from the sequential ones in the last bit, so a k that lands on a category
   of zero mass, or past the end, is redone by the sequential scan: a zero-mass category is never
   returned. */
static inline int64_t qg_search_f32(const float *e, int64_t n, float v) {
    const v8f vv = v8_splat(v);
    v8f acc = v8_splat(0.0f);
    v8i count = {0};
    int64_t j = 0, full = n - n % 8;
    for (; j < full; j += 8) {
        v8f t = v8_prefix(v8_load(e + j)) + acc;
        count += t <= vv;   /* true is -1 */
        acc = __builtin_shufflevector(t, t, 7, 7, 7, 7, 7, 7, 7, 7);
    }
    if (j < n) {
        v8f t = v8_prefix(v8_load_part(e + j, n - j, 0.0f)) + acc;
        v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
        count += (t <= vv) & (lane < (int32_t)(n - j));
    }
    int64_t k = 0;
    for (int t = 0; t < 8; ++t) k -= count[t];
    if (k >= n || !(e[k] > 0)) return qg_search_seq_f32(e, n, v);
    return k;
}

/* One row of qg_sample_* in plain scalar code: all of float64, and float32 rows shorter than 8
   (where libm's expf beats 8-lane vectors padded out). */
#define QG_SAMPLE_ROW(T, SUF, EXP, SEARCH)                                                        \
static inline void qg_sample_row_##SUF(const T *xr, T *pr, T *dr, int64_t *idx, T u, T *total,    \
                                       int64_t n) {                                               \
    T m = -INFINITY;                                                                              \
    int bad = 0;                                                                                  \
    for (int64_t j = 0; j < n; ++j) { bad |= xr[j] != xr[j]; m = xr[j] > m ? xr[j] : m; }        \
    memset(dr, 0, (size_t)n * sizeof(T));                                                         \
    if (bad || isinf(m)) { *total = NAN; *idx = 0; return; }                                      \
    T s = 0;                                                                                      \
    for (int64_t j = 0; j < n; ++j) { T e = EXP(xr[j] - m); pr[j] = e; s += e; }                  \
    *total = s;                                                                                   \
    int64_t k = SEARCH(pr, n, u * s);                                                             \
    *idx = k;                                                                                     \
    T inv = (T)1 / s;                                                                             \
    for (int64_t j = 0; j < n; ++j) pr[j] *= inv;                                                 \
    dr[k] = 1;                                                                                    \
}
QG_SAMPLE_ROW(float, f32, expf, qg_search_f32)
QG_SAMPLE_ROW(double, f64, exp, qg_search_seq_f64)

void qg_sample_f32(const float *x, float *p, float *d, int64_t *idx, const float *u, float *total,
                   int64_t rows, int64_t n, int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * n;
        float *pr = p + r * n, *dr = d + r * n;
        if (n < 8) {
            qg_sample_row_f32(xr, pr, dr, idx + r, u[r], total + r, n);
            continue;
        }
        int64_t full = n - n % 8, j;
        v8f vm = v8_splat(-INFINITY);
        v8i nan = {0};
        for (j = 0; j < full; j += 8) {
            v8f v = v8_load(xr + j);
            nan |= v != v;
            vm = v8_select(v > vm, v, vm);
        }
        if (j < n) {
            v8f v = v8_load_part(xr + j, n - j, -INFINITY);
            nan |= v != v;
            vm = v8_select(v > vm, v, vm);
        }
        float m = -INFINITY;
        int bad = 0;
        for (int t = 0; t < 8; ++t) { m = vm[t] > m ? vm[t] : m; bad |= nan[t]; }
        if (bad || isinf(m)) {
            total[r] = NAN;
            memset(dr, 0, (size_t)n * sizeof(float));
            idx[r] = 0;
            continue;
        }
        v8f acc = v8_splat(0.0f);
        for (j = 0; j < full; j += 8) {
            v8f e = v8_exp_nonpos(v8_load(xr + j) - m);
            v8_store(pr + j, e);
            acc += e;
        }
        if (j < n) {
            v8f e = v8_exp_nonpos(v8_load_part(xr + j, n - j, -INFINITY) - m);
            v8_store_part(pr + j, e, n - j);
            acc += e;
        }
        float s = v8_sum(acc);
        total[r] = s;
        int64_t k = qg_search_f32(pr, n, u[r] * s);
        idx[r] = k;
        v8f inv = v8_splat(1.0f / s);
        for (j = 0; j < full; j += 8) v8_store(pr + j, v8_load(pr + j) * inv);
        for (; j < n; ++j) pr[j] *= inv[0];
        memset(dr, 0, (size_t)n * sizeof(float));
        dr[k] = 1.0f;
    }
}

void qg_sample_f64(const double *x, double *p, double *d, int64_t *idx, const double *u, double *total,
                   int64_t rows, int64_t n, int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r)
        qg_sample_row_f64(x + r * n, p + r * n, d + r * n, idx + r, u[r], total + r, n);
}

void qg_gst_f32(float *p, const int64_t *idx, float shrink, int64_t rows, int64_t n, int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r) {
        float *pr = p + r * n;
        int64_t full = n - n % 8, j;
        v8f vm = v8_splat(0.0f);
        for (j = 0; j < full; j += 8) { v8f v = v8_load(pr + j); vm = v8_select(v > vm, v, vm); }
        float top = 0;
        for (int t = 0; t < 8; ++t) top = vm[t] > top ? vm[t] : top;
        for (; j < n; ++j) top = pr[j] > top ? pr[j] : top;
        v8f cap = v8_splat(top * shrink), acc = v8_splat(0.0f);
        for (j = 0; j < full; j += 8) {
            v8f v = v8_load(pr + j);
            v = v8_select(v < cap, v, cap);
            v8_store(pr + j, v);
            acc += v;
        }
        float s = v8_sum(acc);
        for (; j < n; ++j) { float q = pr[j] < cap[0] ? pr[j] : cap[0]; pr[j] = q; s += q; }
        int64_t k = idx[r];
        s += top - pr[k];
        pr[k] = top;
        v8f inv = v8_splat(1.0f / s);
        for (j = 0; j < full; j += 8) v8_store(pr + j, v8_load(pr + j) * inv);
        for (; j < n; ++j) pr[j] *= inv[0];
    }
}

void qg_gst_f64(double *p, const int64_t *idx, double shrink, int64_t rows, int64_t n, int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r) {
        double *pr = p + r * n;
        double top = 0, s = 0;
        for (int64_t j = 0; j < n; ++j) top = pr[j] > top ? pr[j] : top;
        double cap = top * shrink;
        for (int64_t j = 0; j < n; ++j) { double q = pr[j] < cap ? pr[j] : cap; pr[j] = q; s += q; }
        int64_t k = idx[r];
        s += top - pr[k];
        pr[k] = top;
        double inv = 1.0 / s;
        for (int64_t j = 0; j < n; ++j) pr[j] *= inv;
    }
}

void qg_zgr_f32(const float *g, const float *p, const int64_t *idx, float *out, int64_t rows, int64_t n,
                int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r) {
        const float *gr = g + r * n, *pr = p + r * n;
        float *o = out + r * n;
        int64_t k = idx[r], full = n - n % 8, j;
        float gk = gr[k];
        v8f acc = v8_splat(0.0f), vgk = v8_splat(gk);
        for (j = 0; j < full; j += 8) {
            v8f pv = v8_load(pr + j), gv = v8_load(gr + j);
            acc += pv * gv;
            v8_store(o + j, 0.5f * pv * (gv - vgk));
        }
        float c = v8_sum(acc);
        for (; j < n; ++j) { c += pr[j] * gr[j]; o[j] = 0.5f * pr[j] * (gr[j] - gk); }
        o[k] += 0.5f * (gk - c);
    }
}

void qg_zgr_f64(const double *g, const double *p, const int64_t *idx, double *out, int64_t rows, int64_t n,
                int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r) {
        const double *gr = g + r * n, *pr = p + r * n;
        double *o = out + r * n;
        int64_t k = idx[r];
        double gk = gr[k], c = 0;
        for (int64_t j = 0; j < n; ++j) { c += pr[j] * gr[j]; o[j] = 0.5 * pr[j] * (gr[j] - gk); }
        o[k] += 0.5 * (gk - c);
    }
}

void qg_darn_f32(const float *g, const float *p, const int64_t *idx, float *out, int64_t rows, int64_t n,
                 int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r) {
        const float *gr = g + r * n, *pr = p + r * n;
        float *o = out + r * n;
        int64_t k = idx[r], full = n - n % 8, j;
        v8f acc = v8_splat(0.0f);
        for (j = 0; j < full; j += 8) acc += v8_load(pr + j) * v8_load(gr + j);
        float c = v8_sum(acc);
        for (; j < n; ++j) c += pr[j] * gr[j];
        float w = gr[k] - c;
        v8f vw = v8_splat(-w);
        for (j = 0; j < full; j += 8) v8_store(o + j, vw * v8_load(pr + j));
        for (; j < n; ++j) o[j] = -w * pr[j];
        o[k] += w;
    }
}

void qg_darn_f64(const double *g, const double *p, const int64_t *idx, double *out, int64_t rows, int64_t n,
                 int nthreads) {
    QG_PAR
    for (int64_t r = 0; r < rows; ++r) {
        const double *gr = g + r * n, *pr = p + r * n;
        double *o = out + r * n;
        int64_t k = idx[r];
        double c = 0;
        for (int64_t j = 0; j < n; ++j) c += pr[j] * gr[j];
        double w = gr[k] - c;
        for (int64_t j = 0; j < n; ++j) o[j] = -w * pr[j];
        o[k] += w;
    }
}

int qg_abi_version(void) { return 1; }
