// The GPU's incremental decoder: the rows of each call go through CudaEngine::run_layers, the
// block of the forward pass, with keys and values in this decoder's cache.
#include <cstdlib>
#include <map>

#include "engine/cuda/engine_impl.cuh"

namespace hs::cuda {

namespace {

// KV-cache decoding on the GPU. Single-token steps (every feed one token) replay a CUDA graph
// captured for that number of feeds: per step, one small upload (ids and positions), one graph
// launch, one download of the logits, or for greedy decoding of one id per feed (the argmax
// runs inside the graph).
template <class W>
class CudaDecoder final : public IncrementalDecoder {
 public:
  CudaDecoder(CudaEngine<W>& e, int64_t batch, int64_t capacity)
      : e_(e), batch_(batch), cap_(capacity), len_(batch, 0) {
    const ModelConfig& c = e.config();
    layer_kv_ = 2 * batch * c.n_head * capacity * c.head_dim();
    cache_ = DeviceBuffer(size_t(c.n_layer * layer_kv_) * 4);
    const char* env = std::getenv("HEADSURGEON_CUDA_GRAPHS");
    graphs_ = !(env && std::string(env) == "0");
  }
  ~CudaDecoder() override {
    for (auto& [n, g] : graph_) cudaGraphExecDestroy(g.exec);
    if (pinned_) cudaFreeHost(pinned_);
    if (pinned_logits_) cudaFreeHost(pinned_logits_);
    if (pinned_ids_) cudaFreeHost(pinned_ids_);
  }

  const std::vector<float>& extend(std::span<const Feed> feeds) override;
  const std::vector<int32_t>* extend_argmax(std::span<const Feed> feeds) override;
  void fork(int64_t from, int64_t to) override;
  int64_t capacity() const override { return cap_; }

 private:
  struct Graph {
    cudaGraphExec_t exec;
    int generation;
  };
  void ensure_meta(int64_t rows, int64_t feeds);
  // Appends the feeds, leaving [F, V] logits in logits_dev_ and, when `argmax`, their argmax in
  // ids_dev_; returns F. Nothing is copied back.
  int64_t run(std::span<const Feed> feeds, bool argmax);
  void enqueue(int R, int F, int max_rows, bool argmax);

