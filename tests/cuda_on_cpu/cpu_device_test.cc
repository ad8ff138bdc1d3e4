// The CPU device computes and catches what it promises to (cpu_device.h): mma.sync and WMMA
// products, a missing barrier, a warp that does not reach mma.sync whole, shared memory written
// past its end or used over its limit, and a read of a cp.async destination before the copy was
// waited for.
#include "cpu_device.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lipsync::cuda_on_cpu {
namespace {

constexpr int kThreads = 256;

// Each thread writes its index to shared memory, then reads its neighbour's.
__global__ void ReadNeighbour(bool barrier, float* out) {
  float* s = reinterpret_cast<float*>(DynamicShared());
  const int i = static_cast<int>(threadIdx.x);
  s[i] = static_cast<float>(i);
  if (barrier) __syncthreads();
  out[i] = s[(i + 1) % kThreads];
}

int WrongNeighbours(bool barrier, bool reverse) {
  ResetDevice({kSm90SharedPerBlock, reverse});
  std::vector<float> out(kThreads, -1.0f);
  Launch(ReadNeighbour, 1, kThreads, kThreads * sizeof(float), nullptr)(barrier, out.data());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  int wrong = 0;
  for (int i = 0; i < kThreads; ++i) wrong += !(out[i] == static_cast<float>((i + 1) % kThreads));
  return wrong;
}

TEST(CpuDevice, AReadThatAMissingBarrierLeavesUnorderedSeesTheWrongValue) {
  for (const bool reverse : {false, true}) {
    EXPECT_EQ(WrongNeighbours(true, reverse), 0) << "reverse " << reverse;
    EXPECT_GT(WrongNeighbours(false, reverse), 0) << "reverse " << reverse;
  }
}

// Lanes below `lanes` multiply; the others wait at the block's barrier.
__global__ void HalfAWarpAtMma(int lanes) {
  if (static_cast<int>(threadIdx.x) < lanes) {
    float c[4] = {0, 0, 0, 0};
    const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    MmaM16N8K16(c, a, b);
  }
  __syncthreads();
}

TEST(CpuDevice, AWarpThatDoesNotReachMmaWholeFailsTheLaunch) {
  ResetDevice({});
  Launch(HalfAWarpAtMma, 1, 64, 0, nullptr)(32);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  Launch(HalfAWarpAtMma, 1, 64, 0, nullptr)(16);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastLaunchFailure().find("only 16 threads of warp 0 reached mma.sync"),
            std::string::npos)
      << LastLaunchFailure();
}

// One identity-free check of the product: A all ones, B all twos, C = 1: every result is 33.
__global__ void OnesTimesTwos(float* out) {
  const uint32_t one = 0x3c003c00u, two = 0x40004000u;  // two float16 values per word
  float c[4] = {1, 1, 1, 1};
  const uint32_t a[4] = {one, one, one, one}, b[2] = {two, two};
  MmaM16N8K16(c, a, b);
  for (int i = 0; i < 4; ++i) out[threadIdx.x * 4 + i] = c[i];
}

TEST(CpuDevice, MmaSumsSixteenProductsOntoTheAccumulator) {
  ResetDevice({});
  std::vector<float> out(128, 0.0f);
  Launch(OnesTimesTwos, 1, 32, 0, nullptr)(out.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  for (float v : out) EXPECT_EQ(v, 33.0f);
}

// A WMMA product of the tile at `src` with itself, plus 0.5.
__global__ void WmmaSquare(const __half* src, float* out) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::load_matrix_sync(a, src, 16);
  wmma::load_matrix_sync(b, src, 16);
  wmma::fill_fragment(c, 0.5f);
  wmma::mma_sync(c, a, b, c);
  wmma::store_matrix_sync(out, c, 16, wmma::mem_row_major);
}

TEST(CpuDevice, WmmaMultipliesTheWarpsTiles) {
  ResetDevice({});
  std::vector<__half> src(16 * 16);
  for (size_t i = 0; i < src.size(); ++i) src[i] = __float2half_rn(static_cast<float>(i % 7) - 3);
  std::vector<float> out(256, 0.0f);
  Launch(WmmaSquare, 1, 32, 0, nullptr)(static_cast<const __half*>(src.data()), out.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 16; ++n) {
      // A row major, B column major from the same memory: B(k, n) is element n * 16 + k.
      float want = 0.5f;
      for (int k = 0; k < 16; ++k) {
        want += __half2float(src[r * 16 + k]) * __half2float(src[n * 16 + k]);
      }
      EXPECT_EQ(out[r * 16 + n], want) << r << ", " << n;
    }
  }
}

