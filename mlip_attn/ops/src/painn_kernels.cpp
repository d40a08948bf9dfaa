/* PaiNN's fused message loops (see painn_kernels.h for the maths, layouts and threading).
 *
 * The filter of an edge, rho_e @ weightᵀ (K radial functions by C columns, 21 × 384 for
 * PaiNN 128 × 3), is the arithmetic: it is computed for two edges at once in blocks of columns
 * held in registers, so each weight row is loaded once per two edges. Everything else per edge
 * (the product with the sender's features, the sums into the receiver, the gradients) reads and
 * writes rows that are in L1.
 *
 * The loop bodies are compiled three times (generic x86-64 or whatever the target is, AVX2 +
 * FMA, AVX-512) and the best the CPU supports is chosen once, at the first call; the build flags
 * add -O3, -fopenmp-simd (the reductions) and -ffp-contract=off (see mlip_attn/ops/build.py, KERNEL_FLAGS).
 */
#include "painn_kernels.h"
#include "kernel_isa.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#define MLIP_ATTN_INLINE inline __attribute__((always_inline))

namespace mlip_attn_kernels {
namespace {

// filter rows of two edges: out0 = rho0 @ weight_t, out1 = rho1 @ weight_t (C columns each), in
// blocks of 4 vectors of VB bytes per edge held in 8 vector registers (GCC vector types: with
// plain arrays GCC kept the accumulators on the stack in its unrolled loop, 2× slower on AVX2)
template <typename T, int VB>
MLIP_ATTN_INLINE void filter_pair(const T *rho0, const T *rho1, const T *weight_t, int64_t K,
                                  int64_t C, T *out0, T *out1)
{
  typedef T V __attribute__((vector_size(VB)));
  constexpr int L = VB / sizeof(T);   // lanes
  int64_t c0 = 0;
  for (; c0 + 4 * L <= C; c0 += 4 * L) {
    V a[4] = {}, b[4] = {};
    for (int64_t k = 0; k < K; k++) {
      const T r0 = rho0[k], r1 = rho1[k];
      const T *w = weight_t + k * C + c0;
      for (int q = 0; q < 4; q++) {
        V wq;
        __builtin_memcpy(&wq, w + q * L, VB);
        a[q] += r0 * wq;
        b[q] += r1 * wq;
      }
    }
    for (int q = 0; q < 4; q++) {
      __builtin_memcpy(out0 + c0 + q * L, &a[q], VB);
      __builtin_memcpy(out1 + c0 + q * L, &b[q], VB);
    }
  }
  for (; c0 < C; c0++) {
    T s0 = T(0), s1 = T(0);
    for (int64_t k = 0; k < K; k++) {
      s0 += rho0[k] * weight_t[k * C + c0];
      s1 += rho1[k] * weight_t[k * C + c0];
    }
    out0[c0] = s0;
    out1[c0] = s1;
  }
}

template <typename T>
MLIP_ATTN_INLINE void forward_edge(const Message<T> &msg, int64_t e, const T *filt, T *x,
                                   const Sums<T> &sums)
{
  const int64_t i = msg.receivers[e], j = msg.senders[e], C = msg.C, F = msg.F;
  const T *phi_j = msg.phi + j * C;
#pragma omp simd
  for (int64_t c = 0; c < C; c++) x[c] = phi_j[c] * filt[c];
  T *ds_i = sums.ds + i * F;
#pragma omp simd
  for (int64_t f = 0; f < F; f++) ds_i[f] += x[f];
  for (int l = 0; l < msg.orders; l++) {
    const Order<T> &o = msg.order[l];
    const int64_t W = o.width;
    const T *xa = x + o.a, *xb = x + o.b, *geo = o.geometry + e * o.m;
    const T *feat_j = o.features + j * o.m * W;
    T *out_i = sums.out[l] + i * o.m * W;
    for (int64_t m = 0; m < o.m; m++) {
      const T g = geo[m];
      T *row = out_i + m * W;
      if (msg.first) {
#pragma omp simd
        for (int64_t f = 0; f < W; f++) row[f] += g * xb[f];
      } else {
        const T *feat = feat_j + m * W;
#pragma omp simd
        for (int64_t f = 0; f < W; f++) row[f] += g * xb[f] + feat[f] * xa[f];
      }
    }
  }
}

template <typename T>
MLIP_ATTN_INLINE void backward_edge(const Message<T> &msg, int64_t e, const T *filt, T *gx,
                                    const Gradients<T> &grads)
{
  const int64_t i = msg.receivers[e], j = msg.senders[e], C = msg.C, F = msg.F, K = msg.K;
  const T *phi_j = msg.phi + j * C;
  const T *g_ds_i = grads.g_ds + i * F;
#pragma omp simd
  for (int64_t f = 0; f < F; f++) gx[f] = g_ds_i[f];
  for (int l = 0; l < msg.orders; l++) {
    const Order<T> &o = msg.order[l];
    const int64_t W = o.width, M = o.m;
    const T *gd = grads.g_out[l] + i * M * W, *geo = o.geometry + e * M;
    const T *feat_j = o.features + j * M * W;
    T *ga = gx + o.a, *gb = gx + o.b;
    // g_b = Σ_m gd[m] g_m, g_a = Σ_m gd[m] ⊙ f_j[m]
#pragma omp simd
    for (int64_t f = 0; f < W; f++) {
      gb[f] = gd[f] * geo[0];
      ga[f] = msg.first ? T(0) : gd[f] * feat_j[f];
    }
    for (int64_t m = 1; m < M; m++) {
      const T g = geo[m];
      const T *gdm = gd + m * W;
#pragma omp simd
      for (int64_t f = 0; f < W; f++) gb[f] += gdm[f] * g;
      if (!msg.first) {
        const T *feat = feat_j + m * W;
#pragma omp simd
        for (int64_t f = 0; f < W; f++) ga[f] += gdm[f] * feat[f];
      }
    }
    // d/d g_m = Σ_f gd[m] ⊙ x_b
    if (grads.g_geometry[l] != nullptr) {
      const T *pb = phi_j + o.b, *fb = filt + o.b;
      for (int64_t m = 0; m < M; m++) {
        const T *gdm = gd + m * W;
        T s = T(0);
#pragma omp simd reduction(+ : s)
        for (int64_t f = 0; f < W; f++) s += gdm[f] * pb[f] * fb[f];
        grads.g_geometry[l][e * M + m] = s;
      }
    }
    // d/d f_j[m] = gd[m] ⊙ x_a
    if (grads.g_features[l] != nullptr && !msg.first) {
      const T *pa = phi_j + o.a, *fa = filt + o.a;
      T *g_feat_j = grads.g_features[l] + j * M * W;
      for (int64_t m = 0; m < M; m++) {
        const T *gdm = gd + m * W;
        T *row = g_feat_j + m * W;
#pragma omp simd
        for (int64_t f = 0; f < W; f++) row[f] += gdm[f] * pa[f] * fa[f];
      }
    }
  }
  if (grads.g_phi != nullptr) {
    T *g_phi_j = grads.g_phi + j * C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) g_phi_j[c] += gx[c] * filt[c];
  }
  if (grads.g_rho == nullptr && grads.g_weight_t == nullptr) return;
  // g_filt = g_x ⊙ phi_j, in place of g_x; g_rho = g_filt @ weight comes per pair (rho_pair)
#pragma omp simd
  for (int64_t c = 0; c < C; c++) gx[c] *= phi_j[c];
  if (grads.g_weight_t != nullptr) {
    const T *rho_e = msg.rho + e * K;
    for (int64_t k = 0; k < K; k++) {
      const T r = rho_e[k];
      T *gw = grads.g_weight_t + k * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) gw[c] += r * gx[c];
    }
  }
}

