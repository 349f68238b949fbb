#include "engine/cpu/save.h"

#include <filesystem>

#include "io/safetensors.h"
#include "util/error.h"
#include "util/files.h"

namespace hs {

namespace fs = std::filesystem;

void save_checkpoint(const std::string& dir, const TrainWeights& w,
                     const nlohmann::json& base_config, const Checkpoint* like, DType dtype,
                     const std::string& tokenizer_path) {
  write_dir_atomic(dir, [&](const std::string& tmp) {
    const ModelConfig& c = w.config;
    const auto params = w.params();
    std::vector<SafetensorsWriter::Entry> entries;
    std::vector<DType> types;
    for (const auto& p : params) {
      types.push_back(like ? like->tensor(p).dtype : dtype);
      entries.push_back({hf_tensor_name(c, p), types.back(), p.shape});
    }
    SafetensorsWriter out(tmp + "/model.safetensors", entries);
    std::vector<std::byte> raw;
    for (size_t k = 0; k < params.size(); ++k) {
      const auto& p = params[k];
      std::vector<float> permuted;
      if (p.per_layer && role_permuted(c, p.layer_role))
        permuted = to_file_layout(c, p.layer_role, *p.buf);
      const std::vector<float>& data = permuted.empty() ? *p.buf : permuted;
      raw.resize(data.size() * dtype_size(types[k]));
      convert_from_f32(data.data(), data.size(), types[k], raw.data());
      out.append(raw.data(), raw.size());
    }
    out.commit();
    write_file_atomic(tmp + "/config.json",
                      written_config(c, base_config, types.front()).dump(2) + "\n");
    if (fs::exists(tokenizer_path)) fs::copy_file(tokenizer_path, tmp + "/tokenizer.json");
  });
}

}  // namespace hs
