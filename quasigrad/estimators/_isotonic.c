/* Isotonic regression by pool adjacent violators (PAV) for quasigrad.sort's soft sort and rank,
   and what the loader asks of the library (ABI version, OpenMP, the CPU's features). Compiled once,
   for the generic target: PAV is sequential within a row and has no vector work.

   qg_isotonic_*: for each of `rows` rows of s (row stride ss: n, or 0 for one row shared by all)
   and w (stride ws), the decreasing isotonic regression
       l2:  argmin_{v_1 >= ... >= v_n} 1/2 |v - (s - w)|^2,
       KL:  argmin_{v_1 >= ... >= v_n} <e^(s - v), 1> + <e^w, v>,
   whose solution is constant on blocks B of consecutive elements, with value mean_B(s - w) (l2)
   or logsumexp_B(s) - logsumexp_B(w) (KL). PAV keeps a stack of blocks and, for each new
   element, merges the newest block with the one below while that one's value is below the newest
   one's (only a strict violation merges, so ties stay apart, as in the PyTorch implementation). Block sums are
   kept in double for both float types; log-sum-exps as (max, sum of exp(y - max)). Writes v and
   starts (1 where a block begins). O(n) per row, rows in parallel.

   qg_isotonic_backward_*: the exact Jacobian-vector product on those blocks: with G the sum of
   the upstream gradient over a block, d/ds = G / |B| and d/dw = -G / |B| (l2), or
   d/ds = G softmax_B(s) and d/dw = -G softmax_B(w) (KL).

   qg_soft_rank_* and qg_soft_sort_* fuse the isotonic regression with what soft rank and soft
   sort do around it (Blondel et al. 2020), so that each is one pass after the sort:
     rank: s = z sorted descending (perm: s_j = z[perm_j]), w = rho or log rho;
           out[perm_j] = s_j - v_j (l2) or exp(s_j - v_j) (KL);
           backward, with t_j = g[perm_j] (l2) or g[perm_j] out[perm_j] (KL):
           gz[perm_j] = t_j - mean_B(t) (l2) or t_j - softmax_B(s)_j sum_B t (KL);
     sort: s = rho / eps (one row), w = y sorted descending (w_j = y[perm_j]);
           out_j = sign (s_j - v_j);
           backward: gy[perm_j] = sign mean_B(g) (l2) or sign softmax_B(w)_j sum_B g (KL).
   The backward pass multiplies by `scale`: the caller folds the scaling of its input into it
   (z = ±x/eps for rank, y = sign x for sort). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QG_ABI 5

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
/* PAV over one row: the blocks of the solution in stack[0 .. top]; returns top. The newest   \
   block is kept in registers and merged with the top of the stack while the top's value is      \
   below its own; l2 compares means by cross-multiplication (no division in the loop). */        \
static int64_t qg_pav_##SUF(const T *s, const T *w, qg_block *stack, int64_t n, int reg) {        \
    int64_t top = -1;                                                                             \
    if (reg == QG_L2) {                                                                           \
        for (int64_t i = 0; i < n; ++i) {                                                         \
            double sum = (double)s[i] - (double)w[i], cnt = 1;                                    \
            int64_t start = i;                                                                    \
            while (top >= 0 && stack[top].a * cnt < sum * stack[top].b) {                         \
                sum += stack[top].a; cnt += stack[top].b; start = stack[top].start; --top;        \
            }                                                                                     \
            qg_block *blk = &stack[++top];                                                        \
            blk->start = start; blk->a = sum; blk->b = cnt;                                       \
        }                                                                                         \
        for (int64_t b = 0; b <= top; ++b) stack[b].value = stack[b].a / stack[b].b;             \
        return top;                                                                               \
    }                                                                                             \
    for (int64_t i = 0; i < n; ++i) {                                                             \
        double ms = s[i], ss = 1, mw = w[i], sw = 1, value = (double)s[i] - (double)w[i];         \
        int64_t start = i;                                                                        \
        while (top >= 0 && stack[top].value < value) {                                            \
            qg_lse_merge(&ms, &ss, stack[top].a, stack[top].b);                                   \
            qg_lse_merge(&mw, &sw, stack[top].c, stack[top].d);                                   \
            start = stack[top].start;                                                             \
            --top;                                                                                \
            value = (ms - mw) + log(ss / sw);                                                     \
        }                                                                                         \
        qg_block *blk = &stack[++top];                                                            \
        blk->start = start; blk->a = ms; blk->b = ss; blk->c = mw; blk->d = sw; blk->value = value; \
    }                                                                                             \
    return top;                                                                                   \
}                                                                                                 \
                                                                                                  \
/* the solution v and the block starts of one row; with perm, the soft rank's output instead, and \
   with sign != 0, the soft sort's (see the header) */                                            \
