#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <thread>

#include "cuda/engine.h"
#include "cuda/gemm.h"
#include "cuda/runtime.h"
#include "ops/cuda/ops.cuh"
#include "util/error.h"

namespace hs::cuda {

namespace {

template <class W>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<W, float>) return DType::F32;
  if constexpr (std::is_same_v<W, __half>) return DType::F16;
  return DType::BF16;
}

constexpr size_t align256(size_t n) { return (n + 255) & ~size_t(255); }

// Host-to-device copies through two pinned staging buffers: while the GPU pulls one by DMA,
// threads fill the other from the (memory-mapped) checkpoint. A plain cudaMemcpy from pageable
// memory stages through the driver one piece at a time, without that overlap.
class Uploader {
 public:
  static constexpr size_t kChunk = size_t(64) << 20;
  Uploader() {
    HS_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (int k = 0; k < 2; ++k) {
      HS_CUDA(cudaMallocHost(&pinned_[k], kChunk));
      HS_CUDA(cudaEventCreateWithFlags(&done_[k], cudaEventDisableTiming));
    }
  }
  ~Uploader() {
    cudaStreamSynchronize(stream_);
    for (int k = 0; k < 2; ++k) {
      cudaFreeHost(pinned_[k]);
      cudaEventDestroy(done_[k]);
    }
    cudaStreamDestroy(stream_);
  }
  // Copies `bytes` produced by fill(dst, offset, n) (writing n bytes at dst) to dev.
  template <class Fill>
  void copy(void* dev, size_t bytes, Fill&& fill) {
    for (size_t off = 0; off < bytes; off += kChunk) {
      const size_t n = std::min(kChunk, bytes - off);
      HS_CUDA(cudaEventSynchronize(done_[k_]));  // this buffer's previous DMA has finished
      fill(pinned_[k_], off, n);
      HS_CUDA(cudaMemcpyAsync(static_cast<char*>(dev) + off, pinned_[k_], n, cudaMemcpyHostToDevice,
                              stream_));
      HS_CUDA(cudaEventRecord(done_[k_], stream_));
      k_ ^= 1;
    }
  }
  void finish() { HS_CUDA(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
  char* pinned_[2] = {nullptr, nullptr};
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int k_ = 0;
};

// memcpy on a few threads: one core copies from the page cache at well under the DMA's rate.
void parallel_copy(char* dst, const std::byte* src, size_t n) {
  constexpr int kThreads = 4;
  const size_t part = (n + kThreads - 1) / kThreads;
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) {
    const size_t a = std::min(n, i * part), b = std::min(n, a + part);
    if (b > a) ts.emplace_back([=] { std::memcpy(dst + a, src + a, b - a); });
  }
  for (auto& t : ts) t.join();
}

// One checkpoint tensor to the device as `dst` (the weight type for matrices, fp32 for vectors),
// converted through fp32 when the stored type differs.
void upload(Uploader& up, const Checkpoint& ck, const std::string& name, DType dst, void* dev) {
  const TensorView& t = ck.tensor(name);
  const size_t n = size_t(t.numel()), src_size = dtype_size(t.dtype), dst_size = dtype_size(dst);
  if (t.dtype == dst) {
    up.copy(dev, t.nbytes,
            [&](char* p, size_t off, size_t len) { parallel_copy(p, t.data + off, len); });
  } else {
    std::vector<float> f32;
    up.copy(dev, n * dst_size, [&](char* p, size_t off, size_t len) {
      const size_t i0 = off / dst_size, m = len / dst_size;
      f32.resize(m);
      convert_to_f32(t.dtype, t.data + i0 * src_size, m, f32.data());
      if (dst == DType::F32)
        std::memcpy(p, f32.data(), m * 4);
      else
        convert_from_f32(f32.data(), m, dst, p);
    });
  }
  up.finish();  // the mapping's pages may be dropped now
  ck.release(t);
}

// Every weight on the device in one allocation: matrices (and the tied embedding) as W,
// LayerNorm parameters and biases as fp32.
template <class W>
struct DeviceWeights {
  struct Layer {
    const W *qkv_w, *dense_w, *fc1_w, *fc2_w;
    const float *ln1_w, *ln1_b, *qkv_b, *dense_b, *ln2_w, *ln2_b, *fc1_b, *fc2_b;
  };
  DeviceBuffer store;
  const W* emb = nullptr;
  const float *emb_ln_w = nullptr, *emb_ln_b = nullptr, *lnf_w = nullptr, *lnf_b = nullptr;
  const float* slopes = nullptr;
  std::vector<Layer> layers;

