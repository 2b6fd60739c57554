/* The tanh compander on CPU float32: w = b * tanh(u), u = k * v (k = g / b, b = s * L), and its
 * backward, one pass over the weights each way.
 *
 * Why a kernel: a weight-heavy training step is bound by memory traffic, and the exact formula in
 * torch operations takes seven passes forward (abs, scale, sigmoid, expm1, ...). Here the forward
 * reads v and writes w; the backward reads dLoss/dw and v (and w for the hyperparameter sums) and
 * writes dLoss/dv, recomputing dw/dv instead of storing it.
 *
 * Exactness (what weight_compander promises, tests/test_functions.py checks):
 *  - odd to the last bit: everything is computed from a = |u| and the sign of v is copied back;
 *  - float32's relative precision everywhere: tanh(a) = a * (1 - a^2/3 + 2a^4/15 - 17a^6/315)
 *    below a = 1/8 (truncation < 2e-9), (1 - e) / (1 + e) with e = exp(-2a) above, where 1 - e
 *    cannot cancel; dw/dv = g sech^2(a) = 4g e / (1 + e)^2 has no cancellation at any a.
 *  - the hyperparameter gradients are sums over all weights, computed in double (see
 *    backward_sums_span);
 *  - exp is evaluated here (Cody-Waite reduction and a Taylor polynomial, ~1 ulp) so that the
 *    compiler can vectorize the loops; libm's expf is a call it cannot.
 *
 * Plain C with no torch or Python headers: it builds in well under a second with any C compiler,
 * and Python calls it through ctypes (src/weight_compander/cpu_kernel.py).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 16384 /* elements per parallel work item; also fixes the order of the sums */

/* exp(x) for x in [-87.3, 88] (< 1 ulp); 0 below, where the result would not be a normal float. */
static inline float exp_clamped(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187045e-06f;
    float xc = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
    float n = (xc * log2e + 12582912.0f) - 12582912.0f; /* round to nearest integer */
    float r = fmaf(-n, ln2_lo, fmaf(-n, ln2_hi, xc));   /* |r| <= ln2 / 2 */
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n */
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return x < -87.3f ? 0.0f : p * two_n;
}

static void forward_span(const float *restrict v, float *restrict w, int64_t count, float k, float bound) {
#pragma omp simd
    for (int64_t i = 0; i < count; i++) {
        float x = v[i];
        float a = fabsf(x * k);
        float z = a * a;
        float series = fmaf(fmaf(fmaf(-17.0f / 315.0f, z, 2.0f / 15.0f), z, -1.0f / 3.0f), z, 1.0f);
        float e = exp_clamped(-2.0f * a);
        float t = a < 0.125f ? a * series : (1.0f - e) / (1.0f + e);
        w[i] = copysignf(bound * t, x);
    }
}

/* g sech^2(k v) from 4g exp(-2a): computed that way it stays a normal float wherever dw/dv is. */
static inline float slope_at(float x, float k, float log4g, float inv4g) {
    float e4g = exp_clamped(log4g - 2.0f * fabsf(x * k));
    float r = 1.0f / fmaf(e4g, inv4g, 1.0f);
    return e4g * r * r;
}

/* exp(x) in double for x <= 0, to 5e-10 relative; 0 below -708. Same scheme as exp_clamped. */
static inline double exp_nonpositive_double(double x) {
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double xc = x < -708.0 ? -708.0 : x;
    double n = (xc * log2e + 6755399441055744.0) - 6755399441055744.0; /* round to nearest integer */
    double r = fma(-n, ln2_lo, fma(-n, ln2_hi, xc));
    double p = 1.0 / 40320.0; /* 1/8!, then Horner down to 1: 5e-10 relative, ample for the sums */
    p = fma(p, r, 1.0 / 5040.0);
    p = fma(p, r, 1.0 / 720.0);
    p = fma(p, r, 1.0 / 120.0);
    p = fma(p, r, 1.0 / 24.0);
    p = fma(p, r, 1.0 / 6.0);
    p = fma(p, r, 0.5);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    int64_t bits = ((int64_t)n + 1023) << 52; /* 2^n */
    double two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return x < -708.0 ? 0.0 : p * two_n;
}

