// Fibers (Boost.Context) for the CUDA threads of one block, and a scheduler that runs the ready
// ones in turn and settles barriers and warp-wide instructions once every thread has arrived.
#include "cpu_device.h"

#include <algorithm>
#include <boost/context/fiber.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace lipsync::cuda_on_cpu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kDefaultDynamicShared = 48 * 1024;
constexpr size_t kGuardBytes = 256;
constexpr unsigned char kPoison = 0xff;
constexpr unsigned char kGuard = 0xa5;

enum class State { kReady, kAtBarrier, kAtWarpOp, kDone };
enum class WarpOp { kMma, kShuffleDown, kWmma };
const char* const kWarpOpNames[] = {"mma.sync", "shfl.down.sync", "wmma::mma_sync"};

struct WmmaAccess {
  char what;
  const void* address;
  unsigned int stride;
  bool row_major;
  bool operator==(const WmmaAccess&) const = default;
};

struct PendingCopy {
  void* dst;
  const void* src;
  bool valid;
};

namespace context = boost::context;

// A fiber's stack: one of the device's, kept from launch to launch.
struct KeptStack {
  char* base;
  size_t size;
  context::stack_context allocate() const {
    context::stack_context stack;
    stack.size = size;
    stack.sp = base + size;  // stacks grow down
    return stack;
  }
  void deallocate(context::stack_context&) const {}
};

struct Thread {
  context::fiber fiber;      // the thread, while the scheduler runs
  context::fiber scheduler;  // the scheduler, while the thread runs
  State state = State::kReady;
  uint3 index{};
  WarpOp op = WarpOp::kMma;       // while at kAtWarpOp
  uint32_t a[4] = {}, b[2] = {};  // mma.sync operands
  float c[4] = {};                // mma.sync accumulators in, results out
  float value = 0.0f;             // shfl.down.sync: this thread's value in, the result out
  unsigned int delta = 0;
  float* wmma_d = nullptr;  // wmma::mma_sync: this thread's 8 elements of each tile
  const float *wmma_a = nullptr, *wmma_b = nullptr, *wmma_c = nullptr;
  std::vector<PendingCopy> copies;
  std::vector<WmmaAccess> wmma_accesses;  // since the warp's last check
};

struct Device {
  DeviceOptions options;
  std::map<const void*, size_t> raised_shared;
  std::mutex mutex;                  // one grid at a time, whichever host thread launches it
  cudaError_t sticky = cudaSuccess;  // a failed launch, as a fault stays on a GPU's context
  std::string failure;
  // The block being run; its threads' fibers end before their stacks go.
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<Thread> threads;
  int current = -1;
  uint3 block_index{};
  dim3 block_dim, grid_dim;
  unsigned char* shared = nullptr;
  const std::function<void()>* body = nullptr;
};

// The options a test program starts with (its tests may reset them): LIPSYNC_CPU_DEVICE_ORDER
// "reverse" runs threads last to first, LIPSYNC_CPU_DEVICE_MULTIPROCESSORS sets the count (a
// small one makes persistent kernels walk several tiles per block), and
// LIPSYNC_CPU_DEVICE_SHARED_PER_BLOCK the most dynamic shared memory a block may have.
DeviceOptions OptionsFromEnvironment() {
  DeviceOptions options;
  const char* order = std::getenv("LIPSYNC_CPU_DEVICE_ORDER");
  options.reverse_order = order && std::string(order) == "reverse";
  if (const char* sms = std::getenv("LIPSYNC_CPU_DEVICE_MULTIPROCESSORS")) {
    options.multiprocessors = std::max(1, std::atoi(sms));
  }
  if (const char* shared = std::getenv("LIPSYNC_CPU_DEVICE_SHARED_PER_BLOCK")) {
    options.shared_per_block_optin = static_cast<size_t>(std::max(0L, std::atol(shared)));
  }
  return options;
}

