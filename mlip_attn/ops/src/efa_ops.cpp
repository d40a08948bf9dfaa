/* The Euclidean fast attention ops (mlip_attn/attention/efa.py, efa_ops.py), registered under
 * `mlip_attn` next to the PaiNN message (ops.cpp) with the same contract:
 *
 *   efa_rotate(x (N, C, D), centred (N, 3), directions (G, 3), omega (K,), scale (G,))
 *       -> (N, G·C·D): x's channel pairs rotated by θ = ω_k (u_g · r_n), times s_g;
 *   efa_rotate_backward(grad, x, centred, directions, omega, scale, needs[2]) -> (g_x, g_centred);
 *   efa_pair_attention(q (N, C, D), k (N, C, D), val (N, V), positions (N, 3), batch (N,),
 *       omega (K,), r_max) -> y (N, V): y_m = Σ_n S(r_mn) Σ_k sinc(ω_k r_mn) ⟨q_m^(k), k_n^(k)⟩
 *       val_n over n of m's structure within r_max (every n, S = 1, if r_max ≤ 0);
 *   efa_pair_attention_backward(g_y, q, k, val, positions, batch, omega, r_max, needs[4])
 *       -> (g_q, g_k, g_val, g_positions).
 *
 * On the CPU the fused loops of efa_kernels.cpp; elsewhere the same maths in ATen operations
 * (the pair attention over chunks of its pair list, for bounded memory).
 * Forward and backward are separate ops called through the dispatcher below autograd, so a
 * tracer (torch.export) records them as graph nodes (fake kernels: mlip_attn/ops/fake.py). A
 * gradient not asked for comes back as an empty (0,) tensor. The backward is first order; when
 * grad mode is on in the backward (create_graph: a force loss, a Hessian) it recomputes the
 * forward in differentiable ATen operations and differentiates that instead, as the PaiNN
 * message does. directions, omega, scale, batch and r_max are constants (no gradient).
 */
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <array>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#include "efa_kernels.h"

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
namespace efa = mlip_attn_efa;

