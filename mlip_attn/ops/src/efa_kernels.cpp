// Fused CPU loops of Euclidean fast attention: see efa_kernels.h for the maths and layouts.
#include "efa_kernels.h"
#include "kernel_isa.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

namespace mlip_attn_efa {

namespace {

#define MLIP_ATTN_INLINE __attribute__((always_inline)) inline

constexpr int64_t kMaxK = 64;     // frequencies per head (d_qk / 2)
constexpr int64_t kMaxP = 1024;   // C·D of one atom's queries / keys
constexpr int64_t kLanes = kPairLanes;
constexpr int64_t kBlockRows = 4;   // rows of a block (divides kLanes)

// cos/sin(ω_k t), k < K, into c, s
MLIP_ATTN_INLINE void angles(const Frequencies &f, int64_t K, double t, double *c, double *s)
{
  if (f.arithmetic && K > 1) {
    const double d = f.omega[1] - f.omega[0];
    double cd, sd;
    ::sincos(d * t, &sd, &cd);
    if (f.start == Frequencies::Start::zero) {          // ω_k = k Δ (physics 1)
      c[0] = 1.0;
      s[0] = 0.0;
    } else if (f.start == Frequencies::Start::step) {   // ω_k = (k + 1) Δ (physics 2)
      c[0] = cd;
      s[0] = sd;
    } else {
      ::sincos(f.omega[0] * t, &s[0], &c[0]);
    }
    for (int64_t k = 1; k < K; k++) {
      c[k] = c[k - 1] * cd - s[k - 1] * sd;
      s[k] = s[k - 1] * cd + c[k - 1] * sd;
    }
    return;
  }
  for (int64_t k = 0; k < K; k++) ::sincos(f.omega[k] * t, &s[k], &c[k]);
}

// per grid direction: CC[e] = s cos θ_k, SS[e] = ∓ s sin θ_k (− for e = 2k, + for 2k + 1),
// so out[e] = x[e] CC[e] + x[e ^ 1] SS[e]; for the backward SN[e] = s sin θ_k and
// TT[e] = ∓ s cos θ_k (dSS/dθ), dout[e]/dθ = −x[e] SN[e] + x[e ^ 1] TT[e]
template <typename T>
MLIP_ATTN_INLINE void grid_factors(const Rotation<T> &rot, int64_t g, double t, T *CC, T *SS,
                                   T *SN, T *TT)
{
  double c[kMaxK], s[kMaxK];
  const int64_t K = rot.D / 2;
  angles(*rot.freq, K, t, c, s);
  const double w = rot.scale[g];
  for (int64_t k = 0; k < K; k++) {
    const T cw = T(c[k] * w), sw = T(s[k] * w);
    CC[2 * k] = CC[2 * k + 1] = cw;
    SS[2 * k] = -sw;
    SS[2 * k + 1] = sw;
    if (SN) {
      SN[2 * k] = SN[2 * k + 1] = sw;
      TT[2 * k] = -cw;
      TT[2 * k + 1] = cw;
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void swapped_pairs(const T *x, int64_t n, T *xs)
{
  for (int64_t e = 0; e < n; e += 2) {
    xs[e] = x[e + 1];
    xs[e + 1] = x[e];
  }
}

template <typename T>
MLIP_ATTN_INLINE void rotate_forward_impl(const Rotation<T> &rot, int64_t begin, int64_t end,
                                          T *out)
{
  const int64_t G = rot.G, C = rot.C, D = rot.D, P = C * D;
  T CC[2 * kMaxK], SS[2 * kMaxK], xs[kMaxP];
  for (int64_t n = begin; n < end; n++) {
    const T *x = rot.x + n * P;
    const T *r = rot.centred + 3 * n;
    swapped_pairs(x, P, xs);
    for (int64_t g = 0; g < G; g++) {
      const double *u = rot.dirs + 3 * g;
      const double t = u[0] * double(r[0]) + u[1] * double(r[1]) + u[2] * double(r[2]);
      grid_factors<T>(rot, g, t, CC, SS, nullptr, nullptr);
      T *o = out + (n * G + g) * P;
      for (int64_t ch = 0; ch < C; ch++) {
        const T *xc = x + ch * D, *xsc = xs + ch * D;
        T *oc = o + ch * D;
#pragma omp simd
        for (int64_t e = 0; e < D; e++) oc[e] = xc[e] * CC[e] + xsc[e] * SS[e];
      }
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void rotate_backward_impl(const Rotation<T> &rot, int64_t begin, int64_t end,
                                           const T *grad, T *g_x, T *g_centred)
{
  const int64_t G = rot.G, C = rot.C, D = rot.D, K = D / 2, P = C * D;
  T CC[2 * kMaxK], SS[2 * kMaxK], SN[2 * kMaxK], TT[2 * kMaxK], gt[2 * kMaxK];
  T xs[kMaxP], acc1[kMaxP], acc2[kMaxP];
  for (int64_t n = begin; n < end; n++) {
    const T *x = rot.x + n * P;
    const T *r = rot.centred + 3 * n;
    swapped_pairs(x, P, xs);
    std::fill(acc1, acc1 + P, T(0));
    std::fill(acc2, acc2 + P, T(0));
    double gr[3] = {0.0, 0.0, 0.0};
    for (int64_t g = 0; g < G; g++) {
      const double *u = rot.dirs + 3 * g;
      const double t = u[0] * double(r[0]) + u[1] * double(r[1]) + u[2] * double(r[2]);
      grid_factors<T>(rot, g, t, CC, SS, SN, TT);
      const T *go = grad + (n * G + g) * P;
      std::fill(gt, gt + D, T(0));
      for (int64_t ch = 0; ch < C; ch++) {
        const T *xc = x + ch * D, *xsc = xs + ch * D, *gc = go + ch * D;
        T *a1 = acc1 + ch * D, *a2 = acc2 + ch * D;
#pragma omp simd
        for (int64_t e = 0; e < D; e++) {
          a1[e] += gc[e] * CC[e];
          a2[e] += gc[e] * SS[e];
          gt[e] += gc[e] * (xsc[e] * TT[e] - xc[e] * SN[e]);
        }
      }
      if (g_centred) {
        double dt = 0.0;   // d/dt of Σ_k (…)(ω_k t)
        for (int64_t k = 0; k < K; k++)
          dt += (double(gt[2 * k]) + double(gt[2 * k + 1])) * rot.freq->omega[k];
        gr[0] += dt * u[0];
        gr[1] += dt * u[1];
        gr[2] += dt * u[2];
      }
    }
    if (g_x) {
      T *gx = g_x + n * P;
      for (int64_t e = 0; e < P; e += 2) {   // out[e] took x[e] CC[e] and x[e ^ 1] SS[e]
        gx[e] = acc1[e] + acc2[e + 1];
        gx[e + 1] = acc1[e + 1] + acc2[e];
      }
    }
    if (g_centred)
      for (int d = 0; d < 3; d++) g_centred[3 * n + d] = T(gr[d]);
  }
}

// sin and cos of x (|x| < 2^20 rad) to ~1 ulp, branch-free so that `omp simd` vectorises it:
// x = j π/2 + r (Cody–Waite, π/2 in three parts), the fdlibm polynomials on |r| ≤ π/4, and
// the quadrant j mod 4 choosing signs and swapping sin and cos
MLIP_ATTN_INLINE void sincos_reduced(double x, double &s_out, double &c_out)
{
  constexpr double two_over_pi = 6.36619772367581382433e-01;
  constexpr double pio2_1 = 1.57079632673412561417e+00, pio2_2 = 6.07710050630396597660e-11,
                   pio2_3 = 2.02226624879595063154e-21;
  constexpr double shift = 6755399441055744.0;   // 1.5 · 2^52: adding it rounds to an integer
  const double jd = (x * two_over_pi + shift) - shift;
  const double r = ((x - jd * pio2_1) - jd * pio2_2) - jd * pio2_3;
  const double z = r * r;
  const double sp = r + r * z * (-1.66666666666666324348e-01 + z * (8.33333333332248946124e-03
                    + z * (-1.98412698298579493134e-04 + z * (2.75573137070700676789e-06
                    + z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)))));
  const double cp = 1.0 - 0.5 * z + z * z * (4.16666666666666019037e-02
                    + z * (-1.38888888888741095749e-03 + z * (2.48015872894767294178e-05
                    + z * (-2.75573143513906633035e-07 + z * (2.08757232129817482790e-09
                    + z * -1.13596475577881948265e-11)))));
  const int64_t j = int64_t(jd);
  const bool swap = (j & 1) != 0;
  const double s = swap ? cp : sp, c = swap ? sp : cp;
  s_out = (j & 2) ? -s : s;
  c_out = ((j + 1) & 2) ? -c : c;
}

// the angle-addition step to the next arithmetic frequency, n values in place:
// (c, s) ← (c cd − s sd, s cd + c sd)
MLIP_ATTN_INLINE void next_angles(double *c, double *s, const double *cd, const double *sd,
                                  int64_t n)
{
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    const double cn = c[i] * cd[i] - s[i] * sd[i], sn = s[i] * cd[i] + c[i] * sd[i];
    c[i] = cn;
    s[i] = sn;
  }
}

// s, c = sin, cos(w t) for n values of t
MLIP_ATTN_INLINE void sincos_of(double w, const double *t, double *s, double *c, int64_t n)
{
#pragma omp simd
  for (int64_t i = 0; i < n; i++) sincos_reduced(w * t[i], s[i], c[i]);
}

// the start of the angle-addition recursion over arithmetic ω_k = ω_0 + k Δ for n values of t:
// cos/sin of ω_0 t into c, s and of Δ t into cd, sd (`next_angles` then steps k → k + 1)
MLIP_ATTN_INLINE void first_angles(const Frequencies &f, const double *t, int64_t n, double *c,
                                   double *s, double *cd, double *sd)
{
  const double d = f.omega[1] - f.omega[0], w0 = f.omega[0];
  const bool zero = f.start == Frequencies::Start::zero,
             step = f.start == Frequencies::Start::step;
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    sincos_reduced(d * t[i], sd[i], cd[i]);
    c[i] = zero ? 1.0 : cd[i];
    s[i] = zero ? 0.0 : sd[i];
  }
  if (!zero && !step) sincos_of(w0, t, s, c, n);   // ω_0 = any
}

// ------------------------------------------------------------------ the switched exact form
// (efa_kernels.h, PairTiles). Row atom i against a column tile J of kLanes atoms, the tile's
// atoms in the lanes: distances, the weights W_k = S sinc(ω_k r) (and dW_k/dr) in float64, the
// channel products, and the sums over a row's partners kept per lane (in registers, or in
// small L1-resident accumulators [channel][lane]) and reduced once per row. A pair of
// different tiles (J > I) is visited once, from row i: the partner j's terms go into J's
// column sums [channel][lane] of the share, summed over a block of kBlockRows rows before
// each load and store (`lane_outer`); a tile's own pairs are visited from both ends.

// kLanes values of T as one GCC vector (one or two registers; the compiler splits it where the
// clone's registers are narrower)
template <typename T> struct LaneVector {
  typedef T type __attribute__((vector_size(kLanes * sizeof(T))));
};
template <typename T> using Lane = typename LaneVector<T>::type;

template <typename T> MLIP_ATTN_INLINE Lane<T> load_lanes(const T *p)
{
  Lane<T> v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <typename T> MLIP_ATTN_INLINE void store_lanes(T *p, Lane<T> v)
{
  __builtin_memcpy(p, &v, sizeof v);
}

// W_k = S sinc(ω_k r) into wk and (dk not nullptr) dW_k/dr into dk for the lanes, given sin
// and cos of ω_k r (s, c) and the switch (S, dS). Series: the lanes with (ω_k r)² < 1e-4 take
// the series of sinc (the quotient s / (ω r) is 0/0 at r = 0 or ω = 0, and its derivative
// cancels for small ω r); without Series every lane takes the quotient (callers choose it only
// where no lane is that small)
template <bool Series>
MLIP_ATTN_INLINE void frequency_weights(double w, double iw, const double *r, const double *inv_r,
                                        const double *S, const double *dS, const double *s,
                                        const double *c, double *wk, double *dk)
{
  constexpr int64_t L = kLanes;
#pragma omp simd
  for (int64_t l = 0; l < L; l++) {
    const double x = w * r[l], x2 = x * x;
    const bool small = Series && x2 < 1e-4;
    // the series' divisions as products (vector divisions are slow; ≤ 1 ulp apart)
    const double sinc = small ? 1.0 - x2 * (1.0 / 6.0) + x2 * x2 * (1.0 / 120.0)
                                    - x2 * x2 * x2 * (1.0 / 5040.0)
                              : s[l] * iw * inv_r[l];
    wk[l] = S[l] * sinc;
    if (dk) {   // the same for every lane: the loop is split on it, not branched per lane
      const double dsinc = small ? w * x * (-1.0 / 3.0 + x2 * (1.0 / 30.0)
                                            - x2 * x2 * (1.0 / 840.0))
                                 : (c[l] - sinc) * inv_r[l];
      dk[l] = dS[l] * sinc + S[l] * dsinc;
    }
  }
}

// W_k = S(r) sinc(ω_k r) into ws[k·L + l] and (wd not nullptr) dW_k/dr into wd, for the
// lanes' distances r (inv_r = 1/r, 0 at r = 0, where W_k = 1 and dW_k/dr = 0); branch-free over
// the lanes (`sincos_reduced`), one sincos per lane for arithmetic frequencies
MLIP_ATTN_INLINE void pair_weights(const Frequencies &f, int64_t K, double r_max, const double *r,
                                   const double *inv_r, double *ws, double *wd)
{
  constexpr int64_t L = kLanes;
  double S[L], dS[L], c[L], s[L], cd[L], sd[L];
  if (r_max > 0.0) {   // the C² switch from r_max/2 to r_max (mlip_attn/nn/switching.py)
    const double r_on = 0.5 * r_max, inv_width = 1.0 / (r_max - r_on);
#pragma omp simd
    for (int64_t l = 0; l < L; l++) {
      const double u = (r[l] - r_on) * inv_width, t = u < 0.0 ? 0.0 : (u > 1.0 ? 1.0 : u);
      S[l] = 1.0 - t * t * t * (t * (6.0 * t - 15.0) + 10.0);
      dS[l] = -30.0 * t * t * (1.0 - t) * (1.0 - t) * inv_width;
    }
  } else {
    for (int64_t l = 0; l < L; l++) {
      S[l] = 1.0;
      dS[l] = 0.0;
    }
  }
  double r_min = r[0];   // the lanes' shortest distance: whether any needs the series
#pragma omp simd reduction(min : r_min)
  for (int64_t l = 0; l < L; l++) r_min = std::min(r_min, r[l]);
  const bool recursion = f.arithmetic && K > 1;
  if (recursion) first_angles(f, r, L, c, s, cd, sd);
  for (int64_t k = 0; k < K; k++) {
    const double w = f.omega[k], iw = f.inverse[k], x_min = w * r_min;
    if (recursion && k > 0) next_angles(c, s, cd, sd, L);
    else if (!recursion) sincos_of(w, r, s, c, L);
    double *wk = ws + k * L, *dk = wd ? wd + k * L : nullptr;
    if (x_min * x_min < 1e-4)
      frequency_weights<true>(w, iw, r, inv_r, S, dS, s, c, wk, dk);
    else
      frequency_weights<false>(w, iw, r, inv_r, S, dS, s, c, wk, dk);
  }
}

// r_i − r_j per lane (d, [3][L]), r and 1/r (0 at r = 0) of row atom xi against tile xT
template <typename T>
MLIP_ATTN_INLINE void lane_distances(const T *xi, const T *xT, double *d, double *r, double *inv_r)
{
  constexpr int64_t L = kLanes;
  const double x0 = double(xi[0]), x1 = double(xi[1]), x2 = double(xi[2]);
#pragma omp simd
  for (int64_t l = 0; l < L; l++) {
    d[l] = x0 - double(xT[l]);
    d[L + l] = x1 - double(xT[L + l]);
    d[2 * L + l] = x2 - double(xT[2 * L + l]);
    const double r2 = d[l] * d[l] + d[L + l] * d[L + l] + d[2 * L + l] * d[2 * L + l];
    r[l] = std::sqrt(r2);
    inv_r[l] = r2 > 0.0 ? 1.0 / r[l] : 0.0;
  }
}

// out[k] = Σ_c Σ_t a[c·D + 2k + t] bT[(c·D + 2k + t)·L + ·] for k < K (out: K lanes vectors):
// every frequency's channel products, a row's features against a tile's, per lane
template <typename T>
MLIP_ATTN_INLINE void pair_products(const T *a, const T *bT, int64_t C, int64_t K, Lane<T> *out)
{
  constexpr int64_t L = kLanes;
  const int64_t D = 2 * K;
  for (int64_t k = 0; k < K; k++) {   // register sums, two chains per frequency
    Lane<T> s0 = {}, s1 = {};
    for (int64_t ch = 0; ch < C; ch++) {
      const int64_t e = ch * D + 2 * k;
      s0 += a[e] * load_lanes(bT + e * L);
      s1 += a[e + 1] * load_lanes(bT + (e + 1) * L);
    }
    out[k] = s0 + s1;
  }
}

// Σ_v a[v] bT[v·L + ·]
template <typename T> MLIP_ATTN_INLINE Lane<T> lane_dots(const T *a, const T *bT, int64_t V)
{
  constexpr int64_t L = kLanes;
  Lane<T> part[4] = {};   // four independent chains
  int64_t v = 0;
  for (; v + 4 <= V; v += 4)
    for (int64_t u = 0; u < 4; u++) part[u] += a[v + u] * load_lanes(bT + (v + u) * L);
  for (; v < V; v++) part[0] += a[v] * load_lanes(bT + v * L);
  return (part[0] + part[1]) + (part[2] + part[3]);
}

// acc[c·L + ·] += w bT[c·L + ·] for n channels c
template <typename T>
MLIP_ATTN_INLINE void lane_axpy(Lane<T> w, const T *bT, int64_t n, T *acc)
{
  constexpr int64_t L = kLanes;
  for (int64_t c = 0; c < n; c++)
    store_lanes(acc + c * L, load_lanes(acc + c * L) + w * load_lanes(bT + c * L));
}

// acc[0 : V] += Σ_l a[l] rows[l·V : (l + 1)·V]: the lanes' rows (a tile's features, row-major)
// weighted by the lanes of a, V in chunks of kLanes held in a register across the lanes
template <typename T>
MLIP_ATTN_INLINE void rows_axpy(Lane<T> a, const T *rows, int64_t V, T *acc)
{
  constexpr int64_t L = kLanes;
  T w[L];   // broadcast from memory: one load each, no lane extraction
  store_lanes(w, a);
  int64_t v = 0;
  for (; v + 4 * L <= V; v += 4 * L) {   // four chunks, two chains each: eight independent sums
    Lane<T> even[4] = {}, odd[4] = {};
    for (int64_t l = 0; l < L; l += 2)
      for (int64_t u = 0; u < 4; u++) {
        even[u] += w[l] * load_lanes(rows + l * V + v + u * L);
        odd[u] += w[l + 1] * load_lanes(rows + (l + 1) * V + v + u * L);
      }
    for (int64_t u = 0; u < 4; u++)
      store_lanes(acc + v + u * L, load_lanes(acc + v + u * L) + (even[u] + odd[u]));
  }
  for (; v + L <= V; v += L) {
    Lane<T> even = {}, odd = {};
    for (int64_t l = 0; l < L; l += 2) {
      even += w[l] * load_lanes(rows + l * V + v);
      odd += w[l + 1] * load_lanes(rows + (l + 1) * V + v);
    }
    store_lanes(acc + v, load_lanes(acc + v) + (even + odd));
  }
  for (; v < V; v++) {
    T sum = acc[v];
    for (int64_t l = 0; l < L; l++) sum += w[l] * rows[l * V + v];
    acc[v] = sum;
  }
}

// the lanes of W (float64) as T
template <typename T> MLIP_ATTN_INLINE Lane<T> lanes_of(const double *w)
{
  return __builtin_convertvector(load_lanes(w), Lane<T>);
}

// out[c] = Σ_l acc[c·L + l] for n channels
template <typename T> MLIP_ATTN_INLINE void lane_sums(const T *acc, int64_t n, T *out)
{
  constexpr int64_t L = kLanes;
  for (int64_t c = 0; c < n; c++) {
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t l = 0; l < L; l++) sum += acc[c * L + l];
    out[c] = sum;
  }
}

// acc[c·L + ·] += Σ_r x[r][c] w[r·L + ·] for n channels c, R rows: the rows' features x
// spread over the lanes' partners with the rows' lane weights w, each sum loaded and stored once
template <typename T, int64_t R>
MLIP_ATTN_INLINE void lane_outer(const T *const *x, int64_t offset, const T *w, int64_t n, T *acc)
{
  constexpr int64_t L = kLanes;
  Lane<T> wr[R];
  for (int64_t r = 0; r < R; r++) wr[r] = load_lanes(w + r * L);
  for (int64_t c = 0; c < n; c++) {
    Lane<T> sum = load_lanes(acc + c * L);
    for (int64_t r = 0; r < R; r++) sum += x[r][offset + c] * wr[r];
    store_lanes(acc + c * L, sum);
  }
}

// the atoms of row tile I's slots [first, first + R) into rows (−1 for padding); false if
// all are padding
template <int64_t R>
MLIP_ATTN_INLINE bool block_rows(const TileGeometry &tiles, int64_t I, int64_t first,
                                 int64_t *rows)
{
  bool any = false;
  for (int64_t r = 0; r < R; r++) {
    rows[r] = tiles.atoms[I * kLanes + first + r];
    any = any || rows[r] >= 0;
  }
  return any;
}

// out[r]: row rows[r] of x (N, width); a padding row points at a valid one (its lane weights
// are zero)
template <typename T, int64_t R>
MLIP_ATTN_INLINE void block_features(const int64_t *rows, const T *x, int64_t width,
                                     const T **out)
{
  int64_t valid = 0;
  for (int64_t r = 0; r < R; r++) if (rows[r] >= 0) valid = rows[r];
  for (int64_t r = 0; r < R; r++) out[r] = x + (rows[r] >= 0 ? rows[r] : valid) * width;
}

template <typename T>
MLIP_ATTN_INLINE void pairs_forward_impl(const Pairs<T> &p, const PairTiles<T> &tiles,
                                         int64_t share, T *y, T *columns)
{
  constexpr int64_t L = kLanes, R = kBlockRows;
  const int64_t C = p.C, D = p.D, K = D / 2, V = p.V, P = C * D;
  std::vector<double> ws(K * L);
  double d[3 * L], r[L], inv_r[L];
  Lane<T> prod[kMaxK];
  T a_ji[R * L];   // the block's A_ji, [row][lane]
  int64_t rows[R];
  const T *v_rows[R];
  std::fill(columns + tiles.share_slot_start[share] * V * L,   // this share's column sums
            columns + tiles.share_slot_start[share + 1] * V * L, T(0));
  for (int64_t I = tiles.share_start[share]; I < tiles.share_start[share + 1]; I++) {
    for (int64_t slot = 0; slot < L; slot++) {
      const int64_t i = tiles.atoms[I * L + slot];
      if (i >= 0) std::fill(y + i * V, y + (i + 1) * V, T(0));
    }
    // column tiles outside, the row tile's atoms inside in blocks of R: a column tile's data
    // is read from memory once per row tile and then from L1
    for (int64_t n = tiles.start[I]; n < tiles.start[I + 1]; n++) {
      const int64_t J = tiles.nbr[n];
      if (J < I) continue;   // this pair of tiles is J's
      // J > I: each pair once, the partners' sums y_j += A_ji v_i into J's column sums
      T *col = J > I ? columns + tiles.slot[n] * V * L : nullptr;
      const T *kT = tiles.k.data() + J * P * L, *qT = tiles.q.data() + J * P * L;
      const T *xT = tiles.x.data() + J * 3 * L, *vR = tiles.v_rows.data() + J * L * V;
      for (int64_t first = 0; first < L; first += R) {
        if (!block_rows<R>(tiles, I, first, rows)) continue;
        for (int64_t row = 0; row < R; row++) {
          const int64_t i = rows[row];
          std::fill(a_ji + row * L, a_ji + (row + 1) * L, T(0));
          if (i < 0) continue;
          lane_distances(p.positions + 3 * i, xT, d, r, inv_r);
          pair_weights(*p.freq, K, p.r_max, r, inv_r, ws.data(), nullptr);
          pair_products(p.q + i * P, kT, C, K, prod);   // ⟨q_i, k_j⟩_k
          Lane<T> a = {};
          for (int64_t k = 0; k < K; k++) a += lanes_of<T>(ws.data() + k * L) * prod[k];   // A_ij
          rows_axpy(a, vR, V, y + i * V);   // y_i += Σ_j A_ij v_j
          if (col) {
            pair_products(p.k + i * P, qT, C, K, prod);   // ⟨q_j, k_i⟩_k
            Lane<T> aji = {};
            for (int64_t k = 0; k < K; k++) aji += lanes_of<T>(ws.data() + k * L) * prod[k];
            store_lanes(a_ji + row * L, aji);
          }
        }
        if (col) {   // y_j += Σ_i A_ji v_i over the block's rows
          block_features<T, R>(rows, p.val, V, v_rows);
          lane_outer<T, R>(v_rows, 0, a_ji, V, col);
        }
      }
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void pairs_backward_impl(const Pairs<T> &p, const PairTiles<T> &tiles,
                                          int64_t share, const T *g_y, T *g_q, T *g_k,
                                          T *g_val, T *g_pos, T *columns,
                                          double *column_positions)
{
  constexpr int64_t L = kLanes, R = kBlockRows;
  const int64_t C = p.C, D = p.D, K = D / 2, V = p.V, P = C * D;
  const int64_t at_k = g_q ? P : 0, at_v = at_k + (g_k ? P : 0), W = at_v + (g_val ? V : 0);
  // per-lane sums of R rows at a time ([row][channel][lane]); a column tile's data is read from
  // memory once per R rows and then from L1
  std::vector<T> aq(g_q ? R * P * L : 0), ak(g_k ? R * P * L : 0);
  std::vector<double> ws(K * L), wd(g_pos ? K * L : 0), gp(R * 3 * L);
  double d[3 * L], r[L], inv_r[L];
  Lane<T> p_ij[kMaxK], p_ji[kMaxK];
  // the block's lane weights for the partners' sums: [k][row][lane] g_ji W_k, g_ij W_k;
  // [row][lane] A_ij
  std::vector<T> w_ji(K * R * L), w_ij(K * R * L), a_ij(R * L);
  int64_t rows[R];
  const T *q_rows[R], *k_rows[R], *g_rows[R];
  const int64_t first_slot = tiles.share_slot_start[share];
  const int64_t end_slot = tiles.share_slot_start[share + 1];
  std::fill(columns + first_slot * W * L, columns + end_slot * W * L, T(0));   // this share's
  if (g_pos)
    std::fill(column_positions + first_slot * 3 * L, column_positions + end_slot * 3 * L, 0.0);
  for (int64_t I = tiles.share_start[share]; I < tiles.share_start[share + 1]; I++)
    for (int64_t first = 0; first < L; first += R) {
      if (!block_rows<R>(tiles, I, first, rows)) continue;
      block_features<T, R>(rows, p.q, P, q_rows);
      block_features<T, R>(rows, p.k, P, k_rows);
      block_features<T, R>(rows, g_y, V, g_rows);
      std::fill(aq.begin(), aq.end(), T(0));
      std::fill(ak.begin(), ak.end(), T(0));
      std::fill(gp.begin(), gp.end(), 0.0);
      for (int64_t row = 0; row < R; row++)
        if (g_val && rows[row] >= 0)
          std::fill(g_val + rows[row] * V, g_val + (rows[row] + 1) * V, T(0));
      for (int64_t n = tiles.start[I]; n < tiles.start[I + 1]; n++) {
        const int64_t J = tiles.nbr[n];
        if (J < I) continue;   // this pair of tiles is J's
        // J > I: each pair once, the partners' gradients into J's column sums
        // ([g_q | g_k | g_val][lane], the wanted ones; g_r apart in float64)
        const bool both = J > I;
        T *col = both ? columns + tiles.slot[n] * W * L : nullptr;
        T *cq = both && g_q ? col : nullptr, *ck = both && g_k ? col + at_k * L : nullptr;
        T *cv = both && g_val ? col + at_v * L : nullptr;
        double *cp = both && g_pos ? column_positions + tiles.slot[n] * 3 * L : nullptr;
        const T *kT = tiles.k.data() + J * P * L, *qT = tiles.q.data() + J * P * L;
        const T *vT = tiles.v.data() + J * V * L, *gT = tiles.g.data() + J * V * L;
        const T *gR = tiles.g_rows.data() + J * L * V, *xT = tiles.x.data() + J * 3 * L;
        for (int64_t row = 0; row < R; row++) {
          const int64_t i = rows[row];
          if (i < 0) {   // zero weights: padding rows add nothing to the partners' sums
            std::fill(a_ij.begin() + row * L, a_ij.begin() + (row + 1) * L, T(0));
            for (int64_t k = 0; k < K; k++) {
              const int64_t at = (k * R + row) * L;
              std::fill(w_ij.begin() + at, w_ij.begin() + at + L, T(0));
              std::fill(w_ji.begin() + at, w_ji.begin() + at + L, T(0));
            }
            continue;
          }
          const T *qi = p.q + i * P, *ki = p.k + i * P, *vi = p.val + i * V, *gyi = g_y + i * V;
          T *aqi = g_q ? aq.data() + row * P * L : nullptr;
          T *aki = g_k ? ak.data() + row * P * L : nullptr;
          double *gpi = gp.data() + row * 3 * L;
          lane_distances(p.positions + 3 * i, xT, d, r, inv_r);
          pair_weights(*p.freq, K, p.r_max, r, inv_r, ws.data(), g_pos ? wd.data() : nullptr);
          const Lane<T> g_ij = lane_dots(gyi, vT, V);   // dL/dA_ij = g_y_i · v_j
          const Lane<T> g_ji = lane_dots(vi, gT, V);    // dL/dA_ji = g_y_j · v_i
          Lane<T> a_ji = {}, aij = {}, dA = {};
          if (g_val || g_pos) pair_products(ki, qT, C, K, p_ji);   // ⟨q_j, k_i⟩_k
          if (g_pos || (both && g_val)) pair_products(qi, kT, C, K, p_ij);   // ⟨q_i, k_j⟩_k
          for (int64_t k = 0; k < K; k++) {
            const Lane<T> wk = lanes_of<T>(ws.data() + k * L);
            const Lane<T> wij = g_ij * wk, wji = g_ji * wk;
            store_lanes(w_ij.data() + (k * R + row) * L, wij);
            store_lanes(w_ji.data() + (k * R + row) * L, wji);
            for (int64_t ch = 0; ch < C; ch++) {
              const int64_t e = ch * D + 2 * k;
              // g_q_i += Σ_j g_ij W_k k_j;  g_k_i += Σ_j g_ji W_k q_j
              if (g_q) lane_axpy<T>(wij, kT + e * L, 2, aqi + e * L);
              if (g_k) lane_axpy<T>(wji, qT + e * L, 2, aki + e * L);
            }
            if (g_val || g_pos) a_ji += wk * p_ji[k];
            if (both && g_val) aij += wk * p_ij[k];
            if (g_pos)   // dA_ij/dr, dA_ji/dr weighted by their gradients
              dA += lanes_of<T>(wd.data() + k * L) * (g_ij * p_ij[k] + g_ji * p_ji[k]);
          }
          store_lanes(a_ij.data() + row * L, aij);
          if (g_val) rows_axpy(a_ji, gR, V, g_val + i * V);   // g_val_i += Σ_j A_ji g_y_j
          // g_r_i += Σ_j (g_ij dA_ij/dr + g_ji dA_ji/dr) (r_i − r_j)/r; g_r_j −= each term
          if (g_pos) {
            double f[L];
            store_lanes(f, __builtin_convertvector(dA, Lane<double>));
#pragma omp simd
            for (int64_t l = 0; l < L; l++) {
              const double fl = f[l] * inv_r[l];
              gpi[l] += fl * d[l];
              gpi[L + l] += fl * d[L + l];
              gpi[2 * L + l] += fl * d[2 * L + l];
            }
            if (both)
#pragma omp simd
              for (int64_t l = 0; l < L; l++) {
                const double fl = f[l] * inv_r[l];
                cp[l] -= fl * d[l];
                cp[L + l] -= fl * d[L + l];
                cp[2 * L + l] -= fl * d[2 * L + l];
              }
          }
        }
        if (both) {   // the partners' sums over the block's rows
          for (int64_t k = 0; k < K; k++)
            for (int64_t ch = 0; ch < C; ch++) {
              const int64_t e = ch * D + 2 * k;
              // g_q_j += Σ_i g_ji W_k k_i;  g_k_j += Σ_i g_ij W_k q_i
              if (g_q) lane_outer<T, R>(k_rows, e, w_ji.data() + k * R * L, 2, cq + e * L);
              if (g_k) lane_outer<T, R>(q_rows, e, w_ij.data() + k * R * L, 2, ck + e * L);
            }
          // g_val_j += Σ_i A_ij g_y_i
          if (g_val) lane_outer<T, R>(g_rows, 0, a_ij.data(), V, cv);
        }
      }
      for (int64_t row = 0; row < R; row++) {
        const int64_t i = rows[row];
        if (i < 0) continue;
        if (g_q) lane_sums(aq.data() + row * P * L, P, g_q + i * P);
        if (g_k) lane_sums(ak.data() + row * P * L, P, g_k + i * P);
        if (g_pos)
          for (int c = 0; c < 3; c++) {
            double sum = 0.0;
            for (int64_t l = 0; l < L; l++) sum += gp[(row * 3 + c) * L + l];
            g_pos[3 * i + c] = T(sum);
          }
      }
    }
}

// ------------------------------------------------------------------ the grid sums' rotation
// (layout [c][t][g][k], see efa_kernels.h)

// One atom's table, layout [k][g]: Ct[k G + g] = s_g cos θ, St[k G + g] = s_g sin θ,
// θ = ω_k t_g, t_g = u_g · r; vectorised over the grid directions. Arithmetic frequencies take
// one sincos per direction and the angle-addition recursion over k (as `angles`); others one
// sincos per (k, g). work: 5 G doubles.
template <typename T>
MLIP_ATTN_INLINE void grid_table(const Rotation<T> &grid, const T *r, double *work, T *Ct, T *St)
{
  const int64_t G = grid.G, K = grid.D / 2;
  const Frequencies &f = *grid.freq;
  const double r0 = double(r[0]), r1 = double(r[1]), r2 = double(r[2]);
  const double *u = grid.dirs, *w = grid.scale;
  double *t = work, *c = t + G, *s = c + G, *cd = s + G, *sd = cd + G;
#pragma omp simd
  for (int64_t g = 0; g < G; g++) t[g] = u[3 * g] * r0 + u[3 * g + 1] * r1 + u[3 * g + 2] * r2;
  const bool recursion = f.arithmetic && K > 1;
  if (recursion) first_angles(f, t, G, c, s, cd, sd);
  for (int64_t k = 0; k < K; k++) {
    T *ck = Ct + k * G, *sk = St + k * G;
    const double wk = f.omega[k];
    if (recursion && k > 0) next_angles(c, s, cd, sd, G);
    else if (!recursion) sincos_of(wk, t, s, c, G);
#pragma omp simd
    for (int64_t g = 0; g < G; g++) {
      ck[g] = T(w[g] * c[g]);
      sk[g] = T(w[g] * s[g]);
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void grid_rotate_impl(const Rotation<T> &grid, int64_t begin, int64_t end, T *out)
{
  const int64_t G = grid.G, C = grid.C, D = grid.D, K = D / 2, GK = G * K;
  std::vector<T> table(2 * GK);
  std::vector<double> work(5 * G);
  T *Ct = table.data(), *St = Ct + GK;
  for (int64_t n = begin; n < end; n++) {
    grid_table(grid, grid.centred + 3 * n, work.data(), Ct, St);
    T *row = out + (n - begin) * 2 * C * GK;
    for (int64_t c = 0; c < C; c++) {
      const T *x = grid.x + (n * C + c) * D;
      for (int64_t k = 0; k < K; k++) {
        const T a = x[2 * k], b = x[2 * k + 1], *ck = Ct + k * G, *sk = St + k * G;
        T *pa = row + (2 * c * K + k) * G, *pb = pa + GK;
#pragma omp simd
        for (int64_t g = 0; g < G; g++) {
          pa[g] = a * ck[g] - b * sk[g];
          pb[g] = a * sk[g] + b * ck[g];
        }
      }
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void grid_rotate_backward_impl(const Rotation<T> &grid, int64_t begin, int64_t end,
                                                const T *grad, T *g_x, T *g_centred, T *rows)
{
  const int64_t G = grid.G, C = grid.C, D = grid.D, K = D / 2, GK = G * K;
  std::vector<T> table(3 * GK);
  std::vector<double> work(6 * G);
  T *Ct = table.data(), *St = Ct + GK, *gth = St + GK;   // gth: ∂/∂θ per (k, g)
  double *gt = work.data() + 5 * G;                        // ∂/∂t per g
  for (int64_t n = begin; n < end; n++) {
    grid_table(grid, grid.centred + 3 * n, work.data(), Ct, St);
    std::fill(gth, gth + GK, T(0));
    const T *row = grad + (n - begin) * 2 * C * GK;
    for (int64_t c = 0; c < C; c++) {
      const T *x = grid.x + (n * C + c) * D;
      for (int64_t k = 0; k < K; k++) {
        const T a = x[2 * k], b = x[2 * k + 1], *ck = Ct + k * G, *sk = St + k * G;
        const T *pa = row + (2 * c * K + k) * G, *pb = pa + GK;
        T *tk = gth + k * G, ga = T(0), gb = T(0);
        // out_a = a C − b S, out_b = a S + b C; dC/dθ = −S, dS/dθ = C
#pragma omp simd reduction(+ : ga, gb)
        for (int64_t g = 0; g < G; g++) {
          ga += pa[g] * ck[g] + pb[g] * sk[g];
          gb += pb[g] * ck[g] - pa[g] * sk[g];
          tk[g] += pb[g] * (a * ck[g] - b * sk[g]) - pa[g] * (a * sk[g] + b * ck[g]);
        }
        if (rows) {
          T *ra = rows + (n - begin) * 2 * C * GK + (2 * c * K + k) * G, *rb = ra + GK;
#pragma omp simd
          for (int64_t g = 0; g < G; g++) {
            ra[g] = a * ck[g] - b * sk[g];
            rb[g] = a * sk[g] + b * ck[g];
          }
        }
        if (g_x) {
          g_x[(n * C + c) * D + 2 * k] = ga;
          g_x[(n * C + c) * D + 2 * k + 1] = gb;
        }
      }
    }
    if (g_centred) {
      std::fill(gt, gt + G, 0.0);
      for (int64_t k = 0; k < K; k++) {
        const double wk = grid.freq->omega[k];
        const T *tk = gth + k * G;
#pragma omp simd
        for (int64_t g = 0; g < G; g++) gt[g] += wk * double(tk[g]);
      }
      double gr0 = 0.0, gr1 = 0.0, gr2 = 0.0;
      const double *u = grid.dirs;
#pragma omp simd reduction(+ : gr0, gr1, gr2)
      for (int64_t g = 0; g < G; g++) {
        gr0 += gt[g] * u[3 * g];
        gr1 += gt[g] * u[3 * g + 1];
        gr2 += gt[g] * u[3 * g + 2];
      }
      g_centred[3 * n] = T(gr0);
      g_centred[3 * n + 1] = T(gr1);
      g_centred[3 * n + 2] = T(gr2);
    }
  }
}

using mlip_attn_kernels::Isa;
using mlip_attn_kernels::kernel_isa;

// one entry point per kernel: a generic, an AVX2 and an AVX-512 clone of the same body
#ifdef MLIP_ATTN_X86_CLONES
#define MLIP_ATTN_DISPATCH(NAME, PARAMS, ARGS)                                        \
  template <typename T> void NAME##_generic PARAMS { NAME##_impl<T> ARGS; }           \
  template <typename T> MLIP_ATTN_AVX2 void NAME##_avx2 PARAMS { NAME##_impl<T> ARGS; } \
  template <typename T> MLIP_ATTN_AVX512 void NAME##_avx512 PARAMS                    \
  {                                                                                   \
    NAME##_impl<T> ARGS;                                                              \
  }                                                                                   \
  template <typename T> void NAME##_any PARAMS                                        \
  {                                                                                   \
    switch (kernel_isa()) {                                                           \
    case Isa::avx512: NAME##_avx512<T> ARGS; return;                                  \
    case Isa::avx2: NAME##_avx2<T> ARGS; return;                                      \
    default: NAME##_generic<T> ARGS;                                                  \
    }                                                                                 \
  }
#else
#define MLIP_ATTN_DISPATCH(NAME, PARAMS, ARGS)                                        \
  template <typename T> void NAME##_any PARAMS { NAME##_impl<T> ARGS; }
#endif

MLIP_ATTN_DISPATCH(rotate_forward, (const Rotation<T> &r, int64_t b, int64_t e, T *out),
                   (r, b, e, out))
MLIP_ATTN_DISPATCH(rotate_backward,
                   (const Rotation<T> &r, int64_t b, int64_t e, const T *g, T *gx, T *gc),
                   (r, b, e, g, gx, gc))
MLIP_ATTN_DISPATCH(grid_rotate, (const Rotation<T> &r, int64_t b, int64_t e, T *out), (r, b, e, out))
MLIP_ATTN_DISPATCH(grid_rotate_backward,
                   (const Rotation<T> &r, int64_t b, int64_t e, const T *g, T *gx, T *gc, T *rows),
                   (r, b, e, g, gx, gc, rows))
MLIP_ATTN_DISPATCH(pairs_forward,
                   (const Pairs<T> &p, const PairTiles<T> &t, int64_t s, T *y, T *cols),
                   (p, t, s, y, cols))
MLIP_ATTN_DISPATCH(pairs_backward,
                   (const Pairs<T> &p, const PairTiles<T> &t, int64_t s, const T *gy, T *gq,
                    T *gk, T *gv, T *gp, T *cols, double *col_pos),
                   (p, t, s, gy, gq, gk, gv, gp, cols, col_pos))

}    // namespace

Frequencies::Frequencies(std::vector<double> w) : omega(std::move(w))
{
  const int64_t K = int64_t(omega.size());
  double largest = 0.0;
  for (double x : omega) largest = std::max(largest, std::abs(x));
  const double tol = 1e-12 * largest;
  arithmetic = K > 1;
  for (int64_t k = 2; k < K && arithmetic; k++)
    arithmetic = std::abs(omega[k] - (omega[0] + k * (omega[1] - omega[0]))) <= tol;
  if (arithmetic && omega[0] == 0.0) start = Start::zero;
  else if (arithmetic && std::abs(omega[0] - (omega[1] - omega[0])) <= tol) start = Start::step;
  for (double x : omega) inverse.push_back(x != 0.0 ? 1.0 / x : 0.0);
}

template <typename T>
void rotate_forward(const Rotation<T> &rot, int64_t begin, int64_t end, T *out)
{
  rotate_forward_any<T>(rot, begin, end, out);
}

template <typename T>
void rotate_backward(const Rotation<T> &rot, int64_t begin, int64_t end, const T *grad, T *g_x,
                     T *g_centred)
{
  rotate_backward_any<T>(rot, begin, end, grad, g_x, g_centred);
}

template <typename T>
void grid_rotate(const Rotation<T> &grid, int64_t begin, int64_t end, T *out)
{
  grid_rotate_any<T>(grid, begin, end, out);
}

template <typename T>
void grid_rotate_backward(const Rotation<T> &grid, int64_t begin, int64_t end, const T *grad, T *g_x,
                          T *g_centred, T *rows)
{
  grid_rotate_backward_any<T>(grid, begin, end, grad, g_x, g_centred, rows);
}

template <typename T>
void pairs_forward(const Pairs<T> &p, const PairTiles<T> &tiles, int64_t share, T *y, T *columns)
{
  pairs_forward_any<T>(p, tiles, share, y, columns);
}

template <typename T>
void pairs_backward(const Pairs<T> &p, const PairTiles<T> &tiles, int64_t share, const T *g_y,
                    T *g_q, T *g_k, T *g_val, T *g_pos, T *columns, double *column_positions)
{
  pairs_backward_any<T>(p, tiles, share, g_y, g_q, g_k, g_val, g_pos, columns, column_positions);
}

template <typename T, typename S>
void add_column_sums(const PairTiles<T> &tiles, const S *sums, int64_t stride, int64_t offset,
                     int64_t width, int64_t begin, int64_t end, T *out)
{
  constexpr int64_t L = kPairLanes;
  std::vector<S> acc(width * L);
  for (int64_t J = begin; J < end; J++) {
    if (tiles.tile_slot_start[J] == tiles.tile_slot_start[J + 1]) continue;
    std::fill(acc.begin(), acc.end(), S(0));
    for (int64_t n = tiles.tile_slot_start[J]; n < tiles.tile_slot_start[J + 1]; n++) {
      const S *slot = sums + (tiles.tile_slots[n] * stride + offset) * L;   // [channel][lane]
#pragma omp simd
      for (int64_t e = 0; e < width * L; e++) acc[e] += slot[e];
    }
    for (int64_t l = 0; l < L; l++) {
      const int64_t j = tiles.atoms[J * L + l];
      if (j < 0) continue;
      for (int64_t c = 0; c < width; c++)
        out[j * width + c] = T(S(out[j * width + c]) + acc[c * L + l]);
    }
  }
}

// 30-bit Morton code of a position quantised to 1,024 steps per axis of its structure's box
MLIP_ATTN_INLINE uint64_t spread_bits(uint64_t v)
{
  v &= 0x3ff;
  v = (v | (v << 16)) & 0x30000ff;
  v = (v | (v << 8)) & 0x300f00f;
  v = (v | (v << 4)) & 0x30c30c3;
  v = (v | (v << 2)) & 0x9249249;
  return v;
}

template <typename T>
TileGeometry pair_tile_geometry(const T *positions, const int64_t *batch, int64_t N, int64_t B,
                                double r_max)
{
  constexpr int64_t L = kPairLanes;
  // atoms sorted by structure, then along a Morton curve: a tile's atoms lie close together
  std::vector<double> lo(3 * B, 1e300), hi(3 * B, -1e300);
  for (int64_t i = 0; i < N; i++)
    for (int d = 0; d < 3; d++) {
      lo[3 * batch[i] + d] = std::min(lo[3 * batch[i] + d], double(positions[3 * i + d]));
      hi[3 * batch[i] + d] = std::max(hi[3 * batch[i] + d], double(positions[3 * i + d]));
    }
  std::vector<uint64_t> key(N);
  for (int64_t i = 0; i < N; i++) {
    const int64_t b = batch[i];
    uint64_t code = 0;
    for (int d = 0; d < 3; d++) {
      const double span = hi[3 * b + d] - lo[3 * b + d];
      const double u = span > 0.0 ? (double(positions[3 * i + d]) - lo[3 * b + d]) / span : 0.0;
      code |= spread_bits(uint64_t(std::min(1023.0, std::max(0.0, u * 1024.0)))) << d;
    }
    key[i] = code;
  }
  std::vector<int64_t> order(N);
  for (int64_t i = 0; i < N; i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return batch[a] != batch[b] ? batch[a] < batch[b] : key[a] < key[b];
  });
  // tiles: runs of at most L sorted atoms of one structure, padded with −1
  TileGeometry t;
  std::vector<int64_t> structure;
  std::vector<double> box;   // (tiles, 6): lower and upper corner
  for (int64_t s = 0; s < N;) {
    int64_t e = s + 1;
    while (e < N && e - s < L && batch[order[e]] == batch[order[s]]) e++;
    double b[6] = {1e300, 1e300, 1e300, -1e300, -1e300, -1e300};
    for (int64_t a = s; a < e; a++)
      for (int d = 0; d < 3; d++) {
        b[d] = std::min(b[d], double(positions[3 * order[a] + d]));
        b[3 + d] = std::max(b[3 + d], double(positions[3 * order[a] + d]));
      }
    for (int64_t a = 0; a < L; a++) t.atoms.push_back(s + a < e ? order[s + a] : -1);
    structure.push_back(batch[order[s]]);
    box.insert(box.end(), b, b + 6);
    s = e;
  }
  t.count = int64_t(structure.size());
  // each row tile's column tiles: its structure's tiles whose boxes come within r_max
  t.start.assign(t.count + 1, 0);
  for (int64_t I = 0; I < t.count; I++) {
    for (int64_t J = 0; J < t.count; J++) {
      if (structure[J] != structure[I]) continue;
      if (r_max > 0.0) {
        double gap2 = 0.0;
        for (int d = 0; d < 3; d++) {
          const double gap = std::max({0.0, box[6 * J + d] - box[6 * I + 3 + d],
                                       box[6 * I + d] - box[6 * J + 3 + d]});
          gap2 += gap * gap;
        }
        // S = 0 for every pair of the two tiles (touching boxes stay: r_max² may underflow)
        if (gap2 > 0.0 && gap2 >= r_max * r_max) continue;
      }
      t.nbr.push_back(J);
    }
    t.start[I + 1] = int64_t(t.nbr.size());
  }
  return t;
}

// The shares of the pair loops and their column sums' slots (PairTiles). A row tile I takes the
// tile pairs (I, J ≥ I); shares are runs of row tiles with about equal numbers of them; their
// slots are numbered share by share. Returns the number of slots.
static int64_t plan_shares(const TileGeometry &t, PairSchedule &s, int64_t shares)
{
  shares = std::max<int64_t>(1, std::min(shares, t.count));
  std::vector<int64_t> work(t.count + 1, 0);   // prefix sums of the tile pairs each row takes
  for (int64_t I = 0; I < t.count; I++) {
    int64_t own = 0;
    for (int64_t n = t.start[I]; n < t.start[I + 1]; n++) own += t.nbr[n] >= I;
    work[I + 1] = work[I] + own;
  }
  s.share_start.assign(shares + 1, t.count);
  s.share_start[0] = 0;
  for (int64_t sh = 1, I = 0; sh < shares; sh++) {   // the first row tile past sh/shares of it
    while (I < t.count && work[I] * shares < work[t.count] * sh) I++;
    s.share_start[sh] = I;
  }
  // a slot per (share, column tile J above a row tile of the share)
  s.slot.assign(t.nbr.size(), -1);
  s.share_slot_start.assign(shares + 1, 0);
  std::vector<int64_t> owner(t.count, -1), slot_of(t.count, -1), slot_tile;
  for (int64_t sh = 0; sh < shares; sh++) {
    for (int64_t I = s.share_start[sh]; I < s.share_start[sh + 1]; I++)
      for (int64_t n = t.start[I]; n < t.start[I + 1]; n++) {
        const int64_t J = t.nbr[n];
        if (J <= I) continue;
        if (owner[J] != sh) {
          owner[J] = sh;
          slot_of[J] = int64_t(slot_tile.size());
          slot_tile.push_back(J);
        }
        s.slot[n] = slot_of[J];
      }
    s.share_slot_start[sh + 1] = int64_t(slot_tile.size());
  }
  s.slots = int64_t(slot_tile.size());
  // each tile's slots (CSR), for adding the sums into the outputs
  s.tile_slot_start.assign(t.count + 1, 0);
  for (int64_t J : slot_tile) s.tile_slot_start[J + 1]++;
  for (int64_t J = 0; J < t.count; J++) s.tile_slot_start[J + 1] += s.tile_slot_start[J];
  s.tile_slots.resize(slot_tile.size());
  std::vector<int64_t> fill(s.tile_slot_start.begin(), s.tile_slot_start.end() - 1);
  for (int64_t g = 0; g < s.slots; g++) s.tile_slots[fill[slot_tile[g]]++] = g;
  return s.slots;
}

template <typename T>
PairTiles<T> plan_pair_tiles(const Pairs<T> &p, int64_t N, int64_t B, const T *g_y,
                             int64_t shares, int64_t max_slots)
{
  constexpr int64_t L = kPairLanes;
  const int64_t P = p.C * p.D, V = p.V;
  PairTiles<T> t;
  static_cast<TileGeometry &>(t) = pair_tile_geometry(p.positions, p.batch, N, B, p.r_max);
  // fewer shares (each reaching the same column tiles) until the column sums fit
  while (plan_shares(t, t, shares) > max_slots && shares > 1)
    shares = std::min(shares, t.count) / 2;
  // the tiles' features transposed, [channel][lane]; padding lanes: zero features and the
  // position of the tile's first atom (finite distances; their products are zero)
  auto pack = [&](const T *src, int64_t width, std::vector<T> &out) {
    out.assign(t.count * width * L, T(0));
    for (int64_t J = 0; J < t.count; J++)
      for (int64_t l = 0; l < L; l++) {
        const int64_t j = t.atoms[J * L + l];
        if (j < 0) continue;
        for (int64_t c = 0; c < width; c++) out[(J * width + c) * L + l] = src[j * width + c];
      }
  };
  pack(p.positions, 3, t.x);
  for (int64_t J = 0; J < t.count; J++)
    for (int64_t l = 0; l < L; l++)
      if (t.atoms[J * L + l] < 0)
        for (int d = 0; d < 3; d++) t.x[(J * 3 + d) * L + l] = t.x[(J * 3 + d) * L];
  // and row-major, [lane][channel] (zero rows in padding lanes)
  auto rows = [&](const T *src, int64_t width, std::vector<T> &out) {
    out.assign(t.count * L * width, T(0));
    for (int64_t a = 0; a < t.count * L; a++)
      if (t.atoms[a] >= 0) std::copy(src + t.atoms[a] * width, src + (t.atoms[a] + 1) * width,
                                     out.begin() + a * width);
  };
  pack(p.k, P, t.k);
  pack(p.q, P, t.q);
  if (g_y) {
    pack(p.val, V, t.v);
    pack(g_y, V, t.g);
    rows(g_y, V, t.g_rows);
  } else {
    rows(p.val, V, t.v_rows);
  }
  return t;
}

#define MLIP_ATTN_INSTANTIATE(T)                                                            \
  template void rotate_forward<T>(const Rotation<T> &, int64_t, int64_t, T *);              \
  template void rotate_backward<T>(const Rotation<T> &, int64_t, int64_t, const T *, T *,   \
                                   T *);                                                    \
  template void grid_rotate<T>(const Rotation<T> &, int64_t, int64_t, T *);                   \
  template void grid_rotate_backward<T>(const Rotation<T> &, int64_t, int64_t, const T *, T *,  \
                                        T *, T *);                                          \
  template TileGeometry pair_tile_geometry<T>(const T *, const int64_t *, int64_t, int64_t,  \
                                              double);                                      \
  template PairTiles<T> plan_pair_tiles<T>(const Pairs<T> &, int64_t, int64_t, const T *,    \
                                           int64_t, int64_t);                                \
  template void pairs_forward<T>(const Pairs<T> &, const PairTiles<T> &, int64_t, T *, T *);  \
  template void pairs_backward<T>(const Pairs<T> &, const PairTiles<T> &, int64_t, const T *, \
                                  T *, T *, T *, T *, T *, double *);                         \
  template void add_column_sums<T, double>(const PairTiles<T> &, const double *, int64_t,     \
                                           int64_t, int64_t, int64_t, int64_t, T *);
MLIP_ATTN_INSTANTIATE(float)
MLIP_ATTN_INSTANTIATE(double)
template void add_column_sums<float, float>(const PairTiles<float> &, const float *, int64_t,
                                            int64_t, int64_t, int64_t, int64_t, float *);

}    // namespace mlip_attn_efa
