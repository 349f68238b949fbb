// The trainable state of a surgery, whatever the device: the target heads' slices as compact
// fp32 tensors (the optimizer's view), read from a checkpoint, re-initialised, and written back
// into a copy of the checkpoint that keeps every other byte (docs/numerics.md §3).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/checkpoint.h"

namespace hs {

// A target head: its Q/K/V rows of the fused qkv projection (ops/qkv_layout.h), their bias
// rows, and its input columns [h*hd, (h+1)*hd) of the output projection.
struct HeadRef {
  int layer = 0, head = 0;
  auto operator<=>(const HeadRef&) const = default;
};

struct TargetSlices {
  std::vector<HeadRef> targets;  // sorted
  int64_t hidden = 0, head_dim = 0;
  // Per target: qkv rows [3hd, d] (internal order q, k, v), qkv bias [3hd] (empty when the
  // family has none), output-projection input columns as [d, hd].
  std::vector<std::vector<float>> qkv_rows, qkv_bias, dense_cols;

  // Zero-filled slices of these targets (sorted here) for a model of config c.
  static TargetSlices zeros(const ModelConfig& c, std::vector<HeadRef> targets);
  // The slices' values in a checkpoint, as fp32.
  static TargetSlices read(const Checkpoint& ck, std::vector<HeadRef> targets);
  // Every buffer in a fixed order (per target: qkv rows, bias when present, columns): the
  // order of gradients, moments and the run state.
  std::vector<std::vector<float>*> buffers();
  std::vector<const std::vector<float>*> buffers() const;
};

enum class InitKind { XavierNormal, XavierUniform };

// The paper's surgery on the slices: each head's Q, K and V rows re-drawn (Xavier over its
// [3hd, d] row block, in q, k, v order, as one tensor, like init on the slice weight[rows]:
// fan_in = d, fan_out = 3hd), its bias rows zeroed, its output-projection columns zeroed.
// Deterministic for a seed; targets drawn in order.
void reinitialize(TargetSlices& s, InitKind kind, uint64_t seed);

// DIR as a copy of the checkpoint `in` with the slices written into their rows and columns
// (converted to each tensor's dtype, in the family's own qkv layout): config.json (in's, with
// the family's keys set), model.safetensors with the family's "transformer."-prefixed names
// and every tensor's dtype and bytes outside the slices as in `in`, and tokenizer.json when in
// has one. Atomic: written to DIR.tmp-PID, then swapped in; an existing DIR is replaced only
// once the new one is complete.
void write_with_slices(const std::string& dir, const Checkpoint& in, const TargetSlices& s);

}  // namespace hs
