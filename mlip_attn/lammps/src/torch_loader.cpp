/* mlip_attn LAMMPS plugin: loads the torch side (libmlip_attn_torch.so) once per process.

   RTLD_DEEPBIND puts the library's own dependencies (libtorch_cpu and its MKL) ahead of the
   symbols already in the process when resolving its references. Without it, torch's calls to
   the BLAS (dgemm_, dgemv_, ddot_, daxpy_, dscal_) bind to the unoptimised reference BLAS that
   liblammps exports, and every float64 matrix product runs single-threaded and unblocked
   (float32 was unaffected: liblammps has no sgemm_). Where torch was loaded into the process
   before (LAMMPS driven from Python), the binding already made there stays.

   The path is fixed at build time (mlip_attn.lammps.build), so Python and the plugin load the
   same file and the ops are registered once per process.
*/
#include "torch_model.h"

#include <dlfcn.h>
#include <mutex>

#ifndef MLIP_ATTN_TORCH_LIBRARY
#error "build with -DMLIP_ATTN_TORCH_LIBRARY=<path of libmlip_attn_torch.so> (build_plugin does)"
#endif

namespace mlip_attn {

TorchBackend *torch_backend(std::string &error)
{
  static std::mutex mutex;
  static TorchBackend *backend = nullptr;
  static std::string load_error;
  std::lock_guard<std::mutex> lock(mutex);
  if (backend == nullptr && load_error.empty()) {
    void *handle = dlopen(MLIP_ATTN_TORCH_LIBRARY, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      const char *why = dlerror();
      load_error = std::string("cannot load the torch side of the plugin (") +
          (why ? why : MLIP_ATTN_TORCH_LIBRARY) + "); rebuild it with: mlip-attn build-lammps";
    } else {
      auto entry = (TorchBackend * (*) ()) dlsym(handle, "mlip_attn_torch_backend");
      if (entry == nullptr)
        load_error = std::string(MLIP_ATTN_TORCH_LIBRARY) +
            " has no mlip_attn_torch_backend; rebuild it with: mlip-attn build-lammps";
      else
        backend = entry();
    }
  }
  if (backend == nullptr) error = load_error;
  return backend;
}

}    // namespace mlip_attn
