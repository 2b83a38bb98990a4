#include "server/retrieval_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "model/tower.h"
#include "server/grpc_status.h"
#include <grpcpp/support/proto_buffer_reader.h>

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

// One RPC. Its reactor is itself: gRPC calls OnDone once it is done with the call (the
// answer written to the connection, or the call cancelled), and only then are the call's
// counts released and its memory freed, so an answer a client does not read stays
// counted against max_in_flight and max_response_bytes.
class RetrievalService::Call final : public grpc::ServerUnaryReactor {
 public:
  Call(ServerMetrics* metrics, std::atomic<int>* calls, std::atomic<int64_t>* response_bytes,
       grpc::CallbackServerContext* context, grpc::ByteBuffer* response, bool batch)
      : in_flight(metrics),
        retrieval_calls(calls),
        response_bytes_(response_bytes),
        context(context),
        response_buffer(response),
        batch(batch) {}
  ~Call() override { response_bytes_->fetch_sub(reserved_bytes_); }

  void OnDone() override { std::unique_ptr<Call> self(this); }  // owned by gRPC until now
  void OnCancel() override {}  // a queued search checks IsCancelled (StillWanted)

  // Holds `bytes` of the response budget (replacing what it held) and returns the
  // budget's total in use, this call's share included.
  int64_t Reserve(int64_t bytes) {
    const int64_t total = response_bytes_->fetch_add(bytes - reserved_bytes_) + bytes - reserved_bytes_;
    reserved_bytes_ = bytes;
    return total;
  }
  int64_t reserved_bytes() const { return reserved_bytes_; }

  const ServerMetrics::InFlightCall in_flight;
  const ScopedCount retrieval_calls;  // for --max_in_flight

 private:
  std::atomic<int64_t>* const response_bytes_;
  int64_t reserved_bytes_ = 0;

 public:
  grpc::CallbackServerContext* const context;
  grpc::ByteBuffer* const response_buffer;  // gRPC's; the serialized answer goes here
  const bool batch;                         // BatchRetrieve
  const absl::Time start = absl::Now();
  absl::Time prepared;  // when the user vectors were ready (for the metrics)
  // The parsed request and the response messages (freed once the answer is serialized).
  v1::RetrieveRequest single_request;
  v1::BatchRetrieveRequest batch_request;
  v1::RetrieveResponse single_response;
  v1::BatchRetrieveResponse batch_response;
  std::vector<const v1::RetrieveRequest*> requests;
  std::vector<v1::RetrieveResponse*> responses;  // one per request
  int64_t request_bytes = 0;                     // serialized
  // The model the call reads (taken before Admit), then set by Prepare.
  std::shared_ptr<const Snapshot> snapshot;
  std::vector<bool> user_known;
  std::vector<Catalogue::Query> queries;
  // Per query (deque: stable addresses): exclude_item_ids plus the user's history.
  std::deque<google::protobuf::RepeatedPtrField<std::string>> excluded;
  // Per query: the catalogue rows of a known user's training items (the bundle's seen sets).
  std::deque<std::vector<int32_t>> seen;
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
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  return Accept(context, *request, response, /*batch=*/false);
}

grpc::ServerUnaryReactor* RetrievalService::BatchRetrieve(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request,
                                                          grpc::ByteBuffer* response) {
  return Accept(context, *request, response, /*batch=*/true);
}

grpc::ServerUnaryReactor* RetrievalService::Accept(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer& request,
                                                   grpc::ByteBuffer* response, bool batch) {
  auto call = std::make_unique<Call>(metrics_, &in_flight_, &response_bytes_, context, response, batch);
  grpc::ServerUnaryReactor* const reactor = call.get();
  Start(std::move(call), request);
  return reactor;
}

absl::Status RetrievalService::Admit(Call& call) {
  // This call is counted already: refused when others make max_in_flight.
  if (options_.max_in_flight > 0 && in_flight_.load() > options_.max_in_flight) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "more than ", options_.max_in_flight, " Retrieval calls in progress; retry later"));
  }
  // No request returns more results than the catalogue holds.
  const int64_t items = call.snapshot == nullptr ? 0 : call.snapshot->catalogue->size();
  int64_t results = 0;
  for (const v1::RetrieveRequest* request : call.requests) {
    results += std::min<int64_t>(std::clamp(request->k(), 0, options_.max_k), items);
  }
  // The parsed request and its exclusions merged with the history live as long as the
  // call: they count too.
  const int64_t wanted = results * kReservedBytesPerResult + 3 * call.request_bytes;
  const int64_t total = call.Reserve(wanted);
  if (total > options_.max_response_bytes && total > wanted) {  // others hold some of it
    call.Reserve(0);
    return absl::ResourceExhaustedError(absl::StrCat(
        "answers in progress hold the server's response budget (", options_.max_response_bytes,
        " bytes); retry later"));
  }
  return absl::OkStatus();
}

