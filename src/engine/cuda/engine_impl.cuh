// Private to engine/cuda: what its three files share. weights.cu puts a checkpoint on the
// device by role, forward.cu runs the block (CudaEngine::run_layers, used by both the forward
// pass and the decoder) and the output head, decoder.cu decodes with the KV cache. Templates
// over the weight type W are instantiated in the file that defines their members.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/gemm.h"
#include "cuda/runtime.h"
#include "engine/cuda/engine.h"
#include "model/roles.h"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

template <class W>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<W, float>) return DType::F32;
  if constexpr (std::is_same_v<W, __half>) return DType::F16;
  return DType::BF16;
}

constexpr size_t align256(size_t n) { return (n + 255) & ~size_t(255); }

// Vocabulary columns per output-head chunk for a pass of `rows` rows: at most ~256 MB of fp32
// logits at a time.
int64_t vocab_chunk(int64_t rows, int64_t V);

// Device bytes of every weight of c (matrices as w_size bytes, vectors and slopes fp32), as
// DeviceWeights allocates them: the memory check before an upload.
size_t weight_bytes(const ModelConfig& c, size_t w_size);

// The weight type for the dtype option ("auto", "bf16", "f16", "f32"), after checking that a
// usable GPU is present, that the head dimension is supported and that the weights fit in its
// free memory: one hs::Error line otherwise.
DType check_device_and_memory(const Checkpoint& ck, const std::string& dtype);

// Every weight on the device in one allocation, by role: matrices in W, LayerNorm parameters and
// biases in fp32; a role the family lacks is null. MPT's fused qkv rows arrive in the internal
// layout (Checkpoint::read_rows permutes them).
template <class W>
struct DeviceWeights {
  struct Layer {
    std::array<const void*, kLayerRoles> t{};
    const W* m(LayerRole r) const { return static_cast<const W*>(t[int(r)]); }
    const float* v(LayerRole r) const { return static_cast<const float*>(t[int(r)]); }
  };
  DeviceBuffer store;
  std::array<const void*, kModelRoles> model{};
  std::vector<Layer> layers;
  const float* slopes = nullptr;

  DeviceWeights(const Checkpoint& ck, const std::vector<float>& host_slopes);
  const W* m(ModelRole r) const { return static_cast<const W*>(model[int(r)]); }
  // Writable views of a layer's tensors (surgery writes its slices there): the store is ours.
  W* mutable_matrix(LayerRole r, int64_t l) { return const_cast<W*>(layers[l].m(r)); }
  float* mutable_vector(LayerRole r, int64_t l) { return const_cast<float*>(layers[l].v(r)); }
  const float* v(ModelRole r) const { return static_cast<const float*>(model[int(r)]); }
  // The output head's [V, d] rows: lm_head, or the tied embedding.
  const W* head() const {
    return m(model[int(ModelRole::lm_head)] ? ModelRole::lm_head : ModelRole::tok_emb);
  }
};

// Activations of one pass over N rows, grown on demand. Every growth bumps `generation`, which
// invalidates captured graphs (they hold the old addresses).
template <class W>
struct Workspace {
  DeviceBuffer buf;
  int64_t rows = 0;
  int generation = 0;
  float *x, *a32, *qkv, *y, *h32;  // residual, post-LN residual, fused qkv, GEMM outputs
  W *a, *ctx, *hw;                 // GEMM inputs: LayerNorm output, attention output, MLP hidden

  // Bytes per row (the 256-byte alignment of its eight pieces aside).
  static size_t bytes_per_row(int64_t d, int64_t F) {
    return size_t(6 * d + F) * 4 + size_t(2 * d + F) * sizeof(W);
  }
  // Room for N rows of width d with an MLP of width F.
  void ensure(int64_t N, int64_t d, int64_t F) {
    if (N <= rows) return;
    const int64_t n = std::max<int64_t>(N, rows + rows / 2);
    const size_t f = size_t(n * d) * 4, w = size_t(n * d) * sizeof(W);
    const size_t ff = size_t(n * F) * 4, fw = size_t(n * F) * sizeof(W);
    size_t total = 0;
    for (size_t s : {f, f, 3 * f, f, ff, w, w, fw}) total += align256(s);
    buf = DeviceBuffer();  // free first: the old and new workspace need not fit together
    buf = DeviceBuffer(total);
    char* p = buf.as<char>();
    auto take = [&](size_t s) {
      char* r = p;
      p += align256(s);
      return r;
    };
    x = reinterpret_cast<float*>(take(f));
    a32 = reinterpret_cast<float*>(take(f));
    qkv = reinterpret_cast<float*>(take(3 * f));
    y = reinterpret_cast<float*>(take(f));
    h32 = reinterpret_cast<float*>(take(ff));
    a = reinterpret_cast<W*>(take(w));
    ctx = reinterpret_cast<W*>(take(w));
    hw = reinterpret_cast<W*>(take(fw));
    rows = n;
    ++generation;
  }
};

