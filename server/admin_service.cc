#include "server/admin_service.h"

#include <openssl/crypto.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

void ToProto(const IndexOptions& options, v1::IndexParams* params) {
  params->set_factory(options.factory);
  params->set_ef_search(options.ef_search);
  params->set_nprobe(options.nprobe);
  params->set_half_first_pass(options.half_first_pass);
}

std::string VersionOf(const std::shared_ptr<const Snapshot>& snapshot) {
  return snapshot == nullptr ? std::string("none") : snapshot->model_version;
}

// Appends a change to the snapshot's journal (none without --state_dir).
template <typename Request>
absl::Status Journal(const Snapshot& snapshot, const Request& request) {
  if (snapshot.journal == nullptr) return absl::OkStatus();
  absl::Status status = snapshot.journal->Append(request);
  if (!status.ok()) {
    LogEvent("warn", "item change refused: not journaled",
             {{"code", absl::StatusCodeToString(status.code())}, {"error", std::string(status.message())}});
  }
  return status;
}

}  // namespace

AdminService::AdminService(SnapshotHolder* snapshots, ServerMetrics* metrics, Options options)
    : snapshots_(snapshots), metrics_(metrics), options_(std::move(options)) {}

absl::Status AdminService::Authorize(const grpc::ServerContext& context) const {
  if (options_.token.empty()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("admin calls need \"authorization: Bearer <token>\"");
  }
  const std::string given(it->second.data(), it->second.size());
  // Compare digests: equal lengths, and the time taken says nothing about the token.
  const std::string expected = Sha256Hex("Bearer " + options_.token);
  const std::string actual = Sha256Hex(given);
  if (CRYPTO_memcmp(expected.data(), actual.data(), expected.size()) != 0) {
    return absl::PermissionDeniedError("wrong admin token");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> AdminService::AllowedBundlePath(const std::string& path) const {
  std::error_code error;
  const std::filesystem::path resolved = std::filesystem::canonical(path, error);
  if (error) return absl::NotFoundError(absl::StrCat("bundle ", path, ": ", error.message()));
  if (options_.bundle_root.empty()) return resolved.string();
  const std::filesystem::path root = std::filesystem::canonical(options_.bundle_root, error);
  if (error) return absl::FailedPreconditionError(absl::StrCat("--bundle_root ", options_.bundle_root, ": ", error.message()));
  const std::string inside = root.string() + "/";
  if (resolved.string().rfind(inside, 0) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("bundle ", path, " (", resolved.string(),
                                                    ") is outside --bundle_root ", root.string()));
  }
  return resolved.string();
}

void AdminService::RecordReload(const std::string& bundle_path, const absl::Status& outcome,
                                const std::string& model_version) {
  metrics_->RecordReload(outcome.ok());
  v1::ReloadOutcome last;
  last.set_bundle_path(bundle_path);
  last.set_swapped(outcome.ok());
  last.set_model_version(model_version);
  if (!outcome.ok()) last.set_error(Truncated(std::string(outcome.ToString()), kMaxStatusMessageBytes));
  last.set_finished_unix_seconds(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  absl::MutexLock lock(&last_reload_mu_);
  last_reload_ = std::move(last);
}

grpc::Status AdminService::ReloadModel(grpc::ServerContext* context,
                                       const v1::ReloadModelRequest* request,
                                       v1::ReloadModelResponse* response) {
  if (absl::Status s = Authorize(*context); !s.ok()) return ToGrpcStatus(s);
  const ServerMetrics::InFlightCall in_flight(metrics_);
  const std::string& path = request->bundle_path();
  if (path.empty()) {
    const absl::Status refused = absl::InvalidArgumentError("bundle_path is required");
    RecordReload(path, refused, "");
    return ToGrpcStatus(refused);
  }
  absl::StatusOr<std::string> allowed = AllowedBundlePath(path);
  if (!allowed.ok()) {
    RecordReload(path, allowed.status(), "");
    LogEvent("warn", "reload refused", {{"bundle", path}, {"error", std::string(allowed.status().message())}});
    return ToGrpcStatus(allowed.status());
  }
  absl::MutexLock lock(&mutation_mu_);
  const std::shared_ptr<const Snapshot> current = snapshots_->Get();
  // A reload changes the model, not how it is indexed: keep the operator's index choice
  // (an empty factory: whatever index the new bundle carries).
  const IndexOptions options = current != nullptr ? current->catalogue->requested_index_options() : IndexOptions{};
  LogEvent("info", "reloading model", {{"bundle", path}, {"current", VersionOf(current)}});
  absl::StatusOr<std::shared_ptr<const Snapshot>> next = LoadSnapshot(*allowed, options, options_.state_dir, options_.item_log_dir);
  if (!next.ok()) {
    LogEvent("warn", "reload failed, keeping the current model",
             {{"bundle", path},
              {"current", VersionOf(current)},
              {"code", absl::StatusCodeToString(next.status().code())},
              {"error", std::string(next.status().message())}});
    const absl::Status failed(
        next.status().code(), absl::StrCat("reload of ", path, " failed (still serving ",
                                           VersionOf(current), "): ", next.status().message()));
    RecordReload(path, failed, VersionOf(current));
    return ToGrpcStatus(failed);
  }
  const std::shared_ptr<const Snapshot> loaded = *next;
  // A caller that gave up, or soon will, is told the reload failed: keep that promise.
  const bool out_of_time = absl::FromChrono(context->deadline()) - absl::Now() < kReloadAnswerMargin;
  if (context->IsCancelled() || out_of_time) {
    const absl::Status late =
        out_of_time ? absl::DeadlineExceededError(
                          "reload loaded but not swapped: the call's deadline was (nearly) past")
                    : absl::CancelledError("reload loaded but not swapped: the call was cancelled");
    RecordReload(path, late, VersionOf(current));
    LogEvent("warn", "reload given up by the caller, keeping the current model",
             {{"bundle", path}, {"current", VersionOf(current)}});
    return ToGrpcStatus(late);
  }
  const std::shared_ptr<const Snapshot> previous = snapshots_->Swap(loaded);
  RecordReload(path, absl::OkStatus(), loaded->model_version);
  LogEvent(loaded->catalogue->index_ignores_bundle() ? "warn" : "info", "model reloaded",
           {{"version", loaded->model_version},
            {"previous", VersionOf(previous)},
            {"bundle", path},
            {"items", absl::StrCat(loaded->catalogue->size())},
            {"index", loaded->catalogue->index_note()},
            {"seconds", absl::StrCat(absl::ToDoubleSeconds(loaded->load_duration))}});
  response->set_model_version(loaded->model_version);
  response->set_previous_model_version(previous != nullptr ? previous->model_version : "");
  response->set_item_count(loaded->catalogue->size());
  response->set_load_seconds(absl::ToDoubleSeconds(loaded->load_duration));
  return grpc::Status::OK;
}

grpc::Status AdminService::RebuildIndex(grpc::ServerContext* context,
                                        const v1::RebuildIndexRequest* request,
                                        v1::RebuildIndexResponse* response) {
  if (absl::Status s = Authorize(*context); !s.ok()) return ToGrpcStatus(s);
  const ServerMetrics::InFlightCall in_flight(metrics_);
  const v1::IndexParams& params = request->params();
  if (params.ef_search() < 0 || params.nprobe() < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError("ef_search and nprobe must be >= 0"));
  }
  absl::MutexLock lock(&mutation_mu_);
  const std::shared_ptr<const Snapshot> current = snapshots_->Get();
  if (current == nullptr) return ToGrpcStatus(absl::UnavailableError("no model loaded yet"));
  IndexOptions options = current->catalogue->index_options();
  if (!params.factory().empty() && params.factory() != options.factory) {
    // Another kind or size of index: the old search settings may not fit it (an nprobe
    // above the new nlist); unless given, it starts from FAISS's defaults.
    options.factory = params.factory();
    options.ef_search = 0;
    options.nprobe = 0;
  }
  if (params.ef_search() > 0) options.ef_search = params.ef_search();
  if (params.nprobe() > 0) options.nprobe = params.nprobe();
  if (params.has_half_first_pass()) options.half_first_pass = params.half_first_pass();
  const absl::Time start = absl::Now();
  absl::StatusOr<std::shared_ptr<const Catalogue>> reindexed = current->catalogue->WithIndex(options);
  absl::StatusOr<std::shared_ptr<const Snapshot>> next =
      reindexed.ok() ? absl::StatusOr<std::shared_ptr<const Snapshot>>(WithCatalogue(*current, *reindexed))
                     : absl::StatusOr<std::shared_ptr<const Snapshot>>(reindexed.status());
  const absl::Duration build_time = absl::Now() - start;
  if (!next.ok()) {
    LogEvent("warn", "index rebuild failed, keeping the current index",
             {{"factory", options.factory},
              {"code", absl::StatusCodeToString(next.status().code())},
              {"error", std::string(next.status().message())}});
    return ToGrpcStatus(next.status());
  }
  const std::shared_ptr<const Snapshot> rebuilt = *next;
  if (context->IsCancelled() ||
      absl::FromChrono(context->deadline()) - absl::Now() < kReloadAnswerMargin) {
    LogEvent("warn", "rebuild cancelled by the caller, keeping the current index", {});
    return grpc::Status(grpc::StatusCode::CANCELLED, "rebuild cancelled or past its deadline; not swapped");
  }
  snapshots_->Swap(rebuilt);
  LogEvent("info", "index rebuilt",
           {{"version", rebuilt->model_version},
            {"factory", options.factory},
            {"ef_search", absl::StrCat(options.ef_search)},
            {"nprobe", absl::StrCat(options.nprobe)},
            {"seconds", absl::StrCat(absl::ToDoubleSeconds(build_time))}});
  response->set_model_version(rebuilt->model_version);
  response->set_item_count(rebuilt->catalogue->size());
  ToProto(rebuilt->catalogue->index_options(), response->mutable_params());
  response->set_build_seconds(absl::ToDoubleSeconds(build_time));
  return grpc::Status::OK;
}

void AdminService::SetItemLogError(const std::string& error) {
  bool changed = false;
  {
    absl::MutexLock lock(&item_log_error_mu_);
    changed = error != item_log_error_;
    item_log_error_ = error;
  }
  if (!changed) return;
  if (error.empty()) {
    LogEvent("info", "item log applied again", {});
  } else {
    LogEvent("error", "item log cannot be applied: this replica is not ready until it can", {{"error", error}});
  }
  if (options_.item_log_healthy) options_.item_log_healthy(error.empty());
}

absl::StatusOr<std::shared_ptr<const Snapshot>> AdminService::CatchUpLocked() {
  std::shared_ptr<const Snapshot> current = snapshots_->Get();
  if (current == nullptr || current->item_log == nullptr) return current;
  for (;;) {
    absl::StatusOr<std::shared_ptr<const Snapshot>> next = CatchUpItemLog(current);
    if (!next.ok()) {
      SetItemLogError(std::string(next.status().message()));
      return next.status();
    }
    if (*next == current) break;
    LogEvent("info", "item log applied",
             {{"records", absl::StrCat(current->item_log_applied + 1, "..", (*next)->item_log_applied)},
              {"items", absl::StrCat((*next)->catalogue->size())}});
    current = *std::move(next);
    snapshots_->Swap(current);
  }
  SetItemLogError("");
  return current;
}

void AdminService::FollowItemLog() {
  absl::MutexLock lock(&mutation_mu_);
  // Errors are reported through GetStatus and health (SetItemLogError).
  CatchUpLocked().IgnoreError();
}

template <typename Request, typename Apply>
absl::StatusOr<std::shared_ptr<const Snapshot>> AdminService::Mutate(const Request& change, Apply apply) {
  // Another replica may take the sequence number first: then its record is applied and
  // the change tried again on top of it. Bounded, so a busy log cannot hold a call forever.
  constexpr int kMaxAttempts = 64;
  for (int attempt = 1;; ++attempt) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> current, CatchUpLocked());
    if (current == nullptr) return absl::UnavailableError("no model loaded yet");
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> next, apply(*current));
    const std::shared_ptr<const ItemLog>& log = (current)->item_log;
    if (log == nullptr) {
      // Durable before visible: a change the caller saw succeed survives a restart.
      RETURN_IF_ERROR(Journal(*current, change));
      snapshots_->Swap(next);
      return next;
    }
    const int64_t seq = (current)->item_log_applied + 1;
    absl::Status written = log->Write(seq, ItemLog::Change(change));
    if (absl::IsAlreadyExists(written)) {
      if (attempt < kMaxAttempts) continue;
      return absl::AbortedError(absl::StrCat("item log ", log->dir(), ": ", kMaxAttempts,
                                             " attempts lost to other replicas' writes; retry"));
    }
    if (!written.ok()) {
      LogEvent("warn", "item change refused: not logged",
               {{"code", absl::StatusCodeToString(written.code())}, {"error", std::string(written.message())}});
      return written;
    }
    auto logged = std::make_shared<Snapshot>(*next);
    logged->item_log_applied = seq;
    std::shared_ptr<const Snapshot> swapped = std::move(logged);
    snapshots_->Swap(swapped);
    return swapped;
  }
}

