#include "model/model.h"

#include <algorithm>
#include <fstream>
#include <string>

#include "model/alibi.h"
#include "util/error.h"

namespace hs {

namespace {

int64_t mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return int64_t(8) << 30;  // not Linux-like: assume 8 GB
}

int64_t param_count(const BloomConfig& c) {
  const int64_t d = c.hidden;
  return c.vocab * d + 4 * d + c.n_layer * (12 * d * d + 13 * d);
}

}  // namespace

Model::Model(const std::string& spec, ModelOptions opts) : ckpt_(spec) {
  const BloomConfig& c = config();
  slopes_ = alibi_slopes(c.n_head);
  const int64_t budget = opts.cache_bytes >= 0 ? opts.cache_bytes : mem_available_bytes() / 2;
  resident_ = param_count(c) * int64_t(sizeof(float)) <= budget;
  emb_ln_w_ = load("word_embeddings_layernorm.weight");
  emb_ln_b_ = load("word_embeddings_layernorm.bias");
  lnf_w_ = load("ln_f.weight");
  lnf_b_ = load("ln_f.bias");
  if (resident_) {
    emb_ = load("word_embeddings.weight");
    layers_.resize(c.n_layer);
  }
}

F32Tensor Model::load(const std::string& name, F32Tensor&& reuse) {
  const TensorView& t = ckpt_.tensor(name);
  F32Tensor out = std::move(reuse);
  out.numel = t.numel();
  const bool aligned = reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0;
  if (t.dtype == DType::F32 && aligned) {
    out.data = reinterpret_cast<const float*>(t.data);  // zero-copy view of the mapping
    return out;
  }
  out.owned.resize(out.numel);  // same size as the reused buffer: no allocation, no zeroing
  convert_to_f32(t.dtype, t.data, out.numel, out.owned.data());
  out.data = out.owned.data();
  ckpt_.release(t);  // the converted copy is what we use; drop the source pages from RSS
  return out;
}

std::shared_ptr<const LayerWeights> Model::layer(int64_t l) {
  if (resident_ && layers_[l]) return layers_[l];
  // Streaming reuses the buffers of the last released layer: a fresh allocation per layer costs
  // page faults and zeroing that take longer than the conversion itself.
  LayerWeights* w = spare_ ? spare_.release() : new LayerWeights;
  F32Tensor* fields[kLayerTensors] = {&w->ln1_w,   &w->ln1_b,   &w->qkv_w, &w->qkv_b,
                                      &w->dense_w, &w->dense_b, &w->ln2_w, &w->ln2_b,
                                      &w->fc1_w,   &w->fc1_b,   &w->fc2_w, &w->fc2_b};
  for (int k = 0; k < kLayerTensors; ++k)
    *fields[k] = load(layer_tensor_name(l, k), std::move(*fields[k]));
  if (resident_) return layers_[l] = std::shared_ptr<const LayerWeights>(w);
  return std::shared_ptr<const LayerWeights>(
      w, [this](const LayerWeights* done) { spare_.reset(const_cast<LayerWeights*>(done)); });
}

void Model::embed(std::span<const int32_t> ids, float* out) {
  const int64_t d = config().hidden, V = config().vocab;
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw Error(ckpt_.dir(), "token id " + std::to_string(id) + " is outside the vocabulary (" +
                                   std::to_string(V) + " rows)");
  if (resident_) {
    for (size_t t = 0; t < ids.size(); ++t)
      std::copy_n(emb_.data + int64_t(ids[t]) * d, d, out + t * d);
    return;
  }
  const TensorView& e = ckpt_.tensor("word_embeddings.weight");
  const size_t row_bytes = d * dtype_size(e.dtype);
  for (size_t t = 0; t < ids.size(); ++t)
    convert_to_f32(e.dtype, e.data + ids[t] * row_bytes, d, out + t * d);
}

void Model::for_each_vocab_chunk(int64_t chunk_rows,
                                 const std::function<void(int64_t, int64_t, const float*)>& fn) {
  const int64_t d = config().hidden, V = config().vocab;
  if (resident_) {
    for (int64_t r = 0; r < V; r += chunk_rows)
      fn(r, std::min(chunk_rows, V - r), emb_.data + r * d);
    return;
  }
  const TensorView& e = ckpt_.tensor("word_embeddings.weight");
  const size_t row_bytes = d * dtype_size(e.dtype);
  std::vector<float> buf(chunk_rows * d);
  for (int64_t r = 0; r < V; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, V - r);
    convert_to_f32(e.dtype, e.data + r * row_bytes, n * d, buf.data());
    fn(r, n, buf.data());
  }
  ckpt_.release(e);
}

}  // namespace hs
