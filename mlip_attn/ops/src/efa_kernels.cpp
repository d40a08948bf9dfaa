// Fused CPU loops of Euclidean fast attention: see efa_kernels.h for the maths and layouts.
#include "efa_kernels.h"

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
    const double c0 = std::cos(f.omega[0] * t), s0 = std::sin(f.omega[0] * t);
    const double d = f.omega[1] - f.omega[0];
    const double cd = std::cos(d * t), sd = std::sin(d * t);
    c[0] = c0;
    s[0] = s0;
    for (int64_t k = 1; k < K; k++) {
      c[k] = c[k - 1] * cd - s[k - 1] * sd;
      s[k] = s[k - 1] * cd + c[k - 1] * sd;
    }
    return;
  }
  for (int64_t k = 0; k < K; k++) {
    c[k] = std::cos(f.omega[k] * t);
    s[k] = std::sin(f.omega[k] * t);
  }
}

// sinc(ω_k r) and its derivative in r, k < K (series below x² = 1e-4 as efa.py's _sinc_sq)
MLIP_ATTN_INLINE void sincs(const Frequencies &f, int64_t K, double r, double *sinc,
                            double *dsinc)
{
  double c[kMaxK], s[kMaxK];
  angles(f, K, r, c, s);
  for (int64_t k = 0; k < K; k++) {
    const double w = f.omega[k], x = w * r, x2 = x * x;
    if (x2 < 1e-4) {
      sinc[k] = 1.0 - x2 / 6.0 + x2 * x2 / 120.0 - x2 * x2 * x2 / 5040.0;
      if (dsinc) dsinc[k] = w * x * (-1.0 / 3.0 + x2 / 30.0 - x2 * x2 / 840.0);
    } else {
      sinc[k] = s[k] / x;
      if (dsinc) dsinc[k] = w * (c[k] - sinc[k]) / x;
    }
  }
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

template <typename T>
MLIP_ATTN_INLINE void rotate_forward_impl(const Rotation<T> &rot, int64_t begin, int64_t end,
                                          T *out)
{
  const int64_t G = rot.G, C = rot.C, D = rot.D, K = D / 2;
  double c[kMaxK], s[kMaxK];
  T cs[kMaxK], sn[kMaxK];
  for (int64_t n = begin; n < end; n++) {
    const T *x = rot.x + n * C * D;
    const T *r = rot.centred + 3 * n;
    for (int64_t g = 0; g < G; g++) {
      const double *u = rot.dirs + 3 * g;
      const double t = u[0] * double(r[0]) + u[1] * double(r[1]) + u[2] * double(r[2]);
      angles(*rot.freq, K, t, c, s);
      for (int64_t k = 0; k < K; k++) {
        cs[k] = T(c[k] * rot.scale[g]);
        sn[k] = T(s[k] * rot.scale[g]);
      }
      T *o = out + (n * G + g) * C * D;
      for (int64_t ch = 0; ch < C; ch++) {
        const T *xc = x + ch * D;
        T *oc = o + ch * D;
#pragma omp simd
        for (int64_t k = 0; k < K; k++) {
          const T a = xc[2 * k], b = xc[2 * k + 1];
          oc[2 * k] = a * cs[k] - b * sn[k];
          oc[2 * k + 1] = a * sn[k] + b * cs[k];
        }
      }
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void rotate_backward_impl(const Rotation<T> &rot, int64_t begin, int64_t end,
                                           const T *grad, T *g_x, T *g_centred)
{
  const int64_t G = rot.G, C = rot.C, D = rot.D, K = D / 2;
  double c[kMaxK], s[kMaxK];
  T cs[kMaxK], sn[kMaxK], gt[kMaxK];
  T gx[kMaxP];
  for (int64_t n = begin; n < end; n++) {
    const T *x = rot.x + n * C * D;
    const T *r = rot.centred + 3 * n;
    std::fill(gx, gx + C * D, T(0));
    double gr[3] = {0.0, 0.0, 0.0};
    for (int64_t g = 0; g < G; g++) {
      const double *u = rot.dirs + 3 * g;
      const double t = u[0] * double(r[0]) + u[1] * double(r[1]) + u[2] * double(r[2]);
      angles(*rot.freq, K, t, c, s);
      for (int64_t k = 0; k < K; k++) {
        cs[k] = T(c[k] * rot.scale[g]);
        sn[k] = T(s[k] * rot.scale[g]);
        gt[k] = T(0);
      }
      const T *go = grad + (n * G + g) * C * D;
      for (int64_t ch = 0; ch < C; ch++) {
        const T *xc = x + ch * D, *gc = go + ch * D;
        T *gxc = gx + ch * D;
#pragma omp simd
        for (int64_t k = 0; k < K; k++) {
          const T a = xc[2 * k], b = xc[2 * k + 1], ga = gc[2 * k], gb = gc[2 * k + 1];
          gxc[2 * k] += ga * cs[k] + gb * sn[k];
          gxc[2 * k + 1] += gb * cs[k] - ga * sn[k];
          gt[k] += ga * (-a * sn[k] - b * cs[k]) + gb * (a * cs[k] - b * sn[k]);
        }
      }
      if (g_centred) {
        double dt = 0.0;   // d/dt of Σ_k (…)(ω_k t)
        for (int64_t k = 0; k < K; k++) dt += double(gt[k]) * rot.freq->omega[k];
        gr[0] += dt * u[0];
        gr[1] += dt * u[1];
        gr[2] += dt * u[2];
      }
    }
    if (g_x) std::copy(gx, gx + C * D, g_x + n * C * D);
    if (g_centred)
      for (int d = 0; d < 3; d++) g_centred[3 * n + d] = T(gr[d]);
  }
}

// Visit the candidate partners j of atom i (its structure's atoms in the 27 cells around its
// own, i itself included) with r² = |r_i − r_j|² and the difference vector.
template <typename T, typename Body>
MLIP_ATTN_INLINE void for_each_partner(const Pairs<T> &p, int64_t i, Body body)
{
  const Cells &cl = *p.cells;
  const int64_t b = p.batch[i];
  const int64_t *dims = cl.dims.data() + 3 * b, *own = cl.atom_cell.data() + 3 * i;
  const T *ri = p.positions + 3 * i;
  for (int64_t x = std::max<int64_t>(own[0] - 1, 0); x <= std::min(own[0] + 1, dims[0] - 1); x++)
    for (int64_t y = std::max<int64_t>(own[1] - 1, 0); y <= std::min(own[1] + 1, dims[1] - 1); y++)
      for (int64_t z = std::max<int64_t>(own[2] - 1, 0); z <= std::min(own[2] + 1, dims[2] - 1);
           z++) {
        const int64_t cell = cl.structure_offset[b] + (x * dims[1] + y) * dims[2] + z;
        for (int64_t a = cl.start[cell]; a < cl.start[cell + 1]; a++) {
          const int64_t j = cl.atoms[a];
          const T *rj = p.positions + 3 * j;
          const double d[3] = {double(ri[0]) - double(rj[0]), double(ri[1]) - double(rj[1]),
                               double(ri[2]) - double(rj[2])};
          const double r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
          if (p.r_max > 0.0 && r2 >= p.r_max * p.r_max) continue;   // S = 0 exactly
          body(j, r2, d);
        }
      }
}

// per-k dot products Σ_c Σ_t a[c, 2k+t] b[c, 2k+t] into qk (K)
template <typename T>
MLIP_ATTN_INLINE void head_dots(const T *a, const T *b, int64_t C, int64_t D, T *qk)
{
  T tmp[kMaxK * 2];
  std::fill(tmp, tmp + D, T(0));
  for (int64_t ch = 0; ch < C; ch++) {
    const T *ac = a + ch * D, *bc = b + ch * D;
#pragma omp simd
    for (int64_t e = 0; e < D; e++) tmp[e] += ac[e] * bc[e];
  }
  for (int64_t k = 0; k < D / 2; k++) qk[k] = tmp[2 * k] + tmp[2 * k + 1];
}

template <typename T>
MLIP_ATTN_INLINE void pairs_forward_impl(const Pairs<T> &p, int64_t begin, int64_t end, T *y)
{
  const int64_t C = p.C, D = p.D, K = D / 2, V = p.V, P = C * D;
  double sinc[kMaxK];
  T qk[kMaxK];
  for (int64_t i = begin; i < end; i++) {
    T *yi = y + i * V;
    std::fill(yi, yi + V, T(0));
    const T *qi = p.q + i * P;
    for_each_partner(p, i, [&](int64_t j, double r2, const double *) {
      const double r = std::sqrt(r2);
      double S, dS;
      switch_of(r, p.r_max, S, dS);
      sincs(*p.freq, K, r, sinc, nullptr);
      head_dots(qi, p.k + j * P, C, D, qk);
      double att = 0.0;
      for (int64_t k = 0; k < K; k++) att += sinc[k] * double(qk[k]);
      const T a = T(att * S);
      const T *vj = p.val + j * V;
#pragma omp simd
      for (int64_t v = 0; v < V; v++) yi[v] += a * vj[v];
    });
  }
}

template <typename T>
MLIP_ATTN_INLINE void pairs_backward_impl(const Pairs<T> &p, int64_t begin, int64_t end,
                                          const T *g_y, T *g_q, T *g_k, T *g_val, T *g_pos)
{
  const int64_t C = p.C, D = p.D, K = D / 2, V = p.V, P = C * D;
  double sinc[kMaxK], dsinc[kMaxK];
  T qk_ij[kMaxK], qk_ji[kMaxK], w[kMaxK * 2];
  for (int64_t i = begin; i < end; i++) {
    const T *qi = p.q + i * P, *ki = p.k + i * P, *vi = p.val + i * V, *gyi = g_y + i * V;
    T *gqi = g_q ? g_q + i * P : nullptr, *gki = g_k ? g_k + i * P : nullptr;
    T *gvi = g_val ? g_val + i * V : nullptr;
    if (gqi) std::fill(gqi, gqi + P, T(0));
    if (gki) std::fill(gki, gki + P, T(0));
    if (gvi) std::fill(gvi, gvi + V, T(0));
    double gr[3] = {0.0, 0.0, 0.0};
    for_each_partner(p, i, [&](int64_t j, double r2, const double *d) {
      const double r = std::sqrt(r2);
      double S, dS;
      switch_of(r, p.r_max, S, dS);
      sincs(*p.freq, K, r, sinc, dsinc);
      const T *qj = p.q + j * P, *kj = p.k + j * P, *vj = p.val + j * V, *gyj = g_y + j * V;
      T g_ij = 0, g_ji = 0;   // dL/dA_ij = g_y_i · v_j, dL/dA_ji = g_y_j · v_i
#pragma omp simd reduction(+ : g_ij, g_ji)
      for (int64_t v = 0; v < V; v++) {
        g_ij += gyi[v] * vj[v];
        g_ji += gyj[v] * vi[v];
      }
      for (int64_t k = 0; k < K; k++) w[2 * k] = w[2 * k + 1] = T(S * sinc[k]);
      if (gqi)
        for (int64_t ch = 0; ch < C; ch++) {
          const T *kc = kj + ch * D;
          T *gc = gqi + ch * D;
#pragma omp simd
          for (int64_t e = 0; e < D; e++) gc[e] += g_ij * w[e] * kc[e];
        }
      if (gki)
        for (int64_t ch = 0; ch < C; ch++) {
          const T *qc = qj + ch * D;
          T *gc = gki + ch * D;
#pragma omp simd
          for (int64_t e = 0; e < D; e++) gc[e] += g_ji * w[e] * qc[e];
        }
      if (gvi || (g_pos && r2 > 0.0)) {
        head_dots(qj, ki, C, D, qk_ji);
        double a_ji = 0.0;
        for (int64_t k = 0; k < K; k++) a_ji += sinc[k] * double(qk_ji[k]);
        if (gvi) {
          const T a = T(a_ji * S);
#pragma omp simd
          for (int64_t v = 0; v < V; v++) gvi[v] += a * gyj[v];
        }
        if (g_pos && r2 > 0.0) {
          head_dots(qi, kj, C, D, qk_ij);
          double a_ij = 0.0, da_ij = 0.0, da_ji = 0.0;
          for (int64_t k = 0; k < K; k++) {
            a_ij += sinc[k] * double(qk_ij[k]);
            da_ij += dsinc[k] * double(qk_ij[k]);
            da_ji += dsinc[k] * double(qk_ji[k]);
          }
          const double dA_ij = dS * a_ij + S * da_ij, dA_ji = dS * a_ji + S * da_ji;
          const double f = (double(g_ij) * dA_ij + double(g_ji) * dA_ji) / r;
          gr[0] += f * d[0];
          gr[1] += f * d[1];
          gr[2] += f * d[2];
        }
      }
    });
    if (g_pos)
      for (int c = 0; c < 3; c++) g_pos[3 * i + c] = T(gr[c]);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MLIP_ATTN_EFA_CLONES 1
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#endif

enum class Isa { generic, avx2, avx512 };

// the best instruction set the CPU has, or a lesser one named by MLIP_ATTN_KERNEL_ISA
// ("avx2", "generic"), as painn_kernels.cpp
Isa isa()
{
  static const Isa chosen = [] {
    Isa best = Isa::generic;
#ifdef MLIP_ATTN_EFA_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq"))
      best = Isa::avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      best = Isa::avx2;
#endif
    const char *wanted = std::getenv("MLIP_ATTN_KERNEL_ISA");
    if (wanted == nullptr) return best;
    const std::string name(wanted);
    if (name == "generic") return Isa::generic;
    if (name == "avx2" && best != Isa::generic) return Isa::avx2;
    return best;
  }();
  return chosen;
}

// one entry point per kernel: a generic, an AVX2 and an AVX-512 clone of the same body
#ifdef MLIP_ATTN_EFA_CLONES
#define MLIP_ATTN_DISPATCH(NAME, PARAMS, ARGS)                                        \
  template <typename T> void NAME##_generic PARAMS { NAME##_impl<T> ARGS; }           \
  template <typename T> AVX2 void NAME##_avx2 PARAMS { NAME##_impl<T> ARGS; }         \
  template <typename T> AVX512 void NAME##_avx512 PARAMS { NAME##_impl<T> ARGS; }     \
  template <typename T> void NAME##_any PARAMS                                        \
  {                                                                                   \
    switch (isa()) {                                                                  \
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
  arithmetic = K > 1;
  for (int64_t k = 2; k < K && arithmetic; k++)
    arithmetic = std::abs(omega[k] - (omega[0] + k * (omega[1] - omega[0]))) <= 1e-12 * largest;
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
  template Cells build_cells<T>(const T *, const int64_t *, int64_t, int64_t, double);      \
  template void pairs_forward<T>(const Pairs<T> &, int64_t, int64_t, T *);                  \
  template void pairs_backward<T>(const Pairs<T> &, int64_t, int64_t, const T *, T *, T *,  \
                                  T *, T *);
MLIP_ATTN_INSTANTIATE(float)
MLIP_ATTN_INSTANTIATE(double)

}    // namespace mlip_attn_efa
