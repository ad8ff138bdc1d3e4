// The host memory pool every engine's working memory comes from (lipsync/memory.h): reuse, the
// bound on what it keeps, the limit, and what an engine reports when the limit refuses a run.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "lipsync/engine.h"
#include "lipsync/memory.h"

namespace lipsync {
namespace {

const std::string kDir = LIPSYNC_TEST_DATA_DIR;
constexpr size_t kMiB = 1 << 20;

// Leaves the pool as the next test expects it: no limit, nothing cached.
struct PoolReset {
  ~PoolReset() {
    HostMemory().SetLimit(0);
    HostMemory().FailNextAllocations(0);
    HostMemory().Trim(0);
  }
};

TEST(HostMemory, AFreedBlockIsReusedForTheSameSize) {
  PoolReset reset;
  HostMemoryPool& pool = HostMemory();
  pool.Trim(0);
  void* a = pool.Allocate(3 * kMiB, HostMemoryPool::Kind::kWorking);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  std::memset(a, 1, 3 * kMiB);
  EXPECT_GE(pool.stats().working_in_use, static_cast<int64_t>(3 * kMiB));
  pool.Free(a);
  EXPECT_GE(pool.stats().cached, static_cast<int64_t>(3 * kMiB));
  void* b = pool.Allocate(3 * kMiB, HostMemoryPool::Kind::kWorking);
  EXPECT_EQ(a, b);  // the same block, no new pages
  pool.Free(b);
  EXPECT_GE(pool.Trim(0), static_cast<int64_t>(3 * kMiB));
  EXPECT_EQ(pool.stats().cached, 0);
}

TEST(HostMemory, ThePoolKeepsNoMoreThanTwiceItsMostInUse) {
  PoolReset reset;
  HostMemoryPool& pool = HostMemory();
  pool.Trim(0);
  const int64_t base = pool.stats().working_in_use;
  // 8 MiB in use at most; then blocks of other sizes one after the other (31 MiB in all, which
  // the pool would keep if nothing bounded it).
  void* a = pool.Allocate(4 * kMiB, HostMemoryPool::Kind::kWorking);
  void* b = pool.Allocate(4 * kMiB, HostMemoryPool::Kind::kWorking);
  pool.Free(a);
  pool.Free(b);
  for (size_t mib : {5, 6, 7, 3, 2}) {
    void* p = pool.Allocate(mib * kMiB, HostMemoryPool::Kind::kWorking);
    ASSERT_NE(p, nullptr);
    const HostMemoryStats s = pool.stats();
    EXPECT_LE(s.working_in_use + s.cached - base, static_cast<int64_t>(16 * kMiB + kMiB)) << mib;
    pool.Free(p);
  }
}

// A run whose sizes peak at different moments: 4 MiB alone, then two blocks of 2 MiB. Its peak is
// 4 MiB, but it needs 8 MiB of cached blocks to take nothing new from the system when it repeats
// (a pool held to its peak gave back the block the next step needed, and every run allocated
// everything afresh).
// Runs a run that holds one 4 MiB block, then two of 2 MiB, once to warm the pool and ten times
// more; returns the bytes those ten took from the system. `limit`: the pool's limit above what is
// in use now (0: none).
int64_t FreshBytesOfARepeatingRun(int64_t limit) {
  HostMemoryPool& pool = HostMemory();
  pool.Trim(0);
  if (limit > 0) pool.SetLimit(pool.stats().working_in_use + limit);
  auto run = [&pool] {
    void* whole = pool.Allocate(4 * kMiB, HostMemoryPool::Kind::kWorking);
    EXPECT_NE(whole, nullptr);
    pool.Free(whole);
    void* left = pool.Allocate(2 * kMiB, HostMemoryPool::Kind::kWorking);
    void* right = pool.Allocate(2 * kMiB, HostMemoryPool::Kind::kWorking);
    EXPECT_NE(left, nullptr);
    EXPECT_NE(right, nullptr);
    pool.Free(left);
    pool.Free(right);
  };
  run();
  const int64_t fresh = pool.stats().fresh_total;
  for (int i = 0; i < 10; ++i) run();
  return pool.stats().fresh_total - fresh;
}

TEST(HostMemory, ARepeatingRunTakesNoFreshMemoryOnceWarm) {
  PoolReset reset;
  EXPECT_EQ(FreshBytesOfARepeatingRun(0), 0);
}

// Under a limit with room for the blocks, too: held to its most in use (4 MiB), the pool gave back
// the 4 MiB block for the 2 MiB ones and those for the 4 MiB one, and every run under a host budget
// took all its memory afresh (a budgeted server's batches ran up to ten times slower).
TEST(HostMemory, UnderALimitARepeatingRunTakesNoFreshMemoryOnceWarm) {
  PoolReset reset;
  EXPECT_EQ(FreshBytesOfARepeatingRun(static_cast<int64_t>(64 * kMiB)), 0);
}

// A block of more than half the most in use is one run's whole plan: a slightly larger one for the
// next run does not keep the last one beside it.
TEST(HostMemory, AWholeRunsBlockIsNotKeptBesideTheNext) {
  PoolReset reset;
  HostMemoryPool& pool = HostMemory();
  pool.Trim(0);
  const int64_t base = pool.stats().working_in_use;
  void* held = pool.Allocate(2 * kMiB, HostMemoryPool::Kind::kWorking);  // 10 MiB in use at most
  void* first = pool.Allocate(8 * kMiB, HostMemoryPool::Kind::kWorking);
  pool.Free(first);
  void* next = pool.Allocate(9 * kMiB, HostMemoryPool::Kind::kWorking);
  ASSERT_NE(next, nullptr);
  const HostMemoryStats s = pool.stats();
  EXPECT_LE(s.working_in_use + s.cached - base, static_cast<int64_t>(11 * kMiB + kMiB));
  pool.Free(next);
  pool.Free(held);
}

TEST(HostMemory, TheLimitRefusesWorkingMemoryButNotWeights) {
  PoolReset reset;
  HostMemoryPool& pool = HostMemory();
  pool.Trim(0);
  const int64_t base = pool.stats().working_in_use;
  pool.SetLimit(base + 4 * static_cast<int64_t>(kMiB));
  const int64_t refused = pool.stats().refused_total;
  const int64_t thread_refusals = HostMemoryPool::ThreadRefusals();
  void* big = pool.Allocate(5 * kMiB, HostMemoryPool::Kind::kWorking);
  EXPECT_EQ(big, nullptr);
  EXPECT_EQ(pool.stats().refused_total, refused + 1);
  EXPECT_EQ(HostMemoryPool::ThreadRefusals(), thread_refusals + 1);
  void* small = pool.Allocate(3 * kMiB, HostMemoryPool::Kind::kWorking);
  EXPECT_NE(small, nullptr);
  const int64_t weights_before = HostMemoryPool::ThreadWeightBytes();
  void* weights = pool.Allocate(5 * kMiB, HostMemoryPool::Kind::kWeights);
  EXPECT_NE(weights, nullptr);  // loading is the budget owner's decision, not the pool's
  EXPECT_GE(HostMemoryPool::ThreadWeightBytes() - weights_before, static_cast<int64_t>(5 * kMiB));
  pool.Free(weights);
  pool.Free(small);
  EXPECT_LE(pool.stats().working_in_use + pool.stats().cached,
            base + 4 * static_cast<int64_t>(kMiB));
}

TEST(HostMemory, UnderALimitARunNeedsNoMoreOnAWarmPoolThanOnACold) {
  PoolReset reset;
  HostMemoryPool& pool = HostMemory();
  pool.Trim(0);
  const int64_t base = pool.stats().working_in_use;
  const size_t half = kMiB / 2;
  // Two blocks of 3.5 MiB fit a limit of 7.25 MiB.
  pool.SetLimit(base + static_cast<int64_t>(14 * half + half / 2));
  void* earlier = pool.Allocate(4 * kMiB, HostMemoryPool::Kind::kWorking);
  ASSERT_NE(earlier, nullptr);
  pool.Free(earlier);  // cached: a block a little larger than the run's
  // Handed out for the first 3.5 MiB, the 4 MiB block would count 4 and leave too little.
  void* a = pool.Allocate(7 * half, HostMemoryPool::Kind::kWorking);
  void* b = pool.Allocate(7 * half, HostMemoryPool::Kind::kWorking);
  EXPECT_NE(a, nullptr);
  EXPECT_NE(b, nullptr);
  pool.Free(a);
  pool.Free(b);
}

TEST(HostMemory, UnusedBlocksGoBackAfterTheirAge) {
  PoolReset reset;
  HostMemoryPool& pool = HostMemory();
  pool.Trim(0);
  pool.SetMaxAge(std::chrono::milliseconds(1));
  void* a = pool.Allocate(2 * kMiB, HostMemoryPool::Kind::kWorking);
  pool.Free(a);
  // Past the age, the next use of the pool gives the block back.
  const auto freed = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - freed < std::chrono::milliseconds(2)) {
    std::this_thread::yield();
  }
  EXPECT_GE(pool.Trim(-1), static_cast<int64_t>(2 * kMiB));
  EXPECT_EQ(pool.stats().cached, 0);
  pool.SetMaxAge(std::chrono::seconds(5));
}

std::vector<Tensor> Inputs(int64_t batch) {
  std::vector<Tensor> t;
  t.emplace_back(DataType::kFloat32, Shape{batch, 6, 320, 320});
  t.emplace_back(DataType::kFloat32, Shape{batch, 32, 16, 16});
  return t;
}

TEST(HostMemory, EnginesShareWorkingMemoryAndReportWeights) {
  PoolReset reset;
  EngineOptions o;
  o.intra_op_threads = 1;
  auto a = Engine::Create(kDir + "/tiny.onnx", o);
  auto b = Engine::Create(kDir + "/tiny.onnx", o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->memory().host_weights,
            static_cast<int64_t>(std::filesystem::file_size(kDir + "/tiny.onnx")));
  EXPECT_EQ((*a)->memory().device_weights, 0);
  auto in = Inputs(4);
  HostMemory().Trim(0);
  HostMemory().ResetPeak();
  const int64_t start = HostMemory().stats().working_in_use;
  ASSERT_TRUE((*a)->Run({in[0].view(), in[1].view()}).ok());
  const int64_t one = HostMemory().stats().peak_working - start;
  ASSERT_GT(one, 0);  // the run's activations came from the pool
  // The second engine reuses what the first freed: the pool holds no second working set.
  ASSERT_TRUE((*b)->Run({in[0].view(), in[1].view()}).ok());
  const HostMemoryStats s = HostMemory().stats();
  EXPECT_LE(s.working_in_use + s.cached - start, one);
}

TEST(HostMemory, ARunPastTheLimitIsResourceExhaustedAndTheNextRunSucceeds) {
  PoolReset reset;
  EngineOptions o;
  o.intra_op_threads = 1;
  auto e = Engine::Create(kDir + "/tiny.onnx", o);
  ASSERT_TRUE(e.ok());
  auto in = Inputs(2);
  HostMemory().Trim(0);
  HostMemory().SetLimit(HostMemory().stats().working_in_use + 64 * 1024);
  auto refused = (*e)->Run({in[0].view(), in[1].view()});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("working memory"), std::string::npos)
      << refused.status().message();
  HostMemory().SetLimit(0);
  EXPECT_TRUE((*e)->Run({in[0].view(), in[1].view()}).ok());
  // An injected failure of one allocation fails that run only.
  HostMemory().FailNextAllocations(1);
  auto failed = (*e)->Run({in[0].view(), in[1].view()});
  EXPECT_EQ(failed.status().code(), StatusCode::kResourceExhausted) << failed.status().ToString();
  EXPECT_TRUE((*e)->Run({in[0].view(), in[1].view()}).ok());
}

