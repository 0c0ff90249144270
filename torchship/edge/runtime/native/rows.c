/* torchship.edge optional native kernels: row-wise layer norm, float32.
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