  DeviceWeights(const Checkpoint& ck, const std::vector<float>& host_slopes) {
    const BloomConfig& c = ck.config();
    struct Item {
      std::string name;
      bool matrix;
      const void** slot;
    };
    std::vector<Item> items;
    auto add = [&](std::string name, bool matrix, const void** slot) {
      items.push_back({std::move(name), matrix, slot});
    };
    add("word_embeddings.weight", true, reinterpret_cast<const void**>(&emb));
    add("word_embeddings_layernorm.weight", false, reinterpret_cast<const void**>(&emb_ln_w));
    add("word_embeddings_layernorm.bias", false, reinterpret_cast<const void**>(&emb_ln_b));
    add("ln_f.weight", false, reinterpret_cast<const void**>(&lnf_w));
    add("ln_f.bias", false, reinterpret_cast<const void**>(&lnf_b));
    layers.resize(c.n_layer);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      Layer& y = layers[l];
      auto m = [](const W** s) { return reinterpret_cast<const void**>(s); };
      auto v = [](const float** s) { return reinterpret_cast<const void**>(s); };
      const void** slots[kLayerTensors] = {v(&y.ln1_w),   v(&y.ln1_b),   m(&y.qkv_w), v(&y.qkv_b),
                                           m(&y.dense_w), v(&y.dense_b), v(&y.ln2_w), v(&y.ln2_b),
                                           m(&y.fc1_w),   v(&y.fc1_b),   m(&y.fc2_w), v(&y.fc2_b)};
      // The four matrices (two-dimensional) take the weight type, the rest stays fp32.
      for (int k = 0; k < kLayerTensors; ++k)
        add(layer_tensor_name(l, k), layer_tensor_shape(c, k).size() == 2, slots[k]);
    }
    std::vector<size_t> offset;
    size_t total = 0;
    for (const Item& it : items) {
      offset.push_back(total);
      total += align256(size_t(ck.tensor(it.name).numel()) * (it.matrix ? sizeof(W) : 4));
    }
    offset.push_back(total);
    total += align256(host_slopes.size() * 4);
    store = DeviceBuffer(total);
    char* base = store.as<char>();
    Uploader up;
    for (size_t i = 0; i < items.size(); ++i) {
      upload(up, ck, items[i].name, items[i].matrix ? dtype_of<W>() : DType::F32, base + offset[i]);
      *items[i].slot = base + offset[i];
    }
    float* s = reinterpret_cast<float*>(base + offset.back());
    HS_CUDA(cudaMemcpy(s, host_slopes.data(), host_slopes.size() * 4, cudaMemcpyHostToDevice));
    slopes = s;
  }
};

// Activations of one pass over N rows, grown on demand. Every growth bumps `generation`, which
// invalidates captured graphs (they hold the old addresses).
template <class W>
struct Workspace {
  DeviceBuffer buf;
  int64_t rows = 0;
  int generation = 0;
  float *x, *a32, *qkv, *q, *y, *h32;
  W *a, *ctx, *hw;

  void ensure(int64_t N, int64_t d) {
    if (N <= rows) return;
    const int64_t n = std::max<int64_t>(N, rows + rows / 2);
    const size_t f = size_t(n * d) * 4, w = size_t(n * d) * sizeof(W);
    const size_t sizes[] = {f, f, 3 * f, f, f, 4 * f, w, w, 4 * w};
    size_t total = 0;
    for (size_t s : sizes) total += align256(s);
    buf = DeviceBuffer();  // free first: the old and new workspace need not fit together
    buf = DeviceBuffer(total);
    char* p = buf.as<char>();
    auto take = [&](size_t s) {
      char* r = p;
      p += align256(s);
      return r;
    };
    x = reinterpret_cast<float*>(take(f));
    a32 = reinterpret_cast<float*>(take(f));
    qkv = reinterpret_cast<float*>(take(3 * f));
    q = reinterpret_cast<float*>(take(f));
    y = reinterpret_cast<float*>(take(f));
    h32 = reinterpret_cast<float*>(take(4 * f));
    a = reinterpret_cast<W*>(take(w));
    ctx = reinterpret_cast<W*>(take(w));
    hw = reinterpret_cast<W*>(take(4 * w));
    rows = n;
    ++generation;
  }
};

