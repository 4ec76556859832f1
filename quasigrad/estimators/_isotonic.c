/* Isotonic regression by pool adjacent violators (PAV) for quasigrad.sort's soft sort and rank,
   and what the loader asks of the library (ABI version, OpenMP, the CPU's features). Compiled once,
   for the generic target: PAV is sequential within a row and has no vector work.

   qg_isotonic_*: for each of `rows` rows of s (row stride ss: n, or 0 for one row shared by all)
   and w (stride ws), the decreasing isotonic regression
       l2:  argmin_{v_1 >= ... >= v_n} 1/2 |v - (s - w)|^2,
       KL:  argmin_{v_1 >= ... >= v_n} <e^(s - v), 1> + <e^w, v>,
   whose solution is constant on blocks B of consecutive elements, with value mean_B(s - w) (l2)
   or logsumexp_B(s) - logsumexp_B(w) (KL). PAV keeps a stack of blocks and, for each new
   element, merges the top two blocks while the lower one's value is below the upper one's (only a
   strict violation merges, so ties stay apart, as in the PyTorch implementation). Block sums are
   kept in double for both float types; log-sum-exps as (max, sum of exp(y - max)). Writes v and
   starts (1 where a block begins). O(n) per row, rows in parallel.

   qg_isotonic_backward_*: the exact Jacobian-vector product on those blocks: with G the sum of
   the upstream gradient over a block, d/ds = G / |B| and d/dw = -G / |B| (l2), or
   d/ds = G softmax_B(s) and d/dw = -G softmax_B(w) (KL). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QG_ABI 3

int qg_abi_version(void) { return QG_ABI; }

int qg_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Bit 0: AVX2 and FMA; bit 1: AVX-512F (with AVX2 and FMA). 0 on other CPUs and architectures. */
int qg_cpu_features(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f");
    return avx2 | (avx512 << 1);
#else
    return 0;
#endif
}

enum { QG_L2 = 0, QG_KL = 1 };

typedef struct {
    int64_t start;
    double a, b, c, d;   /* l2: sum of s - w, count; KL: max and sum of e^(s - max), the same for w */
    double value;
} qg_block;

static inline double qg_block_value(const qg_block *blk, int reg) {
    return reg == QG_L2 ? blk->a / blk->b : (blk->a + log(blk->b)) - (blk->c + log(blk->d));
}

/* (m1, s1) <- the log-sum-exp pair of the union with (m2, s2) */
static inline void qg_lse_merge(double *m1, double *s1, double m2, double s2) {
    if (m2 > *m1) {
        *s1 = *s1 * exp(*m1 - m2) + s2;
        *m1 = m2;
    } else {
        *s1 += s2 * exp(m2 - *m1);
    }
}

