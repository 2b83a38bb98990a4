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
  // Most item filters in one call, summed over a batch's requests (each filtered request
  // costs a bitmap and a pass over the catalogue), and most any_of values over them.
  int max_filters = 64;
  int max_filter_values = 4096;
  // Most queries concurrent calls combine into one index search (see SearchBatcher);
  // 1 = every call searches on its own.
  int search_batch = 64;
  // Combined searches that may run at once (typically one per core).
  int search_rounds = 2;
  // Rounds longer than this (on average) run on background threads (SearchBatcher).
  absl::Duration search_hand_off = SearchBatcher::kHandOffAbove;
  // Most Retrieval calls in progress at once; beyond it a call fails at once with
  // RESOURCE_EXHAUSTED (0 = no limit). A call counts until gRPC is done with it: an
  // answer a client does not read still counts.
  int max_in_flight = 256;
  // Budget for calls in progress and answers not yet fully sent, in bytes: a call
  // reserves kReservedBytesPerResult per result it may return plus three times its request's
  // size when it starts, and holds the size of its serialized answer once built, until
  // gRPC is done with it. A call that would
  // go past the budget fails at once with RESOURCE_EXHAUSTED, unless no other call holds
  // any of it (so one call of any allowed size is always served).
  int64_t max_response_bytes = int64_t{256} << 20;
};

class RetrievalService final
    : public v1::Retrieval::WithRawCallbackMethod_Retrieve<
          v1::Retrieval::WithRawCallbackMethod_BatchRetrieve<v1::Retrieval::Service>> {
 public:
  // What a call reserves of max_response_bytes per result it may return, before its
  // answer exists: above the memory of one result as a message (object, id string) for
  // ids up to ~100 bytes.
  static constexpr int64_t kReservedBytesPerResult = 256;

  // `snapshots` and `metrics` must outlive the service.
  RetrievalService(const SnapshotHolder* snapshots, ServerMetrics* metrics,
                   RetrievalOptions options);

  // Requests are parsed here, not by gRPC, so that bytes that are not a valid request
  // (malformed, or a string field that is not UTF-8) are answered INVALID_ARGUMENT and
  // counted like any other failed call.
  //
  // Errors: INVALID_ARGUMENT (undecodable request, k outside 1..max_k, more than
  // max_exclude exclusions, more than max_filters filters or max_filter_values values,
  // no user id nor features, an unknown feature, a value of the wrong type or out of
  // range, a filter on an unknown or numeric item feature), UNAVAILABLE (no model
  // loaded), RESOURCE_EXHAUSTED (max_in_flight calls or max_response_bytes already in
  // use), DEADLINE_EXCEEDED / CANCELLED (checked before the search).
  grpc::ServerUnaryReactor* Retrieve(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  // All requests are answered from one snapshot with one tower pass and one index
  // search; an invalid request fails the whole batch (its index is in the message).
  grpc::ServerUnaryReactor* BatchRetrieve(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

  // Combined index searches so far (GetStatus reports them).
  SearchBatcher::Stats search_stats() const { return batcher_->stats(); }
  // Retrieval calls gRPC is not done with, and the answer bytes they hold.
  int calls_in_flight() const { return in_flight_.load(); }
  int64_t response_bytes_in_flight() const { return response_bytes_.load(); }

 private:
  class Call;  // one RPC, from its arrival until gRPC is done with it

  // A new call of Retrieve or BatchRetrieve (`batch`), started; returns its reactor.
  grpc::ServerUnaryReactor* Accept(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer& request, grpc::ByteBuffer* response,
                                   bool batch);
  // Parses, validates, runs the user tower and submits the call's search, whose callback
  // answers it; answers it here on an error.
  void Start(std::unique_ptr<Call> call, const grpc::ByteBuffer& request);
  // Validates and encodes every user, runs the user tower: the call's queries and vectors.
  absl::Status Prepare(Call& call) const;
  // Admits the call (its snapshot taken) against max_in_flight and max_response_bytes.
  absl::Status Admit(Call& call);
  // The call's responses from its search results.
  static void Respond(Call& call, SearchBatcher::Results found);
  // Records the call in the metrics, serializes its answer and sends its status; gRPC
  // then owns the call until it is done with it.
  void Finish(std::unique_ptr<Call> call, absl::Status status) const;

  const SnapshotHolder* const snapshots_;
  ServerMetrics* const metrics_;
  const RetrievalOptions options_;
  // Retrieval calls gRPC is not done with (Admin's are not counted), and the bytes of
  // max_response_bytes they hold. Before batcher_: they must outlive the calls a
  // destroyed batcher still answers.
  std::atomic<int> in_flight_{0};
  std::atomic<int64_t> response_bytes_{0};
  const std::unique_ptr<SearchBatcher> batcher_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_RETRIEVAL_SERVICE_H_