// g_rho of two edges: out0[k] = g_filt0 · weight_t[k], out1[k] = g_filt1 · weight_t[k] (out1
// nullptr: one edge), with 4 vector partial sums per edge so the products do not wait on each
// other
template <typename T, int VB>
MLIP_ATTN_INLINE void rho_pair(const T *g_filt0, const T *g_filt1, const T *weight_t, int64_t K,
                               int64_t C, T *out0, T *out1)
{
  typedef T V __attribute__((vector_size(VB)));
  constexpr int L = VB / sizeof(T);
  for (int64_t k = 0; k < K; k++) {
    const T *w = weight_t + k * C;
    V a[4] = {}, b[4] = {};
    int64_t c0 = 0;
    for (; c0 + 4 * L <= C; c0 += 4 * L) {
      for (int q = 0; q < 4; q++) {
        V wq, x, y;
        __builtin_memcpy(&wq, w + c0 + q * L, VB);
        __builtin_memcpy(&x, g_filt0 + c0 + q * L, VB);
        __builtin_memcpy(&y, g_filt1 + c0 + q * L, VB);
        a[q] += x * wq;
        b[q] += y * wq;
      }
    }
    const V sa = (a[0] + a[1]) + (a[2] + a[3]), sb = (b[0] + b[1]) + (b[2] + b[3]);
    T s0 = T(0), s1 = T(0);
    for (int l = 0; l < L; l++) {
      s0 += sa[l];
      s1 += sb[l];
    }
    for (; c0 < C; c0++) {
      s0 += g_filt0[c0] * w[c0];
      s1 += g_filt1[c0] * w[c0];
    }
    out0[k] = s0;
    if (out1 != nullptr) out1[k] = s1;
  }
}

