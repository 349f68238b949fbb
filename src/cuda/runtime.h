// CUDA plumbing shared by the GPU code: error checks that become hs::Error, owned device memory,
// and whether a usable GPU is present. Plain C++ (the runtime API header only), so host files
// may include it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace hs::cuda {

// Throws hs::Error("cuda: <what>: <error string>") when err is not cudaSuccess.
void check(cudaError_t err, const char* what);
#define HS_CUDA(call) ::hs::cuda::check((call), #call)

// Empty string when device 0 can run our kernels (compute capability 8.0 or newer, for bf16);
// otherwise why not ("no CUDA device", the driver's error, an older GPU).
std::string unusable_reason();

// "NVIDIA H100 80GB HBM3, 132 SMs, 79.2 GiB" for progress lines and JSON.
std::string device_description();

// Bytes of device memory in use by this process's allocations through DeviceBuffer.
size_t peak_allocated_bytes();

// Owned device memory, freed on destruction. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Grows (never shrinks) to at least `bytes`; contents are lost when it grows.
  void reserve(size_t bytes);
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace hs::cuda
