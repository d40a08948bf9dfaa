/* mlip_attn LAMMPS plugin: TorchScript evaluation (the only translation unit using torch). */
#include "torch_model.h"

#include <torch/script.h>
#include <torch/version.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

namespace mlip_attn {

namespace {

class TorchScriptModel : public TorchModel {
 public:
  explicit TorchScriptModel(torch::jit::script::Module module) : module_(std::move(module)) {}

  bool compute(int64_t n, const double *positions, const int64_t *numbers, int64_t n_edges,
               const int64_t *edges, const double *shifts, int64_t n_local, double charge,
               double spin, bool compute_virial, double &energy, double *atomic, double *forces,
               double *virial, std::string &error) override
  {
    try {
      auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
      auto i64 = torch::TensorOptions().dtype(torch::kInt64);
      // from_blob: no copies; the model never writes to its inputs
      auto pos = torch::from_blob(const_cast<double *>(positions), {n, 3}, f64);
      auto num = torch::from_blob(const_cast<int64_t *>(numbers), {n}, i64);
      auto edge = torch::from_blob(const_cast<int64_t *>(edges), {2, n_edges}, i64);
      auto sh = torch::from_blob(const_cast<double *>(shifts), {n_edges, 3}, f64);
      auto q = torch::full({1}, charge, f64);
      auto s = torch::full({1}, spin, f64);
      std::vector<torch::jit::IValue> inputs{pos, num, edge, sh, n_local, q, s, compute_virial};
      auto out = module_.forward(inputs).toTuple();
      energy = out->elements()[0].toTensor().item<double>();
      auto at = out->elements()[1].toTensor().contiguous();
      auto fo = out->elements()[2].toTensor().contiguous();
      auto vi = out->elements()[3].toTensor().contiguous();
      if (fo.size(0) != n || at.size(0) != n_local) {
        error = "the model returned arrays of the wrong size";
        return false;
      }
      std::memcpy(forces, fo.data_ptr<double>(), sizeof(double) * 3 * n);
      if (atomic) std::memcpy(atomic, at.data_ptr<double>(), sizeof(double) * n_local);
      if (compute_virial) std::memcpy(virial, vi.data_ptr<double>(), sizeof(double) * 6);
      return true;
    } catch (const std::exception &e) {
      error = e.what();
      auto cut = error.find("\nException raised from");
      if (cut != std::string::npos) error.resize(cut);
      return false;
    }
  }

 private:
  torch::jit::script::Module module_;
};

}    // namespace

std::unique_ptr<TorchModel> TorchModel::load(const std::string &path, std::string &metadata,
                                             std::string &error)
{
  try {
    torch::jit::ExtraFilesMap extra{{"metadata.json", ""}};
    auto module = torch::jit::load(path, torch::kCPU, extra);
    module.eval();
    metadata = extra["metadata.json"];
    return std::make_unique<TorchScriptModel>(std::move(module));
  } catch (const std::exception &e) {
    error = e.what();
    auto cut = error.find("\nException raised from");
    if (cut != std::string::npos) error.resize(cut);
    return nullptr;
  }
}

void TorchModel::set_num_threads(int n)
{
  if (n > 0) at::set_num_threads(n);
}

int TorchModel::num_threads()
{
  return at::get_num_threads();
}

std::string TorchModel::torch_version()
{
  return TORCH_VERSION;
}

void TorchModel::set_optimize(bool on)
{
  torch::jit::setGraphExecutorOptimize(on);
}

}    // namespace mlip_attn
