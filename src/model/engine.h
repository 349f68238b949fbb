// A model ready to run on one device: its forward pass and its incremental (KV-cache) decoder.
// The evaluation code (diagnose, ppl, generate, dormancy, ablate) is written against this
// interface; CpuEngine runs the fp32 CPU reference, and the CUDA engine (cuda/engine.h) the same
// numerics on an NVIDIA GPU with half-precision weights.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/forward.h"
#include "model/model.h"
#include "util/error.h"

namespace hs {

class IncrementalDecoder {
 public:
  virtual ~IncrementalDecoder() = default;
  // Tokens to append to one sequence.
  struct Feed {
    int64_t seq;
    std::span<const int32_t> ids;
  };
  // Appends every feed's tokens to its sequence (a prompt, or one sampled token) in one pass
  // through the layers, and returns the logits after each feed's last token: [feeds, vocab],
  // row-major, valid until the next call. A sequence may appear in at most one feed; throws
  // hs::Error when a sequence would exceed the capacity.
  virtual const std::vector<float>& extend(std::span<const Feed> feeds) = 0;
  // Sequence `to` becomes a copy of sequence `from` (n samples share one prompt's prefill).
  virtual void fork(int64_t from, int64_t to) = 0;
  virtual int64_t capacity() const = 0;

 protected:
  // The checks every extend() makes before touching its cache: each feed names a distinct
  // sequence in [0, len.size()), brings ids inside the vocabulary, and fits the capacity.
  static void check_feeds(std::span<const Feed> feeds, std::span<const int64_t> len,
                          int64_t capacity, int64_t vocab) {
    std::vector<uint8_t> seen(len.size(), 0);
    for (size_t f = 0; f < feeds.size(); ++f) {
      const Feed& fd = feeds[f];
      if (fd.seq < 0 || fd.seq >= int64_t(len.size()) || seen[fd.seq] || fd.ids.empty())
        throw Error("decoder",
                    "feed " + std::to_string(f) + ": bad or repeated sequence, or no ids");
      seen[fd.seq] = 1;
      if (len[fd.seq] + int64_t(fd.ids.size()) > capacity)
        throw Error("decoder", "sequence longer than the cache capacity of " +
                                   std::to_string(capacity) + " tokens");
      for (int32_t id : fd.ids)
        if (id < 0 || id >= vocab)
          throw Error("decoder", "token id " + std::to_string(id) + " is outside the vocabulary");
    }
  }
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const BloomConfig& config() const = 0;
  virtual const std::vector<float>& slopes() const = 0;
  // "cpu" or the GPU's description, for logs and JSON.
  virtual std::string device() const = 0;
  virtual std::vector<SequenceOutput> forward(const std::vector<std::vector<int32_t>>& seqs,
                                              const ForwardOptions& opts) = 0;
  // Room for `batch` sequences of up to `capacity` tokens each.
  virtual std::unique_ptr<IncrementalDecoder> decoder(int64_t batch, int64_t capacity) = 0;
};

// The fp32 CPU reference over any weight source (a checkpoint, or a run's weights in memory).
class CpuEngine : public Engine {
 public:
  explicit CpuEngine(WeightSource& w) : w_(w) {}
  const BloomConfig& config() const override { return w_.config(); }
  const std::vector<float>& slopes() const override { return w_.slopes(); }
  std::string device() const override { return "cpu"; }
  std::vector<SequenceOutput> forward(const std::vector<std::vector<int32_t>>& seqs,
                                      const ForwardOptions& opts) override {
    return hs::forward(w_, seqs, opts);
  }
  std::unique_ptr<IncrementalDecoder> decoder(int64_t batch, int64_t capacity) override;

 private:
  WeightSource& w_;
};

// Where to run: "auto" (CUDA when this build has it and a usable GPU is present), "cpu" or
// "cuda" (an error naming why when it cannot run). Errors name `where` the choice came from.
enum class DeviceKind { cpu, cuda };
DeviceKind resolve_device(const std::string& spec, const std::string& where = "--device");
// Why CUDA cannot run here ("" when it can): not built in, no device, too old a GPU.
std::string cuda_unusable_reason();

// The engine for `device` over a checkpoint opened as `model`. gpu_dtype is the GPU's weight
// type: "auto" (the checkpoint's half type, bf16 for fp32 checkpoints), "bf16", "f16", "f32".
std::unique_ptr<Engine> make_engine(Model& model, DeviceKind device,
                                    const std::string& gpu_dtype = "auto");

}  // namespace hs
