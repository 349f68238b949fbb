#include "backend/backend.h"

#include "engine/cpu/forward.h"
#include "engine/cpu/surgery.h"
#include "util/error.h"
#ifdef HEADSURGEON_HAVE_CUDA
#include "cuda/runtime.h"
#include "engine/cuda/engine.h"
#endif

namespace hs {

std::string cuda_unusable_reason() {
#ifdef HEADSURGEON_HAVE_CUDA
  return cuda::unusable_reason();
#else
  return "this headsurgeon was built without CUDA (configure with -DHEADSURGEON_CUDA=ON)";
#endif
}

DeviceKind resolve_device(const std::string& spec, const std::string& where) {
  if (spec == "cpu") return DeviceKind::cpu;
  if (spec == "auto") return cuda_unusable_reason().empty() ? DeviceKind::cuda : DeviceKind::cpu;
  if (spec == "cuda") {
    const std::string why = cuda_unusable_reason();
    if (!why.empty()) throw Error(where + " cuda", why);
    return DeviceKind::cuda;
  }
  throw Error(where, "'" + spec + "' is not one of auto, cpu, cuda");
}

namespace {
void check_gpu_dtype(const std::string& gpu_dtype) {
  if (gpu_dtype != "auto" && gpu_dtype != "bf16" && gpu_dtype != "f16" && gpu_dtype != "f32")
    throw Error("--gpu-dtype", "'" + gpu_dtype + "' is not one of auto, bf16, f16, f32");
}
}  // namespace

std::unique_ptr<Engine> make_engine(Model& model, DeviceKind device, const std::string& gpu_dtype) {
  check_gpu_dtype(gpu_dtype);
  if (device == DeviceKind::cpu) return std::make_unique<CpuEngine>(model);
#ifdef HEADSURGEON_HAVE_CUDA
  return cuda::make_engine(model.checkpoint(), model.slopes(), gpu_dtype);
#else
  throw Error("--device cuda", cuda_unusable_reason());
#endif
}

std::unique_ptr<Surgery> make_surgery(Model& model, DeviceKind device, const std::string& gpu_dtype,
                                      const std::vector<HeadRef>& targets, AdamWConfig adam,
                                      int cpu_threads) {
  check_gpu_dtype(gpu_dtype);
  if (device == DeviceKind::cpu)
    return std::make_unique<CpuSurgery>(model, targets, adam, cpu_threads);
#ifdef HEADSURGEON_HAVE_CUDA
  return cuda::make_surgery(model.checkpoint(), model.slopes(), gpu_dtype, targets, adam);
#else
  throw Error("--device cuda", cuda_unusable_reason());
#endif
}

}  // namespace hs