/* dLoss/dv = dLoss/dw * dw/dv (no hyperparameter gradients wanted). */
static void backward_span(const float *restrict gw, const float *restrict v, float *restrict gv,
                          int64_t count, float k, float log4g, float inv4g) {
#pragma omp simd
    for (int64_t i = 0; i < count; i++) gv[i] = gw[i] * slope_at(v[i], k, log4g, inv4g);
}

/* dLoss/dv, and the sums sum(dLoss/dw * v sech^2(u)) = dLoss/dg and
 * sum(dLoss/dw * b (tanh(a) - a sech^2(a)) sign(v)) = L dLoss/dL, all in double: each sum adds a
 * million terms whose signs differ, and float32 terms (or a float32 u), a few 1e-7 off each, would
 * leave it 1e-5 off wherever it cancels to 1 % of its terms' root-sum-square.
 * tanh(a) - a sech^2(a) = 2a^3/3 - ...
 * cancels as a -> 0, so below a = 0.1 it is its Taylor series (truncation < 1e-11). */
static void backward_sums_span(const float *restrict gw, const float *restrict v, float *restrict gv,
                               int64_t count, double k, double bound, double gain, double *sums) {
    double gain_sum = 0.0, limit_sum = 0.0;
#pragma omp simd reduction(+ : gain_sum, limit_sum)
    for (int64_t i = 0; i < count; i++) {
        double x = v[i], g = gw[i], a = fabs(x * k), z = a * a;
        double e = exp_nonpositive_double(-2.0 * a), r = 1.0 / (1.0 + e);
        double sech2 = 4.0 * e * r * r;
        double series = fma(fma(fma(fma(13820.0 / 155925.0, z, -496.0 / 2835.0), z, 34.0 / 105.0), z,
                                -8.0 / 15.0), z, 2.0 / 3.0);
        double limit_part = a < 0.1 ? a * z * series : (1.0 - e) * r - a * sech2;
        gv[i] = (float)(g * gain * sech2);
        gain_sum += g * x * sech2;
        limit_sum += g * copysign(bound * limit_part, x);
    }
    sums[0] = gain_sum;
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

/* v and w hold rows * inner floats; row r uses k[r] and bound[r] (rows = 1: one value for all). */
void wc_tanh_forward(const float *v, float *w, int64_t rows, int64_t inner, const float *k,
                     const float *bound, int threads) {
    const int64_t per_row = (inner + BLOCK - 1) / BLOCK, blocks = rows * per_row;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        Block c = block_at(b, per_row, inner);
        forward_span(v + c.at, w + c.at, c.count, k[c.row], bound[c.row]);
    }
}

/* dLoss/dv for fixed hyperparameters; row r uses k[r], log(4 g[r]) and 1 / (4 g[r]). */
void wc_tanh_backward(const float *gw, const float *v, float *gv, int64_t rows, int64_t inner,
                      const float *k, const float *log4g, const float *inv4g, int threads) {
    const int64_t per_row = (inner + BLOCK - 1) / BLOCK, blocks = rows * per_row;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        Block c = block_at(b, per_row, inner);
        backward_span(gw + c.at, v + c.at, gv + c.at, c.count, k[c.row], log4g[c.row], inv4g[c.row]);
    }
}

/* dLoss/dv and, into sums (2 * rows doubles, zeroed by the caller), each row's dLoss/dg and
 * L dLoss/dL. Each block's partial sums are added in block order, so the result does not depend
 * on the number of threads. Returns 0, or 1 when out of memory. */
int wc_tanh_backward_sums(const float *gw, const float *v, float *gv, int64_t rows, int64_t inner,
                          const double *k, const double *bound, const double *gain, double *sums,
                          int threads) {
    const int64_t per_row = (inner + BLOCK - 1) / BLOCK, blocks = rows * per_row;
    double *partial = calloc((size_t)(2 * blocks), sizeof(double));
    if (!partial) return 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        Block c = block_at(b, per_row, inner);
        backward_sums_span(gw + c.at, v + c.at, gv + c.at, c.count, k[c.row], bound[c.row], gain[c.row],
                           partial + 2 * b);
    }
    for (int64_t b = 0; b < blocks; b++) {
        sums[2 * (b / per_row)] += partial[2 * b];
        sums[2 * (b / per_row) + 1] += partial[2 * b + 1];
    }
    free(partial);
    return 0;
}
