// SnapshotHolder: Get / Swap, a snapshot living on while a reader holds it after another
// is swapped in (and freed with its last holder), readers running during swaps seeing
// only whole snapshots, in the order they were installed.
#include "server/snapshot.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace twotower {
namespace {

// A snapshot that says which it is twice (model_version and bundle_path), so a reader can
// tell a whole one from a torn or freed one.
std::shared_ptr<const Snapshot> Numbered(int n) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->model_version = absl::StrCat("v", n);
  snapshot->bundle_path = absl::StrCat("bundles/", n);
  return snapshot;
}

// The number of a whole snapshot of Numbered, or -1.
int NumberOf(const Snapshot& snapshot) {
  int n = -1;
  if (snapshot.model_version.size() < 2 || !absl::SimpleAtoi(snapshot.model_version.substr(1), &n)) return -1;
  return snapshot.bundle_path == absl::StrCat("bundles/", n) ? n : -1;
}

TEST(SnapshotHolderTest, GetIsNullUntilTheFirstSwapAndSwapReturnsThePrevious) {
  SnapshotHolder holder;
  EXPECT_EQ(holder.Get(), nullptr);
  const std::shared_ptr<const Snapshot> first = Numbered(1);
  EXPECT_EQ(holder.Swap(first), nullptr);
  EXPECT_EQ(holder.Get(), first);
  EXPECT_EQ(holder.Get(), first) << "Get leaves the snapshot in place";
  const std::shared_ptr<const Snapshot> second = Numbered(2);
  EXPECT_EQ(holder.Swap(second), first);
  EXPECT_EQ(holder.Get(), second);
}

TEST(SnapshotHolderTest, AnOldSnapshotLivesWhileAReaderHoldsIt) {
  SnapshotHolder holder;
  std::shared_ptr<const Snapshot> reader;
  std::weak_ptr<const Snapshot> old;
  {
    std::shared_ptr<const Snapshot> first = Numbered(1);
    old = first;
    holder.Swap(std::move(first));
    reader = holder.Get();
  }
  // The next model goes in; the swapper drops the old one at once.
  EXPECT_EQ(holder.Swap(Numbered(2)).get(), reader.get());
  ASSERT_FALSE(old.expired()) << "freed while a reader held it";
  EXPECT_EQ(NumberOf(*reader), 1);
  EXPECT_EQ(NumberOf(*holder.Get()), 2);
  // Freed with its last holder.
  reader.reset();
  EXPECT_TRUE(old.expired());
  EXPECT_EQ(NumberOf(*holder.Get()), 2);
}

// Readers call Get while a writer swaps in 200000 snapshots one after another, dropping each
// old one at once: every Get gives a whole snapshot, never null, never older than one the
// same reader got before; a snapshot held across later swaps stays whole.
TEST(SnapshotHolderTest, ReadersDuringSwapsSeeWholeSnapshotsInOrder) {
  constexpr int kSwaps = 200000;
  constexpr int kReaders = 3;
  SnapshotHolder holder;
  holder.Swap(Numbered(0));
  std::atomic<int> installed = 0;
  std::atomic<int> readers_started = 0;
  std::atomic<int> bad = 0, backwards = 0, held_torn = 0;
  std::vector<std::thread> readers;
  for (int t = 0; t < kReaders; ++t) {
    readers.emplace_back([&] {
      ++readers_started;
      int last = 0;
      std::shared_ptr<const Snapshot> held;
      int held_number = 0;
      int held_at = 0;
      while (last < kSwaps) {
        const std::shared_ptr<const Snapshot> snapshot = holder.Get();
        const int n = snapshot == nullptr ? -1 : NumberOf(*snapshot);
        if (n < 0) {
          ++bad;
          break;
        }
        if (n < last) ++backwards;
        last = n;
        // Keep one snapshot across a few swaps, then check it is still whole.
        if (held == nullptr) {
          held = snapshot;
          held_number = n;
          held_at = installed.load();
        } else if (installed.load() >= held_at + 3 || last == kSwaps) {
          if (NumberOf(*held) != held_number) ++held_torn;
          held.reset();
        }
      }
    });
  }
  // The swaps start once every reader is reading.
  while (readers_started.load() < kReaders) std::this_thread::yield();
  for (int n = 1; n <= kSwaps; ++n) {
    holder.Swap(Numbered(n));  // the previous one dropped here
    installed.store(n);
  }
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0) << "a Get gave no snapshot or a torn / freed one";
  EXPECT_EQ(backwards.load(), 0) << "a reader saw an older snapshot after a newer one";
  EXPECT_EQ(held_torn.load(), 0) << "a held snapshot changed under its reader";
  EXPECT_EQ(NumberOf(*holder.Get()), kSwaps);
}

}  // namespace
}  // namespace twotower
