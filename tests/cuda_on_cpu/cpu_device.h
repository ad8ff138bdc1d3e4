// The CPU device on which the tests run CUDA kernels compiled as C++ (include/ holds the stand-in
// CUDA headers). It runs a grid one thread block at a time, each CUDA thread a fiber of its own:
// a fiber (Boost.Context) runs until it reaches __syncthreads or a warp-wide instruction
// (mma.sync, wmma::mma_sync, __shfl_down_sync), so the block's threads interleave only where the
// GPU's may, and the block's barrier and the warp's instructions see every thread arrive. This
// checks a kernel's logic on machines without a GPU: its indexing, tiles and halos, its fragment
// layouts (mma.sync computed from the PTX ISA's fragment tables), that it waits where it must, and
// its shared memory use; not its speed, nor the GPU's own rounding.
//
// What a launch checks:
// - dynamic shared memory within the kernel's attribute (48 KiB unless raised) and the device's
//   per-block limit; it starts as 0xff bytes (NaN in float16 and float32), so a value read before
//   it was written shows in the output; writing past its end fails the launch;
// - a cp.async copy lands only at the thread's next WaitCopies;
// - every warp reaches each warp-wide instruction with all 32 threads, and no thread waits
//   forever at a barrier;
// - threads run first to last or last to first between barriers (DeviceOptions::reverse_order), so
//   a read that a missing barrier leaves unordered with a write sees the wrong value in one order.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace lipsync::cuda_on_cpu {

struct DeviceOptions {
  // Dynamic shared memory a block may have at most once a kernel raises its limit:
  // 232,448 bytes on sm_90 (H100, H200), 101,376 on sm_86 and sm_89 (RTX 3090, 4090).
  size_t shared_per_block_optin = 232448;
  bool reverse_order = false;
  int multiprocessors = 132;  // an H100's; an RTX 4090 has 128
};

inline constexpr size_t kSm90SharedPerBlock = 232448;
inline constexpr size_t kSm89SharedPerBlock = 101376;

// Sets the device's options and forgets the kernels' raised limits, as a fresh process would.
void ResetDevice(const DeviceOptions& options);

// Why the last launch failed, or empty.
const std::string& LastLaunchFailure();

// A launch failure since the last reset (what cudaDeviceSynchronize returns), and the options.
cudaError_t StickyError();
int Multiprocessors();
size_t SharedPerBlockOptin();

}  // namespace lipsync::cuda_on_cpu
