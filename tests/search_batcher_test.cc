#include "server/search_batcher.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <new>
#include <span>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "index/catalogue.h"
#include "tests/status_matchers.h"
#include "tests/trained_model.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

// Submits a search and waits for its answer, as a synchronous caller would.
absl::StatusOr<SearchBatcher::Results> SearchAndWait(SearchBatcher& batcher, const Catalogue& catalogue,
                                                     const float* vectors, std::span<const Catalogue::Query> queries) {
  std::promise<absl::StatusOr<SearchBatcher::Results>> answer;
  std::future<absl::StatusOr<SearchBatcher::Results>> got = answer.get_future();
  batcher.Submit(catalogue, vectors, queries,
                 [&answer](absl::StatusOr<SearchBatcher::Results> r) { answer.set_value(std::move(r)); });
  return got.get();
}

// One trained model and its exact catalogue, shared by the tests of this file.
struct SharedModel {
  testing::ScopedTempDir dir;
  testing::TrainedModel model = testing::TrainSynthetic(dir, 2);
  std::shared_ptr<const Bundle> bundle = std::make_shared<const Bundle>(model.report.bundle);
  std::shared_ptr<const Catalogue> catalogue = *Catalogue::Create(Bundle(*bundle), IndexOptions{});  // a copy: the catalogue takes its items
};

class SearchBatcherTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_ = std::make_unique<SharedModel>(); }
  static void TearDownTestSuite() { shared_.reset(); }
  // Query vectors: the first `n` items' own vectors (unit length, like user vectors).
  static std::vector<float> Vectors(int n) {
    const std::vector<float>& items = shared_->bundle->item_vectors;
    return {items.begin(), items.begin() + static_cast<size_t>(n) * shared_->catalogue->dim()};
  }
  static std::vector<std::string> Ids(const std::vector<Catalogue::Result>& results) {
    std::vector<std::string> ids;
    for (const Catalogue::Result& r : results) ids.emplace_back(r.id);
    return ids;
  }
  static void ExpectCombinedRound(int bad);
  // One caller per query (query c searches item c's vector) through a batcher allowing one
  // round at a time: caller 0 first, its round held until all the others wait, so they
  // then share the second round. `then` runs in the first round after the hold (e.g. to
  // make it throw).
  static std::vector<absl::StatusOr<SearchBatcher::Results>> CallTogether(
      std::span<const Catalogue::Query> queries, SearchBatcher::Stats* stats,
      const std::function<void()>& then = nullptr);
  static std::unique_ptr<SharedModel> shared_;
};
std::unique_ptr<SharedModel> SearchBatcherTest::shared_;

std::vector<absl::StatusOr<SearchBatcher::Results>> SearchBatcherTest::CallTogether(
    std::span<const Catalogue::Query> queries, SearchBatcher::Stats* stats, const std::function<void()>& then) {
  const Catalogue& catalogue = *shared_->catalogue;
  const int callers = static_cast<int>(queries.size());
  std::atomic<int> rounds = 0;
  SearchBatcher* batcher_ptr = nullptr;
  SearchBatcher batcher(64, 1, [&] {
    if (rounds++ == 0) {
      while (batcher_ptr->waiting() < callers - 1) std::this_thread::yield();
      if (then) then();
    }
  });
  batcher_ptr = &batcher;
  const std::vector<float> vectors = Vectors(callers);
  std::vector<absl::StatusOr<SearchBatcher::Results>> got(callers);
  std::vector<std::thread> threads;
  threads.emplace_back([&] { got[0] = SearchAndWait(batcher, catalogue, vectors.data(), queries.subspan(0, 1)); });
  while (rounds.load() == 0) std::this_thread::yield();  // caller 0 leads and is held
  for (int c = 1; c < callers; ++c) {
    threads.emplace_back([&, c] {
      got[c] = SearchAndWait(batcher, catalogue, vectors.data() + static_cast<size_t>(c) * catalogue.dim(),
                              queries.subspan(c, 1));
    });
  }
  for (std::thread& t : threads) t.join();
  *stats = batcher.stats();
  return got;
}

