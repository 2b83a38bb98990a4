// The operator API (proto/twotower/v1/admin.proto). Mutations build a complete new
// Snapshot off to the side and swap it in only when it is ready, so a failed reload or
// rebuild leaves the serving model untouched and requests never wait for a load.
#ifndef TWOTOWER_SERVER_ADMIN_SERVICE_H_
#define TWOTOWER_SERVER_ADMIN_SERVICE_H_

#include <functional>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "server/search_batcher.h"
#include "server/server_metrics.h"
#include "server/snapshot.h"
#include "twotower/v1/admin.grpc.pb.h"

namespace twotower {

class AdminService final : public v1::Admin::Service {
 public:
  // ReloadModel swaps only with at least this much left before the caller's deadline.
  static constexpr absl::Duration kReloadAnswerMargin = absl::Milliseconds(100);

  struct Options {
    // Holds the item journals (see ItemJournal); empty = none.
    std::string state_dir;
    // Holds the item log shared by the replicas (see ItemLog); empty = none. Not together
    // with state_dir.
    std::string item_log_dir;
    // Called with false when the item log has a record this replica cannot read or apply
    // (it would serve other items than its peers), with true when it can again; may be empty.
    std::function<void(bool)> item_log_healthy;
    // When set, every call must carry the metadata "authorization: Bearer <token>":
    // none is UNAUTHENTICATED, another token PERMISSION_DENIED (compared in constant time).
    std::string token;
    // When set, ReloadModel only loads bundles whose real path (symlinks resolved) lies
    // under this directory; anything else is PERMISSION_DENIED.
    std::string bundle_root;
    // The Retrieval service's dynamic-batching counters, for GetStatus; may be empty.
    std::function<SearchBatcher::Stats()> search_stats;
    // Fills GetStatus's fields about the Retrieval side (listener, calls and answer bytes
    // in flight); may be empty.
    std::function<void(v1::GetStatusResponse*)> serving_status;
  };
  // `snapshots` and `metrics` must outlive the service.
  AdminService(SnapshotHolder* snapshots, ServerMetrics* metrics, Options options);

  // Loads request->bundle_path with the current index options; on success swaps it in.
  // On failure returns the load error (from ReadBundle or the index build: DATA_LOSS for
  // a file that fails its checksum or does not match the schema, NOT_FOUND for a missing
  // file, INVALID_ARGUMENT for an unreadable manifest, FAILED_PRECONDITION for another
  // format version) and keeps serving the current model. The swap happens only while the
  // caller still has at least kReloadAnswerMargin before its deadline (and has not
  // cancelled); otherwise the caller gets CANCELLED / DEADLINE_EXCEEDED and nothing
  // changes. A deadline can still expire while the answer travels: GetStatus's
  // last_reload then tells whether the model was swapped.
  grpc::Status ReloadModel(grpc::ServerContext* context, const v1::ReloadModelRequest* request,
                           v1::ReloadModelResponse* response) override;
  // Re-indexes the current bundle: an empty factory keeps the current one, ef_search /
  // nprobe 0 keep the current values (with a new factory: FAISS's defaults). Options
  // ValidateIndexOptions refuses, or that do not fit the items, are INVALID_ARGUMENT and
  // the current index keeps serving.
  grpc::Status RebuildIndex(grpc::ServerContext* context, const v1::RebuildIndexRequest* request,
                            v1::RebuildIndexResponse* response) override;
  // Adds or replaces items online (features -> item tower -> the catalogue's delta index),
  // journaled (fsynced) before they become visible; the next Retrieve sees them.
  // INVALID_ARGUMENT for an empty / repeated id or a bad feature; the journal's error
  // when it cannot take the change (see ItemJournal::Append); nothing changes then.
  // With an item log: this replica first applies the records other replicas wrote, then
  // writes the change as the next record (fsynced) and applies it; the other replicas
  // apply it when they next poll (FollowItemLog). The log's error when it cannot.
  grpc::Status UpsertItems(grpc::ServerContext* context, const v1::UpsertItemsRequest* request,
                           v1::UpsertItemsResponse* response) override;
  // Removes items online (unknown ids are ignored and not counted), journaled likewise.
  grpc::Status RemoveItems(grpc::ServerContext* context, const v1::RemoveItemsRequest* request,
                           v1::RemoveItemsResponse* response) override;
  grpc::Status GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest* request,
                         v1::GetStatusResponse* response) override;

  // Applies the item log records other replicas wrote since the last call (no-op without
  // an item log). The server calls it every --item_log_poll_ms.
  void FollowItemLog();

 private:
  SnapshotHolder* const snapshots_;
  ServerMetrics* const metrics_;
  absl::Status Authorize(const grpc::ServerContext& context) const;
  // The canonical form of `path` if it may be loaded (see Options::bundle_root).
  absl::StatusOr<std::string> AllowedBundlePath(const std::string& path) const;
  // Applies the item log up to its end and swaps the result in; the current snapshot.
  absl::StatusOr<std::shared_ptr<const Snapshot>> CatchUpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutation_mu_);
  // Applies `change` with `apply`, logs it durably, swaps it in (see UpsertItems).
  template <typename Request, typename Apply>
  absl::StatusOr<std::shared_ptr<const Snapshot>> Mutate(const Request& change, Apply apply);
  const Options options_;
  // Why the item log cannot be applied (empty: it can); GetStatus reports it.
  absl::Mutex item_log_error_mu_;
  std::string item_log_error_ ABSL_GUARDED_BY(item_log_error_mu_);
  void SetItemLogError(const std::string& error);
  // Held for a whole reload / rebuild: two concurrent mutations would both build from the
  // same current snapshot and the later swap would silently undo the earlier one.
  absl::Mutex mutation_mu_;
  // How the last ReloadModel ended (GetStatus reports it).
  void RecordReload(const std::string& bundle_path, const absl::Status& outcome,
                    const std::string& model_version);
  absl::Mutex last_reload_mu_;
  v1::ReloadOutcome last_reload_ ABSL_GUARDED_BY(last_reload_mu_);
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_ADMIN_SERVICE_H_
