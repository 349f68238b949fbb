// Writes a checkpoint of a supported family with the exact shape of a real model and random
// weights, for benchmarks (no hub access here). Tensors are generated, converted and written a
// chunk at a time, so memory stays small even for bloom-7b1 (14 GB in bf16).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numbers>
#include <set>

#include "io/safetensors.h"
#include "model/roles.h"
#include "util/error.h"

namespace {

namespace fs = std::filesystem;

struct Shape {
  const char* family;
  int64_t d, L, H, V;
};
const std::map<std::string, Shape> kShapes = {{"bloom-560m", {"bloom", 1024, 24, 16, 250880}},
                                              {"bloom-1b1", {"bloom", 1536, 24, 16, 250880}},
                                              {"bloom-1b7", {"bloom", 2048, 24, 16, 250880}},
                                              {"bloom-3b", {"bloom", 2560, 30, 32, 250880}},
                                              {"bloom-7b1", {"bloom", 4096, 30, 32, 250880}},
                                              {"bloom", {"bloom", 14336, 70, 112, 250880}},
                                              {"mpt-7b", {"mpt", 4096, 32, 32, 50432}},
                                              {"mpt-30b", {"mpt", 7168, 48, 64, 50432}},
                                              {"falcon-rw-1b", {"falcon", 2048, 24, 32, 50304}},
                                              {"falcon-rw-7b", {"falcon", 4096, 36, 64, 65024}}};

// The config.json of a family with these sizes (the real models' other settings).
nlohmann::json family_config(const std::string& family, int64_t d, int64_t L, int64_t H,
                             int64_t V) {
  if (family == "mpt")
    return {{"model_type", "mpt"}, {"d_model", d},
            {"n_heads", H},        {"n_layers", L},
            {"vocab_size", V},     {"expansion_ratio", 4},
            {"no_bias", true},     {"attn_config", {{"alibi", true}, {"alibi_bias_max", 8}}}};
  if (family == "falcon")
    return {{"model_type", "falcon"},
            {"hidden_size", d},
            {"num_attention_heads", H},
            {"num_hidden_layers", L},
            {"vocab_size", V},
            {"alibi", true},
            {"bias", true},
            {"multi_query", false},
            {"parallel_attn", false},
            {"new_decoder_architecture", false}};
  return {{"model_type", "bloom"},
          {"hidden_size", d},
          {"n_head", H},
          {"n_layer", L},
          {"vocab_size", V}};
}

const std::map<std::string, std::pair<hs::DType, const char*>> kDtypes = {
    {"bf16", {hs::DType::BF16, "bfloat16"}},
    {"f16", {hs::DType::F16, "float16"}},
    {"f32", {hs::DType::F32, "float32"}}};

// Elements drawn from one seed: the unit that makes the output independent of thread count.
constexpr int64_t kBlock = 4096;
// Elements generated, converted and written at once (a multiple of kBlock): bounds memory.
constexpr int64_t kChunk = int64_t(1) << 24;

uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// N(0, stdev) values for elements [first, first + n) of tensor number `tensor`, `first` a
// multiple of kBlock. Each block has its own splitmix64 stream seeded from (seed, tensor, block).
void fill_normal(float* out, int64_t first, int64_t n, float stdev, uint64_t seed,
                 uint64_t tensor) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    uint64_t s = mix(mix(mix(seed) ^ tensor) ^ uint64_t(first / kBlock + b));
    const int64_t end = std::min(n, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; i += 2) {
      // Box-Muller on two 24-bit uniforms from one draw; u1 in (0, 1) keeps the log finite.
      const uint64_t r = mix(s += 0x9e3779b97f4a7c15ull);
      const float u1 = (float(r >> 40) + 0.5f) * 0x1p-24f;
      const float u2 = float((r >> 16) & 0xffffff) * 0x1p-24f;
      const float rad = std::sqrt(-2.0f * std::log(u1)) * stdev;
      const float th = 2.0f * std::numbers::pi_v<float> * u2;
      out[i] = rad * std::cos(th);
      if (i + 1 < end) out[i + 1] = rad * std::sin(th);
    }
  }
}

struct Tensor {
  std::string name;  // as written: the family's name with the "transformer." prefix
  std::vector<int64_t> shape;
  float stdev, value;  // value when stdev == 0 (LayerNorm weights 1, biases 0)

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
};

// Every tensor of the config in checkpoint order: matrices N(0, 0.02), norm weights 1, biases 0.
std::vector<Tensor> random_tensors(const hs::ModelConfig& c) {
  std::vector<Tensor> ts;
  for (const hs::TensorRef& t : hs::model_tensors(c)) {
    const bool norm =
        t.per_layer ? hs::role_is_norm_weight(t.layer_role) : hs::role_is_norm_weight(t.model_role);
    ts.push_back({hs::hf_tensor_name(c, t), hs::role_shape(c, t),
                  hs::role_is_matrix(t) ? 0.02f : 0.0f, norm ? 1.0f : 0.0f});
  }
  return ts;
}

// Small text files go through a temp file too, so a failed run never leaves half a JSON file.
void write_text(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  std::ofstream f(tmp, std::ios::binary);
  f << text;
  f.close();
  std::error_code ec = f ? std::error_code() : std::make_error_code(std::errc::io_error);
  if (!ec) fs::rename(tmp, p, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw hs::Error(p.string(), "cannot write: " + ec.message());
  }
}

bool is_weight_file(const std::string& f) {
  return f == "model.safetensors" || f == "model.safetensors.index.json" ||
         (f.starts_with("model-") && f.find("-of-") != std::string::npos &&
          f.ends_with(".safetensors"));
}