#ifdef __linux__
// The flags (smaps' VmFlags) of the mapping that holds `p`; "" when no mapping holds it.
std::string MappingFlags(const void* p) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t start = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> start >> dash >> end && dash == '-') {
      inside = start <= at && at < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

TEST(HostMemory, LargeBlocksAskForHugePagesOnlyWithoutALimit) {
  if (!std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled")) {
    GTEST_SKIP() << "this kernel has no transparent huge pages to ask for";
  }
  PoolReset reset;
  HostMemory().Trim(0);
  {
    PoolBlock large(8 * kMiB), small(512 * 1024);
    ASSERT_TRUE(large && small);
    large.as<char>()[8 * kMiB - 1] = 1;  // the whole block is there to write
    const std::string flags = MappingFlags(large.as<char>());
    ASSERT_NE(flags, "") << "no mapping holds the block";
    EXPECT_NE(flags.find(" hg"), std::string::npos) << flags;
    EXPECT_EQ(MappingFlags(small.as<char>()).find(" hg"), std::string::npos);
  }
  HostMemory().Trim(0);
  HostMemory().SetLimit(64 * kMiB);
  PoolBlock limited(8 * kMiB);
  ASSERT_TRUE(limited);
  const std::string flags = MappingFlags(limited.as<char>());
  ASSERT_NE(flags, "");
  EXPECT_EQ(flags.find(" hg"), std::string::npos) << flags;
}
#endif

}  // namespace
}  // namespace lipsync
