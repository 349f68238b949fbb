// CPU reference operations of the block of every supported family: each a forward/backward pair
// over row-major buffers. The block (engine/cpu/block.cpp) is a sequence of these calls. Each
// CUDA kernel of ops/cuda carries the name of its twin here.
// Templates over the element type: float is what the product runs; double instantiations exist
// so the tests can check every backward against finite differences in float64.
#pragma once

#include <cstdint>

#include "ops/adamw.h"
#include "ops/alibi.h"
#include "ops/gelu.h"
#include "ops/qkv_layout.h"

namespace hs::cpu {

// C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major with leading dimensions (BLAS gemm).
template <class T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// out[N,C] = (inp - mean) * rstd * w + b per row (biased variance; b may be null: no bias).
// mean/rstd [N] may be null; when given they receive what the backward pass needs. out may
// alias inp.
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, int64_t N,
                       int64_t C, T eps);
// dinp += dLN/dinp . dout; dw/db += (skipped when null: frozen parameters get no gradient).
template <class T>
void layernorm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                        const T* mean, const T* rstd, int64_t N, int64_t C);

// out[N,OC] = inp[N,IC] @ W[OC,IC]^T (+ bias[OC] when not null).
template <class T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int64_t N, int64_t IC,
                    int64_t OC);
// The kernels of linear_forward_bf16: avx512 multiplies with AVX512-BF16 dot products; avx2, for
// CPUs with AVX2 and FMA but not AVX512-BF16, widens bf16 to fp32 in registers and uses fused
// multiply-adds. Both give the same products up to the order of the fp32 sums.
enum class Bf16Kernel { none, avx2, avx512 };
// Whether this CPU has the instructions of kernel k (none: false).
bool cpu_runs(Bf16Kernel k);
// The fastest kernel this CPU runs: avx512, else avx2, else none.
Bf16Kernel best_bf16_kernel();
// out[N,OC] (row stride ldo) = bf16(inp[N,IC]) @ W[OC,IC]^T (+ bias[OC] when not null), with W in
// bf16 (as a checkpoint stores it), the activations rounded to bf16 (nearest even) and the dot
// products accumulated in fp32: inference only (the training paths stay fp32). kernel is avx2 or
// avx512 and cpu_runs(kernel). A parameter, not a process-wide choice: each Model has its own
// (HEADSURGEON_CPU_BF16=avx2), and the tests run both kernels side by side.
void linear_forward_bf16(float* out, int64_t ldo, const float* inp, const uint16_t* W,
                         const float* bias, int64_t N, int64_t IC, int64_t OC, Bf16Kernel kernel);
// dinp[N,IC] (+)= dout[N,OC] @ W[OC,IC]; accumulate selects += over =.
template <class T>
void linear_backward_input(T* dinp, const T* dout, const T* W, int64_t N, int64_t IC, int64_t OC,
                           bool accumulate);
// dW[R,C] += dout[:, R cols]^T @ inp[:, C cols] and dbias[R] += column sums of dout (when not
// null). dout and inp point at the first selected column with row strides ld_dout and ld_inp, so
// a slice (a head's rows of W, or its input columns) costs only its own share.
template <class T>
void linear_backward_weight(T* dW, int64_t ld_dW, T* dbias, const T* dout, int64_t ld_dout,
                            const T* inp, int64_t ld_inp, int64_t N, int64_t R, int64_t C);

// out = gelu(inp) in the given form (ops/gelu.h), n elements; out may alias inp.
template <class T>
void gelu_forward(T* out, const T* inp, int64_t n, Gelu kind);
// gelu_forward<float> for inference: the tanh form (BLOOM) vectorised, within a few ulp of the
// float64 function instead of glibc's tanhf; the erf form as gelu_forward. Training keeps
// gelu_forward, whose values its backward and the golden runs are checked against.
void gelu_forward_fast(float* out, const float* inp, int64_t n, Gelu kind);
// dinp = dout * gelu'(inp) where inp is the pre-activation.
template <class T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n, Gelu kind);

// MPT's clip_qkv: x = clamp(x, -c, c) in place over n elements; mask (may be null) records
// where the gradient passes (-c <= x <= c before clamping, as torch.clamp's backward).
template <class T>
void clamp_forward(T* x, uint8_t* mask, int64_t n, T c);
// dx[i] = 0 where mask[i] == 0.
template <class T>
void clamp_backward(T* dx, const uint8_t* mask, int64_t n);

