// Force-included when compiling .cu sources as host C++: CUDA's execution model on fibers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <vector_types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#undef __shared__
#define __shared__ static
#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace emu {
struct Ctx {
  uint3 tid, bid;
  dim3 bdim, gdim;
  unsigned phase;  // which of the warp's two slot sets the next shuffle uses
};
extern Ctx* cur;
void syncthreads();
void warp_barrier();
void* dyn_smem();
uint64_t* warp_slots();    // 2 x 32 slots of the current warp
uint32_t* warp_scratch();  // 256 words of the current warp
void mma_m16n8k16(float* d, const uint32_t* a, const uint32_t* b, bool bf16);
// Enqueues a kernel on `stream` (run later, at a synchronisation point, or recorded into a graph
// while the stream captures). `fn` names the kernel for the launch checks (its dynamic shared
// memory limit, set by cudaFuncSetAttribute).
void enqueue_launch(const void* fn, const char* name, dim3 g, dim3 b, size_t smem,
                    cudaStream_t stream, std::function<void()> body);
struct Launch {
  dim3 g, b;
  size_t smem;
  cudaStream_t stream;
  Launch(dim3 g_, dim3 b_, size_t s = 0, cudaStream_t st = nullptr)
      : g(g_), b(b_), smem(s), stream(st) {}
  void run(const void* fn, const char* name, std::function<void()> f) {
    enqueue_launch(fn, name, g, b, smem, stream, std::move(f));
  }
};
inline unsigned flat_tid() {
  return cur->tid.x + cur->bdim.x * (cur->tid.y + cur->bdim.y * cur->tid.z);
}
template <class T>
T shfl(T v, int src) {
  // One barrier per shuffle: consecutive shuffles alternate between two slot sets, and a lane can
  // write a set again only after the next shuffle's barrier, which every lane reaches after its
  // read of this one.
  static_assert(sizeof(T) <= 8);
  const unsigned lane = flat_tid() % 32;
  uint64_t* s = warp_slots() + 32 * cur->phase;
  cur->phase ^= 1;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  s[lane] = bits;
  warp_barrier();
  const uint64_t r = s[src & 31];
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}
}  // namespace emu

#define threadIdx (::emu::cur->tid)
#define blockIdx (::emu::cur->bid)
#define blockDim (::emu::cur->bdim)
#define gridDim (::emu::cur->gdim)
inline void __syncthreads() { ::emu::syncthreads(); }
template <class T>
T __shfl_sync(unsigned, T v, int src, int = 32) {
  return ::emu::shfl(v, src);
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int o, int = 32) {
  return ::emu::shfl(v, int(::emu::flat_tid() % 32) ^ o);
}
template <class T>
T min(T a, T b) {
  return a < b ? a : b;
}
template <class T>
T max(T a, T b) {
  return a < b ? b : a;
}
inline float __fmul_rn(float a, float b) { return a * b; }
template <class T>
cudaError_t cudaFuncSetAttribute(T* f, cudaFuncAttribute a, int v) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(f), a, v);
}
