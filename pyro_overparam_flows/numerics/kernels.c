/* Native CPU kernels of pyro_overparam_flows (numerics/native.py builds and loads this file).
 *
 * Every kernel runs over a range of rows [row0, row1) of a flattened batch. Row i has a
 * scalar x[i] and one-hidden-layer weights w, b, a (and the constrained family's log w and
 * log a), each stored as a (period, m) array: row i reads the weights' row i % period, so that
 * parameters shared by the batch (period = number of dimensions) are neither copied nor
 * expanded. Arithmetic is in double whatever the storage type; per-row outputs are written in
 * the storage type, gradients of shared weights are accumulated in double arrays that the
 * caller zeroes and sums over threads.
 *
 * The file includes itself twice to define each kernel for float (suffix _f32) and double
 * (suffix _f64) storage.
 */
#ifndef POF_TYPED

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    double key;
    int64_t unit;
} Break;

/* One weight array of the network, and where its gradient goes. Row i of the batch reads row
   i % period of data, rows being stride elements apart (the m numbers of a row contiguous).
   Its gradient is written to write[i m + r] (storage type, a row per batch row: period equals
   the number of rows) when write is not null, else added to accumulate[(i % period) m + r]
   (double). */
typedef struct {
    const void *data;
    int64_t period;
    int64_t stride;
    double *accumulate;
    void *write;
} Weight;

/* Sort v[0..n) by key: runs of 8 by insertion, then bottom-up merges whose comparisons pick a
   pointer rather than take a branch (the order of breakpoints is unpredictable, and
   mispredicted branches would cost more than the comparisons). spare holds n Breaks. */
static void sort_breaks(Break *v, int64_t n, Break *spare) {
    for (int64_t start = 0; start < n; start += 8) {
        int64_t end = start + 8 < n ? start + 8 : n;
        for (int64_t i = start + 1; i < end; i++) {
            Break t = v[i];
            int64_t j = i - 1;
            while (j >= start && t.key < v[j].key) {
                v[j + 1] = v[j];
                j--;
            }
            v[j + 1] = t;
        }
    }
    Break *source = v, *target = spare;
    for (int64_t width = 8; width < n; width *= 2) {
        for (int64_t low = 0; low < n; low += 2 * width) {
            int64_t middle = low + width < n ? low + width : n;
            int64_t high = low + 2 * width < n ? low + 2 * width : n;
            int64_t i = low, j = middle, k = low;
            while (i < middle && j < high) {
                int right = source[j].key < source[i].key;
                const Break *next = right ? source + j : source + i;
                target[k++] = *next;
                j += right;
                i += 1 - right;
            }
            while (i < middle) target[k++] = source[i++];
            while (j < high) target[k++] = source[j++];
        }
        Break *swap = source;
        source = target;
        target = swap;
    }
    for (int64_t i = 0; source != v && i < n; i++) v[i] = source[i];
}

/* phi = ELU + 1 */
static inline double elu_plus_one(double u) { return u > 0 ? u + 1.0 : exp(u); }

/* Taylor coefficients 2k / (2k + 1)! (k = 1..8) of (h cosh h - sinh h) / h^3 in h^2. */
static const double CENTRAL[8] = {
    2.0 / 6.0,
    4.0 / 120.0,
    6.0 / 5040.0,
    8.0 / 362880.0,
    10.0 / 39916800.0,
    12.0 / 6227020800.0,
    14.0 / 1307674368000.0,
    16.0 / 355687428096000.0,
};

/* The integral of phi(N(t)) over t in [l, h] for N linear of slope alpha, N(l) = u0 and
   N(h) = u1, given e0 = exp(min(u0, 0)) and e1 = exp(min(u1, 0)) (each end's exponential is
   computed once and shared by the two pieces it bounds); with moments also int phi'(N) dt and
   int t phi'(N) dt. Every part is a length times a mean over u in [ulo, uhi], split at u = 0
   into an exponential and a linear part, each without cancellation. */