std::vector<double> doubles(const Tensor &t)
{
  const Tensor d = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

bool fused(const Tensor &x) { return x.device().is_cpu() && x.size(-1) / 2 <= 64; }

// ------------------------------------------------------------------ ATen forms (any device,
// differentiable): the reference maths of efa.py

Tensor rotate_aten(const Tensor &x, const Tensor &centred, const Tensor &dirs,
                   const Tensor &omega, const Tensor &scale)
{
  const auto o = x.options();
  const c10::SymInt n = x.sym_size(0), c = x.sym_size(1), d = x.sym_size(2);
  const Tensor t = at::matmul(centred, dirs.to(o).t());                 // (N, G)
  const Tensor theta = t.unsqueeze(-1) * omega.to(o);                  // (N, G, K)
  const Tensor s = scale.to(o).view({1, -1, 1});
  const Tensor cos = (at::cos(theta) * s).unsqueeze(2), sin = (at::sin(theta) * s).unsqueeze(2);
  const Tensor pairs = x.reshape_symint({n, 1, c, d / 2, 2});
  const Tensor a = pairs.select(-1, 0), b = pairs.select(-1, 1);      // (N, 1, C, K)
  const Tensor rotated = at::stack({a * cos - b * sin, a * sin + b * cos}, -1);
  return rotated.reshape_symint({n, dirs.sym_size(0) * c * d});
}

// The ATen form's pairs: every ordered pair (i, j) of one structure within r_max (i = j
// included), from the tiles of the fused loops (efa_kernels.h, pair_tile_geometry), handed to
// `each(I, J)` (int64 on the positions' device) in chunks of at most max_pairs: the list and
// the ATen form's per-pair tensors stay bounded (10⁸ pairs at 10,000 atoms would take 1.6 GB
// of indices and 26 GB of products at once)
using PairChunk = std::function<void(const Tensor &, const Tensor &)>;
void for_pair_chunks(const Tensor &positions, const Tensor &batch, double r_max,
                     int64_t max_pairs, const PairChunk &each)
{
  const Tensor pos = positions.detach().to(at::kCPU, at::kDouble).contiguous();
  const Tensor b = batch.to(at::kCPU, at::kLong).contiguous();
  const int64_t N = pos.size(0), B = N > 0 ? b.max().item<int64_t>() + 1 : 0;
  const double *p = pos.data_ptr<double>();
  const efa::TileGeometry tiles =
      efa::pair_tile_geometry<double>(p, b.data_ptr<int64_t>(), N, B, r_max);
  constexpr int64_t L = efa::kPairLanes;
  std::vector<int64_t> I, J;
  auto emit = [&] {
    if (I.empty()) return;
    each(torch::tensor(I, torch::kLong).to(positions.device()),
         torch::tensor(J, torch::kLong).to(positions.device()));
    I.clear();
    J.clear();
  };
  for (int64_t row = 0; row < tiles.count; row++)
    for (int64_t n = tiles.start[row]; n < tiles.start[row + 1]; n++)
      for (int64_t a = 0; a < L; a++) {
        const int64_t i = tiles.atoms[row * L + a];
        if (i < 0) continue;
        if (int64_t(I.size()) + L > max_pairs) emit();
        for (int64_t c = 0; c < L; c++) {
          const int64_t j = tiles.atoms[tiles.nbr[n] * L + c];
          if (j < 0) continue;
          double r2 = 0.0;
          for (int d = 0; d < 3; d++) r2 += (p[3 * i + d] - p[3 * j + d]) * (p[3 * i + d] - p[3 * j + d]);
          if (r_max > 0.0 && r2 > 0.0 && r2 >= r_max * r_max) continue;   // S = 0 (r = 0: 1)
          I.push_back(i);
          J.push_back(j);
        }
      }
  emit();
}

// elements of one chunk's per-pair tensors in the ATen form: 32 MB in float32
constexpr int64_t kAtenChunkElements = int64_t(1) << 23;

// pairs per chunk: its (pairs, C·D) products and (pairs, V) values within kAtenChunkElements
int64_t chunk_pairs(const Tensor &q, const Tensor &val)
{
  const int64_t width = std::max<int64_t>({1, q.size(1) * q.size(2), val.size(1)});
  return std::max<int64_t>(efa::kPairLanes, kAtenChunkElements / width);
}

// memory of the fused pair loops' column sums (the shares' partner terms), bytes:
// MLIP_ATTN_PAIR_COLUMNS_MB (default 256); fewer shares (threads) beyond it, one at least
int64_t column_bytes()
{
  const char *mb = std::getenv("MLIP_ATTN_PAIR_COLUMNS_MB");
  return int64_t(std::max(0LL, mb ? std::atoll(mb) : 256LL)) << 20;
}

Tensor sinc_sq(const Tensor &x2)
{
  const Tensor small = x2 < 1e-4;
  const Tensor x = at::sqrt(at::where(small, at::ones_like(x2), x2));
  const Tensor series = 1.0 - x2 / 6.0 + x2 * x2 / 120.0 - x2 * x2 * x2 / 5040.0;
  return at::where(small, series, at::sin(x) / x);
}

// Σ over the pairs (I, J) of A_IJ v_J into rows I of y (N, V): the ATen form of one chunk
Tensor pairs_aten_add(const Tensor &y, const Tensor &q, const Tensor &k, const Tensor &val,
                      const Tensor &positions, const Tensor &omega, double r_max,
                      const Tensor &I, const Tensor &J)
{
  const int64_t E = I.size(0), C = q.size(1), D = q.size(2);
  const Tensor qk = (q.index_select(0, I) * k.index_select(0, J))
                        .reshape({E, C, D / 2, 2}).sum(at::IntArrayRef{1, 3});   // (E, K)
  const Tensor diff = positions.index_select(0, I) - positions.index_select(0, J);
  const Tensor r2 = (diff * diff).sum(-1);
  const Tensor w = omega.to(q.options());
  Tensor att = (sinc_sq(r2.unsqueeze(-1) * w * w) * qk).sum(-1);        // (E,)
  if (r_max > 0.0) {
    const Tensor r = at::sqrt(at::where(r2 > 0, r2, at::ones_like(r2)));
    const Tensor t = ((r - 0.5 * r_max) / (0.5 * r_max)).clamp(0.0, 1.0);
    const Tensor S = 1.0 - t * t * t * (t * (6.0 * t - 15.0) + 10.0);
    att = att * at::where(r2 > 0, S, at::ones_like(S));
  }
  return y.index_add(0, I, att.unsqueeze(-1) * val.index_select(0, J));
}

// the ATen form (devices without the fused loops, or channels beyond them): differentiable,
// over chunks of the pair list
Tensor pairs_aten(const Tensor &q, const Tensor &k, const Tensor &val, const Tensor &positions,
                  const Tensor &batch, const Tensor &omega, double r_max)
{
  Tensor y = at::zeros({q.size(0), val.size(1)}, val.options());
  auto add = [&](const Tensor &I, const Tensor &J) {
    y = pairs_aten_add(y, q, k, val, positions, omega, r_max, I, J);
  };
  for_pair_chunks(positions, batch, r_max, chunk_pairs(q, val), add);
  return y;
}

variable_list aten_gradients(const std::function<Tensor(const variable_list &)> &forward,
                             const variable_list &inputs, const Tensor &grad,
                             const std::vector<bool> &needs, bool create_graph);

// the ATen form's first derivatives (not differentiable), chunk by chunk: each chunk's graph is
// freed before the next, so memory stays at one chunk's
variable_list pairs_aten_gradients(const Tensor &g_y, const Tensor &q, const Tensor &k,
                                   const Tensor &val, const Tensor &positions,
                                   const Tensor &batch, const Tensor &omega, double r_max,
                                   const std::vector<bool> &needs)
{
  const variable_list inputs{q, k, val, positions};
  variable_list total(4);
  auto add = [&](const Tensor &I, const Tensor &J) {
    const variable_list g = aten_gradients(
        [&](const variable_list &in) {
          return pairs_aten_add(at::zeros({in[0].size(0), in[2].size(1)}, in[2].options()),
                                in[0], in[1], in[2], in[3], omega, r_max, I, J);
        },
        inputs, g_y, needs, false);
    for (size_t a = 0; a < 4; a++)
      if (g[a].defined()) total[a] = total[a].defined() ? total[a] + g[a] : g[a];
  };
  for_pair_chunks(positions, batch, r_max, chunk_pairs(q, val), add);
  for (size_t a = 0; a < 4; a++)   // no pairs: zero gradients
    if (needs[a] && !total[a].defined()) total[a] = at::zeros_like(inputs[a]);
  return total;
}

// ------------------------------------------------------------------ the ops' kernels

Tensor rotate_forward(const Tensor &x, const Tensor &centred, const Tensor &dirs,
                      const Tensor &omega, const Tensor &scale)
{
  TORCH_CHECK(x.dim() == 3 && x.size(2) % 2 == 0 && centred.dim() == 2 && centred.size(1) == 3
                  && dirs.dim() == 2 && dirs.size(1) == 3 && omega.numel() == x.size(2) / 2
                  && scale.numel() == dirs.size(0),
              "mlip_attn::efa_rotate: x (N, C, 2K), centred (N, 3), directions (G, 3), omega "
              "(K,), scale (G,), got ", x.sizes(), ", ", centred.sizes(), ", ", dirs.sizes(),
              ", ", omega.sizes(), ", ", scale.sizes());
  if (!fused(x)) return rotate_aten(x, centred, dirs, omega, scale);
  const Tensor xc = x.contiguous(), rc = centred.to(x.dtype()).contiguous();
  const std::vector<double> u = doubles(dirs), s = doubles(scale);
  const efa::Frequencies freq(doubles(omega));
  const int64_t N = x.size(0), G = dirs.size(0), C = x.size(1), D = x.size(2);
  Tensor out = at::empty({N, G * C * D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "efa_rotate", [&] {
    efa::Rotation<scalar_t> rot{xc.data_ptr<scalar_t>(), rc.data_ptr<scalar_t>(), u.data(),
                                s.data(), &freq, G, C, D};
    scalar_t *o = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) { efa::rotate_forward(rot, b, e, o); });
  });
  return out;
}

// Autograd back on for a scope: a backward op runs below autograd (the dispatcher excludes its
// keys), and the ATen form must record a graph to be differentiated
struct AutogradOn {
  c10::impl::LocalDispatchKeySet saved;
  AutogradOn() : saved(c10::impl::tls_local_dispatch_key_set())
  {
    c10::impl::LocalDispatchKeySet now = saved;
    now.excluded_ = now.excluded_ - c10::autograd_dispatch_keyset_with_ADInplaceOrView;
    c10::impl::_force_tls_local_dispatch_key_set(now);
  }
  ~AutogradOn() { c10::impl::_force_tls_local_dispatch_key_set(saved); }
};

