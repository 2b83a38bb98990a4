// What a request reads: one loaded model (bundle + item index), immutable once built, held
// by shared_ptr. Admin calls build a new Snapshot off to the side and swap the pointer in
// a SnapshotHolder (LevelDB's Version idea), so a request sees one model for its whole
// life and an old model is freed when the last request using it ends.
#ifndef TWOTOWER_SERVER_SNAPSHOT_H_
#define TWOTOWER_SERVER_SNAPSHOT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bundle/bundle.h"
#include "features/encoded_table.h"
#include "index/catalogue.h"
#include "index/item_index.h"
#include "server/item_journal.h"
#include "server/item_log.h"
#include "twotower/v1/admin.pb.h"
#include "twotower/v1/retrieval.pb.h"

namespace twotower {

struct Snapshot {
  // Shared, so rebuilding the index or changing items does not copy (or re-read) the model.
  // Without its items: Catalogue::Create moved them into the catalogue (bundle->items and
  // bundle->item_vectors are empty).
  std::shared_ptr<const Bundle> bundle;
  // What Retrieve searches: the bundle's items, indexed, plus online upserts / removals.
  std::shared_ptr<const Catalogue> catalogue;
  std::string bundle_path;
  std::string model_version;
  // Id -> row of bundle->users.rows (users with stored features); shared like the bundle.
  std::shared_ptr<const absl::flat_hash_map<std::string, int32_t>> user_rows;
  // The item journal of this model version (null without a state_dir): online changes
  // are appended to it. Shared by the snapshots derived from this one; internally locked.
  std::shared_ptr<ItemJournal> journal;
  // The item log shared by the replicas (null without an item_log_dir), and how many of
  // its records this snapshot includes (records 1..item_log_applied).
  std::shared_ptr<const ItemLog> item_log;
  int64_t item_log_applied = 0;
  absl::Time loaded_at;
  // Wall time of ReadBundle + index build (just the index build after a rebuild).
  absl::Duration load_duration;
};

// Reads and validates the bundle at `bundle_path` (see ReadBundle), indexes its items and,
// when `state_dir` is set, replays the item journal of its model version (see
// ItemJournal): online item changes survive restarts and reloads of the same bundle.
// The journal is folded first and applied as one upsert and one removal, so replay is
// linear in its records. Errors: ReadBundle's, the journal's (DATA_LOSS for a corrupt
// one, FAILED_PRECONDITION for a state_dir that is not a directory, INVALID_ARGUMENT for
// a model_version that cannot name a file). With `item_log_dir` set instead, the shared
// item log of the model version (see ItemLog) is replayed the same way (folded).
absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot(const std::string& bundle_path,
                                                             const IndexOptions& options,
                                                             const std::string& state_dir = "",
                                                             const std::string& item_log_dir = "");

// `snapshot` with the item log's records past snapshot.item_log_applied applied (at most
// `max_records` of them; folded, as at load); `snapshot` itself when there are none or
// it has no log. The log's read errors; DATA_LOSS for a record that cannot be applied.
absl::StatusOr<std::shared_ptr<const Snapshot>> CatchUpItemLog(std::shared_ptr<const Snapshot> snapshot,
                                                               int64_t max_records = 10000);

// A snapshot of the same bundle as `old` (shared, not copied) with another catalogue
// (re-indexed, or with items changed).
std::shared_ptr<const Snapshot> WithCatalogue(const Snapshot& old,
                                              std::shared_ptr<const Catalogue> catalogue);

// `snapshot` with the items of `upsert` added or replaced: their features are encoded
// with the model's item encoder (ids the model knows keep their id embedding) and embedded
// with its item tower. INVALID_ARGUMENT for an empty or repeated id or a bad feature.
absl::StatusOr<std::shared_ptr<const Snapshot>> ApplyUpsert(const Snapshot& snapshot,
                                                            const v1::UpsertItemsRequest& upsert);
// `snapshot` without the items of `remove`; *removed counts those that were there.
absl::StatusOr<std::shared_ptr<const Snapshot>> ApplyRemove(const Snapshot& snapshot,
                                                            const v1::RemoveItemsRequest& remove,
                                                            int64_t* removed);

// The current snapshot. Readers take a reference and keep it for the whole request.
class SnapshotHolder {
 public:
  SnapshotHolder() = default;
  SnapshotHolder(const SnapshotHolder&) = delete;
  SnapshotHolder& operator=(const SnapshotHolder&) = delete;

  // Null until the first Swap.
  std::shared_ptr<const Snapshot> Get() const ABSL_LOCKS_EXCLUDED(mu_);
  // Installs `next` and returns the previous snapshot (which lives on while requests or
  // the caller hold it).
  std::shared_ptr<const Snapshot> Swap(std::shared_ptr<const Snapshot> next)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mu_);
};

// Appends to `rows` (laid out by snapshot.bundle->user.encoder) the user tower input of
// `request`'s user:
//   - user_features given: the features, encoded with the model's encoder; they replace
//     the stored features of a known user (features not in the request are missing, i.e.
//     OOV / the training mean). An id outside the vocabulary uses the OOV id row.
//   - else a user with stored features: the stored encoded row, as the trainer saw it.
//   - else an id only: the OOV id row with missing features (a cold user, no features).
//   - neither id nor features: INVALID_ARGUMENT; so is a feature the schema does not
//     have or a value of the wrong type.
// Sets *user_known to whether the id is in the model's id vocabulary (has its own
// embedding row).
absl::Status EncodeRequestUser(const Snapshot& snapshot, const v1::RetrieveRequest& request,
                               EncodedTable* rows, bool* user_known);

// Appends to `out` the item ids of the user's history (RetrieveRequest
// include_history_items): the request's value of the model's KIND_HISTORY feature when the
// request gives user_features, else the history in row `row` of `rows` (the row
// EncodeRequestUser built: a known user's stored history; ids outside the history
// vocabulary are not there to find). Nothing without a KIND_HISTORY feature.
void AppendHistoryItems(const Snapshot& snapshot, const v1::RetrieveRequest& request, const EncodedTable& rows,
                        int row, google::protobuf::RepeatedPtrField<std::string>* out);

// Appends to `out` the rows of the bundle's catalogue that the request's user interacted
// with in the training data (the bundle's seen sets; RetrieveRequest
// include_history_items): for a user id of the bundle's users table, whatever features
// the request carries. Nothing for other users or a bundle without seen sets.
void AppendSeenRows(const Snapshot& snapshot, const v1::RetrieveRequest& request, std::vector<int32_t>* out);

}  // namespace twotower

#endif  // TWOTOWER_SERVER_SNAPSHOT_H_
