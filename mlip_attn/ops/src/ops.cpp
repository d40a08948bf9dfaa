/* mlip_attn compiled torch ops (see ops.h): PaiNN's chunked message with its recomputing
 * backward, and the cross-process sum used by distributed global attention.
 *
 * painn_message_orders is the message over any list of orders (ℓ = 1 vectors, ℓ = 2 tensors).
 *
 * Loaded by the LAMMPS plugin (it is part of libmlip_attn_torch.so) and, from Python, by
 * mlip_attn.ops.library.load_ops(), which loads the same file: one registration per process.
 * Registration is also skipped when another copy already registered the ops, so a process
 * never aborts on a duplicate definition.
 *
 * Shapes: N nodes, E edges, F scalar features, F_l features of equivariant order l (vectors,
 * rank-2 tensors, any number of orders), K radial functions (incl. the envelope column).
 * On the CPU, in float32 and float64, the message and its first derivatives run as the fused
 * per-edge loops of painn_kernels.cpp; elsewhere (other devices, and the backward when it must
 * itself be differentiable: training with a force loss) as ATen operations over edge chunks,
 * which run on any device the inputs are on.
 */
#include "ops.h"
#include "painn_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ------------------------------------------------------------------ PaiNN message

// Column offsets in phi: [F, F + F_1, F + 2F_1, F + 2F_1 + F_2, ...], where each order's a and b
// blocks start, then the end (phi is [s (F) | a_1 b_1 (F_1 each) | a_2 b_2 (F_2 each) ...]).
std::vector<int64_t> offsets(const Tensor &phi, at::TensorList features)
{
  int64_t orders_width = 0;
  for (const Tensor &f : features) orders_width += 2 * f.size(2);
  std::vector<int64_t> cols{phi.size(1) - orders_width};
  for (const Tensor &f : features) {
    cols.push_back(cols.back() + f.size(2));
    cols.push_back(cols.back() + f.size(2));
  }
  return cols;
}

// Δs (N, F) = Σ_j x_ij[s] and, per order, Δf (N, m, F_l) = Σ_j f_j ⊙ x_ij[a_l] + g_ij ⊗ x_ij[b_l]
// with x_ij = phi_j ⊙ (rho_ij @ weight.T), one edge chunk at a time: phi (N, F + 2ΣF_l),
// features L tensors (N, m_l, F_l), geometry L tensors (E, m_l), rho (E, K), weight
// (F + 2ΣF_l, K); `first`: every feature is zero and its term is skipped.
std::tuple<Tensor, std::vector<Tensor>> message_forward_aten(
    const Tensor &phi, at::TensorList features, at::TensorList geometry, const Tensor &rho,
    const Tensor &weight, const Tensor &receivers, const Tensor &senders, bool first,
    int64_t chunk)
{
  const std::vector<int64_t> cols = offsets(phi, features);
  const int64_t E = senders.size(0);
  Tensor ds = at::zeros({phi.size(0), cols[0]}, phi.options());
  std::vector<Tensor> out;
  for (const Tensor &f : features) out.push_back(at::zeros_like(f));
  const Tensor w_t = weight.t();
  for (int64_t start = 0; start < E; start += chunk) {
    const int64_t len = std::min(chunk, E - start);
    const Tensor i = receivers.narrow(0, start, len), j = senders.narrow(0, start, len);
    const Tensor x = at::index_select(phi, 0, j) * at::mm(rho.narrow(0, start, len), w_t);
    ds.index_add_(0, i, x.narrow(1, 0, cols[0]));
    for (size_t l = 0; l < features.size(); l++) {
      const int64_t width = cols[2 * l + 1] - cols[2 * l];
      const Tensor a = x.narrow(1, cols[2 * l], width), b = x.narrow(1, cols[2 * l + 1], width);
      Tensor d = geometry[l].narrow(0, start, len).unsqueeze(2) * b.unsqueeze(1);
      if (!first) d.addcmul_(at::index_select(features[l], 0, j), a.unsqueeze(1));
      out[l].index_add_(0, i, d);
    }
  }
  return {ds, out};
}

// ---------------------------------------------------------- the fused CPU route

