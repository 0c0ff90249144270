/* torchship.edge optional native kernels: row-wise layer norm and erf GELU, float32.
 *
 * Built with depthwise.c into one library by native/build.py and called through ctypes;
 * single-threaded, no allocation. Each row's mean and (biased) variance are accumulated in
 * double, two passes, then out = (x - mean) / sqrt(var + eps) * w + b in float; out may
 * alias x (a row is read completely before it is written). */
#include <math.h>
#include <stddef.h>

void ts_layer_norm(const float *x, ptrdiff_t rows, ptrdiff_t n, const float *w, const float *b,
                   float eps, float *out) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double sum = 0.0;
        for (ptrdiff_t i = 0; i < n; i++)
            sum += xr[i];
        double mean = n ? sum / (double)n : 0.0;
        double sq = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) {
            double d = xr[i] - mean;
            sq += d * d;
        }
        float rstd = (float)(1.0 / sqrt((n ? sq / (double)n : 0.0) + (double)eps));
        float m = (float)mean;
        if (w && b)
            for (ptrdiff_t i = 0; i < n; i++)
                o[i] = (xr[i] - m) * rstd * w[i] + b[i];
        else if (w)
            for (ptrdiff_t i = 0; i < n; i++)
                o[i] = (xr[i] - m) * rstd * w[i];
        else
            for (ptrdiff_t i = 0; i < n; i++)
                o[i] = (xr[i] - m) * rstd;
    }
}

/* Exact (erf) GELU, 0.5 x (1 + erf(x / sqrt 2)), with erfc(u) = 1 / P(u)^16 for u >= 0
 * (Abramowitz-Stegun 7.1.28, |error| <= 3e-7; no exp, so the loop vectorises without
 * -ffast-math): x >= 0 gives 0.5 x (2 - q), x < 0 gives 0.5 x q (no cancellation far out);
 * P is evaluated in double. NaN and +-inf give NaN, as torch and the numpy path do. out may
 * alias x. */
void ts_gelu_erf(const float *x, ptrdiff_t n, float *out) {
    const double a1 = 0.0705230784, a2 = 0.0422820123, a3 = 0.0092705272, a4 = 0.0001520143,
                 a5 = 0.0002765672, a6 = 0.0000430638, r2 = 0.70710678118654752440;
    for (ptrdiff_t i = 0; i < n; i++) {
        double v = x[i];
        double u = fabs(v) * r2;
        double p = 1.0 + u * (a1 + u * (a2 + u * (a3 + u * (a4 + u * (a5 + u * a6)))));
        p = p * p;
        p = p * p;
        p = p * p;
        p = p * p;
        double q = 1.0 / p;
        double pos = (double)(v >= 0); /* branch-free (no -ffast-math: no if-conversion) */
        /* (v - v) is 0, or NaN for +-inf and NaN: torch's and the numpy path's NaN there */
        out[i] = (float)(0.5 * v * (q + pos * (2.0 - 2.0 * q)) + (v - v));
    }
}
