/* PaiNN's message as fused per-edge loops on the CPU: the filter, the product with the
 * sender's features and the sum into the receiver happen for one edge while its values are in
 * registers and L1, instead of as (chunk, C) tensors passed between ATen operations.
 *
 * The maths (mlip_attn/nn/painn_message.py has it in torch operations):
 *   filter_e = rho_e @ weightᵀ,  x_e = phi_j ⊙ filter_e          (C = F + 2ΣF_l columns)
 *   Δs_i += x_e[s],  Δf_i += f_j ⊙ x_e[a_l] + g_e ⊗ x_e[b_l]      (each order l)
 * and its first derivatives (the backward of one energy + forces call). Second derivatives are
 * not provided: training with a force loss takes the differentiable ATen route of ops.cpp.
 *
 * Every function works on a range of edges [begin, end) into the buffers it is given, so the
 * caller (ops.cpp) decides the threading: a buffer written by several ranges must be private
 * to the range (and summed afterwards) or owned by it (edges sorted by receiver).
 *
 * Layouts, all row-major and contiguous: phi (N, C), rho (E, K), weight_t (K, C) = weightᵀ,
 * features (N, m, F_l), geometry (E, m), ds (N, F), out (N, m, F_l). No torch in here: the file
 * is compiled with -O3 and with AVX2/AVX-512 clones chosen at run time.
 */
#ifndef MLIP_ATTN_PAINN_KERNELS_H
#define MLIP_ATTN_PAINN_KERNELS_H

#include <cstdint>

namespace mlip_attn_kernels {

constexpr int kMaxOrders = 4;

template <typename T> struct Order {
  const T *features = nullptr;   // (N, m, width)
  const T *geometry = nullptr;   // (E, m)
  int64_t m = 0, width = 0;
  int64_t a = 0, b = 0;          // columns of its a and b blocks in phi / the filter
};

template <typename T> struct Message {
  const T *phi = nullptr;        // (N, C)
  const T *rho = nullptr;        // (E, K)
  const T *weight_t = nullptr;   // (K, C)
  const int64_t *receivers = nullptr, *senders = nullptr;
  int64_t C = 0, F = 0, K = 0;
  bool first = false;            // every feature is zero: their terms are skipped
  int orders = 0;
  Order<T> order[kMaxOrders];
};

// Outputs of the forward for one range: ds (N, F), out[l] (N, m, F_l), summed into.
template <typename T> struct Sums {
  T *ds = nullptr;
  T *out[kMaxOrders] = {};
};

// Gradients in: g_ds (N, F), g_out[l] (N, m, F_l). Out, each nullptr when not wanted:
// g_phi (N, C) and g_features[l] (N, m, F_l) summed into (scattered to senders); g_rho (E, K) and
// g_geometry[l] (E, m) written per edge; g_weight_t (K, C) summed into.
template <typename T> struct Gradients {
  const T *g_ds = nullptr;
  const T *g_out[kMaxOrders] = {};
  T *g_phi = nullptr, *g_rho = nullptr, *g_weight_t = nullptr;
  T *g_features[kMaxOrders] = {};
  T *g_geometry[kMaxOrders] = {};
};

template <typename T>
void forward(const Message<T> &msg, int64_t begin, int64_t end, const Sums<T> &sums);

template <typename T>
void backward(const Message<T> &msg, int64_t begin, int64_t end, const Gradients<T> &grads);

// Which instruction set the kernels run with here ("avx512", "avx2" or "generic").
const char *instruction_set();

}    // namespace mlip_attn_kernels

#endif