// Whether the fused loops take these inputs: CPU tensors of one floating type (float32/64),
// int64 edge indices, at most kMaxOrders orders.
bool fused_applies(const Tensor &phi, at::TensorList features, at::TensorList geometry,
                   const Tensor &rho, const Tensor &weight, const Tensor &receivers,
                   const Tensor &senders)
{
  const auto type = phi.scalar_type();
  if (!phi.device().is_cpu() || (type != at::kFloat && type != at::kDouble)) return false;
  if (features.size() > static_cast<size_t>(mlip_attn_kernels::kMaxOrders)) return false;
  for (const Tensor &t : {rho, weight})
    if (!t.device().is_cpu() || t.scalar_type() != type) return false;
  for (at::TensorList list : {features, geometry})
    for (const Tensor &t : list)
      if (!t.device().is_cpu() || t.scalar_type() != type) return false;
  return receivers.scalar_type() == at::kLong && senders.scalar_type() == at::kLong
         && receivers.device().is_cpu() && senders.device().is_cpu();
}

// The inputs, contiguous, and the kernels' view of them (pointers into `keep`)
template <typename T> struct FusedInputs {
  std::vector<Tensor> keep;
  mlip_attn_kernels::Message<T> msg;
  int64_t E = 0;
};

template <typename T>
FusedInputs<T> fused_inputs(const Tensor &phi, at::TensorList features, at::TensorList geometry,
                            const Tensor &rho, const Tensor &weight, const Tensor &receivers,
                            const Tensor &senders, bool first)
{
  FusedInputs<T> in;
  const std::vector<int64_t> cols = offsets(phi, features);
  auto keep = [&in](const Tensor &t) {
    in.keep.push_back(t.contiguous());
    return in.keep.back().data_ptr();
  };
  auto &msg = in.msg;
  msg.phi = static_cast<const T *>(keep(phi));
  msg.rho = static_cast<const T *>(keep(rho));
  msg.weight_t = static_cast<const T *>(keep(weight.t()));
  msg.receivers = static_cast<const int64_t *>(keep(receivers));
  msg.senders = static_cast<const int64_t *>(keep(senders));
  msg.C = phi.size(1);
  msg.F = cols[0];
  msg.K = rho.size(1);
  msg.first = first;
  msg.orders = static_cast<int>(features.size());
  for (size_t l = 0; l < features.size(); l++) {
    auto &o = msg.order[l];
    o.features = static_cast<const T *>(keep(features[l]));
    o.geometry = static_cast<const T *>(keep(geometry[l]));
    o.m = features[l].size(1);
    o.width = features[l].size(2);
    o.a = cols[2 * l + 1] - o.width;
    o.b = cols[2 * l + 1];
  }
  in.E = senders.size(0);
  // the loops index rows directly: an edge naming an atom that does not exist is refused here
  // (ATen's index_add_ refuses it on the other route)
  const int64_t N = phi.size(0);
  for (int64_t e = 0; e < in.E; e++)
    TORCH_CHECK(msg.receivers[e] >= 0 && msg.receivers[e] < N && msg.senders[e] >= 0
                    && msg.senders[e] < N,
                "mlip_attn::painn_message_orders: edge ", e, " joins atoms ", msg.receivers[e], " and ",
                msg.senders[e], ", but there are ", N, " atoms");
  return in;
}

// Edges per thread below which the loops run on one thread (a thread's share must outweigh
// waking it and summing its private buffers)
constexpr int64_t kEdgesPerThread = 512;

int64_t fused_parts(int64_t E)
{
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), E / kEdgesPerThread));
}

// [begin, end) of each part: equal shares of the edges; with `align`, each boundary moves to
// where the receiver changes, so no receiver's edges are split between parts
std::vector<int64_t> edge_ranges(const int64_t *receivers, int64_t E, int64_t parts, bool align)
{
  std::vector<int64_t> bounds{0};
  for (int64_t t = 1; t < parts; t++) {
    int64_t b = std::max(bounds.back(), E * t / parts);
    while (align && b > 0 && b < E && receivers[b] == receivers[b - 1]) b++;
    bounds.push_back(b);
  }
  bounds.push_back(E);
  return bounds;
}

// Runs body(part, begin, end) for each part on its own thread
template <typename Body> void for_each_part(const std::vector<int64_t> &bounds, Body body)
{
  const int64_t parts = static_cast<int64_t>(bounds.size()) - 1;
  if (parts == 1) return body(0, bounds[0], bounds[1]);
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) body(p, bounds[p], bounds[p + 1]);
  });
}

