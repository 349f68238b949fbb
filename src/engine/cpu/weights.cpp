#include "engine/cpu/weights.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "model/alibi.h"
#include "ops/cpu/ops.h"
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

int64_t param_count(const ModelConfig& c) {
  int64_t n = 0;
  for (int r = 0; r < kModelRoles; ++r)
    if (role_present(c, ModelRole(r))) n += role_numel(c, ModelRole(r));
  for (int r = 0; r < kLayerRoles; ++r)
    if (role_present(c, LayerRole(r))) n += c.n_layer * role_numel(c, LayerRole(r));
  return n;
}

// A whole tensor as fp32: a zero-copy view of the mapping when it is aligned F32 in the
// internal layout, else converted (and permuted) into the buffer of `reuse`.
template <class Read>
F32Tensor load(const Checkpoint& ck, const TensorView& t, bool internal, Read&& read,
               F32Tensor&& reuse = {}) {
  F32Tensor out = std::move(reuse);
  out.numel = t.numel();
  const bool aligned = reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0;
  if (t.dtype == DType::F32 && aligned && internal) {
    out.data = reinterpret_cast<const float*>(t.data);
    return out;
  }
  out.owned.resize(out.numel);  // same size as the reused buffer: no allocation, no zeroing
  read(t.shape[0], out.owned.data());
  out.data = out.owned.data();
  ck.release(t);  // the converted copy is what we use; drop the source pages from RSS
  return out;
}

F32Tensor load(const Checkpoint& ck, ModelRole r) {
  return load(ck, ck.tensor(r), true,
              [&](int64_t rows, float* out) { ck.read_rows(r, DType::F32, 0, rows, out); });
}

bool bf16_view(const TensorView& t) {
  return t.dtype == DType::BF16 && reinterpret_cast<uintptr_t>(t.data) % alignof(uint16_t) == 0;
}

bool all_matrices_bf16(const Checkpoint& ck) {
  const ModelConfig& c = ck.config();
  if (!bf16_view(ck.tensor(c.tied_head ? ModelRole::tok_emb : ModelRole::lm_head))) return false;
  for (int64_t l = 0; l < c.n_layer; ++l)
    for (int k = 0; k < kLayerRoles; ++k)
      if (role_is_matrix(LayerRole(k)) && role_present(c, LayerRole(k)) &&
          !bf16_view(ck.tensor(LayerRole(k), l)))
        return false;
  return true;
}

}  // namespace

cpu::Bf16Kernel use_bf16_products(const Checkpoint& ck) {
  using cpu::Bf16Kernel;
  const char* env = std::getenv("HEADSURGEON_CPU_BF16");
  const std::string v = env ? env : "";
  if (!v.empty() && v != "0" && v != "1" && v != "avx2")
    throw Error("HEADSURGEON_CPU_BF16", "must be 0, 1 or avx2, not '" + v + "'");
  if (v == "0" || !all_matrices_bf16(ck)) return Bf16Kernel::none;
  if (v == "avx2") {
    if (!cpu::cpu_runs(Bf16Kernel::avx2))
      throw Error("HEADSURGEON_CPU_BF16", "is avx2 but this CPU has no AVX2 and FMA instructions");
    return Bf16Kernel::avx2;
  }
  const Bf16Kernel k = cpu::best_bf16_kernel();
  if (v == "1" && k == Bf16Kernel::none)
    throw Error("HEADSURGEON_CPU_BF16",
                "is 1 but this CPU has neither AVX512-BF16 nor AVX2 and FMA instructions");
  return k;
}

Model::Model(const std::string& spec, ModelOptions opts) : ckpt_(spec) {
  const ModelConfig& c = config();
  slopes_ = alibi_slopes(c.n_head, c.alibi_bias_max);
  const int64_t budget = opts.cache_bytes >= 0 ? opts.cache_bytes : mem_available_bytes() / 2;
  // With bf16 products inference reads the mapping itself: no fp32 copy is kept (layer(), for
  // dormancy and the training copy, streams).
  bf16_ = use_bf16_products(ckpt_);
  resident_ = !bf16_products() && param_count(c) * int64_t(sizeof(float)) <= budget;
  if (bf16_products()) layers16_.resize(c.n_layer);
  for (ModelRole r :
       {ModelRole::emb_norm, ModelRole::emb_norm_b, ModelRole::out_norm, ModelRole::out_norm_b})
    if (role_present(c, r)) norms_[int(r)] = load(ckpt_, r);
  if (resident_) {
    emb_ = load(ckpt_, ModelRole::tok_emb);
    if (!c.tied_head) head_ = load(ckpt_, ModelRole::lm_head);
    layers_.resize(c.n_layer);
  }
}