static inline __attribute__((always_inline)) void elu_piece(double l, double h, double alpha,
                                                             double u0, double u1, double e0,
                      double e1, int moments, double *integral, double *zeroth,
                      double *first) {
    double length = h - l;
    double ulo = u0, uhi = u1, elo = e0, ehi = e1;
    if (u1 < u0) {
        ulo = u1;
        uhi = u0;
        elo = e1;
        ehi = e0;
    }
    double gap = uhi - ulo;
    if (!(gap > 0)) {
        double dphi = ulo > 0 ? 1.0 : elo;
        *integral = length * (ulo > 0 ? ulo + 1.0 : dphi);
        if (moments) {
            *zeroth = length * dphi;
            *first = 0.5 * (l + h) * *zeroth;
        }
        return;
    }
    double nlo = ulo < 0 ? ulo : 0, nhi = uhi < 0 ? uhi : 0;
    double plo = ulo > 0 ? ulo : 0, phi = uhi > 0 ? uhi : 0;
    double half = 0.5 * (nhi - nlo);
    /* int e^u over [nlo, nhi]: by expm1 where the ends are close, else the difference */
    double exp_part = half < 0.5 ? -ehi * expm1(nlo - nhi) : ehi - elo;
    double plen = phi - plo;
    /* length / gap = 1 / |alpha|, but taken from the ends' u, which neighbouring pieces share:
       consistent with the means over [ulo, uhi] even where alpha is rounding noise */
    double ratio = length / gap;
    *integral = (exp_part + plen * (1.0 + 0.5 * (phi + plo))) * ratio;
    if (!moments) return;
    *zeroth = (exp_part + plen) * ratio;
    double cu = 0.5 * (ulo + uhi), nc = 0.5 * (nlo + nhi), central;
    if (half < 0.5) {
        /* 2 e^nc (h cosh h - sinh h) by its series; e^nc the ends' geometric mean */
        double product = ehi * elo, h2 = half * half, sum = CENTRAL[7];
        for (int k = 6; k >= 0; k--) sum = sum * h2 + CENTRAL[k];
        double centre_exp = product > 1e-300 ? sqrt(product) : exp(nc);
        central = 2.0 * centre_exp * sum * half * h2;
    } else {
        central = half * (ehi + elo) - (ehi - elo);
    }
    double moment = plen * (0.5 * (phi + plo) - cu) + central + (nc - cu) * exp_part;
    /* int (t - mid) phi'(N) dt = sign(alpha) moment / alpha^2 = sign(alpha) moment ratio^2 */
    *first = 0.5 * (l + h) * *zeroth + (alpha > 0 ? moment : -moment) * ratio * ratio;
}

static inline double negative_exp(double u) { return u < 0 ? exp(u) : 1.0; }

/* sigma(u), sigma'(u) and (log sigma')'(u) of the constrained family's activations from one
   exponential. kind 0: tanh, 1: sigmoid. */
static inline void saturating(int kind, double u, double *value, double *slope, double *curve) {
    if (kind == 0) {
        double e = exp(-2.0 * fabs(u)), inverse = 1.0 / (1.0 + e), t = (1.0 - e) * inverse;
        *value = u < 0 ? -t : t;
        *slope = 4.0 * e * inverse * inverse;
        *curve = -2.0 * *value;
    } else {
        double e = exp(-fabs(u)), s = 1.0 / (1.0 + e);
        *value = u < 0 ? e * s : s;
        *slope = e * s * s;
        *curve = 1.0 - 2.0 * *value;
    }
}

/* log sigma'(u), finite however large |u| is. */
static inline double log_saturating_slope(int kind, double u) {
    double v = fabs(u);
    if (kind == 0) return 2.0 * (M_LN2 - v - log1p(exp(-2.0 * v)));
    return -v - 2.0 * log1p(exp(-v));
}

#define POF_TYPED
#define T float
#define NAME(f) f##_f32
#include "kernels.c"
#undef T
#undef NAME
#define T double
#define NAME(f) f##_f64
#include "kernels.c"
#undef T
#undef NAME

#else /* POF_TYPED: the kernels for storage type T */

/* log of the smallest sum of a w sigma'(u) whose terms the storage type keeps well enough */
#undef LOG_SAFE_SUM
#define LOG_SAFE_SUM (sizeof(T) == sizeof(float) ? -69.0 : -660.0)

static inline const T *NAME(row)(const Weight *weight, int64_t i) {
    return (const T *)weight->data + (i % weight->period) * weight->stride;
}

