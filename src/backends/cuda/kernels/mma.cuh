// The warp-wide tensor-core product and the asynchronous copy of the float16 kernels (ir_block_tc,
// pointwise_small). Where the kernels are compiled as C++ to run on the CPU in the tests
// (LIPSYNC_CUDA_ON_CPU, tests/cuda_on_cpu), the same calls go to that device instead of to PTX.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lipsync::cuda {

// mma.sync m16n8k16, row.col, float16 in, float accumulators (PTX ISA "Matrix Fragments for
// mma.m16n8k16"). Lane l is in group g = l / 4 at position t = l % 4; "2t.." is columns 2t, 2t+1:
//   A (16x16, row major):        a0 = (g, 2t..), a1 = (g+8, 2t..), a2 = (g, 2t+8..),
//                                a3 = (g+8, 2t+8..)
//   B (16x8, from an [n][k] array): b0 = (k 2t.., n g), b1 = (k 2t+8.., n g)
//   C (16x8):                    c0, c1 = (g, 2t..), c2, c3 = (g+8, 2t..)
// Two halves at consecutive columns are one 32-bit word, the lower column in the low half.
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef LIPSYNC_CUDA_ON_CPU
  cuda_on_cpu::MmaM16N8K16(c, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// 16 bytes global -> shared without passing through registers; zeros when !valid (then nothing
// is read from `src`, which must still be a valid address). Lands by the thread's WaitCopies.
__device__ __forceinline__ void CopyAsync16(__half* dst, const __half* src, bool valid) {
#ifdef LIPSYNC_CUDA_ON_CPU
  cuda_on_cpu::CopyAsync16(dst, src, valid);
#else
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(src),
               "r"(bytes)
               : "memory");
#endif
}

__device__ __forceinline__ void WaitCopies() {
#ifdef LIPSYNC_CUDA_ON_CPU
  cuda_on_cpu::WaitCopies();
#else
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
#endif
}

}  // namespace lipsync::cuda