// As on the GPU, each host thread has its own last error.
thread_local cudaError_t t_last_error = cudaSuccess;

Device& TheDevice() {
  static Device* device = [] {
    auto* d = new Device;  // never destroyed: fibers may still be parked at exit
    d->options = OptionsFromEnvironment();
    return d;
  }();
  return *device;
}

Thread& Current() { return TheDevice().threads[static_cast<size_t>(TheDevice().current)]; }

void Block(State state) {
  Thread& t = Current();
  t.state = state;
  t.scheduler = std::move(t.scheduler).resume();
}

// The row and column of element i of a lane's fragment, from the PTX ISA's tables for
// mma.m16n8k16 with 16-bit inputs: g = lane / 4, q = lane % 4.
void ElementOfA(int lane, int i, int* row, int* col) {  // i in [0, 8): halves of a0..a3
  const int g = lane >> 2, q = lane & 3;
  *row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
  *col = q * 2 + (i & 1) + (i >= 4 ? 8 : 0);
}
void ElementOfB(int lane, int i, int* k, int* n) {  // i in [0, 4): halves of b0, b1
  const int g = lane >> 2, q = lane & 3;
  *k = q * 2 + (i & 1) + (i >= 2 ? 8 : 0);
  *n = g;
}
void ElementOfC(int lane, int i, int* row, int* col) {  // i in [0, 4)
  const int g = lane >> 2, q = lane & 3;
  *row = i < 2 ? g : g + 8;
  *col = q * 2 + (i & 1);
}

float HalfOf(uint32_t word, int which) {
  __half h{static_cast<uint16_t>(which ? word >> 16 : word & 0xffffu)};
  return __half2float(h);
}

// D = A B + C for the 32 threads of warp `first / 32`, every one of them at its mma.sync.
void SettleMma(std::vector<Thread>& threads, size_t first) {
  float a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const Thread& t = threads[first + static_cast<size_t>(lane)];
    for (int i = 0; i < 8; ++i) {
      int row, col;
      ElementOfA(lane, i, &row, &col);
      a[row][col] = HalfOf(t.a[i / 2], i & 1);
    }
    for (int i = 0; i < 4; ++i) {
      int k, n;
      ElementOfB(lane, i, &k, &n);
      b[k][n] = HalfOf(t.b[i / 2], i & 1);
    }
    for (int i = 0; i < 4; ++i) {
      int row, col;
      ElementOfC(lane, i, &row, &col);
      c[row][col] = t.c[i];
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    Thread& t = threads[first + static_cast<size_t>(lane)];
    for (int i = 0; i < 4; ++i) {
      int row, col;
      ElementOfC(lane, i, &row, &col);
      float sum = c[row][col];
      for (int k = 0; k < 16; ++k) sum += a[row][k] * b[k][col];
      t.c[i] = sum;
    }
    t.state = State::kReady;
  }
}

// Each thread of the warp gets the value of the thread `delta` lanes above it, or keeps its own
// where that is past the warp.
void SettleShuffleDown(std::vector<Thread>& threads, size_t first) {
  float values[32];
  for (size_t lane = 0; lane < 32; ++lane) values[lane] = threads[first + lane].value;
  for (size_t lane = 0; lane < 32; ++lane) {
    Thread& t = threads[first + lane];
    const size_t from = lane + t.delta;
    t.value = from < 32 ? values[from] : values[lane];
    t.state = State::kReady;
  }
}