// What a training pass keeps of layers l0.. for the backward (engine/cuda/surgery.cu), one slab
// of N rows per layer: the residual stream before each sub-block (x_in, x_mid), the fused qkv
// after qkv_split (queries in place; keys and values stay in the pass's per-layer cache) and its
// raw GEMM output under clip_qkv (else null), the MLP's pre-activation, the attention's lse, and
// in the weight type W the LayerNorm output and the attention output.
struct TrainSave {
  int64_t l0 = 0;
  std::vector<float*> x_in, x_mid, qkv, qkv_raw, h32, lse;
  std::vector<void*> a, ctx;
};

// One pass through the layers: where the rows go and what to record.
struct Pass {
  const int32_t* ids;  // [N] on the device
  RowMap map;
  int max_rows;  // most new rows of one sequence
  float* kv;     // slots of one layer's [2][B][H][cap][hd] each (kv_slot)
  // Layers below kv_keep_from share slot 0 (their K/V are not needed after the layer); from it
  // on, each layer keeps its own slot: L for the full forward, 0 for the decoder, the lowest
  // target layer for surgery.
  int64_t kv_keep_from;
  int64_t kv_slot(int64_t l) const {
    return l < kv_keep_from ? 0 : l - kv_keep_from + (kv_keep_from > 0 ? 1 : 0);
  }
  int64_t kv_slots(int64_t n_layer) const { return kv_slot(n_layer - 1) + 1; }
  int cap;
  float* row_stats = nullptr;  // [L][3][H][N]
  float* probs = nullptr;      // [L][probs_layer]
  const int64_t* probs_off = nullptr;
  int64_t probs_layer = 0;
  const std::vector<uint8_t>* ablate_mlp = nullptr;
  const std::function<void(int64_t, int64_t)>* progress = nullptr;
  const TrainSave* save = nullptr;  // a training pass (layers from save->l0 are kept)
};

template <class W>
class CudaEngine final : public Engine {
 public:
  CudaEngine(const Checkpoint& ck, const std::vector<float>& slopes);
  ~CudaEngine() override;

  const ModelConfig& config() const override { return config_; }
  const std::vector<float>& slopes() const override { return slopes_; }
  std::string device() const override { return device_; }
  std::vector<SequenceOutput> forward(const std::vector<std::vector<int32_t>>& seqs,
                                      const ForwardOptions& opts) override;
  std::unique_ptr<IncrementalDecoder> decoder(int64_t batch, int64_t capacity) override;

  cudaStream_t stream() const { return stream_; }
  Workspace<W>& workspace() { return ws_; }
  const DeviceWeights<W>& weights() const { return weights_; }
  DeviceWeights<W>& mutable_weights() { return weights_; }
  cublasHandle_t blas() const { return blas_; }

  // Enqueues embedding, every layer, and the last residual update: ws_.x then holds the final
  // hidden states (before the final norm) of the pass's rows. The workspace must hold N rows.
  void run_layers(const Pass& p);
  // out[N, n] (row stride ldo) = logit_scale * a[N, d] @ head rows [v0, v0 + n)^T: a chunk of the
  // output head over final-norm outputs a (engine/cpu/block.h's head_logits).
  void head_logits(float* out, int ldo, const W* a, int N, int64_t v0, int n);

 private:
  void forward_group(const std::vector<std::vector<int32_t>>& seqs, const std::vector<size_t>& idx,
                     const ForwardOptions& opts, std::vector<SequenceOutput>& out);
  // run_layers(p) for forward_group, replayed from a CUDA graph where the pass is small and its
  // shape came before (see forward.cu).
  void run_layers_graphed(const Pass& p, bool small);

  ModelConfig config_;
  std::vector<float> slopes_;
  DeviceWeights<W> weights_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  DeviceBuffer blas_ws_;
  Workspace<W> ws_;
  // Buffers of forward(), kept between calls (grow only): no cudaMalloc/cudaFree per diagnosis.
  struct {
    DeviceBuffer meta, kv, stats, probs, chunk, run;
  } fw_;
  // Graphs of small passes by everything they bake in: the shape, the kernels chosen, the
  // buffers' addresses.
  struct GraphKey {
    int N, B, max_rows;
    bool tensor_cores;
    int generation;
    const void *ids, *kv, *stats;
    auto operator<=>(const GraphKey&) const = default;
  };
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  std::map<GraphKey, int> graph_seen_;  // eager passes per key (the first is never captured)
  std::string device_;
};

}  // namespace hs::cuda