// first derivatives by differentiating the ATen form (non-CPU devices, > 64 frequencies, and
// second derivatives with create_graph)
variable_list aten_gradients(const std::function<Tensor(const variable_list &)> &forward,
                             const variable_list &inputs, const Tensor &grad,
                             const std::vector<bool> &needs, bool create_graph)
{
  variable_list leaves;
  std::vector<size_t> where;
  for (size_t a = 0; a < inputs.size(); a++) {
    if (create_graph) {
      // a view of each input: the gradient with respect to it counts only the direct paths
      // from the output (not those through the other inputs' history, e.g. positions → q),
      // and stays connected to the input for the next derivative
      leaves.push_back(inputs[a].requires_grad() ? inputs[a].view_as(inputs[a]) : inputs[a]);
    } else {
      leaves.push_back(inputs[a].detach().requires_grad_(needs[a]));
    }
    if (needs[a] && leaves[a].requires_grad()) where.push_back(a);
  }
  variable_list out(inputs.size());
  if (where.empty()) return out;
  at::AutoGradMode grad_mode(true);
  AutogradOn autograd_on;
  const Tensor y = forward(leaves);
  variable_list wrt;
  for (size_t a : where) wrt.push_back(leaves[a]);
  const variable_list g = torch::autograd::grad({y}, wrt, {grad}, true, create_graph, true);
  for (size_t w = 0; w < where.size(); w++) out[where[w]] = g[w];
  return out;
}

std::tuple<Tensor, Tensor> rotate_backward(const Tensor &grad, const Tensor &x,
                                           const Tensor &centred, const Tensor &dirs,
                                           const Tensor &omega, const Tensor &scale,
                                           at::IntArrayRef needs)
{
  TORCH_CHECK(needs.size() == 2, "mlip_attn::efa_rotate_backward: needs (x, centred), got ",
              needs.size(), " entries");
  const Tensor empty = at::empty({0}, x.options());
  if (!fused(x)) {
    const variable_list g = aten_gradients(
        [&](const variable_list &in) { return rotate_aten(in[0], in[1], dirs, omega, scale); },
        {x, centred}, grad, {needs[0] != 0, needs[1] != 0}, false);
    return {g[0].defined() ? g[0] : empty, g[1].defined() ? g[1] : empty};
  }
  const Tensor xc = x.contiguous(), rc = centred.to(x.dtype()).contiguous();
  const Tensor gc = grad.to(x.dtype()).contiguous();
  const std::vector<double> u = doubles(dirs), s = doubles(scale);
  const efa::Frequencies freq(doubles(omega));
  const int64_t N = x.size(0), G = dirs.size(0), C = x.size(1), D = x.size(2);
  Tensor g_x = needs[0] ? at::empty_like(xc) : empty;
  Tensor g_r = needs[1] ? at::empty({N, 3}, x.options()) : empty;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "efa_rotate_backward", [&] {
    efa::Rotation<scalar_t> rot{xc.data_ptr<scalar_t>(), rc.data_ptr<scalar_t>(), u.data(),
                                s.data(), &freq, G, C, D};
    const scalar_t *go = gc.data_ptr<scalar_t>();
    scalar_t *px = needs[0] ? g_x.data_ptr<scalar_t>() : nullptr;
    scalar_t *pr = needs[1] ? g_r.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
      efa::rotate_backward(rot, b, e, go, px, pr);
    });
  });
  return {g_x, needs[1] ? g_r.to(centred.dtype()) : empty};
}

template <typename T>
efa::Pairs<T> pairs_of(const Tensor &q, const Tensor &k, const Tensor &val, const Tensor &pos,
                       const Tensor &batch, const efa::Frequencies &freq, double r_max)
{
  return efa::Pairs<T>{q.data_ptr<T>(), k.data_ptr<T>(), val.data_ptr<T>(), pos.data_ptr<T>(),
                       batch.data_ptr<int64_t>(), &freq, r_max, q.size(1), q.size(2),
                       val.size(1)};
}

void check_pairs(const Tensor &q, const Tensor &k, const Tensor &val, const Tensor &positions,
                 const Tensor &batch, const Tensor &omega)
{
  TORCH_CHECK(q.dim() == 3 && q.size(2) % 2 == 0 && k.sizes() == q.sizes() && val.dim() == 2
                  && val.size(0) == q.size(0) && positions.dim() == 2
                  && positions.size(0) == q.size(0) && positions.size(1) == 3
                  && batch.dim() == 1 && batch.size(0) == q.size(0)
                  && omega.numel() == q.size(2) / 2,
              "mlip_attn::efa_pair_attention: q, k (N, C, 2K), val (N, V), positions (N, 3), "
              "batch (N,), omega (K,), got ", q.sizes(), ", ", k.sizes(), ", ", val.sizes(),
              ", ", positions.sizes(), ", ", batch.sizes(), ", ", omega.sizes());
  TORCH_CHECK(q.size(1) * q.size(2) <= 1024, "mlip_attn::efa_pair_attention: at most 1,024 "
              "query channels per atom, got ", q.size(1) * q.size(2));
  TORCH_CHECK(batch.numel() == 0 || batch.min().item<int64_t>() >= 0,
              "mlip_attn::efa_pair_attention: batch entries must be >= 0");
}

