#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/ops.h"

namespace hs::cpu {

void alibi_attention_forward(float* ctx, float* probs, HeadStatSums* stats, const float* qkv,
                             const float* slopes, int64_t T, int64_t H, int64_t hd) {
  const int64_t ld = 3 * H * hd;  // row stride of qkv
  const float scale = 1.0f / std::sqrt(float(hd));
  // Per-(head,row) statistics, summed serially afterwards so results do not depend on threads.
  std::vector<double> row_bos, row_ent, row_loc;
  if (stats) {
    row_bos.assign(H * T, 0);
    row_ent.assign(H * T, 0);
    row_loc.assign(H * T, 0);
  }
#pragma omp parallel
  {
    std::vector<float> p(T);
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const float* q = qkv + t * ld + h * 3 * hd;
        const float slope = slopes[h];
        float mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          const float* k = qkv + j * ld + h * 3 * hd + hd;
          float dot = 0;
          for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
          p[j] = dot * scale + slope * float(j);
          mx = std::max(mx, p[j]);
        }
        float sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const float inv = 1.0f / sum;
        float* out = ctx + t * H * hd + h * hd;
        std::fill(out, out + hd, 0.0f);
        for (int64_t j = 0; j <= t; ++j) {
          p[j] *= inv;
          const float* v = qkv + j * ld + h * 3 * hd + 2 * hd;
          for (int64_t i = 0; i < hd; ++i) out[i] += p[j] * v[i];
        }
        if (probs) {
          float* row = probs + (h * T + t) * T;
          std::copy(p.begin(), p.begin() + t + 1, row);
          std::fill(row + t + 1, row + T, 0.0f);
        }
        if (stats) {
          double ent = 0, loc = 0;
          for (int64_t j = 0; j <= t; ++j) {
            ent -= double(p[j]) * std::log(std::max(double(p[j]), 1e-10));
            if (j >= t - 2) loc += p[j];
          }
          row_bos[h * T + t] = p[0];
          row_ent[h * T + t] = ent;
          row_loc[h * T + t] = loc;
        }
      }
    }
  }
  if (stats) {
    for (int64_t h = 0; h < H; ++h) {
      double b = 0, e = 0, l = 0;
      for (int64_t t = 0; t < T; ++t) {
        b += row_bos[h * T + t];
        e += row_ent[h * T + t];
        l += row_loc[h * T + t];
      }
      stats->bos[h] = b;
      stats->entropy[h] = e;
      stats->local[h] = l;
    }
  }
}

}  // namespace hs::cpu
