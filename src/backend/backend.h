// Choosing where a model runs: the CPU reference (engine/cpu) or the CUDA engine (engine/cuda,
// when this build has it and a usable GPU is present).
#pragma once

#include <memory>
#include <string>

#include "engine/cpu/weights.h"
#include "engine/engine.h"
#include "ops/adamw.h"

namespace hs {

// Where to run: "auto" (CUDA when this build has it and a usable GPU is present), "cpu" or
// "cuda" (an error naming why when it cannot run). Errors name `where` the choice came from.
enum class DeviceKind { cpu, cuda };
DeviceKind resolve_device(const std::string& spec, const std::string& where = "--device");
// Why CUDA cannot run here ("" when it can): not built in, no device, too old a GPU.
std::string cuda_unusable_reason();

// The engine for `device` over a checkpoint opened as `model`. gpu_dtype is the GPU's weight
// type: "auto" (the checkpoint's half type, bf16 for fp32 checkpoints), "bf16", "f16", "f32".
std::unique_ptr<Engine> make_engine(Model& model, DeviceKind device,
                                    const std::string& gpu_dtype = "auto");

// Surgery (engine/engine.h) on `device` over a checkpoint opened as `model`, for these targets:
// on the CPU the weights are converted into one fp32 training copy (cpu_threads sequences at a
// time, engine/cpu/surgery.h), on a GPU they are uploaded in gpu_dtype with the slices' fp32
// masters beside them.
std::unique_ptr<Surgery> make_surgery(Model& model, DeviceKind device, const std::string& gpu_dtype,
                                      const std::vector<HeadRef>& targets, AdamWConfig adam,
                                      int cpu_threads);

}  // namespace hs
