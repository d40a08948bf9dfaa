/* mlip_attn compiled torch ops (see ops.h): PaiNN's chunked message with its recomputing
 * backward, and the cross-process sum used by distributed global attention.
 *
 * painn_message_orders is the message over any list of orders (ℓ = 1 vectors, ℓ = 2 tensors);
 * painn_message, its ℓ ≤ 1 form, stays for files exported before (export format 2).
 *
 * Loaded by the LAMMPS plugin (it is part of libmlip_attn_torch.so) and, from Python, by
 * mlip_attn.lammps.ops.load_ops(), which loads the same file: one registration per process.
 * Registration is also skipped when another copy already registered the ops, so a process
 * never aborts on a duplicate definition.
 *
 * Shapes: N nodes, E edges, F scalar features, F_l features of equivariant order l (vectors,
 * rank-2 tensors, any number of orders), K radial functions (incl. the envelope column).
 * Every kernel is written with ATen operations, so it runs on any device the inputs are on.
 */
#include "ops.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
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
std::tuple<Tensor, std::vector<Tensor>> message_forward(
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

// Inputs of PainnMessage::apply: phi, rho, weight, receivers, senders, first, chunk, then the
// orders' features and geometry interleaved (f_1, g_1, f_2, g_2, ...), as the Python
// ChunkedMessage. backward returns one entry per argument (undefined for first and chunk);
// needs_input_grad counts tensor inputs only, where the orders start at 5.
constexpr size_t kOrdersArg = 7, kOrdersTensor = 5;

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
    auto [ds, out] = message_forward(phi, features, geometry, rho, weight, receivers, senders,
                                     first, chunk);
    variable_list saved{phi, rho, weight, receivers, senders};
    saved.insert(saved.end(), orders.begin(), orders.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["first"] = first;
    ctx->saved_data["chunk"] = chunk;
    variable_list result{ds};
    result.insert(result.end(), out.begin(), out.end());
    return result;
  }

  // The edge terms of each chunk are recomputed; no edge tensor larger than one chunk is ever
  // kept. Written with differentiable operations, as the Python version
  // (mlip_attn.nn.painn_message.ChunkedMessage), so second derivatives work too.
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
    const bool need_phi = ctx->needs_input_grad(0), need_rho = ctx->needs_input_grad(1),
               need_w = ctx->needs_input_grad(2);
    std::vector<bool> need_feature, need_geometry;
    for (size_t l = 0; l < L; l++) {
      need_feature.push_back(ctx->needs_input_grad(kOrdersTensor + 2 * l) && !first);
      need_geometry.push_back(ctx->needs_input_grad(kOrdersTensor + 2 * l + 1));
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
    variable_list result(kOrdersArg);   // phi, rho, weight, receivers, senders, first, chunk
    result[0] = g_phi;
    result[2] = g_w;
    if (need_rho) result[1] = E > 0 ? at::cat(g_rho) : at::zeros_like(rho);
    for (size_t l = 0; l < L; l++) {
      result.push_back(need_feature[l] ? g_features[l] : Tensor());
      Tensor g_g;
      if (need_geometry[l])
        g_g = E > 0 ? at::cat(g_geometry[l]) : at::zeros_like(geometry[l]);
      result.push_back(g_g);
    }
    return result;
  }
};

std::tuple<Tensor, std::vector<Tensor>> painn_message_orders(
    const Tensor &phi, at::TensorList features, at::TensorList geometry, const Tensor &rho,
    const Tensor &weight, const Tensor &receivers, const Tensor &senders, bool first,
    int64_t chunk)
{
  TORCH_CHECK(chunk > 0, "mlip_attn::painn_message: chunk must be positive, got ", chunk);
  TORCH_CHECK(features.size() == geometry.size(),
              "mlip_attn::painn_message: one geometry tensor per feature order, got ",
              features.size(), " features and ", geometry.size(), " geometry tensors");
  int64_t orders_width = 0;
  for (const Tensor &f : features) {
    TORCH_CHECK(f.dim() == 3, "mlip_attn::painn_message: features must be (N, m, F_l), got ",
                f.sizes());
    orders_width += 2 * f.size(2);
  }
  TORCH_CHECK(phi.dim() == 2 && phi.size(1) > orders_width,
              "mlip_attn::painn_message: phi must be (N, F + 2ΣF_l) with F > 0, got ",
              phi.sizes());
  std::vector<Tensor> orders;
  for (size_t l = 0; l < features.size(); l++) {
    orders.push_back(features[l]);
    orders.push_back(geometry[l]);
  }
  const variable_list out = PainnMessage::apply(phi, rho, weight, receivers, senders, first,
                                                chunk, at::TensorList(orders));
  return {out[0], std::vector<Tensor>(out.begin() + 1, out.end())};
}

// The ℓ ≤ 1 form of files exported before the message took a list of orders (export format 2):
// one order, vectors v (N, 3, F) with the unit bond vectors as geometry.
std::tuple<Tensor, Tensor> painn_message_l1(const Tensor &phi, const Tensor &v, const Tensor &rho,
                                            const Tensor &unit, const Tensor &weight,
                                            const Tensor &receivers, const Tensor &senders,
                                            bool first, int64_t chunk)
{
  auto [ds, out] = painn_message_orders(phi, {v}, {unit}, rho, weight, receivers, senders, first,
                                        chunk);
  return {ds, out[0]};
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

struct AllreduceSum : public torch::autograd::Function<AllreduceSum> {
  static Tensor forward(AutogradContext *, Tensor x) { return reduce_across_processes(x); }
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

// ------------------------------------------------------------------ registration

struct Registration {
  std::unique_ptr<torch::Library> def;
  Registration()
  {
    auto &dispatcher = c10::Dispatcher::singleton();
    if (dispatcher.findSchema({"mlip_attn::painn_message", ""}).has_value()) return;
    def = std::make_unique<torch::Library>(torch::Library::FRAGMENT, "mlip_attn", std::nullopt,
                                           __FILE__, __LINE__);
    def->def("painn_message_orders(Tensor phi, Tensor[] features, Tensor[] geometry, "
             "Tensor rho, Tensor weight, Tensor receivers, Tensor senders, bool first, "
             "int chunk) -> (Tensor, Tensor[])");
    def->def("painn_message(Tensor phi, Tensor v, Tensor rho, Tensor unit, Tensor weight, "
             "Tensor receivers, Tensor senders, bool first, int chunk) -> (Tensor, Tensor)");
    def->def("allreduce_sum(Tensor x) -> Tensor");
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
    // the ℓ ≤ 1 form is the general op with one order: its autograd comes from there
    def->impl("painn_message", torch::dispatch(c10::DispatchKey::CompositeImplicitAutograd,
                                               TORCH_FN(painn_message_l1)));
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