// One pass through the layers: where the rows go and what to record.
struct Pass {
  const int32_t* ids;  // [N] on the device
  RowMap map;
  int max_rows;  // most new rows of one sequence
  float* kv;     // [L][2][B][H][cap][hd], or one layer's [2][B][H][cap][hd] when shared
  bool kv_shared_across_layers;  // full forward: one layer's K/V at a time suffices
  int cap;
  float* row_stats = nullptr;  // [L][3][H][N]
  float* probs = nullptr;      // [L][probs_layer]
  const int64_t* probs_off = nullptr;
  int64_t probs_layer = 0;
  const std::vector<uint8_t>* ablate_mlp = nullptr;
  const std::function<void(int64_t, int64_t)>* progress = nullptr;
};

template <class W>
class CudaEngine final : public Engine {
 public:
  CudaEngine(const Checkpoint& ck, const std::vector<float>& slopes)
      : config_(ck.config()), slopes_(slopes), weights_(ck, slopes) {
    HS_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    check_blas(cublasCreate(&blas_), "cublasCreate");
    check_blas(cublasSetStream(blas_, stream_), "cublasSetStream");
    // A workspace of our own keeps cuBLAS from allocating inside a graph capture.
    blas_ws_ = DeviceBuffer(size_t(32) << 20);
    check_blas(cublasSetWorkspace(blas_, blas_ws_.as<void>(), blas_ws_.bytes()),
               "cublasSetWorkspace");
    device_ = device_description() + ", weights " + dtype_name(dtype_of<W>());
  }
  ~CudaEngine() override {
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }

  const BloomConfig& config() const override { return config_; }
  const std::vector<float>& slopes() const override { return slopes_; }
  std::string device() const override { return device_; }
  std::vector<SequenceOutput> forward(const std::vector<std::vector<int32_t>>& seqs,
                                      const ForwardOptions& opts) override;
  std::unique_ptr<IncrementalDecoder> decoder(int64_t batch, int64_t capacity) override;

  cudaStream_t stream() const { return stream_; }
  Workspace<W>& workspace() { return ws_; }
  const DeviceWeights<W>& weights() const { return weights_; }
  cublasHandle_t blas() const { return blas_; }

  // Enqueues embedding, every layer, and the last residual update: ws_.x then holds the final
  // hidden states (before ln_f) of the pass's rows.
  void run_layers(const Pass& p);

 private:
  void forward_group(const std::vector<std::vector<int32_t>>& seqs, const std::vector<size_t>& idx,
                     const ForwardOptions& opts, std::vector<SequenceOutput>& out);

  BloomConfig config_;
  std::vector<float> slopes_;
  DeviceWeights<W> weights_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  DeviceBuffer blas_ws_;
  Workspace<W> ws_;
  // Buffers of forward(), kept between calls (grow only): no cudaMalloc/cudaFree per diagnosis.
  struct {
    DeviceBuffer meta, kv, stats, probs, chunk, run;
  } fw_;
  std::string device_;
};

