#include "engine/cpu/save.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "util/error.h"

namespace hs {

namespace fs = std::filesystem;

void save_checkpoint(const std::string& dir, const TrainWeights& w,
                     const nlohmann::json& base_config, const Checkpoint* like, DType dtype,
                     const std::string& tokenizer_path) {
  const std::string tmp = dir + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && ec) throw Error(dir, "cannot create: " + ec.message());
  try {
    const ModelConfig& c = w.config;
    std::vector<SafetensorsWriter::Entry> entries;
    const auto params = w.params();
    std::vector<DType> types;
    for (const auto& p : params) {
      const TensorView* src = !like         ? nullptr
                              : p.per_layer ? &like->tensor(p.layer_role, p.layer)
                                            : &like->tensor(p.model_role);
      types.push_back(src ? src->dtype : dtype);
      entries.push_back(
          {p.per_layer ? hf_tensor_name(c, p.layer_role, p.layer) : hf_tensor_name(c, p.model_role),
           types.back(), p.shape});
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
    nlohmann::json cfg = w.config.to_json(base_config);
    const DType main = types.front();  // the token embedding's: the model's storage type
    cfg["dtype"] = main == DType::BF16 ? "bfloat16" : main == DType::F16 ? "float16" : "float32";
    std::ofstream(tmp + "/config.json") << cfg.dump(2) << "\n";
    if (fs::exists(tokenizer_path)) fs::copy_file(tokenizer_path, tmp + "/tokenizer.json");
    // Swap in: the old directory survives until the new one is complete.
    const std::string old = dir + ".old-" + std::to_string(::getpid());
    if (fs::exists(dir)) fs::rename(dir, old);
    fs::rename(tmp, dir);
    fs::remove_all(old, ec);
  } catch (const Error&) {
    fs::remove_all(tmp, ec);
    throw;
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    throw Error(dir, std::string("cannot write checkpoint: ") + e.what());
  }
}

}  // namespace hs
