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
//
// Memory: the base holds each item once. Create takes the items out of the bundle: the
// ids go into one StringTable (row -> id and id -> row, ~17 bytes per 7-character id),
// the vectors into the index (which keeps its own copy: "Flat" the floats and their fp16
// copy, FAISS its storage or codes), the encoded feature rows into the attribute posting
// lists (4 bytes per item and value); nothing else of them stays, in the bundle or here.
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
#include "absl/strings/string_view.h"
#include "bundle/bundle.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "index/attribute_filter.h"
#include "index/bundle_index.h"
#include "index/item_index.h"
#include "twotower/v1/retrieval.pb.h"
#include "util/string_table.h"

namespace twotower {

class Catalogue {
 public:
  // What one query asks for. Pointers may be null and must outlive Search.
  struct Query {
    int k = 0;
    const google::protobuf::RepeatedPtrField<std::string>* exclude = nullptr;  // item ids
    const google::protobuf::RepeatedPtrField<v1::ItemFilter>* filters = nullptr;
    // Rows of the bundle's catalogue never returned either (e.g. the user's seen items);
    // an item upserted since under the same id is left out too.
    std::span<const int32_t> exclude_rows = {};
  };
  struct Result {
    absl::string_view id;  // valid while the Catalogue lives
    float score;
  };

  // Indexes the bundle's catalogue, taking it out of the bundle: bundle.items (ids and
  // encoded rows) and bundle.item_vectors are moved into the catalogue's own structures
  // and left empty; the rest of the bundle (towers, encoders, users, its index file) is
  // kept, shared, as bundle(). The index is read from the bundle's index.faiss when
  // `options` asks for it (an empty factory: the bundle's index, else "Flat"), else built
  // (IndexForBundle, index/bundle_index.h). `bundle_dir` is the directory the bundle was
  // read from: where WithIndex re-reads the item vectors when the index holds only lossy
  // codes ("" = nowhere). INVALID_ARGUMENT for options ValidateIndexRequest refuses or
  // that do not fit the items (e.g. IVF with nlist above the item count); DATA_LOSS
  // naming the file for an index.faiss that does not check out.
  static absl::StatusOr<std::shared_ptr<const Catalogue>> Create(Bundle bundle, const IndexOptions& options,
                                                                 std::string bundle_dir = "");
  // The same items with the base re-indexed with `options`, always built in memory (an
  // empty factory: the bundle's index factory, else "Flat"; errors as Create; this
  // catalogue is unchanged either way). The vectors come from the current index where it
  // keeps the floats ("Flat", HNSW, IVF,Flat: ItemIndex::Floats); from a lossy one (SQ,
  // PQ) they are re-read from the bundle directory, checked against the MANIFEST loaded
  // (FAILED_PRECONDITION when it is gone or changed: reload the bundle instead).
  absl::StatusOr<std::shared_ptr<const Catalogue>> WithIndex(const IndexOptions& options) const;

  // The model without its items (see Create): towers, encoders, known users.
  const std::shared_ptr<const Bundle>& bundle() const { return bundle_; }
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
  bool Contains(absl::string_view id) const;
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

  // Bytes held by the parts of the base (their arrays' capacities), for benchmarks.
  struct Memory {
    size_t index = 0;       // ItemIndex::MemoryBytes: "Flat" the floats and their fp16 copy
    size_t ids = 0;         // the StringTable: characters, offsets, hash index
    size_t attributes = 0;  // posting lists
  };
  Memory memory() const;

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

  // Without its items. Declared first, so destroyed last: the last holder of a model frees
  // the bundle after the rest, and its deleter gives the freed pages back (Create).
  std::shared_ptr<const Bundle> bundle_;
  std::string bundle_dir_;
  std::shared_ptr<const StringTable> base_ids_;  // row -> id, id -> row
  std::shared_ptr<const ItemIndex> base_;
  std::shared_ptr<const AttributeFilter> base_attributes_;
  std::shared_ptr<const absl::flat_hash_set<int32_t>> removed_;  // base rows not served
  std::shared_ptr<const Delta> delta_;                           // null: nothing upserted
  IndexOptions requested_;
  IndexSource source_ = IndexSource::kBuilt;
  std::string note_;
};

}  // namespace twotower

#endif  // TWOTOWER_INDEX_CATALOGUE_H_
