#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/ops.h"
#include "util/interrupt.h"

namespace hs::cpu {

namespace {

// Softmax probabilities of one query row against keys 0..pos into p[0..pos]: the one place the
// scores are computed, shared by forward and backward (which recomputes them instead of storing
// T x T). Key j is k + j * ldk.
template <class T>
void attention_row(T* p, const T* q, const T* k, int64_t ldk, int64_t hd, int64_t pos, T scale,
                   float slope, const AlibiParams& a) {
  T mx = -INFINITY;
  for (int64_t j = 0; j <= pos; ++j) {
    const T* kj = k + j * ldk;
    T dot = 0;
    for (int64_t i = 0; i < hd; ++i) dot += q[i] * kj[i];
    p[j] = alibi_score(dot, scale, slope, j, a);
    mx = std::max(mx, p[j]);
  }
  T sum = 0;
  for (int64_t j = 0; j <= pos; ++j) {
    p[j] = std::exp(p[j] - mx);
    sum += p[j];
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j <= pos; ++j) p[j] *= inv;
}

// Work below which the rows run on the calling thread: a decoding step's attention is too little
// to pay for waking a thread team (on a busy machine each barrier can cost a scheduler tick).
constexpr int64_t kParallelWork = int64_t(1) << 20;

}  // namespace

template <class T>
void alibi_attention_forward(T* ctx, int64_t ldctx, T* probs, HeadStatSums* stats,
                             const AttnInput<T>& in, const float* slopes, const AlibiParams& a,
                             int64_t H, int64_t hd) {
  const int64_t R = in.rows, width = in.past + R;
  const T scale = alibi_scale<T>(a, hd);
  // Per-(head,row) statistics, summed serially afterwards so results do not depend on threads.
  std::vector<double> row_bos, row_ent, row_loc;
  if (stats) {
    row_bos.assign(H * R, 0);
    row_ent.assign(H * R, 0);
    row_loc.assign(H * R, 0);
  }
  const int64_t work = H * R * width * hd;
#pragma omp parallel if (work > kParallelWork)
  {
    std::vector<T> p(width);
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t r = 0; r < R; ++r) {
        // A long sequence's rows take seconds per layer: Ctrl-C skips the rest (thrown below).
        if (interrupted()) continue;
        const int64_t t = in.past + r;
        const T* k = in.k + h * in.hskv;
        const T* v = in.v + h * in.hskv;
        attention_row(p.data(), in.q + r * in.ldq + h * in.hsq, k, in.ldkv, hd, t, scale, slopes[h],
                      a);
        T* out = ctx + r * ldctx + h * hd;
        std::fill(out, out + hd, T(0));
        for (int64_t j = 0; j <= t; ++j) {
          const T* vj = v + j * in.ldkv;
          for (int64_t i = 0; i < hd; ++i) out[i] += p[j] * vj[i];
        }
        if (probs) {
          T* row = probs + (h * R + r) * width;
          std::copy(p.begin(), p.begin() + t + 1, row);
          std::fill(row + t + 1, row + width, T(0));
        }
        if (stats) {
          double ent = 0, loc = 0;
          for (int64_t j = 0; j <= t; ++j) {
            ent -= double(p[j]) * std::log(std::max(double(p[j]), 1e-10));
            if (j >= t - 2) loc += double(p[j]);
          }
          row_bos[h * R + r] = double(p[0]);
          row_ent[h * R + r] = ent;
          row_loc[h * R + r] = loc;
        }
      }
    }
  }
  check_interrupted();
  if (stats) {
    for (int64_t h = 0; h < H; ++h) {
      double b = 0, e = 0, l = 0;
      for (int64_t r = 0; r < R; ++r) {
        b += row_bos[h * R + r];
        e += row_ent[h * R + r];
        l += row_loc[h * R + r];
      }
      stats->bos[h] = b;
      stats->entropy[h] = e;
      stats->local[h] = l;
    }
  }
}

