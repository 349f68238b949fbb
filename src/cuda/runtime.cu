#include <algorithm>
#include <atomic>
#include <cstdio>

#include "cuda/runtime.h"
#include "util/error.h"

namespace hs::cuda {

namespace {
std::atomic<size_t> g_allocated{0}, g_peak{0};
}

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear the sticky error state of non-fatal errors
  throw Error("cuda", std::string(what) + ": " + cudaGetErrorString(err));
}

std::string unusable_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device (") + cudaGetErrorString(err) + ")";
  }
  if (n == 0) return "no CUDA device";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "cannot query CUDA device 0";
  if (p.major < 8)
    return std::string(p.name) + " has compute capability " + std::to_string(p.major) + "." +
           std::to_string(p.minor) + "; headsurgeon's kernels need 8.0 or newer";
  return "";
}

std::string device_description() {
  cudaDeviceProp p{};
  HS_CUDA(cudaGetDeviceProperties(&p, 0));
  char gib[32];
  std::snprintf(gib, sizeof gib, "%.1f GiB", double(p.totalGlobalMem) / double(1ull << 30));
  return std::string(p.name) + ", " + std::to_string(p.multiProcessorCount) + " SMs, " + gib;
}

size_t peak_allocated_bytes() { return g_peak.load(); }

DeviceBuffer::DeviceBuffer(size_t bytes) { reserve(bytes); }

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) {
    cudaFree(ptr_);
    g_allocated -= bytes_;
  }
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    this->~DeviceBuffer();
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::reserve(size_t bytes) {
  if (bytes <= bytes_) return;
  if (ptr_) {
    HS_CUDA(cudaFree(ptr_));
    g_allocated -= bytes_;
    ptr_ = nullptr;
    bytes_ = 0;
  }
  const cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    ptr_ = nullptr;
    throw Error("cuda", "out of GPU memory allocating " + std::to_string(bytes >> 20) + " MiB (" +
                            cudaGetErrorString(err) + ")");
  }
  bytes_ = bytes;
  const size_t now = (g_allocated += bytes);
  size_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

}  // namespace hs::cuda
