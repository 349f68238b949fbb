#include "model/save.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "util/error.h"

namespace hs {

namespace fs = std::filesystem;

void save_checkpoint(const std::string& dir, const TrainWeights& w,
                     const nlohmann::json& base_config, DType dtype,
                     const std::string& tokenizer_path) {
  const std::string tmp = dir + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && ec) throw Error(dir, "cannot create: " + ec.message());
  try {
    std::vector<SafetensorsWriter::Entry> entries;
    const auto named = w.named();
    for (const auto& [name, buf] : named) {
      std::vector<int64_t> shape;
      const int64_t d = w.config.hidden;
      if (name == "word_embeddings.weight")
        shape = {w.config.vocab, d};
      else if (name.ends_with("query_key_value.weight"))
        shape = {3 * d, d};
      else if (name.ends_with("query_key_value.bias"))
        shape = {3 * d};
      else if (name.ends_with("dense.weight") && name.find("self_attention") != std::string::npos)
        shape = {d, d};
      else if (name.ends_with("dense_h_to_4h.weight"))
        shape = {4 * d, d};
      else if (name.ends_with("dense_h_to_4h.bias"))
        shape = {4 * d};
      else if (name.ends_with("dense_4h_to_h.weight"))
        shape = {d, 4 * d};
      else
        shape = {d};
      entries.push_back({"transformer." + name, dtype, shape});
    }
    SafetensorsWriter out(tmp + "/model.safetensors", entries);
    std::vector<std::byte> raw;
    for (const auto& [name, buf] : named) {
      raw.resize(buf->size() * dtype_size(dtype));
      convert_from_f32(buf->data(), buf->size(), dtype, raw.data());
      out.append(raw.data(), raw.size());
    }
    out.commit();
    nlohmann::json cfg = w.config.to_json(base_config);
    cfg["dtype"] = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
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
