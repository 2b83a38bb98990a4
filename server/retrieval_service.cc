#include "server/retrieval_service.h"

#include <cmath>
#include <optional>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "model/tower.h"
#include "server/grpc_status.h"

namespace twotower {

namespace {

// Prefixes a per-request error with the request's position in a batch.
absl::Status InRequest(const absl::Status& status, bool batch, size_t i) {
  if (!batch || status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("requests[", i, "]: ", status.message()));
}

}  // namespace

RetrievalService::RetrievalService(const SnapshotHolder* snapshots, ServerMetrics* metrics,
                                   RetrievalOptions options)
    : snapshots_(snapshots),
      metrics_(metrics),
      options_(options),
      batcher_(std::make_unique<SearchBatcher>(options.search_batch, options.search_rounds)) {}

grpc::Status RetrievalService::Retrieve(grpc::ServerContext* context,
                                        const v1::RetrieveRequest* request,
                                        v1::RetrieveResponse* response) {
  const ServerMetrics::InFlightCall in_flight(metrics_);
  const absl::Time start = absl::Now();
  const v1::RetrieveRequest* const requests[] = {request};
  v1::RetrieveResponse* const responses[] = {response};
  const absl::Status status = Answer(*context, requests, responses, /*batch=*/false);
  metrics_->RecordRequest(status.ok());
  if (status.ok()) metrics_->RecordRetrieveLatency(absl::Now() - start);
  return ToGrpcStatus(status);
}

grpc::Status RetrievalService::BatchRetrieve(grpc::ServerContext* context,
                                             const v1::BatchRetrieveRequest* request,
                                             v1::BatchRetrieveResponse* response) {
  const ServerMetrics::InFlightCall in_flight(metrics_);
  absl::Status status;
  if (request->requests_size() > options_.max_batch) {
    status = absl::InvalidArgumentError(absl::StrCat("a batch holds at most ",
                                                     options_.max_batch, " requests, got ",
                                                     request->requests_size()));
  } else {
    std::vector<v1::RetrieveResponse*> responses;
    responses.reserve(request->requests_size());
    for (int i = 0; i < request->requests_size(); ++i) {
      responses.push_back(response->add_responses());
    }
    const std::vector<const v1::RetrieveRequest*> requests(request->requests().pointer_begin(),
                                                           request->requests().pointer_end());
    status = Answer(*context, requests, responses, /*batch=*/true);
    if (!status.ok()) response->clear_responses();
  }
  metrics_->RecordRequest(status.ok());
  return ToGrpcStatus(status);
}

absl::Status RetrievalService::Answer(const grpc::ServerContext& context,
                                      std::span<const v1::RetrieveRequest* const> requests,
                                      std::span<v1::RetrieveResponse* const> responses,
                                      bool batch) const {
  const std::shared_ptr<const Snapshot> snapshot = snapshots_->Get();
  if (snapshot == nullptr) return absl::UnavailableError("no model loaded yet");
  const size_t n = requests.size();
  if (n == 0) return absl::OkStatus();

  // Validate and encode every user before any tower or index work.
  EncodedTable users = snapshot->bundle->user.encoder.NewTable();
  std::vector<bool> user_known(n);
  std::vector<Catalogue::Query> queries(n);
  for (size_t i = 0; i < n; ++i) {
    const v1::RetrieveRequest& request = *requests[i];
    if (request.k() < 1 || request.k() > options_.max_k) {
      return InRequest(absl::InvalidArgumentError(absl::StrCat(
                           "k must be in 1..", options_.max_k, ", got ", request.k())),
                       batch, i);
    }
    if (request.exclude_item_ids_size() > options_.max_exclude) {
      return InRequest(absl::InvalidArgumentError(absl::StrCat(
                           "at most ", options_.max_exclude, " exclude_item_ids, got ",
                           request.exclude_item_ids_size())),
                       batch, i);
    }
    if (absl::Status s = snapshot->catalogue->CheckFilters(request.filters()); !s.ok()) {
      return InRequest(s, batch, i);
    }
    bool known = false;
    if (absl::Status s = EncodeRequestUser(*snapshot, request, &users, &known); !s.ok()) {
      return InRequest(s, batch, i);
    }
    user_known[i] = known;
    // Unknown exclude ids cannot be returned anyway, so they are ignored rather than an
    // error: callers pass "already seen" lists that may hold items since removed.
    queries[i] = {request.k(), &request.exclude_item_ids(), &request.filters()};
  }

  const TowerModel& user_model = snapshot->bundle->user;
  std::vector<float> vectors(n * static_cast<size_t>(user_model.tower.output_dim()));
  TowerActivations activations;
  user_model.tower.Forward(users, &activations, vectors.data());
  // Extreme (finite) numeric inputs can overflow float inside the tower.
  for (size_t i = 0; i < n; ++i) {
    const float* v = vectors.data() + i * user_model.tower.output_dim();
    for (int k = 0; k < user_model.tower.output_dim(); ++k) {
      if (!std::isfinite(v[k])) {
        return InRequest(absl::InvalidArgumentError(
                             "user features out of range: the user vector is not finite"),
                         batch, i);
      }
    }
  }

  // The search is the expensive part; skip it for callers that already gave up.
  if (context.IsCancelled()) return absl::CancelledError("request cancelled by the client");
  if (context.deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError("deadline exceeded before the index search");
  }

  // One search for the whole batch (see Catalogue::Search): unrestricted queries go to
  // the index together at the largest k; exclusions and filters are applied inside it.
  // Concurrent calls on the same catalogue share that search (SearchBatcher).
  absl::StatusOr<std::vector<std::vector<Catalogue::Result>>> found =
      batcher_->Search(*snapshot->catalogue, vectors.data(), queries);
  if (!found.ok()) return found.status();
  for (size_t i = 0; i < n; ++i) {
    v1::RetrieveResponse& response = *responses[i];
    const std::vector<Catalogue::Result>& items = (*found)[i];
    response.mutable_items()->Reserve(static_cast<int>(items.size()));
    for (const Catalogue::Result& result : items) {
      v1::ScoredItem* item = response.add_items();
      item->set_item_id(*result.id);
      item->set_score(result.score);
    }
    response.set_model_version(snapshot->model_version);
    response.set_user_known(user_known[i]);
  }
  return absl::OkStatus();
}

}  // namespace twotower
