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

// the C² switch S(r) from r_max/2 to r_max and dS/dr (r_max ≤ 0: 1 and 0)
MLIP_ATTN_INLINE void switch_of(double r, double r_max, double &S, double &dS)
{
  S = 1.0;
  dS = 0.0;
  if (r_max <= 0.0) return;
  const double r_on = 0.5 * r_max, width = r_max - r_on;
  const double t = (r - r_on) / width;
  if (t <= 0.0) return;
  if (t >= 1.0) {
    S = 0.0;
    return;
  }
  S = 1.0 - t * t * t * (t * (6.0 * t - 15.0) + 10.0);
  dS = -30.0 * t * t * (1.0 - t) * (1.0 - t) / width;
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

// The partners j ≠ i of atom i that i owns: its structure's atoms within r_max in the 27
// cells around its own, each unordered pair owned by one end (i < j when i + j is odd, i > j
// when even: about half of every atom's partners, so ranges of atoms balance), with
// r = |r_i − r_j| and the difference vector r_i − r_j. Gathered into a list (not a callback:
// a lambda would be compiled without the caller's AVX clone target).
struct Partner {
  int64_t j;
  double r, d[3];
};

template <typename T>
MLIP_ATTN_INLINE void gather_partners(const Pairs<T> &p, int64_t i, std::vector<Partner> &out)
{
  out.clear();
  const Cells &cl = *p.cells;
  const int64_t b = p.batch[i];
  const int64_t *dims = cl.dims.data() + 3 * b, *own = cl.atom_cell.data() + 3 * i;
  const T *ri = p.positions + 3 * i;
  const double r_max2 = p.r_max * p.r_max;
  for (int64_t x = std::max<int64_t>(own[0] - 1, 0); x <= std::min(own[0] + 1, dims[0] - 1); x++)
    for (int64_t y = std::max<int64_t>(own[1] - 1, 0); y <= std::min(own[1] + 1, dims[1] - 1); y++)
      for (int64_t z = std::max<int64_t>(own[2] - 1, 0); z <= std::min(own[2] + 1, dims[2] - 1);
           z++) {
        const int64_t cell = cl.structure_offset[b] + (x * dims[1] + y) * dims[2] + z;
        for (int64_t a = cl.start[cell]; a < cl.start[cell + 1]; a++) {
          const int64_t j = cl.atoms[a];
          if (j == i || (((i + j) & 1) ? j < i : j > i)) continue;
          const T *rj = p.positions + 3 * j;
          Partner e{j, 0.0, {double(ri[0]) - double(rj[0]), double(ri[1]) - double(rj[1]),
                             double(ri[2]) - double(rj[2])}};
          const double r2 = e.d[0] * e.d[0] + e.d[1] * e.d[1] + e.d[2] * e.d[2];
          if (p.r_max > 0.0 && r2 >= r_max2) continue;   // S = 0 exactly
          e.r = std::sqrt(r2);
          out.push_back(e);
        }
      }
}

// For atom i's partner list: ws[k·M + p] = S(r_p) sinc(ω_k r_p) and (when `deriv`)
// wd[k·M + p] = d/dr of it, computed for all M partners at once (the loops over partners
// vectorise; one sincos per partner when the frequencies are arithmetic from 0 or Δ).
struct Table {
  std::vector<double> r, inv_r, S, dS, c, s, ws, wd;
};

// ws and wd expanded per channel, partner-major: row p holds ws[k(e)·M + p] for e < D (the
// channel pair of frequency k), so a pair's A = Σ_e (Σ_c q[c, e] k[c, e]) · row[e] is one
// vector multiply-add over D channels
template <typename T> struct Rows {
  std::vector<T> ws, wd;
};

template <typename T>
MLIP_ATTN_INLINE void expand_rows(const Table &t, int64_t K, int64_t M, bool deriv, Rows<T> &rows)
{
  const int64_t D = 2 * K;
  rows.ws.resize(M * D);
  if (deriv) rows.wd.resize(M * D);
  for (int64_t p = 0; p < M; p++) {
    T *ws = rows.ws.data() + p * D;
    for (int64_t k = 0; k < K; k++) ws[2 * k] = ws[2 * k + 1] = T(t.ws[k * M + p]);
    if (!deriv) continue;
    T *wd = rows.wd.data() + p * D;
    for (int64_t k = 0; k < K; k++) wd[2 * k] = wd[2 * k + 1] = T(t.wd[k * M + p]);
  }
}

// channel products Σ_c a[c, e] b[c, e] into prod (D)
template <typename T>
MLIP_ATTN_INLINE void channel_products(const T *a, const T *b, int64_t C, int64_t D, T *prod)
{
#pragma omp simd
  for (int64_t e = 0; e < D; e++) prod[e] = a[e] * b[e];
  for (int64_t ch = 1; ch < C; ch++) {
    const T *ac = a + ch * D, *bc = b + ch * D;
#pragma omp simd
    for (int64_t e = 0; e < D; e++) prod[e] += ac[e] * bc[e];
  }
}

MLIP_ATTN_INLINE void fill_table(const Frequencies &f, int64_t K, double r_max,
                                 const std::vector<Partner> &partners, bool deriv, Table &t)
{
  const int64_t M = int64_t(partners.size());
  t.r.resize(M);
  t.inv_r.resize(M);
  t.S.resize(M);
  t.dS.resize(M);
  t.c.resize(K * M);
  t.s.resize(K * M);
  t.ws.resize(K * M);
  if (deriv) t.wd.resize(K * M);
  double *r = t.r.data(), *inv_r = t.inv_r.data(), *c = t.c.data(), *s = t.s.data();
  for (int64_t p = 0; p < M; p++) {
    r[p] = partners[p].r;
    inv_r[p] = r[p] > 0.0 ? 1.0 / r[p] : 0.0;
    switch_of(r[p], r_max, t.S[p], t.dS[p]);
  }
  if (f.arithmetic && K > 1 && f.start != Frequencies::Start::other) {
    const double step = f.omega[1] - f.omega[0];
    double *cd = c + (K - 1) * M, *sd = s + (K - 1) * M;   // scratch: overwritten last
    for (int64_t p = 0; p < M; p++) ::sincos(step * r[p], &sd[p], &cd[p]);
    const bool zero = f.start == Frequencies::Start::zero;
    std::vector<double> cstep(cd, cd + M), sstep(sd, sd + M);
    const double *cs_ = cstep.data(), *ss_ = sstep.data();
#pragma omp simd
    for (int64_t p = 0; p < M; p++) {
      c[p] = zero ? 1.0 : cs_[p];
      s[p] = zero ? 0.0 : ss_[p];
    }
    for (int64_t k = 1; k < K; k++) {
      const double *cp = c + (k - 1) * M, *sp = s + (k - 1) * M;
      double *ck = c + k * M, *sk = s + k * M;
#pragma omp simd
      for (int64_t p = 0; p < M; p++) {
        ck[p] = cp[p] * cs_[p] - sp[p] * ss_[p];
        sk[p] = sp[p] * cs_[p] + cp[p] * ss_[p];
      }
    }
  } else {
    for (int64_t p = 0; p < M; p++)
      for (int64_t k = 0; k < K; k++) ::sincos(f.omega[k] * r[p], &s[k * M + p], &c[k * M + p]);
  }
  const double *S = t.S.data(), *dS = t.dS.data();
  for (int64_t k = 0; k < K; k++) {
    const double w = f.omega[k], iw = f.inverse[k];
    const double *ck = c + k * M, *sk = s + k * M;
    double *ws = t.ws.data() + k * M, *wd = deriv ? t.wd.data() + k * M : nullptr;
#pragma omp simd
    for (int64_t p = 0; p < M; p++) {
      const double x = w * r[p], x2 = x * x;
      const bool small = x2 < 1e-4;
      // the series' divisions as products (vector divisions are slow; ≤ 1 ulp apart)
      const double sinc = small ? 1.0 - x2 * (1.0 / 6.0) + x2 * x2 * (1.0 / 120.0)
                                      - x2 * x2 * x2 * (1.0 / 5040.0)
                                : sk[p] * iw * inv_r[p];
      ws[p] = S[p] * sinc;
      if (deriv) {
        const double dsinc = small ? w * x * (-1.0 / 3.0 + x2 * (1.0 / 30.0)
                                              - x2 * x2 * (1.0 / 840.0))
                                   : (ck[p] - sinc) * inv_r[p];
        wd[p] = dS[p] * sinc + S[p] * dsinc;
      }
    }
  }
}

template <typename T> MLIP_ATTN_INLINE T dot(const T *a, const T *b, int64_t n)
{
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t e = 0; e < n; e++) sum += a[e] * b[e];
  return sum;
}

