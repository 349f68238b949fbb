// CUDA on the CPU: headsurgeon's kernels, GPU engine and surgery run without a GPU, so that their
// tests against the CPU twins (tests/test_cuda*.cpp) run on any machine, CI included
// (scripts/emulate_cuda.sh). Written for this project's CUDA code, not as a general emulator:
// what the code does not use is not modelled and fails loudly ("not modelled").
//
// Kernels: one fiber per CUDA thread, real __syncthreads / warp-shuffle semantics (a shuffle
// waits for its whole warp), threads run between barriers in a random order, dynamic shared
// memory filled with NaN per block.
//
// Runtime: device memory is host memory (malloc'd exactly, filled with NaN, registered so that
// copies, memsets and cuBLAS operands are checked against their allocation), streams are FIFO
// queues executed lazily, at the points where CUDA guarantees completion (stream/event/device
// synchronisation, cudaFree, synchronous copies on the legacy stream, which does NOT wait for
// non-blocking streams), so a host read before its synchronisation sees stale data. H2D copies
// from pageable memory snapshot their source at the call (as CUDA stages them); D2H copies into
// pageable memory land only when the stream runs. Stream capture records the enqueued work into
// a graph (launches capture their arguments by value), and the calls a thread-local capture
// forbids (cudaMalloc, cudaFree, synchronous copies, synchronisation) fail as CUDA fails them.
// cuBLAS: GemmEx (fp32 accumulation via OpenBLAS sgemm on fp32 copies of the operands), Saxpy.
//
// EMU_SYNC=1 runs every operation at its call instead (eager).
#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#ifdef EMU_UCONTEXT
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "emu.h"

