// The CUDA engine's passes: the block of every family (run_layers, shared by the forward pass and
// the decoder), the forward pass over groups of sequences with its outputs (head statistics,
// probabilities, logits, NLL over vocabulary chunks), and make_engine.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/cuda/engine_impl.cuh"
#include "util/error.h"
#include "util/interrupt.h"

namespace hs::cuda {

int64_t vocab_chunk(int64_t rows, int64_t V) {
  const int64_t c = ((int64_t(64) << 20) / std::max<int64_t>(rows, 1)) / 256 * 256;
  return std::min(V, std::max<int64_t>(c, 256));
}

template <class W>
CudaEngine<W>::CudaEngine(const Checkpoint& ck, const std::vector<float>& slopes)
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

template <class W>
CudaEngine<W>::~CudaEngine() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  cublasDestroy(blas_);
  cudaStreamDestroy(stream_);
}

// engine/cpu/block.cpp's block_forward, with each residual update fused into the LayerNorm that
// follows it: LN1 -> qkv (+bias, clamp) -> attention -> wo -> [+bo, residual] LN2 -> up (+bias)
// -> gelu -> down -> [+b_down, residual] next LN1. Absent biases and norms are null pointers.
template <class W>
void CudaEngine<W>::run_layers(const Pass& p) {
  using R = LayerRole;
  const ModelConfig& c = config_;
  const int d = int(c.hidden), F = int(c.ffn), H = int(c.n_head), hd = int(c.head_dim());
  const int N = p.map.N;
  const float eps = float(c.ln_eps), clip = float(c.clip_qkv);
  const DeviceWeights<W>& w = weights_;
  Workspace<W>& s = ws_;
  embed_rows<W>(s.x, w.m(ModelRole::tok_emb), p.ids, N, d, stream_);
  if (c.emb_norm)
    layernorm_forward<W>({s.x, nullptr, nullptr, nullptr, w.v(ModelRole::emb_norm),
                          w.v(ModelRole::emb_norm_b), nullptr, s.x, N, d, eps},
                         stream_);
  // The residual update that ends a sub-block is fused into the next LayerNorm: x = src + y + b.
  const float *pend_y = nullptr, *pend_b = nullptr, *pend_src = nullptr;
  float* post = c.post_ln ? s.a32 : nullptr;  // fp32 LayerNorm output, the post-LN residual
  const int64_t layer_kv = int64_t(2) * p.map.B * H * p.cap * hd;
  // Ctrl-C between layers, except while a decoder captures a graph: a throw would leave the
  // stream capturing (its steps are checked per token instead).
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  HS_CUDA(cudaStreamIsCapturing(stream_, &capture));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    if (capture == cudaStreamCaptureStatusNone) check_interrupted();
    const auto& L = w.layers[l];
    float* kc = p.kv + p.kv_slot(l) * layer_kv;
    float* vc = kc + layer_kv / 2;
    // A training pass writes what the backward needs straight into its saved slabs (TrainSave);
    // only the residual stream, updated in place by the fused LayerNorms, is copied.
    const TrainSave* keep = p.save && l >= p.save->l0 ? p.save : nullptr;
    const size_t k = keep ? size_t(l - keep->l0) : 0;
    W* a = keep ? static_cast<W*>(keep->a[k]) : s.a;
    float* qkv = keep ? keep->qkv[k] : s.qkv;
    W* ctx = keep ? static_cast<W*>(keep->ctx[k]) : s.ctx;
    float* h32 = keep ? keep->h32[k] : s.h32;
    const size_t nd = size_t(N) * d * sizeof(float);
    layernorm_forward<W>(
        {s.x, pend_y, pend_b, pend_src, L.v(R::attn_norm), L.v(R::attn_norm_b), a, post, N, d, eps},
        stream_);
    if (keep) HS_CUDA(cudaMemcpyAsync(keep->x_in[k], s.x, nd, cudaMemcpyDeviceToDevice, stream_));
    linear_qkv_forward<W>(qkv, keep ? keep->qkv_raw[k] : nullptr, kc, vc, blas_, a, L.m(R::wqkv),
                          L.v(R::bqkv), clip, p.map, d, H, hd, p.cap, stream_);
    alibi_attention_forward<W>(ctx, p.row_stats ? p.row_stats + l * 3 * H * int64_t(N) : nullptr,
                               p.probs ? p.probs + l * p.probs_layer : nullptr, p.probs_off, qkv,
                               kc, vc, w.slopes, c.alibi, p.map, H, hd, p.cap, p.max_rows, stream_,
                               keep ? keep->lse[k] : nullptr);
    gemm_rows<W>(blas_, s.y, d, ctx, L.m(R::wo), N, d, d);
    layernorm_forward<W>(
        {s.x, s.y, L.v(R::bo), post, L.v(R::ffn_norm), L.v(R::ffn_norm_b), s.a, post, N, d, eps},
        stream_);
    if (keep) HS_CUDA(cudaMemcpyAsync(keep->x_mid[k], s.x, nd, cudaMemcpyDeviceToDevice, stream_));
    if (p.ablate_mlp && !p.ablate_mlp->empty() && (*p.ablate_mlp)[l]) {
      pend_y = pend_b = nullptr;  // the MLP adds nothing; the residual passes through
    } else {
      linear_gelu_forward<W>(s.hw, h32, blas_, s.a, L.m(R::ffn_up), L.v(R::ffn_up_b), N, d, F,
                             c.act, stream_);
      gemm_rows<W>(blas_, s.y, d, s.hw, L.m(R::ffn_down), N, F, d);
      pend_y = s.y;
      pend_b = L.v(R::ffn_down_b);
    }
    pend_src = post;
    if (p.progress && *p.progress) (*p.progress)(l + 1, c.n_layer);
  }
  layernorm_forward<W>(
      {s.x, pend_y, pend_b, pend_src, nullptr, nullptr, nullptr, nullptr, N, d, eps}, stream_);
}