// D = A B + C on 16x16 tiles gathered from the warp's threads, 8 elements each in row-major
// order (mma.h), and each thread's part of D handed back.
void SettleWmma(std::vector<Thread>& threads, size_t first) {
  float a[256], b[256], c[256];
  for (size_t lane = 0; lane < 32; ++lane) {
    const Thread& t = threads[first + lane];
    std::memcpy(a + lane * 8, t.wmma_a, 8 * sizeof(float));
    std::memcpy(b + lane * 8, t.wmma_b, 8 * sizeof(float));
    std::memcpy(c + lane * 8, t.wmma_c, 8 * sizeof(float));
  }
  float d[256];
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 16; ++n) {
      float sum = c[r * 16 + n];
      for (int k = 0; k < 16; ++k) sum += a[r * 16 + k] * b[k * 16 + n];
      d[r * 16 + n] = sum;
    }
  }
  for (size_t lane = 0; lane < 32; ++lane) {
    Thread& t = threads[first + lane];
    std::memcpy(t.wmma_d, d + lane * 8, 8 * sizeof(float));
    t.state = State::kReady;
  }
}

bool Fail(const std::string& why) {
  Device& d = TheDevice();
  d.failure = why;
  t_last_error = d.sticky = cudaErrorLaunchFailure;
  return false;
}

std::string BlockName(const uint3& b) {
  return "block (" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) +
         ")";
}

// Whether the threads [first, end) of a warp made the same WMMA loads and stores since the last
// check, as the GPU requires (false with the failure); the record starts again.
bool SameWmmaAccesses(std::vector<Thread>& threads, size_t first, size_t end) {
  const std::vector<WmmaAccess>& lead = threads[first].wmma_accesses;
  for (size_t i = first + 1; i < end; ++i) {
    const std::vector<WmmaAccess>& own = threads[i].wmma_accesses;
    if (own == lead) continue;
    size_t at = 0;
    while (at < own.size() && at < lead.size() && own[at] == lead[at]) ++at;
    const char* kind = "access";
    if (at < own.size()) {
      kind = own[at].what == 'a' ? "load of A" : own[at].what == 'b' ? "load of B" : "store";
    }
    return Fail(BlockName(TheDevice().block_index) + ": lane " + std::to_string(i - first) +
                " of warp " + std::to_string(first / 32) + " made its WMMA " + kind + " number " +
                std::to_string(at + 1) +
                " with another address, stride or layout than lane 0, or made a different number "
                "of them");
  }
  for (size_t i = first; i < end; ++i) threads[i].wmma_accesses.clear();
  return true;
}

// Runs every thread of the current block to its end; false (with the failure) on a deadlock.
bool RunBlock() {
  Device& d = TheDevice();
  const size_t count = d.threads.size();
  for (size_t i = 0; i < count; ++i) {
    Thread& t = d.threads[i];
    t = Thread{};
    const unsigned int x = static_cast<unsigned int>(i % d.block_dim.x);
    const unsigned int y = static_cast<unsigned int>(i / d.block_dim.x % d.block_dim.y);
    const unsigned int z = static_cast<unsigned int>(i / (d.block_dim.x * d.block_dim.y));
    t.index = uint3{x, y, z};
    t.fiber = context::fiber(std::allocator_arg, KeptStack{d.stacks[i].get(), kStackBytes},
                             [&t, &d](context::fiber&& scheduler) {
                               t.scheduler = std::move(scheduler);
                               (*d.body)();
                               t.state = State::kDone;
                               return std::move(t.scheduler);
                             });
  }
  for (;;) {
    for (size_t n = 0; n < count; ++n) {
      const size_t i = d.options.reverse_order ? count - 1 - n : n;
      if (d.threads[i].state != State::kReady) continue;
      d.current = static_cast<int>(i);
      d.threads[i].fiber = std::move(d.threads[i].fiber).resume();
    }
    // Every thread is now done or waiting. Whole warps at a warp-wide instruction go on first.
    bool settled = false;
    for (size_t first = 0; first < count; first += 32) {
      const size_t end = std::min(first + 32, count);
      size_t waiting = end;  // the first thread of the warp at a warp-wide instruction
      int at_op = 0, same_op = 0;
      for (size_t i = first; i < end; ++i) {
        if (d.threads[i].state != State::kAtWarpOp) continue;
        if (waiting == end) waiting = i;
        ++at_op;
        same_op += d.threads[i].op == d.threads[waiting].op;
      }
      if (at_op == 0) continue;
      if (at_op == 32 && same_op == 32) {
        switch (d.threads[first].op) {
          case WarpOp::kMma:
            SettleMma(d.threads, first);
            break;
          case WarpOp::kShuffleDown:
            SettleShuffleDown(d.threads, first);
            break;
          case WarpOp::kWmma:
            if (!SameWmmaAccesses(d.threads, first, end)) return false;
            SettleWmma(d.threads, first);
            break;
        }
        settled = true;
        continue;
      }
      const std::string op = same_op == at_op
                                 ? kWarpOpNames[static_cast<int>(d.threads[waiting].op)]
                                 : "different warp-wide instructions";
      return Fail(BlockName(d.block_index) + ": only " + std::to_string(at_op) +
                  " threads of warp " + std::to_string(first / 32) + " reached " + op +
                  "; the others wait at a barrier or have exited");
    }
    if (settled) continue;
    size_t at_barrier = 0, done = 0;
    for (const Thread& t : d.threads) {
      at_barrier += t.state == State::kAtBarrier;
      done += t.state == State::kDone;
    }
    if (done == count) {
      for (size_t first = 0; first < count; first += 32) {
        if (!SameWmmaAccesses(d.threads, first, std::min(first + 32, count))) return false;
      }
      return true;
    }
    // Threads that have exited do not hold the others back, as on the GPU.
    for (Thread& t : d.threads) {
      if (t.state == State::kAtBarrier) t.state = State::kReady;
    }
    if (at_barrier == 0) return Fail(BlockName(d.block_index) + ": no thread can go on");
  }
}

}  // namespace

