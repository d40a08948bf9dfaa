/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip_attn: mlip-attn machine-learning potentials (TorchScript export) in LAMMPS.
   Built as a LAMMPS plugin by `mlip-attn build-lammps` (mlip_attn.lammps.build_plugin).
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_MLIP_ATTN_H
#define LMP_PAIR_MLIP_ATTN_H

#include "pair.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlip_attn {
class TorchModel;
class TorchBackend;
}

namespace LAMMPS_NS {

class PairMLIPAttn : public Pair {
 public:
  PairMLIPAttn(class LAMMPS *);
  ~PairMLIPAttn() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 protected:
  void allocate();
  void build_graph();
  void check_ranks();
  void check_box();
  void fill_cell();
  static std::string route_description(const std::string &route);

  mlip_attn::TorchBackend *backend;   // the torch side (loaded once per process)
  std::unique_ptr<mlip_attn::TorchModel> model;
  std::string model_path;
  std::string device;                 // torch device of the model and its tensors
  std::string route;                  // export route (metadata): torchscript+ops | torchscript
  std::vector<int> model_elements;    // atomic numbers the model knows
  double cutoff;                      // model cutoff (Å)
  int layers;                         // message-passing layers
  bool global_model;                  // global attention or through-bond propagation
  bool periodic_model;                // supports periodic boxes (local, bond-graph only)
  bool distributed;                   // its global sums can be all-reduced over MPI ranks
  int format_version;                 // export format of the file (metadata)
  bool box_input;                     // the export takes the box (format 4 TorchScript)
  bool needs_box;                     // its energy reads the box (electrostatics: k-space)
  double cell[9];                     // the box passed to the model (rows a, b, c; Å)
  std::string not_distributed_reason; // why not (metadata), for the error message
  double charge, spin;                // total charge / spin of the system
  int threads;                        // torch threads (0 = torch's default)
  std::vector<int> type2z;            // LAMMPS type -> atomic number
  bool warned_vatom;

  // graph buffers, reused between steps
  std::vector<int> tag2local;         // atom ID -> local index (-1 if not local)
  std::vector<int> node_of;           // atom index -> node (-1: not in the graph)
  std::vector<int> node_atom;         // node -> atom index it came from
  std::vector<int> frontier, next_frontier;
  std::vector<double> positions, shifts, forces, atomic;
  std::vector<int64_t> numbers, edge_i, edge_j, edges;
};

}    // namespace LAMMPS_NS

#endif
