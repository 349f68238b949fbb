// An independent, deliberately plain float64 forward pass of the three ALiBi families (BLOOM,
// MPT, Falcon-RW), used by the tests as a second opinion on the fp32 engine for configurations
// the HF golden files do not cover. It shares no code with src/ beyond reading safetensors: the
// config is parsed here, every weight is converted to double, and each formula is written out
// once, in the order the Hugging Face / MosaicML sources compute it (cited at each step).
// Everything is O(T^2 d) loops: the models it runs are tiny.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "io/safetensors.h"

namespace hs::test {

struct RefOutput {
  std::vector<double> logits;              // [T, V]
  std::vector<std::vector<double>> probs;  // [L] of [H, T, T]; masked entries (j > t) are 0
  // [L * H], each a mean over the query rows t of the head's attention row p[t, :]:
  // bos_mass = p[t, 0]; entropy = -sum_j p log max(p, 1e-10); local_mass = sum_{t-2 <= j <= t} p.
  std::vector<double> bos_mass, entropy, local_mass;
  double nll_sum = 0;  // sum over t < T-1 of -log softmax(logits[t])[ids[t+1]]
};

// Departures from the models' definitions made by particular Hugging Face code paths, to
// reproduce golden data produced on them. The defaults compute the models as defined above.
struct RefOptions {
  // HF FalconModel._update_causal_mask folds alibi / sqrt(hd) into the causal mask, and the eager
  // attention (the path taken with output_attentions=True) adds alibi once more:
  // score = (q.k + 2 alibi) / sqrt(hd). HF's SDPA path and the original Falcon-RW code add it
  // once. The golden falconrw8 data (transformers 5.17) were computed on the eager path.
  bool falcon_alibi_twice = false;
};

namespace ref {

// ---- Numerics ----------------------------------------------------------------------------------

// float32 -> bfloat16 -> float32 with round-to-nearest-even (torch's .bfloat16()); NaN stays NaN.
inline float round_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);                // add half an ulp of bf16, ties to even
  u &= 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

// ALiBi slopes (Press et al. 2022) for n heads and maximum bias B (8 for BLOOM and Falcon, MPT's
// attn_config.alibi_bias_max). With n2 = 2^floor(log2 n): head h < n2 gets 2^(-B(h+1)/n2), the
// remaining heads the odd powers of the next finer sequence, 2^(-B(2(h-n2)+1)/(2 n2)). This is
// HF's build_alibi_tensor (BLOOM, Falcon) and MosaicML's gen_slopes (MPT; it interleaves the
// 2*n2 sequence, which gives the same values). HF holds slopes in float32, hence the rounding.
// (HF's BLOOM and Falcon compute them as base^k in float32, base = float(2^(-B/n2)): for
// n2 >= 16 that is a few float32 ulps below the exact power; this takes the exact power.)
inline std::vector<double> alibi_slopes(int64_t n, double B) {
  int64_t n2 = 1;
  while (n2 * 2 <= n) n2 *= 2;
  std::vector<double> slopes(n);
  for (int64_t h = 0; h < n; ++h) {
    const double e =
        h < n2 ? B * double(h + 1) / double(n2) : B * double(2 * (h - n2) + 1) / double(2 * n2);
    slopes[h] = double(float(std::pow(2.0, -e)));
  }
  return slopes;
}

// Falcon's ALiBi term for key position j (HF FalconModel's build_alibi_tensor):
// alibi = slopes.bfloat16() * arange, a bfloat16 product of bfloat16 operands.
inline double falcon_alibi_bias(double slope, int64_t j) {
  const float s = round_to_bf16(float(slope));
  const float pos = round_to_bf16(float(j));
  return double(round_to_bf16(s * pos));  // s * pos is exact in float (8-bit x 8-bit mantissas)
}

// tanh approximation of GELU (BLOOM's bloom_gelu_forward).
inline double gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

// exact GELU, x Phi(x) (torch.nn.GELU(approximate="none"): MPT, Falcon).
inline double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// ---- Weights ------------------------------------------------------------------------------------

enum class Family { Bloom, Mpt, Falcon };

struct LayerNorm {
  std::vector<double> w, b;  // b empty: no bias (MPT with no_bias)
};

struct Linear {
  int64_t out = 0, in = 0;
  std::vector<double> w;  // [out, in], y = W x + b as torch.nn.Linear
  std::vector<double> b;  // empty: no bias
};

struct Block {
  LayerNorm ln1, ln2;
  Linear qkv, dense, up, down;
};

struct Model {
  Family family = Family::Bloom;
  int64_t d = 0, H = 0, L = 0, V = 0, hd = 0, ffn = 0;
  double eps = 1e-5;
  bool post_ln = false;      // BLOOM apply_residual_connection_post_layernorm
  bool qkv_per_head = true;  // fused qkv rows [h][q|k|v] (BLOOM, Falcon) or [Q|K|V][h] (MPT)
  double scale = 0;          // multiplier of q.k (1/sqrt(hd), or MPT's softmax_scale)
  std::optional<double> clip_qkv;
  double logit_scale = 1;
  std::vector<double> slopes;  // [H]
  std::vector<double> emb;     // [V, d]
  std::optional<LayerNorm> emb_ln;
  std::vector<Block> blocks;
  LayerNorm ln_f;
  std::vector<double> head;  // [V, d]
};

// Reads tensors of a checkpoint as doubles, checking their shapes; names are tried as given and
// with the "transformer." prefix of the HF *ForCausalLM checkpoints.
class Tensors {
 public:
  explicit Tensors(const std::string& path) : f_(path) {}