template <class W>
void CudaEngine<W>::run_layers(const Pass& p) {
  const BloomConfig& c = config_;
  const int d = int(c.hidden), H = int(c.n_head), hd = int(c.head_dim()), N = p.map.N;
  const float eps = float(c.ln_eps);
  const DeviceWeights<W>& w = weights_;
  Workspace<W>& s = ws_;
  embed_rows<W>(s.x, w.emb, p.ids, N, d, stream_);
  add_layernorm<W>(
      {s.x, nullptr, nullptr, nullptr, w.emb_ln_w, w.emb_ln_b, nullptr, s.x, N, d, eps}, stream_);
  // The residual update that ends a sub-block is fused into the next LayerNorm: x = src + y + b.
  const float *pend_y = nullptr, *pend_b = nullptr, *pend_src = nullptr;
  float* post = c.post_ln ? s.a32 : nullptr;  // fp32 LayerNorm output, the post-LN residual
  const int64_t layer_kv = int64_t(2) * p.map.B * H * p.cap * hd;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const auto& L = w.layers[l];
    float* kc = p.kv + (p.kv_shared_across_layers ? 0 : l * layer_kv);
    float* vc = kc + layer_kv / 2;
    add_layernorm<W>({s.x, pend_y, pend_b, pend_src, L.ln1_w, L.ln1_b, s.a, post, N, d, eps},
                     stream_);
    gemm_rows<W>(blas_, s.qkv, 3 * d, s.a, L.qkv_w, N, d, 3 * d);
    qkv_split(s.q, kc, vc, s.qkv, L.qkv_b, p.map, H, hd, p.cap, stream_);
    alibi_attention<W>(s.ctx, p.row_stats ? p.row_stats + l * 3 * H * int64_t(N) : nullptr,
                       p.probs ? p.probs + l * p.probs_layer : nullptr, p.probs_off, s.q, kc, vc,
                       w.slopes, p.map, H, hd, p.cap, p.max_rows, stream_);
    gemm_rows<W>(blas_, s.y, d, s.ctx, L.dense_w, N, d, d);
    add_layernorm<W>({s.x, s.y, L.dense_b, post, L.ln2_w, L.ln2_b, s.a, post, N, d, eps}, stream_);
    if (p.ablate_mlp && !p.ablate_mlp->empty() && (*p.ablate_mlp)[l]) {
      pend_y = pend_b = nullptr;  // the MLP adds nothing; the residual passes through
    } else {
      gemm_rows<W>(blas_, s.h32, 4 * d, s.a, L.fc1_w, N, d, 4 * d);
      bias_gelu<W>(s.hw, s.h32, L.fc1_b, N, 4 * d, stream_);
      gemm_rows<W>(blas_, s.y, d, s.hw, L.fc2_w, N, 4 * d, d);
      pend_y = s.y;
      pend_b = L.fc2_b;
    }
    pend_src = post;
    if (p.progress && *p.progress) (*p.progress)(l + 1, c.n_layer);
  }
  add_layernorm<W>({s.x, pend_y, pend_b, pend_src, nullptr, nullptr, nullptr, nullptr, N, d, eps},
                   stream_);
}

// Vocabulary columns per lm_head chunk: at most ~256 MB of fp32 logits at a time.
int64_t vocab_chunk(int64_t rows, int64_t V) {
  const int64_t c = ((int64_t(64) << 20) / std::max<int64_t>(rows, 1)) / 256 * 256;
  return std::clamp<int64_t>(c, 256, V);
}