// Private copies of the tensors that several parts sum into: part 0 writes the tensor itself,
// every other part a zeroed copy of its own (parts run on different threads), added back into
// the tensor after the parts finish
template <typename T> class PrivateSums {
public:
  explicit PrivateSums(int64_t parts) : copies_(parts) {}

  // where `part` sums into `shared` (nullptr for an undefined tensor)
  T *target(int64_t part, const Tensor &shared)
  {
    if (!shared.defined()) return nullptr;
    if (part == 0) return shared.template data_ptr<T>();
    copies_[part].emplace_back(shared, at::zeros_like(shared));
    return copies_[part].back().second.template data_ptr<T>();
  }

  void add_into_shared()
  {
    for (auto &mine : copies_)
      for (auto &[shared, copy] : mine) shared.add_(copy);
  }

private:
  std::vector<std::vector<std::pair<Tensor, Tensor>>> copies_;
};

template <typename T>
std::tuple<Tensor, std::vector<Tensor>> fused_forward(
    const Tensor &phi, at::TensorList features, at::TensorList geometry, const Tensor &rho,
    const Tensor &weight, const Tensor &receivers, const Tensor &senders, bool first)
{
  const FusedInputs<T> in = fused_inputs<T>(phi, features, geometry, rho, weight, receivers,
                                            senders, first);
  Tensor ds = at::zeros({phi.size(0), in.msg.F}, phi.options());
  std::vector<Tensor> out;
  for (const Tensor &f : features) out.push_back(at::zeros_like(f, at::MemoryFormat::Contiguous));
  const int64_t parts = fused_parts(in.E);
  // edges sorted by receiver (as every neighbour list here gives them): each part owns its
  // receivers' rows; otherwise each extra part sums into private copies, added at the end
  const bool owned = std::is_sorted(in.msg.receivers, in.msg.receivers + in.E);
  const std::vector<int64_t> bounds = edge_ranges(in.msg.receivers, in.E, parts, owned);
  PrivateSums<T> copies(parts);
  for_each_part(bounds, [&](int64_t part, int64_t begin, int64_t end) {
    auto target = [&](const Tensor &t) {
      return owned ? t.data_ptr<T>() : copies.target(part, t);
    };
    mlip_attn_kernels::Sums<T> sums;
    sums.ds = target(ds);
    for (size_t l = 0; l < out.size(); l++) sums.out[l] = target(out[l]);
    mlip_attn_kernels::forward(in.msg, begin, end, sums);
  });
  copies.add_into_shared();
  return {ds, out};
}

// The first derivatives of the message, fused: grads[0] = g_ds, grads[1 + l] = g_out of order
// l; `need` as PainnMessage::backward's. Returns g_phi, g_rho, g_weight, then g_features and
// g_geometry per order (undefined where not needed).
template <typename T>
std::vector<Tensor> fused_backward(const Tensor &phi, at::TensorList features,
                                   at::TensorList geometry, const Tensor &rho,
                                   const Tensor &weight, const Tensor &receivers,
                                   const Tensor &senders, bool first, const variable_list &grads,
                                   bool need_phi, bool need_rho, bool need_w,
                                   const std::vector<bool> &need_feature,
                                   const std::vector<bool> &need_geometry)
{
  const FusedInputs<T> in = fused_inputs<T>(phi, features, geometry, rho, weight, receivers,
                                            senders, first);
  const size_t L = features.size();
  std::vector<Tensor> grads_in;
  for (const Tensor &g : grads) grads_in.push_back(g.contiguous());
  // summed into (scattered to senders, or shared by every edge): private copies per extra part
  Tensor g_phi = need_phi ? at::zeros_like(in.keep[0]) : Tensor();
  Tensor g_wt = need_w ? at::zeros({in.msg.K, in.msg.C}, phi.options()) : Tensor();
  std::vector<Tensor> g_features(L), g_geometry(L);
  for (size_t l = 0; l < L; l++) {
    if (need_feature[l] && !first)
      g_features[l] = at::zeros_like(features[l], at::MemoryFormat::Contiguous);
    if (need_geometry[l]) g_geometry[l] = at::empty_like(geometry[l], at::MemoryFormat::Contiguous);
  }
  Tensor g_rho = need_rho ? at::empty_like(rho, at::MemoryFormat::Contiguous) : Tensor();
  const int64_t parts = fused_parts(in.E);
  const std::vector<int64_t> bounds = edge_ranges(in.msg.receivers, in.E, parts, false);
  PrivateSums<T> copies(parts);
  for_each_part(bounds, [&](int64_t part, int64_t begin, int64_t end) {
    mlip_attn_kernels::Gradients<T> g;
    g.g_ds = grads_in[0].data_ptr<T>();
    g.g_phi = copies.target(part, g_phi);
    g.g_weight_t = copies.target(part, g_wt);
    g.g_rho = g_rho.defined() ? g_rho.data_ptr<T>() : nullptr;
    for (size_t l = 0; l < L; l++) {
      g.g_out[l] = grads_in[1 + l].data_ptr<T>();
      g.g_features[l] = copies.target(part, g_features[l]);
      g.g_geometry[l] = g_geometry[l].defined() ? g_geometry[l].data_ptr<T>() : nullptr;
    }
    mlip_attn_kernels::backward(in.msg, begin, end, g);
  });
  copies.add_into_shared();
  std::vector<Tensor> result{g_phi, g_rho, need_w ? g_wt.t().contiguous() : Tensor()};
  for (size_t l = 0; l < L; l++) {
    result.push_back(g_features[l]);
    result.push_back(g_geometry[l]);
  }
  return result;
}

