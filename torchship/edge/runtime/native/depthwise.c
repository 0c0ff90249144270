/* torchship.edge optional native kernels: depthwise 2-D convolution, float32, NCHW.
 *
 * Built on first use by native/build.py (cc -O3 [-march=native], no -ffast-math) and called
 * through ctypes; single-threaded, no allocation. One plane at a time: the input plane is read
 * in place when it needs no padding and the column stride is 1, else copied into a zero-padded
 * "phased" plane in `scratch`, where padded column pc is stored in segment pc % sw at index
 * pc / sw, so every kernel tap of a stride-sw output row is one contiguous run of values. Each
 * 3x3 output row is one loop over its columns that sums all taps and applies bias + clamp (with
 * stride == dilation two rows at a time, sharing their input rows); other kernels take one
 * such loop per 8 taps.
 * Inner loops run over contiguous restrict pointers, so gcc vectorises them. */
#include <stddef.h>
#include <string.h>

#define TS_INLINE static inline __attribute__((always_inline))
#define TS_MAX_TAPS 1024 /* kernels with more taps are refused by the Python side */

int ts_native_abi(void) { return 4; }

/* Copy an h x w plane (row stride ls) into a zeroed, padded, phased plane of hp rows of
 * sw segments of wps values each. */
static void phase_pad(const float *restrict src, ptrdiff_t ls, int h, int w, int ph, int pw,
                      int hp, int sw, int wps, float *restrict dst) {
    ptrdiff_t rs = (ptrdiff_t)sw * wps;
    memset(dst, 0, sizeof(float) * (size_t)hp * (size_t)rs);
    for (int r = 0; r < h; r++) {
        const float *restrict s = src + r * ls;
        float *restrict d = dst + (ptrdiff_t)(r + ph) * rs;
        if (sw == 1) {
            memcpy(d + pw, s, sizeof(float) * (size_t)w);
            continue;
        }
        for (int p = 0; p < sw; p++) {
            int c0 = ((p - pw) % sw + sw) % sw; /* first source column landing in segment p */
            float *restrict dd = d + (ptrdiff_t)p * wps + (pw + c0) / sw;
            const float *restrict sp = s + c0;
            int n = (w - c0 + sw - 1) / sw;
            if (sw == 2) /* a constant stride: vectorised with shuffles */
                for (int k = 0; k < n; k++)
                    dd[k] = sp[2 * k];
            else
                for (int k = 0; k < n; k++)
                    dd[k] = sp[(ptrdiff_t)sw * k];
        }
    }
}

/* One output row of a 3x3 kernel, all taps fused with bias and clamp:
 * o[q] = clamp(b + sum_t w[t] * in[off[t] + q]). */
static void row_3x3(const float *restrict in, const ptrdiff_t *off, const float *restrict w,
                    float b, float lo, float hi, int ow, float *restrict o) {
    ptrdiff_t of[9];
    float wv[9];
    for (int t = 0; t < 9; t++) {
        of[t] = off[t];
        wv[t] = w[t];
    }
    for (int q = 0; q < ow; q++) {
        float v = b;
        for (int t = 0; t < 9; t++)
            v += wv[t] * in[of[t] + q];
        v = v < lo ? lo : v;
        o[q] = v > hi ? hi : v;
    }
}

/* N taps (a compile-time constant after inlining) of one output row in one pass:
 * o[q] = (first ? b : o[q]) + sum_j w[j] * in[off[j] + q]. */
TS_INLINE void taps_pass(const float *restrict in, const ptrdiff_t *off, const float *restrict w,
                         int N, int first, float b, int ow, float *restrict o) {
    const float *s[8];
    float wv[8];
    for (int j = 0; j < N; j++) {
        s[j] = in + off[j];
        wv[j] = w[j];
    }
    if (first) {
        for (int q = 0; q < ow; q++) {
            float v = b;
            for (int j = 0; j < N; j++)
                v += wv[j] * s[j][q];
            o[q] = v;
        }
    } else {
        for (int q = 0; q < ow; q++) {
            float v = o[q];
            for (int j = 0; j < N; j++)
                v += wv[j] * s[j][q];
            o[q] = v;
        }
    }
}

/* One output row of any kernel: passes of 8, 4, 2 or 1 fused taps (a longer fused loop is
 * too long for gcc to unroll and vectorise), then the clamp. */
static void row_any(const float *restrict in, const ptrdiff_t *off, const float *restrict w,
                    int taps, float b, float lo, float hi, int ow, float *restrict o) {
    for (int t = 0; t < taps;) {
        int n = taps - t, first = t == 0;
        if (n >= 8) {
            taps_pass(in, off + t, w + t, 8, first, b, ow, o);
            t += 8;
        } else if (n >= 4) {
            taps_pass(in, off + t, w + t, 4, first, b, ow, o);
            t += 4;
        } else if (n >= 2) {
            taps_pass(in, off + t, w + t, 2, first, b, ow, o);
            t += 2;
        } else {
            taps_pass(in, off + t, w + t, 1, first, b, ow, o);
            t += 1;
        }
    }
    for (int q = 0; q < ow; q++) {
        float v = o[q];
        v = v < lo ? lo : v;
        o[q] = v > hi ? hi : v;
    }
}

/* Two output rows of a 3x3 kernel whose output row step equals its row dilation (sh == dh, e.g.
 * stride 1): the four input rows are loaded once for both (12 loads for 18 FMAs instead of 18).
 * c1, c2: offsets of the kernel's columns 1 and 2. */
