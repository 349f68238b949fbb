// Warp-level tensor-core products (mma.sync m16n8k16, sm_80 and later) and their register
// fragments, for the attention kernels on tensor cores (attention_tc.cu).
//
// One mma computes D[16x8] = A[16x16] B[16x8] + D in fp32 from 16-bit A and B. Lane l of the
// warp holds, with g = l / 4 and t = l % 4 (PTX ISA, "matrix fragments for mma.m16n8k16"):
//   A: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   B: b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   D: d[0..1] = D[g][2t..2t+1], d[2..3] = D[g+8][2t..2t+1]
// each 32-bit register holding two 16-bit values, the lower index in the low half. So a D
// fragment of two adjacent 16x8 tiles is, converted to 16 bits, the A fragment of one 16x16 tile
// (FlashAttention-2's probabilities stay in registers between its two products).
//
// HS_CUDA_EMULATION (the CPU emulation of the CUDA runtime, scripts/emulate_cuda.sh) computes the
// same product from the same fragments on the host.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace hs::cuda::mma {

// Two 16-bit values of type T packed as a fragment register: lo in the low half.
template <class T>
__device__ __forceinline__ uint32_t pack(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The 32-bit register at p (two adjacent 16-bit values; p 4-byte aligned).
template <class T>
__device__ __forceinline__ uint32_t pair(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// d += A B for one 16x16 A fragment and one 16x8 B fragment.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4],
                                          const uint32_t (&b)[2]) {
#ifdef HS_CUDA_EMULATION
  ::emu::mma_m16n8k16(d, a, b, std::is_same_v<T, __nv_bfloat16>);
#else
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// The A fragment of rows r0..r0+15, columns c0..c0+15 of a row-major 16-bit matrix with row
// stride ld (elements; even): for Q K^T with A = Q, and any product whose left factor is stored
// row by row.
template <class T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* m, int ld, int r0, int c0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const T* p = m + (r0 + g) * ld + c0 + 2 * t;
  a[0] = pair(p);
  a[1] = pair(p + 8 * ld);
  a[2] = pair(p + 8);
  a[3] = pair(p + 8 * ld + 8);
}

// The B fragment of B = M^T, B[k][n] = M[n0 + n][k0 + k], for a row-major M (ld even): the
// right factor of X M^T (keys for Q K^T, values for dO V^T, or a transposed copy for X M).
template <class T>
__device__ __forceinline__ void load_bt(uint32_t (&b)[2], const T* m, int ld, int n0, int k0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const T* p = m + (n0 + g) * ld + k0 + 2 * t;
  b[0] = pair(p);
  b[1] = pair(p + 8);
}

// The A fragment of the 16x16 tile made of D fragments c[2k] and c[2k + 1] (columns 16k..16k+15
// of a 16-row accumulator), converted to T.
template <class T>
__device__ __forceinline__ void d_to_a(uint32_t (&a)[4], const float (&lo)[4],
                                       const float (&hi)[4]) {
  a[0] = pack<T>(lo[0], lo[1]);
  a[1] = pack<T>(lo[2], lo[3]);
  a[2] = pack<T>(hi[0], hi[1]);
  a[3] = pack<T>(hi[2], hi[3]);
}

// acc[x] += A B for x < N8, where A is the 16 x (16 K16) tile held as D fragments s[0 .. 2 K16)
// (converted to T: d_to_a) and B[k][n] = M[8 x + n][k] for a row-major M with row stride ld
// (load_bt): P V with P from registers and V stored transposed, and the backward's P^T dO,
// dS^T Q, dS K.
template <class T, int K16, int N8>
__device__ __forceinline__ void mma_regs_bt(float (&acc)[N8][4], const float (&s)[2 * K16][4],
                                            const T* m, int ld) {
#pragma unroll
  for (int kb = 0; kb < K16; ++kb) {
    uint32_t a[4];
    d_to_a<T>(a, s[2 * kb], s[2 * kb + 1]);
#pragma unroll
    for (int x = 0; x < N8; ++x) {
      uint32_t b[2];
      load_bt<T>(b, m, ld, 8 * x, 16 * kb);
      mma_16816<T>(acc[x], a, b);
    }
  }
}

}  // namespace hs::cuda::mma
