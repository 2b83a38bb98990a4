#include "index/catalogue.h"

#include <malloc.h>

#include <algorithm>
#include <optional>
#include <span>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

// Gives the pages of freed small blocks back to the OS. Loading a bundle (ReadBundle's
// parsed protobuf strings: ~100 bytes per item) and building an index free far more small
// blocks than they keep, between blocks that stay; glibc returns only the top of a heap
// by itself (and large blocks, mmapped: see mallopt in server_main.cc), so without this
// RSS kept ~50 bytes per item after a load and ~100 after a rebuild.
void ReleaseFreedMemory() { malloc_trim(0); }

std::string IndexNote(const Bundle& bundle, const IndexOptions& used, IndexSource source) {
  if (source == IndexSource::kBundle) {
    return absl::StrCat(used.factory, " read from ", bundle.index_file->path);
  }
  if (bundle.index_file != nullptr) {
    return absl::StrCat(used.factory, " built in memory; not read from the bundle, whose index.faiss is ",
                        bundle.manifest.index().factory());
  }
  return absl::StrCat(used.factory, " built in memory (the bundle carries no index file)");
}

// Appends item `r` of `items` (its id and encoded row) and its vector, row `r` of `vectors`
// (`d` floats a row), to `out` and `out_vectors`.
void AppendItem(const EncodedEntities& items, const std::vector<float>& vectors, size_t r, int d,
                EncodedEntities* out, std::vector<float>* out_vectors) {
  out->ids.push_back(items.ids[r]);
  out->rows.AppendRowFrom(items.rows, static_cast<int>(r));
  out_vectors->insert(out_vectors->end(), vectors.begin() + r * d, vectors.begin() + (r + 1) * d);
}