template <class T>
void alibi_attention_backward(T* dqkv, const T* dctx, const T* qkv, const float* slopes,
                              const AlibiParams& a, const uint8_t* head_mask, int64_t Tn, int64_t H,
                              int64_t hd) {
  const int64_t ld = 3 * H * hd;
  const T scale = alibi_scale<T>(a, hd);
  // Heads in parallel: dk and dv of a head sum over all its query rows. Ctrl-C ends every head's
  // row loop early (a head of a long sequence takes seconds); thrown after the region.
#pragma omp parallel
  {
    std::vector<T> p(Tn), dp(Tn);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < H; ++h) {
      if (head_mask && !head_mask[h]) continue;
      const int64_t q0 = qkv_row(h, 0, hd), k0 = qkv_row(h, 1, hd), v0 = qkv_row(h, 2, hd);
      for (int64_t t = 0; t < Tn && !interrupted(); ++t) {
        const T* q = qkv + t * ld + q0;
        attention_row(p.data(), q, qkv + k0, ld, hd, t, scale, slopes[h], a);
        const T* g = dctx + t * H * hd + h * hd;
        T dot = 0;  // sum_j p_j dp_j
        for (int64_t j = 0; j <= t; ++j) {
          const T* v = qkv + j * ld + v0;
          T* dv = dqkv + j * ld + v0;
          T s = 0;
          for (int64_t i = 0; i < hd; ++i) {
            s += g[i] * v[i];
            dv[i] += p[j] * g[i];
          }
          dp[j] = s;
          dot += p[j] * s;
        }
        // d score / d (q.k) is the scale in every family (the bias does not depend on q or k).
        T* dq = dqkv + t * ld + q0;
        for (int64_t j = 0; j <= t; ++j) {
          const T ds = p[j] * (dp[j] - dot) * scale;
          const T* k = qkv + j * ld + k0;
          T* dk = dqkv + j * ld + k0;
          for (int64_t i = 0; i < hd; ++i) {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  }
  check_interrupted();
}

template <class T>
double alibi_sink_loss_backward(T* dqkv, const T* qkv, const float* slopes, const AlibiParams& a,
                                const uint8_t* head_mask, T weight, int64_t Tn, int64_t H,
                                int64_t hd) {
  const int64_t ld = 3 * H * hd;
  const T scale = alibi_scale<T>(a, hd);
  std::vector<double> head_loss(H, 0.0);
  // d(-log p0)/d score_j = p_j - [j == 0]; heads in parallel as in the backward above.
#pragma omp parallel
  {
    std::vector<T> p(Tn);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < H; ++h) {
      if (!head_mask[h]) continue;
      const int64_t q0 = qkv_row(h, 0, hd), k0 = qkv_row(h, 1, hd);
      for (int64_t t = 1; t < Tn && !interrupted(); ++t) {
        const T* q = qkv + t * ld + q0;
        attention_row(p.data(), q, qkv + k0, ld, hd, t, scale, slopes[h], a);
        head_loss[h] -= std::log(std::max(double(p[0]), 1e-30));
        T* dq = dqkv + t * ld + q0;
        for (int64_t j = 0; j <= t; ++j) {
          const T ds = weight * (p[j] - T(j == 0)) * scale;
          const T* k = qkv + j * ld + k0;
          T* dk = dqkv + j * ld + k0;
          for (int64_t i = 0; i < hd; ++i) {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  }
  check_interrupted();
  double loss = 0;
  for (int64_t h = 0; h < H; ++h) loss += head_loss[h];
  return double(weight) * loss;
}

template <class T>
void clamp_forward(T* x, uint8_t* mask, int64_t n, T c) {
  for (int64_t i = 0; i < n; ++i) {
    if (mask) mask[i] = x[i] >= -c && x[i] <= c;
    x[i] = std::clamp(x[i], -c, c);
  }
}

template <class T>
void clamp_backward(T* dx, const uint8_t* mask, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!mask[i]) dx[i] = T(0);
}

#define HS_INSTANTIATE(T)                                                                         \
  template void alibi_attention_forward<T>(T*, int64_t, T*, HeadStatSums*, const AttnInput<T>&,   \
                                           const float*, const AlibiParams&, int64_t, int64_t);   \
  template void alibi_attention_backward<T>(T*, const T*, const T*, const float*,                 \
                                            const AlibiParams&, const uint8_t*, int64_t, int64_t, \
                                            int64_t);                                             \
  template double alibi_sink_loss_backward<T>(T*, const T*, const float*, const AlibiParams&,     \
                                              const uint8_t*, T, int64_t, int64_t, int64_t);      \
  template void clamp_forward<T>(T*, uint8_t*, int64_t, T);                                       \
  template void clamp_backward<T>(T*, const uint8_t*, int64_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(double)
#undef HS_INSTANTIATE

}  // namespace hs::cpu