// A diagnosis prompt (bloom-1b7, T = 60) is ~220 launches of a few microseconds each, so the
// host's launch rate, not the GPU, sets its time. Passes of up to kGraphRows rows with only head
// statistics as outputs are captured into a graph the second time their shape comes (the first
// runs eagerly: kernels loaded, cuBLAS settled, shared-memory opt-ins made outside a capture)
// and replayed from then on with one launch.
constexpr int kGraphRows = 1024;

template <class W>
void CudaEngine<W>::run_layers_graphed(const Pass& p, bool small) {
  const char* g = std::getenv("HEADSURGEON_CUDA_GRAPHS");
  if (!small || (g && std::string(g) == "0")) return run_layers(p);
  const char* tc = std::getenv("HEADSURGEON_TENSOR_CORES");
  const GraphKey key{p.map.N,        p.map.B, p.max_rows, !(tc && std::string(tc) == "0"),
                     ws_.generation, p.ids,   p.kv,       p.row_stats};
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    HS_CUDA(cudaGraphLaunch(it->second, stream_));
    return;
  }
  if (graph_seen_.size() > 4096) graph_seen_.clear();
  if (graph_seen_[key]++ == 0) return run_layers(p);
  // Bounded: a long run over prompts of many lengths keeps the most recent shapes only.
  if (graphs_.size() >= 64) {
    for (auto& [k, exec] : graphs_) cudaGraphExecDestroy(exec);
    graphs_.clear();
    graph_seen_.clear();
  }
  cudaGraph_t graph;
  HS_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  try {
    run_layers(p);
  } catch (...) {
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  HS_CUDA(cudaStreamEndCapture(stream_, &graph));
  cudaGraphExec_t exec;
  HS_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaGraphDestroy(graph);
  graphs_[key] = exec;
  HS_CUDA(cudaGraphLaunch(exec, stream_));
}

template <class W>
void CudaEngine<W>::head_logits(float* out, int ldo, const W* a, int N, int64_t v0, int n) {
  const int64_t d = config_.hidden;
  gemm_rows<W>(blas_, out, ldo, a, weights_.head() + v0 * d, N, int(d), n,
               float(config_.logit_scale));
}

template <class W>
void CudaEngine<W>::forward_group(const std::vector<std::vector<int32_t>>& seqs,
                                  const std::vector<size_t>& idx, const ForwardOptions& opts,
                                  std::vector<SequenceOutput>& out) {
  const ModelConfig& c = config_;
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
  ws_.ensure(N, d, c.ffn);

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
  p.kv_keep_from = c.n_layer;
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
  run_layers_graphed(p, N <= kGraphRows && !opts.probs && !opts.logits && !opts.nll &&
                            opts.ablate_mlp.empty() && !opts.progress);

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
  layernorm_forward<W>({ws_.x, nullptr, nullptr, nullptr, w.v(ModelRole::out_norm),
                        w.v(ModelRole::out_norm_b), ws_.a, nullptr, N, int(d), float(c.ln_eps)},
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
    if (interrupted()) {
      // The copies already queued into `out` land before Interrupted takes it away.
      HS_CUDA(cudaStreamSynchronize(stream_));
      check_interrupted();
    }
    const int64_t n = std::min(Vc, V - v0);
    head_logits(chunk, int(n), ws_.a, N, v0, int(n));
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
  const ModelConfig& c = config_;
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
  // hidden size, or of a quarter of the MLP width where that is wider); a longer sequence runs
  // alone, and an empty one has nothing to compute.
  const int64_t budget =
      std::max<int64_t>(1, (int64_t(1) << 30) / (256 * std::max(c.hidden, c.ffn / 4)));
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

DType check_device_and_memory(const Checkpoint& ckpt, const std::string& dtype) {
  const std::string why = unusable_reason();
  if (!why.empty()) throw Error("--device cuda", why);
  DType t = DType::BF16;
  if (dtype == "f32") t = DType::F32;
  if (dtype == "f16" || (dtype == "auto" && ckpt.weight_dtype() == DType::F16)) t = DType::F16;
  const ModelConfig& c = ckpt.config();
  if (c.head_dim() > 256)
    throw Error(ckpt.dir(), "head dimension " + std::to_string(c.head_dim()) +
                                " is above the 256 the CUDA attention supports");
  // Fail before a long upload when the weights cannot fit (the activations need more on top).
  const double need = double(weight_bytes(c, dtype_size(t)));
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
  return t;
}

std::unique_ptr<Engine> make_engine(const Checkpoint& ckpt, const std::vector<float>& slopes,
                                    const std::string& dtype) {
  const DType t = check_device_and_memory(ckpt, dtype);
  if (t == DType::F32) return std::make_unique<CudaEngine<float>>(ckpt, slopes);
  if (t == DType::F16) return std::make_unique<CudaEngine<__half>>(ckpt, slopes);
  return std::make_unique<CudaEngine<__nv_bfloat16>>(ckpt, slopes);
}

// decoder() is defined and instantiated in decoder.cu.
template class CudaEngine<float>;
template class CudaEngine<__nv_bfloat16>;
template class CudaEngine<__half>;

}  // namespace hs::cuda