void ResetDevice(const DeviceOptions& options) {
  Device& d = TheDevice();
  std::lock_guard<std::mutex> lock(d.mutex);
  d.options = options;
  d.raised_shared.clear();
  t_last_error = d.sticky = cudaSuccess;
  d.failure.clear();
}

const std::string& LastLaunchFailure() { return TheDevice().failure; }

cudaError_t StickyError() { return TheDevice().sticky; }
int Multiprocessors() { return TheDevice().options.multiprocessors; }
size_t SharedPerBlockOptin() { return TheDevice().options.shared_per_block_optin; }

const float* HalfToFloatTable() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (size_t bits = 0; bits < t.size(); ++bits)
      t[bits] = HalfToFloat(static_cast<uint16_t>(bits));
    return t;
  }();
  return table.data();
}

const uint3& ThreadIdx() { return Current().index; }
// Warps are runs of 32 threads in linear order (RunBlock), and `current` is that order's index.
unsigned int LaneId() { return static_cast<unsigned int>(TheDevice().current) % 32; }
const uint3& BlockIdx() { return TheDevice().block_index; }
const dim3& BlockDim() { return TheDevice().block_dim; }
const dim3& GridDim() { return TheDevice().grid_dim; }
unsigned char* DynamicShared() { return TheDevice().shared; }

void SyncThreads() { Block(State::kAtBarrier); }

void MmaM16N8K16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  Thread& t = Current();
  std::memcpy(t.a, a, sizeof t.a);
  std::memcpy(t.b, b, sizeof t.b);
  std::memcpy(t.c, c, sizeof t.c);
  t.op = WarpOp::kMma;
  Block(State::kAtWarpOp);
  std::memcpy(c, Current().c, sizeof t.c);
}

void WmmaProduct(float* d, const float* a, const float* b, const float* c) {
  Thread& t = Current();
  t.wmma_d = d;
  t.wmma_a = a;
  t.wmma_b = b;
  t.wmma_c = c;
  t.op = WarpOp::kWmma;
  Block(State::kAtWarpOp);
}

void NoteWmmaAccess(char what, const void* address, unsigned int stride, bool row_major) {
  Current().wmma_accesses.push_back({what, address, stride, row_major});
}

