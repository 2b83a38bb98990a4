#include "server/snapshot.h"

#include <cmath>
#include <filesystem>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/item_journal.h"

namespace twotower {

absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot(const std::string& bundle_path,
                                                             const IndexOptions& options,
                                                             const std::string& state_dir) {
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
  absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue =
      Catalogue::Create(*std::move(bundle), options, resolved.string());
  if (!catalogue.ok()) return catalogue.status();
  snapshot->catalogue = *std::move(catalogue);
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
  absl::StatusOr<std::unique_ptr<ItemJournal>> journal =
      ItemJournal::Open(state_dir, loaded->model_version, std::move(journal_options));
  if (!journal.ok()) return journal.status();
  if (*journal != nullptr) {
    absl::StatusOr<ItemJournal::State> state = (*journal)->Load();
    if (!state.ok()) return state.status();
    // Folded: the surviving upserts in the order the in-order replay leaves them, then
    // the removed bundle items (disjoint from the upserts), one call each.
    const auto replay_error = [&](const absl::Status& status) {
      return absl::Status(status.code(), absl::StrCat("replaying ", (*journal)->path(), ": ", status.message()));
    };
    if (!state->upserted.empty()) {
      v1::UpsertItemsRequest upsert;
      upsert.mutable_items()->Reserve(static_cast<int>(state->upserted.size()));
      for (v1::Entity& entity : state->upserted) *upsert.add_items() = std::move(entity);
      absl::StatusOr<std::shared_ptr<const Snapshot>> next = ApplyUpsert(*loaded, upsert);
      if (!next.ok()) return replay_error(next.status());
      loaded = *std::move(next);
    }
    if (!state->removed.empty()) {
      v1::RemoveItemsRequest remove;
      for (std::string& id : state->removed) remove.add_item_ids(std::move(id));
      int64_t removed = 0;
      absl::StatusOr<std::shared_ptr<const Snapshot>> next = ApplyRemove(*loaded, remove, &removed);
      if (!next.ok()) return replay_error(next.status());
      loaded = *std::move(next);
    }
  }
  auto timed = std::make_shared<Snapshot>(*loaded);
  timed->loaded_at = absl::Now();
  timed->load_duration = timed->loaded_at - start;
  timed->journal = *std::move(journal);
  return std::shared_ptr<const Snapshot>(std::move(timed));
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
  absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue =
      snapshot.catalogue->Upsert(items, vectors);
  if (!catalogue.ok()) return catalogue.status();
  return WithCatalogue(snapshot, *std::move(catalogue));
}

absl::StatusOr<std::shared_ptr<const Snapshot>> ApplyRemove(const Snapshot& snapshot,
                                                            const v1::RemoveItemsRequest& remove,
                                                            int64_t* removed) {
  const std::vector<std::string> ids(remove.item_ids().begin(), remove.item_ids().end());
  absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue =
      snapshot.catalogue->Remove(ids, removed);
  if (!catalogue.ok()) return catalogue.status();
  return WithCatalogue(snapshot, *std::move(catalogue));
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
  if (const auto it = snapshot.user_rows->find(id); it != snapshot.user_rows->end()) {
    rows->AppendRowFrom(snapshot.bundle->users.rows, it->second);
    return absl::OkStatus();
  }
  // A user the model has never seen and nothing about them: the OOV embedding. Still an
  // answer (the model's idea of an average new user), flagged by user_known = false.
  user.encoder.Encode(id, nullptr, rows);
  return absl::OkStatus();
}

}  // namespace twotower
