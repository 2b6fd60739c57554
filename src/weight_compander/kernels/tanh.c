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
 * The paper's kinds (arctan, asinh, erf, powerprop) follow at the end, built with the tanh.
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

/* scale 2^r for |r| <= 1/2 in double: a minimax polynomial of degree 7 (relative error < 5e-11).
 * scale is a constant wherever this is inlined, and the compiler folds it into the coefficients. */
static inline double pow2_reduced_double(double r, double scale) {
    double p = 1.5205826056246832e-05 * scale;
    p = fma(p, r, 1.5469323158322562e-04 * scale);
    p = fma(p, r, 1.3333905616770539e-03 * scale);
    p = fma(p, r, 9.6180271334385400e-03 * scale);
    p = fma(p, r, 5.5504103743775880e-02 * scale);
    p = fma(p, r, 2.4022651199285328e-01 * scale);
    p = fma(p, r, 6.9314718072203100e-01 * scale);
    return fma(p, r, 9.9999999996159790e-01 * scale);
}

#define POW2_SHIFT 6755399441055744.0 /* 1.5 2^52: t + POW2_SHIFT has the integer n in its low bits */

/* scale 2^t in double for t in [-1000, 1000] (the caller clamps it: there 2^n stays a normal double),
 * to 5e-11 relative: t = n + r with the integer n put into the exponent bits (1023 + n, in [23, 2023],
 * is in the low bits of t + POW2_SHIFT + 1023, and the shift keeps just those). */
static inline double pow2_clamped(double t, double scale) {
    double shifted = t + (POW2_SHIFT + 1023.0);
    double n = shifted - (POW2_SHIFT + 1023.0);
    int64_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits <<= 52;
    double two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return two_n * pow2_reduced_double(t - n, scale);
}

/* 2^t in double for |t| <= 1000 (beyond, 2^+-1000: 0 or overflow once converted to float). */
static inline double pow2_double(double t) {
    t = t < -1000.0 ? -1000.0 : t;
    t = t > 1000.0 ? 1000.0 : t;
    return pow2_clamped(t, 1.0);
}

/* dLoss/dv and the per-block sums of dLoss/dg and dLoss/dL / s, all in double: each sum adds a
 * million terms whose signs differ, and where it cancels to 1-3 % of its terms' root-sum-square,
 * float32 terms (float64 accumulators) leave it 3e-6 off, these 2e-10, for 0.39 ms per million weights
 * less (benchmarks/float_terms.py): 10^4 times the error, too close to the promised 1e-5. With S = sech^2(u)/4
 * = e / (1 + e)^2:
 *   dLoss/dv = 4g S dLoss/dw,   dLoss/dg = 4 sum(dLoss/dw v S),
 *   dLoss/dL = s sum(dLoss/dw sign(v) (tanh|u| - |u| sech^2(u))),  tanh|u| = (1 - e) / (1 + e).
 * The last difference is 2|u|^3/3 - ...: below |u| = 0.05 its series, so it keeps its precision as
 * u -> 0 (a layer whose weights all sit there has a limit gradient of only such terms).
 * The loop is bound by its count of vector operations: e2 = 2 ln(2) e comes out of the polynomial
 * (scaled coefficients), so that -4|u| S = t s2 with s2 = 2 ln(2) S needs no multiplication by
 * 2 ln(2); the sums of s2 terms are scaled back at the end. */