// AppendItem for every item of `items` whose id is not in `skip`, in order.
void AppendItemsExcept(const EncodedEntities& items, const std::vector<float>& vectors, int d,
                       const absl::flat_hash_set<std::string>& skip, EncodedEntities* out,
                       std::vector<float>* out_vectors) {
  for (size_t r = 0; r < items.ids.size(); ++r) {
    if (!skip.contains(items.ids[r])) AppendItem(items, vectors, r, d, out, out_vectors);
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::Create(Bundle bundle, const IndexOptions& options,
                                                                   std::string bundle_dir) {
  const int d = bundle.embedding_dim();
  if (bundle.item_vectors.size() != bundle.items.ids.size() * static_cast<size_t>(d) ||
      bundle.items.rows.size() != static_cast<int>(bundle.items.ids.size())) {
    return absl::InvalidArgumentError("catalogue: item ids, rows and vectors do not match");
  }
  // The items leave the bundle (which keeps an empty table of the same layout); what
  // remains of it is shared from here on, and does not move again (the attribute filter
  // points at its item encoder).
  EncodedEntities items = std::move(bundle.items);
  bundle.items = EncodedEntities{{}, bundle.item.encoder.NewTable()};
  std::vector<float> vectors = std::move(bundle.item_vectors);
  bundle.item_vectors = std::vector<float>();
  std::shared_ptr<Catalogue> catalogue(new Catalogue());  // private constructor
  // The last holder of a model (every catalogue and snapshot of it shares this bundle,
  // which outlives their other parts) gives the pages it freed back: after a reload, the
  // old model's.
  catalogue->bundle_ = std::shared_ptr<const Bundle>(new Bundle(std::move(bundle)), [](const Bundle* model) {
    delete model;
    ReleaseFreedMemory();
  });
  // ReadBundle's temporaries are gone: their pages go back before the index copies the
  // vectors (the peak of a load), and the bundle's floats go once the index has its copy.
  ReleaseFreedMemory();
  IndexSource source = IndexSource::kBuilt;
  ASSIGN_OR_RETURN(std::unique_ptr<ItemIndex> index,
                   IndexForBundle(*catalogue->bundle_, std::move(vectors), options, &source));
  catalogue->base_ = std::move(index);
  catalogue->requested_ = options;
  catalogue->source_ = source;
  catalogue->note_ = IndexNote(*catalogue->bundle_, catalogue->base_->options(), source);
  catalogue->base_attributes_ = std::make_shared<const AttributeFilter>(catalogue->bundle_->item.encoder, items.rows);
  items.rows = EncodedTable();  // upserts encode their own rows: these end with the postings
  catalogue->base_ids_ = std::make_shared<const StringTable>(StringTable::Of(items.ids));
  std::vector<std::string>().swap(items.ids);
  catalogue->removed_ = std::make_shared<const absl::flat_hash_set<int32_t>>();
  catalogue->bundle_dir_ = std::move(bundle_dir);
  ReleaseFreedMemory();
  return std::shared_ptr<const Catalogue>(std::move(catalogue));
}

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::WithIndex(
    const IndexOptions& options) const {
  // Validated first: a refused factory costs no copy, and no read of the bundle.
  const IndexOptions resolved = ResolveIndexOptions(*bundle_, options);
  RETURN_IF_ERROR(ValidateIndexOptions(resolved));
  std::vector<float> scratch;
  std::optional<std::span<const float>> floats = base_->Floats(&scratch);
  if (!floats.has_value()) {
    absl::StatusOr<std::vector<float>> reread = ReadItemVectors(bundle_dir_, bundle_->manifest);
    if (!reread.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the ", base_->options().factory, " index keeps no float vectors to rebuild from, and the bundle's "
          "could not be re-read (reload the bundle instead): ", reread.status().message()));
    }
    if (reread->size() != static_cast<size_t>(base_ids_->size()) * dim()) {
      return absl::FailedPreconditionError("the bundle re-read for its item vectors holds another item count");
    }
    scratch = *std::move(reread);
    floats = std::span<const float>(scratch);
  }
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(*floats, dim(), resolved);
  std::vector<float>().swap(scratch);
  if (!index.ok()) return index.status();
  std::shared_ptr<Catalogue> catalogue(new Catalogue(*this));
  catalogue->base_ = *std::move(index);
  catalogue->requested_ = options;
  catalogue->source_ = IndexSource::kBuilt;
  catalogue->note_ = IndexNote(*bundle_, catalogue->base_->options(), IndexSource::kBuilt);
  ReleaseFreedMemory();
  return std::shared_ptr<const Catalogue>(std::move(catalogue));
}

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::WithDelta(
    EncodedEntities items, std::vector<float> vectors,
    std::shared_ptr<const absl::flat_hash_set<int32_t>> removed) const {
  std::shared_ptr<Catalogue> catalogue(new Catalogue(*this));
  catalogue->removed_ = std::move(removed);
  if (items.ids.empty()) {
    catalogue->delta_ = nullptr;
    return std::shared_ptr<const Catalogue>(std::move(catalogue));
  }
  auto delta = std::make_shared<Delta>();
  ASSIGN_OR_RETURN(std::unique_ptr<ItemIndex> index,
                   ItemIndex::Build(items.ids, vectors, dim(), IndexOptions{"Flat", 0, 0}));
  delta->index = std::move(index);
  delta->items = std::move(items);
  delta->vectors = std::move(vectors);
  delta->attributes = std::make_unique<AttributeFilter>(bundle_->item.encoder, delta->items.rows);
  for (size_t r = 0; r < delta->items.ids.size(); ++r) {
    delta->row_of.emplace(delta->items.ids[r], static_cast<int32_t>(r));
  }
  catalogue->delta_ = std::move(delta);
  return std::shared_ptr<const Catalogue>(std::move(catalogue));
}

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::Upsert(
    const EncodedEntities& items, const std::vector<float>& vectors) const {
  const int d = dim();
  if (vectors.size() != items.ids.size() * static_cast<size_t>(d) ||
      items.rows.size() != static_cast<int>(items.ids.size())) {
    return absl::InvalidArgumentError("upsert: ids, rows and vectors do not match");
  }
  absl::flat_hash_set<std::string> fresh;
  for (const std::string& id : items.ids) {
    if (id.empty()) return absl::InvalidArgumentError("upsert: an item id is empty");
    if (!fresh.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat("upsert: item \"", id, "\" given twice"));
    }
  }
  // New delta = old delta minus replaced ids, plus the new items. Base items with an
  // upserted id are hidden: the delta's version wins.
  EncodedEntities merged{{}, bundle_->item.encoder.NewTable()};
  std::vector<float> merged_vectors;
  if (delta_ != nullptr) AppendItemsExcept(delta_->items, delta_->vectors, d, fresh, &merged, &merged_vectors);
  auto removed = std::make_shared<absl::flat_hash_set<int32_t>>(*removed_);
  for (size_t r = 0; r < items.ids.size(); ++r) {
    AppendItem(items, vectors, r, d, &merged, &merged_vectors);
    if (const int32_t row = base_ids_->Find(items.ids[r]); row >= 0) removed->insert(row);
  }
  return WithDelta(std::move(merged), std::move(merged_vectors), std::move(removed));
}

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::Remove(std::span<const std::string> ids,
                                                                   int64_t* removed_count) const {
  *removed_count = 0;
  const absl::flat_hash_set<std::string> gone(ids.begin(), ids.end());
  auto removed = std::make_shared<absl::flat_hash_set<int32_t>>(*removed_);
  for (const std::string& id : gone) {
    if (const int32_t row = base_ids_->Find(id); row >= 0) {
      // An upserted replacement hides the base row already; count the item once.
      const bool in_delta = delta_ != nullptr && delta_->row_of.contains(id);
      if (removed->insert(row).second || in_delta) ++*removed_count;
    } else if (delta_ != nullptr && delta_->row_of.contains(id)) {
      ++*removed_count;
    }
  }
  EncodedEntities kept{{}, bundle_->item.encoder.NewTable()};
  std::vector<float> kept_vectors;
  if (delta_ != nullptr) AppendItemsExcept(delta_->items, delta_->vectors, dim(), gone, &kept, &kept_vectors);
  return WithDelta(std::move(kept), std::move(kept_vectors), std::move(removed));
}

