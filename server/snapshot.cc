#include "server/snapshot.h"

#include <filesystem>

#include <utility>
#include <vector>

#include "absl/time/clock.h"

namespace twotower {

namespace {

absl::flat_hash_map<std::string, int32_t> RowsById(const std::vector<std::string>& ids) {
  absl::flat_hash_map<std::string, int32_t> rows;
  rows.reserve(ids.size());
  // ReadBundle does not promise unique ids; the first row of an id wins, as in the index
  // (whose hits name rows, not ids).
  for (size_t r = 0; r < ids.size(); ++r) rows.emplace(ids[r], static_cast<int32_t>(r));
  return rows;
}

absl::StatusOr<std::unique_ptr<ItemIndex>> BuildIndex(const Bundle& bundle,
                                                      const IndexOptions& options) {
  return ItemIndex::Build(bundle.items.ids, bundle.item_vectors, bundle.embedding_dim(),
                          options);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot(const std::string& bundle_path,
                                                             const IndexOptions& options) {
  const absl::Time start = absl::Now();
  // Resolve a symlink such as bundles/latest once: the trainer may move it while we read,
  // and the status call should name the directory actually served.
  std::error_code error;
  const std::filesystem::path resolved = std::filesystem::canonical(bundle_path, error);
  if (error) {
    return absl::NotFoundError(absl::StrCat("bundle ", bundle_path, ": ", error.message()));
  }
  absl::StatusOr<Bundle> bundle = ReadBundle(resolved.string());
  if (!bundle.ok()) return bundle.status();
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->bundle = std::make_shared<const Bundle>(*std::move(bundle));
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = BuildIndex(*snapshot->bundle, options);
  if (!index.ok()) return index.status();
  snapshot->index = *std::move(index);
  snapshot->bundle_path = resolved.string();
  snapshot->model_version = snapshot->bundle->model_version();
  snapshot->user_rows = RowsById(snapshot->bundle->users.ids);
  snapshot->item_rows = RowsById(snapshot->bundle->items.ids);
  snapshot->attributes = std::make_shared<const AttributeFilter>(*snapshot->bundle);
  snapshot->loaded_at = absl::Now();
  snapshot->load_duration = snapshot->loaded_at - start;
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

absl::StatusOr<std::shared_ptr<const Snapshot>> RebuildSnapshotIndex(const Snapshot& old,
                                                                     const IndexOptions& options) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = BuildIndex(*old.bundle, options);
  if (!index.ok()) return index.status();
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->bundle = old.bundle;
  snapshot->index = *std::move(index);
  snapshot->bundle_path = old.bundle_path;
  snapshot->model_version = old.model_version;
  snapshot->user_rows = old.user_rows;
  snapshot->item_rows = old.item_rows;
  snapshot->attributes = old.attributes;
  snapshot->loaded_at = absl::Now();
  snapshot->load_duration = snapshot->loaded_at - start;
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

std::shared_ptr<const Snapshot> SnapshotHolder::Get() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

std::shared_ptr<const Snapshot> SnapshotHolder::Swap(std::shared_ptr<const Snapshot> next) {
  absl::MutexLock lock(&mu_);
  std::swap(current_, next);
  // The previous snapshot is returned rather than dropped here, so that when this was
  // its last reference it is destroyed outside the lock.
  return next;
}

absl::Status EncodeRequestUser(const Snapshot& snapshot, const v1::RetrieveRequest& request,
                               EncodedTable* rows, bool* user_known) {
  const TowerModel& user = snapshot.bundle->user;
  const std::string& id = request.user_id();
  if (id.empty() && request.user_features().empty()) {
    return absl::InvalidArgumentError("a request needs a user_id, user_features or both");
  }
  *user_known = !id.empty() && user.encoder.ids().Lookup(id) != Vocabulary::kOov;
  if (!request.user_features().empty()) {
    absl::StatusOr<std::vector<RawValue>> values =
        user.encoder.FromRequest(request.user_features());
    if (!values.ok()) return values.status();
    user.encoder.Encode(id, &*values, rows);
    return absl::OkStatus();
  }
  if (const auto it = snapshot.user_rows.find(id); it != snapshot.user_rows.end()) {
    rows->AppendRowFrom(snapshot.bundle->users.rows, it->second);
    return absl::OkStatus();
  }
  // A user the model has never seen and nothing about them: the OOV embedding. Still an
  // answer (the model's idea of an average new user), flagged by user_known = false.
  user.encoder.Encode(id, nullptr, rows);
  return absl::OkStatus();
}

}  // namespace twotower