static void backward_sums_span(const float *restrict gw, const float *restrict v, float *restrict gv,
                               int64_t count, double kt, double gain4, double *sums) {
    const double gain4_s2 = gain4 / TWO_LN2;
    double gain_sum = 0.0, limit_sum = 0.0;
    for (int64_t j = 0; j < count; j += CHUNK) {
        prefetch_chunk(v + j);
        prefetch_chunk(gw + j);
        const int64_t end = j + CHUNK < count ? j + CHUNK : count;
#pragma omp simd reduction(+ : gain_sum, limit_sum)
        for (int64_t i = j; i < end; i++) {
            double x = v[i], g = gw[i];
            double t = -fabs(x * kt);
            t = t < -1000.0 ? -1000.0 : t; /* 2^-1000: S = 0 in every sum that matters */
            double e2 = pow2_clamped(t, TWO_LN2);
            double r = 1.0 / fma(e2, 1.0 / TWO_LN2, 1.0);
            double e2r = e2 * r, s2 = e2r * r, gs2 = g * s2;
            gv[i] = (float)(gs2 * gain4_s2);
            gain_sum = fma(gs2, x, gain_sum);
            double limit_part = fma(t, s2, fma(e2r, -1.0 / TWO_LN2, r)); /* tanh|u| - 4|u| S */
            /* Below |u| = 0.05 that difference of two near-equal terms would keep the polynomial's
             * few 1e-11 of error at r = 0 and lose 1e-16/u^2 of itself: its series instead,
             * 2a^3/3 - 8a^5/15 + 34a^7/105 - 496a^9/2835 (the next term is 5e-12 of it there). */
            double a = t * (-0.25 * TWO_LN2), a2 = a * a; /* |u| */
            double series = a * a2 * fma(a2, fma(a2, fma(a2, -496.0 / 2835.0, 34.0 / 105.0), -8.0 / 15.0), 2.0 / 3.0);
            limit_part = a < 0.05 ? series : limit_part;
            limit_sum = fma(g, copysign(limit_part, x), limit_sum);
        }
    }
    sums[0] = (4.0 / TWO_LN2) * gain_sum;
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

/* Each row's two sums (into sums, 2 * rows doubles) from the per-block partial sums, added in block
 * order so that the result does not depend on the number of threads; frees partial. */
static void add_partials(int64_t rows, int64_t per_row, double *partial, double *sums) {
    for (int64_t row = 0; row < rows; row++) {
        double first = 0.0, second = 0.0;
        for (int64_t b = row * per_row; b < (row + 1) * per_row; b++) {
            first += partial[2 * b];
            second += partial[2 * b + 1];
        }
        sums[2 * row] = first;
        sums[2 * row + 1] = second;
    }
    free(partial);
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
    add_partials(rows, per_row, partial, sums);
    for (int64_t row = 0; row < rows; row++) sums[2 * row + 1] *= params[PARAMS * row + SCALE];
    return 0;
}

/* ---- The paper's kinds: w = c phi(k v) with phi odd, each row's params k, c, alpha (as doubles):
 * arctan, asinh, erf: phi(x) = f(x), c = s a, k = 1 / (s b);  powerprop: phi(x) = sign(x) |x|^alpha,
 * c = s, k = 1 / s. The same exactness as the tanh: x = |k v| and phi(x) in double from the
 * float v, the sign of v copied back (odd to the last bit), one rounding to float at the end;
 * the polynomials below are fits with relative errors of 2e-9 or less (erfc's; the others 1e-10).
 * The backward recomputes phi'(x) in double; with learnable hyperparameters it also sums, per row
 * and in double, sum(dLoss/dw phi(k v)) and sum(dLoss/dw k v phi'(k v)) (powerprop: sum(dLoss/dw
 * phi(k v) ln|k v|) and 0), from which fused.py forms dLoss/da, dLoss/db (dLoss/dalpha). */

#define LN2 0.69314718055994531
#define LOG2E 1.4426950408889634
#define TAN_PI_8 0.41421356237309503
#define TAN_3PI_8 2.4142135623730949
#define PI_4 0.78539816339744831
enum { ODD_K, ODD_C, ODD_ALPHA };

static inline double horner(const double *coefficients, int count, double x) {
    double p = coefficients[0];
    for (int i = 1; i < count; i++) p = fma(p, x, coefficients[i]);
    return p;
}

/* ln(y) for a positive normal double (finite, -709.1, at 0): y = m 2^e with m in [sqrt(1/2), sqrt(2)), ln(m) = 2 atanh(q)
 * with q = (m - 1) / (m + 1), |q| < 0.172, by its series to q^15 (relative error < 1e-13). */
static inline double log_double(double y) {
    int64_t bits;
    memcpy(&bits, &y, sizeof bits);
    int64_t e = (bits >> 52) - 1023;
    bits = (bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL; /* m in [1, 2) */
    double m;
    memcpy(&m, &bits, sizeof m);
    double big = m > 1.4142135623730951 ? 1.0 : 0.0;
    m *= 1.0 - 0.5 * big;
    double q = (m - 1.0) / (m + 1.0), z = q * q;
    static const double series[] = {1.0 / 15, 1.0 / 13, 1.0 / 11, 1.0 / 9, 1.0 / 7, 1.0 / 5, 1.0 / 3, 1.0};
    return ((double)e + big) * LN2 + 2.0 * q * horner(series, 8, z);
}

/* asinh(x), x >= 0: a polynomial to 1/2, then ln(x + sqrt(x^2 + 1)). x = |k v| stays below 1e129 for
 * float v, s and b, so x^2 does not overflow a double. (A blend, and no select feeding log_double's
 * bit operations: GCC vectorizes neither select here.) */
static inline double asinh_value(double x, double alpha) {
    static const double poly[] = {-0.0065220537828856538, 0.014787778479503693, -0.021872362080447749,
                                  0.030326110027829572, -0.044639410454086724, 0.074999894447721469,
                                  -0.16666666542697403, 0.99999999999759936}; /* asinh(x) / x in x^2 */
    (void)alpha;
    double small = x <= 0.5 ? 1.0 : 0.0; /* a blend, not a select: see above */
    return small * (x * horner(poly, 8, x * x)) + (1.0 - small) * log_double(x + sqrt(fma(x, x, 1.0)));
}

static inline double asinh_slope(double x, double alpha) {
    (void)alpha;
    return 1.0 / sqrt(fma(x, x, 1.0));
}

/* erf(x), x >= 0: a polynomial to 1, then 1 - exp(-x^2) erfcx(x) with erfcx a polynomial in 1/x;
 * 1 beyond 4 (erfc(4) = 1.5e-8 rounds away in float). */
static inline double erf_value(double x, double alpha) {
    static const double small[] = {-9.6349914617564338e-06, 0.00011254640848365841, -0.00084825077534361358,
                                   0.0052209232170960232, -0.026865392124903662, 0.11283781839101299,
                                   -0.37612638425957279, 1.1283791670570977}; /* erf(x) / x in x^2 */
    static const double erfcx[] = {-0.036330738491193455, 0.25306101590387781, -0.77917404435385573,
                                   1.3746620328235191, -1.4744029132408589, 0.86606493485444991,
                                   -0.054044567095871132, -0.28981610779888389, 0.0039144526037205862,
                                   0.56361862163818222, 3.0888463691924883e-05}; /* in 1/x, x in [1, 4] */
    (void)alpha;
    double x2 = x * x, inverse = 1.0 / (x < 1.0 ? 1.0 : x);
    double tail = 1.0 - pow2_double(-x2 * LOG2E) * horner(erfcx, 11, inverse);
    return x <= 1.0 ? x * horner(small, 8, x2) : (x >= 4.0 ? 1.0 : tail);
}

static inline double erf_slope(double x, double alpha) {
    (void)alpha;
    return 1.1283791670955126 * pow2_double(-x * x * LOG2E); /* 2 / sqrt(pi) exp(-x^2) */
}

/* |x|^alpha, x >= 0 (0 at 0), as 2^(alpha log2 x). */
static inline double powerprop_value(double x, double alpha) {
    double p = pow2_double(alpha * LOG2E * log_double(x)); /* log_double(0) is finite */
    return x > 0.0 ? p : 0.0;
}

static inline double powerprop_slope(double x, double alpha) {
    double p = pow2_double((alpha - 1.0) * LOG2E * log_double(x));
    return x > 0.0 ? alpha * p : 0.0; /* alpha > 1: the slope at 0 is 0 */
}

/* The two hyperparameter terms of one weight (see the section's comment), sign of v excluded, and the
 * slope phi'(x) for dLoss/dv. */
/* arctan: atan(x), x >= 0, as offset + atan(z) with |z| <= tan(pi/8): z = -1/x (offset pi/2) above
 * tan(3 pi/8), z = (x - 1) / (x + 1) (offset pi/4) above tan(pi/8), else z = x; and the slope
 * 1 / (1 + x^2). One division for both (two bound the loop): q = 1 / (den (1 + x^2)) gives
 * z = num (1 + x^2) q and the slope den q; above 1e100, where the product could overflow, q = 1/x
 * gives z = -q and the slope q^2 (1/x^2 to double precision). */
static inline void arctan_terms(double x, double alpha, double *first, double *second, double *slope) {
    static const double poly[] = {0.047086851730832054, -0.084568840156167654, 0.11040623326080143,
                                  -0.14281600780937911, 0.19999884343538737, -0.33333332104853125,
                                  0.99999999997857458}; /* atan(z) / z in z^2, |z| <= tan(pi/8) */
    (void)alpha;
    int big = x > TAN_3PI_8, mid = x > TAN_PI_8, huge = x > 1e100;
    double num = big ? -1.0 : (mid ? x - 1.0 : x), den = big ? x : (mid ? x + 1.0 : 1.0);
    double square1 = fma(x, x, 1.0), q = 1.0 / (huge ? x : den * square1);
    double z = huge ? -q : num * square1 * q;
    *slope = huge ? q * q : den * q;
    *first = fma(z, horner(poly, 7, z * z), big ? 2.0 * PI_4 : (mid ? PI_4 : 0.0));
    *second = x * *slope;
}
static inline void asinh_terms(double x, double alpha, double *first, double *second, double *slope) {
    *first = asinh_value(x, alpha);
    *slope = asinh_slope(x, alpha);
    *second = x * *slope;
}
static inline void erf_terms(double x, double alpha, double *first, double *second, double *slope) {
    *first = erf_value(x, alpha);
    *slope = erf_slope(x, alpha);
    *second = x * *slope;
}
static inline void powerprop_terms(double x, double alpha, double *first, double *second, double *slope) {
    double ln = log_double(x);
    *first = x > 0.0 ? pow2_double(alpha * LOG2E * ln) * ln : 0.0;
    *second = 0.0;
    *slope = powerprop_slope(x, alpha);
}

/* A row's constants, in double and (for the float paths) in float. */
typedef struct {
    double k, c, alpha;
    float kf, cf, slopef;
} OddConst;

static inline OddConst odd_const(const double *p) {
    OddConst q = {p[ODD_K], p[ODD_C], p[ODD_ALPHA], (float)p[ODD_K], (float)p[ODD_C], (float)(p[ODD_C] * p[ODD_K])};
    return q;
}

/* Per kind, one weight's w (KIND_w) and dw/dv (KIND_dw, with fixed hyperparameters). arctan's, asinh's
 * and erf's w are float arithmetic (errors below 6e-7: the 1e-6 law holds); powerprop's is in double
 * (|v|^alpha multiplies a relative error alpha-fold).
 * dw/dv is float where float keeps it within 1e-6 (the law is 1e-5), double for powerprop's power.
 * A float |k v| has two roundings (k's and the product's): 1.2e-7 relative, 1.2e-7 at most in phi. */
#define PI_4_F 0.785398163f
static const float atan_f[7] = {0.047086851730832054f, -0.084568840156167654f, 0.11040623326080143f,
                                           -0.14281600780937911f, 0.19999884343538737f, -0.33333332104853125f,
                                           0.99999999997857458f};

static inline float arctan_w(float v, const OddConst *q) {
    float x = fabsf(v * q->kf);
    int big = x > 2.41421356f, mid = x > 0.414213562f; /* tan(3 pi/8), tan(pi/8), as for the double */
    float num = mid ? x - 1.0f : x, den = mid ? x + 1.0f : 1.0f, offset = mid ? PI_4_F : 0.0f;
    num = big ? -1.0f : num; /* one select after another: GCC vectorizes no nested ones here */
    den = big ? x : den;
    offset = big ? 2.0f * PI_4_F : offset;
    float z = num / den, z2 = z * z, p = atan_f[0];
    p = fmaf(p, z2, atan_f[1]), p = fmaf(p, z2, atan_f[2]), p = fmaf(p, z2, atan_f[3]);
    p = fmaf(p, z2, atan_f[4]), p = fmaf(p, z2, atan_f[5]), p = fmaf(p, z2, atan_f[6]);
    return copysignf(q->cf * fmaf(z, p, offset), v);
}
static inline float arctan_dw(float v, const OddConst *q) {
    float x = fabsf(v * q->kf);
    return q->slopef / fmaf(x, x, 1.0f);
}
/* ln(y) for a positive normal float, as log_double in float arithmetic (series to q^9; 1.5e-7). */
static inline float log_float(float y) {
    int32_t bits;
    memcpy(&bits, &y, sizeof bits);
    float n = (float)((bits >> 23) - 127);
    bits = (bits & 0x007fffff) | 0x3f800000; /* m in [1, 2) */
    float m;
    memcpy(&m, &bits, sizeof m);
    float big = m > 1.41421356f ? 1.0f : 0.0f;
    m *= 1.0f - 0.5f * big;
    n += big;
    float q = (m - 1.0f) / (m + 1.0f), z = q * q;
    float p = fmaf(fmaf(fmaf(fmaf(1.0f / 9, z, 1.0f / 7), z, 1.0f / 5), z, 1.0f / 3), z, 1.0f);
    return fmaf(n, 0.693145752f, fmaf(n, 1.42860677e-6f, 2.0f * q * p)); /* ln 2 = hi + lo, n hi exact */
}

/* asinh in float: a polynomial to 1/2, then ln(x + sqrt(x^2 + 1)), with x scaled by 2^-66 above 1e18
 * (x^2, even x, would overflow; there sqrt(x^2 + 1) is x in float) and 66 ln 2 added back. */
static const float asinh_f[8] = {-0.0065220537828856538f, 0.014787778479503693f, -0.021872362080447749f,
                                 0.030326110027829572f, -0.044639410454086724f, 0.074999894447721469f,
                                 -0.16666666542697403f, 0.99999999999759936f};

static inline float asinh_w(float v, const OddConst *q) {
    float x = fabsf(v * q->kf), near = x < 0.5f ? x : 0.5f, x2 = near * near, p = asinh_f[0]; /* finite */
    p = fmaf(p, x2, asinh_f[1]), p = fmaf(p, x2, asinh_f[2]), p = fmaf(p, x2, asinh_f[3]);
    p = fmaf(p, x2, asinh_f[4]), p = fmaf(p, x2, asinh_f[5]), p = fmaf(p, x2, asinh_f[6]);
    p = fmaf(p, x2, asinh_f[7]);
    float huge = x > 1e18f ? 1.0f : 0.0f, scaled = fabsf(v) * (q->kf * (huge > 0.0f ? 0x1p-66f : 1.0f));
    float large = log_float(scaled + sqrtf(fmaf(scaled, scaled, 1.0f - huge))) + huge * 45.7477139f;
    float small = x <= 0.5f ? 1.0f : 0.0f; /* a blend: see asinh_value */
    return copysignf(q->cf * (small * (near * p) + (1.0f - small) * large), v);
}
static inline float asinh_dw(float v, const OddConst *q) {
    float x = fabsf(v * q->kf);
    return q->slopef / (x > 1e18f ? x : sqrtf(fmaf(x, x, 1.0f))); /* no overflow of x^2 */
}
/* exp(-x^2) in float for x >= 0 (2^-124 where it is smaller: negligible wherever it is used). */
static inline float exp_minus_square(float x) {
    float t = -x * x * (float)LOG2E;
    t = t < -124.0f ? -124.0f : t;
    float n = (t + 12582912.0f) - 12582912.0f, two_n = pow2_int(n);
    return fmaf(two_n, pow2m1_reduced(t - n), two_n);
}

/* erf in float: erf_value's polynomials; beyond 1 the float erfc part is 0.16 of erf at most, so its
 * float errors (x^2's rounding amplified by exp) stay below 1.5e-7 of erf. */
static const float erf_small_f[8] = {-9.6349914617564338e-06f, 0.00011254640848365841f, -0.00084825077534361358f,
                                     0.0052209232170960232f, -0.026865392124903662f, 0.11283781839101299f,
                                     -0.37612638425957279f, 1.1283791670570977f};
static const float erfcx_f[11] = {-0.036330738491193455f, 0.25306101590387781f, -0.77917404435385573f,
                                  1.3746620328235191f, -1.4744029132408589f, 0.86606493485444991f,
                                  -0.054044567095871132f, -0.28981610779888389f, 0.0039144526037205862f,
                                  0.56361862163818222f, 3.0888463691924883e-05f};

static inline float erf_w(float v, const OddConst *q) {
    float x = fabsf(v * q->kf), x2 = x * x, p = erf_small_f[0], inverse = 1.0f / (x < 1.0f ? 1.0f : x);
    p = fmaf(p, x2, erf_small_f[1]), p = fmaf(p, x2, erf_small_f[2]), p = fmaf(p, x2, erf_small_f[3]);
    p = fmaf(p, x2, erf_small_f[4]), p = fmaf(p, x2, erf_small_f[5]), p = fmaf(p, x2, erf_small_f[6]);
    p = fmaf(p, x2, erf_small_f[7]);
    float r = erfcx_f[0];
    r = fmaf(r, inverse, erfcx_f[1]), r = fmaf(r, inverse, erfcx_f[2]), r = fmaf(r, inverse, erfcx_f[3]);
    r = fmaf(r, inverse, erfcx_f[4]), r = fmaf(r, inverse, erfcx_f[5]), r = fmaf(r, inverse, erfcx_f[6]);
    r = fmaf(r, inverse, erfcx_f[7]), r = fmaf(r, inverse, erfcx_f[8]), r = fmaf(r, inverse, erfcx_f[9]);
    r = fmaf(r, inverse, erfcx_f[10]);
    float tail = fmaf(-exp_minus_square(x), r, 1.0f);
    tail = x >= 4.0f ? 1.0f : tail;
    return copysignf(q->cf * (x <= 1.0f ? x * p : tail), v);
}
static inline float erf_dw(float v, const OddConst *q) { /* 2 / sqrt(pi) exp(-x^2) */
    return q->slopef * 1.12837917f * exp_minus_square(fabsf(v * q->kf));
}
static inline float powerprop_w(float v, const OddConst *q) {
    return copysignf((float)(q->c * powerprop_value(fabs(v * q->k), q->alpha)), v);
}
static inline float powerprop_dw(float v, const OddConst *q) {
    return (float)(q->c * q->k * powerprop_slope(fabs(v * q->k), q->alpha));
}

/* One span (part of a row) of each direction, for one kind: gw is NULL forward, sums NULL without
 * learnable hyperparameters. Generated per kind, so that the compiler inlines and vectorizes phi. */
typedef void (*OddSpan)(const float *gw, const float *v, float *out, int64_t count, const double *p,
                        double *sums);

#define ODD_SPANS(KIND)                                                                                 \
    static void KIND##_forward_span(const float *gw, const float *restrict v, float *restrict w,       \
                                    int64_t count, const double *p, double *sums) {                    \
        const OddConst q = odd_const(p);                                                               \
        (void)gw, (void)sums;                                                                          \
        for (int64_t j = 0; j < count; j += CHUNK) {                                                   \
            prefetch_chunk(v + j);                                                                     \
            const int64_t end = j + CHUNK < count ? j + CHUNK : count;                                 \
            _Pragma("omp simd") for (int64_t i = j; i < end; i++) w[i] = KIND##_w(v[i], &q);           \
        }                                                                                              \
    }                                                                                                  \
    static void KIND##_backward_span(const float *restrict gw, const float *restrict v,                \
                                     float *restrict gv, int64_t count, const double *p, double *sums) { \
        const OddConst q = odd_const(p);                                                               \
        const double k = q.k, slope = q.c * q.k, alpha = q.alpha;                                      \
        double first_sum = 0.0, second_sum = 0.0;                                                      \
        for (int64_t j = 0; j < count; j += CHUNK) {                                                   \
            prefetch_chunk(v + j);                                                                     \
            prefetch_chunk(gw + j);                                                                    \
            const int64_t end = j + CHUNK < count ? j + CHUNK : count;                                 \
            if (!sums) {                                                                               \
                _Pragma("omp simd") for (int64_t i = j; i < end; i++) gv[i] = gw[i] * KIND##_dw(v[i], &q); \
                continue;                                                                              \
            }                                                                                          \
            _Pragma("omp simd reduction(+ : first_sum, second_sum)") for (int64_t i = j; i < end; i++) { \
                double x = fabs(v[i] * k), g = gw[i], signed_g = g * copysign(1.0, v[i]);              \
                double first, second, phi_slope; /* even in v; powerprop's first may be < 0 */         \
                KIND##_terms(x, alpha, &first, &second, &phi_slope);                                   \
                gv[i] = (float)(g * (slope * phi_slope));                                              \
                first_sum = fma(signed_g, first, first_sum);                                           \
                second_sum = fma(signed_g, second, second_sum);                                        \
            }                                                                                          \
        }                                                                                              \
        if (sums) sums[0] = first_sum, sums[1] = second_sum;                                           \
    }