Tensor pairs_forward(const Tensor &q, const Tensor &k, const Tensor &val,
                     const Tensor &positions, const Tensor &batch, const Tensor &omega,
                     double r_max)
{
  check_pairs(q, k, val, positions, batch, omega);
  if (!fused(q)) return pairs_aten(q, k, val, positions, batch, omega, r_max);
  const Tensor qc = q.contiguous(), kc = k.to(q.dtype()).contiguous();
  const Tensor vc = val.to(q.dtype()).contiguous(), pc = positions.to(q.dtype()).contiguous();
  const Tensor bc = batch.to(at::kLong).contiguous();
  const int64_t N = q.size(0), B = N > 0 ? bc.max().item<int64_t>() + 1 : 0;
  const efa::Frequencies freq(doubles(omega));
  Tensor y = at::empty({N, val.size(1)}, q.options());   // every row written by its tile
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "efa_pair_attention", [&] {
    const auto p = pairs_of<scalar_t>(qc, kc, vc, pc, bc, freq, r_max);
    const int64_t V = val.size(1), slot = V * efa::kPairLanes;
    const auto tiles = efa::plan_pair_tiles<scalar_t>(
        p, N, B, nullptr, at::get_num_threads(),
        column_bytes() / std::max<int64_t>(1, slot * int64_t(sizeof(scalar_t))));
    std::unique_ptr<scalar_t[]> columns(new scalar_t[tiles.slots * slot]);   // zeroed per share
    scalar_t *out = y.data_ptr<scalar_t>();
    at::parallel_for(0, int64_t(tiles.share_start.size()) - 1, 1, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; s++) efa::pairs_forward(p, tiles, s, out, columns.get());
    });
    at::parallel_for(0, tiles.count, 1, [&](int64_t b, int64_t e) {   // the partners' sums
      efa::add_column_sums(tiles, columns.get(), V, 0, V, b, e, out);
    });
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> pairs_backward(
    const Tensor &g_y, const Tensor &q, const Tensor &k, const Tensor &val,
    const Tensor &positions, const Tensor &batch, const Tensor &omega, double r_max,
    at::IntArrayRef needs)
{
  TORCH_CHECK(needs.size() == 4, "mlip_attn::efa_pair_attention_backward: needs (q, k, val, "
              "positions), got ", needs.size(), " entries");
  check_pairs(q, k, val, positions, batch, omega);
  const Tensor empty = at::empty({0}, q.options());
  if (!fused(q)) {
    const variable_list g = pairs_aten_gradients(
        g_y, q, k, val, positions, batch, omega, r_max,
        {needs[0] != 0, needs[1] != 0, needs[2] != 0, needs[3] != 0});
    return {g[0].defined() ? g[0] : empty, g[1].defined() ? g[1] : empty,
            g[2].defined() ? g[2] : empty, g[3].defined() ? g[3] : empty};
  }
  const Tensor qc = q.contiguous(), kc = k.to(q.dtype()).contiguous();
  const Tensor vc = val.to(q.dtype()).contiguous(), pc = positions.to(q.dtype()).contiguous();
  const Tensor gc = g_y.to(q.dtype()).contiguous(), bc = batch.to(at::kLong).contiguous();
  const int64_t N = q.size(0), B = N > 0 ? bc.max().item<int64_t>() + 1 : 0;
  const efa::Frequencies freq(doubles(omega));
  const int64_t P = q.size(1) * q.size(2);
  auto rows = [&](int64_t need, int64_t width) {   // every row written by its tile
    return need ? at::empty({N, width}, q.options()) : empty;
  };
  Tensor g_q = rows(needs[0], P), g_k = rows(needs[1], P), g_v = rows(needs[2], val.size(1));
  Tensor g_p = rows(needs[3], 3);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "efa_pair_attention_backward", [&] {
    const auto p = pairs_of<scalar_t>(qc, kc, vc, pc, bc, freq, r_max);
    const scalar_t *gy = gc.data_ptr<scalar_t>();
    auto ptr = [&](Tensor &x, int64_t need) { return need ? x.data_ptr<scalar_t>() : nullptr; };
    scalar_t *gq = ptr(g_q, needs[0]), *gk = ptr(g_k, needs[1]), *gv = ptr(g_v, needs[2]),
             *gp = ptr(g_p, needs[3]);
    // the column sums of the wanted gradients, [g_q | g_k | g_val] (efa_kernels.h)
    const int64_t L = efa::kPairLanes, V = val.size(1);
    const int64_t at_k = gq ? P : 0, at_v = at_k + (gk ? P : 0), W = at_v + (gv ? V : 0);
    const int64_t slot_bytes = W * L * int64_t(sizeof(scalar_t)) + (gp ? 3 * L * 8 : 0);
    const int64_t max_slots = column_bytes() / std::max<int64_t>(1, slot_bytes);
    const auto tiles =
        efa::plan_pair_tiles<scalar_t>(p, N, B, gy, at::get_num_threads(), max_slots);
    std::unique_ptr<scalar_t[]> columns(new scalar_t[tiles.slots * W * L]);   // zeroed per share
    std::unique_ptr<double[]> column_positions(new double[gp ? tiles.slots * 3 * L : 0]);
    at::parallel_for(0, int64_t(tiles.share_start.size()) - 1, 1, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; s++)
        efa::pairs_backward(p, tiles, s, gy, gq, gk, gv, gp, columns.get(),
                            column_positions.get());
    });
    at::parallel_for(0, tiles.count, 1, [&](int64_t b, int64_t e) {   // the partners' sums
      if (gq) efa::add_column_sums(tiles, columns.get(), W, 0, P, b, e, gq);
      if (gk) efa::add_column_sums(tiles, columns.get(), W, at_k, P, b, e, gk);
      if (gv) efa::add_column_sums(tiles, columns.get(), W, at_v, V, b, e, gv);
      if (gp) efa::add_column_sums(tiles, column_positions.get(), 3, 0, 3, b, e, gp);
    });
  });
  auto shaped = [&](const Tensor &x, int64_t need) { return need ? x.view(q.sizes()) : empty; };
  return {shaped(g_q, needs[0]), shaped(g_k, needs[1]), needs[2] ? g_v : empty,
          needs[3] ? g_p.to(positions.dtype()) : empty};
}

// ------------------------------------------------------------------ the Lebedev form's grid
// sums with the rotation fused in (efa_kernels.h, Grid): S (B, P, V) and y (N, V)

// ATen form of the rotation in the grid sums' layout [c][t][k][g] (N, 2·C·K·G)
Tensor grid_rotate_aten(const Tensor &x, const Tensor &centred, const Tensor &dirs,
                        const Tensor &omega, const Tensor &scale)
{
  const auto o = x.options();
  const int64_t n = x.size(0), c = x.size(1), d = x.size(2), G = dirs.size(0);
  const Tensor t = at::matmul(centred.to(o), dirs.to(o).t());          // (N, G)
  const Tensor theta = t.unsqueeze(-1) * omega.to(o);                 // (N, G, K)
  const Tensor s = scale.to(o).view({1, -1, 1});
  const Tensor cos = (at::cos(theta) * s).transpose(1, 2).unsqueeze(1);   // (N, 1, K, G)
  const Tensor sin = (at::sin(theta) * s).transpose(1, 2).unsqueeze(1);
  const Tensor pairs = x.reshape({n, c, d / 2, 1, 2});
  const Tensor a = pairs.select(-1, 0), b = pairs.select(-1, 1);     // (N, C, K, 1)
  return at::stack({a * cos - b * sin, a * sin + b * cos}, 2).reshape({n, c * 2 * G * (d / 2)});
}

// S_b = Σ_{n in b} R(k_n)ᵀ val_n, (B, P, V)
Tensor grid_sums_aten(const Tensor &k, const Tensor &centred, const Tensor &dirs,
                      const Tensor &omega, const Tensor &scale, const Tensor &val,
                      const Tensor &batch, int64_t num_graphs)
{
  const Tensor R = grid_rotate_aten(k, centred, dirs, omega, scale);
  const int64_t N = k.size(0), P = R.size(1), V = val.size(1);
  const Tensor onehot = at::one_hot(batch.to(at::kLong), num_graphs).to(val.dtype());   // (N, B)
  const Tensor w = (onehot.unsqueeze(-1) * val.unsqueeze(1)).reshape({N, num_graphs * V});
  return at::matmul(R.t(), w).view({P, num_graphs, V}).permute({1, 0, 2});
}

