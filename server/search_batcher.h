// Dynamic batching of concurrent index searches.
//
// An exact scan costs one pass over the item matrix however many queries ride on it, and
// FAISS searches a batch of queries faster than the same queries one by one. So concurrent
// Retrieve calls are combined: the first caller to find a round free becomes the leader,
// takes every waiting search of the same catalogue (and, unless the catalogue is exact,
// the same largest k: HNSW's search depth follows k, and a call's answer must not depend
// on what rode along; an exact answer is the same at any k, cut to the call's), up to a
// query limit, runs them as one Catalogue::Search and hands each caller its results. An
// exception in a round (bad_alloc) fails that round's calls instead of stranding them.
// Up to `max_rounds` rounds run at once (one per core: a second core need not idle while
// the first scans); callers that arrive while all are busy wait for the next free one. A
// caller alone is searched at once (no timer, no added latency); under load the batches
// grow by themselves to whatever arrived during the previous rounds.
#ifndef TWOTOWER_SERVER_SEARCH_BATCHER_H_
#define TWOTOWER_SERVER_SEARCH_BATCHER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "index/catalogue.h"

namespace twotower {

class SearchBatcher {
 public:
  using Results = std::vector<std::vector<Catalogue::Result>>;

  // `max_queries`: most queries in one combined search (a caller with more is searched on
  // its own); 1 turns batching off.
  // `max_rounds`: combined searches that may run at once (>= 1). `before_round` (tests)
  // runs in the leader before each combined search, without the lock.
  SearchBatcher(int max_queries, int max_rounds, std::function<void()> before_round = nullptr)
      : max_queries_(max_queries), max_rounds_(max_rounds), before_round_(std::move(before_round)) {}
  SearchBatcher(const SearchBatcher&) = delete;
  SearchBatcher& operator=(const SearchBatcher&) = delete;

  // Catalogue::Search(vectors, queries), possibly combined with concurrent callers of the
  // same catalogue. An error in a combined search is isolated: each caller is then
  // searched alone, so one bad query fails only its own call. Thread-safe.
  absl::StatusOr<Results> Search(const Catalogue& catalogue, const float* vectors,
                                 std::span<const Catalogue::Query> queries);

  // Combined searches run and queries answered so far (for tests and status).
  struct Stats {
    int64_t searches = 0;
    int64_t queries = 0;
    int64_t largest_batch = 0;
  };
  Stats stats() const;
  // Searches waiting for a round.
  int waiting() const;

 private:
  struct Pending {
    const Catalogue* catalogue;
    int max_k;  // ANN rounds share it: a search's results never depend on who rode along
    const float* vectors;
    std::span<const Catalogue::Query> queries;
    absl::StatusOr<Results> result;
    bool taken = false;  // in a round
    bool done = false;   // result set
  };
  // Removes from the queue the searches of the next round: the oldest one and, within the
  // query limit, every other of its catalogue (and largest k, unless it is exact).
  std::vector<Pending*> TakeRound();
  static void Run(std::span<Pending* const> round);

  const int max_queries_;
  const int max_rounds_;
  const std::function<void()> before_round_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Pending*> waiting_;  // guarded by mu_
  int running_ = 0;               // guarded by mu_: rounds being searched
  Stats stats_;                   // guarded by mu_
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_SEARCH_BATCHER_H_