// The message's forward: fused on the CPU, ATen chunks elsewhere
std::tuple<Tensor, std::vector<Tensor>> message_forward(
    const Tensor &phi, at::TensorList features, at::TensorList geometry, const Tensor &rho,
    const Tensor &weight, const Tensor &receivers, const Tensor &senders, bool first,
    int64_t chunk)
{
  if (!fused_applies(phi, features, geometry, rho, weight, receivers, senders))
    return message_forward_aten(phi, features, geometry, rho, weight, receivers, senders, first,
                                chunk);
  if (phi.scalar_type() == at::kDouble)
    return fused_forward<double>(phi, features, geometry, rho, weight, receivers, senders, first);
  return fused_forward<float>(phi, features, geometry, rho, weight, receivers, senders, first);
}

// The message's first derivatives, compact: [g_phi, g_rho, g_weight, g_f_1, g_g_1, ...]
// (undefined where not needed). `fused`: the fused loops where they apply (first derivatives
// only); otherwise ATen operations over edge chunks, the edge terms of each chunk recomputed
// (no edge tensor larger than one chunk is ever kept), differentiable as the Python version
// (mlip_attn.nn.painn_message.ChunkedMessage), so second derivatives work when grad mode is on.
variable_list message_backward_impl(const Tensor &phi, at::TensorList features,
                                    at::TensorList geometry, const Tensor &rho,
                                    const Tensor &weight, const Tensor &receivers,
                                    const Tensor &senders, bool first, int64_t chunk,
                                    const variable_list &grads, bool need_phi, bool need_rho,
                                    bool need_w, const std::vector<bool> &need_feature,
                                    const std::vector<bool> &need_geometry, bool fused)
{
  const size_t L = features.size();
  if (fused && fused_applies(phi, features, geometry, rho, weight, receivers, senders)) {
    return phi.scalar_type() == at::kDouble
               ? fused_backward<double>(phi, features, geometry, rho, weight, receivers, senders,
                                        first, grads, need_phi, need_rho, need_w, need_feature,
                                        need_geometry)
               : fused_backward<float>(phi, features, geometry, rho, weight, receivers, senders,
                                       first, grads, need_phi, need_rho, need_w, need_feature,
                                       need_geometry);
  }
  const std::vector<int64_t> cols = offsets(phi, features);
  const int64_t E = senders.size(0);
  Tensor g_phi = need_phi ? at::zeros_like(phi) : Tensor();
  Tensor g_w = need_w ? at::zeros_like(weight) : Tensor();
  std::vector<Tensor> g_features(L), g_rho;
  std::vector<std::vector<Tensor>> g_geometry(L);
  for (size_t l = 0; l < L; l++)
    if (need_feature[l]) g_features[l] = at::zeros_like(features[l]);
  const Tensor w_t = weight.t();
  for (int64_t start = 0; start < E; start += chunk) {
    const int64_t len = std::min(chunk, E - start);
    const Tensor i = receivers.narrow(0, start, len), j = senders.narrow(0, start, len);
    const Tensor rho_c = rho.narrow(0, start, len);
    const Tensor filt = at::mm(rho_c, w_t);                      // (c, F + 2ΣF_l)
    const Tensor phi_j = at::index_select(phi, 0, j);            // (c, F + 2ΣF_l)
    std::vector<Tensor> parts{at::index_select(grads[0], 0, i)};  // g of x[s]: (c, F)
    for (size_t l = 0; l < L; l++) {
      const int64_t width = cols[2 * l + 1] - cols[2 * l];
      const Tensor gd = at::index_select(grads[1 + l], 0, i);    // (c, m, F_l)
      if (need_geometry[l]) {
        const Tensor b = phi_j.narrow(1, cols[2 * l + 1], width)
                         * filt.narrow(1, cols[2 * l + 1], width);
        g_geometry[l].push_back((gd * b.unsqueeze(1)).sum(2));
      }
      const Tensor g_b = (gd * geometry[l].narrow(0, start, len).unsqueeze(2)).sum(1);
      Tensor g_a;
      if (first) {
        g_a = at::zeros_like(g_b);
      } else {
        g_a = (gd * at::index_select(features[l], 0, j)).sum(1);
        if (need_feature[l]) {
          const Tensor a = phi_j.narrow(1, cols[2 * l], width) * filt.narrow(1, cols[2 * l], width);
          g_features[l].index_add_(0, j, gd * a.unsqueeze(1));
        }
      }
      parts.push_back(g_a);
      parts.push_back(g_b);
    }
    const Tensor g_x = at::cat(parts, 1);                       // (c, F + 2ΣF_l)
    if (need_phi) g_phi.index_add_(0, j, g_x * filt);
    if (need_rho || need_w) {
      const Tensor g_filt = g_x * phi_j;
      if (need_rho) g_rho.push_back(at::mm(g_filt, weight));
      if (need_w) g_w.addmm_(g_filt.t(), rho_c);
    }
  }
  variable_list result{g_phi, Tensor(), g_w};
  if (need_rho) result[1] = E > 0 ? at::cat(g_rho) : at::zeros_like(rho);
  for (size_t l = 0; l < L; l++) {
    result.push_back(need_feature[l] ? g_features[l] : Tensor());
    Tensor g_g;
    if (need_geometry[l]) g_g = E > 0 ? at::cat(g_geometry[l]) : at::zeros_like(geometry[l]);
    result.push_back(g_g);
  }
  return result;
}

