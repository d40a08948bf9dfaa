/* ----------------------------------------------------------------------
   pair_style mlip_attn <model file> [threads N] [charge Q] [spin S] [device D]
   pair_coeff * * <element of type 1> <element of type 2> ...

   Evaluates an mlip-attn potential exported with `mlip-attn export model.pt --lammps`.

   Graph on each MPI rank (full neighbour list, newton pair on):
   * nodes = the rank's local atoms, then "remote" ghost atoms (images of atoms owned by other
     ranks) that lie within `layers` neighbour hops of a local atom;
   * ghost atoms that are periodic images of local atoms are folded onto the local atom, with
     the image offset as edge shift (on one rank every ghost is folded: the graph is exactly
     the periodic graph AttnCalculator uses);
   * edges i <- j for every node i within layers-1 hops (whose features must be exact) and
     every neighbour j within the model cutoff.
   The model returns the energy of the local atoms, forces on all nodes (ghost forces are
   folded back by LAMMPS' reverse communication) and the virial -dE/dε. With several ranks the
   ghost shell must reach layers × cutoff (+ skin): init_style raises comm_modify cutoff to that.

   Global models (EFA) on several ranks: the model is told how many nodes are local (they come
   first) and that the structure is split (mlip_attn::sums_across_processes); each rank adds only its local atoms to EFA's per-structure sums (centroid, key-value
   products), mlip_attn::allreduce_sum adds the ranks' sums with MPI_Allreduce on this pair
   style's communicator (the hook is set around each model call), and every node, ghosts
   included, is then finished with the global sums. The backward pass all-reduces the
   gradients of those sums, so the forces of local atoms carry the global part and the ghost
   forces (local part) come back by reverse communication as for local models.

   The box (export format 4): exports with `box_input` get the box at every call, rows
   a = (xprd, 0, 0), b = (xy, yprd, 0), c = (xz, yz, zprd) from domain->h (so fix npt and
   change_box are followed), zeros unless the box is periodic in x, y and z. Electrostatics
   models (`needs_box`) sum the reciprocal space (Ewald's S(k), or the PME charge mesh) over
   each rank's local atoms and all-reduce it like EFA's sums; their virial includes the
   strain of the box (-h^T dE/dh), the k-space part that no pair term carries.
------------------------------------------------------------------------- */

#include "pair_mlip_attn.h"

#include "ops.h"
#include "torch_model.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cmath>
#include <sched.h>
#include <cstdlib>
#include <cstring>

using namespace LAMMPS_NS;

namespace {

const char *const SYMBOLS[] = {
    "X",  "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si",
    "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
    "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru",
    "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr",
    "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",
    "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac",
    "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf",
    "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
const int NSYMBOLS = sizeof(SYMBOLS) / sizeof(SYMBOLS[0]);

int symbol_to_z(const std::string &s)
{
  for (int z = 1; z < NSYMBOLS; z++)
    if (s == SYMBOLS[z]) return z;
  return -1;
}

std::string element_list(const std::vector<int> &zs)
{
  std::string out;
  for (int z : zs) {
    if (!out.empty()) out += " ";
    out += (z > 0 && z < NSYMBOLS) ? SYMBOLS[z] : std::to_string(z);
  }
  return out;
}

const char *EXPORT_HINT =
    "export a model file for LAMMPS with: mlip-attn export model.pt --lammps -o model-lammps.pt";

// mlip_attn::allreduce_sum's hook: a sum over the ranks of the pair style's communicator.
// Non-blocking, and a waiting rank yields its core between tests: a model call makes several
// of these per step, and on a node with more busy processes than cores a rank spinning in a
// blocking all-reduce takes the CPU from the rank it waits for.
int mpi_allreduce(void *data, int64_t count, int is_double, void *context)
{
  MPI_Comm comm = *static_cast<MPI_Comm *>(context);
  char *p = static_cast<char *>(data);
  const size_t size = is_double ? sizeof(double) : sizeof(float);
  while (count > 0) {    // MPI counts are int
    const int n = (int) std::min<int64_t>(count, 1 << 30);
    MPI_Request request;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, p, n, is_double ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM, comm,
                            &request);
    int done = 0;
    while (rc == MPI_SUCCESS && !done) {
      rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (!done) sched_yield();
    }
    if (rc != MPI_SUCCESS) return rc;
    p += n * size;
    count -= n;
  }
  return 0;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairMLIPAttn::PairMLIPAttn(LAMMPS *lmp) :
    Pair(lmp), backend(nullptr), cutoff(0.0), layers(1), global_model(false), periodic_model(true),
    distributed(false), format_version(0), box_input(false), needs_box(false),
    charge(0.0), spin(0.0), threads(0), warned_vatom(false)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the model returns the virial (periodic shifts included)
  centroidstressflag = CENTROID_NOTAVAIL;
  ghostneigh = 0;                 // set in init_style when running on several ranks
  cutghost = nullptr;
}

PairMLIPAttn::~PairMLIPAttn()
{
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairMLIPAttn::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  type2z.assign(n, -1);
}

/* ----------------------------------------------------------------------
   pair_style mlip_attn <model file> [threads N] [charge Q] [spin S] [device D]
------------------------------------------------------------------------- */

void PairMLIPAttn::settings(int narg, char **arg)
{
  if (narg < 1)
    error->all(FLERR,
               "Illegal pair_style mlip_attn command: expected "
               "pair_style mlip_attn <model file> [threads N] [charge Q] [spin S] [device D]");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "pair_style mlip_attn requires 'units metal' (eV, Å, ps); this input uses "
               "'units {}'. Put 'units metal' before the box is created.",
               update->unit_style);