// y_n = R(q_n) S_{b(n)}, (N, V)
Tensor grid_apply_aten(const Tensor &q, const Tensor &centred, const Tensor &dirs,
                       const Tensor &omega, const Tensor &scale, const Tensor &sums,
                       const Tensor &batch)
{
  const Tensor R = grid_rotate_aten(q, centred, dirs, omega, scale);
  const int64_t N = q.size(0), P = R.size(1), B = sums.size(0), V = sums.size(2);
  const Tensor y = at::matmul(R, sums.permute({1, 0, 2}).reshape({P, B * V})).view({N, B, V});
  return y.gather(1, batch.to(at::kLong).view({N, 1, 1}).expand({N, 1, V})).squeeze(1);
}

void check_grid(const char *op, const Tensor &x, const Tensor &centred, const Tensor &dirs,
                const Tensor &omega, const Tensor &scale, const Tensor &batch)
{
  TORCH_CHECK(x.dim() == 3 && x.size(2) % 2 == 0 && centred.dim() == 2
                  && centred.size(0) == x.size(0) && centred.size(1) == 3 && dirs.dim() == 2
                  && dirs.size(1) == 3 && omega.numel() == x.size(2) / 2
                  && scale.numel() == dirs.size(0) && batch.dim() == 1
                  && batch.size(0) == x.size(0),
              "mlip_attn::", op, ": x (N, C, 2K), centred (N, 3), directions (G, 3), omega "
              "(K,), scale (G,), batch (N,), got ", x.sizes(), ", ", centred.sizes(), ", ",
              dirs.sizes(), ", ", omega.sizes(), ", ", scale.sizes(), ", ", batch.sizes());
}

int64_t grid_width(const Tensor &x, const Tensor &dirs)
{
  return 2 * x.size(1) * dirs.size(0) * (x.size(2) / 2);
}

constexpr int64_t kTile = 64;   // atoms per tile: their rotated rows (64 × P) stay in L2

// runs of at most kTile consecutive atoms of one structure: (begin, end, structure)
std::vector<std::array<int64_t, 3>> grid_tiles(const Tensor &batch, int64_t num_graphs)
{
  const int64_t N = batch.size(0), *b = batch.data_ptr<int64_t>();
  std::vector<std::array<int64_t, 3>> tiles;
  for (int64_t start = 0; start < N;) {
    TORCH_CHECK(b[start] >= 0 && b[start] < num_graphs, "mlip_attn::efa_grid: batch entries "
                "must be in [0, ", num_graphs, "), got ", b[start]);
    int64_t end = start + 1;
    while (end < N && end - start < kTile && b[end] == b[start]) end++;
    tiles.push_back({start, end, b[start]});
    start = end;
  }
  return tiles;
}

// the inputs of the grid loops: contiguous, in x's dtype, the grid in float64
struct GridInputs {
  Tensor x, centred, batch;
  std::vector<double> dirs, scale;
  efa::Frequencies freq;
  GridInputs(const Tensor &x_, const Tensor &centred_, const Tensor &dirs_, const Tensor &omega_,
             const Tensor &scale_, const Tensor &batch_)
      : x(x_.contiguous()), centred(centred_.to(x_.dtype()).contiguous()),
        batch(batch_.to(at::kLong).contiguous()), dirs(doubles(dirs_)), scale(doubles(scale_)),
        freq(doubles(omega_))
  {
  }
  template <typename T> efa::Rotation<T> grid() const
  {
    return efa::Rotation<T>{x.data_ptr<T>(), centred.data_ptr<T>(), dirs.data(), scale.data(),
                            &freq, int64_t(scale.size()), x.size(1), x.size(2)};
  }
};

Tensor grid_sums_forward(const Tensor &k, const Tensor &centred, const Tensor &dirs,
                         const Tensor &omega, const Tensor &scale, const Tensor &val,
                         const Tensor &batch, int64_t num_graphs)
{
  check_grid("efa_grid_sums", k, centred, dirs, omega, scale, batch);
  TORCH_CHECK(val.dim() == 2 && val.size(0) == k.size(0) && num_graphs >= 0,
              "mlip_attn::efa_grid_sums: val (N, V) and num_graphs >= 0, got ", val.sizes(),
              ", ", num_graphs);
  if (!fused(k)) return grid_sums_aten(k, centred, dirs, omega, scale, val, batch, num_graphs);
  const GridInputs in(k, centred, dirs, omega, scale, batch);
  const Tensor vc = val.to(k.dtype()).contiguous();
  const int64_t P = grid_width(k, dirs), V = val.size(1), slots = at::get_num_threads();
  const auto tiles = grid_tiles(in.batch, num_graphs);
  Tensor S = at::zeros({slots, num_graphs, P, V}, k.options());   // one buffer per thread
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "efa_grid_sums", [&] {
    const auto grid = in.grid<scalar_t>();
    at::parallel_for(0, int64_t(tiles.size()), 1, [&](int64_t t0, int64_t t1) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;   // as the caller, on every thread
      const Tensor rows = at::empty({kTile, P}, k.options()), mine = S[at::get_thread_num()];
      for (int64_t t = t0; t < t1; t++) {
        const auto [b, e, g] = tiles[t];
        efa::grid_rotate(grid, b, e, rows.data_ptr<scalar_t>());
        mine[g].addmm_(rows.narrow(0, 0, e - b).t(), vc.narrow(0, b, e - b));
      }
    });
  });
  return slots == 1 ? S[0] : S.sum(0);
}

Tensor grid_apply_forward(const Tensor &q, const Tensor &centred, const Tensor &dirs,
                          const Tensor &omega, const Tensor &scale, const Tensor &sums,
                          const Tensor &batch)
{
  check_grid("efa_grid_apply", q, centred, dirs, omega, scale, batch);
  TORCH_CHECK(sums.dim() == 3 && sums.size(1) == grid_width(q, dirs),
              "mlip_attn::efa_grid_apply: sums (B, ", grid_width(q, dirs), ", V), got ",
              sums.sizes());
  if (!fused(q)) return grid_apply_aten(q, centred, dirs, omega, scale, sums, batch);
  const GridInputs in(q, centred, dirs, omega, scale, batch);
  const Tensor Sc = sums.to(q.dtype()).contiguous();
  const int64_t P = Sc.size(1);
  const auto tiles = grid_tiles(in.batch, Sc.size(0));
  Tensor y = at::empty({q.size(0), Sc.size(2)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "efa_grid_apply", [&] {
    const auto grid = in.grid<scalar_t>();
    at::parallel_for(0, int64_t(tiles.size()), 1, [&](int64_t t0, int64_t t1) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;   // as the caller, on every thread
      const Tensor rows = at::empty({kTile, P}, q.options());
      for (int64_t t = t0; t < t1; t++) {
        const auto [b, e, g] = tiles[t];
        efa::grid_rotate(grid, b, e, rows.data_ptr<scalar_t>());
        Tensor out = y.narrow(0, b, e - b);
        at::mm_out(out, rows.narrow(0, 0, e - b), Sc[g]);
      }
    });
  });
  return y;
}

