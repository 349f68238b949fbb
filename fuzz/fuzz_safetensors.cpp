// safetensors files as a model directory holds them: the input is model.safetensors, or, split
// at the file separator, model.safetensors.index.json and its shards s1.safetensors, s2, ...
// Every tensor a loader accepts has its bytes read (ASan sees a view outside its file), and the
// files are opened as a checkpoint of a tiny BLOOM whose every role is read as fp32 rows.
#include <vector>

#include "fuzz_common.h"
#include "io/model_files.h"
#include "model/checkpoint.h"

using namespace hs;

namespace {

constexpr std::string_view kConfig =
    R"({"model_type": "bloom", "hidden_size": 8, "n_head": 2, "n_layer": 1, "vocab_size": 16})";

uint64_t touch(const TensorView& t) {
  uint64_t sum = 0;
  for (size_t i = 0; i < t.nbytes; ++i) sum += uint8_t(t.data[i]);
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto files = fuzz::split_files(data, size);
  const fuzz::fs::path dir = fuzz::scratch_dir();
  if (files.size() == 1) {
    fuzz::write_file(dir / "model.safetensors", files[0]);
  } else {
    fuzz::write_file(dir / "model.safetensors.index.json", files[0]);
    for (size_t i = 1; i < files.size(); ++i)
      fuzz::write_file(dir / ("s" + std::to_string(i) + ".safetensors"), files[i]);
  }
  fuzz::write_file(dir / "config.json", kConfig);

  volatile uint64_t sink = 0;
  fuzz::expect_clean([&] {
    const WeightFiles w(dir.string());
    for (const auto& [name, t] : w.tensors()) sink = sink + touch(*t);
  });
  fuzz::expect_clean([&] {
    const Checkpoint ck(dir.string());
    const ModelConfig& c = ck.config();
    std::vector<float> rows;
    for (int r = 0; r < kModelRoles; ++r)
      if (role_present(c, ModelRole(r))) {
        rows.resize(size_t(role_numel(c, ModelRole(r))));
        ck.read_rows(ModelRole(r), DType::F32, 0, role_shape(c, ModelRole(r))[0], rows.data());
      }
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (int r = 0; r < kLayerRoles; ++r)
        if (role_present(c, LayerRole(r))) {
          rows.resize(size_t(role_numel(c, LayerRole(r))));
          ck.read_rows(LayerRole(r), l, DType::F32, 0, role_shape(c, LayerRole(r))[0], rows.data());
        }
  });
  return 0;
}
