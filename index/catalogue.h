// What Retrieve searches: the model's items plus the items changed online.
//
//  * base: the bundle's catalogue in an index of any supported kind (Flat, HNSW, IVF, PQ,
//    SQ: index/item_index.h);
//  * delta: items upserted since the bundle was loaded, in a small exact index, and the
//    base rows removed or replaced by an upsert.
//
// A Catalogue is immutable. Upsert / Remove / WithIndex return a new Catalogue sharing
// every unchanged part, so an online change costs what changed (the delta), not the
// catalogue: it is visible to the next request once the caller swaps it in. Exclusions
// and attribute filters apply to both parts; results are merged by score.
#ifndef TWOTOWER_INDEX_CATALOGUE_H_
#define TWOTOWER_INDEX_CATALOGUE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "bundle/bundle.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "index/attribute_filter.h"
#include "index/bundle_index.h"
#include "index/item_index.h"
#include "twotower/v1/retrieval.pb.h"

namespace twotower {

class Catalogue {
 public:
  // What one query asks for. Pointers may be null and must outlive Search.
  struct Query {
    int k = 0;
    const google::protobuf::RepeatedPtrField<std::string>* exclude = nullptr;  // item ids
    const google::protobuf::RepeatedPtrField<v1::ItemFilter>* filters = nullptr;
  };
  struct Result {
    const std::string* id;  // valid while the Catalogue lives
    float score;
  };

  // Indexes the bundle's catalogue: reads the bundle's index.faiss when `options` asks
  // for it (an empty factory: the bundle's index, else "Flat"), else builds the index
  // (IndexForBundle, index/bundle_index.h). INVALID_ARGUMENT for options
  // ValidateIndexRequest refuses or that do not fit the items (e.g. IVF with nlist above
  // the item count); DATA_LOSS naming the file for an index.faiss that does not check out.
  static absl::StatusOr<std::shared_ptr<const Catalogue>> Create(
      std::shared_ptr<const Bundle> bundle, const IndexOptions& options);
  // The same items with the base re-indexed with `options`, always built in memory
  // (errors as Create; this catalogue is unchanged either way).
  absl::StatusOr<std::shared_ptr<const Catalogue>> WithIndex(const IndexOptions& options) const;
  // Adds or replaces items: `items` encoded with the bundle's item encoder, `vectors` their
  // item-tower outputs (items.ids.size() x dim). Ids must be unique and non-empty.
  absl::StatusOr<std::shared_ptr<const Catalogue>> Upsert(const EncodedEntities& items,
                                                          const std::vector<float>& vectors) const;
  // Removes the items with these ids (unknown ids are ignored); *removed counts the others.
  absl::StatusOr<std::shared_ptr<const Catalogue>> Remove(
      std::span<const std::string> ids, int64_t* removed) const;

  // Top queries[i].k items for each query vector (queries.size() x dim()), sorted by
  // descending score, without excluded items, all passing the filters: min(k, eligible
  // items) of them, whatever the index (ItemIndex::Search). A filter naming an
  // unknown or numeric item feature is INVALID_ARGUMENT.
  absl::StatusOr<std::vector<std::vector<Result>>> Search(const float* vectors,
                                                          std::span<const Query> queries) const;

  // INVALID_ARGUMENT for a filter Search would refuse.
  absl::Status CheckFilters(const google::protobuf::RepeatedPtrField<v1::ItemFilter>& filters) const {
    return base_attributes_->Check(filters);
  }
  bool Contains(const std::string& id) const;
  int64_t size() const;
  int64_t upserted() const { return delta_ == nullptr ? 0 : static_cast<int64_t>(delta_->items.ids.size()); }
  int dim() const { return base_->dim(); }
  const IndexOptions& index_options() const { return base_->options(); }
  // The options this catalogue was asked for (Create's or WithIndex's; the factory may be
  // empty: "the bundle's"), what a reload of another bundle asks for again.
  const IndexOptions& requested_index_options() const { return requested_; }
  // Where the base index came from, and a line for logs saying so; index_ignores_bundle():
  // the bundle carries an index.faiss and another index was built instead.
  IndexSource index_source() const { return source_; }
  const std::string& index_note() const { return note_; }
  bool index_ignores_bundle() const { return source_ == IndexSource::kBuilt && bundle_->index_file != nullptr; }
  // Whether every search is exact (the base index is "Flat"; upserted items always are).
  // Then a query's answer does not depend on the k it is searched with, only cut to its
  // own: the top min(k, n) rows in (score, row) order.
  bool exact() const { return base_->options().factory == "Flat"; }

 private:
  // Items upserted online: exact index, attributes, id -> row.
  struct Delta {
    EncodedEntities items;
    std::vector<float> vectors;
    std::unique_ptr<ItemIndex> index;
    std::unique_ptr<AttributeFilter> attributes;
    absl::flat_hash_map<std::string, int32_t> row_of;
  };
  Catalogue() = default;
  // A copy of this catalogue's parts with a new delta and removed set.
  absl::StatusOr<std::shared_ptr<const Catalogue>> WithDelta(
      EncodedEntities items, std::vector<float> vectors,
      std::shared_ptr<const absl::flat_hash_set<int32_t>> removed) const;

  std::shared_ptr<const Bundle> bundle_;
  std::shared_ptr<const ItemIndex> base_;
  std::shared_ptr<const AttributeFilter> base_attributes_;
  std::shared_ptr<const absl::flat_hash_map<std::string, int32_t>> base_row_of_;
  std::shared_ptr<const absl::flat_hash_set<int32_t>> removed_;  // base rows not served
  std::shared_ptr<const Delta> delta_;                           // null: nothing upserted
  IndexOptions requested_;
  IndexSource source_ = IndexSource::kBuilt;
  std::string note_;
};

}  // namespace twotower

#endif  // TWOTOWER_INDEX_CATALOGUE_H_