// The tiles of a grid op's backward: per tile, the gradient of its rotated rows g_R = w Mt_b
// (w (N, V), Mt (B, V, P)) taken back through the rotation into g_x, g_centred (nullptr: not
// wanted); with `rows_wanted`, the tile's rotated rows R (e − b, P) (from the same cos/sin) are
// handed to `use_rows` with the tile's atoms [b, e) and structure
using Tiles = std::vector<std::array<int64_t, 3>>;
using RowsUse = std::function<void(const Tensor &, int64_t, int64_t, int64_t)>;

template <typename T>
void grid_backward_tiles(const efa::Rotation<T> &grid, const Tiles &tiles, const Tensor &w,
                         const Tensor &Mt, int64_t P, T *g_x, T *g_centred, bool rows_wanted,
                         const RowsUse &use_rows)
{
  at::parallel_for(0, int64_t(tiles.size()), 1, [&](int64_t t0, int64_t t1) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;   // as the caller, on every thread
    Tensor rows = at::empty({kTile, P}, w.options()), scratch = at::empty_like(rows);
    for (int64_t t = t0; t < t1; t++) {
      const auto [b, e, g] = tiles[t];
      T *pR = rows_wanted ? rows.data_ptr<T>() : nullptr;
      if (g_x || g_centred) {
        Tensor g_rows = scratch.narrow(0, 0, e - b);
        at::mm_out(g_rows, w.narrow(0, b, e - b), Mt[g]);
        efa::grid_rotate_backward(grid, b, e, scratch.data_ptr<T>(), g_x, g_centred, pR);
      } else if (pR) {
        efa::grid_rotate(grid, b, e, pR);
      }
      if (pR) use_rows(rows.narrow(0, 0, e - b), b, e, g);
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> grid_apply_backward(
    const Tensor &g_y, const Tensor &q, const Tensor &centred, const Tensor &dirs,
    const Tensor &omega, const Tensor &scale, const Tensor &sums, const Tensor &batch,
    at::IntArrayRef needs)
{
  TORCH_CHECK(needs.size() == 3, "mlip_attn::efa_grid_apply_backward: needs (q, centred, "
              "sums), got ", needs.size(), " entries");
  check_grid("efa_grid_apply_backward", q, centred, dirs, omega, scale, batch);
  const Tensor empty = at::empty({0}, q.options());
  if (!fused(q)) {
    const variable_list g = aten_gradients(
        [&](const variable_list &in) {
          return grid_apply_aten(in[0], in[1], dirs, omega, scale, in[2], batch);
        },
        {q, centred, sums}, g_y, {needs[0] != 0, needs[1] != 0, needs[2] != 0}, false);
    return {g[0].defined() ? g[0] : empty, g[1].defined() ? g[1] : empty,
            g[2].defined() ? g[2] : empty};
  }
  const GridInputs in(q, centred, dirs, omega, scale, batch);
  const Tensor gy = g_y.to(q.dtype()).contiguous();
  // (B, V, P) as a transposed view: MKL takes the transpose, no copy of S
  const Tensor St = sums.to(q.dtype()).contiguous().transpose(1, 2);
  const int64_t N = q.size(0), B = St.size(0), P = St.size(2), slots = at::get_num_threads();
  const auto tiles = grid_tiles(in.batch, B);
  Tensor g_q = needs[0] ? at::empty_like(in.x) : empty;
  Tensor g_r = needs[1] ? at::empty({N, 3}, q.options()) : empty;
  Tensor g_S = needs[2] ? at::zeros({slots, B, P, St.size(1)}, q.options()) : empty;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "efa_grid_apply_backward", [&] {
    grid_backward_tiles<scalar_t>(
        in.grid<scalar_t>(), tiles, gy, St, P, needs[0] ? g_q.data_ptr<scalar_t>() : nullptr,
        needs[1] ? g_r.data_ptr<scalar_t>() : nullptr, needs[2] != 0,
        [&](const Tensor &R, int64_t b, int64_t e, int64_t g) {   // g_S_b += R(q)ᵀ g_y
          g_S[at::get_thread_num()][g].addmm_(R.t(), gy.narrow(0, b, e - b));
        });
  });
  return {g_q, needs[1] ? g_r.to(centred.dtype()) : empty,
          !needs[2] ? empty : (slots == 1 ? g_S[0] : g_S.sum(0)).to(sums.dtype())};
}

std::tuple<Tensor, Tensor, Tensor> grid_sums_backward(
    const Tensor &g_sums, const Tensor &k, const Tensor &centred, const Tensor &dirs,
    const Tensor &omega, const Tensor &scale, const Tensor &val, const Tensor &batch,
    at::IntArrayRef needs)
{
  TORCH_CHECK(needs.size() == 3, "mlip_attn::efa_grid_sums_backward: needs (k, centred, val), "
              "got ", needs.size(), " entries");
  check_grid("efa_grid_sums_backward", k, centred, dirs, omega, scale, batch);
  const Tensor empty = at::empty({0}, k.options());
  if (!fused(k)) {
    const int64_t B = g_sums.size(0);
    const variable_list g = aten_gradients(
        [&](const variable_list &in) {
          return grid_sums_aten(in[0], in[1], dirs, omega, scale, in[2], batch, B);
        },
        {k, centred, val}, g_sums, {needs[0] != 0, needs[1] != 0, needs[2] != 0}, false);
    return {g[0].defined() ? g[0] : empty, g[1].defined() ? g[1] : empty,
            g[2].defined() ? g[2] : empty};
  }
  const GridInputs in(k, centred, dirs, omega, scale, batch);
  const Tensor gS = g_sums.to(k.dtype()).contiguous(), vc = val.to(k.dtype()).contiguous();
  const Tensor gSt = gS.transpose(1, 2);   // (B, V, P), a view: MKL takes the transpose
  const int64_t N = k.size(0), P = gS.size(1);
  const auto tiles = grid_tiles(in.batch, gS.size(0));
  Tensor g_k = needs[0] ? at::empty_like(in.x) : empty;
  Tensor g_r = needs[1] ? at::empty({N, 3}, k.options()) : empty;
  Tensor g_v = needs[2] ? at::empty({N, gS.size(2)}, k.options()) : empty;
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "efa_grid_sums_backward", [&] {
    grid_backward_tiles<scalar_t>(
        in.grid<scalar_t>(), tiles, vc, gSt, P, needs[0] ? g_k.data_ptr<scalar_t>() : nullptr,
        needs[1] ? g_r.data_ptr<scalar_t>() : nullptr, needs[2] != 0,
        [&](const Tensor &R, int64_t b, int64_t e, int64_t g) {   // g_val = R(k) g_S_b
          Tensor out = g_v.narrow(0, b, e - b);
          at::mm_out(out, R, gS[g]);
        });
  });
  return {g_k, needs[1] ? g_r.to(centred.dtype()) : empty,
          needs[2] ? g_v.to(val.dtype()) : empty};
}

// ------------------------------------------------------------------ autograd

struct EfaRotate : public torch::autograd::Function<EfaRotate> {
  static Tensor forward(AutogradContext *ctx, Tensor x, Tensor centred, Tensor dirs, Tensor omega,
                        Tensor scale)
  {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::efa_rotate", "")
                         .typed<Tensor(const Tensor &, const Tensor &, const Tensor &,
                                       const Tensor &, const Tensor &)>();
    ctx->save_for_backward({x, centred, dirs, omega, scale});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(x, centred, dirs, omega, scale);
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    const auto s = ctx->get_saved_variables();
    const std::vector<bool> needs{ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    variable_list result(5);
    if (!grads[0].defined()) return result;
    if (at::GradMode::is_enabled()) {   // create_graph: a differentiable backward
      const variable_list g = aten_gradients(
          [&](const variable_list &in) { return rotate_aten(in[0], in[1], s[2], s[3], s[4]); },
          {s[0], s[1]}, grads[0], needs, true);
      result[0] = g[0];
      result[1] = g[1];
      return result;
    }
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::efa_rotate_backward", "")
                         .typed<std::tuple<Tensor, Tensor>(
                             const Tensor &, const Tensor &, const Tensor &, const Tensor &,
                             const Tensor &, const Tensor &, at::IntArrayRef)>();
    std::tuple<Tensor, Tensor> g;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      g = op.call(grads[0], s[0], s[1], s[2], s[3], s[4],
                  std::vector<int64_t>{needs[0], needs[1]});
    }
    if (needs[0]) result[0] = std::get<0>(g);
    if (needs[1]) result[1] = std::get<1>(g);
    return result;
  }
};

struct EfaPairs : public torch::autograd::Function<EfaPairs> {
  static Tensor forward(AutogradContext *ctx, Tensor q, Tensor k, Tensor val, Tensor positions,
                        Tensor batch, Tensor omega, double r_max)
  {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::efa_pair_attention", "")
                         .typed<Tensor(const Tensor &, const Tensor &, const Tensor &,
                                       const Tensor &, const Tensor &, const Tensor &, double)>();
    ctx->save_for_backward({q, k, val, positions, batch, omega});
    ctx->saved_data["r_max"] = r_max;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(q, k, val, positions, batch, omega, r_max);
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    const auto s = ctx->get_saved_variables();
    const double r_max = ctx->saved_data["r_max"].toDouble();
    const std::vector<bool> needs{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                  ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
    variable_list result(7);
    if (!grads[0].defined()) return result;
    if (at::GradMode::is_enabled()) {   // create_graph: a differentiable backward
      const variable_list g = aten_gradients(
          [&](const variable_list &in) {
            return pairs_aten(in[0], in[1], in[2], in[3], s[4], s[5], r_max);
          },
          {s[0], s[1], s[2], s[3]}, grads[0], needs, true);
      for (int a = 0; a < 4; a++) result[a] = g[a];
      return result;
    }
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::efa_pair_attention_backward", "")
                         .typed<std::tuple<Tensor, Tensor, Tensor, Tensor>(
                             const Tensor &, const Tensor &, const Tensor &, const Tensor &,
                             const Tensor &, const Tensor &, const Tensor &, double,
                             at::IntArrayRef)>();
    std::tuple<Tensor, Tensor, Tensor, Tensor> g;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      g = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], r_max,
                  std::vector<int64_t>{needs[0], needs[1], needs[2], needs[3]});
    }
    if (needs[0]) result[0] = std::get<0>(g);
    if (needs[1]) result[1] = std::get<1>(g);
    if (needs[2]) result[2] = std::get<2>(g);
    if (needs[3]) result[3] = std::get<3>(g);
    return result;
  }
};