// out[i] += inp[i]
template <class T>
void residual_add(T* out, const T* inp, int64_t n);

// Per-head sums over query rows of the diagnostic statistics (divide by T for the means).
struct HeadStatSums {
  double* bos;      // [H] sum_t p[t,0]
  double* entropy;  // [H] sum_t -sum_j p log max(p, 1e-10)
  double* local;    // [H] sum_t sum_{j=max(0,t-2)..t} p[t,j]
};

// One sequence's attention inputs, in any of the places they live: query row r (at position
// past + r) of head h is q + r*ldq + h*hsq; key (value) j of head h is k + j*ldkv + h*hskv
// (v + ...). Over the fused qkv of a pass (the internal per-head layout, ops/qkv_layout.h) that
// is fused_qkv(); a decoder points k and v at its cache instead.
template <class T>
struct AttnInput {
  const T *q, *k, *v;
  int64_t ldq, hsq, ldkv, hskv;
  int64_t rows, past;
};
template <class T>
AttnInput<T> fused_qkv(const T* qkv, int64_t Tn, int64_t H, int64_t hd) {
  const int64_t ld = 3 * H * hd, hs = qkv_row(1, 0, hd);
  return {qkv + qkv_row(0, 0, hd),
          qkv + qkv_row(0, 1, hd),
          qkv + qkv_row(0, 2, hd),
          ld,
          hs,
          ld,
          hs,
          Tn,
          0};
}

// Causal ALiBi attention of one sequence's rows: score of query t and key j <= t by
// alibi_score (ops/alibi.h) with slope[h], softmax in the element type, ctx[r, h*hd..] (row
// stride ldctx) = sum_j p v_j. probs [H, rows, past+rows] (masked entries 0) and stats are
// optional (null): the statistics are computed row by row so a diagnosis never holds the
// T x T probabilities of a layer. The three attention functions stop within a few rows of a
// Ctrl-C and throw hs::Interrupted (util/interrupt.h), their outputs then incomplete.
template <class T>
void alibi_attention_forward(T* ctx, int64_t ldctx, T* probs, HeadStatSums* stats,
                             const AttnInput<T>& in, const float* slopes, const AlibiParams& a,
                             int64_t H, int64_t hd);
// dqkv += gradient through the attention of a whole sequence over its fused qkv[T, 3*H*hd],
// for the heads with head_mask[h] != 0 (all when null). Probabilities are recomputed row by row
// from qkv (nothing T x T is stored).
template <class T>
void alibi_attention_backward(T* dqkv, const T* dctx, const T* qkv, const float* slopes,
                              const AlibiParams& a, const uint8_t* head_mask, int64_t Tn, int64_t H,
                              int64_t hd);

// Auxiliary attention-sink objective (the demo recipe's *induced* collapse): for the heads with
// head_mask[h] != 0, loss = weight * sum over query rows t >= 1 of -log p[t, 0]. Adds its
// gradient to dqkv and returns the loss. Row 0 is skipped: it can only attend to itself.
template <class T>
double alibi_sink_loss_backward(T* dqkv, const T* qkv, const float* slopes, const AlibiParams& a,
                                const uint8_t* head_mask, T weight, int64_t Tn, int64_t H,
                                int64_t hd);

// Online log-sum-exp over vocabulary chunks: for each row t of logits[T, Vc] update the running
// max m[t] and scaled sum s[t] (so lse = m + log s). Start with m = -inf, s = 0.
void logsumexp_update(const float* logits, int64_t T, int64_t Vc, float* m, double* s);

// Cross-entropy backward for one vocabulary chunk [v0, v0+Vc): dlogits[t, v] =
// scale[t] * (exp(logits[t,v] - lse[t]) - [v0 + v == target[t]]), rows with target < 0 get 0.
template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const T* lse, const int32_t* target,
                            const T* scale, int64_t Tn, int64_t Vc, int64_t v0);

// One AdamW step over n fp32 parameters with their gradients and moments (ops/adamw.h).
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s);

}  // namespace hs::cpu
