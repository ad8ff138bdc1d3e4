// The device working-memory pool's logic on a fake allocator (core/arena_pool.h): engines share
// one arena per slot, arenas grow to the largest need, the limit frees idle arenas and then
// refuses, trimming gives back, and a slot has one borrower at a time.
#include "core/arena_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

namespace lipsync {
namespace {

constexpr size_t kMiB = 1 << 20;

// A device of `capacity` bytes: blocks are small host allocations standing for arenas, with the
// bytes each stands for counted.
struct FakeDevice {
  std::mutex mu;
  std::map<void*, size_t> live;
  int64_t live_bytes = 0, capacity = 1LL << 40;
  int allocations = 0;

  ArenaAllocator Allocator() {
    ArenaAllocator a;
    a.allocate = [this](size_t bytes) -> void* {
      std::lock_guard lock(mu);
      if (live_bytes + static_cast<int64_t>(bytes) > capacity) return nullptr;
      void* p = ::operator new(64);
      std::memset(p, 0, 64);
      live[p] = bytes;
      live_bytes += static_cast<int64_t>(bytes);
      ++allocations;
      return p;
    };
    a.free = [this](void* p) {
      std::lock_guard lock(mu);
      auto it = live.find(p);
      ASSERT_NE(it, live.end()) << "freed a block the device did not give";
      live_bytes -= static_cast<int64_t>(it->second);
      live.erase(it);
      ::operator delete(p);
    };
    return a;
  }
};

TEST(ArenaPool, TwoEnginesShareOneArenaPerSlot) {
  FakeDevice device;
  ArenaPool pool(device.Allocator(), 1);
  void* first = nullptr;
  uint64_t generation = 0;
  {
    auto a = pool.Acquire(10 * kMiB);  // engine A, batch 16
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    first = a->data();
    generation = a->generation();
    EXPECT_EQ(pool.stats().working_in_use, static_cast<int64_t>(10 * kMiB));
  }
  auto b = pool.Acquire(8 * kMiB);  // engine B, a smaller model: the same arena
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->data(), first);
  EXPECT_EQ(b->generation(), generation);
  EXPECT_EQ(device.allocations, 1);
  b->Release();
  const DeviceMemoryStats s = pool.stats();
  EXPECT_EQ(s.working_in_use, 0);
  EXPECT_EQ(s.cached, static_cast<int64_t>(10 * kMiB));
  EXPECT_EQ(s.peak_working, static_cast<int64_t>(10 * kMiB));
  EXPECT_EQ(device.live_bytes, static_cast<int64_t>(10 * kMiB));
}

TEST(ArenaPool, AnArenaGrowsToTheLargestNeed) {
  FakeDevice device;
  ArenaPool pool(device.Allocator(), 1);
  uint64_t small_generation = 0;
  {
    auto a = pool.Acquire(4 * kMiB);
    ASSERT_TRUE(a.ok());
    small_generation = a->generation();
  }
  {
    auto a = pool.Acquire(16 * kMiB);
    ASSERT_TRUE(a.ok());
    EXPECT_GE(a->size(), 16 * kMiB);
    EXPECT_NE(a->generation(), small_generation);  // graphs over the old arena are stale
    EXPECT_FALSE(pool.Live(small_generation));
  }
  EXPECT_EQ(device.live_bytes, static_cast<int64_t>(16 * kMiB));  // the small one was freed
  auto a = pool.Acquire(4 * kMiB);  // the large arena serves the small batch again
  ASSERT_TRUE(a.ok());
  EXPECT_GE(a->size(), 16 * kMiB);
  EXPECT_EQ(device.allocations, 2);
}

TEST(ArenaPool, TheLimitFreesIdleArenasThenRefusesAndASmallerRunFits) {
  FakeDevice device;
  ArenaPool pool(device.Allocator(), 2);
  pool.SetLimit(20 * kMiB);
  { ASSERT_TRUE(pool.Acquire(12 * kMiB).ok()); }  // slot 0 keeps 12 MiB idle
  auto held = pool.Acquire(16 * kMiB, /*preferred=*/1);
  ASSERT_TRUE(held.ok()) << held.status().ToString();  // the idle 12 MiB went first
  EXPECT_EQ(held->slot(), 1);
  EXPECT_EQ(pool.stats().trimmed_total, static_cast<int64_t>(12 * kMiB));
  EXPECT_EQ(device.live_bytes, static_cast<int64_t>(16 * kMiB));

  auto refused = pool.Acquire(8 * kMiB);  // 16 held + 8 > 20
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("limit"), std::string::npos);
  EXPECT_EQ(pool.stats().refused_total, 1);

