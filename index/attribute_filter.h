// Filters on item attributes ("only items whose genre is X"): posting lists from each
// categorical / multi-hot item feature value to the catalogue rows that have it, built
// once per model from the bundle's encoded catalogue. A request's filters become a row
// bitmap that the index applies inside its search (see RowFilter).
#ifndef TWOTOWER_INDEX_ATTRIBUTE_FILTER_H_
#define TWOTOWER_INDEX_ATTRIBUTE_FILTER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "features/encoded_table.h"
#include "features/feature_encoder.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "twotower/v1/retrieval.pb.h"

namespace twotower {

class AttributeFilter {
 public:
  // Most filters Allowed takes at once.
  static constexpr int kMaxFilters = 255;

  // Posting lists of `rows` (encoded by `encoder`, which must outlive this object; `rows`
  // need not: the postings are all the filter keeps).
  AttributeFilter(const FeatureEncoder& encoder, const EncodedTable& rows);

  // Bitmap over catalogue rows (1 = allowed) of the rows that pass every filter: a
  // filter passes when the item's feature holds at least one of its `any_of` values.
  // Unknown values match nothing; an unknown feature, a numeric one, a filter without
  // values, or more than kMaxFilters filters is INVALID_ARGUMENT. Cost: one pass over the
  // rows plus the posting lists of the values named.
  absl::StatusOr<std::vector<uint8_t>> Allowed(
      const google::protobuf::RepeatedPtrField<v1::ItemFilter>& filters) const;
  // Bytes held by the posting lists.
  size_t MemoryBytes() const;
  // The errors Allowed would return, without computing anything.
  absl::Status Check(const google::protobuf::RepeatedPtrField<v1::ItemFilter>& filters) const;

 private:
  const FeatureEncoder* encoder_;
  // Embedding field of a filterable feature, or an error.
  absl::StatusOr<int> FieldOf(const v1::ItemFilter& filter) const;
  int rows_ = 0;
  // Field f's posting lists, one array for all its tokens (a vector per token would add
  // 24 bytes per token and up to 2x growth slack): the catalogue rows holding token t
  // are rows[starts[t], starts[t + 1]), ascending (field >= 1).
  struct Postings {
    std::vector<int64_t> starts;
    std::vector<int32_t> rows;
  };
  std::vector<Postings> postings_;
};

}  // namespace twotower

#endif  // TWOTOWER_INDEX_ATTRIBUTE_FILTER_H_