// Both walk [begin, end) two edges at a time (an odd last edge is paired with itself): the two
// filters, then each edge's own terms
template <typename T, int VB>
MLIP_ATTN_INLINE void forward_body(const Message<T> &msg, int64_t begin, int64_t end,
                                   const Sums<T> &sums)
{
  std::vector<T> scratch(3 * static_cast<size_t>(msg.C));
  T *filt0 = scratch.data(), *filt1 = filt0 + msg.C, *x = filt1 + msg.C;
  for (int64_t e = begin; e < end; e += 2) {
    const int64_t e1 = std::min(e + 1, end - 1);
    filter_pair<T, VB>(msg.rho + e * msg.K, msg.rho + e1 * msg.K, msg.weight_t, msg.K, msg.C,
                      filt0, filt1);
    forward_edge(msg, e, filt0, x, sums);
    if (e1 != e) forward_edge(msg, e1, filt1, x, sums);
  }
}

template <typename T, int VB>
MLIP_ATTN_INLINE void backward_body(const Message<T> &msg, int64_t begin, int64_t end,
                                    const Gradients<T> &grads)
{
  const size_t C = static_cast<size_t>(msg.C);
  std::vector<T> scratch(4 * C);
  T *filt0 = scratch.data(), *filt1 = filt0 + C, *gx0 = filt1 + C, *gx1 = gx0 + C;
  for (int64_t e = begin; e < end; e += 2) {
    const int64_t e1 = std::min(e + 1, end - 1);
    filter_pair<T, VB>(msg.rho + e * msg.K, msg.rho + e1 * msg.K, msg.weight_t, msg.K, msg.C,
                      filt0, filt1);
    backward_edge(msg, e, filt0, gx0, grads);
    if (e1 != e) backward_edge(msg, e1, filt1, gx1, grads);
    if (grads.g_rho != nullptr)
      rho_pair<T, VB>(gx0, e1 != e ? gx1 : gx0, msg.weight_t, msg.K, msg.C,
                     grads.g_rho + e * msg.K, e1 != e ? grads.g_rho + e1 * msg.K : nullptr);
  }
}

// One range of the forward (sums given) or the backward (grads given), per instruction set
template <typename T, int VB>
MLIP_ATTN_INLINE void run(const Message<T> &m, int64_t b, int64_t e, const Sums<T> *sums,
                          const Gradients<T> *grads)
{
  if (sums != nullptr) forward_body<T, VB>(m, b, e, *sums);
  else backward_body<T, VB>(m, b, e, *grads);
}

template <typename T>
void run_generic(const Message<T> &m, int64_t b, int64_t e, const Sums<T> *s, const Gradients<T> *g)
{
  run<T, 16>(m, b, e, s, g);
}

#ifdef MLIP_ATTN_X86_CLONES
template <typename T> MLIP_ATTN_AVX2
void run_avx2(const Message<T> &m, int64_t b, int64_t e, const Sums<T> *s, const Gradients<T> *g)
{
  run<T, 32>(m, b, e, s, g);
}
template <typename T> MLIP_ATTN_AVX512
void run_avx512(const Message<T> &m, int64_t b, int64_t e, const Sums<T> *s,
                const Gradients<T> *g)
{
  run<T, 64>(m, b, e, s, g);
}
#endif

// the clone for this CPU
template <typename T>
void dispatch(const Message<T> &msg, int64_t begin, int64_t end, const Sums<T> *sums,
              const Gradients<T> *grads)
{
  if (begin >= end) return;
#ifdef MLIP_ATTN_X86_CLONES
  if (kernel_isa() == Isa::avx512) return run_avx512(msg, begin, end, sums, grads);
  if (kernel_isa() == Isa::avx2) return run_avx2(msg, begin, end, sums, grads);
#endif
  run_generic(msg, begin, end, sums, grads);
}

}    // namespace

template <typename T>
void forward(const Message<T> &msg, int64_t begin, int64_t end, const Sums<T> &sums)
{
  dispatch<T>(msg, begin, end, &sums, nullptr);
}

template <typename T>
void backward(const Message<T> &msg, int64_t begin, int64_t end, const Gradients<T> &grads)
{
  dispatch<T>(msg, begin, end, nullptr, &grads);
}

Isa kernel_isa()
{
  static const Isa chosen = [] {
    Isa best = Isa::generic;
#ifdef MLIP_ATTN_X86_CLONES
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

const char *instruction_set()
{
  switch (kernel_isa()) {
  case Isa::avx512: return "avx512";
  case Isa::avx2: return "avx2";
  default: return "generic";
  }
}

template void forward<float>(const Message<float> &, int64_t, int64_t, const Sums<float> &);
template void forward<double>(const Message<double> &, int64_t, int64_t, const Sums<double> &);
template void backward<float>(const Message<float> &, int64_t, int64_t,
                              const Gradients<float> &);
template void backward<double>(const Message<double> &, int64_t, int64_t,
                               const Gradients<double> &);

}    // namespace mlip_attn_kernels
