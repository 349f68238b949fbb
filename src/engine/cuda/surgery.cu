// Surgery on the GPU (engine/engine.h, docs/numerics.md §3): the frozen weights stay resident in
// the weight type W, the target slices live beside them as fp32 masters with their gradients and
// AdamW moments, and after every optimizer step the masters are written into the working weights
// that the engine, and so every evaluation, reads.
//
// A batch runs in passes of as many whole sequences as the activation budget holds. A pass is the
// engine's own block (CudaEngine::run_layers) keeping, for layers l0..L-1 only (l0 the lowest
// target layer), what the backward needs (TrainSave); then the output head and cross-entropy over
// vocabulary chunks (never [T, V] logits beyond one chunk); then the block's backward down to l0:
// input gradients through the frozen LayerNorms, MLP and attention, weight gradients for the
// target slices only. engine/cpu/block.cpp's block_backward is its CPU twin, step for step.
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>

#include "engine/cuda/engine_impl.cuh"
#include "util/error.h"
#include "util/interrupt.h"

namespace hs::cuda {

namespace {

// Bytes kept per row and per saved layer (TrainSave): x_in, x_mid, the fused qkv (and its raw
// copy under clip_qkv), keys and values, the MLP's pre-activation and the attention's lse in
// fp32; the LayerNorm output and the attention output in W.
size_t saved_bytes_per_row(const ModelConfig& c, size_t w_size) {
  const size_t d = size_t(c.hidden), F = size_t(c.ffn), H = size_t(c.n_head);
  return 4 * (d + d + 3 * d + (c.clip_qkv > 0 ? 3 * d : 0) + 2 * d + F + H) + w_size * (d + d);
}

// Hands out 256-byte aligned pieces of one buffer.
struct Carver {
  char* p;
  template <class T>
  T* take(size_t count) {
    T* r = reinterpret_cast<T*>(p);
    p += align256(count * sizeof(T));
    return r;
  }
};

// The backward's scratch of one pass: gradients in fp32 and their W copies for the products.
template <class W>
struct Grads {
  float *dx, *dh, *db, *dmid, *dctx, *dqkv, *da, *D;
  W *gw, *gw2;
  static size_t bytes(int N, int d, int F, int H) {
    const size_t nd = size_t(N) * d, n3 = 3 * nd, nf = size_t(N) * F;
    return align256(nd * 4) * 5 + align256(nf * 4) + align256(n3 * 4) +
           align256(size_t(N) * H * 4) + align256(std::max(n3, nf) * sizeof(W)) * 2;
  }
  Grads(char* base, int N, int d, int F, int H) {
    const size_t nd = size_t(N) * d, n3 = 3 * nd, nf = size_t(N) * F;
    Carver c{base};
    dx = c.take<float>(nd), db = c.take<float>(nd), dmid = c.take<float>(nd);
    dctx = c.take<float>(nd), da = c.take<float>(nd);
    dh = c.take<float>(nf), dqkv = c.take<float>(n3), D = c.take<float>(size_t(N) * H);
    gw = c.take<W>(std::max(n3, nf)), gw2 = c.take<W>(std::max(n3, nf));
  }
};

template <class W>
class CudaSurgery final : public Surgery {
 public:
  CudaSurgery(const Checkpoint& ck, const std::vector<float>& slopes,
              const std::vector<HeadRef>& targets, AdamWConfig adam)
      : e_(ck, slopes), adam_cfg_(adam), host_(TargetSlices::zeros(ck.config(), targets)) {
    const ModelConfig& c = e_.config();
    l0_ = c.n_layer;
    for (const HeadRef& t : host_.targets) l0_ = std::min<int64_t>(l0_, t.layer);
    // One allocation each for masters, gradients and moments, slices in buffers() order.
    for (auto* b : host_.buffers()) {
      offset_.push_back(total_);
      total_ += int64_t(b->size());
    }
    for (DeviceBuffer* b : {&masters_, &grads_, &m_, &v_}) *b = DeviceBuffer(size_t(total_) * 4);
    HS_CUDA(cudaMemsetAsync(grads_.as<void>(), 0, size_t(total_) * 4, e_.stream()));
    // The lowest target layer needs only its target heads' attention gradients.
    std::vector<uint8_t> mask(c.n_head, 0);
    for (const HeadRef& t : host_.targets)
      if (t.layer == l0_) mask[t.head] = 1;
    head_mask_ = DeviceBuffer(mask.size());
    // On the engine's stream: a cudaMemcpy from pageable memory may return before its DMA has
    // landed, and the non-blocking stream that reads the mask would not wait for it.
    HS_CUDA(cudaMemcpyAsync(head_mask_.as<void>(), mask.data(), mask.size(), cudaMemcpyHostToDevice,
                            e_.stream()));
    // Rows per pass: everything a pass holds per row (the saved layers, the shared K/V slot of
    // the layers below them, the backward's scratch, the engine's workspace) fills at most a
    // third of what the GPU holds beyond the weights, and 2.5 GiB: on bloom-1b7's pass 1 that is
    // two 512-token sequences, 7.3 GiB in all (a 4 GiB cap, four sequences, measured 10.1 GiB
    // at the same speed; bench/NOTES.md). From the GPU's total memory, not its free memory, so
    // that a run and its resumed continuation group their sequences, and sum their gradients,
    // alike.
    size_t free_b = 0, total_b = 0;
    HS_CUDA(cudaMemGetInfo(&free_b, &total_b));
    const size_t weights = weight_bytes(c, sizeof(W));
    const size_t budget =
        std::min<size_t>(size_t(5) << 29, (total_b - std::min(total_b, weights)) / 3);
    const size_t d = size_t(c.hidden), F = size_t(c.ffn);
    const size_t per_row = saved_bytes_per_row(c, sizeof(W)) * size_t(c.n_layer - l0_) +
                           (l0_ > 0 ? 8 * d : 0) +
                           Grads<W>::bytes(1, int(d), int(F), int(c.n_head)) +
                           Workspace<W>::bytes_per_row(int64_t(d), int64_t(F));
    max_rows_ = std::max<size_t>(1, budget / per_row);
    set(TargetSlices::read(ck, targets), AdamState{});
  }