namespace emu {
Ctx* cur = nullptr;
namespace {

[[noreturn]] void fatal(const std::string& what) {
  std::fprintf(stderr, "emu: FATAL: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// ---- fibers ----
#ifndef EMU_UCONTEXT
extern "C" void emu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_switch,.-emu_switch
)");
#endif

enum State { RUN, AT_BLOCK, AT_WARP, DONE };
constexpr size_t kStack = 256 * 1024;
struct Fiber {
#ifdef EMU_UCONTEXT
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
  Ctx ctx;
  State state;
  std::unique_ptr<char[]> stack;
};
#ifdef EMU_UCONTEXT
ucontext_t sched_uc;
#else
void* sched_sp = nullptr;
#endif
std::vector<Fiber> fibers;
Fiber* cur_fiber = nullptr;
const std::function<void()>* body = nullptr;
char* smem_buf = nullptr;
std::vector<unsigned> order, warp_order;
const bool thread_sched = [] {
  const char* e = std::getenv("EMU_SCHED");
  return e && std::string(e) == "thread";
}();
unsigned long long rng_state = 88172645463325252ull;
unsigned next_rand() {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return unsigned(rng_state);
}
std::vector<uint64_t> slots;
std::vector<uint32_t> scratch;  // 8 words per lane: mma fragments
const char* cur_kernel = "";

void yield_to_sched() {
#ifdef EMU_UCONTEXT
  swapcontext(&cur_fiber->uc, &sched_uc);
#else
  emu_switch(&cur_fiber->sp, sched_sp);
#endif
}
void trampoline() {
  (*body)();
  cur_fiber->state = DONE;
  yield_to_sched();
  fatal("a finished fiber resumed");
}
[[noreturn]] void die(const char* what) {
  fatal(std::string(what) + " in kernel " + cur_kernel + " (block " +
        std::to_string(fibers[0].ctx.bid.x) + "," + std::to_string(fibers[0].ctx.bid.y) + "," +
        std::to_string(fibers[0].ctx.bid.z) + ")");
}
void start_fiber(Fiber& fb) {
#ifdef EMU_UCONTEXT
  getcontext(&fb.uc);
  fb.uc.uc_stack.ss_sp = fb.stack.get();
  fb.uc.uc_stack.ss_size = kStack;
  fb.uc.uc_link = nullptr;
  makecontext(&fb.uc, trampoline, 0);
#else
  // emu_switch's frame: [pad][r15 r14 r13 r12 rbx rbp][return address]; the return
  // address at a 16-byte boundary, so the entry sees rsp = 8 mod 16 as after a call.
  uintptr_t top = (reinterpret_cast<uintptr_t>(fb.stack.get()) + kStack - 64) & ~uintptr_t(15);
  uint64_t* s = reinterpret_cast<uint64_t*>(top);
  s[0] = reinterpret_cast<uint64_t>(&trampoline);
  for (int i = 1; i <= 6; ++i) s[-i] = 0;
  fb.sp = s - 7;
#endif
}
void resume(Fiber& fb) {
  cur_fiber = &fb;
  cur = &fb.ctx;
#ifdef EMU_UCONTEXT
  swapcontext(&sched_uc, &fb.uc);
#else
  emu_switch(&sched_sp, fb.sp);
#endif
}

void run_kernel(dim3 g, dim3 b, size_t smem, const std::function<void()>& f) {
  const unsigned nt = b.x * b.y * b.z;
  static const bool seeded = [] {
    if (const char* e = std::getenv("EMU_SEED"))
      rng_state ^= 0x9E3779B97F4A7C15ull * std::strtoull(e, nullptr, 10);
    return true;
  }();
  (void)seeded;
  body = &f;
  if (fibers.size() < nt) fibers.resize(nt);
  for (unsigned t = 0; t < nt; ++t)
    if (!fibers[t].stack) fibers[t].stack.reset(new char[kStack]);
  slots.assign((nt + 31) / 32 * 64, 0);
  scratch.assign((nt + 31) / 32 * 256, 0);
  // Blocks in a random order (EMU_BLOCKS=seq: in index order): a kernel whose blocks depend on
  // each other's writes shows.
  static const bool seq_blocks = [] {
    const char* e = std::getenv("EMU_BLOCKS");
    return e && std::string(e) == "seq";
  }();
  const size_t nb = size_t(g.x) * g.y * g.z;
  std::vector<size_t> blocks(nb);
  for (size_t i = 0; i < nb; ++i) blocks[i] = i;
  if (!seq_blocks)
    for (size_t i = nb; i > 1; --i) std::swap(blocks[i - 1], blocks[next_rand() % i]);
  for (size_t bi : blocks) {
    const unsigned bx = unsigned(bi % g.x), by = unsigned(bi / g.x % g.y),
                   bz = unsigned(bi / (size_t(g.x) * g.y));
    {
      std::free(smem_buf);
      smem_buf = static_cast<char*>(std::malloc(smem ? smem : 1));  // exact: ASan sees overruns
      std::memset(smem_buf, 0xff, smem);  // NaN: a read before a write shows
      for (unsigned t = 0; t < nt; ++t) {
        Fiber& fb = fibers[t];
        fb.ctx.tid = {t % b.x, t / b.x % b.y, t / (b.x * b.y)};
        fb.ctx.bid = {bx, by, bz};
        fb.ctx.bdim = b;
        fb.ctx.gdim = g;
        fb.ctx.phase = 0;
        fb.state = RUN;
        start_fiber(fb);
      }
      order.resize(nt);
      for (unsigned t = 0; t < nt; ++t) order[t] = t;
      if (thread_sched) {
        for (;;) {
          // Threads run between barriers in a random order: a missing barrier shows as a wrong
          // result more often than in thread order.
          for (unsigned t = nt - 1; t > 0; --t) std::swap(order[t], order[next_rand() % (t + 1)]);
          for (unsigned t : order)
            if (fibers[t].state == RUN) resume(fibers[t]);
          bool all_done = true, released = false;
          for (unsigned t = 0; t < nt; ++t) all_done &= fibers[t].state == DONE;
          if (all_done) break;
          // Warps whose every lane waits at a shuffle go on together.
          for (unsigned w = 0; w * 32 < nt; ++w) {
            int at = 0, done = 0, n = 0;
            for (unsigned t = w * 32; t < std::min(nt, w * 32 + 32); ++t, ++n) {
              at += fibers[t].state == AT_WARP;
              done += fibers[t].state == DONE;
            }
            if (at == 0) continue;
            if (at + done == n) {
              if (done) die("shuffle with exited lanes in the warp");
              for (unsigned t = w * 32; t < std::min(nt, w * 32 + 32); ++t) fibers[t].state = RUN;
              released = true;
            }
          }
          if (released) continue;
          bool all_block = true;
          for (unsigned t = 0; t < nt; ++t)
            all_block &= fibers[t].state == AT_BLOCK || fibers[t].state == DONE;
          if (!all_block) die("deadlock: threads wait at different barriers");
          for (unsigned t = 0; t < nt; ++t)
            if (fibers[t].state == AT_BLOCK) fibers[t].state = RUN;
        }
        continue;
      }
      // Warp scheduling (default): between block barriers the warps run one after another in a
      // random order, each warp's lanes in a random order, a warp's shuffles released as soon as
      // all its lanes arrive.
      const unsigned nw = (nt + 31) / 32;
      std::vector<unsigned>& worder = warp_order;
      worder.resize(nw);
      for (unsigned w = 0; w < nw; ++w) worder[w] = w;
      for (;;) {
        for (unsigned w = nw - 1; w > 0; --w) std::swap(worder[w], worder[next_rand() % (w + 1)]);
        for (unsigned w : worder) {
          const unsigned t0 = w * 32, t1 = std::min(nt, t0 + 32), n = t1 - t0;
          unsigned* lo = order.data() + t0;
          for (unsigned i = n - 1; i > 0; --i) std::swap(lo[i], lo[next_rand() % (i + 1)]);
          for (;;) {
            for (unsigned i = 0; i < n; ++i)
              if (fibers[lo[i]].state == RUN) resume(fibers[lo[i]]);
            unsigned at = 0, done = 0;
            for (unsigned t = t0; t < t1; ++t) {
              at += fibers[t].state == AT_WARP;
              done += fibers[t].state == DONE;
            }
            if (at == 0) break;
            if (at + done != n)
              die("deadlock: lanes of a warp wait at a shuffle and at a block barrier");
            if (done) die("shuffle with exited lanes in the warp");
            for (unsigned t = t0; t < t1; ++t) fibers[t].state = RUN;
          }
        }
        bool all_done = true;
        for (unsigned t = 0; t < nt; ++t) all_done &= fibers[t].state == DONE;
        if (all_done) break;
        for (unsigned t = 0; t < nt; ++t)
          if (fibers[t].state == AT_BLOCK) fibers[t].state = RUN;
      }
    }
  }
  cur = nullptr;
}

// ---- memory registry ----
struct Alloc {
  size_t size;
  bool device;  // else pinned host
};
std::map<uintptr_t, Alloc> allocs;
// At exit: device and pinned allocations nobody freed (the emulator's own aside).
struct LeakReport {
  ~LeakReport();
} leak_report;
size_t dev_bytes = 0;
// The device's memory: 80 GiB, or EMU_TOTAL_MB (a small GPU, so that the surgery's passes split:
// reported as total and as free, allocations not limited).
const bool small_gpu = std::getenv("EMU_TOTAL_MB") != nullptr;
const size_t kTotal = [] {
  const char* e = std::getenv("EMU_TOTAL_MB");
  return e ? size_t(std::strtoull(e, nullptr, 10)) << 20 : size_t(80) << 30;
}();

// The allocation holding p (device or pinned), or null.
const std::pair<const uintptr_t, Alloc>* find_alloc(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = allocs.upper_bound(a);
  if (it == allocs.begin()) return nullptr;
  --it;
  if (a >= it->first && a < it->first + std::max<size_t>(it->second.size, 1)) return &*it;
  return nullptr;
}
bool is_device(const void* p) {
  const auto* a = find_alloc(p);
  return a && a->second.device;
}
bool is_pinned(const void* p) {
  const auto* a = find_alloc(p);
  return a && !a->second.device;
}
// Checks that [p, p + n) lies inside one device allocation.
void check_device_range(const void* p, size_t n, const char* what) {
  if (n == 0) return;
  const auto* a = find_alloc(p);
  if (!a || !a->second.device)
    fatal(std::string(what) + ": " + std::to_string(n) +
          " bytes at a pointer that is not device memory");
  const uintptr_t off = reinterpret_cast<uintptr_t>(p) - a->first;
  if (off + n > a->second.size)
    fatal(std::string(what) + ": bytes [" + std::to_string(off) + ", " + std::to_string(off + n) +
          ") of a device allocation of " + std::to_string(a->second.size));
}
void check_host_ptr(const void* p, const char* what) {
  if (is_device(p)) fatal(std::string(what) + ": a device pointer where host memory was expected");
}

// ---- streams ----
struct Op {
  std::function<void()> fn;
  std::string what;
  unsigned long long seq = 0;  // global enqueue order
};
unsigned long long op_seq = 0;
struct Graph {
  std::vector<Op> ops;
  std::vector<void*> allocs;  // stream-ordered allocations made during capture (live with it)
};
}  // namespace
}  // namespace emu

struct CUstream_st {
  std::deque<emu::Op> q;
  unsigned long long enqueued = 0, executed = 0;
  bool nonblocking = false;
  emu::Graph* capture = nullptr;
  bool alive = true;
};
struct CUevent_st {
  CUstream_st* stream = nullptr;
  unsigned long long target = 0;
};
struct CUgraph_st {
  emu::Graph g;
};
struct CUgraphExec_st {
  emu::Graph g;
};

namespace emu {
namespace {
CUstream_st legacy;
std::vector<CUstream_st*> streams = {&legacy};
int capturing = 0;  // streams now capturing (thread-local mode: this thread is restricted)
cudaError_t last_error = cudaSuccess;
bool eager() {
  static const bool e = [] {
    const char* s = std::getenv("EMU_SYNC");
    return s && *s == '1';
  }();
  return e;
}
CUstream_st* S(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &legacy;
  if (!s->alive) fatal("use of a destroyed stream");
  return s;
}
void run_op(CUstream_st* s) {
  // A non-blocking stream does not wait for the legacy stream: work the legacy stream still holds
  // from before this op may not have happened yet on a GPU (a race the order here hides).
  if (s != &legacy && !legacy.q.empty() && legacy.q.front().seq < s->q.front().seq) {
    static int warned = 0;
    if (warned++ < 20)
      std::fprintf(stderr,
                   "emu: RACE? %s on a non-blocking stream runs while the legacy stream's "
                   "earlier '%s' is pending\n",
                   s->q.front().what.c_str(), legacy.q.front().what.c_str());
  }
  Op op = std::move(s->q.front());
  s->q.pop_front();
  op.fn();
  ++s->executed;
}
void flush(CUstream_st* s) {
  while (!s->q.empty()) run_op(s);
}
void flush_all() {
  bool any = true;
  while (any) {
    any = false;
    for (CUstream_st* s : streams)
      if (!s->q.empty()) {
        flush(s);
        any = true;
      }
  }
}
void enqueue(cudaStream_t st, std::function<void()> fn, std::string what) {
  CUstream_st* s = S(st);
  if (s->capture) {
    s->capture->ops.push_back({std::move(fn), std::move(what)});
    return;
  }
  ++s->enqueued;
  s->q.push_back({std::move(fn), std::move(what), ++op_seq});
  if (eager()) flush(s);
}
// A call the ongoing capture forbids (thread-local mode: potentially unsafe APIs).
bool forbidden_in_capture(const char* what) {
  if (!capturing) return false;
  std::fprintf(stderr, "emu: %s during a stream capture: cudaErrorStreamCaptureUnsupported\n",
               what);
  return true;
}

std::map<const void*, int> smem_attr;
int fill_byte() {
  static const int b = [] {
    const char* e = std::getenv("EMU_FILL");
    return e ? std::atoi(e) : 0xff;
  }();
  return b;
}
}  // namespace

void syncthreads() {
  cur_fiber->state = AT_BLOCK;
  yield_to_sched();
}
void warp_barrier() {
  cur_fiber->state = AT_WARP;
  yield_to_sched();
}
void* dyn_smem() { return smem_buf; }
uint64_t* warp_slots() { return slots.data() + (flat_tid() / 32) * 64; }
uint32_t* warp_scratch() { return scratch.data() + (flat_tid() / 32) * 256; }

namespace {
float half_bits(uint32_t reg, int hi, bool bf16) {
  const uint16_t h = uint16_t(hi ? reg >> 16 : reg & 0xffffu);
  if (bf16) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half x;
  std::memcpy(&x, &h, 2);
  return __half2float(x);
}
}  // namespace

// mma.sync.m16n8k16.row.col.f32 on the warp's fragments (layouts in ops/cuda/mma.cuh): every
// lane publishes its registers, then computes its four outputs in fp32 from all of them.
void mma_m16n8k16(float* d, const uint32_t* a, const uint32_t* b, bool bf16) {
  uint32_t* s = warp_scratch();
  const unsigned lane = flat_tid() % 32;
  warp_barrier();  // earlier readers of the scratch are done
  for (int i = 0; i < 4; ++i) s[lane * 8 + i] = a[i];
  s[lane * 8 + 4] = b[0];
  s[lane * 8 + 5] = b[1];
  warp_barrier();
  auto A = [&](int row, int k) {
    const int src = (row % 8) * 4 + (k % 8) / 2, reg = (row >= 8) + 2 * (k >= 8);
    return half_bits(s[src * 8 + reg], k % 2, bf16);
  };
  auto B = [&](int k, int n) {
    const int src = n * 4 + (k % 8) / 2, reg = 4 + (k >= 8);
    return half_bits(s[src * 8 + reg], k % 2, bf16);
  };
  const int g = int(lane / 4), t = int(lane % 4);
  float out[4];
  for (int c = 0; c < 4; ++c) {
    const int row = g + 8 * (c >> 1), col = 2 * t + (c & 1);
    float acc = d[c];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    out[c] = acc;
  }
  warp_barrier();  // every lane has read the fragments
  for (int c = 0; c < 4; ++c) d[c] = out[c];
}

std::map<std::string, long long> launch_counts;
struct Stats {
  ~Stats() {
    const char* e = std::getenv("EMU_STATS");
    if (!e || *e != '1') return;
    for (auto& [k, n] : launch_counts)
      std::fprintf(stderr, "emu: %8lld launches of %s\n", n, k.c_str());
  }
} stats;
void enqueue_launch(const void* fn, const char* name, dim3 g, dim3 b, size_t smem,
                    cudaStream_t stream, std::function<void()> f) {
  const unsigned long long nt = 1ull * b.x * b.y * b.z;
  auto fail = [&](cudaError_t e, const std::string& why) {
    std::fprintf(stderr, "emu: launch of %s fails: %s\n", name, why.c_str());
    last_error = e;
  };
  if (nt == 0 || nt > 1024 || b.z > 64)
    return fail(cudaErrorInvalidConfiguration, "block " + std::to_string(b.x) + "x" +
                                                   std::to_string(b.y) + "x" + std::to_string(b.z));
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535 || g.x > 2147483647u)
    return fail(cudaErrorInvalidConfiguration, "grid " + std::to_string(g.x) + "x" +
                                                   std::to_string(g.y) + "x" + std::to_string(g.z));
  size_t limit = 48 * 1024;
  if (auto it = smem_attr.find(fn); it != smem_attr.end()) limit = size_t(it->second);
  if (smem > limit)
    return fail(cudaErrorInvalidValue, "dynamic shared memory " + std::to_string(smem) +
                                           " above the function's limit " + std::to_string(limit));
  ++launch_counts[name];
  enqueue(
      stream,
      [=] {
        cur_kernel = name;
        run_kernel(g, b, smem, f);
      },
      name);
}
}  // namespace emu