static void qg_isotonic_row_##SUF(const T *s, const T *w, T *v, uint8_t *starts, qg_block *stack, int64_t n, \
                                  int reg, const int64_t *perm, T sign) {                         \
    int64_t top = qg_pav_##SUF(s, w, stack, n, reg);                                              \
    for (int64_t b = 0; b <= top; ++b) {                                                          \
        int64_t end = b < top ? stack[b + 1].start : n;                                           \
        double value = stack[b].value;                                                            \
        if (perm) {                                                                               \
            for (int64_t j = stack[b].start; j < end; ++j) {                                      \
                double t = (double)s[j] - value;                                                  \
                v[perm[j]] = (T)(reg == QG_L2 ? t : exp(t));                                      \
            }                                                                                     \
        } else if (sign != 0) {                                                                   \
            for (int64_t j = stack[b].start; j < end; ++j) v[j] = (T)(sign * ((double)s[j] - value)); \
        } else {                                                                                  \
            for (int64_t j = stack[b].start; j < end; ++j) v[j] = (T)value;                       \
        }                                                                                         \
        memset(starts + stack[b].start, 0, (size_t)(end - stack[b].start));                       \
        starts[stack[b].start] = 1;                                                               \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* v (or the soft rank/sort output: perm / sign, see the header) and starts; 0, or -1 if out of   \
   memory */                                                                                      \
int64_t qg_isotonic_##SUF(const T *s, int64_t ss, const T *w, int64_t ws, T *v, uint8_t *starts, int reg, \
                          const int64_t *perm, T sign, int64_t rows, int64_t n, int nthreads) {   \
    (void)nthreads;                                                                               \
    int64_t oom = 0;                                                                              \
    _Pragma("omp parallel num_threads(nthreads) if(rows > 1 && rows * n > 4096) reduction(+:oom)") \
    {                                                                                             \
        qg_block *stack = (qg_block *)malloc((size_t)n * sizeof(qg_block));                       \
        oom += stack == NULL;                                                                     \
        _Pragma("omp for schedule(static)")                                                       \
        for (int64_t r = 0; r < rows; ++r)                                                        \
            if (stack) qg_isotonic_row_##SUF(s + r * ss, w + r * ws, v + r * n, starts + r * n, stack, n, reg, \
                                             perm ? perm + r * n : NULL, sign);                   \
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
}                                                                                                 \
                                                                                                  \
/* The soft rank's backward (out given for KL) or, with sort != 0, the soft sort's; y holds s     \
   (rank) or w (sort), sorted, and gx receives scale times the gradient in the unsorted order     \
   (see the header); 0, or -1 if out of memory. */                                                \
int64_t qg_soft_backward_##SUF(const T *g, const T *y, const T *out, const int64_t *perm, const uint8_t *starts, \
                               int reg, int sort, T scale, T *gx, int64_t rows, int64_t n, int nthreads) { \
    (void)nthreads;                                                                               \
    int64_t oom = 0;                                                                              \
    _Pragma("omp parallel num_threads(nthreads) if(rows > 1 && rows * n > 4096) reduction(+:oom)") \
    {                                                                                             \
    double *ex = reg == QG_KL ? (double *)malloc((size_t)n * sizeof(double)) : NULL;              \
    oom += reg == QG_KL && ex == NULL;                                                            \
    _Pragma("omp for schedule(static)")                                                           \
    for (int64_t r = 0; r < rows; ++r) {                                                          \
        if (reg == QG_KL && ex == NULL) continue;                                                 \
        const T *gr = g + r * n, *yr = y + r * n, *outr = out ? out + r * n : NULL;               \
        const int64_t *pr = perm + r * n;                                                         \
        const uint8_t *st = starts + r * n;                                                       \
        T *gxr = gx + r * n;                                                                      \
        int64_t b0 = 0;                                                                           \
        while (b0 < n) {                                                                          \
            int64_t b1 = b0 + 1;                                                                  \
            while (b1 < n && !st[b1]) ++b1;                                                       \
            double G = 0, m = -INFINITY, z = 0;                                                   \
            for (int64_t j = b0; j < b1; ++j) {                                                   \
                double t = sort ? (double)gr[j]                                                   \
                         : reg == QG_L2 ? (double)gr[pr[j]] : (double)gr[pr[j]] * (double)outr[pr[j]]; \
                G += t;                                                                           \
                m = yr[j] > m ? yr[j] : m;                                                        \
            }                                                                                     \
            if (reg == QG_KL)                                                                     \
                for (int64_t j = b0; j < b1; ++j) { ex[j] = exp((double)yr[j] - m); z += ex[j]; }  \
            for (int64_t j = b0; j < b1; ++j) {                                                   \
                double share = reg == QG_L2 ? 1.0 / (double)(b1 - b0) : ex[j] / z;                \
                if (sort) {                                                                       \
                    gxr[pr[j]] = (T)(scale * share * G);                                          \
                } else {                                                                          \
                    double t = reg == QG_L2 ? (double)gr[pr[j]] : (double)gr[pr[j]] * (double)outr[pr[j]]; \
                    gxr[pr[j]] = (T)(scale * (t - share * G));                                    \
                }                                                                                 \
            }                                                                                     \
            b0 = b1;                                                                              \
        }                                                                                         \
    }                                                                                             \
    free(ex);                                                                                     \
    }                                                                                             \
    return oom ? -1 : 0;                                                                          \
}

QG_ISOTONIC(float, f32)
QG_ISOTONIC(double, f64)