grpc::Status AdminService::UpsertItems(grpc::ServerContext* context,
                                       const v1::UpsertItemsRequest* request,
                                       v1::UpsertItemsResponse* response) {
  if (absl::Status s = Authorize(*context); !s.ok()) return ToGrpcStatus(s);
  const ServerMetrics::InFlightCall in_flight(metrics_);
  absl::MutexLock lock(&mutation_mu_);
  absl::StatusOr<std::shared_ptr<const Snapshot>> next =
      Mutate(*request, [request](const Snapshot& current) { return ApplyUpsert(current, *request); });
  if (!next.ok()) return ToGrpcStatus(next.status());
  LogEvent("info", "items upserted",
           {{"count", absl::StrCat(request->items_size())},
            {"items", absl::StrCat((*next)->catalogue->size())}});
  response->set_upserted(request->items_size());
  response->set_item_count((*next)->catalogue->size());
  response->set_model_version((*next)->model_version);
  return grpc::Status::OK;
}

grpc::Status AdminService::RemoveItems(grpc::ServerContext* context,
                                       const v1::RemoveItemsRequest* request,
                                       v1::RemoveItemsResponse* response) {
  if (absl::Status s = Authorize(*context); !s.ok()) return ToGrpcStatus(s);
  const ServerMetrics::InFlightCall in_flight(metrics_);
  absl::MutexLock lock(&mutation_mu_);
  int64_t removed = 0;
  absl::StatusOr<std::shared_ptr<const Snapshot>> next =
      Mutate(*request, [request, &removed](const Snapshot& current) {
        removed = 0;
        return ApplyRemove(current, *request, &removed);
      });
  if (!next.ok()) return ToGrpcStatus(next.status());
  LogEvent("info", "items removed",
           {{"count", absl::StrCat(removed)}, {"items", absl::StrCat((*next)->catalogue->size())}});
  response->set_removed(removed);
  response->set_item_count((*next)->catalogue->size());
  response->set_model_version((*next)->model_version);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetStatus(grpc::ServerContext* context,
                                     const v1::GetStatusRequest* /*request*/,
                                     v1::GetStatusResponse* response) {
  if (absl::Status s = Authorize(*context); !s.ok()) return ToGrpcStatus(s);
  if (const std::shared_ptr<const Snapshot> snapshot = snapshots_->Get(); snapshot != nullptr) {
    response->set_model_version(snapshot->model_version);
    response->set_bundle_path(snapshot->bundle_path);
    response->set_item_count(snapshot->catalogue->size());
    response->set_embedding_dim(snapshot->catalogue->dim());
    ToProto(snapshot->catalogue->index_options(), response->mutable_index());
    response->mutable_index()->set_source(snapshot->catalogue->index_source() == IndexSource::kBundle ? "bundle" : "built");
  }
  response->set_uptime_seconds(absl::ToDoubleSeconds(metrics_->uptime()));
  response->set_requests_total(metrics_->requests_total());
  response->set_requests_failed(metrics_->requests_failed());
  const ServerMetrics::LatencySummary latency = metrics_->RetrieveLatency();
  v1::LatencySummary* summary = response->mutable_retrieve_latency();
  summary->set_p50_ms(latency.p50_ms);
  summary->set_p90_ms(latency.p90_ms);
  summary->set_p99_ms(latency.p99_ms);
  summary->set_max_ms(latency.max_ms);
  response->set_reloads_total(metrics_->reloads_total());
  response->set_reloads_failed(metrics_->reloads_failed());
  if (options_.search_stats) {
    const SearchBatcher::Stats searches = options_.search_stats();
    response->set_index_searches(searches.searches);
    response->set_searched_queries(searches.queries);
    response->set_largest_search_batch(searches.largest_batch);
    response->set_abandoned_searches(searches.abandoned);
  }
  if (options_.serving_status) options_.serving_status(response);
  if (const std::shared_ptr<const Snapshot> snapshot = snapshots_->Get(); snapshot != nullptr) {
    response->set_item_log_applied(snapshot->item_log_applied);
  }
  {
    absl::MutexLock lock(&item_log_error_mu_);
    response->set_item_log_error(item_log_error_);
  }
  {
    absl::MutexLock lock(&last_reload_mu_);
    *response->mutable_last_reload() = last_reload_;
  }
  return grpc::Status::OK;
}

}  // namespace twotower