  // a new model may know other elements: pair_coeff must be given again
  if (allocated)
    for (int i = 0; i <= atom->ntypes; i++)
      for (int j = 0; j <= atom->ntypes; j++) setflag[i][j] = 0;

  model_path = arg[0];
  threads = 0;
  charge = spin = 0.0;
  device = "cpu";
  int iarg = 1;
  while (iarg < narg) {
    std::string key = arg[iarg];
    if (iarg + 1 >= narg)
      error->all(FLERR, "pair_style mlip_attn: keyword '{}' needs a value", key);
    if (key == "threads") {
      threads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (threads < 1) error->all(FLERR, "pair_style mlip_attn: threads must be >= 1");
    } else if (key == "charge") {
      charge = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
    } else if (key == "spin") {
      spin = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
    } else if (key == "device") {
      device = arg[iarg + 1];
    } else {
      error->all(FLERR,
                 "pair_style mlip_attn: unknown keyword '{}' (known: threads, charge, spin, "
                 "device)",
                 key);
    }
    iarg += 2;
  }

  if (!platform::file_is_readable(model_path))
    error->all(FLERR, "pair_style mlip_attn: model file '{}' does not exist or is not readable",
               model_path);

  std::string err;
  backend = mlip_attn::torch_backend(err);
  if (!backend) error->all(FLERR, "pair_style mlip_attn: {}", err);

  // torch threads: keyword > $MLIP_ATTN_TORCH_THREADS > torch's default
  if (threads == 0) {
    const char *env = std::getenv("MLIP_ATTN_TORCH_THREADS");
    if (env && *env) {
      threads = std::atoi(env);
      if (threads < 1)
        error->all(FLERR, "pair_style mlip_attn: MLIP_ATTN_TORCH_THREADS='{}' is not >= 1", env);
    }
  }
  // several ranks on one node: torch's default (all cores per rank) would oversubscribe
  if (threads == 0 && comm->nprocs > 1 && !std::getenv("OMP_NUM_THREADS")) threads = 1;
  if (threads > 0) backend->set_num_threads(threads);
  // TorchScript's optimising graph executor stays off: its autodiff gave wrong forces for
  // attention models (torch 2.13), plain autograd is exact.
  backend->set_optimize(false);

  std::string meta_text;
  model = backend->load(model_path, device, meta_text, err);
  if (!model && err.rfind("device", 0) == 0)
    error->all(FLERR, "pair_style mlip_attn: {}", err);
  if (!model)
    error->all(FLERR,
               "pair_style mlip_attn: cannot load '{}' as an export ({}). Is it an "
               "mlip-attn model file rather than its LAMMPS export? {}",
               model_path, err.substr(0, 300), EXPORT_HINT);
  if (meta_text.empty())
    error->all(FLERR,
               "pair_style mlip_attn: '{}' is a TorchScript file without mlip-attn metadata; {}",
               model_path, EXPORT_HINT);