static void rows2_3x3(const float *restrict in, ptrdiff_t step, ptrdiff_t c1, ptrdiff_t c2,
                      const float *restrict w, float b, float lo, float hi, int ow,
                      float *restrict o0, float *restrict o1) {
    const float *restrict r0 = in, *restrict r1 = in + step, *restrict r2 = in + 2 * step,
                          *restrict r3 = in + 3 * step;
    float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6],
          w7 = w[7], w8 = w[8];
    for (int q = 0; q < ow; q++) {
        float a0 = r0[q], a1 = r0[q + c1], a2 = r0[q + c2];
        float b0 = r1[q], b1 = r1[q + c1], b2 = r1[q + c2];
        float d0 = r2[q], d1 = r2[q + c1], d2 = r2[q + c2];
        float e0 = r3[q], e1 = r3[q + c1], e2 = r3[q + c2];
        float u = b + w0 * a0 + w1 * a1 + w2 * a2 + w3 * b0 + w4 * b1 + w5 * b2 + w6 * d0 +
                  w7 * d1 + w8 * d2;
        float v = b + w0 * b0 + w1 * b1 + w2 * b2 + w3 * d0 + w4 * d1 + w5 * d2 + w6 * e0 +
                  w7 * e1 + w8 * e2;
        u = u < lo ? lo : u;
        v = v < lo ? lo : v;
        o0[q] = u > hi ? hi : u;
        o1[q] = v > hi ? hi : v;
    }
}

/* One output plane from a (phased) padded plane with row stride rs; `off` holds the offset of
 * each tap within a kernel window (kh * kw entries). */
static void plane(const float *restrict in, ptrdiff_t rs, const ptrdiff_t *off,
                  const float *restrict w, float bias, int kh, int kw, int sh, int oh, int ow,
                  float lo, float hi, float *restrict out) {
    int r = 0;
    if (kh == 3 && kw == 3 && off[3] == (ptrdiff_t)sh * rs) /* kernel row 1 = next output row */
        for (; r + 1 < oh; r += 2)
            rows2_3x3(in + (ptrdiff_t)r * sh * rs, off[3], off[1], off[2], w, bias, lo, hi, ow,
                      out + (ptrdiff_t)r * ow, out + (ptrdiff_t)(r + 1) * ow);
    for (; r < oh; r++) {
        const float *row = in + (ptrdiff_t)r * sh * rs;
        float *o = out + (ptrdiff_t)r * ow;
        if (kh == 3 && kw == 3)
            row_3x3(row, off, w, bias, lo, hi, ow, o);
        else
            row_any(row, off, w, kh * kw, bias, lo, hi, ow, o);
    }
}

/* Clamp n contiguous values in place. */
static void clamp_run(float *restrict x, ptrdiff_t n, float lo, float hi) {
    for (ptrdiff_t q = 0; q < n; q++) {
        float v = x[q];
        v = v < lo ? lo : v;
        x[q] = v > hi ? hi : v;
    }
}

/* Clamp an h x w plane (row stride ls) in place: one run when the rows are contiguous. */
static void clamp_plane(float *x, ptrdiff_t ls, int h, int w, float lo, float hi) {
    if (ls == w) {
        clamp_run(x, (ptrdiff_t)h * w, lo, hi);
        return;
    }
    for (int r = 0; r < h; r++)
        clamp_run(x + r * ls, w, lo, hi);
}

/* Depthwise conv over `planes` input planes (plane p at src + p * ps, rows ls apart, h x w),
 * `mult` outputs per input plane: output plane p * mult + m (oh x ow, contiguous) uses weight
 * row (p % c) * mult + m of `wt` ([c * mult, kh * kw]) and bias entry of the same index (`b`
 * may be NULL). Padding (ph, pw) is virtual zeros. `scratch` holds (h + 2 ph) * sw * wps
 * floats, wps = ceil((w + 2 pw) / sw); unused when ph == pw == 0 and sw == 1. Output values
 * are clamped to [lo, hi] (pass -inf / inf for none; NaN propagates like numpy's clip). With
 * `clamp_in`, each input plane is first clamped in place to [ilo, ihi] (fused_mbconv's expand
 * clamp, applied while the plane is about to be read anyway). */
void ts_depthwise(float *src, ptrdiff_t ps, ptrdiff_t ls, int planes, int c, int h, int w,
                  int ph, int pw, int mult, const float *wt, const float *b, int kh, int kw,
                  int sh, int sw, int dh, int dw, int oh, int ow, float lo, float hi, float *out,
                  float *scratch, int clamp_in, float ilo, float ihi) {
    int direct = ph == 0 && pw == 0 && sw == 1;
    int hp = h + 2 * ph, wps = (w + 2 * pw + sw - 1) / sw;
    ptrdiff_t taps = (ptrdiff_t)kh * kw, osz = (ptrdiff_t)oh * ow;
    ptrdiff_t rs = direct ? ls : (ptrdiff_t)sw * wps;
    ptrdiff_t off[TS_MAX_TAPS];
    if (taps > TS_MAX_TAPS)
        return;
    for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++) /* segment (j dw) % sw, index (j dw) / sw of row i dh */
            off[i * kw + j] = (ptrdiff_t)i * dh * rs + (ptrdiff_t)((j * dw) % sw) * wps + (j * dw) / sw;
    for (int p = 0; p < planes; p++) {
        const float *in = src + p * ps;
        if (clamp_in)
            clamp_plane(src + p * ps, ls, h, w, ilo, ihi);
        if (!direct) {
            phase_pad(in, ls, h, w, ph, pw, hp, sw, wps, scratch);
            in = scratch;
        }
        for (int m = 0; m < mult; m++) {
            ptrdiff_t ch = (ptrdiff_t)(p % c) * mult + m;
            plane(in, rs, off, wt + ch * taps, b ? b[ch] : 0.0f, kh, kw, sh, oh, ow, lo, hi,
                  out + ((ptrdiff_t)p * mult + m) * osz);
        }
    }
}
