/* An experiment, not the library: the learnable tanh backward with float32 terms and float64
 * accumulators, beside the library's float64 terms and its fixed backward (one row, one thread), so
 * benchmarks/float_terms.py can time them in one run and measure the float32 terms' error. It
 * includes the library's kernel for its helpers (the 2^r polynomial, the exponent, the prefetch). */
#include "../src/weight_compander/kernels/tanh.c"

#define LN2F 0.69314718f
void wc_tanh_backward_float_sums(const float *restrict gw, const float *restrict v, float *restrict gv,
                                 int64_t count, double k, double gain, double *sums) {
    const float kt = (float)(k * MINUS_2_LOG2E), gain4 = (float)(4.0 * gain);
    double gain_sum = 0.0, limit_sum = 0.0;
    for (int64_t j = 0; j < count; j += CHUNK) {
        prefetch_chunk(v + j);
        prefetch_chunk(gw + j);
        const int64_t end = j + CHUNK < count ? j + CHUNK : count;
#pragma omp simd reduction(+ : gain_sum, limit_sum)
        for (int64_t i = j; i < end; i++) {
            float t = exponent_of(v[i], kt, -124.0f);
            float n = (t + 12582912.0f) - 12582912.0f;
            float two_n = pow2_int(n);
            float e = fmaf(two_n, pow2m1_reduced(t - n), two_n);
            float r = 1.0f / (1.0f + e);
            float s = e * r * r; /* sech^2(u) / 4 */
            float g = gw[i], gs = g * s;
            gv[i] = gs * gain4;
            gain_sum += (double)gs * (double)v[i];
            float a = t * (-0.5f * LN2F); /* |u| */
            float lp = fmaf(-4.0f * a, s, (1.0f - e) * r); /* tanh|u| - |u| sech^2 u */
            /* below |u| = 0.35 the difference's series to a^13 (its terms' float error grows as a^-2) */
            float a2 = a * a;
            float ser = a * a2 * fmaf(a2, fmaf(a2, fmaf(a2, fmaf(a2, fmaf(a2, -0.043105536f, 0.088632355f),
                                   -0.17495591f), 0.32380952f), -0.53333333f), 0.66666667f);
            lp = a < 0.35f ? ser : lp;
            limit_sum += (double)g * (double)copysignf(lp, v[i]);
        }
    }
    sums[0] = 4.0 * gain_sum;
    sums[1] = limit_sum;
}
/* The library's float64-terms backward and its fixed backward, one row, one thread. */
void wc_tanh_backward_double_sums(const float *gw, const float *v, float *gv, int64_t count, double k,
                                  double gain, double *sums) {
    backward_sums_span(gw, v, gv, count, k * MINUS_2_LOG2E, 4.0 * gain, sums);
}
void wc_tanh_backward_fixed(const float *gw, const float *v, float *gv, int64_t count, double k, double gain) {
    backward_span(gw, v, gv, count, (float)(k * MINUS_2_LOG2E), (float)(4.0 * gain));
}
