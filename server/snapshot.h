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
#include "index/attribute_filter.h"
#include "index/item_index.h"
#include "twotower/v1/retrieval.pb.h"

namespace twotower {

struct Snapshot {
  // Shared, so rebuilding the index does not copy (or re-read) the model.
  std::shared_ptr<const Bundle> bundle;
  // Over bundle->items.ids and bundle->item_vectors: index row r is catalogue row r.
  std::unique_ptr<const ItemIndex> index;
  std::string bundle_path;
  std::string model_version;
  // Id -> row of bundle->users.rows (users with stored features) and of the index.
  absl::flat_hash_map<std::string, int32_t> user_rows;
  absl::flat_hash_map<std::string, int32_t> item_rows;
  // Item attribute filters of this model (shared by rebuilt snapshots, like the bundle).
  std::shared_ptr<const AttributeFilter> attributes;
  absl::Time loaded_at;
  // Wall time of ReadBundle + index build (just the index build after a rebuild).
  absl::Duration load_duration;
};

// Reads and validates the bundle at `bundle_path` (see ReadBundle) and indexes its items.
absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot(const std::string& bundle_path,
                                                             const IndexOptions& options);

// A snapshot of the same bundle as `old` (shared, not copied) with a new index.
absl::StatusOr<std::shared_ptr<const Snapshot>> RebuildSnapshotIndex(const Snapshot& old,
                                                                     const IndexOptions& options);

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

}  // namespace twotower

#endif  // TWOTOWER_SERVER_SNAPSHOT_H_