#define QG_ISOTONIC(T, SUF)                                                                       \
static void qg_isotonic_row_##SUF(const T *s, const T *w, T *v, uint8_t *starts, qg_block *stack, int64_t n, \
                                  int reg) {                                                      \
    int64_t top = -1;                                                                             \
    for (int64_t i = 0; i < n; ++i) {                                                             \
        qg_block *blk = &stack[++top];                                                            \
        blk->start = i;                                                                           \
        if (reg == QG_L2) { blk->a = (double)s[i] - (double)w[i]; blk->b = 1; }                   \
        else { blk->a = s[i]; blk->b = 1; blk->c = w[i]; blk->d = 1; }                            \
        blk->value = reg == QG_L2 ? blk->a : (double)s[i] - (double)w[i];                         \
        while (top > 0 && stack[top - 1].value < stack[top].value) {                              \
            qg_block *low = &stack[top - 1], *up = &stack[top];                                   \
            if (reg == QG_L2) { low->a += up->a; low->b += up->b; }                               \
            else { qg_lse_merge(&low->a, &low->b, up->a, up->b); qg_lse_merge(&low->c, &low->d, up->c, up->d); } \
            low->value = qg_block_value(low, reg);                                                \
            --top;                                                                                \
        }                                                                                         \
    }                                                                                             \
    for (int64_t b = 0; b <= top; ++b) {                                                          \
        int64_t end = b < top ? stack[b + 1].start : n;                                           \
        T value = (T)stack[b].value;                                                              \
        for (int64_t j = stack[b].start; j < end; ++j) { v[j] = value; starts[j] = 0; }            \
        starts[stack[b].start] = 1;                                                               \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* 0, or -1 if out of memory */                                                                   \
int64_t qg_isotonic_##SUF(const T *s, int64_t ss, const T *w, int64_t ws, T *v, uint8_t *starts, int reg, \
                          int64_t rows, int64_t n, int nthreads) {                                \
    (void)nthreads;                                                                               \
    int64_t oom = 0;                                                                              \
    _Pragma("omp parallel num_threads(nthreads) if(rows > 1 && rows * n > 4096) reduction(+:oom)") \
    {                                                                                             \
        qg_block *stack = (qg_block *)malloc((size_t)n * sizeof(qg_block));                       \
        oom += stack == NULL;                                                                     \
        _Pragma("omp for schedule(static)")                                                       \
        for (int64_t r = 0; r < rows; ++r)                                                        \
            if (stack) qg_isotonic_row_##SUF(s + r * ss, w + r * ws, v + r * n, starts + r * n, stack, n, reg); \
        free(stack);                                                                              \
    }                                                                                             \
    return oom ? -1 : 0;                                                                          \
}                                                                                                 \
                                                                                                  \
/* out_j = sign G softmax_B(y)_j over each block (KL) */                                          \
static inline void qg_block_softmax_##SUF(const T *y, const T *g, T *out, int64_t b0, int64_t b1, double sign) { \
    double m = -INFINITY, z = 0, G = 0;                                                           \
    for (int64_t j = b0; j < b1; ++j) { m = y[j] > m ? y[j] : m; G += g[j]; }                     \
    for (int64_t j = b0; j < b1; ++j) z += exp((double)y[j] - m);                                 \
    double c = sign * G / z;                                                                      \
    for (int64_t j = b0; j < b1; ++j) out[j] = (T)(c * exp((double)y[j] - m));                    \
}                                                                                                 \
                                                                                                  \
void qg_isotonic_backward_##SUF(const T *g, const T *s, int64_t ss, const T *w, int64_t ws, const uint8_t *starts, \
                                int reg, T *gs, T *gw, int64_t rows, int64_t n, int nthreads) {   \
    (void)nthreads;                                                                               \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads) if(rows > 1 && rows * n > 4096)") \
    for (int64_t r = 0; r < rows; ++r) {                                                          \
        const T *gr = g + r * n, *sr = s + r * ss, *wr = w + r * ws;                              \
        const uint8_t *st = starts + r * n;                                                       \
        T *gsr = gs ? gs + r * n : NULL, *gwr = gw ? gw + r * n : NULL;                           \
        int64_t b0 = 0;                                                                           \
        while (b0 < n) {                                                                          \
            int64_t b1 = b0 + 1;                                                                  \
            while (b1 < n && !st[b1]) ++b1;                                                       \
            if (reg == QG_L2) {                                                                   \
                double G = 0;                                                                     \
                for (int64_t j = b0; j < b1; ++j) G += gr[j];                                     \
                T mean = (T)(G / (double)(b1 - b0));                                              \
                for (int64_t j = b0; j < b1; ++j) {                                               \
                    if (gsr) gsr[j] = mean;                                                       \
                    if (gwr) gwr[j] = -mean;                                                      \
                }                                                                                 \
            } else {                                                                              \
                if (gsr) qg_block_softmax_##SUF(sr, gr, gsr, b0, b1, 1.0);                        \
                if (gwr) qg_block_softmax_##SUF(wr, gr, gwr, b0, b1, -1.0);                       \
            }                                                                                     \
            b0 = b1;                                                                              \
        }                                                                                         \
    }                                                                                             \
}

QG_ISOTONIC(float, f32)
QG_ISOTONIC(double, f64)
