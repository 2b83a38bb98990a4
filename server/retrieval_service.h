// The online Retrieval API (proto/twotower/v1/retrieval.proto) on gRPC's callback API:
// request -> user tower input -> user vector -> item index top-k. Each call reads one
// Snapshot for its whole life, so an answer never mixes two models. No thread waits for
// a search: a call's search is handed to the SearchBatcher with a callback that answers
// it, on whichever thread runs its round (the synchronous API parked a thread per call
// and woke it per answer; on 2 cores that handoff left cores idle under load).
#ifndef TWOTOWER_SERVER_RETRIEVAL_SERVICE_H_
#define TWOTOWER_SERVER_RETRIEVAL_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <span>

#include "server/search_batcher.h"
#include "server/server_metrics.h"
#include "server/snapshot.h"
#include "twotower/v1/retrieval.grpc.pb.h"

namespace twotower {

struct RetrievalOptions {
  // Largest k a request may ask for (the index over-fetches k + excluded rows per query).
  int max_k = 1000;
  // Most requests in one BatchRetrieve.
  int max_batch = 1024;
  // Most exclude_item_ids in one request: the index over-fetches by the exclusions, so
  // this bounds the work and memory a request can cause.
  int max_exclude = 10000;
  // Most queries concurrent calls combine into one index search (see SearchBatcher);
  // 1 = every call searches on its own.
  int search_batch = 64;
  // Combined searches that may run at once (typically one per core).
  int search_rounds = 2;
  // Rounds longer than this (on average) run on background threads (SearchBatcher).
  absl::Duration search_hand_off = SearchBatcher::kHandOffAbove;
  // Most Retrieval calls in progress at once; beyond it a call fails at once with
  // RESOURCE_EXHAUSTED (0 = no limit).
  int max_in_flight = 0;
};

class RetrievalService final : public v1::Retrieval::CallbackService {
 public:
  // `snapshots` and `metrics` must outlive the service.
  RetrievalService(const SnapshotHolder* snapshots, ServerMetrics* metrics,
                   RetrievalOptions options);

  // Errors: INVALID_ARGUMENT (k outside 1..max_k, more than max_exclude exclusions, no
  // user id nor features, an unknown feature, a value of the wrong type or out of range,
  // a filter on an unknown or numeric item feature), UNAVAILABLE (no model
  // loaded), RESOURCE_EXHAUSTED (max_in_flight calls already in progress),
  // DEADLINE_EXCEEDED / CANCELLED (checked before the search).
  grpc::ServerUnaryReactor* Retrieve(grpc::CallbackServerContext* context,
                                     const v1::RetrieveRequest* request,
                                     v1::RetrieveResponse* response) override;
  // All requests are answered from one snapshot with one tower pass and one index
  // search; an invalid request fails the whole batch (its index is in the message).
  grpc::ServerUnaryReactor* BatchRetrieve(grpc::CallbackServerContext* context,
                                          const v1::BatchRetrieveRequest* request,
                                          v1::BatchRetrieveResponse* response) override;

  // Combined index searches so far (GetStatus reports them).
  SearchBatcher::Stats search_stats() const { return batcher_->stats(); }

 private:
  struct Call;  // one RPC, from its arrival to its answer

  // Validates the call, runs the user tower and submits its search, whose callback
  // answers it; answers it here on an error.
  void Start(std::unique_ptr<Call> call);
  // Validates and encodes every user, runs the user tower: the call's queries and vectors.
  absl::Status Prepare(Call& call) const;
  // The call's responses from its search results.
  static void Respond(Call& call, SearchBatcher::Results found);
  // Records the call in the metrics and sends its status (with its responses if OK).
  void Finish(std::unique_ptr<Call> call, const absl::Status& status) const;

  const SnapshotHolder* const snapshots_;
  ServerMetrics* const metrics_;
  const RetrievalOptions options_;
  // Retrieval calls in progress (Admin's are not). Before batcher_: it must outlive the
  // calls a destroyed batcher still answers.
  std::atomic<int> in_flight_{0};
  const std::unique_ptr<SearchBatcher> batcher_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_RETRIEVAL_SERVICE_H_