using BackwardResult =
    std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>, std::vector<Tensor>>;

// The op painn_message_orders_backward: the message's first derivatives (fused on the CPU,
// ATen chunks elsewhere, not differentiable), a graph node of its own so that torch.export
// traces the backward as one call. `needs`: 0/1 for phi, rho, weight, then each order's
// features, then each order's geometry; a gradient not needed comes back as an empty (0,)
// tensor (an op cannot return undefined tensors).
BackwardResult message_backward(const Tensor &g_ds, at::TensorList g_out, const Tensor &phi,
                                at::TensorList features, at::TensorList geometry,
                                const Tensor &rho, const Tensor &weight,
                                const Tensor &receivers, const Tensor &senders, bool first,
                                int64_t chunk, at::IntArrayRef needs)
{
  const size_t L = features.size();
  TORCH_CHECK(g_out.size() == L && geometry.size() == L && needs.size() == 3 + 2 * L,
              "mlip_attn::painn_message_orders_backward: one gradient, feature and geometry "
              "tensor per order and 3 + 2L needs, got ", g_out.size(), ", ", L, ", ",
              geometry.size(), " and ", needs.size());
  at::NoGradGuard no_grad;
  std::vector<bool> need_feature, need_geometry;
  for (size_t l = 0; l < L; l++) {
    need_feature.push_back(needs[3 + l] != 0 && !first);
    need_geometry.push_back(needs[3 + L + l] != 0);
  }
  variable_list grads{g_ds};
  grads.insert(grads.end(), g_out.begin(), g_out.end());
  variable_list r = message_backward_impl(phi, features, geometry, rho, weight, receivers,
                                          senders, first, chunk, grads, needs[0] != 0,
                                          needs[1] != 0, needs[2] != 0, need_feature,
                                          need_geometry, true);
  const Tensor empty = at::empty({0}, phi.options());
  auto or_empty = [&](const Tensor &t) { return t.defined() ? t : empty; };
  std::vector<Tensor> g_features, g_geometry;
  for (size_t l = 0; l < L; l++) {
    g_features.push_back(or_empty(r[3 + 2 * l]));
    g_geometry.push_back(or_empty(r[4 + 2 * l]));
  }
  return {or_empty(r[0]), or_empty(r[1]), or_empty(r[2]), g_features, g_geometry};
}