  try {
    auto meta = json::parse(meta_text);
    if (meta.value("format", std::string()) != "mlip-attn-lammps")
      error->all(FLERR, "pair_style mlip_attn: '{}' is not an mlip-attn LAMMPS export; {}",
                 model_path, EXPORT_HINT);
    if (meta.value("format_version", 0) > 4)
      error->all(FLERR,
                 "pair_style mlip_attn: '{}' has export format {} which this plugin does not "
                 "read; update mlip-attn and rebuild the plugin (mlip-attn build-lammps)",
                 model_path, meta.value("format_version", 0));
    model_elements = meta.at("elements").get<std::vector<int>>();
    cutoff = meta.at("cutoff").get<double>();
    layers = meta.at("layers").get<int>();
    global_model = meta.value("global", false);
    periodic_model = meta.value("periodic", !global_model);   // older files: local models only
    distributed = meta.value("distributed", false);
    format_version = meta.value("format_version", 0);
    box_input = meta.value("box_input", false);    // format 4 TorchScript exports
    needs_box = meta.value("needs_box", false);
    if (meta.value("neutral_only", false) && charge != 0.0)
      error->all(FLERR,
                 "pair_style mlip_attn: '{}' (route aoti) computes neutral structures only: a "
                 "compiled graph cannot branch on the total charge, which physics-2 models place "
                 "on one bonded fragment; export with --route torchscript+ops for charge {}",
                 model_path, charge);
    if (needs_box && !box_input)
      error->all(FLERR,
                 "pair_style mlip_attn: '{}' has an electrostatics block, which reads the "
                 "periodic box, but was exported without the box input (export format {}); "
                 "export it again: mlip-attn export MODEL.pt --lammps --route torchscript+ops",
                 model_path, meta.value("format_version", 0));
    route = meta.value("route", std::string("torchscript"));
    // format 2 called an l <= 1 form of the message op that no longer exists
    if (route == "torchscript+ops" && meta.value("format_version", 0) < 3)
      error->all(FLERR,
                 "pair_style mlip_attn: '{}' was exported by an older mlip-attn (export format "
                 "{}) and calls an op this plugin no longer has; {}",
                 model_path, meta.value("format_version", 0), EXPORT_HINT);
    not_distributed_reason = meta.value(
        "not_distributed",
        std::string(meta.contains("route") ? "" : "it was exported by an older mlip-attn; "
                                                  "export it again"));
    if (cutoff <= 0.0 || layers < 1)
      error->all(FLERR, "pair_style mlip_attn: '{}' has invalid metadata (cutoff {}, layers {})",
                 model_path, cutoff, layers);
    if (comm->me == 0)
      utils::logmesg(lmp,
                     "pair_style mlip_attn: {} ({} model, {}, elements {}, cutoff {} Å, "
                     "{} layers{}); route: {}; torch {} on {} with {} thread(s)\n",
                     model_path, meta.value("backbone", std::string("?")),
                     meta.value("dtype", std::string("?")), element_list(model_elements), cutoff,
                     layers,
                     !global_model ? std::string()
                     : meta.value("r_max", 0.0) > 0.0
                         ? fmt::format(", global attention r_max {} Å", meta.value("r_max", 0.0))
                         : std::string(", global blocks of unlimited reach"),
                     route_description(route), backend->torch_version(), device,
                     backend->num_threads());
  } catch (json::exception &e) {
    error->all(FLERR, "pair_style mlip_attn: unreadable metadata in '{}': {}", model_path,
               e.what());
  }

  check_ranks();
}

/* ----------------------------------------------------------------------
   models that read the box: fully periodic (Ewald / PME) or fully open (direct sum, one rank)
------------------------------------------------------------------------- */

void PairMLIPAttn::check_box()
{
  if (!needs_box) return;
  const int periodic = domain->xperiodic + domain->yperiodic + domain->zperiodic;
  if (periodic != 0 && periodic != 3)
    error->all(FLERR,
               "pair_style mlip_attn: '{}' has an electrostatics block, which needs a box "
               "periodic in x, y and z (Ewald/PME) or in none (direct sum); this box is "
               "periodic in {} of 3 directions (slab corrections are not implemented)",
               model_path, periodic);
  if (periodic == 0 && comm->nprocs > 1)
    error->all(FLERR,
               "pair_style mlip_attn: '{}' has an electrostatics block; in a non-periodic box "
               "it is a direct sum over every pair of atoms, which one rank's atoms cannot "
               "complete: run it on one MPI rank (this run has {}), or in a periodic box, "
               "where its reciprocal sums split over ranks",
               model_path, comm->nprocs);
}

void PairMLIPAttn::fill_cell()
{
  for (double &c : cell) c = 0.0;
  if (!(domain->xperiodic && domain->yperiodic && domain->zperiodic)) return;
  const double *h = domain->h;    // xprd, yprd, zprd, yz, xz, xy
  cell[0] = h[0];
  cell[3] = h[5];
  cell[4] = h[1];
  cell[6] = h[4];
  cell[7] = h[3];
  cell[8] = h[2];
}

/* ----------------------------------------------------------------------
   global models on several ranks: only those whose global sums can be all-reduced
------------------------------------------------------------------------- */

