// A checkpoint's weights to the device, by role, through Checkpoint::read_rows (so every family's
// tensors arrive converted and in the internal qkv layout).
#include <algorithm>
#include <cstring>
#include <thread>

#include "engine/cuda/engine_impl.cuh"

namespace hs::cuda {

namespace {

// One tensor of the model: a model role (layer < 0) or a layer role.
struct Item {
  int role;
  int64_t layer;
  int64_t rows, cols;  // a vector is rows x 1
  bool matrix;
  size_t row_bytes(size_t w_size) const { return size_t(cols) * (matrix ? w_size : 4); }
};

// Every tensor the config has, in checkpoint order.
std::vector<Item> weight_items(const ModelConfig& c) {
  std::vector<Item> items;
  auto add = [&](int role, int64_t layer, const std::vector<int64_t>& shape, bool matrix) {
    items.push_back({role, layer, shape[0], shape.size() == 2 ? shape[1] : 1, matrix});
  };
  for (int r = 0; r < kModelRoles; ++r)
    if (role_present(c, ModelRole(r)))
      add(r, -1, role_shape(c, ModelRole(r)), role_is_matrix(ModelRole(r)));
  for (int64_t l = 0; l < c.n_layer; ++l)
    for (int r = 0; r < kLayerRoles; ++r)
      if (role_present(c, LayerRole(r)))
        add(r, l, role_shape(c, LayerRole(r)), role_is_matrix(LayerRole(r)));
  return items;
}

// Host-to-device copies through two pinned staging buffers: while the GPU pulls one by DMA,
// threads fill the other from the (memory-mapped) checkpoint. A plain cudaMemcpy from pageable
// memory stages through the driver one piece at a time, without that overlap.
class Uploader {
 public:
  static constexpr size_t kChunk = size_t(64) << 20;
  // Staging buffers of kChunk bytes, or of one row when a row is larger.
  explicit Uploader(size_t max_row_bytes) : chunk_(std::max(kChunk, max_row_bytes)) {
    HS_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (int k = 0; k < 2; ++k) {
      HS_CUDA(cudaMallocHost(&pinned_[k], chunk_));
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
  // Copies `rows` rows of row_bytes to dev, whole rows per chunk, each chunk produced by
  // fill(dst, first_row, n_rows).
  template <class Fill>
  void copy(void* dev, int64_t rows, size_t row_bytes, Fill&& fill) {
    const int64_t per_chunk = int64_t(chunk_ / row_bytes);
    for (int64_t r = 0; r < rows; r += per_chunk) {
      const int64_t n = std::min(per_chunk, rows - r);
      HS_CUDA(cudaEventSynchronize(done_[k_]));  // this buffer's previous DMA has finished
      fill(pinned_[k_], r, n);
      HS_CUDA(cudaMemcpyAsync(static_cast<char*>(dev) + size_t(r) * row_bytes, pinned_[k_],
                              size_t(n) * row_bytes, cudaMemcpyHostToDevice, stream_));
      HS_CUDA(cudaEventRecord(done_[k_], stream_));
      k_ ^= 1;
    }
  }
  void finish() { HS_CUDA(cudaStreamSynchronize(stream_)); }

 private:
  size_t chunk_;
  cudaStream_t stream_ = nullptr;
  char* pinned_[2] = {nullptr, nullptr};
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int k_ = 0;
};

// read(first, n, dst) for rows [first, first + n) split over a few threads: one core copies from
// the page cache at well under the DMA's rate. Only for plain copies (the stored type is the
// device type): conversions are thread-parallel inside io/dtype already.
template <class Read>
void parallel_rows(char* dst, int64_t first, int64_t n, size_t row_bytes, Read&& read) {
  constexpr int kThreads = 4;
  constexpr size_t kMinBytes = size_t(1) << 20;  // below this, threads cost more than they save
  if (size_t(n) * row_bytes < kMinBytes) return read(first, n, dst);
  const int64_t part = (n + kThreads - 1) / kThreads;
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) {
    const int64_t a = std::min(n, i * part), b = std::min(n, a + part);
    if (b > a) ts.emplace_back([&, a, b] { read(first + a, b - a, dst + size_t(a) * row_bytes); });
  }
  for (auto& t : ts) t.join();
}

}  // namespace

size_t weight_bytes(const ModelConfig& c, size_t w_size) {
  size_t total = align256(size_t(c.n_head) * 4);  // slopes
  for (const Item& it : weight_items(c)) total += align256(size_t(it.rows) * it.row_bytes(w_size));
  return total;
}

template <class W>
DeviceWeights<W>::DeviceWeights(const Checkpoint& ck, const std::vector<float>& host_slopes) {
  const ModelConfig& c = ck.config();
  const std::vector<Item> items = weight_items(c);
  std::vector<size_t> offset;
  size_t total = 0, max_row = 0;
  for (const Item& it : items) {
    offset.push_back(total);
    total += align256(size_t(it.rows) * it.row_bytes(sizeof(W)));
    max_row = std::max(max_row, it.row_bytes(sizeof(W)));
  }
  const size_t slopes_at = total;
  total += align256(host_slopes.size() * 4);
  store = DeviceBuffer(total);
  char* base = store.as<char>();
  layers.resize(c.n_layer);
  Uploader up(max_row);
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    const DType dst = it.matrix ? dtype_of<W>() : DType::F32;
    const size_t row_bytes = it.row_bytes(sizeof(W));
    const TensorView& t =
        it.layer < 0 ? ck.tensor(ModelRole(it.role)) : ck.tensor(LayerRole(it.role), it.layer);
    auto read = [&](int64_t first, int64_t n, void* out) {
      if (it.layer < 0)
        ck.read_rows(ModelRole(it.role), dst, first, n, out);
      else
        ck.read_rows(LayerRole(it.role), it.layer, dst, first, n, out);
    };
    up.copy(base + offset[i], it.rows, row_bytes, [&](char* p, int64_t first, int64_t n) {
      if (t.dtype == dst)
        parallel_rows(p, first, n, row_bytes, read);
      else
        read(first, n, p);
    });
    up.finish();  // the mapping's pages may be dropped now
    ck.release(t);
    (it.layer < 0 ? model[it.role] : layers[it.layer].t[it.role]) = base + offset[i];
  }
  float* s = reinterpret_cast<float*>(base + slopes_at);
  // Through the upload stream and waited for, as every weight: a cudaMemcpy from pageable memory
  // may return before its DMA has landed, and the engine's non-blocking stream would not wait.
  up.copy(s, int64_t(host_slopes.size()), 4, [&](char* p, int64_t first, int64_t n) {
    std::memcpy(p, host_slopes.data() + first, size_t(n) * 4);
  });
  up.finish();
  slopes = s;
}

template struct DeviceWeights<float>;
template struct DeviceWeights<__nv_bfloat16>;
template struct DeviceWeights<__half>;

}  // namespace hs::cuda