// Inputs of PainnMessage::apply: phi, rho, weight, receivers, senders, first, chunk, then the
// orders' features and geometry interleaved (f_1, g_1, f_2, g_2, ...), as the Python
// ChunkedMessage. backward returns one entry per argument (undefined for first and chunk);
// needs_input_grad counts tensor inputs only, where the orders start at 5.
constexpr size_t kOrdersArg = 7, kOrdersTensor = 5;

// Forward and backward call the ops through the dispatcher below autograd, so that a tracer
// (torch.export, make_fx) records them as two graph nodes with their fake kernels
// (mlip_attn/ops/fake.py) instead of looking inside.
struct PainnMessage : public torch::autograd::Function<PainnMessage> {
  static variable_list forward(AutogradContext *ctx, Tensor phi, Tensor rho, Tensor weight,
                               Tensor receivers, Tensor senders, bool first, int64_t chunk,
                               at::TensorList orders)
  {
    std::vector<Tensor> features, geometry;
    for (size_t k = 0; k < orders.size(); k += 2) {
      features.push_back(orders[k]);
      geometry.push_back(orders[k + 1]);
    }
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::painn_message_orders", "")
                         .typed<std::tuple<Tensor, std::vector<Tensor>>(
                             const Tensor &, at::TensorList, at::TensorList, const Tensor &,
                             const Tensor &, const Tensor &, const Tensor &, bool, int64_t)>();
    std::tuple<Tensor, std::vector<Tensor>> out;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      out = op.call(phi, features, geometry, rho, weight, receivers, senders, first, chunk);
    }
    variable_list saved{phi, rho, weight, receivers, senders};
    saved.insert(saved.end(), orders.begin(), orders.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["first"] = first;
    ctx->saved_data["chunk"] = chunk;
    variable_list result{std::get<0>(out)};
    result.insert(result.end(), std::get<1>(out).begin(), std::get<1>(out).end());
    return result;
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    const auto saved = ctx->get_saved_variables();
    const Tensor &phi = saved[0], &rho = saved[1], &weight = saved[2], &receivers = saved[3],
                 &senders = saved[4];
    const size_t L = (saved.size() - 5) / 2;
    std::vector<Tensor> features, geometry;
    for (size_t l = 0; l < L; l++) {
      features.push_back(saved[5 + 2 * l]);
      geometry.push_back(saved[6 + 2 * l]);
    }
    const bool first = ctx->saved_data["first"].toBool();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    std::vector<int64_t> needs{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                               ctx->needs_input_grad(2)};
    std::vector<bool> need_feature, need_geometry;
    for (size_t l = 0; l < L; l++) {
      need_feature.push_back(ctx->needs_input_grad(kOrdersTensor + 2 * l) && !first);
      needs.push_back(need_feature.back());
    }
    for (size_t l = 0; l < L; l++) {
      need_geometry.push_back(ctx->needs_input_grad(kOrdersTensor + 2 * l + 1));
      needs.push_back(need_geometry.back());
    }
    for (size_t k = 0; k < 1 + L; k++) {   // an output not used gets no gradient
      if (grads[k].defined()) continue;
      c10::SymInt width = phi.sym_size(1);
      for (const Tensor &f : features) width = width - 2 * f.sym_size(2);
      grads[k] = at::zeros_like(k == 0 ? phi.narrow_symint(1, 0, width) : features[k - 1]);
    }
    variable_list compact;
    if (at::GradMode::is_enabled()) {
      // this backward must itself be differentiable (create_graph: a force loss in
      // training): ATen operations, recorded by autograd
      compact = message_backward_impl(phi, features, geometry, rho, weight, receivers, senders,
                                      first, chunk, grads, needs[0] != 0, needs[1] != 0,
                                      needs[2] != 0, need_feature, need_geometry, false);
    } else {
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("mlip_attn::painn_message_orders_backward", "")
                           .typed<BackwardResult(const Tensor &, at::TensorList, const Tensor &,
                                                 at::TensorList, at::TensorList, const Tensor &,
                                                 const Tensor &, const Tensor &, const Tensor &,
                                                 bool, int64_t, at::IntArrayRef)>();
      const std::vector<Tensor> g_out(grads.begin() + 1, grads.begin() + 1 + L);
      BackwardResult r;
      {
        at::AutoDispatchBelowADInplaceOrView below_autograd;
        r = op.call(grads[0], g_out, phi, features, geometry, rho, weight, receivers, senders,
                    first, chunk, needs);
      }
      compact = {needs[0] ? std::get<0>(r) : Tensor(), needs[1] ? std::get<1>(r) : Tensor(),
                 needs[2] ? std::get<2>(r) : Tensor()};
      for (size_t l = 0; l < L; l++) {
        compact.push_back(need_feature[l] ? std::get<3>(r)[l] : Tensor());
        compact.push_back(need_geometry[l] ? std::get<4>(r)[l] : Tensor());
      }
    }
    variable_list result(kOrdersArg);   // phi, rho, weight, receivers, senders, first, chunk
    result[0] = compact[0];
    result[1] = compact[1];
    result[2] = compact[2];
    result.insert(result.end(), compact.begin() + 3, compact.end());
    return result;
  }
};