  auto smaller = pool.Acquire(4 * kMiB);
  ASSERT_TRUE(smaller.ok()) << smaller.status().ToString();
  EXPECT_EQ(smaller->slot(), 0);
  EXPECT_LE(pool.stats().working_in_use, static_cast<int64_t>(20 * kMiB));
}

TEST(ArenaPool, AFullDeviceIsRefusedAfterTheIdleArenasAreFreed) {
  FakeDevice device;
  device.capacity = 24 * kMiB;
  ArenaPool pool(device.Allocator(), 2);
  { ASSERT_TRUE(pool.Acquire(12 * kMiB).ok()); }
  auto a = pool.Acquire(20 * kMiB, 1);  // fits only once slot 0's arena is freed
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(device.live_bytes, static_cast<int64_t>(20 * kMiB));
  auto b = pool.Acquire(8 * kMiB);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.stats().working_in_use, static_cast<int64_t>(20 * kMiB));
}

TEST(ArenaPool, TrimGivesIdleArenasBack) {
  FakeDevice device;
  ArenaPool pool(device.Allocator(), 2);
  {
    auto a = pool.Acquire(6 * kMiB);
    auto b = pool.Acquire(3 * kMiB);
    ASSERT_TRUE(a.ok() && b.ok());
    a->Release();  // first: the least recently used
    b->Release();
  }
  pool.SetMaxAge(std::chrono::hours(1));
  EXPECT_EQ(pool.Trim(-1), 0);                                     // nothing is that old
  EXPECT_EQ(pool.Trim(4 * kMiB), static_cast<int64_t>(6 * kMiB));  // least recently used first
  EXPECT_EQ(pool.stats().cached, static_cast<int64_t>(3 * kMiB));
  pool.SetMaxAge(std::chrono::seconds(0));
  EXPECT_EQ(pool.Trim(-1), static_cast<int64_t>(3 * kMiB));
  EXPECT_EQ(device.live_bytes, 0);
  EXPECT_EQ(pool.stats().cached, 0);
  EXPECT_EQ(pool.stats().trimmed_total, static_cast<int64_t>(9 * kMiB));
}

TEST(ArenaPool, TwoRunsAtOnceHoldTwoSlots) {
  FakeDevice device;
  ArenaPool pool(device.Allocator(), 2);
  auto a = pool.Acquire(kMiB);
  auto b = pool.Acquire(kMiB);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->slot(), b->slot());
  EXPECT_NE(a->data(), b->data());
  EXPECT_EQ(pool.stats().working_in_use, static_cast<int64_t>(2 * kMiB));
}

// With one slot held, a second borrower waits until it is given back, and then gets it.
TEST(ArenaPool, ABorrowerWaitsForTheHeldSlot) {
  FakeDevice device;
  ArenaPool pool(device.Allocator(), 1);
  auto held = pool.Acquire(kMiB);
  ASSERT_TRUE(held.ok());
  std::atomic<bool> released{false}, got{false}, released_before{false};
  std::thread other([&] {
    auto lease = pool.Acquire(kMiB);
    released_before = released.load();
    got = lease.ok();
  });
  // The other thread is inside Acquire, waiting (or, were the slot not exclusive, done).
  while (pool.stats().waiting == 0 && !got) std::this_thread::yield();
  EXPECT_FALSE(got.load()) << "a second borrower got a slot that was held";
  released = true;
  held->Release();
  other.join();
  EXPECT_TRUE(got.load());
  EXPECT_TRUE(released_before.load());
  EXPECT_EQ(pool.stats().waiting, 0);
}

// Two threads (two engines) borrow the one slot over and over: each finds the arena as it left
// it while it holds it, so no two ever hold it at once.
TEST(ArenaPool, OneBorrowerPerSlotUnderContention) {
  FakeDevice device;
  ArenaPool pool(device.Allocator(), 1);
  std::atomic<int> overlaps{0};  // or failures
  auto run = [&](int id, size_t bytes) {
    for (int i = 0; i < 500; ++i) {
      auto lease = pool.Acquire(bytes);
      if (!lease.ok()) {
        ++overlaps;
        continue;
      }
      auto* owner = static_cast<std::atomic<int>*>(lease->data());
      if (owner->exchange(id) != 0) ++overlaps;
      std::this_thread::yield();
      if (owner->exchange(0) != id) ++overlaps;
    }
  };
  std::thread a(run, 1, 2 * kMiB), b(run, 2, kMiB);
  a.join();
  b.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(pool.stats().working_in_use, 0);
}

}  // namespace
}  // namespace lipsync
