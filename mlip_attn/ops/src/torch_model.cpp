/* mlip_attn LAMMPS plugin, torch side (libmlip_attn_torch.so, with ops.cpp): evaluation of an
   export on a device, by its route: an AOTInductor package (*.pt2, mlip_attn.lammps.aoti) or a
   TorchScript file (mlip_attn.lammps.export). */
#include "torch_model.h"

#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

namespace mlip_attn {

namespace {

std::string short_error(const std::exception &e)
{
  std::string error = e.what();
  auto cut = error.find("\nException raised from");
  if (cut != std::string::npos) error.resize(cut);
  return error;
}

bool copy_outputs(const at::Tensor &atomic_out, const at::Tensor &forces_out,
                  const at::Tensor &virial_out, int64_t n, int64_t n_local, bool compute_virial,
                  double *atomic, double *forces, double *virial, std::string &error)
{
  auto at = atomic_out.to(torch::kCPU).contiguous();
  auto fo = forces_out.to(torch::kCPU).contiguous();
  auto vi = virial_out.to(torch::kCPU).contiguous();
  if (fo.size(0) != n || at.size(0) != n_local) {
    error = "the model returned arrays of the wrong size";
    return false;
  }
  std::memcpy(forces, fo.data_ptr<double>(), sizeof(double) * 3 * n);
  if (atomic) std::memcpy(atomic, at.data_ptr<double>(), sizeof(double) * n_local);
  if (compute_virial) std::memcpy(virial, vi.data_ptr<double>(), sizeof(double) * 6);
  return true;
}

// The model's input tensors on `device`, both routes: positions (n, 3), numbers (n,), edges
// (2, E), shifts (E, 3), charge and spin (1,); from_blob, so no copies on the CPU (the model
// never writes to its inputs)
struct Inputs {
  at::Tensor positions, numbers, edges, shifts, charge, spin;
};

Inputs make_inputs(int64_t n, const double *positions, const int64_t *numbers, int64_t n_edges,
                   const int64_t *edges, const double *shifts, double charge, double spin,
                   const torch::Device &device)
{
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  return Inputs{
      torch::from_blob(const_cast<double *>(positions), {n, 3}, f64).to(device),
      torch::from_blob(const_cast<int64_t *>(numbers), {n}, i64).to(device),
      torch::from_blob(const_cast<int64_t *>(edges), {2, n_edges}, i64).to(device),
      torch::from_blob(const_cast<double *>(shifts), {n_edges, 3}, f64).to(device),
      torch::full({1}, charge, f64.device(device)), torch::full({1}, spin, f64.device(device))};
}

class TorchScriptModel : public TorchModel {
 public:
  TorchScriptModel(torch::jit::script::Module module, torch::Device device) :
      module_(std::move(module)), device_(device)
  {
  }

  bool compute(int64_t n, const double *positions, const int64_t *numbers, int64_t n_edges,
               const int64_t *edges, const double *shifts, int64_t n_local, double charge,
               double spin, bool compute_virial, const double *cell, double &energy,
               double *atomic, double *forces, double *virial, std::string &error) override
  {
    try {
      const Inputs in = make_inputs(n, positions, numbers, n_edges, edges, shifts, charge, spin,
                                    device_);
      std::vector<torch::jit::IValue> inputs{in.positions, in.numbers, in.edges, in.shifts,
                                             n_local, in.charge, in.spin, compute_virial};
      if (cell)    // export format 4: the box
        inputs.emplace_back(torch::from_blob(const_cast<double *>(cell), {3, 3},
                                             torch::TensorOptions().dtype(torch::kFloat64))
                                .clone()
                                .to(device_));
      auto out = module_.forward(inputs).toTuple();
      energy = out->elements()[0].toTensor().item<double>();
      return copy_outputs(out->elements()[1].toTensor(), out->elements()[2].toTensor(),
                          out->elements()[3].toTensor(), n, n_local, compute_virial, atomic,
                          forces, virial, error);
    } catch (const std::exception &e) {
      error = short_error(e);
      return false;
    }
  }

 private:
  torch::jit::script::Module module_;
  torch::Device device_;
};

// An AOTInductor package (route "aoti"): the compiled function of mlip_attn.lammps.aoti, which
// takes the local and ghost nodes apart and always returns the virial.
class AotiModel : public TorchModel {
 public:
  AotiModel(std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader,
            torch::Device device) :
      loader_(std::move(loader)), device_(device)
  {
  }