Tensor rotate_autograd(const Tensor &x, const Tensor &centred, const Tensor &dirs,
                       const Tensor &omega, const Tensor &scale)
{
  return EfaRotate::apply(x, centred, dirs, omega, scale);
}

Tensor pairs_autograd(const Tensor &q, const Tensor &k, const Tensor &val,
                      const Tensor &positions, const Tensor &batch, const Tensor &omega,
                      double r_max)
{
  return EfaPairs::apply(q, k, val, positions, batch, omega, r_max);
}

// The backward of a grid op (saved: x, centred, directions, omega, scale, w, batch; w = val of
// efa_grid_sums or sums of efa_grid_apply): its backward op `name` (gradients of x, centred and
// w), or, with create_graph, `aten` (the op's differentiable ATen form of x, centred, w)
// differentiated
variable_list grid_op_backward(const char *name, AutogradContext *ctx, const variable_list &grads,
                               const std::function<Tensor(const variable_list &)> &aten)
{
  const auto s = ctx->get_saved_variables();
  const std::vector<bool> needs{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                ctx->needs_input_grad(5)};
  variable_list result(8);
  if (!grads[0].defined()) return result;
  variable_list g(3);
  if (at::GradMode::is_enabled()) {   // create_graph: a differentiable backward
    g = aten_gradients(aten, {s[0], s[1], s[5]}, grads[0], needs, true);
  } else {
    const auto op = c10::Dispatcher::singleton()
                        .findSchemaOrThrow(name, "")
                        .typed<std::tuple<Tensor, Tensor, Tensor>(
                            const Tensor &, const Tensor &, const Tensor &, const Tensor &,
                            const Tensor &, const Tensor &, const Tensor &, const Tensor &,
                            at::IntArrayRef)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(g[0], g[1], g[2]) = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6],
                                         std::vector<int64_t>{needs[0], needs[1], needs[2]});
  }
  if (needs[0]) result[0] = g[0];
  if (needs[1]) result[1] = g[1];
  if (needs[2]) result[5] = g[2];
  return result;
}