template <class W>
void CudaEngine<W>::forward_group(const std::vector<std::vector<int32_t>>& seqs,
                                  const std::vector<size_t>& idx, const ForwardOptions& opts,
                                  std::vector<SequenceOutput>& out) {
  const BloomConfig& c = config_;
  const int64_t d = c.hidden, H = c.n_head, hd = c.head_dim(), L = c.n_layer, V = c.vocab;
  const int B = int(idx.size());
  std::vector<int32_t> ids, row_seq, q_row0(B), n_rows(B), past(B, 0), target;
  std::vector<int64_t> probs_off(B);
  int64_t Tmax = 0, probs_layer = 0;
  for (int b = 0; b < B; ++b) {
    const auto& sq = seqs[idx[b]];
    const int T = int(sq.size());
    q_row0[b] = int32_t(ids.size());
    n_rows[b] = T;
    for (int t = 0; t < T; ++t) {
      if (sq[t] < 0 || sq[t] >= V)
        throw Error("forward", "token id " + std::to_string(sq[t]) + " is outside the vocabulary");
      ids.push_back(sq[t]);
      row_seq.push_back(b);
      target.push_back(t + 1 < T ? sq[t + 1] : -1);
    }
    Tmax = std::max<int64_t>(Tmax, T);
    probs_off[b] = probs_layer;
    probs_layer += H * T * T;
  }
  const int N = int(ids.size());
  ws_.ensure(N, d);

  // Small per-pass arrays, one upload: ids, row_seq, target, then q_row0/n_rows/past.
  std::vector<int32_t> meta;
  for (auto* v : {&ids, &row_seq, &target, &q_row0, &n_rows, &past})
    meta.insert(meta.end(), v->begin(), v->end());
  fw_.meta.reserve(align256(meta.size() * 4) + size_t(B) * 8);
  int32_t* m = fw_.meta.template as<int32_t>();
  HS_CUDA(cudaMemcpyAsync(m, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice, stream_));
  int64_t* off_dev =
      reinterpret_cast<int64_t*>(fw_.meta.template as<char>() + align256(meta.size() * 4));
  HS_CUDA(
      cudaMemcpyAsync(off_dev, probs_off.data(), size_t(B) * 8, cudaMemcpyHostToDevice, stream_));

  Pass p;
  p.ids = m;
  p.map = {m + N, m + 3 * N, m + 3 * N + B, m + 3 * N + 2 * B, N, B};
  p.max_rows = int(Tmax);
  fw_.kv.reserve(size_t(2 * B * H * Tmax * hd) * 4);
  p.kv = fw_.kv.template as<float>();
  p.kv_shared_across_layers = true;
  p.cap = int(Tmax);
  if (opts.head_stats) {
    fw_.stats.reserve(size_t(L * 3 * H * N) * 4);
    p.row_stats = fw_.stats.template as<float>();
  }
  if (opts.probs) {
    fw_.probs.reserve(size_t(L * probs_layer) * 4);
    HS_CUDA(
        cudaMemsetAsync(fw_.probs.template as<void>(), 0, size_t(L * probs_layer) * 4, stream_));
    p.probs = fw_.probs.template as<float>();
    p.probs_off = off_dev;
    p.probs_layer = probs_layer;
  }
  p.ablate_mlp = &opts.ablate_mlp;
  p.progress = &opts.progress;
  run_layers(p);

  if (opts.head_stats) {
    std::vector<float> rs(size_t(L * 3 * H * N));
    HS_CUDA(
        cudaMemcpyAsync(rs.data(), p.row_stats, rs.size() * 4, cudaMemcpyDeviceToHost, stream_));
    HS_CUDA(cudaStreamSynchronize(stream_));
    // Means over each sequence's rows, summed in row order in double as the CPU path does.
    for (int b = 0; b < B; ++b) {
      SequenceOutput& o = out[idx[b]];
      for (int64_t l = 0; l < L; ++l)
        for (int64_t h = 0; h < H; ++h) {
          double acc[3] = {0, 0, 0};
          for (int k = 0; k < 3; ++k)
            for (int r = 0; r < n_rows[b]; ++r)
              acc[k] += rs[size_t(((l * 3 + k) * H + h) * N + q_row0[b] + r)];
          o.bos_mass[l * H + h] = acc[0] / n_rows[b];
          o.entropy[l * H + h] = acc[1] / n_rows[b];
          o.local_mass[l * H + h] = acc[2] / n_rows[b];
        }
    }
  }
  if (opts.probs) {
    std::vector<float> all(size_t(L * probs_layer));
    HS_CUDA(cudaMemcpyAsync(all.data(), p.probs, all.size() * 4, cudaMemcpyDeviceToHost, stream_));
    HS_CUDA(cudaStreamSynchronize(stream_));
    for (int b = 0; b < B; ++b)
      for (int64_t l = 0; l < L; ++l) {
        const int64_t T = n_rows[b];
        const float* src = all.data() + l * probs_layer + probs_off[b];
        out[idx[b]].probs[l].assign(src, src + H * T * T);
      }
  }
  if (!opts.logits && !opts.nll) {
    HS_CUDA(cudaStreamSynchronize(stream_));
    return;
  }
  const DeviceWeights<W>& w = weights_;
  add_layernorm<W>({ws_.x, nullptr, nullptr, nullptr, w.lnf_w, w.lnf_b, ws_.a, nullptr, N, int(d),
                    float(c.ln_eps)},
                   stream_);
  const int64_t Vc = vocab_chunk(N, V);
  fw_.chunk.reserve(size_t(N * Vc) * 4);
  fw_.run.reserve(size_t(N) * 16);
  float* chunk = fw_.chunk.template as<float>();
  float* run_m = fw_.run.template as<float>();
  float* tgt = run_m + N;
  double* run_s = reinterpret_cast<double*>(fw_.run.template as<char>() + size_t(N) * 8);
  if (opts.nll) {
    std::vector<float> minus_inf(N, -INFINITY);
    HS_CUDA(
        cudaMemcpyAsync(run_m, minus_inf.data(), size_t(N) * 4, cudaMemcpyHostToDevice, stream_));
    HS_CUDA(cudaMemsetAsync(tgt, 0, size_t(N) * 4, stream_));
    HS_CUDA(cudaStreamSynchronize(stream_));  // minus_inf is about to go out of scope
  }
  for (int b = 0; b < B; ++b)
    if (opts.logits) out[idx[b]].logits.assign(size_t(n_rows[b] * V), 0.0f);
  for (int64_t v0 = 0; v0 < V; v0 += Vc) {
    const int64_t n = std::min(Vc, V - v0);
    gemm_rows<W>(blas_, chunk, int(n), ws_.a, w.emb + v0 * d, N, int(d), int(n));
    if (opts.nll)
      logsumexp_update(chunk, N, int(n), int(v0), m + 2 * N, run_m, run_s, tgt, stream_);
    if (opts.logits)
      for (int b = 0; b < B; ++b)
        HS_CUDA(cudaMemcpy2DAsync(out[idx[b]].logits.data() + v0, size_t(V) * 4,
                                  chunk + int64_t(q_row0[b]) * n, size_t(n) * 4, size_t(n) * 4,
                                  size_t(n_rows[b]), cudaMemcpyDeviceToHost, stream_));
    // The chunk buffer is reused by the next GEMM only after these reads (same stream).
  }
  if (opts.nll) {
    std::vector<float> hm(N), ht(N);
    std::vector<double> hs(N);
    HS_CUDA(cudaMemcpyAsync(hm.data(), run_m, size_t(N) * 4, cudaMemcpyDeviceToHost, stream_));
    HS_CUDA(cudaMemcpyAsync(ht.data(), tgt, size_t(N) * 4, cudaMemcpyDeviceToHost, stream_));
    HS_CUDA(cudaMemcpyAsync(hs.data(), run_s, size_t(N) * 8, cudaMemcpyDeviceToHost, stream_));
    HS_CUDA(cudaStreamSynchronize(stream_));
    for (int b = 0; b < B; ++b) {
      double nll = 0;
      for (int r = 0; r + 1 < n_rows[b]; ++r) {
        const int g = q_row0[b] + r;
        nll += double(hm[g]) + std::log(hs[g]) - double(ht[g]);
      }
      out[idx[b]].nll_sum = nll;
      out[idx[b]].predicted = std::max(n_rows[b] - 1, 0);
    }
  }
  HS_CUDA(cudaStreamSynchronize(stream_));
}

