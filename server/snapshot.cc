#include "server/snapshot.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/item_journal.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

// `snapshot` with a folded state applied: the surviving upserts in the order the in-order
// replay leaves them, then the removed items (disjoint from the upserts), one call each.
absl::StatusOr<std::shared_ptr<const Snapshot>> ApplyFolded(std::shared_ptr<const Snapshot> snapshot,
                                                            ItemJournal::State state) {
  if (!state.upserted.empty()) {
    v1::UpsertItemsRequest upsert;
    upsert.mutable_items()->Reserve(static_cast<int>(state.upserted.size()));
    for (v1::Entity& entity : state.upserted) *upsert.add_items() = std::move(entity);
    absl::StatusOr<std::shared_ptr<const Snapshot>> next = ApplyUpsert(*snapshot, upsert);
    if (!next.ok()) return next.status();
    snapshot = *std::move(next);
  }
  if (!state.removed.empty()) {
    v1::RemoveItemsRequest remove;
    for (std::string& id : state.removed) remove.add_item_ids(std::move(id));
    int64_t removed = 0;
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> next, ApplyRemove(*snapshot, remove, &removed));
    snapshot = std::move(next);
  }
  return snapshot;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot(const std::string& bundle_path,
                                                             const IndexOptions& options,
                                                             const std::string& state_dir,
                                                             const std::string& item_log_dir) {
  const absl::Time start = absl::Now();
  // Resolve a symlink such as bundles/latest once: the trainer may move it while we read,
  // and the status call should name the directory actually served.
  std::error_code error;
  const std::filesystem::path resolved = std::filesystem::canonical(bundle_path, error);
  if (error) {
    return absl::NotFoundError(absl::StrCat("bundle ", bundle_path, ": ", error.message()));
  }
  ASSIGN_OR_RETURN(Bundle bundle, ReadBundle(resolved.string()));
  auto snapshot = std::make_shared<Snapshot>();
  ASSIGN_OR_RETURN(std::shared_ptr<const Catalogue> catalogue,
                   Catalogue::Create(std::move(bundle), options, resolved.string()));
  snapshot->catalogue = std::move(catalogue);
  snapshot->bundle = snapshot->catalogue->bundle();  // the model; its items are the catalogue's
  snapshot->bundle_path = resolved.string();
  snapshot->model_version = snapshot->bundle->model_version();
  auto user_rows = std::make_shared<absl::flat_hash_map<std::string, int32_t>>();
  const std::vector<std::string>& user_ids = snapshot->bundle->users.ids;
  for (size_t r = 0; r < user_ids.size(); ++r) user_rows->emplace(user_ids[r], static_cast<int32_t>(r));
  snapshot->user_rows = std::move(user_rows);
  std::shared_ptr<const Snapshot> loaded = std::move(snapshot);
  // Removals that name no bundle item change nothing once folded: the journal drops them.
  ItemJournal::Options journal_options;
  journal_options.is_base_item = [base = loaded->catalogue](const std::string& id) { return base->Contains(id); };
  ASSIGN_OR_RETURN(std::unique_ptr<ItemJournal> journal,
                   ItemJournal::Open(state_dir, loaded->model_version, std::move(journal_options)));
  if (journal != nullptr) {
    ASSIGN_OR_RETURN(ItemJournal::State state, (journal)->Load());
    absl::StatusOr<std::shared_ptr<const Snapshot>> next = ApplyFolded(loaded, std::move(state));
    if (!next.ok()) {
      return absl::Status(next.status().code(),
                          absl::StrCat("replaying ", (journal)->path(), ": ", next.status().message()));
    }
    loaded = *std::move(next);
  }
  std::shared_ptr<const ItemLog> item_log;
  if (!item_log_dir.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<ItemLog> opened, ItemLog::Open(item_log_dir, loaded->model_version));
    auto with_log = std::make_shared<Snapshot>(*loaded);
    with_log->item_log = std::move(opened);
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> next,
                     CatchUpItemLog(std::move(with_log), std::numeric_limits<int64_t>::max()));
    loaded = std::move(next);
  }
  auto timed = std::make_shared<Snapshot>(*loaded);
  timed->loaded_at = absl::Now();
  timed->load_duration = timed->loaded_at - start;
  timed->journal = std::move(journal);
  return std::shared_ptr<const Snapshot>(std::move(timed));
}