  CudaEngine<W>& e_;
  int64_t batch_, cap_, layer_kv_;
  std::vector<int64_t> len_;
  DeviceBuffer cache_, meta_, last_, logits_dev_, ids_dev_;
  int32_t* pinned_ = nullptr;       // host staging of the meta arrays
  float* pinned_logits_ = nullptr;  // and of the logits (DMA straight into page-locked memory)
  int32_t* pinned_ids_ = nullptr;   // and of the argmax ids
  int64_t meta_rows_ = 0, meta_feeds_ = 0;
  int meta_generation_ = 0;
  std::vector<float> logits_;
  std::vector<int32_t> ids_;
  bool graphs_;
  // By number of single-token feeds, times 2, plus 1 for the steps that end in an argmax.
  std::map<int, Graph> graph_;
  std::map<int, int> seen_;  // eager steps run per key (the first is never captured)
};

template <class W>
void CudaDecoder<W>::ensure_meta(int64_t rows, int64_t feeds) {
  if (rows <= meta_rows_ && feeds <= meta_feeds_) return;
  meta_rows_ = std::max(rows, meta_rows_);
  meta_feeds_ = std::max(feeds, meta_feeds_);
  // ids, row_seq [rows]; q_row0, n_rows, past [batch]; last rows [feeds]
  const size_t n = size_t(2 * meta_rows_ + 3 * batch_ + meta_feeds_);
  meta_ = DeviceBuffer(n * 4);
  if (pinned_) cudaFreeHost(pinned_);
  HS_CUDA(cudaMallocHost(&pinned_, n * 4));
  const ModelConfig& c = e_.config();
  last_ = DeviceBuffer(size_t(meta_feeds_ * c.hidden) * (4 + sizeof(W)));
  logits_dev_ = DeviceBuffer(size_t(meta_feeds_ * c.vocab) * 4);
  ids_dev_ = DeviceBuffer(size_t(meta_feeds_) * 4);
  if (pinned_logits_) cudaFreeHost(pinned_logits_);
  HS_CUDA(cudaMallocHost(&pinned_logits_, size_t(meta_feeds_ * c.vocab) * 4));
  if (pinned_ids_) cudaFreeHost(pinned_ids_);
  HS_CUDA(cudaMallocHost(&pinned_ids_, size_t(meta_feeds_) * 4));
  ++meta_generation_;
}

template <class W>
void CudaDecoder<W>::enqueue(int R, int F, int max_rows, bool argmax) {
  const ModelConfig& c = e_.config();
  const int d = int(c.hidden);
  int32_t* m = meta_.as<int32_t>();
  const int64_t rows = meta_rows_, B = batch_;
  Pass p;
  p.ids = m;
  p.map = {m + rows, m + 2 * rows, m + 2 * rows + B, m + 2 * rows + 2 * B, R, int(B)};
  p.max_rows = max_rows;
  p.kv = cache_.as<float>();
  p.kv_keep_from = 0;
  p.cap = int(cap_);
  e_.run_layers(p);
  const int32_t* last_rows = m + 2 * rows + 3 * B;
  float* xl = last_.as<float>();
  W* al = reinterpret_cast<W*>(last_.as<char>() + size_t(meta_feeds_ * d) * 4);
  const auto& w = e_.weights();
  gather_rows(xl, e_.workspace().x, last_rows, F, d, e_.stream());
  layernorm_forward<W>({xl, nullptr, nullptr, nullptr, w.v(ModelRole::out_norm),
                        w.v(ModelRole::out_norm_b), al, nullptr, F, d, float(c.ln_eps)},
                       e_.stream());
  e_.head_logits(logits_dev_.as<float>(), int(c.vocab), al, F, 0, int(c.vocab));
  if (argmax)
    argmax_rows(ids_dev_.as<int32_t>(), logits_dev_.as<float>(), F, int(c.vocab), e_.stream());
}

template <class W>
int64_t CudaDecoder<W>::run(std::span<const Feed> feeds, bool argmax) {
  const ModelConfig& c = e_.config();
  const int64_t F = int64_t(feeds.size());
  check_feeds(feeds, len_, cap_, c.vocab);
  int64_t R = 0, max_rows = 0;
  for (const Feed& fd : feeds) {
    R += int64_t(fd.ids.size());
    max_rows = std::max<int64_t>(max_rows, int64_t(fd.ids.size()));
  }
  if (F == 0) return 0;
  ensure_meta(R, F);
  e_.workspace().ensure(R, c.hidden, c.ffn);
  // Host staging, laid out as in enqueue().
  const int64_t rows = meta_rows_, B = batch_;
  int32_t* ids = pinned_;
  int32_t* row_seq = pinned_ + rows;
  int32_t* q_row0 = pinned_ + 2 * rows;
  int32_t* n_rows = q_row0 + B;
  int32_t* past = n_rows + B;
  int32_t* last_rows = past + B;
  std::fill(q_row0, q_row0 + 3 * B, 0);
  for (int64_t b = 0; b < B; ++b) past[b] = int32_t(len_[b]);
  for (int64_t f = 0, r = 0; f < F; ++f) {
    const Feed& fd = feeds[f];
    q_row0[fd.seq] = int32_t(r);
    n_rows[fd.seq] = int32_t(fd.ids.size());
    for (int32_t id : fd.ids) {
      ids[r] = id;
      row_seq[r++] = int32_t(fd.seq);
    }
    last_rows[f] = int32_t(r - 1);
  }
  cudaStream_t st = e_.stream();
  HS_CUDA(cudaMemcpyAsync(meta_.as<void>(), pinned_, meta_.bytes(), cudaMemcpyHostToDevice, st));

  const bool step = R == F;
  const int key = int(2 * F) + (argmax ? 1 : 0);
  const int generation = meta_generation_ * 1000003 + e_.workspace().generation;
  auto it = graph_.find(key);
  if (step && graphs_ && it != graph_.end() && it->second.generation == generation) {
    HS_CUDA(cudaGraphLaunch(it->second.exec, st));
  } else if (step && graphs_ && seen_[key]++ > 0) {
    // Captured on the second step of this size: the first ran eagerly, so every kernel is
    // loaded and every cuBLAS heuristic settled before capture.
    if (it != graph_.end()) {
      cudaGraphExecDestroy(it->second.exec);
      graph_.erase(it);
    }
    cudaGraph_t g;
    HS_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    enqueue(int(R), int(F), 1, argmax);
    HS_CUDA(cudaStreamEndCapture(st, &g));
    cudaGraphExec_t exec;
    HS_CUDA(cudaGraphInstantiate(&exec, g, 0));
    cudaGraphDestroy(g);
    graph_[key] = {exec, generation};
    HS_CUDA(cudaGraphLaunch(exec, st));
  } else {
    enqueue(int(R), int(F), int(max_rows), argmax);
  }
  for (const Feed& fd : feeds) len_[fd.seq] += int64_t(fd.ids.size());
  return F;
}

template <class W>
const std::vector<float>& CudaDecoder<W>::extend(std::span<const Feed> feeds) {
  const int64_t F = run(feeds, false), V = e_.config().vocab;
  if (F > 0) {
    HS_CUDA(cudaMemcpyAsync(pinned_logits_, logits_dev_.as<float>(), size_t(F * V) * 4,
                            cudaMemcpyDeviceToHost, e_.stream()));
    HS_CUDA(cudaStreamSynchronize(e_.stream()));
  }
  logits_.assign(pinned_logits_, pinned_logits_ + F * V);
  return logits_;
}

template <class W>
const std::vector<int32_t>* CudaDecoder<W>::extend_argmax(std::span<const Feed> feeds) {
  const int64_t F = run(feeds, true);
  if (F > 0) {
    HS_CUDA(cudaMemcpyAsync(pinned_ids_, ids_dev_.as<int32_t>(), size_t(F) * 4,
                            cudaMemcpyDeviceToHost, e_.stream()));
    HS_CUDA(cudaStreamSynchronize(e_.stream()));
  }
  ids_.assign(pinned_ids_, pinned_ids_ + F);
  return &ids_;
}

template <class W>
void CudaDecoder<W>::fork(int64_t from, int64_t to) {
  const ModelConfig& c = e_.config();
  const int64_t H = c.n_head, hd = c.head_dim(), seq = H * cap_ * hd;
  // Cache layout [L][2][B][H][cap][hd]: sequence b's keys (or values) of a layer are contiguous.
  for (int64_t l = 0; l < c.n_layer; ++l)
    for (int64_t kv = 0; kv < 2; ++kv) {
      float* base = cache_.as<float>() + l * layer_kv_ + kv * (layer_kv_ / 2);
      HS_CUDA(cudaMemcpyAsync(base + to * seq, base + from * seq, size_t(seq) * 4,
                              cudaMemcpyDeviceToDevice, e_.stream()));
    }
  HS_CUDA(cudaStreamSynchronize(e_.stream()));
  len_[to] = len_[from];
}

}  // namespace

template <class W>
std::unique_ptr<IncrementalDecoder> CudaEngine<W>::decoder(int64_t batch, int64_t capacity) {
  return std::make_unique<CudaDecoder<W>>(*this, batch, capacity);
}

#define HS_INSTANTIATE(W) \
  template std::unique_ptr<IncrementalDecoder> CudaEngine<W>::decoder(int64_t, int64_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
