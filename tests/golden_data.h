// Reading golden tensors and comparing against them (shared by the golden test binaries).
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "util/files.h"

namespace hs::test {

inline std::vector<float> floats(const SafetensorsFile& f, const std::string& name) {
  const TensorView* t = f.find(name);
  if (!t) throw std::runtime_error(f.path() + ": no tensor " + name);
  std::vector<float> out(t->numel());
  convert_to_f32(t->dtype, t->data, out.size(), out.data());
  return out;
}

// A [B, T] int64 tensor as B sequences of ids.
inline std::vector<std::vector<int32_t>> id_rows(const SafetensorsFile& f,
                                                 const std::string& name) {
  const TensorView* t = f.find(name);
  if (!t || t->dtype != DType::I64 || t->shape.size() != 2)
    throw std::runtime_error(f.path() + ": bad tensor " + name);
  const auto* p = reinterpret_cast<const int64_t*>(t->data);
  std::vector<std::vector<int32_t>> rows(t->shape[0]);
  for (int64_t b = 0; b < t->shape[0]; ++b)
    for (int64_t i = 0; i < t->shape[1]; ++i) rows[b].push_back(int32_t(p[b * t->shape[1] + i]));
  return rows;
}

// The numeric conventions the golden data of `dir` were made with, for the models a test opens
// next. HF transformers 5.x computes Falcon's attention for output_attentions=True on its eager
// path, which counts the ALiBi bias twice (docs/numerics.md); golden.json may declare
// "falcon_alibi": "once" for data made on the path that counts it once.
inline void use_golden_conventions(const std::string& dir) {
  if (!std::filesystem::exists(dir + "/golden.json")) return;  // not a golden directory
  const auto info = read_json_file(dir + "/golden.json");
  const std::string alibi = info.value("falcon_alibi", "hf-eager");
  ::setenv("HEADSURGEON_FALCON_ALIBI", alibi.c_str(), 1);
}

// What bf16 matrices and GEMM inputs may cost on the GPU against a golden model's float64
// numbers: of the logits' scale, on the loss (relative) and on the head statistics (absolute).
// Golden models drawn with std 0.02 (BLOOM's init, tiny16/tiny8) keep the first; those drawn
// with std 0.2 (golden.json "init_std", mpt8/falconrw8: sharper attention, logits of tens) lose
// more to each rounding. GoldenModel.Bf16WeightsWithinGpuTolerance checks on the CPU that
// rounding the matrices alone costs less than half of this.
struct Bf16Tolerance {
  double logits, loss, metrics;
};
inline Bf16Tolerance bf16_tolerance(const std::string& dir) {
  const auto info = read_json_file(dir + "/golden.json");
  if (info.value("init_std", 0.02) >= 0.1) return {5e-2, 2e-2, 1e-2};
  return {1e-2, 5e-3, 1e-3};
}

// max |a - b| / max |b|: relative to the tensor's scale, so near-zero entries do not blow it up.
// A NaN difference makes it NaN, which fails every EXPECT_LE (std::max would skip it, and an
// output left NaN-poisoned would pass).
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::abs(double(a[i]) - b[i]);
    if (std::isnan(diff)) return NAN;
    num = std::max(num, diff);
    den = std::max(den, std::abs(double(b[i])));
  }
  return den > 0 ? num / den : num;
}

// gtest parameter name for a golden directory: its folder name, made an identifier.
struct DirName {
  template <class P>
  std::string operator()(const P& p) const {
    std::string s = std::filesystem::path(p.param).filename().string();
    for (char& ch : s)
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return s + "_" + std::to_string(p.index);
  }
};

// A copy of the checkpoint in src (config.json, tokenizer.json, model.safetensors) at dst, with
// edit(name, bytes) applied to every tensor's raw bytes: a model a test can break on purpose.
inline void copy_model_edited(
    const std::string& src, const std::filesystem::path& dst,
    const std::function<void(const std::string&, std::vector<std::byte>&)>& edit) {
  std::filesystem::create_directories(dst);
  for (const char* f : {"config.json", "tokenizer.json"})
    std::filesystem::copy(std::filesystem::path(src) / f, dst / f);
  SafetensorsFile in(src + "/model.safetensors");
  std::vector<std::vector<std::byte>> bufs;
  std::vector<TensorToWrite> ts;
  bufs.reserve(in.tensors().size());
  for (const auto& [name, t] : in.tensors()) {
    bufs.emplace_back(t.data, t.data + t.nbytes);
    edit(name, bufs.back());
    ts.push_back({name, t.dtype, t.shape, bufs.back().data(), t.nbytes});
  }
  write_safetensors((dst / "model.safetensors").string(), ts);
}

}  // namespace hs::test
