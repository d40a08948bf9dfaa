/* mlip_attn LAMMPS plugin, torch side (libmlip_attn_torch.so, with ops.cpp): TorchScript
   evaluation on a device. */
#include "torch_model.h"

#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>
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

class TorchScriptModel : public TorchModel {
 public:
  TorchScriptModel(torch::jit::script::Module module, torch::Device device) :
      module_(std::move(module)), device_(device)
  {
  }

  bool compute(int64_t n, const double *positions, const int64_t *numbers, int64_t n_edges,
               const int64_t *edges, const double *shifts, int64_t n_local, double charge,
               double spin, bool compute_virial, double &energy, double *atomic, double *forces,
               double *virial, std::string &error) override
  {
    try {
      auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
      auto i64 = torch::TensorOptions().dtype(torch::kInt64);
      // from_blob: no copies on the CPU; the model never writes to its inputs
      auto pos = torch::from_blob(const_cast<double *>(positions), {n, 3}, f64).to(device_);
      auto num = torch::from_blob(const_cast<int64_t *>(numbers), {n}, i64).to(device_);
      auto edge = torch::from_blob(const_cast<int64_t *>(edges), {2, n_edges}, i64).to(device_);
      auto sh = torch::from_blob(const_cast<double *>(shifts), {n_edges, 3}, f64).to(device_);
      auto q = torch::full({1}, charge, f64.device(device_));
      auto s = torch::full({1}, spin, f64.device(device_));
      std::vector<torch::jit::IValue> inputs{pos, num, edge, sh, n_local, q, s, compute_virial};
      auto out = module_.forward(inputs).toTuple();
      energy = out->elements()[0].toTensor().item<double>();
      auto at = out->elements()[1].toTensor().to(torch::kCPU).contiguous();
      auto fo = out->elements()[2].toTensor().to(torch::kCPU).contiguous();
      auto vi = out->elements()[3].toTensor().to(torch::kCPU).contiguous();
      if (fo.size(0) != n || at.size(0) != n_local) {
        error = "the model returned arrays of the wrong size";
        return false;
      }
      std::memcpy(forces, fo.data_ptr<double>(), sizeof(double) * 3 * n);
      if (atomic) std::memcpy(atomic, at.data_ptr<double>(), sizeof(double) * n_local);
      if (compute_virial) std::memcpy(virial, vi.data_ptr<double>(), sizeof(double) * 6);
      return true;
    } catch (const std::exception &e) {
      error = short_error(e);
      return false;
    }
  }

 private:
  torch::jit::script::Module module_;
  torch::Device device_;
};

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
