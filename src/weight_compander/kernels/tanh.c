/* The tanh compander on CPU float32: w = b * tanh(u), u = k * v (k = g / b, b = s * L), and its
 * backward, one pass over the weights each way.
 *
 * Why a kernel: a weight-heavy training step is bound by memory traffic and arithmetic per weight,
 * and the exact formula in torch operations takes seven passes forward (abs, scale, sigmoid,
 * expm1, ...). Here the forward reads v and writes w; the backward reads dLoss/dw and v and writes
 * dLoss/dv, recomputing dw/dv instead of storing it.
 *
 * Exactness (what weight_compander promises, tests/test_functions.py checks):
 *  - odd to the last bit: everything is computed from |u| and the sign of v is copied back;
 *  - float32's relative precision everywhere, without a cancellation at any |u|: with
 *    t = -2|u| log2(e) = n + r (n an integer, |r| <= 1/2) and e = exp(-2|u|) = 2^n 2^r,
 *    tanh|u| = -m / (2 + m) where m = e - 1 = 2^n (2^r - 1) + (2^n - 1) (for |u| < 0.17, n = 0
 *    and m is the polynomial 2^r - 1 itself), and dw/dv = g sech^2(u) = 4g e / (1 + e)^2;
 *  - the hyperparameter gradients are sums over all weights of float64 terms, in float64 (see
 *    backward_sums_span);
 *  - 2^r is a polynomial here so that the compiler can vectorize the loops (libm's exp is a call).
 *
 * Plain C with no torch or Python headers: it builds in well under a second with any C compiler,
 * and Python calls it through ctypes (src/weight_compander/cpu_kernel.py).
 */
#include <math.h>
#include <stdint.h>
#if defined(__GNUC__) && !defined(__clang__)
/* Where -march=native enables AVX-512, use its full width (GCC keeps to 256 bits by default): the
 * loops ran 10-15 % faster on an AVX-512 Xeon. A no-op on CPUs without it. */
#pragma GCC target("prefer-vector-width=512")
#endif
#include <stdlib.h>
#include <string.h>

#define BLOCK 16384                       /* elements per parallel work item; fixes the sums' order */
#define MINUS_2_LOG2E (-2.8853900817779268) /* t = -2|u| log2(e) */
#define TWO_LN2 1.3862943611198906         /* -4|u| = 2 ln(2) t */
#define CHUNK 128                          /* elements between software prefetches */
#define AHEAD 1024                         /* how far ahead they fetch, in elements */

/* Fetch the cache lines of x[AHEAD .. AHEAD + CHUNK) ahead of use. In a training step the weights
 * and gradients come from memory, and the loops' arithmetic keeps the hardware prefetcher from
 * running far enough ahead: with this, the kernels took a tenth (forward, fixed backward) to a
 * fifth (learnable backward) less time in a training step. */
static inline void prefetch_chunk(const float *x) {
#if defined(__GNUC__)
    for (int k = 0; k < CHUNK; k += 16) __builtin_prefetch(x + AHEAD + k);
#else
    (void)x;
#endif
}

/* 2^n for an integer-valued float n in [-126, 127]. */
static inline float pow2_int(float n) {
    int32_t bits = ((int32_t)n + 127) << 23;
    float r;
    memcpy(&r, &bits, sizeof r);
    return r;
}

/* 2^r - 1 for |r| <= 1/2: Taylor series of exp(r ln 2) to degree 7 (relative error < 2e-8). */
static inline float pow2m1_reduced(float r) {
    float p = 1.5252733804059841e-05f;
    p = fmaf(p, r, 1.5403530393381606e-04f);
    p = fmaf(p, r, 1.3333558146428443e-03f);
    p = fmaf(p, r, 9.6181291076284772e-03f);
    p = fmaf(p, r, 5.5504108664821580e-02f);
    p = fmaf(p, r, 2.4022650695910071e-01f);
    p = fmaf(p, r, 6.9314718055994531e-01f);
    return p * r;
}

/* t = -2|u| log2(e) from v and kt = -2 k log2(e), no lower than floor (where exp(-2|u|) is
 * negligible or leaves the normal numbers); -fabsf: exactly even in v. */
