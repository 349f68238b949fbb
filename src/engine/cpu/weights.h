// The weights of a model as the fp32 CPU code reads them, by role (model/roles.h): from a
// checkpoint on disk (Model) or from the weights of a run in progress (engine/cpu/train.h).
//
// A Model keeps the checkpoint's (possibly half-precision, memory-mapped) tensors and converts
// them to fp32 on demand. When the fp32 weights fit comfortably in RAM they are converted once
// and kept; otherwise each layer is converted when used and dropped after (streaming), so
// bloom-7b1 (28 GB in fp32) still runs on a 24 GB machine. A bf16 checkpoint on a CPU with
// AVX512-BF16, or AVX2 and FMA, skips all that for inference: the products read the mapped bf16
// weights (inference_layer, head_bf16), and no fp32 copy of a weight matrix is made.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/roles.h"
#include "ops/cpu/ops.h"

namespace hs {

// A tensor as fp32: either a view of the mapped file (aligned F32 data) or an owned copy.
struct F32Tensor {
  const float* data = nullptr;
  std::vector<float> owned;
  int64_t numel = 0;
};

// One layer's tensors by role; an absent role (a bias the family does not have) is null.
// For inference with bf16 products (WeightSource::inference_layer) the weight matrices are bf16
// views of the checkpoint in bf16, multiplied with kernel, and their fp32 entries in t are null.
struct LayerWeights {
  std::array<F32Tensor, kLayerRoles> t;
  std::array<const uint16_t*, kLayerRoles> bf16{};
  cpu::Bf16Kernel kernel = cpu::Bf16Kernel::none;
  const float* operator[](LayerRole r) const { return t[int(r)].data; }
};

// What a pass needs from a set of weights, as fp32.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const std::vector<float>& slopes() const = 0;
  // The returned weights must not outlive the source.
  virtual std::shared_ptr<const LayerWeights> layer(int64_t l) = 0;
  // The weights an inference pass multiplies with: layer(l), or where the source runs bf16
  // products (Model::bf16_products) the matrices as bf16 and only the vectors as fp32.
  virtual std::shared_ptr<const LayerWeights> inference_layer(int64_t l) { return layer(l); }
  // The output head [V, d] in bf16 where the source runs bf16 products, else null.
  virtual const uint16_t* head_bf16() const { return nullptr; }
  // The kernel of the bf16 products (none where the source runs none).
  virtual cpu::Bf16Kernel bf16_kernel() const { return cpu::Bf16Kernel::none; }
  // out[T, d] = token embedding rows of ids; throws hs::Error for an id outside the vocabulary.
  virtual void embed(std::span<const int32_t> ids, float* out) = 0;
  // The embedding and final norms (ModelRole emb_norm*, out_norm*; null when absent).
  virtual const float* norm(ModelRole r) const = 0;
  // Calls fn(first_row, rows, data) over the output head (lm_head, or the tied embedding) in
  // chunks of fp32 rows.
  virtual void for_each_vocab_chunk(
      int64_t chunk_rows, const std::function<void(int64_t, int64_t, const float*)>& fn) = 0;
};

struct ModelOptions {
  // Bytes of converted fp32 weights that may stay resident; -1 = half of MemAvailable.
  int64_t cache_bytes = -1;
};

// Which kernel inference over a checkpoint runs its products with on the bf16 weights as stored
// (ops/cpu/ops.h, linear_forward_bf16), none for the fp32 path: where every weight matrix is
// BF16, the CPU's best (best_bf16_kernel), or as HEADSURGEON_CPU_BF16 says (0 = none; 1 = the
// best, an error on a CPU with neither kernel; avx2 = the AVX2 kernel even where AVX512-BF16 is
// there, an error on a CPU without AVX2 and FMA). Throws hs::Error for another value.
cpu::Bf16Kernel use_bf16_products(const Checkpoint& ck);

class Model : public WeightSource {
 public:
  explicit Model(const std::string& spec, ModelOptions opts = {});

  const Checkpoint& checkpoint() const { return ckpt_; }
  const ModelConfig& config() const override { return ckpt_.config(); }
  const std::vector<float>& slopes() const override { return slopes_; }
  // Whether all converted weights stay in memory (false = streaming layer by layer).
  bool resident() const { return resident_; }
  // Whether inference multiplies with the bf16 weights (use_bf16_products), and with which kernel.
  bool bf16_products() const { return bf16_ != cpu::Bf16Kernel::none; }
  cpu::Bf16Kernel bf16_kernel() const override { return bf16_; }

  std::shared_ptr<const LayerWeights> layer(int64_t l) override;
  std::shared_ptr<const LayerWeights> inference_layer(int64_t l) override;
  const uint16_t* head_bf16() const override;
  void embed(std::span<const int32_t> ids, float* out) override;
  const float* norm(ModelRole r) const override { return norms_[int(r)].data; }
  void for_each_vocab_chunk(int64_t chunk_rows,
                            const std::function<void(int64_t, int64_t, const float*)>& fn) override;

 private:
  Checkpoint ckpt_;
  std::vector<float> slopes_;
  bool resident_ = false;
  cpu::Bf16Kernel bf16_ = cpu::Bf16Kernel::none;
  std::vector<std::shared_ptr<const LayerWeights>> layers_;  // filled when resident
  // bf16 products: each layer's views and fp32 vectors, made on first use and kept
  std::vector<std::shared_ptr<const LayerWeights>> layers16_;
  std::vector<std::vector<uint16_t>> permuted16_;  // bf16 copies of permuted matrices (MPT's Wqkv)
  std::array<F32Tensor, kModelRoles> norms_;       // the norm roles
  F32Tensor emb_, head_;                 // whole embedding and untied head, only when resident
  std::unique_ptr<LayerWeights> spare_;  // streaming: buffers of the last released layer
};

// The whole output head's rows in chunks (the tied embedding or lm_head), for any source that
// keeps them as one fp32 [V, d] array.
void for_each_row_chunk(const float* rows, int64_t V, int64_t d, int64_t chunk_rows,
                        const std::function<void(int64_t, int64_t, const float*)>& fn);

}  // namespace hs