std::shared_ptr<const LayerWeights> Model::layer(int64_t l) {
  if (resident_ && layers_[l]) return layers_[l];
  // Streaming reuses the buffers of the last released layer: a fresh allocation per layer costs
  // page faults and zeroing that take longer than the conversion itself.
  LayerWeights* w = spare_ ? spare_.release() : new LayerWeights;
  for (int k = 0; k < kLayerRoles; ++k) {
    const auto r = LayerRole(k);
    if (!role_present(config(), r)) continue;
    w->t[k] = load(
        ckpt_, ckpt_.tensor(r, l), !role_permuted(config(), r),
        [&](int64_t rows, float* out) { ckpt_.read_rows(r, l, DType::F32, 0, rows, out); },
        std::move(w->t[k]));
  }
  if (resident_) return layers_[l] = std::shared_ptr<const LayerWeights>(w);
  return std::shared_ptr<const LayerWeights>(
      w, [this](const LayerWeights* done) { spare_.reset(const_cast<LayerWeights*>(done)); });
}

std::shared_ptr<const LayerWeights> Model::inference_layer(int64_t l) {
  if (!bf16_products()) return layer(l);
  if (layers16_[l]) return layers16_[l];
  auto w = std::make_shared<LayerWeights>();
  w->kernel = bf16_;
  for (int k = 0; k < kLayerRoles; ++k) {
    const auto r = LayerRole(k);
    if (!role_present(config(), r)) continue;
    const TensorView& t = ckpt_.tensor(r, l);
    if (!role_is_matrix(r)) {  // norms and biases: a few d floats, converted
      F32Tensor& v = w->t[k];
      v.numel = t.numel();
      v.owned.resize(size_t(v.numel));
      ckpt_.read_rows(r, l, DType::F32, 0, t.shape[0], v.owned.data());
      v.data = v.owned.data();
    } else if (role_permuted(config(), r)) {  // MPT's Wqkv: its rows reordered once, still bf16
      auto& p = permuted16_.emplace_back(size_t(t.numel()));
      ckpt_.read_rows(r, l, DType::BF16, 0, t.shape[0], p.data());
      w->bf16[k] = p.data();
    } else {
      w->bf16[k] = reinterpret_cast<const uint16_t*>(t.data);
    }
  }
  return layers16_[l] = std::move(w);
}

const uint16_t* Model::head_bf16() const {
  if (!bf16_products()) return nullptr;
  return reinterpret_cast<const uint16_t*>(
      ckpt_.tensor(config().tied_head ? ModelRole::tok_emb : ModelRole::lm_head).data);
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
  for (size_t t = 0; t < ids.size(); ++t)
    ckpt_.read_rows(ModelRole::tok_emb, DType::F32, ids[t], 1, out + t * d);
}

void for_each_row_chunk(const float* rows, int64_t V, int64_t d, int64_t chunk_rows,
                        const std::function<void(int64_t, int64_t, const float*)>& fn) {
  for (int64_t r = 0; r < V; r += chunk_rows) fn(r, std::min(chunk_rows, V - r), rows + r * d);
}

void Model::for_each_vocab_chunk(int64_t chunk_rows,
                                 const std::function<void(int64_t, int64_t, const float*)>& fn) {
  const ModelConfig& c = config();
  const int64_t d = c.hidden, V = c.vocab;
  if (resident_)
    return for_each_row_chunk(c.tied_head ? emb_.data : head_.data, V, d, chunk_rows, fn);
  const ModelRole head = c.tied_head ? ModelRole::tok_emb : ModelRole::lm_head;
  std::vector<float> buf(chunk_rows * d);
  for (int64_t r = 0; r < V; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, V - r);
    ckpt_.read_rows(head, DType::F32, r, n, buf.data());
    fn(r, n, buf.data());
  }
  ckpt_.release(ckpt_.tensor(head));
}

}  // namespace hs
