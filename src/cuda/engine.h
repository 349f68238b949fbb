// The CUDA engine: the checkpoint's weights on the GPU in a half type (or fp32), the forward pass
// of model/forward.cpp as cuBLAS products and the kernels of ops/cuda, and a KV-cache decoder
// whose single-token steps replay a captured CUDA graph.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/engine.h"

namespace hs::cuda {

// dtype: "auto" (the checkpoint's half type, bf16 for an fp32 checkpoint), "bf16", "f16", "f32".
std::unique_ptr<Engine> make_engine(const Checkpoint& ckpt, const std::vector<float>& slopes,
                                    const std::string& dtype);

}  // namespace hs::cuda