static inline float exponent_of(float x, float kt, float floor) {
    float t = -fabsf(x * kt);
    return t < floor ? floor : t;
}

static void forward_span(const float *restrict v, float *restrict w, int64_t count, float kt, float bound) {
    for (int64_t j = 0; j < count; j += CHUNK) {
        prefetch_chunk(v + j);
        const int64_t end = j + CHUNK < count ? j + CHUNK : count;
#pragma omp simd
        for (int64_t i = j; i < end; i++) {
            float t = exponent_of(v[i], kt, -40.0f); /* below, e < 1e-12: tanh rounds to 1 */
            float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest integer */
            float two_n = pow2_int(n);
            float m = fmaf(two_n, pow2m1_reduced(t - n), two_n - 1.0f); /* exp(-2|u|) - 1 in (-1, 0] */
            w[i] = copysignf(bound * (m / (-2.0f - m)), v[i]);       /* b tanh|u| with the sign of v */
        }
    }
}

/* dLoss/dv = dLoss/dw * 4g e / (1 + e)^2 (fixed hyperparameters). */
static void backward_span(const float *restrict gw, const float *restrict v, float *restrict gv,
                          int64_t count, float kt, float gain4) {
    for (int64_t j = 0; j < count; j += CHUNK) {
        prefetch_chunk(v + j);
        prefetch_chunk(gw + j);
        const int64_t end = j + CHUNK < count ? j + CHUNK : count;
#pragma omp simd
        for (int64_t i = j; i < end; i++) {
            float t = exponent_of(v[i], kt, -124.0f); /* below, dw/dv < 1e-36 g and is 1e-37 g */
            float n = (t + 12582912.0f) - 12582912.0f;
            float two_n = pow2_int(n);
            float e = fmaf(two_n, pow2m1_reduced(t - n), two_n);
            float d = 1.0f + e;
            gv[i] = gw[i] * (gain4 * e / (d * d));
        }
    }
}

/* 2^r for |r| <= 1/2 in double: a minimax polynomial of degree 7 (relative error < 5e-11). */
static inline double pow2_reduced_double(double r) {
    double p = 1.5205826056246832e-05;
    p = fma(p, r, 1.5469323158322562e-04);
    p = fma(p, r, 1.3333905616770539e-03);
    p = fma(p, r, 9.6180271334385400e-03);
    p = fma(p, r, 5.5504103743775880e-02);
    p = fma(p, r, 2.4022651199285328e-01);
    p = fma(p, r, 6.9314718072203100e-01);
    return fma(p, r, 9.9999999996159790e-01);
}

/* dLoss/dv and the per-block sums of dLoss/dg and dLoss/dL / s, all in double: each sum adds a
 * million terms whose signs differ, and float32 terms (or a float32 u), a few 1e-7 off each, would
 * leave it 1e-5 off wherever it cancels to 1 % of its terms' root-sum-square. With S = sech^2(u)/4
 * = e / (1 + e)^2:
 *   dLoss/dv = 4g S dLoss/dw,   dLoss/dg = 4 sum(dLoss/dw v S),
 *   dLoss/dL = s sum(dLoss/dw sign(v) (tanh|u| - |u| sech^2(u))),  tanh|u| = (1 - e) / (1 + e).
 * The last difference is 2|u|^3/3 - ... and loses 1e-16 / u^2 of itself as u -> 0, where its
 * terms are too small to matter to the sum. */