// A previous run into the same directory may have used the other layout; its leftovers would be
// loaded instead of (model.safetensors wins over an index) or beside the new files.
void remove_stale_weights(const fs::path& dir, const std::set<std::string>& keep) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    if (is_weight_file(f) && !keep.count(f)) {
      fs::remove(e.path());
      std::fprintf(stderr, "removed stale %s\n", e.path().c_str());
    }
  }
}

int run(int argc, char** argv) {
  CLI::App app{"Write a random checkpoint with a real model's shape (for benchmarks)."};
  std::string shape, family = "bloom", dtype = "bf16", out, tokenizer;
  int64_t hidden = 0, layers = 0, heads = 0, vocab = 250880, shard_mb = 0;
  uint64_t seed = 0;
  std::vector<std::string> shape_names = {"custom"};
  for (const auto& [name, s] : kShapes) shape_names.push_back(name);
  app.add_option("--shape", shape, "a real model's shape, or custom")
      ->required()
      ->check(CLI::IsMember(shape_names));
  app.add_option("--family", family, "custom shape: bloom|mpt|falcon")
      ->capture_default_str()
      ->check(CLI::IsMember({"bloom", "mpt", "falcon"}));
  app.add_option("--hidden", hidden, "custom shape: hidden size");
  app.add_option("--layers", layers, "custom shape: number of layers");
  app.add_option("--heads", heads, "custom shape: number of attention heads");
  app.add_option("--vocab", vocab, "custom shape: vocabulary rows")->capture_default_str();
  app.add_option("--dtype", dtype, "bf16|f16|f32")
      ->capture_default_str()
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--shard-size-mb", shard_mb, "0: one model.safetensors; else shards + index")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--tokenizer", tokenizer, "tokenizer.json to copy beside the weights")
      ->check(CLI::ExistingFile);
  app.add_option("-o,--out", out, "output directory")->required();
  CLI11_PARSE(app, argc, argv);

  nlohmann::json cfg_json;
  if (shape == "custom") {
    cfg_json = family_config(family, hidden, layers, heads, vocab);
  } else {
    if (app.count("--hidden") || app.count("--layers") || app.count("--heads") ||
        app.count("--family"))
      throw hs::Error("--shape " + shape,
                      "--hidden, --layers, --heads and --family need --shape custom");
    const Shape& s = kShapes.at(shape);
    cfg_json = family_config(s.family, s.d, s.L, s.H, app.count("--vocab") ? vocab : s.V);
  }
  const hs::ModelConfig c = hs::ModelConfig::from_json(cfg_json, "--shape " + shape);
  const auto [dt, torch_name] = kDtypes.at(dtype);
  const auto esize = int64_t(hs::dtype_size(dt));

  // Shards of at most shard_mb, filled in model order as transformers does; a tensor larger
  // than that gets a shard of its own.
  const std::vector<Tensor> ts = random_tensors(c);
  std::vector<std::vector<size_t>> shards(1);
  int64_t cur = 0, total = 0, largest = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const int64_t b = ts[i].numel() * esize;
    if (shard_mb > 0 && cur > 0 && cur + b > (shard_mb << 20)) shards.emplace_back(), cur = 0;
    shards.back().push_back(i);
    cur += b;
    total += b;
    largest = std::max(largest, ts[i].numel());
  }

  const fs::path dir(out);
  fs::create_directories(dir);
  // Gone first, so an interrupted run does not look like a complete checkpoint.
  std::error_code ec;
  fs::remove(dir / "config.json", ec);
  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json weight_map = nlohmann::json::object();
  std::set<std::string> files;
  std::vector<float> f32(std::min(largest, kChunk));
  std::vector<std::byte> raw(f32.size() * esize);
  int64_t done = 0, shown = -1;
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    const std::string file = shards.size() == 1 ? "model.safetensors" : name;
    files.insert(file);
    std::vector<hs::SafetensorsWriter::Entry> entries;
    for (size_t i : shards[s]) {
      entries.push_back({ts[i].name, dt, ts[i].shape});
      weight_map[ts[i].name] = file;
    }
    hs::SafetensorsWriter w((dir / file).string(), entries);
    for (size_t i : shards[s]) {
      const Tensor& t = ts[i];
      const int64_t n = t.numel();
      for (int64_t first = 0; first < n; first += kChunk) {
        const int64_t m = std::min(kChunk, n - first);
        if (t.stdev > 0)
          fill_normal(f32.data(), first, m, t.stdev, seed, i);
        else
          std::fill_n(f32.data(), m, t.value);
        hs::convert_from_f32(f32.data(), size_t(m), dt, raw.data());
        w.append(raw.data(), size_t(m * esize));
        done += m * esize;
        if (const int64_t pct = 100 * done / total; pct != shown)
          std::fprintf(stderr, "\rwriting %s: %3lld%%", out.c_str(), (long long)(shown = pct));
      }
    }
    w.commit();
  }
  std::fprintf(stderr, "\n");
  remove_stale_weights(dir, files);
  if (shards.size() > 1) {
    const nlohmann::json index = {{"metadata", {{"total_size", total}}},
                                  {"weight_map", weight_map}};
    write_text(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  if (!tokenizer.empty())
    fs::copy_file(tokenizer, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  nlohmann::json cfg = c.to_json(cfg_json);
  cfg["torch_dtype"] = cfg["dtype"] = torch_name;  // older and newer transformers' key
  write_text(dir / "config.json", cfg.dump(2) + "\n");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "wrote %s: %s, %.2f GB (%lld bytes) in %zu file(s), %.1f s\n", out.c_str(),
               shape.c_str(), double(total) / 1e9, (long long)total, shards.size(), secs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "make_random_checkpoint: error: " << e.what() << "\n";
    return 1;
  }
}