void RetrievalService::Start(std::unique_ptr<Call> call, const grpc::ByteBuffer& request) {
  // ProtoBufferReader only reads the buffer; its constructor takes it non-const.
  grpc::ProtoBufferReader reader(const_cast<grpc::ByteBuffer*>(&request));
  bool parsed = false;
  try {
    parsed = call->batch ? call->batch_request.ParseFromZeroCopyStream(&reader)
                         : call->single_request.ParseFromZeroCopyStream(&reader);
  } catch (...) {  // bad_alloc: refused like a request that does not parse
  }
  if (!parsed) {
    const absl::Status invalid = absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", call->batch ? "BatchRetrieveRequest" : "RetrieveRequest",
        " (malformed bytes, or a string field that is not UTF-8)"));
    Finish(std::move(call), invalid);
    return;
  }
  if (call->batch) {
    const v1::BatchRetrieveRequest& batch = call->batch_request;
    if (batch.requests_size() > options_.max_batch) {
      Finish(std::move(call), absl::InvalidArgumentError(
                                  absl::StrCat("a batch holds at most ", options_.max_batch,
                                               " requests, got ", batch.requests_size())));
      return;
    }
    call->requests.assign(batch.requests().pointer_begin(), batch.requests().pointer_end());
    for (int i = 0; i < batch.requests_size(); ++i) {
      call->responses.push_back(call->batch_response.add_responses());
    }
  } else {
    call->requests = {&call->single_request};
    call->responses = {&call->single_response};
  }
  call->snapshot = snapshots_->Get();
  call->request_bytes = static_cast<int64_t>(request.Length());
  absl::Status status = Admit(*call);
  if (status.ok()) {
    try {
      status = Prepare(*call);
    } catch (...) {  // bad_alloc: answered, not left to gRPC (which would say UNIMPLEMENTED)
      status = absl::InternalError("cannot prepare the search");
    }
  }
  if (!status.ok() || call->queries.empty()) {
    Finish(std::move(call), status);
    return;
  }
  call->prepared = absl::Now();
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

void RetrievalService::Finish(std::unique_ptr<Call> call, absl::Status status) const {
  if (status.ok()) {
    try {
      bool own_buffer = false;
      grpc::Status serialized =
          call->batch ? grpc::SerializationTraits<v1::BatchRetrieveResponse>::Serialize(
                            call->batch_response, call->response_buffer, &own_buffer)
                      : grpc::SerializationTraits<v1::RetrieveResponse>::Serialize(
                            call->single_response, call->response_buffer, &own_buffer);
      if (!serialized.ok()) status = absl::InternalError("cannot serialize the response");
    } catch (...) {  // bad_alloc
      status = absl::InternalError("cannot serialize the response");
    }
  }
  const absl::Time now = absl::Now();
  ServerMetrics::Call record;
  record.batch = call->batch;
  record.code = status.code();
  record.queries = static_cast<int64_t>(call->requests.size());
  record.total = now - call->start;
  if (call->prepared != absl::Time()) {
    record.tower = call->prepared - call->start;
    record.search = now - call->prepared;
  }
  metrics_->RecordRequest(record);
  if (!call->batch && status.ok()) metrics_->RecordRetrieveLatency(record.total);
  // From here until OnDone the call holds the serialized answer only.
  call->Reserve(status.ok() ? static_cast<int64_t>(call->response_buffer->Length()) : 0);
  // Swapped out, not cleared: Clear keeps the memory of repeated fields for reuse.
  std::vector<Catalogue::Query>().swap(call->queries);
  std::deque<google::protobuf::RepeatedPtrField<std::string>>().swap(call->excluded);
  std::vector<float>().swap(call->vectors);
  call->requests.clear();
  call->responses.clear();
  v1::BatchRetrieveResponse().Swap(&call->batch_response);
  v1::RetrieveResponse().Swap(&call->single_response);
  v1::BatchRetrieveRequest().Swap(&call->batch_request);
  v1::RetrieveRequest().Swap(&call->single_request);
  call->snapshot.reset();
  Call* const reactor = call.release();  // gRPC owns it until OnDone
  reactor->Finish(ToGrpcStatus(status));
}

absl::Status RetrievalService::Prepare(Call& call) const {
  const std::span<const v1::RetrieveRequest* const> requests = call.requests;
  const bool batch = call.batch;
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
  int64_t filters = 0, filter_values = 0;
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
    filters += request.filters_size();
    for (const v1::ItemFilter& filter : request.filters()) filter_values += filter.any_of_size();
    if (filters > options_.max_filters || filter_values > options_.max_filter_values) {
      return InRequest(absl::InvalidArgumentError(absl::StrCat(
                           "a call may hold at most ", options_.max_filters, " filters with ",
                           options_.max_filter_values, " any_of values in all (summed over a "
                           "batch's requests); got ", filters, " with ", filter_values,
                           " so far")),
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
    const google::protobuf::RepeatedPtrField<std::string>* exclude = &request.exclude_item_ids();
    std::span<const int32_t> seen;
    if (!request.include_history_items()) {
      google::protobuf::RepeatedPtrField<std::string>& merged = call.excluded.emplace_back(request.exclude_item_ids());
      AppendHistoryItems(*snapshot, request, users, users.size() - 1, &merged);
      exclude = &merged;
      std::vector<int32_t>& rows = call.seen.emplace_back();
      AppendSeenRows(*snapshot, request, &rows);
      seen = rows;
    }
    queries[i] = {request.k(), exclude, &request.filters(), seen};
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
      item->set_item_id(result.id.data(), result.id.size());
      item->set_score(result.score);
    }
    response.set_model_version(snapshot.model_version);
    response.set_user_known(call.user_known[i]);
  }
}

}  // namespace twotower