bool Catalogue::Contains(absl::string_view id) const {
  if (delta_ != nullptr && delta_->row_of.contains(id)) return true;
  const int32_t row = base_ids_->Find(id);
  return row >= 0 && !removed_->contains(row);
}

int64_t Catalogue::size() const {
  return static_cast<int64_t>(base_ids_->size()) - static_cast<int64_t>(removed_->size()) + upserted();
}

Catalogue::Memory Catalogue::memory() const {
  return {base_->MemoryBytes(), base_ids_->MemoryBytes(), base_attributes_->MemoryBytes()};
}

absl::StatusOr<std::vector<std::vector<Catalogue::Result>>> Catalogue::Search(
    const float* vectors, std::span<const Query> queries) const {
  const size_t n = queries.size();
  // Per query: exclusions and filters, mapped to the rows of each part.
  std::vector<absl::flat_hash_set<int32_t>> base_excluded(n), delta_excluded(n);
  std::vector<std::vector<uint8_t>> base_allowed(n), delta_allowed(n);
  std::vector<RowFilter> base_filters(n), delta_filters(n);
  int max_k = 1;
  for (size_t i = 0; i < n; ++i) {
    const Query& q = queries[i];
    max_k = std::max(max_k, q.k);
    if (q.exclude != nullptr) {
      for (const std::string& id : *q.exclude) {
        if (const int32_t row = base_ids_->Find(id); row >= 0) base_excluded[i].insert(row);
        if (delta_ != nullptr) {
          if (const auto it = delta_->row_of.find(id); it != delta_->row_of.end()) delta_excluded[i].insert(it->second);
        }
      }
    }
    for (const int32_t row : q.exclude_rows) {
      if (row < 0 || row >= base_ids_->size()) continue;
      base_excluded[i].insert(row);
      if (delta_ != nullptr) {
        if (const auto it = delta_->row_of.find((*base_ids_)[row]); it != delta_->row_of.end()) {
          delta_excluded[i].insert(it->second);
        }
      }
    }
    if (q.filters != nullptr && !q.filters->empty()) {
      ASSIGN_OR_RETURN(std::vector<uint8_t> allowed, base_attributes_->Allowed(*q.filters));
      base_allowed[i] = std::move(allowed);
      base_filters[i].allowed = &base_allowed[i];
      if (delta_ != nullptr) {
        ASSIGN_OR_RETURN(std::vector<uint8_t> delta_rows, delta_->attributes->Allowed(*q.filters));
        delta_allowed[i] = std::move(delta_rows);
        delta_filters[i].allowed = &delta_allowed[i];
      }
    }
    // Only restrictions that restrict: an unrestricted query skips the per-row checks.
    if (!base_excluded[i].empty()) base_filters[i].excluded = &base_excluded[i];
    if (removed_ != nullptr && !removed_->empty()) base_filters[i].removed = removed_.get();
    if (!delta_excluded[i].empty()) delta_filters[i].excluded = &delta_excluded[i];
  }
  // Queries without any restriction go to FAISS as one batch (ItemIndex::Search sorts
  // that out); one search at the largest k, each answer cut to its own k.
  ASSIGN_OR_RETURN(std::vector<std::vector<ItemIndex::Hit>> base_hits,
                   base_->Search(vectors, static_cast<int>(n), max_k, base_filters));
  std::vector<std::vector<ItemIndex::Hit>> delta_hits(n);
  if (delta_ != nullptr) {
    ASSIGN_OR_RETURN(std::vector<std::vector<ItemIndex::Hit>> hits,
                     delta_->index->Search(vectors, static_cast<int>(n), max_k, delta_filters));
    delta_hits = std::move(hits);
  }
  std::vector<std::vector<Result>> results(n);
  for (size_t i = 0; i < n; ++i) {
    const std::vector<ItemIndex::Hit>& a = (base_hits)[i];
    const std::vector<ItemIndex::Hit>& b = delta_hits[i];
    std::vector<Result>& out = results[i];
    const size_t k = static_cast<size_t>(std::max(0, queries[i].k));
    size_t x = 0, y = 0;
    while (out.size() < k && (x < a.size() || y < b.size())) {
      const bool take_base = y >= b.size() || (x < a.size() && a[x].score >= b[y].score);
      if (take_base) {
        out.push_back({(*base_ids_)[a[x].row], a[x].score});
        ++x;
      } else {
        out.push_back({delta_->items.ids[b[y].row], b[y].score});
        ++y;
      }
    }
  }
  return results;
}

}  // namespace twotower