// The first round is held until seven more callers wait; they must then be answered in
// one combined search, each with exactly what it would get alone. With `bad` >= 0 that
// caller's filter is invalid: it must fail alone, the others still get their answers.
void SearchBatcherTest::ExpectCombinedRound(int bad) {
  const Catalogue& catalogue = *shared_->catalogue;
  const Bundle& bundle = *shared_->bundle;
  constexpr int kCallers = 8;
  const std::vector<float> vectors = Vectors(kCallers);
  std::vector<google::protobuf::RepeatedPtrField<std::string>> excludes(kCallers);
  std::vector<google::protobuf::RepeatedPtrField<v1::ItemFilter>> filters(kCallers);
  std::vector<Catalogue::Query> queries(kCallers);
  for (int c = 0; c < kCallers; ++c) {
    *excludes[c].Add() = bundle.items.ids[c];  // its own item
    queries[c] = {20, &excludes[c], &filters[c]};
    // ... and a genre filter on some, so the combined search mixes restricted queries.
    if (c % 3 == 1) {
      v1::ItemFilter* filter = filters[c].Add();
      filter->set_feature("genres");
      filter->add_any_of("g0");
      filter->add_any_of("g1");
    }
  }
  if (bad >= 0) filters[bad].Add()->set_feature("no_such_feature");

  SearchBatcher::Stats stats;
  const std::vector<absl::StatusOr<SearchBatcher::Results>> got = CallTogether(queries, &stats);
  EXPECT_EQ(stats.searches, 2);
  EXPECT_EQ(stats.largest_batch, kCallers - 1);
  EXPECT_EQ(stats.queries, kCallers);
  for (int c = 0; c < kCallers; ++c) {
    absl::StatusOr<SearchBatcher::Results> alone =
        catalogue.Search(vectors.data() + static_cast<size_t>(c) * catalogue.dim(), {&queries[c], 1});
    if (c == bad) {
      EXPECT_EQ(got[c].status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ASSERT_THAT(got[c], IsOk());
    ASSERT_THAT(alone, IsOk());
    ASSERT_EQ(got[c]->size(), 1u);
    EXPECT_EQ(Ids((*got[c])[0]), Ids((*alone)[0])) << c;
    EXPECT_FALSE((*got[c])[0].empty());
    for (size_t i = 0; i < (*got[c])[0].size(); ++i) {
      EXPECT_EQ((*got[c])[0][i].score, (*alone)[0][i].score);
    }
  }
}

TEST_F(SearchBatcherTest, ConcurrentCallersShareOneSearchAndGetTheirOwnAnswers) {
  ExpectCombinedRound(/*bad=*/-1);
}

TEST_F(SearchBatcherTest, AnInvalidQueryFailsOnlyItsOwnCall) {
  ExpectCombinedRound(/*bad=*/5);
}

TEST_F(SearchBatcherTest, LimitOneSearchesEveryCallerAlone) {
  const Catalogue& catalogue = *shared_->catalogue;
  // The first round is held until the three other callers wait, so batching had the chance.
  std::atomic<int> rounds = 0;
  SearchBatcher* batcher_ptr = nullptr;
  SearchBatcher batcher(1, 1, [&] {
    if (rounds++ == 0) {
      while (batcher_ptr->waiting() < 3) std::this_thread::yield();
    }
  });
  batcher_ptr = &batcher;
  const std::vector<float> vectors = Vectors(4);
  std::vector<std::thread> threads;
  std::atomic<int> failures = 0;
  for (int c = 0; c < 4; ++c) {
    threads.emplace_back([&, c] {
      const Catalogue::Query query{10, nullptr, nullptr};
      for (int i = 0; i < 20; ++i) {
        absl::StatusOr<SearchBatcher::Results> r =
            SearchAndWait(batcher, catalogue, vectors.data() + static_cast<size_t>(c) * catalogue.dim(), {&query, 1});
        if (!r.ok() || (*r)[0].size() != 10) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(batcher.stats().searches, 80);
  EXPECT_EQ(batcher.stats().largest_batch, 1);
}

// A before_round hook for a batcher: the first round waits until `release` is set;
// `rounds` counts the rounds begun. While it waits, further searches stay queued.
struct HeldFirstRound {
  std::atomic<int> rounds = 0;
  std::atomic<bool> release = false;
  std::function<void()> Hook() {
    return [this] {
      if (rounds++ == 0) {
        while (!release.load()) std::this_thread::yield();
      }
    };
  }
};

// A fixture whose tests run twice: with short rounds (answered on the callers' threads) and
// with long rounds (searched on background threads).
class SearchBatcherRoundsTest : public SearchBatcherTest, public ::testing::WithParamInterface<bool> {};

INSTANTIATE_TEST_SUITE_P(ShortAndLong, SearchBatcherRoundsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "LongRounds" : "ShortRounds");
                         });

// With two rounds allowed, a second caller is searched while the first round is still
// running (the first round waits, with a time limit, to see it start): on the second
// caller's thread with short rounds, on a background thread with long ones.
TEST_P(SearchBatcherRoundsTest, TwoRoundsRunAtOnce) {
  const bool long_rounds = GetParam();
  const Catalogue& catalogue = *shared_->catalogue;
  const std::vector<float> vectors = Vectors(2);
  std::atomic<int> started = 0;
  std::atomic<bool> overlapped = false;
  std::atomic<bool> second_on_caller = false;
  const std::thread::id caller = std::this_thread::get_id();
  SearchBatcher batcher(
      64, 2,
      [&] {
        if (started++ == 0) {
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          while (started.load() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
          overlapped = started.load() >= 2;
        } else {
          second_on_caller = std::this_thread::get_id() == caller;
        }
      },
      long_rounds ? absl::Nanoseconds(-1) : absl::InfiniteDuration());
  const Catalogue::Query query{3, nullptr, nullptr};
  std::thread first([&] { EXPECT_THAT(SearchAndWait(batcher, catalogue, vectors.data(), {&query, 1}), IsOk()); });
  while (started.load() == 0) std::this_thread::yield();
  EXPECT_THAT(SearchAndWait(batcher, catalogue, vectors.data() + catalogue.dim(), {&query, 1}), IsOk());
  first.join();
  EXPECT_TRUE(overlapped.load());
  EXPECT_EQ(second_on_caller.load(), !long_rounds);
  EXPECT_EQ(batcher.stats().searches, 2);
}

// On an exact catalogue, callers with different k share a round, and each gets exactly
// its own top k (what it gets alone).
TEST_F(SearchBatcherTest, DifferentKShareARoundOnAnExactCatalogue) {
  const Catalogue& catalogue = *shared_->catalogue;
  ASSERT_TRUE(catalogue.exact());
  const std::vector<int> ks = {3, 20, 7, 50};
  std::vector<Catalogue::Query> queries;
  for (const int k : ks) queries.push_back({k, nullptr, nullptr});
  SearchBatcher::Stats stats;
  const std::vector<absl::StatusOr<SearchBatcher::Results>> got = CallTogether(queries, &stats);
  EXPECT_EQ(stats.searches, 2);  // caller 0 alone, then the three others together
  EXPECT_EQ(stats.largest_batch, 3);
  const std::vector<float> vectors = Vectors(static_cast<int>(ks.size()));
  for (size_t c = 0; c < ks.size(); ++c) {
    ASSERT_THAT(got[c], IsOk());
    absl::StatusOr<SearchBatcher::Results> alone =
        catalogue.Search(vectors.data() + c * catalogue.dim(), {&queries[c], 1});
    ASSERT_THAT(alone, IsOk());
    ASSERT_EQ((*got[c])[0].size(), static_cast<size_t>(ks[c]));
    EXPECT_EQ(Ids((*got[c])[0]), Ids((*alone)[0])) << c;
    for (int i = 0; i < ks[c]; ++i) EXPECT_EQ((*got[c])[0][i].score, (*alone)[0][i].score);
  }
}

// A round that throws (bad_alloc in a search) fails every call it carried with a status,
// strands none of them, and the next round works.
TEST_F(SearchBatcherTest, AThrowingRoundFailsItsCallsAndTheNextRoundWorks) {
  const std::vector<Catalogue::Query> queries(4, Catalogue::Query{5, nullptr, nullptr});
  SearchBatcher::Stats stats;
  const std::vector<absl::StatusOr<SearchBatcher::Results>> got =
      CallTogether(queries, &stats, [] { throw std::bad_alloc(); });
  // Round 1 (caller 0) threw; round 2 carried the three others and worked.
  EXPECT_EQ(got[0].status().code(), absl::StatusCode::kInternal);
  for (size_t c = 1; c < queries.size(); ++c) {
    ASSERT_THAT(got[c], IsOk());
    EXPECT_EQ((*got[c])[0].size(), 5u);
  }
  EXPECT_EQ(stats.searches, 2);
}

// Nobody waits for a round: a search submitted while every round runs is queued and
// Submit returns at once. With short rounds the running leader answers it on its own
// thread, once; with long rounds a background thread does, and the leader's Submit
// returns after its own round.
TEST_P(SearchBatcherRoundsTest, AQueuedSearchIsAnsweredByTheLeaderOrInTheBackground) {
  const bool long_rounds = GetParam();
  const Catalogue& catalogue = *shared_->catalogue;
  const std::vector<float> vectors = Vectors(2);
  HeldFirstRound held;
  // Every round counts as long above a negative time, none above an infinite one.
  SearchBatcher batcher(64, 1, held.Hook(), long_rounds ? absl::Nanoseconds(-1) : absl::InfiniteDuration());
  const Catalogue::Query query{4, nullptr, nullptr};
  std::thread::id leader_thread, answered_on;
  std::atomic<int> answers = 0;
  std::thread leader([&] {
    leader_thread = std::this_thread::get_id();
    batcher.Submit(catalogue, vectors.data(), {&query, 1},
                   [&](absl::StatusOr<SearchBatcher::Results> r) { EXPECT_THAT(r, IsOk()); });
  });
  while (held.rounds.load() == 0) std::this_thread::yield();  // the leader's round is held
  absl::StatusOr<SearchBatcher::Results> second;
  batcher.Submit(catalogue, vectors.data() + catalogue.dim(), {&query, 1},
                 [&](absl::StatusOr<SearchBatcher::Results> r) {
                   answered_on = std::this_thread::get_id();
                   second = std::move(r);
                   ++answers;
                 });
  // Submit returned while the only round is still held: not answered yet, and queued.
  EXPECT_EQ(answers.load(), 0);
  EXPECT_EQ(batcher.waiting(), 1);
  held.release = true;
  leader.join();
  if (long_rounds) {  // answered by a background thread, maybe after the leader returned
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (answers.load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  }
  EXPECT_EQ(answers.load(), 1);  // (short rounds: before the leader's Submit returned)
  if (long_rounds) {
    EXPECT_NE(answered_on, leader_thread);
    EXPECT_NE(answered_on, std::this_thread::get_id());
  } else {
    EXPECT_EQ(answered_on, leader_thread);
  }
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ((*second)[0].size(), 4u);
  EXPECT_EQ(batcher.stats().searches, 2);
  EXPECT_EQ(batcher.waiting(), 0);
}

// A queued search whose caller gave up meanwhile (its check fails when a round takes it)
// is answered with that status and not searched; the others of the round are.
TEST_F(SearchBatcherTest, ASearchNoLongerWantedIsAnsweredWithoutASearch) {
  const Catalogue& catalogue = *shared_->catalogue;
  HeldFirstRound held;
  SearchBatcher batcher(64, 1, held.Hook(), absl::InfiniteDuration());
  const std::vector<float> vectors = Vectors(3);
  const Catalogue::Query query{6, nullptr, nullptr};
  std::thread leader([&] { EXPECT_THAT(SearchAndWait(batcher, catalogue, vectors.data(), {&query, 1}), IsOk()); });
  while (held.rounds.load() == 0) std::this_thread::yield();  // the leader's round is held
  absl::StatusOr<SearchBatcher::Results> given_up, wanted;
  batcher.Submit(
      catalogue, vectors.data() + catalogue.dim(), {&query, 1},
      [&](absl::StatusOr<SearchBatcher::Results> r) { given_up = std::move(r); },
      [] { return absl::DeadlineExceededError("past its deadline"); });
  batcher.Submit(
      catalogue, vectors.data() + 2 * catalogue.dim(), {&query, 1},
      [&](absl::StatusOr<SearchBatcher::Results> r) { wanted = std::move(r); },
      [] { return absl::OkStatus(); });
  held.release = true;
  leader.join();  // short rounds: the leader answered both before returning
  EXPECT_EQ(given_up.status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_THAT(wanted, IsOk());
  EXPECT_EQ((*wanted)[0].size(), 6u);
  const SearchBatcher::Stats stats = batcher.stats();
  EXPECT_EQ(stats.searches, 2);
  EXPECT_EQ(stats.queries, 2);  // the leader's and the wanted one
  EXPECT_EQ(stats.largest_batch, 1);
  EXPECT_EQ(stats.abandoned, 1);
}

}  // namespace
}  // namespace twotower