std::tuple<Tensor, std::vector<Tensor>> painn_message_orders(
    const Tensor &phi, at::TensorList features, at::TensorList geometry, const Tensor &rho,
    const Tensor &weight, const Tensor &receivers, const Tensor &senders, bool first,
    int64_t chunk)
{
  TORCH_CHECK(chunk > 0, "mlip_attn::painn_message_orders: chunk must be positive, got ", chunk);
  TORCH_CHECK(features.size() == geometry.size(),
              "mlip_attn::painn_message_orders: one geometry tensor per feature order, got ",
              features.size(), " features and ", geometry.size(), " geometry tensors");
  // sym_size, never size(): on a tracer's symbolic tensors size() would fix every dimension
  // (the atom and edge counts) to the example's
  c10::SymInt orders_width = 0;
  for (const Tensor &f : features) {
    TORCH_CHECK(f.dim() == 3, "mlip_attn::painn_message_orders: features must be (N, m, F_l), got ",
                f.sym_sizes());
    orders_width = orders_width + 2 * f.sym_size(2);
  }
  TORCH_CHECK(phi.dim() == 2 && phi.sym_size(1) > orders_width,
              "mlip_attn::painn_message_orders: phi must be (N, F + 2ΣF_l) with F > 0, got ",
              phi.sym_sizes());
  std::vector<Tensor> orders;
  for (size_t l = 0; l < features.size(); l++) {
    orders.push_back(features[l]);
    orders.push_back(geometry[l]);
  }
  const variable_list out = PainnMessage::apply(phi, rho, weight, receivers, senders, first,
                                                chunk, at::TensorList(orders));
  return {out[0], std::vector<Tensor>(out.begin() + 1, out.end())};
}

// ------------------------------------------------------------------ cross-process sums

std::atomic<mlip_attn_allreduce_fn> g_hook{nullptr};
std::atomic<void *> g_context{nullptr};
std::atomic<int64_t> g_calls{0};

Tensor reduce_across_processes(const Tensor &x)
{
  Tensor out = x.contiguous().clone();
  mlip_attn_allreduce_fn hook = g_hook.load();
  if (hook == nullptr || out.numel() == 0) return out;
  TORCH_CHECK(out.scalar_type() == at::kDouble || out.scalar_type() == at::kFloat,
              "mlip_attn::allreduce_sum: float32 or float64 tensors only, got ",
              out.scalar_type());
  Tensor host = out.device().is_cpu() ? out : out.cpu();    // MPI is not assumed CUDA-aware
  g_calls++;
  const int rc = hook(host.data_ptr(), host.numel(), host.scalar_type() == at::kDouble ? 1 : 0,
                      g_context.load());
  TORCH_CHECK(rc == 0, "mlip_attn::allreduce_sum: the all-reduce across processes failed (", rc,
              ")");
  if (!out.device().is_cpu()) out.copy_(host);
  return out;
}

