#include "model/slices.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "util/error.h"
#include "util/files.h"
#include "util/random.h"

namespace hs {

namespace fs = std::filesystem;

TargetSlices TargetSlices::zeros(const ModelConfig& c, std::vector<HeadRef> targets) {
  std::sort(targets.begin(), targets.end());
  TargetSlices s;
  s.targets = std::move(targets);
  const int64_t d = c.hidden, hd = c.head_dim();
  s.hidden = d, s.head_dim = hd;
  for (size_t k = 0; k < s.targets.size(); ++k) {
    s.qkv_rows.emplace_back(3 * hd * d, 0.0f);
    s.qkv_bias.emplace_back(c.linear_bias ? 3 * hd : 0, 0.0f);
    s.dense_cols.emplace_back(d * hd, 0.0f);
  }
  return s;
}

TargetSlices TargetSlices::read(const Checkpoint& ck, std::vector<HeadRef> targets) {
  const ModelConfig& c = ck.config();
  TargetSlices s = zeros(c, std::move(targets));
  const int64_t d = c.hidden, hd = c.head_dim();
  std::vector<float> wo(d * d);
  for (size_t k = 0; k < s.targets.size(); ++k) {
    const HeadRef& t = s.targets[k];
    const int64_t r0 = qkv_row(t.head, 0, hd);
    ck.read_rows(LayerRole::wqkv, t.layer, DType::F32, r0, 3 * hd, s.qkv_rows[k].data());
    if (c.linear_bias)
      ck.read_rows(LayerRole::bqkv, t.layer, DType::F32, r0, 3 * hd, s.qkv_bias[k].data());
    ck.read_rows(LayerRole::wo, t.layer, DType::F32, 0, d, wo.data());
    for (int64_t o = 0; o < d; ++o)
      std::copy_n(wo.data() + o * d + t.head * hd, hd, s.dense_cols[k].data() + o * hd);
  }
  return s;
}

std::vector<std::vector<float>*> TargetSlices::buffers() {
  std::vector<std::vector<float>*> out;
  for (size_t k = 0; k < targets.size(); ++k) {
    out.push_back(&qkv_rows[k]);
    if (!qkv_bias[k].empty()) out.push_back(&qkv_bias[k]);
    out.push_back(&dense_cols[k]);
  }
  return out;
}

std::vector<const std::vector<float>*> TargetSlices::buffers() const {
  std::vector<const std::vector<float>*> out;
  for (auto* b : const_cast<TargetSlices*>(this)->buffers()) out.push_back(b);
  return out;
}

void reinitialize(TargetSlices& s, InitKind kind, uint64_t seed) {
  const double fan_in = double(s.hidden), fan_out = double(3 * s.head_dim);
  Rng rng(seed);
  for (size_t k = 0; k < s.targets.size(); ++k) {
    std::vector<float>& rows = s.qkv_rows[k];
    if (kind == InitKind::XavierNormal) {
      rng.fill_normal(rows.data(), int64_t(rows.size()), std::sqrt(2.0 / (fan_in + fan_out)));
    } else {
      const double bound = std::sqrt(6.0 / (fan_in + fan_out));
      for (float& x : rows) x = float((2 * rng.uniform01() - 1) * bound);
    }
    std::fill(s.qkv_bias[k].begin(), s.qkv_bias[k].end(), 0.0f);
    std::fill(s.dense_cols[k].begin(), s.dense_cols[k].end(), 0.0f);
  }
}

namespace {

// The raw bytes of one tensor of `in`, with the slices of its layer patched in when it is one
// of the sliced roles (rows of the fused qkv weight and bias, in the family's layout; columns
// of the output projection), converted to the tensor's dtype.
std::vector<std::byte> patched(const Checkpoint& in, const TensorRef& t, const TargetSlices& s) {
  const TensorView& v = in.tensor(t);
  std::vector<std::byte> out(v.data, v.data + v.nbytes);
  if (!t.per_layer) return out;
  const LayerRole r = t.layer_role;
  if (r != LayerRole::wqkv && r != LayerRole::bqkv && r != LayerRole::wo) return out;
  const ModelConfig& c = in.config();
  const int64_t d = c.hidden, hd = c.head_dim(), H = c.n_head;
  const size_t es = dtype_size(v.dtype);
  std::vector<std::byte> conv;
  auto put = [&](const float* src, int64_t n, std::byte* dst) {
    conv.resize(size_t(n) * es);
    convert_from_f32(src, size_t(n), v.dtype, conv.data());
    std::memcpy(dst, conv.data(), conv.size());
  };
  for (size_t k = 0; k < s.targets.size(); ++k) {
    const HeadRef& h = s.targets[k];
    if (h.layer != t.layer) continue;
    for (int64_t i = 0; i < 3 * hd; ++i) {  // internal row qkv_row(h, 0) + i
      const int64_t row = qkv_file_row(c.qkv_layout, qkv_row(h.head, 0, hd) + i, H, hd);
      if (r == LayerRole::wqkv) put(s.qkv_rows[k].data() + i * d, d, out.data() + row * d * es);
      if (r == LayerRole::bqkv) put(s.qkv_bias[k].data() + i, 1, out.data() + row * es);
    }
    if (r == LayerRole::wo)
      for (int64_t o = 0; o < d; ++o)
        put(s.dense_cols[k].data() + o * hd, hd, out.data() + (o * d + h.head * hd) * es);
  }
  return out;
}

}  // namespace

void write_with_slices(const std::string& dir, const Checkpoint& in, const TargetSlices& s) {
  write_dir_atomic(dir, [&](const std::string& tmp) {
    const ModelConfig& c = in.config();
    const std::vector<TensorRef> tensors = model_tensors(c);
    std::vector<SafetensorsWriter::Entry> entries;
    for (const TensorRef& t : tensors)
      entries.push_back({hf_tensor_name(c, t), in.tensor(t).dtype, role_shape(c, t)});
    SafetensorsWriter out(tmp + "/model.safetensors", entries);
    for (const TensorRef& t : tensors) {
      const std::vector<std::byte> bytes = patched(in, t, s);
      out.append(bytes.data(), bytes.size());
      in.release(in.tensor(t));
    }
    out.commit();
    write_file_atomic(tmp + "/config.json",
                      written_config(c, in.config_json(), in.weight_dtype()).dump(2) + "\n");
    if (fs::exists(in.tokenizer_path()))
      fs::copy_file(in.tokenizer_path(), tmp + "/tokenizer.json");
  });
}

}  // namespace hs
