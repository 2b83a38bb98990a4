// The online Retrieval API (proto/twotower/v1/retrieval.proto) on the synchronous gRPC
// server: request -> user tower input -> user vector -> item index top-k. Each call reads
// one Snapshot for its whole life, so an answer never mixes two models.
#ifndef TWOTOWER_SERVER_RETRIEVAL_SERVICE_H_
#define TWOTOWER_SERVER_RETRIEVAL_SERVICE_H_

#include <grpcpp/grpcpp.h>

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
};

class RetrievalService final : public v1::Retrieval::Service {
 public:
  // `snapshots` and `metrics` must outlive the service.
  RetrievalService(const SnapshotHolder* snapshots, ServerMetrics* metrics,
                   RetrievalOptions options);

  // Errors: INVALID_ARGUMENT (k outside 1..max_k, more than max_exclude exclusions, no
  // user id nor features, an unknown feature, a value of the wrong type or out of range,
  // a filter on an unknown or numeric item feature), UNAVAILABLE (no model
  // loaded), DEADLINE_EXCEEDED / CANCELLED (checked before the search).
  grpc::Status Retrieve(grpc::ServerContext* context, const v1::RetrieveRequest* request,
                        v1::RetrieveResponse* response) override;
  // All requests are answered from one snapshot with one tower pass and one index
  // search; an invalid request fails the whole batch (its index is in the message).
  grpc::Status BatchRetrieve(grpc::ServerContext* context,
                             const v1::BatchRetrieveRequest* request,
                             v1::BatchRetrieveResponse* response) override;

  // Combined index searches so far (GetStatus reports them).
  SearchBatcher::Stats search_stats() const { return batcher_->stats(); }

 private:
  // Answers requests[i] into responses[i]; `batch` only shapes error messages.
  absl::Status Answer(const grpc::ServerContext& context,
                      std::span<const v1::RetrieveRequest* const> requests,
                      std::span<v1::RetrieveResponse* const> responses, bool batch) const;

  const SnapshotHolder* const snapshots_;
  ServerMetrics* const metrics_;
  const RetrievalOptions options_;
  const std::unique_ptr<SearchBatcher> batcher_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_RETRIEVAL_SERVICE_H_
