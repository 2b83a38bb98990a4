#include "server/search_batcher.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "server/server_metrics.h"

namespace twotower {

SearchBatcher::SearchBatcher(int max_queries, int max_rounds, std::function<void()> before_round,
                             absl::Duration hand_off_above)
    : max_queries_(max_queries),
      max_rounds_(max_rounds),
      before_round_(std::move(before_round)),
      hand_off_above_(hand_off_above) {
  for (int i = 0; i < max_rounds_; ++i) background_.emplace_back([this] { BackgroundLoop(); });
}

SearchBatcher::~SearchBatcher() {
  {
    const std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& thread : background_) thread.join();
}

void SearchBatcher::Submit(const Catalogue& catalogue, const float* vectors,
                           std::span<const Catalogue::Query> queries, Done done,
                           StillWanted still_wanted) {
  int max_k = 0;
  for (const Catalogue::Query& query : queries) max_k = std::max(max_k, query.k);
  std::unique_ptr<Pending> pending;
  try {
    pending = std::make_unique<Pending>();
  } catch (...) {  // bad_alloc: `done` is still ours to answer with
    std::move(done)(absl::InternalError("cannot queue the index search"));
    return;
  }
  pending->catalogue = &catalogue;
  pending->max_k = max_k;
  pending->vectors = vectors;
  pending->queries = queries;
  pending->done = std::move(done);
  pending->still_wanted = std::move(still_wanted);
  std::unique_lock lock(mu_);
  try {
    waiting_.push_back(std::move(pending));
  } catch (...) {  // bad_alloc: the queue is unchanged and `pending` still holds `done`
    lock.unlock();
    std::move(pending->done)(absl::InternalError("cannot queue the index search"));
    return;
  }
  // Nothing runs: lead it on this thread, at once. Short rounds: lead whenever a round is
  // free, and the next ones too while searches wait (no handoff at all).
  const bool hand_off = round_time_ > hand_off_above_;
  if (running_ == 0 || (!hand_off && running_ < max_rounds_)) {
    ++running_;
    LeadRounds(lock, hand_off ? 1 : -1);
    --running_;
  }
  // Searches wait: a background thread starts a round for them now, if a round is free
  // (else a running leader takes them when its round ends).
  if (!waiting_.empty() && running_ < max_rounds_) work_.notify_one();
}

void SearchBatcher::BackgroundLoop() {
  std::unique_lock lock(mu_);
  while (true) {
    work_.wait(lock, [this] {
      return stopping_ || (!waiting_.empty() && running_ < max_rounds_);
    });
    if (waiting_.empty()) return;  // stopping, nothing left to answer
    ++running_;
    LeadRounds(lock, /*max_rounds=*/-1);
    --running_;
  }
}

void SearchBatcher::LeadRounds(std::unique_lock<std::mutex>& lock, int max_rounds) {
  for (int rounds = 0; !waiting_.empty() && rounds != max_rounds; ++rounds) {
    {
      // The round's searches (and what their callbacks own, e.g. a model snapshot) are
      // freed at the end of this block, before the lock is taken again.
      std::vector<std::unique_ptr<Pending>> round;
      try {
        round = TakeRound();
      } catch (...) {  // bad_alloc before the queue changed: the next leader takes them
        return;
      }
      lock.unlock();
      const absl::Time start = absl::Now();
      int64_t searched_queries = 0, abandoned = 0;
      try {
        // Searches whose callers gave up while queued are answered without a search.
        std::vector<Pending*> searched;
        searched.reserve(round.size());
        for (const std::unique_ptr<Pending>& pending : round) {
          if (pending->still_wanted) {
            if (absl::Status wanted = pending->still_wanted(); !wanted.ok()) {
              pending->result = std::move(wanted);
              pending->abandoned = true;
              ++abandoned;
              continue;
            }
          }
          searched.push_back(pending.get());
          searched_queries += static_cast<int64_t>(pending->queries.size());
        }
        if (!searched.empty()) {
          if (before_round_) before_round_();
          Run(searched);
        }
      } catch (...) {  // e.g. bad_alloc: every search of the round must still be answered
        for (const std::unique_ptr<Pending>& pending : round) {
          if (!pending->abandoned) pending->result = absl::InternalError("index search failed");
        }
      }
      const absl::Duration took = absl::Now() - start;
      lock.lock();
      // Before the answers, so a caller that has its answer sees its round counted.
      stats_.abandoned += abandoned;
      if (searched_queries > 0) {
        round_time_ = 0.75 * round_time_ + 0.25 * took;
        ++stats_.searches;
        stats_.queries += searched_queries;
        stats_.largest_batch = std::max(stats_.largest_batch, searched_queries);
      }
      lock.unlock();
      for (const std::unique_ptr<Pending>& pending : round) {
        // `done` must not throw; if one does anyway, the others are still answered and
        // this thread (maybe a background one) goes on.
        try {
          std::move(pending->done)(std::move(pending->result));
        } catch (...) {
          LogEvent("error", "a search's answer callback threw; its call may go unanswered");
        }
      }
    }
    lock.lock();
  }
}

std::vector<std::unique_ptr<SearchBatcher::Pending>> SearchBatcher::TakeRound() {
  std::vector<std::unique_ptr<Pending>> round;
  round.reserve(waiting_.size());  // may throw, but before the queue changes
  round.push_back(std::move(waiting_.front()));
  waiting_.pop_front();
  size_t queries = round[0]->queries.size();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    const Pending* pending = it->get();
    // Different k only on an exact catalogue, whose answers do not depend on the k they
    // are searched with (an ANN index's search depth follows k).
    if (pending->catalogue == round[0]->catalogue &&
        (pending->max_k == round[0]->max_k || round[0]->catalogue->exact()) &&
        queries + pending->queries.size() <= static_cast<size_t>(max_queries_)) {
      queries += pending->queries.size();
      round.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  return round;
}

void SearchBatcher::Run(std::span<Pending* const> round) {
  const Catalogue& catalogue = *round[0]->catalogue;
  if (round.size() == 1) {
    round[0]->result = catalogue.Search(round[0]->vectors, round[0]->queries);
    return;
  }
  const size_t dim = static_cast<size_t>(catalogue.dim());
  std::vector<float> vectors;
  std::vector<Catalogue::Query> queries;
  for (const Pending* pending : round) {
    vectors.insert(vectors.end(), pending->vectors, pending->vectors + pending->queries.size() * dim);
    queries.insert(queries.end(), pending->queries.begin(), pending->queries.end());
  }
  absl::StatusOr<Results> combined = catalogue.Search(vectors.data(), queries);
  if (!combined.ok()) {  // find whose query it was: everyone else still gets an answer
    for (Pending* pending : round) pending->result = catalogue.Search(pending->vectors, pending->queries);
    return;
  }
  size_t next = 0;
  for (Pending* pending : round) {
    Results mine(pending->queries.size());
    for (std::vector<Catalogue::Result>& hits : mine) hits = std::move((*combined)[next++]);
    pending->result = std::move(mine);
  }
}

int SearchBatcher::waiting() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(waiting_.size());
}

SearchBatcher::Stats SearchBatcher::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace twotower
