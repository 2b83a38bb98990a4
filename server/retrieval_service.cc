#include "server/retrieval_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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

// OK while the caller still waits for the answer: the search is skipped for a call that
// was cancelled or is past its deadline (checked before it is queued and again when a
// round takes it).
absl::Status StillWanted(const grpc::CallbackServerContext& context) {
  if (context.IsCancelled()) return absl::CancelledError("request cancelled by the client");
  if (context.deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError("deadline exceeded before the index search");
  }
  return absl::OkStatus();
}

// Counts the objects alive (here, Retrieval calls in progress).
class ScopedCount {
 public:
  explicit ScopedCount(std::atomic<int>* count) : count_(count) { count_->fetch_add(1); }
  ~ScopedCount() { count_->fetch_sub(1); }
  ScopedCount(const ScopedCount&) = delete;
  ScopedCount& operator=(const ScopedCount&) = delete;

 private:
  std::atomic<int>* const count_;
};

}  // namespace

struct RetrievalService::Call {
  Call(ServerMetrics* metrics, std::atomic<int>* calls, grpc::CallbackServerContext* context)
      : in_flight(metrics),
        retrieval_calls(std::in_place, calls),
        context(context),
        reactor(context->DefaultReactor()) {}

  const ServerMetrics::InFlightCall in_flight;  // until the answer is sent
  // For --max_in_flight: released just before the answer is sent (a client that has its
  // answer may call again at once, and must not find its own last call counted).
  std::optional<ScopedCount> retrieval_calls;
  grpc::CallbackServerContext* const context;
  grpc::ServerUnaryReactor* const reactor;
  const absl::Time start = absl::Now();
  // BatchRetrieve's response (cleared on an error); null for Retrieve.
  v1::BatchRetrieveResponse* batch_response = nullptr;
  std::vector<const v1::RetrieveRequest*> requests;  // owned by gRPC until Finish
  std::vector<v1::RetrieveResponse*> responses;      // one per request, likewise
  // Set by Prepare.
  std::shared_ptr<const Snapshot> snapshot;
  std::vector<bool> user_known;
  std::vector<Catalogue::Query> queries;
  std::vector<float> vectors;  // the user vectors, one after another
};

RetrievalService::RetrievalService(const SnapshotHolder* snapshots, ServerMetrics* metrics,
                                   RetrievalOptions options)
    : snapshots_(snapshots),
      metrics_(metrics),
      options_(options),
      batcher_(std::make_unique<SearchBatcher>(options.search_batch, options.search_rounds,
                                               /*before_round=*/nullptr,
                                               options.search_hand_off)) {}

grpc::ServerUnaryReactor* RetrievalService::Retrieve(grpc::CallbackServerContext* context,
                                                     const v1::RetrieveRequest* request,
                                                     v1::RetrieveResponse* response) {
  auto call = std::make_unique<Call>(metrics_, &in_flight_, context);
  grpc::ServerUnaryReactor* const reactor = call->reactor;
  call->requests = {request};
  call->responses = {response};
  Start(std::move(call));
  return reactor;
}

grpc::ServerUnaryReactor* RetrievalService::BatchRetrieve(
    grpc::CallbackServerContext* context, const v1::BatchRetrieveRequest* request,
    v1::BatchRetrieveResponse* response) {
  auto call = std::make_unique<Call>(metrics_, &in_flight_, context);
  grpc::ServerUnaryReactor* const reactor = call->reactor;
  call->batch_response = response;
  if (request->requests_size() > options_.max_batch) {
    Finish(std::move(call), absl::InvalidArgumentError(
                                absl::StrCat("a batch holds at most ", options_.max_batch,
                                             " requests, got ", request->requests_size())));
    return reactor;
  }
  call->requests.assign(request->requests().pointer_begin(), request->requests().pointer_end());
  for (int i = 0; i < request->requests_size(); ++i) {
    call->responses.push_back(response->add_responses());
  }
  Start(std::move(call));
  return reactor;
}

