#include "model/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <string_view>

#include "util/error.h"
#include "util/files.h"

namespace hs {

namespace fs = std::filesystem;

nlohmann::json written_config(const ModelConfig& c, const nlohmann::json& base, DType stored) {
  nlohmann::json j = c.to_json(base);
  j["dtype"] = stored == DType::BF16 ? "bfloat16" : stored == DType::F16 ? "float16" : "float32";
  return j;
}

Checkpoint::Checkpoint(const std::string& spec) : dir_(resolve_model_dir(spec)) {
  const std::string cfg_path = (fs::path(dir_) / "config.json").string();
  config_json_ = read_json_file(cfg_path);
  config_ = ModelConfig::from_json(config_json_, cfg_path);
  files_ = std::make_unique<WeightFiles>(dir_);

  const std::string lm_head = tensor_name(config_, ModelRole::lm_head);
  for (const auto& [name, view] : files_->tensors()) {
    const std::string canon =
        name.starts_with(kBasePrefix) ? name.substr(std::string_view(kBasePrefix).size()) : name;
    if (canon == lm_head && config_.tied_head) continue;  // the tied head is the embedding
    if (!index_.emplace(canon, view).second)
      throw Error(view->file, "tensor '" + printable(canon) + "' appears twice in the checkpoint " +
                                  "(with and without the '" + kBasePrefix + "' prefix)");
  }
  if (config_.family == Family::mpt && index_.count("wpe.weight"))
    throw Error(files_->where(),
                "learned position embeddings (wpe.weight) beside ALiBi are not supported");

  // Checked one by one, so a config promising far more layers than the file holds fails at the
  // first missing one.
  model_.assign(kModelRoles, nullptr);
  for (int r = 0; r < kModelRoles; ++r) {
    const auto role = ModelRole(r);
    if (role_present(config_, role))
      model_[r] = &need(tensor_name(config_, role), role_name(role), role_shape(config_, role));
  }
  layers_.assign(size_t(config_.n_layer) * kLayerRoles, nullptr);
  for (int64_t l = 0; l < config_.n_layer; ++l)
    for (int r = 0; r < kLayerRoles; ++r) {
      const auto role = LayerRole(r);
      if (role_present(config_, role))
        layers_[l * kLayerRoles + r] =
            &need(tensor_name(config_, role, l),
                  std::string(role_name(role)) + " of layer " + std::to_string(l),
                  role_shape(config_, role));
    }
}

const TensorView& Checkpoint::need(const std::string& name, const std::string& role,
                                   const std::vector<int64_t>& shape) {
  const auto it = index_.find(name);
  const std::string full =
      name == tensor_name(config_, ModelRole::lm_head) ? name : kBasePrefix + name;
  if (it == index_.end())
    throw Error(files_->where(),
                "missing tensor '" + full + "' (" + role + ", shape " + shape_str(shape) + ")");
  const TensorView& t = *it->second;
  if (t.shape != shape)
    throw Error(t.file, "tensor '" + t.name + "' (" + role + ") has shape " + shape_str(t.shape) +
                            ", expected " + shape_str(shape));
  if (!is_float(t.dtype))
    throw Error(t.file, "tensor '" + t.name + "' (" + role + ") has dtype " + dtype_name(t.dtype) +
                            ", expected a float type (F32, F16, BF16 or F64)");
  return t;
}

const TensorView& Checkpoint::tensor(ModelRole r) const {
  if (!model_[int(r)])
    throw Error(
        dir_, std::string("this ") + family_name(config_.family) + " model has no " + role_name(r));
  return *model_[int(r)];
}

const TensorView& Checkpoint::tensor(LayerRole r, int64_t layer) const {
  const TensorView* t = layers_.at(size_t(layer) * kLayerRoles + int(r));
  if (!t)
    throw Error(
        dir_, std::string("this ") + family_name(config_.family) + " model has no " + role_name(r));
  return *t;
}

const TensorView& Checkpoint::tensor(const TensorRef& t) const {
  return t.per_layer ? tensor(t.layer_role, t.layer) : tensor(t.model_role);
}

void Checkpoint::read_rows(const TensorRef& t, DType dst, int64_t first, int64_t n,
                           void* out) const {
  if (t.per_layer)
    read_rows(t.layer_role, t.layer, dst, first, n, out);
  else
    read_rows(t.model_role, dst, first, n, out);
}

void Checkpoint::read_rows(ModelRole r, DType dst, int64_t first, int64_t n, void* out) const {
  read_rows(tensor(r), false, dst, first, n, out);
}

void Checkpoint::read_rows(LayerRole r, int64_t layer, DType dst, int64_t first, int64_t n,
                           void* out) const {
  read_rows(tensor(r, layer), role_permuted(config_, r), dst, first, n, out);
}

void Checkpoint::read_rows(const TensorView& t, bool qkv, DType dst, int64_t first, int64_t n,
                           void* out) const {
  const int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
  const size_t row_bytes = size_t(cols) * dtype_size(t.dtype);
  const std::byte* src = t.data + first * row_bytes;
  std::vector<std::byte> permuted;
  if (qkv) {
    permuted.resize(size_t(n) * row_bytes);
    qkv_copy_rows(config_.qkv_layout, false, t.data, permuted.data(), first, n, row_bytes,
                  config_.n_head, config_.head_dim());
    src = permuted.data();
  }
  const size_t count = size_t(n * cols);
  if (dst == t.dtype) {
    std::memcpy(out, src, count * dtype_size(dst));
  } else if (dst == DType::F32) {
    convert_to_f32(t.dtype, src, count, static_cast<float*>(out));
  } else {
    std::vector<float> f32(count);
    convert_to_f32(t.dtype, src, count, f32.data());
    convert_from_f32(f32.data(), count, dst, out);
  }
}

bool Checkpoint::has(const std::string& name) const { return index_.count(name) > 0; }

const TensorView& Checkpoint::tensor(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw Error(dir_, "missing tensor '" + name + "'");
  return *it->second;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : index_) out.push_back(name);
  return out;
}

}  // namespace hs