template <class W>
std::vector<SequenceOutput> CudaEngine<W>::forward(const std::vector<std::vector<int32_t>>& seqs,
                                                   const ForwardOptions& opts) {
  const BloomConfig& c = config_;
  const int64_t L = c.n_layer, H = c.n_head;
  std::vector<SequenceOutput> out(seqs.size());
  for (auto& o : out) {
    if (opts.head_stats) {
      o.bos_mass.assign(L * H, 0);
      o.entropy.assign(L * H, 0);
      o.local_mass.assign(L * H, 0);
    }
    if (opts.probs) o.probs.resize(L);
  }
  // Groups of sequences bounded to ~1 GB of activations (about 250 bytes per token and unit of
  // hidden size); a longer sequence runs alone, and an empty one has nothing to compute.
  const int64_t budget = std::max<int64_t>(1, (int64_t(1) << 30) / (256 * c.hidden));
  std::vector<size_t> group;
  int64_t tokens = 0;
  for (size_t i = 0; i <= seqs.size(); ++i) {
    const bool end = i == seqs.size();
    const int64_t T = end ? 0 : int64_t(seqs[i].size());
    if (!group.empty() && (end || tokens + T > budget)) {
      forward_group(seqs, group, opts, out);
      group.clear();
      tokens = 0;
    }
    if (!end && T > 0) {
      group.push_back(i);
      tokens += T;
    }
  }
  return out;
}