// forward through the dispatcher below autograd: a tracer records the op, not its clone
struct AllreduceSum : public torch::autograd::Function<AllreduceSum> {
  static Tensor forward(AutogradContext *, Tensor x)
  {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::allreduce_sum", "")
                         .typed<Tensor(const Tensor &)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(x);
  }
  // d(Σ_r E_r)/d(partial sum of rank r) = Σ_r' dE_r'/d(total): the same reduction
  static variable_list backward(AutogradContext *, variable_list grads)
  {
    return {AllreduceSum::apply(grads[0])};
  }
};

Tensor allreduce_sum_autograd(const Tensor &x) { return AllreduceSum::apply(x); }

// Whether allreduce_sum sums over several processes right now (a hook is installed: the LAMMPS
// plugin during the call of a global model on several MPI ranks), i.e. whether the structure
// the model sees is split between processes. The same answer on every rank of the call.
bool sums_across_processes() { return g_hook.load() != nullptr; }

// Which instruction set the fused CPU loops use on this machine: "avx512", "avx2", "generic"
std::string kernel_instruction_set() { return mlip_attn_kernels::instruction_set(); }

// ------------------------------------------------------------------ registration

struct Registration {
  std::unique_ptr<torch::Library> def;
  Registration()
  {
    auto &dispatcher = c10::Dispatcher::singleton();
    if (dispatcher.findSchema({"mlip_attn::painn_message_orders", ""}).has_value()) return;
    def = std::make_unique<torch::Library>(torch::Library::FRAGMENT, "mlip_attn", std::nullopt,
                                           __FILE__, __LINE__);
    def->def("painn_message_orders(Tensor phi, Tensor[] features, Tensor[] geometry, "
             "Tensor rho, Tensor weight, Tensor receivers, Tensor senders, bool first, "
             "int chunk) -> (Tensor, Tensor[])");
    def->def("painn_message_orders_backward(Tensor g_ds, Tensor[] g_out, Tensor phi, "
             "Tensor[] features, Tensor[] geometry, Tensor rho, Tensor weight, "
             "Tensor receivers, Tensor senders, bool first, int chunk, int[] needs) -> "
             "(Tensor, Tensor, Tensor, Tensor[], Tensor[])");
    def->def("allreduce_sum(Tensor x) -> Tensor");
    def->def("kernel_instruction_set() -> str", TORCH_FN(kernel_instruction_set));
    // CONSERVATIVE: it has "side effects", so TorchScript never folds the call into the answer
    // it gave while the model was scripted (an op without inputs looks constant otherwise)
    def->def(torch::schema("sums_across_processes() -> bool", c10::AliasAnalysisKind::CONSERVATIVE),
             TORCH_FN(sums_across_processes));
    // Autograd: the custom backwards above; below autograd (inference mode): the forwards
    def->impl("painn_message_orders",
              torch::dispatch(c10::DispatchKey::Autograd, TORCH_FN(painn_message_orders)));
    def->impl("painn_message_orders", torch::dispatch(
                                          c10::DispatchKey::CompositeExplicitAutograd,
                                          TORCH_FN(message_forward)));
    def->impl("painn_message_orders_backward",
              torch::dispatch(c10::DispatchKey::CompositeExplicitAutograd,
                              TORCH_FN(message_backward)));
    def->impl("allreduce_sum",
              torch::dispatch(c10::DispatchKey::Autograd, TORCH_FN(allreduce_sum_autograd)));
    def->impl("allreduce_sum", torch::dispatch(c10::DispatchKey::CompositeExplicitAutograd,
                                               TORCH_FN(reduce_across_processes)));
  }
};

Registration registration;

}    // namespace

extern "C" void mlip_attn_set_allreduce(mlip_attn_allreduce_fn fn, void *context)
{
  g_context.store(context);
  g_hook.store(fn);
}

extern "C" int64_t mlip_attn_allreduce_calls()
{
  return g_calls.load();
}