  bool has(const std::string& name) const { return lookup(name) != nullptr; }

  std::vector<double> get(const std::string& name, const std::vector<int64_t>& shape) const {
    const TensorView* t = lookup(name);
    if (!t) throw std::runtime_error(f_.path() + ": no tensor " + name);
    if (t->shape != shape)
      throw std::runtime_error(f_.path() + ": " + name + " has shape " + shape_str(t->shape) +
                               ", expected " + shape_str(shape));
    std::vector<float> f(t->numel());
    convert_to_f32(t->dtype, t->data, f.size(), f.data());
    return std::vector<double>(f.begin(), f.end());
  }

  LayerNorm layer_norm(const std::string& name, int64_t d, bool bias) const {
    LayerNorm ln;
    ln.w = get(name + ".weight", {d});
    if (bias) ln.b = get(name + ".bias", {d});
    return ln;
  }

  Linear linear(const std::string& name, int64_t out, int64_t in, bool bias) const {
    Linear l;
    l.out = out, l.in = in;
    l.w = get(name + ".weight", {out, in});
    if (bias) l.b = get(name + ".bias", {out});
    return l;
  }

 private:
  const TensorView* lookup(const std::string& name) const {
    if (const TensorView* t = f_.find(name)) return t;
    return f_.find("transformer." + name);
  }
  SafetensorsFile f_;
};

// The first of `keys` present in the config (HF's attribute_map aliases), else `def`.
template <class T>
T config_value(const nlohmann::json& c, std::initializer_list<const char*> keys,
               std::optional<T> def = std::nullopt) {
  for (const char* k : keys)
    if (c.contains(k) && !c[k].is_null()) return c[k].get<T>();
  if (!def) throw std::runtime_error(std::string("config.json: no ") + *keys.begin());
  return *def;
}

inline std::vector<double> head_weights(const Tensors& t, const Model& m, bool tied) {
  if (tied) return m.emb;
  return t.get("lm_head.weight", {m.V, m.d});
}

// HF BloomForCausalLM (transformers/models/bloom/modeling_bloom.py).
// The checkpoint names of one family's block tensors, written out plainly (independent of
// src/model/roles.cpp, which this reference checks).
struct BlockNames {
  const char *layer, *ln1, *qkv, *dense, *ln2, *up, *down, *ln_f;
};
inline constexpr BlockNames kBloomNames{"h.",
                                        "input_layernorm",
                                        "self_attention.query_key_value",
                                        "self_attention.dense",
                                        "post_attention_layernorm",
                                        "mlp.dense_h_to_4h",
                                        "mlp.dense_4h_to_h",
                                        "ln_f"};
inline constexpr BlockNames kMptNames{"blocks.", "norm_1",      "attn.Wqkv",     "attn.out_proj",
                                      "norm_2",  "ffn.up_proj", "ffn.down_proj", "norm_f"};

// The blocks, the final norm and the output head.
inline void load_blocks(const nlohmann::json& c, const Tensors& t, const BlockNames& n,
                        bool norm_bias, bool linear_bias, Model& m) {
  for (int64_t i = 0; i < m.L; ++i) {
    const std::string p = n.layer + std::to_string(i) + ".";
    Block b;
    b.ln1 = t.layer_norm(p + n.ln1, m.d, norm_bias);
    b.qkv = t.linear(p + n.qkv, 3 * m.d, m.d, linear_bias);
    b.dense = t.linear(p + n.dense, m.d, m.d, linear_bias);
    b.ln2 = t.layer_norm(p + n.ln2, m.d, norm_bias);
    b.up = t.linear(p + n.up, m.ffn, m.d, linear_bias);
    b.down = t.linear(p + n.down, m.d, m.ffn, linear_bias);
    m.blocks.push_back(std::move(b));
  }
  m.ln_f = t.layer_norm(n.ln_f, m.d, norm_bias);
  m.head = head_weights(t, m, config_value<bool>(c, {"tie_word_embeddings"}, true));
}

inline Model load_bloom(const nlohmann::json& c, const Tensors& t) {
  Model m;
  m.family = Family::Bloom;
  m.d = config_value<int64_t>(c, {"hidden_size", "n_embed"});
  m.H = config_value<int64_t>(c, {"n_head", "num_attention_heads"});
  m.L = config_value<int64_t>(c, {"n_layer", "num_hidden_layers"});
  m.V = config_value<int64_t>(c, {"vocab_size"});
  m.eps = config_value<double>(c, {"layer_norm_epsilon"}, 1e-5);
  m.post_ln = config_value<bool>(c, {"apply_residual_connection_post_layernorm"}, false);
  m.hd = m.d / m.H;
  m.ffn = 4 * m.d;
  m.scale = 1.0 / std::sqrt(double(m.hd));
  m.slopes = alibi_slopes(m.H, 8);
  m.emb = t.get("word_embeddings.weight", {m.V, m.d});
  m.emb_ln = t.layer_norm("word_embeddings_layernorm", m.d, true);
  load_blocks(c, t, kBloomNames, true, true, m);
  return m;
}

// MosaicML MPT (llm-foundry's modeling_mpt.py / attention.py / ffn.py); HF's MptForCausalLM is
// the no_bias, expansion_ratio 4, logit_scale null subset of it.
inline Model load_mpt(const nlohmann::json& c, const Tensors& t) {
  Model m;
  m.family = Family::Mpt;
  m.d = config_value<int64_t>(c, {"d_model"});
  m.H = config_value<int64_t>(c, {"n_heads"});
  m.L = config_value<int64_t>(c, {"n_layers"});
  m.V = config_value<int64_t>(c, {"vocab_size"});
  m.eps = config_value<double>(c, {"layer_norm_epsilon"}, 1e-5);
  m.hd = m.d / m.H;
  m.ffn = int64_t(double(m.d) * config_value<double>(c, {"expansion_ratio"}, 4.0));
  m.qkv_per_head = false;
  const bool bias = !config_value<bool>(c, {"no_bias"}, true);
  const nlohmann::json a = c.value("attn_config", nlohmann::json::object());
  if (!a.value("alibi", true)) throw std::runtime_error("reference: MPT without ALiBi");
  if (a.value("qk_ln", false)) throw std::runtime_error("reference: MPT qk_ln not supported");
  if (t.has("wpe.weight")) throw std::runtime_error("reference: MPT learned positions");
  m.slopes = alibi_slopes(m.H, config_value<double>(a, {"alibi_bias_max"}, 8.0));
  // MosaicML: softmax_scale None -> 1/sqrt(d_model/n_heads); `if clip_qkv:` so 0 means none.
  m.scale = config_value<double>(a, {"softmax_scale"}, 1.0 / std::sqrt(double(m.hd)));
  const double clip = config_value<double>(a, {"clip_qkv"}, 0.0);
  if (clip != 0) m.clip_qkv = clip;
  // MPTForCausalLM.forward: logits *= logit_scale ("inv_sqrt_d_model" = 1/sqrt(d_model)).
  if (c.contains("logit_scale") && !c["logit_scale"].is_null()) {
    const auto& s = c["logit_scale"];
    if (s.is_string()) {
      if (s.get<std::string>() != "inv_sqrt_d_model")
        throw std::runtime_error("reference: MPT logit_scale " + s.get<std::string>());
      m.logit_scale = 1.0 / std::sqrt(double(m.d));
    } else {
      m.logit_scale = s.get<double>();
    }
  }
  m.emb = t.get("wte.weight", {m.V, m.d});
  load_blocks(c, t, kMptNames, bias, bias, m);
  return m;
}

// HF FalconForCausalLM (transformers/models/falcon/modeling_falcon.py), the Falcon-RW layout:
// alibi, sequential attention then MLP, one LayerNorm each, fused per-head qkv.
inline Model load_falcon(const nlohmann::json& c, const Tensors& t) {
  if (!c.value("alibi", false) || c.value("parallel_attn", true) ||
      c.value("new_decoder_architecture", false) || c.value("multi_query", true))
    throw std::runtime_error(
        "reference: only Falcon-RW (alibi, sequential, old architecture, multi-head)");
  if (c.value("activation", std::string("gelu")) != "gelu")
    throw std::runtime_error("reference: Falcon activation must be gelu");
  Model m;
  m.family = Family::Falcon;
  m.d = config_value<int64_t>(c, {"hidden_size"});
  m.H = config_value<int64_t>(c, {"num_attention_heads", "n_head"});
  m.L = config_value<int64_t>(c, {"num_hidden_layers", "n_layer"});
  m.V = config_value<int64_t>(c, {"vocab_size"});
  m.eps = config_value<double>(c, {"layer_norm_epsilon"}, 1e-5);
  m.hd = m.d / m.H;
  m.ffn = config_value<int64_t>(c, {"ffn_hidden_size"}, 4 * m.d);
  m.scale = 1.0 / std::sqrt(double(m.hd));
  m.slopes = alibi_slopes(m.H, 8);
  const bool bias = config_value<bool>(c, {"bias"}, false);
  m.emb = t.get("word_embeddings.weight", {m.V, m.d});
  load_blocks(c, t, kBloomNames, true, bias, m);
  return m;
}

inline Model load_model(const std::string& dir) {
  std::ifstream in(dir + "/config.json");
  if (!in) throw std::runtime_error(dir + "/config.json: cannot open");
  const nlohmann::json c = nlohmann::json::parse(in);
  const Tensors t(dir + "/model.safetensors");
  const std::string type = c.value("model_type", std::string());
  Model m;
  if (type == "bloom")
    m = load_bloom(c, t);
  else if (type == "mpt")
    m = load_mpt(c, t);
  else if (type == "falcon")
    m = load_falcon(c, t);
  else
    throw std::runtime_error(dir + "/config.json: model_type '" + type +
                             "' is not an ALiBi family");
  if (m.hd * m.H != m.d) throw std::runtime_error(dir + ": hidden size not a multiple of heads");
  return m;
}

// ---- Forward pass -------------------------------------------------------------------------------

using Rows = std::vector<std::vector<double>>;  // [T][width]

// torch.nn.LayerNorm: (x - mean) / sqrt(var + eps) * w + b, var biased (divided by n).
inline std::vector<double> layer_norm(const LayerNorm& ln, const std::vector<double>& x,
                                      double eps) {
  const size_t n = x.size();
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= double(n);
  for (double v : x) var += (v - mean) * (v - mean);
  var /= double(n);
  const double inv = 1.0 / std::sqrt(var + eps);
  std::vector<double> y(n);
  for (size_t i = 0; i < n; ++i)
    y[i] = (x[i] - mean) * inv * ln.w[i] + (ln.b.empty() ? 0 : ln.b[i]);
  return y;
}

inline Rows layer_norm(const LayerNorm& ln, const Rows& x, double eps) {
  Rows y;
  for (const auto& row : x) y.push_back(layer_norm(ln, row, eps));
  return y;
}

// torch.nn.Linear: y[o] = sum_i W[o, i] x[i] + b[o].
inline Rows linear(const Linear& l, const Rows& x) {
  Rows y(x.size(), std::vector<double>(l.out));
  for (size_t t = 0; t < x.size(); ++t)
    for (int64_t o = 0; o < l.out; ++o) {
      double s = l.b.empty() ? 0 : l.b[o];
      for (int64_t i = 0; i < l.in; ++i) s += l.w[o * l.in + i] * x[t][i];
      y[t][o] = s;
    }
  return y;
}

// Where q, k, v of head h start in a row of the fused qkv output (which: 0 q, 1 k, 2 v).
// BLOOM/Falcon view the row as [H, 3, hd] (modeling_bloom _split_heads, modeling_falcon
// _split_heads); MPT chunks it into Q | K | V of d each, then each into [H, hd].
inline int64_t qkv_offset(const Model& m, int64_t h, int which) {
  return m.qkv_per_head ? (h * 3 + which) * m.hd : which * m.d + h * m.hd;
}

// Attention score of query t and key j <= t for head h, given qk = q_t . k_j. Exact arithmetic
// throughout: HF's float64 BLOOM and MPT still form the ALiBi term as a float32 product and round
// the scores to float32 before the softmax, which is not modelled (it moves probabilities by
// ~1e-7 relative; Falcon's bfloat16 term is part of the model and is).
inline double score(const Model& m, int64_t h, int64_t j, double qk, const RefOptions& o) {
  switch (m.family) {
    case Family::Bloom:  // alibi.baddbmm(q, k^T, beta=1, alpha=1/sqrt(hd)), alibi = slope * j
      return qk * m.scale + m.slopes[h] * double(j);
    case Family::Mpt:  // q k^T * softmax_scale + attn_bias (MosaicML scaled_multihead_dot_product)
      return qk * m.scale + m.slopes[h] * double(j);
    case Family::Falcon:  // (q k^T + alibi) * inv_norm_factor, alibi in bfloat16
      return (qk + (o.falcon_alibi_twice ? 2 : 1) * falcon_alibi_bias(m.slopes[h], j)) * m.scale;
  }
  return 0;
}

inline RefOutput forward(const Model& m, const std::vector<int32_t>& ids,
                         const RefOptions& o = {}) {
  const int64_t T = int64_t(ids.size()), d = m.d, H = m.H, hd = m.hd;
  RefOutput out;
  Rows x(T);
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= m.V) throw std::runtime_error("reference: token id out of range");
    x[t].assign(m.emb.begin() + ids[t] * d, m.emb.begin() + (ids[t] + 1) * d);
  }
  if (m.emb_ln) x = layer_norm(*m.emb_ln, x, m.eps);  // BLOOM's word_embeddings_layernorm

  for (const Block& blk : m.blocks) {
    // Attention sublayer: x = dense(attention(LN1(x))) + residual.
    const Rows a = layer_norm(blk.ln1, x, m.eps);
    const Rows& res_attn = m.post_ln ? a : x;
    Rows qkv = linear(blk.qkv, a);
    if (m.clip_qkv)  // MosaicML: qkv.clamp_(min=-clip_qkv, max=clip_qkv) on the fused output
      for (auto& row : qkv)
        for (double& v : row) v = std::clamp(v, -*m.clip_qkv, *m.clip_qkv);

    std::vector<double> probs(H * T * T, 0.0);
    Rows ctx(T, std::vector<double>(d, 0.0));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t qo = qkv_offset(m, h, 0), ko = qkv_offset(m, h, 1), vo = qkv_offset(m, h, 2);
      for (int64_t t = 0; t < T; ++t) {
        // Causal softmax over keys j = 0..t (masked keys get probability 0).
        std::vector<double> s(t + 1);
        for (int64_t j = 0; j <= t; ++j) {
          double qk = 0;
          for (int64_t i = 0; i < hd; ++i) qk += qkv[t][qo + i] * qkv[j][ko + i];
          s[j] = score(m, h, j, qk, o);
        }
        const double mx = *std::max_element(s.begin(), s.end());
        double z = 0;
        for (double& v : s) z += (v = std::exp(v - mx));
        double* p = &probs[(h * T + t) * T];
        for (int64_t j = 0; j <= t; ++j) p[j] = s[j] / z;
        // Context of head h goes to columns h*hd..(h+1)*hd (heads concatenated in order).
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < hd; ++i) ctx[t][h * hd + i] += p[j] * qkv[j][vo + i];
      }
    }
    const Rows attn = linear(blk.dense, ctx);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < d; ++i) x[t][i] = attn[t][i] + res_attn[t][i];
    out.probs.push_back(std::move(probs));

    // MLP sublayer: x = down(gelu(up(LN2(x)))) + residual.
    const Rows b = layer_norm(blk.ln2, x, m.eps);
    const Rows& res_mlp = m.post_ln ? b : x;
    Rows hidden = linear(blk.up, b);
    for (auto& row : hidden)
      for (double& v : row) v = m.family == Family::Bloom ? gelu_tanh(v) : gelu_erf(v);
    const Rows mlp = linear(blk.down, hidden);
    Rows next(T, std::vector<double>(d));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < d; ++i) next[t][i] = mlp[t][i] + res_mlp[t][i];
    x = std::move(next);
  }

  // Final LayerNorm and the LM head (tied to the embedding unless lm_head.weight is given).
  x = layer_norm(m.ln_f, x, m.eps);
  out.logits.assign(T * m.V, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t v = 0; v < m.V; ++v) {
      double s = 0;
      for (int64_t i = 0; i < d; ++i) s += x[t][i] * m.head[v * d + i];
      out.logits[t * m.V + v] = s * m.logit_scale;
    }

  // Next-token negative log-likelihood: logsumexp(logits[t]) - logits[t][ids[t+1]].
  for (int64_t t = 0; t + 1 < T; ++t) {
    const double* l = &out.logits[t * m.V];
    const double mx = *std::max_element(l, l + m.V);
    double z = 0;
    for (int64_t v = 0; v < m.V; ++v) z += std::exp(l[v] - mx);
    out.nll_sum += mx + std::log(z) - l[ids[t + 1]];
  }

  // Head statistics, each averaged over the T query rows.
  for (int64_t l = 0; l < m.L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      double bos = 0, ent = 0, local = 0;
      for (int64_t t = 0; t < T; ++t) {
        const double* p = &out.probs[l][(h * T + t) * T];
        bos += p[0];
        for (int64_t j = 0; j <= t; ++j) {
          ent -= p[j] * std::log(std::max(p[j], 1e-10));
          if (j >= t - 2) local += p[j];
        }
      }
      out.bos_mass.push_back(bos / double(T));
      out.entropy.push_back(ent / double(T));
      out.local_mass.push_back(local / double(T));
    }
  return out;
}

}  // namespace ref

// The reference forward pass of the model in model_dir (config.json, model.safetensors) on one
// sequence of token ids.
inline RefOutput reference_forward(const std::string& model_dir, const std::vector<int32_t>& ids,
                                   const RefOptions& options = {}) {
  return ref::forward(ref::load_model(model_dir), ids, options);
}

}  // namespace hs::test