// KV-cache decoding on the GPU. Single-token steps (every feed one token) replay a CUDA graph
// captured for that number of feeds: per step, one small upload (ids and positions), one graph
// launch, one download of the logits.
template <class W>
class CudaDecoder final : public IncrementalDecoder {
 public:
  CudaDecoder(CudaEngine<W>& e, int64_t batch, int64_t capacity)
      : e_(e), batch_(batch), cap_(capacity), len_(batch, 0) {
    const BloomConfig& c = e.config();
    layer_kv_ = 2 * batch * c.n_head * capacity * c.head_dim();
    cache_ = DeviceBuffer(size_t(c.n_layer * layer_kv_) * 4);
    const char* env = std::getenv("HEADSURGEON_CUDA_GRAPHS");
    graphs_ = !(env && std::string(env) == "0");
  }
  ~CudaDecoder() override {
    for (auto& [n, g] : graph_) cudaGraphExecDestroy(g.exec);
    if (pinned_) cudaFreeHost(pinned_);
    if (pinned_logits_) cudaFreeHost(pinned_logits_);
  }

  const std::vector<float>& extend(std::span<const Feed> feeds) override;
  void fork(int64_t from, int64_t to) override;
  int64_t capacity() const override { return cap_; }

 private:
  struct Graph {
    cudaGraphExec_t exec;
    int generation;
  };
  void ensure_meta(int64_t rows, int64_t feeds);
  void enqueue(int R, int F, int max_rows);

  CudaEngine<W>& e_;
  int64_t batch_, cap_, layer_kv_;
  std::vector<int64_t> len_;
  DeviceBuffer cache_, meta_, last_, logits_dev_;
  int32_t* pinned_ = nullptr;       // host staging of the meta arrays
  float* pinned_logits_ = nullptr;  // and of the logits (DMA straight into page-locked memory)
  int64_t meta_rows_ = 0, meta_feeds_ = 0;
  int meta_generation_ = 0;
  std::vector<float> logits_;
  bool graphs_;
  std::map<int, Graph> graph_;  // by number of single-token feeds
  std::map<int, int> seen_;     // eager steps run per feed count (the first is never captured)
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
  const BloomConfig& c = e_.config();
  last_ = DeviceBuffer(size_t(meta_feeds_ * c.hidden) * (4 + sizeof(W)));
  logits_dev_ = DeviceBuffer(size_t(meta_feeds_ * c.vocab) * 4);
  if (pinned_logits_) cudaFreeHost(pinned_logits_);
  HS_CUDA(cudaMallocHost(&pinned_logits_, size_t(meta_feeds_ * c.vocab) * 4));
  ++meta_generation_;
}

template <class W>
void CudaDecoder<W>::enqueue(int R, int F, int max_rows) {
  const BloomConfig& c = e_.config();
  const int d = int(c.hidden);
  int32_t* m = meta_.as<int32_t>();
  const int64_t rows = meta_rows_, B = batch_;
  Pass p;
  p.ids = m;
  p.map = {m + rows, m + 2 * rows, m + 2 * rows + B, m + 2 * rows + 2 * B, R, int(B)};
  p.max_rows = max_rows;
  p.kv = cache_.as<float>();
  p.kv_shared_across_layers = false;
  p.cap = int(cap_);
  e_.run_layers(p);
  const int32_t* last_rows = m + 2 * rows + 3 * B;
  float* xl = last_.as<float>();
  W* al = reinterpret_cast<W*>(last_.as<char>() + size_t(meta_feeds_ * d) * 4);
  const auto& w = e_.weights();
  gather_rows(xl, e_.workspace().x, last_rows, F, d, e_.stream());
  add_layernorm<W>(
      {xl, nullptr, nullptr, nullptr, w.lnf_w, w.lnf_b, al, nullptr, F, d, float(c.ln_eps)},
      e_.stream());
  gemm_rows<W>(e_.blas(), logits_dev_.as<float>(), int(c.vocab), al, w.emb, F, d, int(c.vocab));
}