static void backward_sums_span(const float *restrict gw, const float *restrict v, float *restrict gv,
                               int64_t count, double kt, double gain4, double *sums) {
    double gain_sum = 0.0, limit_sum = 0.0;
    for (int64_t j = 0; j < count; j += CHUNK) {
        prefetch_chunk(v + j);
        prefetch_chunk(gw + j);
        const int64_t end = j + CHUNK < count ? j + CHUNK : count;
#pragma omp simd reduction(+ : gain_sum, limit_sum)
        for (int64_t i = j; i < end; i++) {
            double x = v[i], g = gw[i];
            double t = -fabs(x * kt);
            t = t < -1000.0 ? -1000.0 : t; /* 2^n stays a normal double */
            double shifted = t + 6755399441055744.0; /* the integer n in the low bits of the mantissa */
            double n = shifted - 6755399441055744.0;
            int64_t bits;
            memcpy(&bits, &shifted, sizeof bits);
            bits = (bits + 1023) << 52;
            double two_n;
            memcpy(&two_n, &bits, sizeof two_n);
            double e = two_n * pow2_reduced_double(t - n);
            double r = 1.0 / (1.0 + e);
            double er = e * r, s = er * r, gs = g * s;
            gv[i] = (float)(gs * gain4);
            gain_sum = fma(gs, x, gain_sum);
            double limit_part = fma(TWO_LN2 * t, s, r - er); /* tanh|u| - 4|u| S */
            limit_sum = fma(g, copysign(limit_part, x), limit_sum);
        }
    }
    sums[0] = 4.0 * gain_sum;
    sums[1] = limit_sum;
}

/* Parallel work item b of a rows x inner array: pieces of at most BLOCK elements that never cross
 * a row (per_row of them per row), so each piece has one row's hyperparameters. */
typedef struct {
    int64_t row, at, count;
} Block;

static inline Block block_at(int64_t b, int64_t per_row, int64_t inner) {
    int64_t row = b / per_row, start = (b % per_row) * BLOCK;
    Block block = {row, row * inner + start, inner - start < BLOCK ? inner - start : BLOCK};
    return block;
}

/* Row r of the rows x inner weights has the hyperparameters params[4r .. 4r + 3] = s, g, L and
 * k = g / (s L), as doubles (rows = 1: one set for all). */
enum { SCALE, GAIN, LIMIT, K, PARAMS };

void wc_tanh_forward(const float *v, float *w, int64_t rows, int64_t inner, const double *params, int threads) {
    const int64_t per_row = (inner + BLOCK - 1) / BLOCK, blocks = rows * per_row;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        Block c = block_at(b, per_row, inner);
        const double *p = params + PARAMS * c.row;
        forward_span(v + c.at, w + c.at, c.count, (float)(p[K] * MINUS_2_LOG2E), (float)(p[SCALE] * p[LIMIT]));
    }
}

/* dLoss/dv for fixed hyperparameters. */
void wc_tanh_backward(const float *gw, const float *v, float *gv, int64_t rows, int64_t inner,
                      const double *params, int threads) {
    const int64_t per_row = (inner + BLOCK - 1) / BLOCK, blocks = rows * per_row;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        Block c = block_at(b, per_row, inner);
        const double *p = params + PARAMS * c.row;
        backward_span(gw + c.at, v + c.at, gv + c.at, c.count, (float)(p[K] * MINUS_2_LOG2E), (float)(4.0 * p[GAIN]));
    }
}

/* dLoss/dv and, into sums (2 * rows doubles), each row's dLoss/dg and dLoss/dL. Each block's
 * partial sums are added in block order, so the result does not depend on the number of threads.
 * Returns 0, or 1 when out of memory. */
int wc_tanh_backward_sums(const float *gw, const float *v, float *gv, int64_t rows, int64_t inner,
                          const double *params, double *sums, int threads) {
    const int64_t per_row = (inner + BLOCK - 1) / BLOCK, blocks = rows * per_row;
    double *partial = malloc((size_t)(2 * blocks) * sizeof(double));
    if (!partial) return 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        Block c = block_at(b, per_row, inner);
        const double *p = params + PARAMS * c.row;
        backward_sums_span(gw + c.at, v + c.at, gv + c.at, c.count, p[K] * MINUS_2_LOG2E, 4.0 * p[GAIN],
                           partial + 2 * b);
    }
    for (int64_t row = 0; row < rows; row++) {
        double gain_sum = 0.0, limit_sum = 0.0;
        for (int64_t b = row * per_row; b < (row + 1) * per_row; b++) {
            gain_sum += partial[2 * b];
            limit_sum += partial[2 * b + 1];
        }
        sums[2 * row] = gain_sum;
        sums[2 * row + 1] = limit_sum * params[PARAMS * row + SCALE];
    }
    free(partial);
    return 0;
}