/* Where row i's gradient goes: a row of write (storage type) or of accumulate (double). */
typedef struct {
    T *write;
    double *accumulate;
} NAME(Sink);

static inline NAME(Sink) NAME(sink)(const Weight *weight, int64_t i, int64_t m) {
    NAME(Sink) sink = {0, 0};
    if (weight->write) sink.write = (T *)weight->write + i * m;
    else sink.accumulate = weight->accumulate + (i % weight->period) * m;
    return sink;
}

static inline void NAME(put)(NAME(Sink) sink, int64_t r, double value) {
    if (sink.write) sink.write[r] = (T)value;
    else sink.accumulate[r] += value;
}

/* The exact integral of phi(N(t)) from 0 to x[i], phi = ELU + 1, N(t) = c sum_r a_r relu(w_r t
   + b_r), for rows [row0, row1); weights[0..2] are w, b, a. out[i] gets the signed integral
   and network[i] N(x[i]).
   With dx (gradients wanted), dx[i] gets phi(N(x)) and slope[i, r], intercept[i, r] the
   derivatives of the signed integral in the slope and intercept of N summed over the pieces of
   [min(0, x), max(0, x)] where unit r is active: the integral's gradients are c a_r slope in
   w_r, c a_r intercept in b_r and c (w_r slope + b_r intercept) in a_r. work holds 80 (m + 1)
   bytes: 2 (m + 1) Breaks and 6 (m + 1) doubles. Returns the number of rows with a non-finite
   x (left unwritten). */
int64_t NAME(relu_integral)(int64_t row0, int64_t row1, int64_t m, const T *x,
                            const Weight *weights, double c, T *out, T *network, T *dx,
                            T *slope_out, T *intercept_out, void *work) {
    Break *breaks = (Break *)work;
    double *p0 = (double *)(breaks + m + 1), *p1 = p0 + (m + 1);
    double *before0 = p1 + (m + 1), *before1 = before0 + (m + 1), *taus = before1 + (m + 1);
    Break *spare = (Break *)(taus + m + 1);
    double *codes = (double *)(spare + m + 1); /* 0 off, 1 on, 2 a breakpoint inside */
    int moments = dx != 0;
    int64_t skipped = 0;
    for (int64_t i = row0; i < row1; i++) {
        double xi = (double)x[i];
        if (!isfinite(xi)) {
            skipped++;
            continue;
        }
        const T *wr = NAME(row)(weights, i), *br = NAME(row)(weights + 1, i);
        const T *ar = NAME(row)(weights + 2, i);
        double lo = xi < 0 ? xi : 0, hi = xi < 0 ? 0 : xi, mid = 0.5 * (lo + hi);
        double alpha = 0, gamma = 0;
        /* Units without a breakpoint inside (lo, hi) are active on all of it or none; the
           others are active at lo when w < 0. Branch-free, in two loops that vectorize (p0
           holds each unit's activity at lo until the pieces need it). */
        for (int64_t r = 0; r < m; r++) {
            double wv = (double)wr[r], bv = (double)br[r];
            double tau = bv / -wv; /* w = 0: +-inf or NaN, never inside */
            double inside = (wv != 0) & (tau > lo) & (tau < hi) ? 1.0 : 0.0;
            double active = inside != 0 ? (wv < 0 ? 1.0 : 0.0) : (wv * mid + bv > 0 ? 1.0 : 0.0);
            taus[r] = tau;
            codes[r] = inside != 0 ? 2.0 : active;
            p0[r] = active;
        }
        for (int64_t r = 0; r < m; r++) {
            double on = p0[r] * c * (double)ar[r];
            alpha += on * (double)wr[r];
            gamma += on * (double)br[r];
        }
        int64_t k = 0;
        for (int64_t r = 0; r < m; r++) {
            breaks[k].key = taus[r];
            breaks[k].unit = r;
            k += codes[r] == 2;
        }
        sort_breaks(breaks, k, spare);
        double start = lo, total = 0, u_start = alpha * lo + gamma, n_lo = u_start;
        double e_start = negative_exp(u_start), u_end = u_start;
        for (int64_t j = 0; j <= k; j++) {
            double end = j < k ? breaks[j].key : hi, integral, zeroth = 0, first = 0;
            u_end = alpha * end + gamma;
            double e_end = negative_exp(u_end);
            elu_piece(start, end, alpha, u_start, u_end, e_start, e_end, moments, &integral,
                      &zeroth, &first);
            total += integral;
            if (moments) {
                p0[j] = zeroth;
                p1[j] = first;
            }
            if (j < k) {
                int64_t r = breaks[j].unit;
                double wv = (double)wr[r], av = c * (double)ar[r];
                alpha += av * fabs(wv);
                gamma += wv > 0 ? av * (double)br[r] : -av * (double)br[r];
                start = end;
                u_start = u_end;
                e_start = e_end;
            }
        }
        double n_hi = u_end;
        network[i] = (T)(xi < 0 ? n_lo : n_hi);
        double sign = xi < 0 ? -1.0 : 1.0;
        out[i] = (T)(sign * total);
        if (!moments) continue;
        dx[i] = (T)elu_plus_one(xi < 0 ? n_lo : n_hi);
        /* Sums over pieces 0..j (before) and j..k (after, accumulated from the end); every
           piece's moment has the sign of the query, so no sum cancels. */
        double s0 = 0, s1 = 0;
        for (int64_t j = 0; j <= k; j++) {
            s0 += p0[j];
            s1 += p1[j];
            before0[j] = s0;
            before1[j] = s1;
        }
        T *srow = slope_out + i * m, *irow = intercept_out + i * m;
        T all1 = (T)(sign * s1), all0 = (T)(sign * s0);
        for (int64_t r = 0; r < m; r++) {
            srow[r] = codes[r] == 1 ? all1 : (T)0;
            irow[r] = codes[r] == 1 ? all0 : (T)0;
        }
        double after0 = 0, after1 = 0;
        for (int64_t j = k - 1; j >= 0; j--) {
            /* The break between pieces j and j + 1: after0 and after1 hold pieces j + 1..k. */
            after0 += p0[j + 1];
            after1 += p1[j + 1];
            int64_t r = breaks[j].unit;
            int rises = (double)wr[r] > 0;
            srow[r] = (T)(sign * (rises ? after1 : before1[j]));
            irow[r] = (T)(sign * (rises ? after0 : before0[j]));
        }
    }
    return skipped;
}