template <typename T> MLIP_ATTN_INLINE void axpy(T a, const T *x, T *y, int64_t n)
{
#pragma omp simd
  for (int64_t e = 0; e < n; e++) y[e] += a * x[e];
}

// y += a ⊙ w ⊙ x over C components of D channels (w per channel)
template <typename T>
MLIP_ATTN_INLINE void axpy_w(T a, const T *w, const T *x, T *y, int64_t C, int64_t D)
{
  for (int64_t ch = 0; ch < C; ch++) {
    const T *xc = x + ch * D;
    T *yc = y + ch * D;
#pragma omp simd
    for (int64_t e = 0; e < D; e++) yc[e] += a * w[e] * xc[e];
  }
}

template <typename T>
MLIP_ATTN_INLINE void pairs_forward_impl(const Pairs<T> &p, int64_t begin, int64_t end, T *y)
{
  const int64_t C = p.C, D = p.D, K = D / 2, V = p.V, P = C * D;
  T prod[2 * kMaxK];
  std::vector<Partner> partners;
  Table table;
  Rows<T> rows;
  for (int64_t i = begin; i < end; i++) {
    const T *qi = p.q + i * P, *ki = p.k + i * P, *vi = p.val + i * V;
    T *yi = y + i * V;
    channel_products(qi, ki, C, D, prod);   // n = m: sinc = S = 1
    T a_ii = 0;
    for (int64_t e = 0; e < D; e++) a_ii += prod[e];
    axpy(a_ii, vi, yi, V);
    gather_partners(p, i, partners);
    const int64_t M = int64_t(partners.size());
    fill_table(*p.freq, K, p.r_max, partners, false, table);
    expand_rows(table, K, M, false, rows);
    for (int64_t e = 0; e < M; e++) {
      const int64_t j = partners[e].j;
      const T *qj = p.q + j * P, *kj = p.k + j * P, *vj = p.val + j * V;
      const T *w = rows.ws.data() + e * D;
      channel_products(qi, kj, C, D, prod);
      axpy(dot(prod, w, D), vj, yi, V);
      channel_products(qj, ki, C, D, prod);
      axpy(dot(prod, w, D), vi, y + j * V, V);
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void pairs_backward_impl(const Pairs<T> &p, int64_t begin, int64_t end,
                                          const T *g_y, T *g_q, T *g_k, T *g_val, T *g_pos)
{
  const int64_t C = p.C, D = p.D, K = D / 2, V = p.V, P = C * D;
  T p_ij[2 * kMaxK], p_ji[2 * kMaxK], ones[kMaxK * 2];
  std::fill(ones, ones + D, T(1));
  std::vector<Partner> partners;
  Table table;
  Rows<T> rows;
  for (int64_t i = begin; i < end; i++) {
    const T *qi = p.q + i * P, *ki = p.k + i * P, *vi = p.val + i * V, *gyi = g_y + i * V;
    {   // n = m: A_ii = Σ ⟨q_i, k_i⟩ (sinc = S = 1, no position dependence)
      const T g_ii = dot(gyi, vi, V);
      if (g_q) axpy_w(g_ii, ones, ki, g_q + i * P, C, D);
      if (g_k) axpy_w(g_ii, ones, qi, g_k + i * P, C, D);
      if (g_val) {
        channel_products(qi, ki, C, D, p_ij);
        T a_ii = 0;
        for (int64_t e = 0; e < D; e++) a_ii += p_ij[e];
        axpy(a_ii, gyi, g_val + i * V, V);
      }
    }
    gather_partners(p, i, partners);
    const int64_t M = int64_t(partners.size());
    fill_table(*p.freq, K, p.r_max, partners, g_pos != nullptr, table);
    expand_rows(table, K, M, g_pos != nullptr, rows);
    for (int64_t e = 0; e < M; e++) {
      const int64_t j = partners[e].j;
      const double *d = partners[e].d;
      const T *qj = p.q + j * P, *kj = p.k + j * P, *vj = p.val + j * V, *gyj = g_y + j * V;
      const T *w = rows.ws.data() + e * D;
      const T g_ij = dot(gyi, vj, V), g_ji = dot(gyj, vi, V);   // dL/dA_ij, dL/dA_ji
      if (g_q) {
        axpy_w(g_ij, w, kj, g_q + i * P, C, D);
        axpy_w(g_ji, w, ki, g_q + j * P, C, D);
      }
      if (g_k) {
        axpy_w(g_ij, w, qi, g_k + j * P, C, D);
        axpy_w(g_ji, w, qj, g_k + i * P, C, D);
      }
      if (g_val || g_pos) {
        channel_products(qi, kj, C, D, p_ij);
        channel_products(qj, ki, C, D, p_ji);
        if (g_val) {
          axpy(dot(p_ij, w, D), gyi, g_val + j * V, V);
          axpy(dot(p_ji, w, D), gyj, g_val + i * V, V);
        }
        if (g_pos) {
          const T *wd = rows.wd.data() + e * D;
          const double dA_ij = double(dot(p_ij, wd, D)), dA_ji = double(dot(p_ji, wd, D));
          const double f = (double(g_ij) * dA_ij + double(g_ji) * dA_ji) * table.inv_r[e];
          for (int c = 0; c < 3; c++) {
            g_pos[3 * i + c] += T(f * d[c]);
            g_pos[3 * j + c] -= T(f * d[c]);
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------ the grid sums' rotation
// (layout [c][t][g][k], see efa_kernels.h)

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
  if (recursion) {
    const double d = f.omega[1] - f.omega[0], w0 = f.omega[0];
    const bool zero = f.start == Frequencies::Start::zero,
               step = f.start == Frequencies::Start::step;
#pragma omp simd
    for (int64_t g = 0; g < G; g++) {
      sincos_reduced(d * t[g], sd[g], cd[g]);
      c[g] = zero ? 1.0 : cd[g];
      s[g] = zero ? 0.0 : sd[g];
    }
    if (!zero && !step) {   // ω_0 = any
#pragma omp simd
      for (int64_t g = 0; g < G; g++) sincos_reduced(w0 * t[g], s[g], c[g]);
    }
  }
  for (int64_t k = 0; k < K; k++) {
    T *ck = Ct + k * G, *sk = St + k * G;
    const double wk = f.omega[k];
    if (recursion && k > 0) {
#pragma omp simd
      for (int64_t g = 0; g < G; g++) {
        const double cn = c[g] * cd[g] - s[g] * sd[g], sn = s[g] * cd[g] + c[g] * sd[g];
        c[g] = cn;
        s[g] = sn;
      }
    } else if (!recursion) {
#pragma omp simd
      for (int64_t g = 0; g < G; g++) sincos_reduced(wk * t[g], s[g], c[g]);
    }
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
MLIP_ATTN_DISPATCH(pairs_forward, (const Pairs<T> &p, int64_t b, int64_t e, T *y), (p, b, e, y))
MLIP_ATTN_DISPATCH(pairs_backward,
                   (const Pairs<T> &p, int64_t b, int64_t e, const T *gy, T *gq, T *gk,
                    T *gv, T *gp),
                   (p, b, e, gy, gq, gk, gv, gp))

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
void pairs_forward(const Pairs<T> &p, int64_t begin, int64_t end, T *y)
{
  pairs_forward_any<T>(p, begin, end, y);
}

template <typename T>
void pairs_backward(const Pairs<T> &p, int64_t begin, int64_t end, const T *g_y, T *g_q, T *g_k,
                    T *g_val, T *g_pos)
{
  pairs_backward_any<T>(p, begin, end, g_y, g_q, g_k, g_val, g_pos);
}

template <typename T>
Cells build_cells(const T *positions, const int64_t *batch, int64_t N, int64_t B, double r_max)
{
  Cells cl;
  std::vector<double> lo(3 * B, 1e300), hi(3 * B, -1e300);
  std::vector<int64_t> count(B, 0);
  for (int64_t i = 0; i < N; i++) {
    const int64_t b = batch[i];
    count[b]++;
    for (int d = 0; d < 3; d++) {
      lo[3 * b + d] = std::min(lo[3 * b + d], double(positions[3 * i + d]));
      hi[3 * b + d] = std::max(hi[3 * b + d], double(positions[3 * i + d]));
    }
  }
  cl.structure_offset.assign(B, 0);
  cl.dims.assign(3 * B, 1);
  std::vector<double> width(3 * B, 1.0);
  int64_t total = 0;
  for (int64_t b = 0; b < B; b++) {
    // cells at least r_max wide (so partners within r_max are in adjacent cells), at most
    // ~2 per atom along each axis's cube root (no empty grid for a sparse structure)
    const int64_t cap = std::max<int64_t>(1, int64_t(std::cbrt(double(count[b]))) * 2);
    for (int d = 0; d < 3; d++) {
      const double L = count[b] > 0 ? hi[3 * b + d] - lo[3 * b + d] : 0.0;
      int64_t n = 1;
      if (r_max > 0.0 && L > r_max) n = std::min<int64_t>(int64_t(L / r_max), cap);
      cl.dims[3 * b + d] = n;
      width[3 * b + d] = n > 1 ? L / double(n) : 1.0;
    }
    cl.structure_offset[b] = total;
    total += cl.dims[3 * b] * cl.dims[3 * b + 1] * cl.dims[3 * b + 2];
  }
  cl.atom_cell.assign(3 * N, 0);
  cl.start.assign(total + 1, 0);
  std::vector<int64_t> cell_of(N);
  for (int64_t i = 0; i < N; i++) {
    const int64_t b = batch[i];
    int64_t idx[3];
    for (int d = 0; d < 3; d++) {
      const int64_t n = cl.dims[3 * b + d];
      idx[d] = n > 1 ? std::min<int64_t>(n - 1, int64_t((double(positions[3 * i + d])
                                                          - lo[3 * b + d]) / width[3 * b + d]))
                     : 0;
      cl.atom_cell[3 * i + d] = idx[d];
    }
    cell_of[i] = cl.structure_offset[b]
                 + (idx[0] * cl.dims[3 * b + 1] + idx[1]) * cl.dims[3 * b + 2] + idx[2];
    cl.start[cell_of[i] + 1]++;
  }
  for (int64_t c = 0; c < total; c++) cl.start[c + 1] += cl.start[c];
  cl.atoms.assign(N, 0);
  std::vector<int64_t> fill(cl.start.begin(), cl.start.end() - 1);
  for (int64_t i = 0; i < N; i++) cl.atoms[fill[cell_of[i]]++] = i;
  return cl;
}

#define MLIP_ATTN_INSTANTIATE(T)                                                            \
  template void rotate_forward<T>(const Rotation<T> &, int64_t, int64_t, T *);              \
  template void rotate_backward<T>(const Rotation<T> &, int64_t, int64_t, const T *, T *,   \
                                   T *);                                                    \
  template void grid_rotate<T>(const Rotation<T> &, int64_t, int64_t, T *);                   \
  template void grid_rotate_backward<T>(const Rotation<T> &, int64_t, int64_t, const T *, T *,  \
                                        T *, T *);                                          \
  template Cells build_cells<T>(const T *, const int64_t *, int64_t, int64_t, double);      \
  template void pairs_forward<T>(const Pairs<T> &, int64_t, int64_t, T *);                  \
  template void pairs_backward<T>(const Pairs<T> &, int64_t, int64_t, const T *, T *, T *,  \
                                  T *, T *);
MLIP_ATTN_INSTANTIATE(float)
MLIP_ATTN_INSTANTIATE(double)

}    // namespace mlip_attn_efa
