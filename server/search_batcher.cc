#include "server/search_batcher.h"

#include <algorithm>
#include <utility>

namespace twotower {

absl::StatusOr<SearchBatcher::Results> SearchBatcher::Search(
    const Catalogue& catalogue, const float* vectors, std::span<const Catalogue::Query> queries) {
  int max_k = 0;
  for (const Catalogue::Query& query : queries) max_k = std::max(max_k, query.k);
  Pending me{&catalogue, max_k, vectors, queries, Results{}};
  std::unique_lock lock(mu_);
  waiting_.push_back(&me);
  while (true) {
    // A caller already taken into a round only waits for it; one still queued leads when
    // a round is free (its own Pending keeps the queue non-empty).
    changed_.wait(lock, [&] { return me.done || (!me.taken && running_ < max_rounds_); });
    if (me.done) return std::move(me.result);
    // Lead a round: the oldest waiting search and its companions (possibly not this
    // caller, if older searches of another catalogue or k wait; then the loop goes on).
    ++running_;
    const std::vector<Pending*> round = TakeRound();
    lock.unlock();
    try {
      if (before_round_) before_round_();
      Run(round);
    } catch (...) {  // e.g. bad_alloc: every caller of the round must still be released
      for (Pending* pending : round) pending->result = absl::InternalError("index search failed");
    }
    lock.lock();
    int64_t answered = 0;
    for (Pending* pending : round) {
      pending->done = true;
      answered += static_cast<int64_t>(pending->queries.size());
    }
    ++stats_.searches;
    stats_.queries += answered;
    stats_.largest_batch = std::max(stats_.largest_batch, answered);
    --running_;
    changed_.notify_all();
  }
}

std::vector<SearchBatcher::Pending*> SearchBatcher::TakeRound() {
  std::vector<Pending*> round{waiting_.front()};
  waiting_.pop_front();
  round[0]->taken = true;
  size_t queries = round[0]->queries.size();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    Pending* pending = *it;
    // Different k only on an exact catalogue, whose answers do not depend on the k they
    // are searched with (an ANN index's search depth follows k).
    if (pending->catalogue == round[0]->catalogue &&
        (pending->max_k == round[0]->max_k || round[0]->catalogue->exact()) &&
        queries + pending->queries.size() <= static_cast<size_t>(max_queries_)) {
      queries += pending->queries.size();
      pending->taken = true;
      round.push_back(pending);
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