/* The gradients of sum_i grad[i] integral[i] + grad_network[i] N(x[i]) (grad_network may be
   null) in w, b and a (weights[0..2]) from relu_integral's slope and intercept sums; gx[i]
   gets the network term's gradient in x (the integral's is grad[i] phi(N(x[i])). */
void NAME(relu_integral_backward)(int64_t row0, int64_t row1, int64_t m, const T *x,
                                  const T *grad, const T *grad_network, const T *slope_in,
                                  const T *intercept_in, const Weight *weights, double c,
                                  T *gx) {
    for (int64_t i = row0; i < row1; i++) {
        double g = (double)grad[i], xi = (double)x[i];
        double gn = grad_network ? c * (double)grad_network[i] : 0.0, slope = 0;
        const T *wr = NAME(row)(weights, i), *br = NAME(row)(weights + 1, i);
        const T *ar = NAME(row)(weights + 2, i);
        const T *srow = slope_in + i * m, *irow = intercept_in + i * m;
        NAME(Sink) gw = NAME(sink)(weights, i, m), gb = NAME(sink)(weights + 1, i, m);
        NAME(Sink) ga = NAME(sink)(weights + 2, i, m);
        if (gw.accumulate && gb.write && ga.accumulate) {
            /* the autoregressive and coupling case, without branches: it vectorizes */
            double *gwr = gw.accumulate, *gar = ga.accumulate;
            T *gbr = gb.write;
            for (int64_t r = 0; r < m; r++) {
                double s = g * (double)srow[r], q = g * (double)irow[r], av = (double)ar[r];
                double wv = (double)wr[r], bv = (double)br[r], ca = c * av;
                double u = wv * xi + bv, on = u > 0 ? 1.0 : 0.0;
                double gu = on * gn * av;
                slope += gu * wv;
                gwr[r] += ca * s + gu * xi;
                gbr[r] = (T)(ca * q + gu);
                gar[r] += c * (wv * s + bv * q) + on * gn * u;
            }
            gx[i] = (T)slope;
            continue;
        }
        for (int64_t r = 0; r < m; r++) {
            double s = g * (double)srow[r], q = g * (double)irow[r], av = (double)ar[r];
            double wv = (double)wr[r], bv = (double)br[r], ca = c * av;
            double u = wv * xi + bv, on = (double)(u > 0); /* N's unit r at x */
            double gu = on * gn * av;
            slope += gu * wv;
            NAME(put)(gw, r, ca * s + gu * xi);
            NAME(put)(gb, r, ca * q + gu);
            NAME(put)(ga, r, c * (wv * s + bv * q) + on * gn * u);
        }
        gx[i] = (T)slope;
    }
}