float ShuffleDown(float value, unsigned int delta) {
  Thread& t = Current();
  t.value = value;
  t.delta = delta;
  t.op = WarpOp::kShuffleDown;
  Block(State::kAtWarpOp);
  return Current().value;
}

void CopyAsync16(void* shared_dst, const void* src, bool valid) {
  Current().copies.push_back({shared_dst, src, valid});
}

void WaitCopies() {
  for (const PendingCopy& copy : Current().copies) {
    if (copy.valid) {
      std::memcpy(copy.dst, copy.src, 16);
    } else {
      std::memset(copy.dst, 0, 16);
    }
  }
  Current().copies.clear();
}

cudaError_t TakeLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}

cudaError_t SetMaxDynamicShared(const void* kernel, int bytes) {
  Device& d = TheDevice();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (bytes < 0 || static_cast<size_t>(bytes) > d.options.shared_per_block_optin) {
    return cudaErrorInvalidValue;
  }
  d.raised_shared[kernel] = static_cast<size_t>(bytes);
  return cudaSuccess;
}

int BlocksPerSm(int threads, size_t dynamic_shared) {
  // A multiprocessor of the configured kind: 2048 threads, and the per-block limit plus 1 KiB
  // of shared memory (228 KiB on sm_90, 100 KiB on sm_89).
  const size_t per_sm = TheDevice().options.shared_per_block_optin + 1024;
  const int by_threads = threads > 0 ? 2048 / threads : 0;
  const int by_shared = dynamic_shared ? static_cast<int>(per_sm / dynamic_shared) : by_threads;
  return by_threads < by_shared ? by_threads : by_shared;
}

cudaError_t RunGrid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                    const std::function<void()>& thread_body) {
  Device& d = TheDevice();
  std::lock_guard<std::mutex> lock(d.mutex);
  d.failure.clear();
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  const auto raised = d.raised_shared.find(kernel);
  const size_t shared_limit = raised == d.raised_shared.end()
                                  ? kDefaultDynamicShared
                                  : std::max(raised->second, kDefaultDynamicShared);
  const auto refuse = [&d](std::string why) {
    d.failure = std::move(why);
    return t_last_error = cudaErrorInvalidValue;
  };
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    return refuse("launch of " + std::to_string(threads) + " threads per block");
  }
  if (dynamic_shared > shared_limit) {
    return refuse(std::to_string(dynamic_shared) + " bytes of dynamic shared memory over the " +
                  "kernel's limit of " + std::to_string(shared_limit));
  }
  while (d.stacks.size() < threads) d.stacks.emplace_back(new char[kStackBytes]);
  d.threads.clear();
  d.threads.resize(threads);
  std::vector<unsigned char> shared(dynamic_shared + kGuardBytes + 16);
  unsigned char* base = shared.data() + (16 - reinterpret_cast<uintptr_t>(shared.data()) % 16) % 16;
  d.shared = base;
  d.block_dim = block;
  d.grid_dim = grid;
  d.body = &thread_body;
  for (unsigned int z = 0; z < grid.z; ++z) {
    for (unsigned int y = 0; y < grid.y; ++y) {
      for (unsigned int x = 0; x < grid.x; ++x) {
        std::memset(base, kPoison, dynamic_shared);
        std::memset(base + dynamic_shared, kGuard, kGuardBytes);
        d.block_index = uint3{x, y, z};
        if (!RunBlock()) {
          d.threads.clear();  // unwinds the threads left waiting
          return cudaErrorLaunchFailure;
        }
        for (size_t i = 0; i < kGuardBytes; ++i) {
          if (base[dynamic_shared + i] != kGuard) {
            Fail(BlockName(d.block_index) + " wrote past its " + std::to_string(dynamic_shared) +
                 " bytes of dynamic shared memory");
            return cudaErrorLaunchFailure;
          }
        }
      }
    }
  }
  d.shared = nullptr;
  return cudaSuccess;
}

}  // namespace lipsync::cuda_on_cpu