absl::StatusOr<std::shared_ptr<const Snapshot>> CatchUpItemLog(std::shared_ptr<const Snapshot> snapshot,
                                                               int64_t max_records) {
  if (snapshot->item_log == nullptr) return snapshot;
  ASSIGN_OR_RETURN(std::vector<ItemLog::Change> changes,
                   snapshot->item_log->ReadFrom(snapshot->item_log_applied + 1, max_records));
  if (changes.empty()) return snapshot;
  ItemChangeFold fold;
  for (ItemLog::Change& change : changes) {
    if (auto* upsert = std::get_if<v1::UpsertItemsRequest>(&change)) {
      RETURN_IF_ERROR(fold.Upsert(*upsert));
    } else {
      fold.Remove(std::get<v1::RemoveItemsRequest>(change));
    }
  }
  const int64_t first = snapshot->item_log_applied + 1;
  const int64_t count = static_cast<int64_t>(changes.size());
  absl::StatusOr<std::shared_ptr<const Snapshot>> next = ApplyFolded(snapshot, std::move(fold).Finish(nullptr));
  if (!next.ok()) {
    // Every record was checked by the replica that wrote it against this same model, so
    // this replica cannot serve what the others serve: it must not go on silently.
    return absl::DataLossError(absl::StrCat("item log ", snapshot->item_log->dir(), " records ", first, "..",
                                            first + count - 1, " cannot be applied: ", next.status().message()));
  }
  auto caught_up = std::make_shared<Snapshot>(**next);
  caught_up->item_log_applied = snapshot->item_log_applied + count;
  return std::shared_ptr<const Snapshot>(std::move(caught_up));
}

std::shared_ptr<const Snapshot> WithCatalogue(const Snapshot& old,
                                              std::shared_ptr<const Catalogue> catalogue) {
  auto snapshot = std::make_shared<Snapshot>(old);
  snapshot->catalogue = std::move(catalogue);
  return snapshot;
}

absl::StatusOr<std::shared_ptr<const Snapshot>> ApplyUpsert(const Snapshot& snapshot,
                                                            const v1::UpsertItemsRequest& upsert) {
  const TowerModel& item = snapshot.bundle->item;
  EncodedEntities items{{}, item.encoder.NewTable()};
  for (int i = 0; i < upsert.items_size(); ++i) {
    const v1::Entity& entity = upsert.items(i);
    if (entity.id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("items[", i, "]: id is empty"));
    }
    absl::StatusOr<std::vector<RawValue>> values = item.encoder.FromRequest(entity.features());
    if (!values.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("items[", i, "] (\"", entity.id(), "\"): ",
                                                     values.status().message()));
    }
    item.encoder.Encode(entity.id(), &*values, &items.rows);
    items.ids.push_back(entity.id());
  }
  std::vector<float> vectors = item.tower.EmbedAll(items.rows);
  for (float v : vectors) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError("item features out of range: an item vector is not finite");
    }
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Catalogue> catalogue, snapshot.catalogue->Upsert(items, vectors));
  return WithCatalogue(snapshot, std::move(catalogue));
}

absl::StatusOr<std::shared_ptr<const Snapshot>> ApplyRemove(const Snapshot& snapshot,
                                                            const v1::RemoveItemsRequest& remove,
                                                            int64_t* removed) {
  const std::vector<std::string> ids(remove.item_ids().begin(), remove.item_ids().end());
  ASSIGN_OR_RETURN(std::shared_ptr<const Catalogue> catalogue, snapshot.catalogue->Remove(ids, removed));
  return WithCatalogue(snapshot, std::move(catalogue));
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
    ASSIGN_OR_RETURN(std::vector<RawValue> values, user.encoder.FromRequest(request.user_features()));
    user.encoder.Encode(id, &values, rows);
    return absl::OkStatus();
  }
  if (const auto it = snapshot.user_rows->find(id); it != snapshot.user_rows->end()) {
    rows->AppendRowFrom(snapshot.bundle->users.rows, it->second);
    return absl::OkStatus();
  }
  // A user the model has never seen and nothing about them: the OOV embedding. Still an
  // answer (the model's idea of an average new user), flagged by user_known = false.
  user.encoder.Encode(id, nullptr, rows);
  return absl::OkStatus();
}

void AppendHistoryItems(const Snapshot& snapshot, const v1::RetrieveRequest& request, const EncodedTable& rows,
                        int row, google::protobuf::RepeatedPtrField<std::string>* out) {
  const FeatureEncoder& encoder = snapshot.bundle->user.encoder;
  const int field = encoder.HistoryField();
  if (field < 0) return;
  if (!request.user_features().empty()) {
    // The request's raw ids: items the history vocabulary never saw are excluded too.
    const auto it = request.user_features().find(encoder.FieldSpec(field).name());
    if (it == request.user_features().end()) return;
    for (const std::string& id : it->second.multi_hot().values()) out->Add()->assign(id);
    return;
  }
  const auto& tokens = encoder.FieldVocabulary(field).tokens();
  for (const int32_t token : rows.Field(row, field)) {
    if (token >= 1 && token <= tokens.size()) {
      const auto& id = tokens[token - 1];
      out->Add()->assign(id.data(), id.size());
    }
  }
}

void AppendSeenRows(const Snapshot& snapshot, const v1::RetrieveRequest& request, std::vector<int32_t>* out) {
  const SeenItems& seen = snapshot.bundle->seen_items;
  if (seen.empty() || request.user_id().empty()) return;
  if (const auto it = snapshot.user_rows->find(request.user_id()); it != snapshot.user_rows->end()) {
    seen.AppendRowsOf(it->second, out);
  }
}

}  // namespace twotower
