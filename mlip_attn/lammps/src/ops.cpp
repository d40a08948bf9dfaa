/* mlip_attn compiled torch ops (see ops.h): PaiNN's chunked message with its recomputing
 * backward, and the cross-process sum used by distributed global attention.
 *
 * Loaded by the LAMMPS plugin (it is part of libmlip_attn_torch.so) and, from Python, by
 * mlip_attn.lammps.ops.load_ops(), which loads the same file: one registration per process.
 * Registration is also skipped when another copy already registered the ops, so a process
 * never aborts on a duplicate definition.
 *
 * Shapes: N nodes, E edges, F features, K radial functions (incl. the envelope column).
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

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ------------------------------------------------------------------ PaiNN message

// Δs (N, F) = Σ_j φ_s,j W_s and Δv (N, 3, F) = Σ_j v_j φ_vv,j W_vv + û_ij φ_vr,j W_vr, one edge
// chunk at a time: phi (N, 3F), v (N, 3, F), rho (E, K), unit (E, 3), weight (3F, K) with the
// filter rho @ weight.T; `first`: v = 0 and its term is skipped.
std::tuple<Tensor, Tensor> message_forward(const Tensor &phi, const Tensor &v, const Tensor &rho,
                                           const Tensor &unit, const Tensor &weight,
                                           const Tensor &receivers, const Tensor &senders,
                                           bool first, int64_t chunk)
{
  const int64_t F = phi.size(1) / 3;
  const int64_t E = senders.size(0);
  Tensor ds = at::zeros({phi.size(0), F}, phi.options());
  Tensor dv = at::zeros_like(v);
  const Tensor w_t = weight.t();
  for (int64_t start = 0; start < E; start += chunk) {
    const int64_t len = std::min(chunk, E - start);
    const Tensor i = receivers.narrow(0, start, len), j = senders.narrow(0, start, len);
    const Tensor x = at::index_select(phi, 0, j) * at::mm(rho.narrow(0, start, len), w_t);
    const Tensor ds_e = x.narrow(1, 0, F);
    const Tensor dv_v = x.narrow(1, F, F), dv_r = x.narrow(1, 2 * F, F);
    Tensor dv_e = unit.narrow(0, start, len).unsqueeze(2) * dv_r.unsqueeze(1);
    if (!first) dv_e.addcmul_(at::index_select(v, 0, j), dv_v.unsqueeze(1));
    ds.index_add_(0, i, ds_e);
    dv.index_add_(0, i, dv_e);
  }
  return {ds, dv};
}

struct PainnMessage : public torch::autograd::Function<PainnMessage> {
  static variable_list forward(AutogradContext *ctx, Tensor phi, Tensor v, Tensor rho,
                               Tensor unit, Tensor weight, Tensor receivers, Tensor senders,
                               bool first, int64_t chunk)
  {
    auto [ds, dv] = message_forward(phi, v, rho, unit, weight, receivers, senders, first, chunk);
    ctx->save_for_backward({phi, v, rho, unit, weight, receivers, senders});
    ctx->saved_data["first"] = first;
    ctx->saved_data["chunk"] = chunk;
    return {ds, dv};
  }

  // The edge terms of each chunk are recomputed; no (E, 3F) tensor is ever kept. Written with
  // differentiable operations, as the Python version (mlip_attn.nn.painn_message).
  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    const auto saved = ctx->get_saved_variables();
    const Tensor &phi = saved[0], &v = saved[1], &rho = saved[2], &unit = saved[3],
                 &weight = saved[4], &receivers = saved[5], &senders = saved[6];
    const bool first = ctx->saved_data["first"].toBool();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const bool need_phi = ctx->needs_input_grad(0), need_v = ctx->needs_input_grad(1) && !first,
               need_rho = ctx->needs_input_grad(2), need_unit = ctx->needs_input_grad(3),
               need_w = ctx->needs_input_grad(4);
    const Tensor &g_ds = grads[0], &g_dv = grads[1];
    const int64_t F = phi.size(1) / 3;
    const int64_t E = senders.size(0);
    Tensor g_phi = need_phi ? at::zeros_like(phi) : Tensor();
    Tensor g_v = need_v ? at::zeros_like(v) : Tensor();
    Tensor g_w = need_w ? at::zeros_like(weight) : Tensor();
    std::vector<Tensor> g_rho, g_unit;
    const Tensor w_t = weight.t();
    for (int64_t start = 0; start < E; start += chunk) {
      const int64_t len = std::min(chunk, E - start);
      const Tensor i = receivers.narrow(0, start, len), j = senders.narrow(0, start, len);
      const Tensor rho_c = rho.narrow(0, start, len), unit_c = unit.narrow(0, start, len);
      const Tensor filt = at::mm(rho_c, w_t);                      // (c, 3F)
      const Tensor phi_j = at::index_select(phi, 0, j);            // (c, 3F)
      const Tensor gs = at::index_select(g_ds, 0, i);              // (c, F)
      const Tensor gv = at::index_select(g_dv, 0, i);              // (c, 3, F)
      if (need_unit) {
        const Tensor dv_r = phi_j.narrow(1, 2 * F, F) * filt.narrow(1, 2 * F, F);
        g_unit.push_back((gv * dv_r.unsqueeze(1)).sum(2));
      }
      const Tensor g_dvr = (gv * unit_c.unsqueeze(2)).sum(1);
      Tensor g_dvv;
      if (first) {
        g_dvv = at::zeros_like(g_dvr);
      } else {
        const Tensor v_j = at::index_select(v, 0, j);
        g_dvv = (gv * v_j).sum(1);
        if (need_v) {
          const Tensor dv_v = phi_j.narrow(1, F, F) * filt.narrow(1, F, F);
          g_v.index_add_(0, j, gv * dv_v.unsqueeze(1));
        }
      }
      const Tensor g_x = at::cat({gs, g_dvv, g_dvr}, 1);          // (c, 3F)
      if (need_phi) g_phi.index_add_(0, j, g_x * filt);
      if (need_rho || need_w) {
        const Tensor g_filt = g_x * phi_j;
        if (need_rho) g_rho.push_back(at::mm(g_filt, weight));
        if (need_w) g_w.addmm_(g_filt.t(), rho_c);
      }
    }
    Tensor g_rho_all, g_unit_all;
    if (need_rho) g_rho_all = E > 0 ? at::cat(g_rho) : at::zeros_like(rho);
    if (need_unit) g_unit_all = E > 0 ? at::cat(g_unit) : at::zeros_like(unit);
    return {g_phi, g_v, g_rho_all, g_unit_all, g_w, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> painn_message_autograd(const Tensor &phi, const Tensor &v,
                                                  const Tensor &rho, const Tensor &unit,
                                                  const Tensor &weight, const Tensor &receivers,
                                                  const Tensor &senders, bool first, int64_t chunk)
{
  TORCH_CHECK(chunk > 0, "mlip_attn::painn_message: chunk must be positive, got ", chunk);
  TORCH_CHECK(phi.dim() == 2 && phi.size(1) % 3 == 0,
              "mlip_attn::painn_message: phi must be (N, 3F), got ", phi.sizes());
  auto out = PainnMessage::apply(phi, v, rho, unit, weight, receivers, senders, first, chunk);
  return {out[0], out[1]};
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

// ------------------------------------------------------------------ registration

struct Registration {
  std::unique_ptr<torch::Library> def;
  Registration()
  {
    auto &dispatcher = c10::Dispatcher::singleton();
    if (dispatcher.findSchema({"mlip_attn::painn_message", ""}).has_value()) return;
    def = std::make_unique<torch::Library>(torch::Library::FRAGMENT, "mlip_attn", std::nullopt,
                                           __FILE__, __LINE__);
    def->def("painn_message(Tensor phi, Tensor v, Tensor rho, Tensor unit, Tensor weight, "
             "Tensor receivers, Tensor senders, bool first, int chunk) -> (Tensor, Tensor)");
    def->def("allreduce_sum(Tensor x) -> Tensor");
    // Autograd: the custom backwards above; below autograd (inference mode): the forwards
    def->impl("painn_message",
              torch::dispatch(c10::DispatchKey::Autograd, TORCH_FN(painn_message_autograd)));
    def->impl("painn_message", torch::dispatch(c10::DispatchKey::CompositeExplicitAutograd,
                                               TORCH_FN(message_forward)));
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