using namespace emu;

namespace emu {
namespace {
LeakReport::~LeakReport() {
  size_t nd = 0, bd = 0, np = 0, bp = 0;
  for (auto& [p, a] : allocs) {
    (a.device ? nd : np)++;
    (a.device ? bd : bp) += a.size;
  }
  std::fprintf(
      stderr,
      "emu: at exit %zu device allocations (%zu bytes) and %zu pinned (%zu bytes) still held\n", nd,
      bd, np, bp);
}
}  // namespace
}  // namespace emu

// ---- runtime ----
extern "C" {
cudaError_t cudaFuncSetAttribute(const void* fn, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value > 227 * 1024) return cudaErrorInvalidValue;
    smem_attr[fn] = value;
  }
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t n) {
  if (forbidden_in_capture("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  if (!small_gpu && dev_bytes + n > kTotal) return cudaErrorMemoryAllocation;
  *p = std::malloc(n ? n : 1);
  std::memset(*p, fill_byte(), n);  // uninitialised device memory reads as NaN (EMU_FILL=byte)
  allocs[reinterpret_cast<uintptr_t>(*p)] = {n, true};
  dev_bytes += n;
  return cudaSuccess;
}
cudaError_t free_now(void* p, bool device) {
  if (!p) return cudaSuccess;
  auto it = allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == allocs.end() || it->second.device != device)
    fatal(std::string(device ? "cudaFree" : "cudaFreeHost") + " of a pointer it did not allocate");
  if (device) dev_bytes -= it->second.size;
  std::memset(p, 0xff, it->second.size);
  allocs.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (forbidden_in_capture("cudaFree")) return cudaErrorStreamCaptureUnsupported;
  flush_all();  // cudaFree synchronises the device
  return free_now(p, true);
}
cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t st) {
  *p = std::malloc(n ? n : 1);
  std::memset(*p, 0xff, n);
  allocs[reinterpret_cast<uintptr_t>(*p)] = {n, true};
  dev_bytes += n;
  if (S(st)->capture) S(st)->capture->allocs.push_back(*p);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t st) {
  if (S(st)->capture) return cudaSuccess;  // lives with the graph (never freed here)
  enqueue(
      st, [p] { free_now(p, true); }, "cudaFreeAsync");
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t n) {
  if (forbidden_in_capture("cudaMallocHost")) return cudaErrorStreamCaptureUnsupported;
  *p = std::malloc(n ? n : 1);
  std::memset(*p, 0xff, n);
  allocs[reinterpret_cast<uintptr_t>(*p)] = {n, false};
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned) { return cudaMallocHost(p, n); }
cudaError_t cudaFreeHost(void* p) {
  if (forbidden_in_capture("cudaFreeHost")) return cudaErrorStreamCaptureUnsupported;
  flush_all();
  return free_now(p, false);
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *total_b = kTotal;
  *free_b = small_gpu ? kTotal : dev_bytes > kTotal ? 0 : kTotal - dev_bytes;
  return cudaSuccess;
}
}