/* N(x[i]) = c sum_r a_r relu(w_r x + b_r) into out, or with grad (not null) instead its
   gradients: gx[i] = grad[i] dN/dx, and those in w, b, a (weights[0..2]). */
void NAME(relu_network)(int64_t row0, int64_t row1, int64_t m, const T *x,
                        const Weight *weights, double c, T *out, const T *grad, T *gx) {
    for (int64_t i = row0; i < row1; i++) {
        double xi = (double)x[i];
        const T *wr = NAME(row)(weights, i), *br = NAME(row)(weights + 1, i);
        const T *ar = NAME(row)(weights + 2, i);
        if (!grad) {
            double total = 0;
            for (int64_t r = 0; r < m; r++) {
                double u = (double)wr[r] * xi + (double)br[r];
                total += (double)ar[r] * (u > 0 ? u : 0.0);
            }
            out[i] = (T)(c * total);
            continue;
        }
        double g = c * (double)grad[i], slope = 0;
        NAME(Sink) gw = NAME(sink)(weights, i, m), gb = NAME(sink)(weights + 1, i, m);
        NAME(Sink) ga = NAME(sink)(weights + 2, i, m);
        for (int64_t r = 0; r < m; r++) {
            double u = (double)wr[r] * xi + (double)br[r];
            double on = (double)(u > 0); /* without branches: u's sign is unpredictable */
            double gar = on * g * (double)ar[r];
            slope += gar * (double)wr[r];
            NAME(put)(gw, r, gar * xi);
            NAME(put)(gb, r, gar);
            NAME(put)(ga, r, on * g * u);
        }
        gx[i] = (T)slope;
    }
}

/* The constrained family's saturating part y = c sum_r a_r sigma(w_r x + b_r) into y and its
   log-slope log(c sum_r a_r w_r sigma'(u_r)) into log_slope, weights[0..4] being w, b, a,
   log w, log a: a direct sum in double, or where that underflows or overflows a log-sum-exp
   of log a + log w + log sigma'(u). With values and slopes (rows x m, for the backward
   pass), sigma(u_r) and sigma'(u_r) too. */
void NAME(saturating_forward)(int64_t row0, int64_t row1, int64_t m, int kind, const T *x,
                              const Weight *weights, double c, T *y, T *log_slope, T *values,
                              T *slopes) {
    double log_c = log(c);
    for (int64_t i = row0; i < row1; i++) {
        double xi = (double)x[i], value = 0, slope = 0;
        const T *wr = NAME(row)(weights, i), *br = NAME(row)(weights + 1, i);
        const T *ar = NAME(row)(weights + 2, i);
        T *vrow = values ? values + i * m : 0, *srow = slopes ? slopes + i * m : 0;
        for (int64_t r = 0; r < m; r++) {
            double s, d, curve, wv = (double)wr[r], av = (double)ar[r];
            saturating(kind, wv * xi + (double)br[r], &s, &d, &curve);
            value += av * s;
            slope += av * wv * d;
            if (vrow) {
                vrow[r] = (T)s;
                srow[r] = (T)d;
            }
        }
        y[i] = (T)(c * value);
        if (slope > 1e-280 && slope < 1e280) {
            log_slope[i] = (T)(log_c + log(slope));
            continue;
        }
        const T *lwr = NAME(row)(weights + 3, i), *lar = NAME(row)(weights + 4, i);
        double top = -INFINITY, sum = 0;
        for (int64_t r = 0; r < m; r++) {
            double u = (double)wr[r] * xi + (double)br[r];
            double t = (double)lar[r] + (double)lwr[r] + log_saturating_slope(kind, u);
            if (t > top) top = t;
        }
        for (int64_t r = 0; r < m; r++) {
            double u = (double)wr[r] * xi + (double)br[r];
            sum += exp((double)lar[r] + (double)lwr[r] + log_saturating_slope(kind, u) - top);
        }
        log_slope[i] = (T)(log_c + top + log(sum));
    }
}

