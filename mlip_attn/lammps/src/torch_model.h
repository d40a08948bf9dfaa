/* mlip_attn LAMMPS plugin: the torch side, behind a plain C++ interface.
 *
 * This header includes neither torch nor LAMMPS headers: torch_model.cpp (torch) and
 * pair_mlip_attn.cpp (LAMMPS) are separate translation units because both libraries bundle
 * different versions of {fmt} under the same include guard.
 */
#ifndef MLIP_ATTN_TORCH_MODEL_H
#define MLIP_ATTN_TORCH_MODEL_H

#include <cstdint>
#include <memory>
#include <string>

namespace mlip_attn {

class TorchModel {
 public:
  // Load an exported TorchScript file; on failure returns nullptr and sets `error`.
  // `metadata` receives the JSON stored by mlip_attn.lammps.export (empty if absent).
  static std::unique_ptr<TorchModel> load(const std::string &path, std::string &metadata,
                                          std::string &error);
  virtual ~TorchModel() = default;

  // One evaluation. Nodes: n (the first n_local are the rank's local atoms).
  // positions n*3, numbers n, edges 2*n_edges (row 0 = i, row 1 = j), shifts n_edges*3.
  // Outputs: energy of the local atoms; atomic (n_local, may be null); forces n*3
  // (overwritten); virial[6] xx,yy,zz,xy,xz,yz (eV) when compute_virial.
  // Returns false and sets `error` on failure.
  virtual bool compute(int64_t n, const double *positions, const int64_t *numbers,
                       int64_t n_edges, const int64_t *edges, const double *shifts,
                       int64_t n_local, double charge, double spin, bool compute_virial,
                       double &energy, double *atomic, double *forces, double *virial,
                       std::string &error) = 0;

  static void set_num_threads(int n);
  static int num_threads();
  static std::string torch_version();
  // TorchScript graph-executor optimisation (profiling + fusion); off by default.
  static void set_optimize(bool on);
};

}    // namespace mlip_attn

#endif