  bool compute(int64_t n, const double *positions, const int64_t *numbers, int64_t n_edges,
               const int64_t *edges, const double *shifts, int64_t n_local, double charge,
               double spin, bool compute_virial, const double *cell, double &energy,
               double *atomic, double *forces, double *virial, std::string &error) override
  {
    if (cell) {    // packages never take the box (models that need it are not exported so)
      error = "this .pt2 package takes no box";
      return false;
    }
    try {
      const Inputs in = make_inputs(n, positions, numbers, n_edges, edges, shifts, charge, spin,
                                    device_);
      const int64_t n_ghost = n - n_local;
      std::vector<at::Tensor> inputs{in.positions.narrow(0, 0, n_local),
                                     in.positions.narrow(0, n_local, n_ghost),
                                     in.numbers.narrow(0, 0, n_local),
                                     in.numbers.narrow(0, n_local, n_ghost),
                                     in.edges, in.shifts, in.charge, in.spin};
      auto out = loader_->run(inputs);
      if (out.size() != 4) {
        error = "the package returned " + std::to_string(out.size()) + " outputs, not 4";
        return false;
      }
      energy = out[0].item<double>();
      return copy_outputs(out[1], out[2], out[3], n, n_local, compute_virial, atomic, forces,
                          virial, error);
    } catch (const std::exception &e) {
      error = short_error(e);
      return false;
    }
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  torch::Device device_;
};

bool ends_with(const std::string &s, const std::string &tail)
{
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

class Backend : public TorchBackend {
 public:
  std::unique_ptr<TorchModel> load(const std::string &path, const std::string &device_name,
                                   std::string &metadata, std::string &error) override
  {
    torch::Device device(torch::kCPU);
    try {
      device = torch::Device(device_name);
    } catch (const std::exception &e) {
      error = "device '" + device_name + "' is not a device name (use cpu, cuda or cuda:N)";
      return nullptr;
    }
    if (device.is_cuda()) {
      const int64_t count = torch::cuda::is_available() ? (int64_t) torch::cuda::device_count() : 0;
      if (count == 0) {
        error = "device '" + device_name + "' was asked for, but this torch (" +
            std::string(TORCH_VERSION) + ") sees no CUDA device (a CPU-only build of torch, " +
            "or no GPU on this machine); use device cpu";
        return nullptr;
      }
      if (device.has_index() && device.index() >= count) {
        error = "device '" + device_name + "' does not exist: this machine has " +
            std::to_string(count) + " CUDA device(s)";
        return nullptr;
      }
    } else if (!device.is_cpu()) {
      error = "device '" + device_name + "' is not supported (use cpu, cuda or cuda:N)";
      return nullptr;
    }
    if (ends_with(path, ".pt2")) {
      try {
        auto loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
            path, "model", false, 1, device.is_cuda() && device.has_index() ? device.index() : -1);
        auto meta = loader->get_metadata();
        const std::string built_for = meta.count("AOTI_DEVICE_KEY") ? meta["AOTI_DEVICE_KEY"] : "";
        if (!built_for.empty() && built_for != (device.is_cuda() ? "cuda" : "cpu")) {
          error = "device '" + device_name + "' was asked for, but the package was compiled for " +
              built_for + "; export it again on a machine with that device";
          return nullptr;
        }
        metadata = meta.count("metadata.json") ? meta["metadata.json"] : "";
        return std::make_unique<AotiModel>(std::move(loader), device);
      } catch (const std::exception &e) {
        error = short_error(e);
        return nullptr;
      }
    }
    try {
      torch::jit::ExtraFilesMap extra{{"metadata.json", ""}};
      auto module = torch::jit::load(path, device, extra);
      module.eval();
      metadata = extra["metadata.json"];
      return std::make_unique<TorchScriptModel>(std::move(module), device);
    } catch (const std::exception &e) {
      error = short_error(e);
      return nullptr;
    }
  }

  void set_num_threads(int n) override
  {
    if (n > 0) at::set_num_threads(n);
  }

  int num_threads() override { return at::get_num_threads(); }

  std::string torch_version() override { return TORCH_VERSION; }

  void set_optimize(bool on) override { torch::jit::setGraphExecutorOptimize(on); }

  void set_allreduce(mlip_attn_allreduce_fn fn, void *context) override
  {
    mlip_attn_set_allreduce(fn, context);
  }
};

}    // namespace

}    // namespace mlip_attn

extern "C" mlip_attn::TorchBackend *mlip_attn_torch_backend()
{
  static mlip_attn::Backend backend;
  return &backend;
}
