// A model ready to run on one device: its forward pass and its incremental (KV-cache) decoder.
// The evaluation code (diagnose, ppl, generate, dormancy, ablate) is written against this
// interface; engine/cpu runs the fp32 CPU reference, and engine/cuda the same numerics on an
// NVIDIA GPU with half-precision weights. backend/backend.h picks one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/slices.h"
#include "util/error.h"

namespace hs {

struct ForwardOptions {
  bool head_stats = false;  // per-head bos/entropy/local means over rows
  bool probs = false;       // attention probabilities of every layer (tests; T x T per head)
  bool logits = false;      // full logits [T, V]
  bool nll = false;         // summed next-token NLL (chunked over the vocabulary)
  std::function<void(int64_t layers_done, int64_t layers)> progress;  // after each layer
  // [L]: layers whose MLP output is replaced by zero (ablation studies); empty = none.
  std::vector<uint8_t> ablate_mlp;
};

struct SequenceOutput {
  // [L * H], index l * H + h, means over the T query rows.
  std::vector<double> bos_mass, entropy, local_mass;
  std::vector<std::vector<float>> probs;  // [L] of [H, T, T]
  std::vector<float> logits;              // [T, V]
  double nll_sum = 0;                     // sum over t < T-1 of -log p(ids[t+1] | ids[..t])
  int64_t predicted = 0;                  // T - 1
};

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
  // extend() for greedy decoding: the argmax of each feed's logits (the first among equals, as
  // eval/sampling.h's argmax), valid until the next call. A GPU decoder chooses on the device and
  // copies only the ids. Null, with nothing appended, where a decoder has nothing faster than
  // extend(): the caller then takes the argmax of extend()'s logits.
  virtual const std::vector<int32_t>* extend_argmax(std::span<const Feed> /*feeds*/) {
    return nullptr;
  }
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
  virtual const ModelConfig& config() const = 0;
  virtual const std::vector<float>& slopes() const = 0;
  // "cpu" or the GPU's description, for logs and JSON.
  virtual std::string device() const = 0;
  // forward() and extend() throw hs::Interrupted (util/interrupt.h) at the next layer after
  // Ctrl-C; an interrupted decoder is not to be used again.
  virtual std::vector<SequenceOutput> forward(const std::vector<std::vector<int32_t>>& seqs,
                                              const ForwardOptions& opts) = 0;
  // Room for `batch` sequences of up to `capacity` tokens each.
  virtual std::unique_ptr<IncrementalDecoder> decoder(int64_t batch, int64_t capacity) = 0;
};

// AdamW's state over a list of tensors: first and second moments, and the steps taken.
struct AdamState {
  std::vector<std::vector<float>> m, v;
  int64_t steps = 0;
};

// Surgical training on one device (docs/numerics.md §3): the frozen model, and the target
// heads' slices as fp32 masters with their accumulated gradients and AdamW moments. Only the
// slices ever get a gradient, and the backward stops at the lowest target layer.
class Surgery {
 public:
  virtual ~Surgery() = default;
  // Forward and backward of a batch of sequences: adds to the slices' gradients the gradient of
  // the sum over the batch's predicted tokens of weight * CE, and returns that loss sum.
  virtual double accumulate(const std::vector<const std::vector<int32_t>*>& batch,
                            double weight) = 0;
  // Clips the accumulated gradients' global norm at max_norm, takes one AdamW step at lr, makes
  // the model use the new slices and zeroes the gradients. Returns the norm before clipping.
  virtual double step(double lr, double max_norm) = 0;
  // The model with the current slices, for evaluations.
  virtual Engine& engine() = 0;
  // The masters and the optimizer's state (run state, checkpoints), and setting them (start,
  // re-initialisation, resume; an AdamState without moments is a fresh optimizer); the model then
  // uses the masters.
  virtual const TargetSlices& masters() = 0;
  virtual const AdamState& adam() = 0;
  virtual void set(const TargetSlices& masters, const AdamState& adam) = 0;
  // Peak bytes of device memory held so far (progress lines); 0 on the CPU.
  virtual int64_t device_memory_bytes() const { return 0; }
};

}  // namespace hs
