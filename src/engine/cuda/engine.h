// The CUDA engine: a checkpoint's weights on the GPU in a half type (or fp32), the block of
// engine/cpu/block.cpp as cuBLAS products and the kernels of ops/cuda, and a KV-cache decoder
// whose single-token steps replay a captured CUDA graph. Every family the seam describes
// (model/config.h) runs through it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "model/checkpoint.h"
#include "ops/adamw.h"

namespace hs::cuda {

// dtype: "auto" (the checkpoint's half type, bf16 for an fp32 checkpoint), "bf16", "f16", "f32".
// Throws hs::Error, in one line, when no usable GPU is present or the weights cannot fit.
std::unique_ptr<Engine> make_engine(const Checkpoint& ckpt, const std::vector<float>& slopes,
                                    const std::string& dtype);

// Surgery on the GPU (engine/engine.h): the weights in dtype as for make_engine, the targets'
// slices as fp32 masters with their gradients and AdamW moments beside them. The same errors,
// and one more when the slices' training state does not fit as well.
std::unique_ptr<Surgery> make_surgery(const Checkpoint& ckpt, const std::vector<float>& slopes,
                                      const std::string& dtype, const std::vector<HeadRef>& targets,
                                      AdamWConfig adam);

}  // namespace hs::cuda