  double accumulate(const std::vector<const std::vector<int32_t>*>& batch, double weight) override;
  double step(double lr, double max_norm) override;
  Engine& engine() override { return e_; }
  const TargetSlices& masters() override;
  const AdamState& adam() override;
  void set(const TargetSlices& masters, const AdamState& adam) override;
  int64_t device_memory_bytes() const override { return int64_t(peak_allocated_bytes()); }

 private:
  double pass(const std::vector<const std::vector<int32_t>*>& seqs, double weight);
  void backward_layer(int64_t l, int N, const RowMap& map, int Tmax, const float* kv_layer,
                      const Grads<W>& g);
  void scatter();  // masters -> the working weights
  float* slice(DeviceBuffer& b, size_t k) { return b.as<float>() + offset_[k]; }
  // cuBLAS y += x over n fp32 elements (residual gradients).
  void add(float* y, const float* x, int64_t n) {
    const float one = 1.0f;
    check_blas(cublasSaxpy(e_.blas(), int(n), &one, x, 1, y, 1), "cublasSaxpy");
  }

  CudaEngine<W> e_;
  AdamWConfig adam_cfg_;
  int64_t l0_ = 0, total_ = 0;
  size_t max_rows_ = 1;          // rows per pass (whole sequences; one sequence may exceed it)
  std::vector<int64_t> offset_;  // per buffer of host_.buffers()
  DeviceBuffer masters_, grads_, m_, v_, head_mask_;
  TargetSlices host_;  // the masters' host copy (masters())
  AdamState adam_;     // the moments' host copy (adam()); adam_.steps counts the steps taken
  // Buffers of the passes, grown on demand.
  DeviceBuffer meta_, kv_, save_buf_, grad_buf_, chunk_, run_, norm_;
  TrainSave save_;
};

template <class W>
void CudaSurgery<W>::set(const TargetSlices& masters, const AdamState& adam) {
  const auto bufs = masters.buffers();
  if (bufs.size() != offset_.size()) throw Error("surgery", "slices of another plan");
  cudaStream_t st = e_.stream();
  for (size_t k = 0; k < bufs.size(); ++k) {
    HS_CUDA(cudaMemcpyAsync(slice(masters_, k), bufs[k]->data(), bufs[k]->size() * 4,
                            cudaMemcpyHostToDevice, st));
    if (!adam.m.empty()) {
      HS_CUDA(cudaMemcpyAsync(slice(m_, k), adam.m[k].data(), bufs[k]->size() * 4,
                              cudaMemcpyHostToDevice, st));
      HS_CUDA(cudaMemcpyAsync(slice(v_, k), adam.v[k].data(), bufs[k]->size() * 4,
                              cudaMemcpyHostToDevice, st));
    }
  }
  if (adam.m.empty()) {  // a fresh optimizer
    HS_CUDA(cudaMemsetAsync(m_.as<void>(), 0, size_t(total_) * 4, st));
    HS_CUDA(cudaMemsetAsync(v_.as<void>(), 0, size_t(total_) * 4, st));
  }
  adam_.steps = adam.steps;
  scatter();
  HS_CUDA(cudaStreamSynchronize(st));  // the host vectors may go away now
}

template <class W>
const TargetSlices& CudaSurgery<W>::masters() {
  auto bufs = host_.buffers();
  for (size_t k = 0; k < bufs.size(); ++k)
    HS_CUDA(cudaMemcpyAsync(bufs[k]->data(), slice(masters_, k), bufs[k]->size() * 4,
                            cudaMemcpyDeviceToHost, e_.stream()));
  HS_CUDA(cudaStreamSynchronize(e_.stream()));
  return host_;
}

template <class W>
const AdamState& CudaSurgery<W>::adam() {
  const auto bufs = host_.buffers();
  adam_.m.resize(bufs.size());
  adam_.v.resize(bufs.size());
  for (size_t k = 0; k < bufs.size(); ++k) {
    adam_.m[k].resize(bufs[k]->size());
    adam_.v[k].resize(bufs[k]->size());
    HS_CUDA(cudaMemcpyAsync(adam_.m[k].data(), slice(m_, k), bufs[k]->size() * 4,
                            cudaMemcpyDeviceToHost, e_.stream()));
    HS_CUDA(cudaMemcpyAsync(adam_.v[k].data(), slice(v_, k), bufs[k]->size() * 4,
                            cudaMemcpyDeviceToHost, e_.stream()));
  }
  HS_CUDA(cudaStreamSynchronize(e_.stream()));
  return adam_;
}

// Every target's slices into the working weights: the head's qkv row block (contiguous in the
// internal layout), its bias rows (fp32 like every vector), its output-projection columns.
template <class W>
void CudaSurgery<W>::scatter() {
  const ModelConfig& c = e_.config();
  const int64_t d = c.hidden, hd = c.head_dim();
  DeviceWeights<W>& w = e_.mutable_weights();
  cudaStream_t st = e_.stream();
  size_t k = 0;
  for (const HeadRef& t : host_.targets) {
    const int64_t r0 = qkv_row(t.head, 0, hd);
    copy_rows<W>(w.mutable_matrix(LayerRole::wqkv, t.layer) + r0 * d, slice(masters_, k++),
                 3 * hd * d, st);
    if (c.linear_bias)
      HS_CUDA(cudaMemcpyAsync(w.mutable_vector(LayerRole::bqkv, t.layer) + r0, slice(masters_, k++),
                              size_t(3 * hd) * 4, cudaMemcpyDeviceToDevice, st));
    copy_cols<W>(w.mutable_matrix(LayerRole::wo, t.layer) + t.head * hd, int(d),
                 slice(masters_, k++), int(d), int(hd), st);
  }
}

template <class W>
double CudaSurgery<W>::step(double lr, double max_norm) {
  cudaStream_t st = e_.stream();
  norm_.reserve(sizeof(double));
  sum_squares(norm_.as<double>(), grads_.as<float>(), total_, st);
  double sq = 0;
  HS_CUDA(cudaMemcpyAsync(&sq, norm_.as<double>(), sizeof sq, cudaMemcpyDeviceToHost, st));
  HS_CUDA(cudaStreamSynchronize(st));
  // torch.nn.utils.clip_grad_norm_, as clip_grad_norm does on the CPU.
  const double norm = std::sqrt(sq), coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_inplace(grads_.as<float>(), total_, float(coef), st);
  adamw_step(masters_.as<float>(), grads_.as<float>(), m_.as<float>(), v_.as<float>(), total_,
             adamw_step_for(adam_cfg_, ++adam_.steps, lr), st);
  scatter();
  HS_CUDA(cudaMemsetAsync(grads_.as<void>(), 0, size_t(total_) * 4, st));
  return norm;
}

template <class W>
double CudaSurgery<W>::accumulate(const std::vector<const std::vector<int32_t>*>& batch,
                                  double weight) {
  // Whole sequences per pass, as many rows as max_rows_ holds (at least one sequence).
  const size_t max_rows = max_rows_;
  double loss = 0;
  std::vector<const std::vector<int32_t>*> group;
  size_t rows = 0;
  for (size_t i = 0; i <= batch.size(); ++i) {
    const bool end = i == batch.size();
    const size_t T = end ? 0 : batch[i]->size();
    if (!group.empty() && (end || rows + T > max_rows)) {
      loss += pass(group, weight);
      group.clear();
      rows = 0;
    }
    if (!end && T >= 2) {  // a sequence of one token predicts nothing
      group.push_back(batch[i]);
      rows += T;
    }
  }
  return loss;
}

template <class W>
double CudaSurgery<W>::pass(const std::vector<const std::vector<int32_t>*>& seqs, double weight) {
  const ModelConfig& c = e_.config();
  const int d = int(c.hidden), F = int(c.ffn), H = int(c.n_head), hd = int(c.head_dim());
  const int64_t L = c.n_layer, V = c.vocab;
  const int B = int(seqs.size());
  cudaStream_t st = e_.stream();

  // The rows: every sequence's tokens, each predicting the next (the last predicts nothing).
  std::vector<int32_t> ids, row_seq, target, q_row0(B), n_rows(B), past(B, 0);
  int Tmax = 0;
  for (int b = 0; b < B; ++b) {
    const auto& s = *seqs[b];
    q_row0[b] = int32_t(ids.size());
    n_rows[b] = int32_t(s.size());
    Tmax = std::max(Tmax, int(s.size()));
    for (size_t t = 0; t < s.size(); ++t) {
      if (s[t] < 0 || s[t] >= V)
        throw Error("repair", "token id " + std::to_string(s[t]) + " is outside the vocabulary");
      ids.push_back(s[t]);
      row_seq.push_back(b);
      target.push_back(t + 1 < s.size() ? s[t + 1] : -1);
    }
  }
  const int N = int(ids.size());
  const size_t nd = size_t(N) * d;
  std::vector<int32_t> meta;
  for (auto* v : {&ids, &row_seq, &target, &q_row0, &n_rows, &past})
    meta.insert(meta.end(), v->begin(), v->end());
  meta_.reserve(meta.size() * 4);
  int32_t* m = meta_.as<int32_t>();
  HS_CUDA(cudaMemcpyAsync(m, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice, st));
  const int32_t* d_target = m + 2 * N;
  const RowMap map{m + N, m + 3 * N, m + 3 * N + B, m + 3 * N + 2 * B, N, B};

  // Forward, keeping layers l0.. (their keys and values stay in a per-layer cache).
  e_.workspace().ensure(N, d, F);
  const int64_t layer_kv = int64_t(2) * B * H * Tmax * hd;
  Pass p;
  p.kv_keep_from = l0_;  // the backward reads the keys and values of layers l0.. only
  kv_.reserve(size_t(p.kv_slots(L) * layer_kv) * 4);
  const int64_t saved = L - l0_;
  save_buf_.reserve(size_t(saved) * (size_t(N) * saved_bytes_per_row(c, sizeof(W)) + 8 * 256));
  save_ = TrainSave{};
  save_.l0 = l0_;
  Carver cv{save_buf_.as<char>()};
  for (int64_t k = 0; k < saved; ++k) {
    save_.x_in.push_back(cv.take<float>(nd));
    save_.x_mid.push_back(cv.take<float>(nd));
    save_.qkv.push_back(cv.take<float>(3 * nd));
    save_.qkv_raw.push_back(c.clip_qkv > 0 ? cv.take<float>(3 * nd) : nullptr);
    save_.h32.push_back(cv.take<float>(size_t(N) * F));
    save_.lse.push_back(cv.take<float>(size_t(N) * H));
    save_.a.push_back(cv.take<W>(nd));
    save_.ctx.push_back(cv.take<W>(nd));
  }
  p.ids = m;
  p.map = map;
  p.max_rows = Tmax;
  p.kv = kv_.as<float>();
  p.cap = Tmax;
  p.save = &save_;
  e_.run_layers(p);

  grad_buf_.reserve(Grads<W>::bytes(N, d, F, H));
  const Grads<W> g(grad_buf_.as<char>(), N, d, F, H);

  // Output head and cross-entropy: pass 1 the log-sum-exp, pass 2 the gradient, chunk by chunk;
  // the chunk's logits gradient feeds the final norm's input gradient (the head is frozen).
  Workspace<W>& s = e_.workspace();
  const DeviceWeights<W>& w = e_.weights();
  layernorm_forward<W>({s.x, nullptr, nullptr, nullptr, w.v(ModelRole::out_norm),
                        w.v(ModelRole::out_norm_b), s.a, nullptr, N, d, float(c.ln_eps)},
                       st);
  const int64_t Vc = vocab_chunk(N, V);
  chunk_.reserve(align256(size_t(N) * Vc * 4) + size_t(N) * Vc * sizeof(W));
  float* chunk = chunk_.as<float>();
  W* chunk_w = reinterpret_cast<W*>(chunk_.as<char>() + align256(size_t(N) * Vc * 4));
  run_.reserve(size_t(N) * 24);
  float* run_m = run_.as<float>();
  float* tgt = run_m + N;
  float* lse = tgt + N;
  float* scale = lse + N;
  double* run_s = reinterpret_cast<double*>(scale + N);
  {
    // The running max starts at -inf; every row's gradient scale is weight times the logit scale
    // (the gradient of an unscaled logit), rows without a target get none (cross_entropy_backward).
    std::vector<float> init(size_t(N) * 4, 0.0f);
    std::fill_n(init.begin(), N, -INFINITY);
    std::fill(init.begin() + 3 * N, init.end(), float(weight * c.logit_scale));
    HS_CUDA(cudaMemcpyAsync(run_m, init.data(), init.size() * 4, cudaMemcpyHostToDevice, st));
    HS_CUDA(cudaMemsetAsync(run_s, 0, size_t(N) * 8, st));
    HS_CUDA(cudaStreamSynchronize(st));  // init is about to go out of scope
  }
  for (int64_t v0 = 0; v0 < V; v0 += Vc) {
    const int n = int(std::min(Vc, V - v0));
    e_.head_logits(chunk, n, s.a, N, v0, n);
    logsumexp_update(chunk, N, n, int(v0), d_target, run_m, run_s, tgt, st);
  }
  logsumexp_finish(lse, run_m, run_s, N, st);
  float* dxf = g.db;  // the final norm output's gradient
  HS_CUDA(cudaMemsetAsync(dxf, 0, nd * 4, st));
  for (int64_t v0 = 0; v0 < V; v0 += Vc) {
    check_interrupted();
    const int n = int(std::min(Vc, V - v0));
    e_.head_logits(chunk, n, s.a, N, v0, n);
    cross_entropy_backward(chunk, lse, d_target, scale, N, n, int(v0), st);
    to_weight_type<W>(chunk_w, chunk, int64_t(N) * n, st);
    gemm<W>(e_.blas(), false, false, N, d, n, 1.0f, chunk_w, n, w.head() + v0 * d, d, 1.0f, dxf, d);
  }
  HS_CUDA(cudaMemsetAsync(g.dx, 0, nd * 4, st));
  layernorm_backward(g.dx, dxf, s.x, w.v(ModelRole::out_norm), N, d, float(c.ln_eps), st);

  for (int64_t l = L - 1; l >= l0_; --l) {
    check_interrupted();
    backward_layer(l, N, map, Tmax, kv_.as<float>() + p.kv_slot(l) * layer_kv, g);
  }
  // The loss's terms come back only now: with no Ctrl-C check between these copies and the
  // synchronisation, an interrupted pass leaves no copy into host vectors that are gone.
  std::vector<float> h_lse(N), h_tgt(N);
  HS_CUDA(cudaMemcpyAsync(h_lse.data(), lse, size_t(N) * 4, cudaMemcpyDeviceToHost, st));
  HS_CUDA(cudaMemcpyAsync(h_tgt.data(), tgt, size_t(N) * 4, cudaMemcpyDeviceToHost, st));
  HS_CUDA(cudaStreamSynchronize(st));
  double loss = 0;  // as the CPU sums it (engine/cpu/train.cpp)
  for (int r = 0; r < N; ++r)
    if (target[r] >= 0) loss += weight * (double(h_lse[r]) - double(h_tgt[r]));
  return loss;
}

// One layer's backward: dx (the gradient w.r.t. the layer's output) becomes the gradient w.r.t.
// its input, unless l is the lowest target layer; the target slices' gradients accumulate.
template <class W>
void CudaSurgery<W>::backward_layer(int64_t l, int N, const RowMap& map, int Tmax,
                                    const float* kv_layer, const Grads<W>& g) {
  using R = LayerRole;
  const ModelConfig& c = e_.config();
  const int d = int(c.hidden), F = int(c.ffn), H = int(c.n_head), hd = int(c.head_dim());
  const float eps = float(c.ln_eps);
  const size_t nd = size_t(N) * d, k = size_t(l - l0_);
  const auto& Lw = e_.weights().layers[l];
  cudaStream_t st = e_.stream();
  cublasHandle_t blas = e_.blas();
  const W* a = static_cast<const W*>(save_.a[k]);
  const W* ctx = static_cast<const W*>(save_.ctx[k]);

  // MLP: dh = dx Wdown; gelu'; db = dh Wup (+ dx post-LN); dmid = LN2'(db) (+ dx pre-LN).
  to_weight_type<W>(g.gw, g.dx, int64_t(nd), st);
  gemm<W>(blas, false, false, N, F, d, 1.0f, g.gw, d, Lw.m(R::ffn_down), F, 0.0f, g.dh, F);
  gelu_backward(g.dh, g.dh, save_.h32[k], Lw.v(R::ffn_up_b), N, F, c.act, st);
  to_weight_type<W>(g.gw, g.dh, int64_t(N) * F, st);
  gemm<W>(blas, false, false, N, d, F, 1.0f, g.gw, F, Lw.m(R::ffn_up), d, 0.0f, g.db, d);
  if (c.post_ln) add(g.db, g.dx, int64_t(nd));
  HS_CUDA(cudaMemsetAsync(g.dmid, 0, nd * 4, st));
  layernorm_backward(g.dmid, g.db, save_.x_mid[k], Lw.v(R::ffn_norm), N, d, eps, st);
  if (!c.post_ln) add(g.dmid, g.dx, int64_t(nd));

  // Attention: dctx = dmid Wo; the target heads' output columns; the attention's backward into
  // dqkv (only the target heads at the lowest layer); the clamp's mask; the target rows.
  to_weight_type<W>(g.gw, g.dmid, int64_t(nd), st);
  gemm<W>(blas, false, false, N, d, d, 1.0f, g.gw, d, Lw.m(R::wo), d, 0.0f, g.dctx, d);
  HS_CUDA(cudaMemsetAsync(g.dqkv, 0, 3 * nd * 4, st));
  const float* kc = kv_layer;
  const float* vc = kv_layer + int64_t(map.B) * H * Tmax * hd;
  alibi_attention_backward<W>(g.dqkv, g.dctx, save_.qkv[k], kc, vc, ctx, save_.lse[k], g.D,
                              e_.weights().slopes, c.alibi, map, H, hd, Tmax, Tmax,
                              l == l0_ ? head_mask_.as<uint8_t>() : nullptr, st);
  if (c.clip_qkv > 0)
    clamp_backward(g.dqkv, save_.qkv_raw[k], Lw.v(R::bqkv), N, 3 * d, float(c.clip_qkv), st);
  to_weight_type<W>(g.gw2, g.dqkv, int64_t(3 * nd), st);
  size_t slot = 0;
  for (const HeadRef& t : host_.targets) {
    if (t.layer != l) {
      slot += c.linear_bias ? 3 : 2;
      continue;
    }
    const int r0 = int(qkv_row(t.head, 0, hd));
    // dW[3hd, d] += dqkv[:, head rows]^T a; dbias += column sums; dWo[:, head cols] as [d, hd].
    gemm<W>(blas, true, false, 3 * hd, d, N, 1.0f, g.gw2 + r0, 3 * d, a, d, 1.0f,
            slice(grads_, slot++), d);
    if (c.linear_bias) column_sums(slice(grads_, slot++), g.dqkv + r0, 3 * d, N, 3 * hd, st);
    gemm<W>(blas, true, false, d, hd, N, 1.0f, g.gw, d, ctx + t.head * hd, d, 1.0f,
            slice(grads_, slot++), hd);
  }
  if (l == l0_) return;
  // da = dqkv Wqkv (+ dmid post-LN); dx = LN1'(da) (+ dmid pre-LN).
  gemm<W>(blas, false, false, N, d, 3 * d, 1.0f, g.gw2, 3 * d, Lw.m(R::wqkv), d, 0.0f, g.da, d);
  if (c.post_ln) add(g.da, g.dmid, int64_t(nd));
  HS_CUDA(cudaMemsetAsync(g.dx, 0, nd * 4, st));
  layernorm_backward(g.dx, g.da, save_.x_in[k], Lw.v(R::attn_norm), N, d, eps, st);
  if (!c.post_ln) add(g.dx, g.dmid, int64_t(nd));
}

}  // namespace

std::unique_ptr<Surgery> make_surgery(const Checkpoint& ckpt, const std::vector<float>& slopes,
                                      const std::string& dtype, const std::vector<HeadRef>& targets,
                                      AdamWConfig adam) {
  const DType t = check_device_and_memory(ckpt, dtype);
  // The slices' fp32 masters, gradients and two moments: 16 bytes per trained parameter.
  const ModelConfig& c = ckpt.config();
  const double slice_bytes =
      16.0 * double(targets.size()) * double(3 * c.head_dim() * c.hidden * 2 + 3 * c.head_dim());
  size_t free_b = 0, total_b = 0;
  HS_CUDA(cudaMemGetInfo(&free_b, &total_b));
  if (double(weight_bytes(c, dtype_size(t))) + slice_bytes > 0.9 * double(free_b))
    throw Error(ckpt.dir(), "the weights and the " + std::to_string(targets.size()) +
                                " target heads' training state do not fit in the GPU's free "
                                "memory (try --gpu-dtype bf16, a smaller plan, or --device cpu)");
  if (t == DType::F32) return std::make_unique<CudaSurgery<float>>(ckpt, slopes, targets, adam);
  if (t == DType::F16) return std::make_unique<CudaSurgery<__half>>(ckpt, slopes, targets, adam);
  return std::make_unique<CudaSurgery<__nv_bfloat16>>(ckpt, slopes, targets, adam);
}

}  // namespace hs::cuda