void RetrievalService::Start(std::unique_ptr<Call> call) {
  // This call is counted already: refused when others make max_in_flight.
  if (options_.max_in_flight > 0 && in_flight_.load() > options_.max_in_flight) {
    Finish(std::move(call), absl::ResourceExhaustedError(absl::StrCat(
                                "more than ", options_.max_in_flight,
                                " Retrieval calls in progress; retry later")));
    return;
  }
  absl::Status status;
  try {
    status = Prepare(*call);
  } catch (...) {  // bad_alloc: answered, not left to gRPC (which would say UNIMPLEMENTED)
    status = absl::InternalError("cannot prepare the search");
  }
  if (!status.ok() || call->queries.empty()) {
    Finish(std::move(call), status);
    return;
  }
  // One search for the whole call (see Catalogue::Search): unrestricted queries go to
  // the index together at the largest k; exclusions and filters are applied inside it.
  // Concurrent calls on the same catalogue share that search (SearchBatcher). The call
  // (on the heap, owned by the callback) keeps the catalogue, vectors and queries alive.
  Call& c = *call;
  batcher_->Submit(*c.snapshot->catalogue, c.vectors.data(), c.queries,
                   [this, call = std::move(call)](
                       absl::StatusOr<SearchBatcher::Results> found) mutable {
                     absl::Status status = found.status();
                     if (status.ok()) {
                       try {
                         Respond(*call, *std::move(found));
                       } catch (...) {  // bad_alloc: the batcher's callbacks must not throw
                         status = absl::InternalError("cannot build the response");
                       }
                     }
                     Finish(std::move(call), status);
                   },
                   [context = c.context] { return StillWanted(*context); });
}

void RetrievalService::Finish(std::unique_ptr<Call> call, const absl::Status& status) const {
  metrics_->RecordRequest(status.ok());
  if (call->batch_response == nullptr) {
    if (status.ok()) metrics_->RecordRetrieveLatency(absl::Now() - call->start);
  } else if (!status.ok()) {
    call->batch_response->clear_responses();
  }
  call->retrieval_calls.reset();
  call->reactor->Finish(ToGrpcStatus(status));
  // `call` (and with it the metrics' in-flight gauge) goes after the answer, so a
  // draining shutdown that waits for the gauge to reach 0 does not start before the
  // answer is on its way.
}

absl::Status RetrievalService::Prepare(Call& call) const {
  const std::span<const v1::RetrieveRequest* const> requests = call.requests;
  const bool batch = call.batch_response != nullptr;
  call.snapshot = snapshots_->Get();
  if (call.snapshot == nullptr) return absl::UnavailableError("no model loaded yet");
  const Snapshot* const snapshot = call.snapshot.get();
  const size_t n = requests.size();
  if (n == 0) return absl::OkStatus();

  // Validate and encode every user before any tower or index work.
  EncodedTable users = snapshot->bundle->user.encoder.NewTable();
  std::vector<bool>& user_known = call.user_known;
  std::vector<Catalogue::Query>& queries = call.queries;
  user_known.resize(n);
  queries.resize(n);
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
  std::vector<float>& vectors = call.vectors;
  vectors.resize(n * static_cast<size_t>(user_model.tower.output_dim()));
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
  return StillWanted(*call.context);
}

void RetrievalService::Respond(Call& call, SearchBatcher::Results found) {
  const Snapshot& snapshot = *call.snapshot;
  for (size_t i = 0; i < call.responses.size(); ++i) {
    v1::RetrieveResponse& response = *call.responses[i];
    const std::vector<Catalogue::Result>& items = found[i];
    response.mutable_items()->Reserve(static_cast<int>(items.size()));
    for (const Catalogue::Result& result : items) {
      v1::ScoredItem* item = response.add_items();
      item->set_item_id(*result.id);
      item->set_score(result.score);
    }
    response.set_model_version(snapshot.model_version);
    response.set_user_known(call.user_known[i]);
  }
}

}  // namespace twotower