namespace {
// Checks a copy's pointers against its kind; returns the kind to use.
cudaMemcpyKind check_kind(void* d, const void* s, size_t n, cudaMemcpyKind kind, const char* what) {
  if (kind == cudaMemcpyDefault)
    kind = is_device(d) ? (is_device(s) ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                        : (is_device(s) ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  const bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dd)
    check_device_range(d, n, what);
  else
    check_host_ptr(d, what);
  if (sd)
    check_device_range(s, n, what);
  else
    check_host_ptr(s, what);
  return kind;
}
}  // namespace

extern "C" {
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind kind) {
  if (forbidden_in_capture("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
  kind = check_kind(d, s, n, kind, "cudaMemcpy");
  if (n == 0) return cudaSuccess;
  // CUDA's documented synchronisation of cudaMemcpy (EMU_LOOSE_MEMCPY=1: complete at return):
  // H2D from pageable memory returns once the source is staged, the DMA to the destination may
  // not have completed; D2D does no host synchronisation at all. Both are work of the legacy
  // stream, which a non-blocking stream does not wait for.
  static const bool loose = [] {
    const char* e = std::getenv("EMU_LOOSE_MEMCPY");
    return e && *e == '1';
  }();
  if (!loose && kind == cudaMemcpyHostToDevice && !is_pinned(s)) {
    auto snap = std::make_shared<std::vector<char>>(static_cast<const char*>(s),
                                                    static_cast<const char*>(s) + n);
    char what[96];
    std::snprintf(what, sizeof what, "cudaMemcpy H2D (pageable) of %zu bytes to %p", n, d);
    enqueue(
        nullptr, [d, snap, n] { std::memcpy(d, snap->data(), n); }, what);
    return cudaSuccess;
  }
  if (!loose && kind == cudaMemcpyDeviceToDevice) {
    enqueue(
        nullptr, [d, s, n] { std::memmove(d, s, n); }, "cudaMemcpy D2D");
    return cudaSuccess;
  }
  flush(&legacy);  // the legacy stream's earlier work (not the non-blocking streams')
  std::memmove(d, s, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind kind,
                            cudaStream_t st) {
  kind = check_kind(d, s, n, kind, "cudaMemcpyAsync");
  if (n == 0) return cudaSuccess;
  if ((kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost) && !is_pinned(s)) {
    if (S(st)->capture) {
      std::fprintf(stderr, "emu: cudaMemcpyAsync from pageable memory during a capture\n");
      return cudaErrorStreamCaptureUnsupported;
    }
    // Pageable source: staged at the call, as CUDA does.
    auto snap = std::make_shared<std::vector<char>>(static_cast<const char*>(s),
                                                    static_cast<const char*>(s) + n);
    enqueue(
        st, [d, snap, n] { std::memcpy(d, snap->data(), n); }, "cudaMemcpyAsync H2D");
    return cudaSuccess;
  }
  if (kind == cudaMemcpyDeviceToHost && !is_pinned(d) && S(st)->capture) {
    std::fprintf(stderr, "emu: cudaMemcpyAsync to pageable memory during a capture\n");
    return cudaErrorStreamCaptureUnsupported;
  }
  enqueue(
      st, [d, s, n] { std::memmove(d, s, n); }, "cudaMemcpyAsync");
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* d, size_t dpitch, const void* s, size_t spitch, size_t width,
                              size_t height, cudaMemcpyKind kind, cudaStream_t st) {
  if (height == 0 || width == 0) return cudaSuccess;
  if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
  const size_t dn = dpitch * (height - 1) + width, sn = spitch * (height - 1) + width;
  kind = check_kind(d, s, 1, kind, "cudaMemcpy2DAsync");
  if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice)
    check_device_range(d, dn, "cudaMemcpy2DAsync dst");
  if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice)
    check_device_range(s, sn, "cudaMemcpy2DAsync src");
  if (kind == cudaMemcpyHostToDevice && !is_pinned(s)) {
    auto snap = std::make_shared<std::vector<char>>(static_cast<const char*>(s),
                                                    static_cast<const char*>(s) + sn);
    enqueue(
        st,
        [=] {
          for (size_t r = 0; r < height; ++r)
            std::memcpy(static_cast<char*>(d) + r * dpitch, snap->data() + r * spitch, width);
        },
        "cudaMemcpy2DAsync H2D");
    return cudaSuccess;
  }
  enqueue(
      st,
      [=] {
        for (size_t r = 0; r < height; ++r)
          std::memcpy(static_cast<char*>(d) + r * dpitch, static_cast<const char*>(s) + r * spitch,
                      width);
      },
      "cudaMemcpy2DAsync");
  return cudaSuccess;
}
cudaError_t cudaMemset(void* d, int v, size_t n) {
  if (forbidden_in_capture("cudaMemset")) return cudaErrorStreamCaptureUnsupported;
  check_device_range(d, n, "cudaMemset");
  flush(&legacy);
  std::memset(d, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t st) {
  check_device_range(d, n, "cudaMemsetAsync");
  enqueue(
      st, [=] { std::memset(d, v, n); }, "cudaMemsetAsync");
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (forbidden_in_capture("cudaDeviceSynchronize")) return cudaErrorStreamCaptureUnsupported;
  flush_all();
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t st) {
  if (S(st)->capture) {
    std::fprintf(stderr, "emu: cudaStreamSynchronize of a capturing stream\n");
    return cudaErrorStreamCaptureUnsupported;
  }
  flush(S(st));
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* st, unsigned flags) {
  auto* s = new CUstream_st;
  s->nonblocking = flags & cudaStreamNonBlocking;
  if (!s->nonblocking) fatal("a blocking stream (the emulator models non-blocking ones only)");
  streams.push_back(s);
  *st = s;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* st) { return cudaStreamCreateWithFlags(st, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t st) {
  CUstream_st* s = S(st);
  if (s == &legacy) return cudaErrorInvalidResourceHandle;
  flush(s);  // its work completes
  s->alive = false;
  streams.erase(std::find(streams.begin(), streams.end(), s));
  return cudaSuccess;  // leaked on purpose: a later use is reported
}
cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus* status) {
  *status = S(st)->capture ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode) {
  CUstream_st* s = S(st);
  if (s == &legacy) return cudaErrorStreamCaptureUnsupported;
  if (s->capture) return cudaErrorIllegalState;
  if (mode != cudaStreamCaptureModeThreadLocal && mode != cudaStreamCaptureModeGlobal)
    fatal("capture mode not modelled");
  s->capture = new Graph;
  ++capturing;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t* g) {
  CUstream_st* s = S(st);
  if (!s->capture) return cudaErrorIllegalState;
  auto* graph = new CUgraph_st;
  graph->g = std::move(*s->capture);
  delete s->capture;
  s->capture = nullptr;
  --capturing;
  *g = graph;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  auto* x = new CUgraphExec_st;
  x->g.ops = g->g.ops;
  x->g.allocs = g->g.allocs;
  *e = x;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t st) {
  for (const Op& op : e->g.ops) enqueue(st, op.fn, "graph: " + op.what);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t st) {
  CUstream_st* s = S(st);
  if (s->capture) fatal("event record during capture not modelled");
  e->stream = s;
  e->target = s->enqueued;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (forbidden_in_capture("cudaEventSynchronize")) return cudaErrorStreamCaptureUnsupported;
  if (e->stream)
    while (e->stream->executed < e->target) run_op(e->stream);
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument (emulated)";
    case cudaErrorMemoryAllocation:
      return "out of memory (emulated)";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument (emulated)";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing (emulated)";
    default:
      return "emulated error";
  }
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "emulated H100");
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->totalGlobalMem = kTotal;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->maxThreadsPerBlock = 1024;
  p->warpSize = 32;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties_v2(cudaDeviceProp* p, int d) {
  return cudaGetDeviceProperties(p, d);
}
}

// ---- cuBLAS ----
struct cublasContext {
  cudaStream_t stream = nullptr;
};
namespace {
float load(const void* p, cudaDataType t, size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  if (t == CUDA_R_16BF) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  if (t == CUDA_R_16F) return __half2float(static_cast<const __half*>(p)[i]);
  fatal("cublasGemmEx: data type not modelled");
}
size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }
// The fp32 copy of a column-major operand of `rows` x `cols` with leading dimension ld.
std::vector<float> as_f32(const void* p, cudaDataType t, int rows, int cols, int ld) {
  std::vector<float> out(size_t(rows) * cols);
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) out[size_t(j) * rows + i] = load(p, t, size_t(j) * ld + i);
  return out;
}
}  // namespace

cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream_v2(cublasHandle_t h, cudaStream_t* s) {
  *s = h->stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void* ws, size_t n) {
  if (n) check_device_range(ws, n, "cublasSetWorkspace");
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t) { return "emulated cublas error"; }

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void* alpha, const void* A, cudaDataType at,
                            int lda, const void* B, cudaDataType bt, int ldb, const void* beta,
                            void* C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  if (ct != CUDA_R_32F) fatal("cublasGemmEx: output type not modelled");
  if (compute != CUBLAS_COMPUTE_32F) fatal("cublasGemmEx: compute type not CUBLAS_COMPUTE_32F");
  if (at != bt) fatal("cublasGemmEx: mixed input types");
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  // cuBLAS's argument checks
  const int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
  const int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
  if (lda < std::max(1, arows) || ldb < std::max(1, brows) || ldc < std::max(1, m)) {
    std::fprintf(
        stderr,
        "emu: cublasGemmEx: invalid leading dimension (m %d n %d k %d lda %d ldb %d ldc %d)\n", m,
        n, k, lda, ldb, ldc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  if (k > 0) {
    check_device_range(A, (size_t(acols - 1) * lda + arows) * type_size(at), "cublasGemmEx A");
    check_device_range(B, (size_t(bcols - 1) * ldb + brows) * type_size(bt), "cublasGemmEx B");
  }
  check_device_range(C, (size_t(n - 1) * ldc + m) * 4, "cublasGemmEx C");
  enqueue(
      h->stream,
      [=] {
        float* c = static_cast<float*>(C);
        if (be == 0)
          for (int j = 0; j < n; ++j) std::fill_n(c + size_t(j) * ldc, m, 0.0f);
        if (k == 0) {
          if (be != 0)
            for (int j = 0; j < n; ++j)
              for (int i = 0; i < m; ++i) c[size_t(j) * ldc + i] *= be;
          return;
        }
        std::vector<float> af, bf;
        const float *pa = static_cast<const float*>(A), *pb = static_cast<const float*>(B);
        int la = lda, lb = ldb;
        if (at != CUDA_R_32F) {
          af = as_f32(A, at, arows, acols, lda);
          pa = af.data();
          la = arows;
          bf = as_f32(B, bt, brows, bcols, ldb);
          pb = bf.data();
          lb = brows;
        }
        cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                    tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, al, pa, std::max(la, 1),
                    pb, std::max(lb, 1), be, c, ldc);
      },
      "cublasGemmEx");
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSaxpy_v2(cublasHandle_t h, int n, const float* alpha, const float* x, int incx,
                              float* y, int incy) {
  if (n <= 0) return CUBLAS_STATUS_SUCCESS;
  if (incx != 1 || incy != 1) fatal("cublasSaxpy: strides not modelled");
  check_device_range(x, size_t(n) * 4, "cublasSaxpy x");
  check_device_range(y, size_t(n) * 4, "cublasSaxpy y");
  const float a = *alpha;
  enqueue(
      h->stream,
      [=] {
        for (int i = 0; i < n; ++i) y[i] += a * x[i];
      },
      "cublasSaxpy");
  return CUBLAS_STATUS_SUCCESS;
}