void PairMLIPAttn::check_ranks()
{
  if (!global_model || distributed || comm->nprocs == 1) return;
  error->all(FLERR,
             "pair_style mlip_attn: '{}' has global blocks that cannot be split over MPI "
             "ranks ({}); it runs on one MPI rank only (this run has {}). Run with one MPI "
             "rank (use torch threads for parallelism: pair_style mlip_attn FILE threads N)",
             model_path,
             not_distributed_reason.empty() ? std::string("no distributed form")
                                            : not_distributed_reason,
             comm->nprocs);
}

std::string PairMLIPAttn::route_description(const std::string &r)
{
  if (r == "aoti") return "AOTInductor package with compiled mlip_attn ops";
  if (r == "torchscript+ops") return "TorchScript with compiled mlip_attn ops (fast route)";
  if (r == "torchscript")
    return "plain TorchScript (fallback: autograd through the message, slower; export again "
           "where `mlip-attn build-lammps` works for the fast route)";
  return r;
}

/* ----------------------------------------------------------------------
   pair_coeff * * <element per LAMMPS type>
------------------------------------------------------------------------- */

void PairMLIPAttn::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg != 2 + ntypes)
    error->all(FLERR,
               "pair_coeff for mlip_attn needs '* *' and one element per atom type "
               "({} types), e.g. pair_coeff * * {}",
               ntypes, element_list(model_elements));
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for mlip_attn must start with '* *'");

  for (int t = 1; t <= ntypes; t++) {
    std::string sym = arg[1 + t];
    int z = symbol_to_z(sym);
    if (z < 0)
      error->all(FLERR, "pair_coeff mlip_attn: '{}' (type {}) is not an element symbol", sym, t);
    if (std::find(model_elements.begin(), model_elements.end(), z) == model_elements.end())
      error->all(FLERR,
                 "pair_coeff mlip_attn: element {} (type {}) is unknown to the model '{}', "
                 "which knows {}",
                 sym, t, model_path, element_list(model_elements));
    type2z[t] = z;
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

/* ---------------------------------------------------------------------- */

void PairMLIPAttn::init_style()
{
  if (!model) error->all(FLERR, "pair_style mlip_attn: no model loaded");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style mlip_attn requires 'newton on' (the default)");
  if (atom->tag_enable == 0)
    error->all(FLERR, "pair_style mlip_attn requires atom IDs (atom_modify id yes)");
  check_box();
  if (global_model) {
    check_ranks();
    if (!periodic_model && (domain->xperiodic || domain->yperiodic || domain->zperiodic))
      error->all(FLERR,
                 "pair_style mlip_attn: '{}' has global attention, which does not support "
                 "periodic cells (as in AttnCalculator); use 'boundary f f f' or 's s s' with "
                 "a box around an isolated system, or a local model{}",
                 model_path,
                 format_version < 4
                     ? fmt::format(" (if it has an electrostatics block: it was exported in "
                                   "format {}, without the box; export it again with: "
                                   "mlip-attn export MODEL.pt --lammps)", format_version)
                     : std::string());
  }

  if (comm->nprocs > 1) {
    // ghost atoms need their own neighbours, and the ghost shell must hold every atom within
    // `layers` hops of a local atom: layers × cutoff + skin
    ghostneigh = 1;
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    double need = layers * cutoff + neighbor->skin;
    if (comm->mode != Comm::SINGLE)
      error->all(FLERR, "pair_style mlip_attn on several MPI ranks needs comm_modify mode single");
    if (comm->cutghostuser < need) {
      comm->cutghostuser = need;
      if (comm->me == 0)
        utils::logmesg(lmp,
                       "pair_style mlip_attn: ghost cutoff set to {:.3f} Å ({} layers × {} Å "
                       "+ skin) so that features of ghost atoms are exact\n",
                       need, layers, cutoff);
    }
  } else {
    ghostneigh = 0;
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }
}

double PairMLIPAttn::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");
  if (cutghost) cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

/* ----------------------------------------------------------------------
   nodes, edges and shifts for this rank (see the header of this file)
------------------------------------------------------------------------- */

void PairMLIPAttn::build_graph()
{
  double **x = atom->x;
  int *type = atom->type;
  tagint *tag = atom->tag;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const double cutsq_model = cutoff * cutoff;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  // atom ID -> local index, to fold periodic images of local atoms
  tagint maxtag = 0;
  for (int i = 0; i < nlocal; i++) maxtag = std::max(maxtag, tag[i]);
  if ((tagint) tag2local.size() < maxtag + 1) tag2local.assign(maxtag + 1, -1);
  for (int i = 0; i < nlocal; i++) tag2local[tag[i]] = i;

  node_of.assign(nall, -1);
  node_atom.clear();
  positions.clear();
  numbers.clear();
  for (int i = 0; i < nlocal; i++) {
    node_of[i] = i;
    node_atom.push_back(i);
  }
  for (int a = nlocal; a < nall; a++) {
    tagint t = tag[a];
    if (t > 0 && t <= maxtag && tag2local[t] >= 0) node_of[a] = tag2local[t];
  }

  edge_i.clear();
  edge_j.clear();
  shifts.clear();
  frontier.clear();
  for (int ii = 0; ii < list->inum; ii++) frontier.push_back(list->ilist[ii]);

  for (int hop = 0; hop < layers && !frontier.empty(); hop++) {
    next_frontier.clear();
    for (int i : frontier) {
      const int ni = node_of[i];
      const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
      const int *jlist = firstneigh[i];
      const int jnum = numneigh[i];
      for (int jj = 0; jj < jnum; jj++) {
        const int j = jlist[jj] & NEIGHMASK;
        const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
        if (dx * dx + dy * dy + dz * dz >= cutsq_model) continue;
        int nj = node_of[j];
        if (nj < 0) {    // a remote ghost reached for the first time: hop + 1 <= layers
          nj = node_of[j] = (int) node_atom.size();
          node_atom.push_back(j);
          if (hop + 1 < layers) next_frontier.push_back(j);
        }
        const int aj = node_atom[nj];    // the atom whose position the node carries
        edge_i.push_back(ni);
        edge_j.push_back(nj);
        shifts.push_back(x[j][0] - x[aj][0]);
        shifts.push_back(x[j][1] - x[aj][1]);
        shifts.push_back(x[j][2] - x[aj][2]);
      }
    }
    frontier.swap(next_frontier);
  }

  const int nnodes = (int) node_atom.size();
  positions.resize(3 * (size_t) nnodes);
  numbers.resize(nnodes);
  for (int n = 0; n < nnodes; n++) {
    const int a = node_atom[n];
    positions[3 * n] = x[a][0];
    positions[3 * n + 1] = x[a][1];
    positions[3 * n + 2] = x[a][2];
    numbers[n] = type2z[type[a]];
  }
  const size_t ne = edge_i.size();
  edges.resize(2 * ne);
  std::copy(edge_i.begin(), edge_i.end(), edges.begin());
  std::copy(edge_j.begin(), edge_j.end(), edges.begin() + ne);

  for (int i = 0; i < nlocal; i++) tag2local[tag[i]] = -1;
}

/* ---------------------------------------------------------------------- */

void PairMLIPAttn::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom && !warned_vatom && comm->me == 0) {
    error->warning(FLERR,
                   "pair_style mlip_attn does not compute per-atom virials (stress/atom); "
                   "they are zero. The global virial and pressure are exact.");
    warned_vatom = true;
  }

  build_graph();
  const int nlocal = atom->nlocal;
  const int64_t nnodes = (int64_t) node_atom.size();
  const int64_t nedges = (int64_t) edge_i.size();
  forces.resize(3 * (size_t) nnodes);
  atomic.resize(nlocal);
  double energy = 0.0, w[6] = {0, 0, 0, 0, 0, 0};
  std::string err;
  // global sums of distributed models: MPI_Allreduce over this communicator during the call
  const bool reduce = global_model && comm->nprocs > 1;
  if (reduce) backend->set_allreduce(&mpi_allreduce, &world);
  fill_cell();    // every step: fix npt and change_box move it
  bool ok = model->compute(nnodes, positions.data(), numbers.data(), nedges, edges.data(),
                           shifts.data(), nlocal, charge, spin, vflag_global != 0,
                           box_input ? cell : nullptr, energy, atomic.data(), forces.data(), w,
                           err);
  if (reduce) backend->set_allreduce(nullptr, nullptr);
  if (!ok) error->one(FLERR, "pair_style mlip_attn: model evaluation failed: {}", err);

  double **f = atom->f;
  for (int64_t n = 0; n < nnodes; n++) {
    const int a = node_atom[n];
    f[a][0] += forces[3 * n];
    f[a][1] += forces[3 * n + 1];
    f[a][2] += forces[3 * n + 2];
  }
  if (eflag_global) eng_vdwl += energy;
  if (eflag_atom)
    for (int i = 0; i < nlocal; i++) eatom[i] += atomic[i];
  if (vflag_global)
    for (int k = 0; k < 6; k++) virial[k] += w[k];
}
