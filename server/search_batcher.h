// Dynamic batching of concurrent index searches.
//
// An exact scan costs one pass over the item matrix however many queries ride on it, and
// FAISS searches a batch of queries faster than the same queries one by one. So concurrent
// Retrieve calls are combined: a round takes the oldest waiting search and every other of
// the same catalogue (and, unless the catalogue is exact, the same largest k: HNSW's
// search depth follows k, and a call's answer must not depend on what rode along; an
// exact answer is the same at any k, cut to the call's), up to a query limit, runs them as
// one Catalogue::Search and hands each its results through its callback.
//
// Nobody blocks, and the submitting threads are gRPC's (gRPC 1.51 runs callbacks on two
// "nexting" threads on a 2-core machine, as the server's thread list shows under load).
// A search submitted when no round runs is led by its submitter at once (no handoff, no
// timer: a lone caller pays nothing). What happens under load depends on how long rounds
// take (a moving average over the last few rounds, so it follows a reload or rebuild):
//  * Short rounds (an exact scan of 100k items): the submitter leads whenever a round is
//    free, and goes on leading rounds while other searches wait. Handing a search to
//    another thread costs a wake-up, about a tenth of a millisecond of CPU on a VM, more
//    than batching saves on a short scan.
//  * Long rounds (1M items): a submitter leads only when no round runs, and then only that
//    one round. Otherwise it queues its search and returns, so its thread goes on
//    receiving calls into the queue (with both gRPC threads scanning, no call is received
//    meanwhile and no batch forms); `max_rounds` background threads run the queued
//    searches, in batches.
// Parking the submitter on a condition variable until its answer, as with the
// synchronous API, left a fifth of the 2 cores idle in wake-ups under load. An exception
// in a round (bad_alloc) fails that round's searches instead of stranding them.
#ifndef TWOTOWER_SERVER_SEARCH_BATCHER_H_
#define TWOTOWER_SERVER_SEARCH_BATCHER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "index/catalogue.h"

namespace twotower {

class SearchBatcher {
 public:
  using Results = std::vector<std::vector<Catalogue::Result>>;

  // `max_queries`: most queries in one combined search (a caller with more is searched on
  // its own); 1 turns batching off.
  // `max_rounds`: combined searches that may run at once (>= 1; typically one per core),
  // and background threads. `before_round` (tests) runs in the leader before each
  // combined search (not for a round whose searches were all abandoned), without the
  // lock. `hand_off_above`: rounds that take longer (on
  // average) are long (see above).
  static constexpr absl::Duration kHandOffAbove = absl::Milliseconds(1);
  SearchBatcher(int max_queries, int max_rounds, std::function<void()> before_round = nullptr,
                absl::Duration hand_off_above = kHandOffAbove);
  // Answers every search still queued, then joins the background threads.
  ~SearchBatcher();
  SearchBatcher(const SearchBatcher&) = delete;
  SearchBatcher& operator=(const SearchBatcher&) = delete;

  // Runs `done` with Catalogue::Search(vectors, queries), possibly combined with other
  // searches of the same catalogue. `done` runs exactly once, on this thread, on the
  // thread of a concurrent Submit or on a background thread, never under the batcher's
  // lock; `catalogue`, `vectors`
  // and `queries` must stay valid until it runs. An error in a combined search is
  // isolated: each search is then run alone, so one bad query fails only its own.
  // `still_wanted` (optional) runs at most once, before `done`, on the thread that
  // leads the search's round, without the lock: a non-OK status (the caller gave up:
  // cancelled, or past its deadline while queued) answers it at once, without searching.
  // Neither may throw. Thread-safe.
  using Done = absl::AnyInvocable<void(absl::StatusOr<Results>) &&>;
  using StillWanted = absl::AnyInvocable<absl::Status() const>;
  void Submit(const Catalogue& catalogue, const float* vectors,
              std::span<const Catalogue::Query> queries, Done done,
              StillWanted still_wanted = nullptr);

  // Combined searches run and the queries they searched so far, and the searches
  // answered without searching (abandoned by their callers), for tests and status.
  struct Stats {
    int64_t searches = 0;
    int64_t queries = 0;
    int64_t largest_batch = 0;
    int64_t abandoned = 0;
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
    Done done;
    StillWanted still_wanted;
    absl::StatusOr<Results> result = Results{};
    bool abandoned = false;  // answered by still_wanted's status, not searched
  };

  // Removes from the queue the searches of the next round: the oldest one and, within the
  // query limit, every other of its catalogue (and largest k, unless it is exact).
  std::vector<std::unique_ptr<Pending>> TakeRound();
  // Searches `round` (one Catalogue::Search when they can share it) into their results.
  static void Run(std::span<Pending* const> round);
  // With `lock` held and a round counted in running_: runs rounds while searches wait
  // (at most `max_rounds`, -1 = no limit), answering them without the lock; returns
  // with `lock` held.
  void LeadRounds(std::unique_lock<std::mutex>& lock, int max_rounds);
  void BackgroundLoop();

  const int max_queries_;
  const int max_rounds_;
  const std::function<void()> before_round_;
  const absl::Duration hand_off_above_;
  mutable std::mutex mu_;
  std::condition_variable work_;  // a search queued, or stopping
  std::deque<std::unique_ptr<Pending>> waiting_;  // guarded by mu_
  int running_ = 0;       // guarded by mu_: rounds being searched
  bool stopping_ = false;  // guarded by mu_
  absl::Duration round_time_;  // guarded by mu_: moving average
  Stats stats_;            // guarded by mu_
  std::vector<std::thread> background_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_SEARCH_BATCHER_H_