struct EfaGridSums : public torch::autograd::Function<EfaGridSums> {
  static Tensor forward(AutogradContext *ctx, Tensor k, Tensor centred, Tensor dirs, Tensor omega,
                        Tensor scale, Tensor val, Tensor batch, int64_t num_graphs)
  {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::efa_grid_sums", "")
                         .typed<Tensor(const Tensor &, const Tensor &, const Tensor &,
                                       const Tensor &, const Tensor &, const Tensor &,
                                       const Tensor &, int64_t)>();
    ctx->save_for_backward({k, centred, dirs, omega, scale, val, batch});
    ctx->saved_data["num_graphs"] = num_graphs;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(k, centred, dirs, omega, scale, val, batch, num_graphs);
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    const auto s = ctx->get_saved_variables();
    const int64_t B = ctx->saved_data["num_graphs"].toInt();
    return grid_op_backward("mlip_attn::efa_grid_sums_backward", ctx, grads,
                            [&](const variable_list &in) {
                              return grid_sums_aten(in[0], in[1], s[2], s[3], s[4], in[2], s[6], B);
                            });
  }
};

struct EfaGridApply : public torch::autograd::Function<EfaGridApply> {
  static Tensor forward(AutogradContext *ctx, Tensor q, Tensor centred, Tensor dirs, Tensor omega,
                        Tensor scale, Tensor sums, Tensor batch)
  {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mlip_attn::efa_grid_apply", "")
                         .typed<Tensor(const Tensor &, const Tensor &, const Tensor &,
                                       const Tensor &, const Tensor &, const Tensor &,
                                       const Tensor &)>();
    ctx->save_for_backward({q, centred, dirs, omega, scale, sums, batch});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(q, centred, dirs, omega, scale, sums, batch);
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    const auto s = ctx->get_saved_variables();
    variable_list result = grid_op_backward(
        "mlip_attn::efa_grid_apply_backward", ctx, grads, [&](const variable_list &in) {
          return grid_apply_aten(in[0], in[1], s[2], s[3], s[4], in[2], s[6]);
        });
    result.resize(7);
    return result;
  }
};

Tensor grid_sums_autograd(const Tensor &k, const Tensor &centred, const Tensor &dirs,
                          const Tensor &omega, const Tensor &scale, const Tensor &val,
                          const Tensor &batch, int64_t num_graphs)
{
  return EfaGridSums::apply(k, centred, dirs, omega, scale, val, batch, num_graphs);
}

Tensor grid_apply_autograd(const Tensor &q, const Tensor &centred, const Tensor &dirs,
                           const Tensor &omega, const Tensor &scale, const Tensor &sums,
                           const Tensor &batch)
{
  return EfaGridApply::apply(q, centred, dirs, omega, scale, sums, batch);
}

// ------------------------------------------------------------------ registration

struct Registration {
  std::unique_ptr<torch::Library> def;
  Registration()
  {
    if (c10::Dispatcher::singleton().findSchema({"mlip_attn::efa_rotate", ""}).has_value())
      return;
    def = std::make_unique<torch::Library>(torch::Library::FRAGMENT, "mlip_attn", std::nullopt,
                                           __FILE__, __LINE__);
    def->def("efa_rotate(Tensor x, Tensor centred, Tensor directions, Tensor omega, "
             "Tensor scale) -> Tensor");
    def->def("efa_rotate_backward(Tensor grad, Tensor x, Tensor centred, Tensor directions, "
             "Tensor omega, Tensor scale, int[] needs) -> (Tensor, Tensor)");
    def->def("efa_pair_attention(Tensor q, Tensor k, Tensor val, Tensor positions, "
             "Tensor batch, Tensor omega, float r_max) -> Tensor");
    def->def("efa_pair_attention_backward(Tensor g_y, Tensor q, Tensor k, Tensor val, "
             "Tensor positions, Tensor batch, Tensor omega, float r_max, int[] needs) -> "
             "(Tensor, Tensor, Tensor, Tensor)");
    def->def("efa_grid_sums(Tensor k, Tensor centred, Tensor directions, Tensor omega, "
             "Tensor scale, Tensor val, Tensor batch, int num_graphs) -> Tensor");
    def->def("efa_grid_sums_backward(Tensor g_sums, Tensor k, Tensor centred, "
             "Tensor directions, Tensor omega, Tensor scale, Tensor val, Tensor batch, "
             "int[] needs) -> (Tensor, Tensor, Tensor)");
    def->def("efa_grid_apply(Tensor q, Tensor centred, Tensor directions, Tensor omega, "
             "Tensor scale, Tensor sums, Tensor batch) -> Tensor");
    def->def("efa_grid_apply_backward(Tensor g_y, Tensor q, Tensor centred, Tensor directions, "
             "Tensor omega, Tensor scale, Tensor sums, Tensor batch, int[] needs) -> "
             "(Tensor, Tensor, Tensor)");
    using c10::DispatchKey;
    def->impl("efa_rotate", torch::dispatch(DispatchKey::Autograd, TORCH_FN(rotate_autograd)));
    def->impl("efa_rotate", torch::dispatch(DispatchKey::CompositeExplicitAutograd,
                                            TORCH_FN(rotate_forward)));
    def->impl("efa_rotate_backward", torch::dispatch(DispatchKey::CompositeExplicitAutograd,
                                                     TORCH_FN(rotate_backward)));
    def->impl("efa_pair_attention",
              torch::dispatch(DispatchKey::Autograd, TORCH_FN(pairs_autograd)));
    def->impl("efa_pair_attention", torch::dispatch(DispatchKey::CompositeExplicitAutograd,
                                                    TORCH_FN(pairs_forward)));
    def->impl("efa_pair_attention_backward",
              torch::dispatch(DispatchKey::CompositeExplicitAutograd, TORCH_FN(pairs_backward)));
    def->impl("efa_grid_sums",
              torch::dispatch(DispatchKey::Autograd, TORCH_FN(grid_sums_autograd)));
    def->impl("efa_grid_sums", torch::dispatch(DispatchKey::CompositeExplicitAutograd,
                                               TORCH_FN(grid_sums_forward)));
    def->impl("efa_grid_sums_backward", torch::dispatch(DispatchKey::CompositeExplicitAutograd,
                                                        TORCH_FN(grid_sums_backward)));
    def->impl("efa_grid_apply",
              torch::dispatch(DispatchKey::Autograd, TORCH_FN(grid_apply_autograd)));
    def->impl("efa_grid_apply", torch::dispatch(DispatchKey::CompositeExplicitAutograd,
                                                TORCH_FN(grid_apply_forward)));
    def->impl("efa_grid_apply_backward", torch::dispatch(DispatchKey::CompositeExplicitAutograd,
                                                         TORCH_FN(grid_apply_backward)));
  }
};

Registration registration;

}    // namespace
