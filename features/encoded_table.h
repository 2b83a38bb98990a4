// Model inputs for a set of entities (users or items), in a compact CSR layout: for each
// row and each embedding field (field 0 = the id), a run of embedding-row indices, plus a
// fixed number of numeric inputs. A training batch, a request and a whole catalogue are all
// EncodedTables, so the towers have one input type.
#ifndef TWOTOWER_FEATURES_ENCODED_TABLE_H_
#define TWOTOWER_FEATURES_ENCODED_TABLE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace twotower {

class EncodedTable {
 public:
  EncodedTable() = default;
  EncodedTable(int num_fields, int num_numeric);

  int num_fields() const { return num_fields_; }
  int num_numeric() const { return num_numeric_; }
  int size() const { return size_; }

  // Appends a row: `fields[f]` are field f's embedding rows (non-empty), `numeric` has
  // num_numeric() values.
  void AppendRow(const std::vector<std::vector<int32_t>>& fields, std::span<const float> numeric);
  // Appends row `row` of `other` (same layout).
  void AppendRowFrom(const EncodedTable& other, int row);
  // The same, without `token` in field `field` (an emptied field gets the OOV row 0);
  // token kWholeField empties the field; token 0 (the OOV row, shared by every unknown
  // token) removes nothing.
  static constexpr int32_t kWholeField = -1;
  void AppendRowFromWithout(const EncodedTable& other, int row, int field, int32_t token);
  // Row `row` of `other` with field `field` replaced by `tokens` minus `skip` (nothing
  // left: the OOV row). A skip of 0 (the OOV row, shared by every unknown token) skips
  // nothing.
  void AppendRowFromReplacing(const EncodedTable& other, int row, int field,
                              std::span<const int32_t> tokens, int32_t skip);
  void Clear();

  std::span<const int32_t> Field(int row, int field) const {
    const size_t at = static_cast<size_t>(row) * num_fields_ + field;
    return {indices_.data() + offsets_[at], static_cast<size_t>(offsets_[at + 1] - offsets_[at])};
  }
  std::span<const float> Numeric(int row) const {
    return {numeric_.data() + static_cast<size_t>(row) * num_numeric_,
            static_cast<size_t>(num_numeric_)};
  }
  // Field 0 of a row is its id; training replaces it with the OOV row (id dropout).
  int32_t Id(int row) const { return Field(row, 0)[0]; }
  void SetId(int row, int32_t id) { indices_[offsets_[static_cast<size_t>(row) * num_fields_]] = id; }

  // Raw storage, for (de)serialisation.
  const std::vector<int32_t>& offsets() const { return offsets_; }
  const std::vector<int32_t>& indices() const { return indices_; }
  const std::vector<float>& numeric() const { return numeric_; }
  // Checks the layout (offsets monotonic and in range, every field non-empty, sizes
  // consistent) since the parts may come from a file.
  static absl::StatusOr<EncodedTable> FromParts(int num_fields, int num_numeric,
                                                std::vector<int32_t> offsets,
                                                std::vector<int32_t> indices,
                                                std::vector<float> numeric);

 private:
  int num_fields_ = 0;
  int num_numeric_ = 0;
  int size_ = 0;
  std::vector<int32_t> offsets_ = {0};
  std::vector<int32_t> indices_;
  std::vector<float> numeric_;
};

}  // namespace twotower

#endif  // TWOTOWER_FEATURES_ENCODED_TABLE_H_
