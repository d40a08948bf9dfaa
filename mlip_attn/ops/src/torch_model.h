/* mlip_attn LAMMPS plugin: the torch side, behind a plain C++ interface.
 *
 * This header includes neither torch nor LAMMPS headers: torch_model.cpp (torch) and
 * pair_mlip_attn.cpp (LAMMPS) are separate translation units because both libraries bundle
 * different versions of {fmt} under the same include guard.
 *
 * The torch side is its own shared library (libmlip_attn_torch.so, with the ops of ops.cpp),
 * which the LAMMPS side loads with RTLD_DEEPBIND (torch_loader.cpp): liblammps exports a
 * reference BLAS (dgemm_, dgemv_, ddot_, ...) that would otherwise take the place of torch's
 * own MKL for every float64 matrix product.
 */
#ifndef MLIP_ATTN_TORCH_MODEL_H
#define MLIP_ATTN_TORCH_MODEL_H

#include "ops.h"

#include <cstdint>
#include <memory>
#include <string>

namespace mlip_attn {

class TorchModel {
 public:
  virtual ~TorchModel() = default;

  // One evaluation. Nodes: n (the first n_local are the rank's local atoms).
  // positions n*3, numbers n, edges 2*n_edges (row 0 = i, row 1 = j), shifts n_edges*3.
  // Outputs: energy of the local atoms; atomic (n_local, may be null); forces n*3
  // (overwritten); virial[6] xx,yy,zz,xy,xz,yz (eV) when compute_virial.
  // cell: the box (9, rows a, b, c in Å; zeros if not periodic) for exports that take it
  // (export format 4, metadata box_input), nullptr for those that do not.
  // Returns false and sets `error` on failure.
  virtual bool compute(int64_t n, const double *positions, const int64_t *numbers,
                       int64_t n_edges, const int64_t *edges, const double *shifts,
                       int64_t n_local, double charge, double spin, bool compute_virial,
                       const double *cell, double &energy, double *atomic, double *forces,
                       double *virial, std::string &error) = 0;
};

// What libmlip_attn_torch.so offers (one instance per process).
class TorchBackend {
 public:
  virtual ~TorchBackend() = default;
  // Load an export onto `device` ("cpu", "cuda", "cuda:1"): an AOTInductor package if the
  // path ends in .pt2, else a TorchScript file; on failure
  // returns nullptr and sets `error`. `metadata` receives the JSON stored by
  // mlip_attn.lammps.export (empty if absent).
  virtual std::unique_ptr<TorchModel> load(const std::string &path, const std::string &device,
                                           std::string &metadata, std::string &error) = 0;
  virtual void set_num_threads(int n) = 0;
  virtual int num_threads() = 0;
  virtual std::string torch_version() = 0;
  // TorchScript graph-executor optimisation (profiling + fusion); off by default.
  virtual void set_optimize(bool on) = 0;
  // The hook of mlip_attn::allreduce_sum (nullptr: identity), see ops.h.
  virtual void set_allreduce(mlip_attn_allreduce_fn fn, void *context) = 0;
};

// The torch side, loaded on first use (torch_loader.cpp); nullptr and `error` on failure.
TorchBackend *torch_backend(std::string &error);

}    // namespace mlip_attn

extern "C" mlip_attn::TorchBackend *mlip_attn_torch_backend();    // in libmlip_attn_torch.so

#endif
