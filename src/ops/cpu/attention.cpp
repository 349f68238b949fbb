#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/ops.h"

namespace hs::cpu {

namespace {

// Softmax probabilities of query row t of head h into p[0..t]: the one place the scores are
// defined, shared by forward and backward (which recomputes them instead of storing T x T).
template <class T>
void attention_row(T* p, const T* qkv, int64_t ld, int64_t h, int64_t hd, int64_t t, T scale,
                   T slope) {
  const T* q = qkv + t * ld + h * 3 * hd;
  T mx = -INFINITY;
  for (int64_t j = 0; j <= t; ++j) {
    const T* k = qkv + j * ld + h * 3 * hd + hd;
    T dot = 0;
    for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
    p[j] = dot * scale + slope * T(j);
    mx = std::max(mx, p[j]);
  }
  T sum = 0;
  for (int64_t j = 0; j <= t; ++j) {
    p[j] = std::exp(p[j] - mx);
    sum += p[j];
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j <= t; ++j) p[j] *= inv;
}

}  // namespace

template <class T>
void alibi_attention_forward(T* ctx, T* probs, HeadStatSums* stats, const T* qkv,
                             const float* slopes, int64_t Tn, int64_t H, int64_t hd) {
  const int64_t ld = 3 * H * hd;  // row stride of qkv
  const T scale = T(1) / std::sqrt(T(hd));
  // Per-(head,row) statistics, summed serially afterwards so results do not depend on threads.
  std::vector<double> row_bos, row_ent, row_loc;
  if (stats) {
    row_bos.assign(H * Tn, 0);
    row_ent.assign(H * Tn, 0);
    row_loc.assign(H * Tn, 0);
  }
#pragma omp parallel
  {
    std::vector<T> p(Tn);
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < Tn; ++t) {
        attention_row(p.data(), qkv, ld, h, hd, t, scale, T(slopes[h]));
        T* out = ctx + t * H * hd + h * hd;
        std::fill(out, out + hd, T(0));
        for (int64_t j = 0; j <= t; ++j) {
          const T* v = qkv + j * ld + h * 3 * hd + 2 * hd;
          for (int64_t i = 0; i < hd; ++i) out[i] += p[j] * v[i];
        }
        if (probs) {
          T* row = probs + (h * Tn + t) * Tn;
          std::copy(p.begin(), p.begin() + t + 1, row);
          std::fill(row + t + 1, row + Tn, T(0));
        }
        if (stats) {
          double ent = 0, loc = 0;
          for (int64_t j = 0; j <= t; ++j) {
            ent -= double(p[j]) * std::log(std::max(double(p[j]), 1e-10));
            if (j >= t - 2) loc += double(p[j]);
          }
          row_bos[h * Tn + t] = double(p[0]);
          row_ent[h * Tn + t] = ent;
          row_loc[h * Tn + t] = loc;
        }
      }
    }
  }
  if (stats) {
    for (int64_t h = 0; h < H; ++h) {
      double b = 0, e = 0, l = 0;
      for (int64_t t = 0; t < Tn; ++t) {
        b += row_bos[h * Tn + t];
        e += row_ent[h * Tn + t];
        l += row_loc[h * Tn + t];
      }
      stats->bos[h] = b;
      stats->entropy[h] = e;
      stats->local[h] = l;
    }
  }
}

template <class T>
void alibi_attention_backward(T* dqkv, const T* dctx, const T* qkv, const float* slopes,
                              const uint8_t* head_mask, int64_t Tn, int64_t H, int64_t hd) {
  const int64_t ld = 3 * H * hd;
  const T scale = T(1) / std::sqrt(T(hd));
  // Heads in parallel: dk and dv of a head sum over all its query rows.
#pragma omp parallel
  {
    std::vector<T> p(Tn), dp(Tn);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < H; ++h) {
      if (head_mask && !head_mask[h]) continue;
      for (int64_t t = 0; t < Tn; ++t) {
        attention_row(p.data(), qkv, ld, h, hd, t, scale, T(slopes[h]));
        const T* g = dctx + t * H * hd + h * hd;
        T dot = 0;  // sum_j p_j dp_j
        for (int64_t j = 0; j <= t; ++j) {
          const T* v = qkv + j * ld + h * 3 * hd + 2 * hd;
          T* dv = dqkv + j * ld + h * 3 * hd + 2 * hd;
          T s = 0;
          for (int64_t i = 0; i < hd; ++i) {
            s += g[i] * v[i];
            dv[i] += p[j] * g[i];
          }
          dp[j] = s;
          dot += p[j] * s;
        }
        const T* q = qkv + t * ld + h * 3 * hd;
        T* dq = dqkv + t * ld + h * 3 * hd;
        for (int64_t j = 0; j <= t; ++j) {
          const T ds = p[j] * (dp[j] - dot) * scale;
          const T* k = qkv + j * ld + h * 3 * hd + hd;
          T* dk = dqkv + j * ld + h * 3 * hd + hd;
          for (int64_t i = 0; i < hd; ++i) {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  }
}

template <class T>
double alibi_sink_loss_backward(T* dqkv, const T* qkv, const float* slopes,
                                const uint8_t* head_mask, T weight, int64_t Tn, int64_t H,
                                int64_t hd) {
  const int64_t ld = 3 * H * hd;
  const T scale = T(1) / std::sqrt(T(hd));
  std::vector<double> head_loss(H, 0.0);
  // d(-log p0)/d score_j = p_j - [j == 0]; heads in parallel as in the backward above.
#pragma omp parallel
  {
    std::vector<T> p(Tn);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < H; ++h) {
      if (!head_mask[h]) continue;
      for (int64_t t = 1; t < Tn; ++t) {
        attention_row(p.data(), qkv, ld, h, hd, t, scale, T(slopes[h]));
        head_loss[h] -= std::log(std::max(double(p[0]), 1e-30));
        const T* q = qkv + t * ld + h * 3 * hd;
        T* dq = dqkv + t * ld + h * 3 * hd;
        for (int64_t j = 0; j <= t; ++j) {
          const T ds = weight * (p[j] - T(j == 0)) * scale;
          const T* k = qkv + j * ld + h * 3 * hd + hd;
          T* dk = dqkv + j * ld + h * 3 * hd + hd;
          for (int64_t i = 0; i < hd; ++i) {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  }
  double loss = 0;
  for (int64_t h = 0; h < H; ++h) loss += head_loss[h];
  return double(weight) * loss;
}

template double alibi_sink_loss_backward<float>(float*, const float*, const float*, const uint8_t*,
                                                float, int64_t, int64_t, int64_t);
template double alibi_sink_loss_backward<double>(double*, const double*, const float*,
                                                 const uint8_t*, double, int64_t, int64_t, int64_t);

template void alibi_attention_forward<float>(float*, float*, HeadStatSums*, const float*,
                                             const float*, int64_t, int64_t, int64_t);
template void alibi_attention_forward<double>(double*, double*, HeadStatSums*, const double*,
                                              const float*, int64_t, int64_t, int64_t);
template void alibi_attention_backward<float>(float*, const float*, const float*, const float*,
                                              const uint8_t*, int64_t, int64_t, int64_t);
template void alibi_attention_backward<double>(double*, const double*, const double*, const float*,
                                               const uint8_t*, int64_t, int64_t, int64_t);

}  // namespace hs::cpu
