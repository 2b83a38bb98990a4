#include "index/catalogue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace twotower {

namespace {

std::shared_ptr<const absl::flat_hash_map<std::string, int32_t>> RowsById(
    const std::vector<std::string>& ids) {
  auto rows = std::make_shared<absl::flat_hash_map<std::string, int32_t>>();
  rows->reserve(ids.size());
  for (size_t r = 0; r < ids.size(); ++r) rows->emplace(ids[r], static_cast<int32_t>(r));
  return rows;
}

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

}  // namespace

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::Create(
    std::shared_ptr<const Bundle> bundle, const IndexOptions& options) {
  IndexSource source = IndexSource::kBuilt;
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = IndexForBundle(*bundle, options, &source);
  if (!index.ok()) return index.status();
  std::shared_ptr<Catalogue> catalogue(new Catalogue());  // private constructor
  catalogue->base_ = *std::move(index);
  catalogue->requested_ = options;
  catalogue->source_ = source;
  catalogue->note_ = IndexNote(*bundle, catalogue->base_->options(), source);
  catalogue->base_attributes_ =
      std::make_shared<const AttributeFilter>(bundle->item.encoder, bundle->items.rows);
  catalogue->base_row_of_ = RowsById(bundle->items.ids);
  catalogue->removed_ = std::make_shared<const absl::flat_hash_set<int32_t>>();
  catalogue->bundle_ = std::move(bundle);
  return std::shared_ptr<const Catalogue>(std::move(catalogue));
}

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::WithIndex(
    const IndexOptions& options) const {
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(
      bundle_->items.ids, bundle_->item_vectors, bundle_->embedding_dim(), ResolveIndexOptions(*bundle_, options));
  if (!index.ok()) return index.status();
  std::shared_ptr<Catalogue> catalogue(new Catalogue(*this));
  catalogue->base_ = *std::move(index);
  catalogue->requested_ = options;
  catalogue->source_ = IndexSource::kBuilt;
  catalogue->note_ = IndexNote(*bundle_, catalogue->base_->options(), IndexSource::kBuilt);
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
  absl::StatusOr<std::unique_ptr<ItemIndex>> index =
      ItemIndex::Build(items.ids, vectors, dim(), IndexOptions{"Flat", 0, 0});
  if (!index.ok()) return index.status();
  delta->index = *std::move(index);
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
  if (delta_ != nullptr) {
    for (size_t r = 0; r < delta_->items.ids.size(); ++r) {
      if (fresh.contains(delta_->items.ids[r])) continue;
      merged.ids.push_back(delta_->items.ids[r]);
      merged.rows.AppendRowFrom(delta_->items.rows, static_cast<int>(r));
      merged_vectors.insert(merged_vectors.end(), delta_->vectors.begin() + r * d,
                            delta_->vectors.begin() + (r + 1) * d);
    }
  }
  auto removed = std::make_shared<absl::flat_hash_set<int32_t>>(*removed_);
  for (size_t r = 0; r < items.ids.size(); ++r) {
    merged.ids.push_back(items.ids[r]);
    merged.rows.AppendRowFrom(items.rows, static_cast<int>(r));
    merged_vectors.insert(merged_vectors.end(), vectors.begin() + r * d, vectors.begin() + (r + 1) * d);
    if (const auto it = base_row_of_->find(items.ids[r]); it != base_row_of_->end()) {
      removed->insert(it->second);
    }
  }
  return WithDelta(std::move(merged), std::move(merged_vectors), std::move(removed));
}

absl::StatusOr<std::shared_ptr<const Catalogue>> Catalogue::Remove(std::span<const std::string> ids,
                                                                   int64_t* removed_count) const {
  *removed_count = 0;
  const absl::flat_hash_set<std::string> gone(ids.begin(), ids.end());
  auto removed = std::make_shared<absl::flat_hash_set<int32_t>>(*removed_);
  for (const std::string& id : gone) {
    if (const auto it = base_row_of_->find(id); it != base_row_of_->end()) {
      // An upserted replacement hides the base row already; count the item once.
      const bool in_delta = delta_ != nullptr && delta_->row_of.contains(id);
      if (removed->insert(it->second).second || in_delta) ++*removed_count;
    } else if (delta_ != nullptr && delta_->row_of.contains(id)) {
      ++*removed_count;
    }
  }
  EncodedEntities kept{{}, bundle_->item.encoder.NewTable()};
  std::vector<float> kept_vectors;
  if (delta_ != nullptr) {
    const int d = dim();
    for (size_t r = 0; r < delta_->items.ids.size(); ++r) {
      if (gone.contains(delta_->items.ids[r])) continue;
      kept.ids.push_back(delta_->items.ids[r]);
      kept.rows.AppendRowFrom(delta_->items.rows, static_cast<int>(r));
      kept_vectors.insert(kept_vectors.end(), delta_->vectors.begin() + r * d,
                          delta_->vectors.begin() + (r + 1) * d);
    }
  }
  return WithDelta(std::move(kept), std::move(kept_vectors), std::move(removed));
}

bool Catalogue::Contains(const std::string& id) const {
  if (delta_ != nullptr && delta_->row_of.contains(id)) return true;
  const auto it = base_row_of_->find(id);
  return it != base_row_of_->end() && !removed_->contains(it->second);
}

int64_t Catalogue::size() const {
  return static_cast<int64_t>(bundle_->items.ids.size()) - static_cast<int64_t>(removed_->size()) +
         upserted();
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
        if (const auto it = base_row_of_->find(id); it != base_row_of_->end()) base_excluded[i].insert(it->second);
        if (delta_ != nullptr) {
          if (const auto it = delta_->row_of.find(id); it != delta_->row_of.end()) delta_excluded[i].insert(it->second);
        }
      }
    }
    if (q.filters != nullptr && !q.filters->empty()) {
      absl::StatusOr<std::vector<uint8_t>> allowed = base_attributes_->Allowed(*q.filters);
      if (!allowed.ok()) return allowed.status();
      base_allowed[i] = *std::move(allowed);
      base_filters[i].allowed = &base_allowed[i];
      if (delta_ != nullptr) {
        absl::StatusOr<std::vector<uint8_t>> delta_rows = delta_->attributes->Allowed(*q.filters);
        if (!delta_rows.ok()) return delta_rows.status();
        delta_allowed[i] = *std::move(delta_rows);
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
  absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> base_hits =
      base_->Search(vectors, static_cast<int>(n), max_k, base_filters);
  if (!base_hits.ok()) return base_hits.status();
  std::vector<std::vector<ItemIndex::Hit>> delta_hits(n);
  if (delta_ != nullptr) {
    absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
        delta_->index->Search(vectors, static_cast<int>(n), max_k, delta_filters);
    if (!hits.ok()) return hits.status();
    delta_hits = *std::move(hits);
  }
  std::vector<std::vector<Result>> results(n);
  for (size_t i = 0; i < n; ++i) {
    const std::vector<ItemIndex::Hit>& a = (*base_hits)[i];
    const std::vector<ItemIndex::Hit>& b = delta_hits[i];
    std::vector<Result>& out = results[i];
    const size_t k = static_cast<size_t>(std::max(0, queries[i].k));
    size_t x = 0, y = 0;
    while (out.size() < k && (x < a.size() || y < b.size())) {
      const bool take_base = y >= b.size() || (x < a.size() && a[x].score >= b[y].score);
      if (take_base) {
        out.push_back({&bundle_->items.ids[a[x].row], a[x].score});
        ++x;
      } else {
        out.push_back({&delta_->items.ids[b[y].row], b[y].score});
        ++y;
      }
    }
  }
  return results;
}

}  // namespace twotower