ODD_SPANS(arctan)
ODD_SPANS(asinh)
ODD_SPANS(erf)
ODD_SPANS(powerprop)

/* kind: 0 arctan, 1 asinh, 2 erf, 3 powerprop (cpu_kernel.ODD_KINDS); gw NULL: the forward (into
 * out); else dLoss/dv into out and, when sums is not NULL, each row's two sums (2 * rows doubles).
 * Returns 0, 1 when out of memory, 2 for an unknown kind. */
int wc_odd(int kind, const float *gw, const float *v, float *out, int64_t rows, int64_t inner,
           const double *params, double *sums, int threads) {
    static const OddSpan forward[] = {arctan_forward_span, asinh_forward_span, erf_forward_span,
                                      powerprop_forward_span};
    static const OddSpan backward[] = {arctan_backward_span, asinh_backward_span, erf_backward_span,
                                       powerprop_backward_span};
    if (kind < 0 || kind > 3) return 2;
    const OddSpan span = gw ? backward[kind] : forward[kind];
    const int64_t per_row = (inner + BLOCK - 1) / BLOCK, blocks = rows * per_row;
    double *partial = sums ? malloc((size_t)(2 * blocks) * sizeof(double)) : NULL;
    if (sums && !partial) return 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        Block c = block_at(b, per_row, inner);
        span(gw ? gw + c.at : NULL, v + c.at, out + c.at, c.count, params + PARAMS * c.row,
             partial ? partial + 2 * b : NULL);
    }
    if (sums) add_partials(rows, per_row, partial, sums);
    return 0;
}