/* Gradients of sum_i gy[i] y[i] + gl[i] log_slope[i] (gy or gl may be null) given the saved
   log_slope, sigma(u) and sigma'(u): gx[i] per row, and those in w, b, a, log w, log a
   (weights[0..4]). */
void NAME(saturating_backward)(int64_t row0, int64_t row1, int64_t m, int kind, const T *x,
                               const Weight *weights, double c, const T *log_slope,
                               const T *values, const T *slopes, const T *gy, const T *gl,
                               T *gx) {
    double log_c = log(c);
    for (int64_t i = row0; i < row1; i++) {
        double xi = (double)x[i], gyi = gy ? c * (double)gy[i] : 0, gli = gl ? (double)gl[i] : 0;
        double shift = gl ? log_c - (double)log_slope[i] : 0;
        double scale = exp(shift); /* c / (c sum a w sigma'): each unit's share is a w sigma' */
        /* The kept sigma'(u) serve where their sum is far above the storage type's smallest
           normal number (a unit's share is then exact to its precision); elsewhere each share
           is taken from log sigma'(u). */
        int direct = gl && -shift > LOG_SAFE_SUM;
        const T *wr = NAME(row)(weights, i), *br = NAME(row)(weights + 1, i);
        const T *ar = NAME(row)(weights + 2, i), *lwr = NAME(row)(weights + 3, i);
        const T *lar = NAME(row)(weights + 4, i);
        NAME(Sink) gw = NAME(sink)(weights, i, m), gb = NAME(sink)(weights + 1, i, m);
        NAME(Sink) ga = NAME(sink)(weights + 2, i, m), glw = NAME(sink)(weights + 3, i, m);
        NAME(Sink) gla = NAME(sink)(weights + 4, i, m);
        const T *vrow = values + i * m, *srow = slopes + i * m;
        double dx = 0;
        if ((direct || !gl) && gw.accumulate && gb.write && ga.accumulate && glw.accumulate &&
            gla.accumulate) {
            /* the autoregressive and coupling case, without branches: it vectorizes */
            double *gwr = gw.accumulate, *gar = ga.accumulate, *glwr = glw.accumulate;
            double *glar = gla.accumulate, factor = gl ? gli * scale : 0.0;
            T *gbr = gb.write;
            for (int64_t r = 0; r < m; r++) {
                double wv = (double)wr[r], av = (double)ar[r];
                double s = (double)vrow[r], d = (double)srow[r];
                double curve = kind == 0 ? -2.0 * s : 1.0 - 2.0 * s;
                double share = factor * av * wv * d, gu = gyi * av * d + share * curve;
                glwr[r] += share;
                glar[r] += share;
                gar[r] += gyi * s;
                gbr[r] = (T)gu;
                gwr[r] += gu * xi;
                dx += gu * wv;
            }
            gx[i] = (T)dx;
            continue;
        }
        for (int64_t r = 0; r < m; r++) {
            double wv = (double)wr[r], av = (double)ar[r];
            double s = (double)vrow[r], d = (double)srow[r];
            double curve = kind == 0 ? -2.0 * s : 1.0 - 2.0 * s;
            double gu = gyi * av * d, share = 0;
            if (gl) {
                share = direct ? av * wv * d * scale
                               : exp((double)lar[r] + (double)lwr[r] +
                                     log_saturating_slope(kind, wv * xi + (double)br[r]) +
                                     shift);
                share *= gli;
                gu += share * curve;
            }
            NAME(put)(glw, r, share);
            NAME(put)(gla, r, share);
            NAME(put)(ga, r, gyi * s);
            NAME(put)(gb, r, gu);
            NAME(put)(gw, r, gu * xi);
            dx += gu * wv;
        }
        gx[i] = (T)dx;
    }
}

#endif