// As WmmaSquare, but lane `odd_lane` loads B from `shift` elements further on, or stores with
// another stride: a warp whose threads disagree on a WMMA operand.
__global__ void WmmaDisagreeing(const __half* src, float* out, unsigned int odd_lane, int shift,
                                unsigned int store_stride) {
  namespace wmma = nvcuda::wmma;
  const bool odd = threadIdx.x == odd_lane;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::load_matrix_sync(a, src, 16);
  wmma::load_matrix_sync(b, src + (odd ? shift : 0), 16);
  wmma::fill_fragment(c, 0.0f);
  wmma::mma_sync(c, a, b, c);
  wmma::store_matrix_sync(out, c, odd ? store_stride : 16, wmma::mem_row_major);
}

TEST(CpuDevice, AWarpWhoseThreadsDisagreeOnAWmmaOperandFailsTheLaunch) {
  ResetDevice({});
  std::vector<__half> src(2 * 16 * 16, __float2half_rn(1.0f));
  std::vector<float> out(2 * 16 * 32, 0.0f);
  const __half* from = src.data();
  Launch(WmmaDisagreeing, 1, 32, 0, nullptr)(from, out.data(), 5u, 0, 16u);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  // Found at the product, for a load; at the block's end, for a store.
  Launch(WmmaDisagreeing, 1, 32, 0, nullptr)(from, out.data(), 5u, 16, 16u);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastLaunchFailure().find("lane 5 of warp 0 made its WMMA load of B number 2 with "
                                     "another address"),
            std::string::npos)
      << LastLaunchFailure();
  ResetDevice({});
  Launch(WmmaDisagreeing, 1, 32, 0, nullptr)(from, out.data(), 31u, 0, 32u);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastLaunchFailure().find("lane 31 of warp 0 made its WMMA store number 1"),
            std::string::npos)
      << LastLaunchFailure();
}

__global__ void WriteAt(size_t at) { DynamicShared()[at] = 1; }

TEST(CpuDevice, AWritePastTheDynamicSharedMemoryFailsTheLaunch) {
  ResetDevice({});
  Launch(WriteAt, 2, 32, 1024, nullptr)(static_cast<size_t>(1023));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  Launch(WriteAt, 2, 32, 1024, nullptr)(static_cast<size_t>(1024));
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastLaunchFailure().find("wrote past its 1024 bytes"), std::string::npos)
      << LastLaunchFailure();
}

TEST(CpuDevice, DynamicSharedMemoryOverTheDefaultNeedsTheKernelsLimitRaised) {
  ResetDevice({kSm89SharedPerBlock, false});
  const size_t bytes = 64 * 1024;
  Launch(WriteAt, 1, 32, bytes, nullptr)(static_cast<size_t>(0));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(WriteAt, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(bytes)),
            cudaSuccess);
  Launch(WriteAt, 1, 32, bytes, nullptr)(static_cast<size_t>(0));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  // An RTX 4090's block cannot have what an H200's can.
  EXPECT_EQ(cudaFuncSetAttribute(WriteAt, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(kSm90SharedPerBlock)),
            cudaErrorInvalidValue);
}

__global__ void CopyThenRead(const float* src, float* before, float* after) {
  float* s = reinterpret_cast<float*>(DynamicShared());
  CopyAsync16(s + 4 * threadIdx.x, src + 4 * threadIdx.x, true);
  before[threadIdx.x] = s[4 * threadIdx.x];
  WaitCopies();
  after[threadIdx.x] = s[4 * threadIdx.x];
}

TEST(CpuDevice, AnAsyncCopyLandsAtTheThreadsWait) {
  ResetDevice({});
  std::vector<float> src(4 * 32), before(32), after(32);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  Launch(CopyThenRead, 1, 32, src.size() * sizeof(float), nullptr)(
      static_cast<const float*>(src.data()), before.data(), after.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
  for (int i = 0; i < 32; ++i) {
    EXPECT_TRUE(std::isnan(before[i])) << i;
    EXPECT_EQ(after[i], src[4 * i]) << i;
  }
}

}  // namespace
}  // namespace lipsync::cuda_on_cpu