template <class W>
const std::vector<float>& CudaDecoder<W>::extend(std::span<const Feed> feeds) {
  const BloomConfig& c = e_.config();
  const int64_t F = int64_t(feeds.size()), V = c.vocab;
  check_feeds(feeds, len_, cap_, V);
  int64_t R = 0, max_rows = 0;
  for (const Feed& fd : feeds) {
    R += int64_t(fd.ids.size());
    max_rows = std::max<int64_t>(max_rows, int64_t(fd.ids.size()));
  }
  if (F == 0) {
    logits_.clear();
    return logits_;
  }
  ensure_meta(R, F);
  e_.workspace().ensure(R, c.hidden);
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
  const int generation = meta_generation_ * 1000003 + e_.workspace().generation;
  auto it = graph_.find(int(F));
  if (step && graphs_ && it != graph_.end() && it->second.generation == generation) {
    HS_CUDA(cudaGraphLaunch(it->second.exec, st));
  } else if (step && graphs_ && seen_[int(F)]++ > 0) {
    // Captured on the second step of this size: the first ran eagerly, so every kernel is
    // loaded and every cuBLAS heuristic settled before capture.
    if (it != graph_.end()) {
      cudaGraphExecDestroy(it->second.exec);
      graph_.erase(it);
    }
    cudaGraph_t g;
    HS_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    enqueue(int(R), int(F), 1);
    HS_CUDA(cudaStreamEndCapture(st, &g));
    cudaGraphExec_t exec;
    HS_CUDA(cudaGraphInstantiate(&exec, g, 0));
    cudaGraphDestroy(g);
    graph_[int(F)] = {exec, generation};
    HS_CUDA(cudaGraphLaunch(exec, st));
  } else {
    enqueue(int(R), int(F), int(max_rows));
  }
  HS_CUDA(cudaMemcpyAsync(pinned_logits_, logits_dev_.as<float>(), size_t(F * V) * 4,
                          cudaMemcpyDeviceToHost, st));
  HS_CUDA(cudaStreamSynchronize(st));
  logits_.assign(pinned_logits_, pinned_logits_ + F * V);
  for (const Feed& fd : feeds) len_[fd.seq] += int64_t(fd.ids.size());
  return logits_;
}

template <class W>
void CudaDecoder<W>::fork(int64_t from, int64_t to) {
  const BloomConfig& c = e_.config();
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

template <class W>
std::unique_ptr<IncrementalDecoder> CudaEngine<W>::decoder(int64_t batch, int64_t capacity) {
  return std::make_unique<CudaDecoder<W>>(*this, batch, capacity);
}

}  // namespace

std::unique_ptr<Engine> make_engine(const Checkpoint& ckpt, const std::vector<float>& slopes,
                                    const std::string& dtype) {
  const std::string why = unusable_reason();
  if (!why.empty()) throw Error("--device cuda", why);
  DType t = DType::BF16;
  if (dtype == "f32") t = DType::F32;
  if (dtype == "f16" || (dtype == "auto" && ckpt.weight_dtype() == DType::F16)) t = DType::F16;
  if (ckpt.config().head_dim() > 256)
    throw Error(ckpt.dir(), "head dimension " + std::to_string(ckpt.config().head_dim()) +
                                " is above the 256 the CUDA attention supports");
  // Fail before a long upload when the weights cannot fit (the activations need more on top).
  const BloomConfig& c = ckpt.config();
  const double need =
      double(c.n_layer * 12 * c.hidden * c.hidden + c.vocab * c.hidden) * double(dtype_size(t));
  size_t free_bytes = 0, total_bytes = 0;
  HS_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (need > 0.95 * double(free_bytes)) {
    char msg[256];
    std::snprintf(msg, sizeof msg,
                  "its %s weights need %.1f GiB of GPU memory and %.1f GiB are free (try "
                  "--gpu-dtype bf16, or --device cpu)",
                  dtype_name(t), need / double(1ull << 30),
                  double(free_bytes) / double(1ull << 30));
    throw Error(ckpt.dir(), msg);
  }
  if (t == DType::F32) return std::make_unique<CudaEngine<float>>(ckpt, slopes);
  if (t == DType::F16) return std::make_unique<CudaEngine<__half>>(ckpt, slopes);
  return std::make_unique<CudaEngine<__nv_bfloat16>>(ckpt, slopes);
}

}  // namespace hs::cuda
