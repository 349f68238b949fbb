// CPU reference operations of the BLOOM block, fp32. Each is a plain function over row-major
// buffers; the model code (model/forward.cpp) is a sequence of these calls.
#pragma once

#include <cstdint>

namespace hs::cpu {

// out[N,C] = (inp - mean) * rstd * w + b per row (biased variance). mean/rstd [N] may be null;
// when given they receive what the backward pass needs.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int64_t N, int64_t C, float eps);

// out[N,OC] = inp[N,IC] @ W[OC,IC]^T (+ bias[OC] when not null). OpenBLAS sgemm.
void linear_forward(float* out, const float* inp, const float* W, const float* bias, int64_t N,
                    int64_t IC, int64_t OC);

// In place, n elements: x = 0.5 x (1 + tanh(0.79788456 x (1 + 0.044715 x^2))).
void gelu_forward(float* x, int64_t n);

// out[i] += inp[i]
void residual_add(float* out, const float* inp, int64_t n);

// Per-head sums over query rows of the diagnostic statistics (divide by T for the means).
struct HeadStatSums {
  double* bos;      // [H] sum_t p[t,0]
  double* entropy;  // [H] sum_t -sum_j p log max(p, 1e-10)
  double* local;    // [H] sum_t sum_{j=max(0,t-2)..t} p[t,j]
};

// Causal ALiBi attention for one sequence. qkv[T, 3*H*hd] holds per head h the columns
// [h*3hd, h*3hd+hd) = q, then k, then v (BLOOM's fused layout). ctx[T, H*hd] head-major.
// score[t,j] = q_t.k_j / sqrt(hd) + slope[h] * j for j <= t; softmax in fp32.
// probs [H,T,T] (masked entries 0) and stats are optional (null): the statistics are computed
// row by row so a diagnosis never holds the T x T probabilities of a layer.
void alibi_attention_forward(float* ctx, float* probs, HeadStatSums* stats, const float* qkv,
                             const float* slopes, int64_t T, int64_t H, int64_t hd);

// Online log-sum-exp over vocabulary chunks: for each row t of logits[T, Vc] update the running
// max m[t] and scaled sum s[t] (so lse = m + log s). Start with m = -inf, s = 0.
void logsumexp_update(const float* logits, int64_t T, int64_t Vc, float* m, double* s);

}  // namespace hs::cpu
