#include "features/encoded_table.h"

namespace twotower {

EncodedTable::EncodedTable(int num_fields, int num_numeric)
    : num_fields_(num_fields), num_numeric_(num_numeric) {}

void EncodedTable::AppendRow(const std::vector<std::vector<int32_t>>& fields,
                             std::span<const float> numeric) {
  for (const std::vector<int32_t>& rows : fields) {
    indices_.insert(indices_.end(), rows.begin(), rows.end());
    offsets_.push_back(static_cast<int32_t>(indices_.size()));
  }
  numeric_.insert(numeric_.end(), numeric.begin(), numeric.end());
  ++size_;
}

void EncodedTable::AppendRowFrom(const EncodedTable& other, int row) {
  for (int f = 0; f < num_fields_; ++f) {
    const std::span<const int32_t> rows = other.Field(row, f);
    indices_.insert(indices_.end(), rows.begin(), rows.end());
    offsets_.push_back(static_cast<int32_t>(indices_.size()));
  }
  const std::span<const float> numeric = other.Numeric(row);
  numeric_.insert(numeric_.end(), numeric.begin(), numeric.end());
  ++size_;
}

void EncodedTable::AppendRowFromWithout(const EncodedTable& other, int row, int field,
                                        int32_t token) {
  for (int f = 0; f < num_fields_; ++f) {
    const std::span<const int32_t> rows = other.Field(row, f);
    const size_t before = indices_.size();
    for (const int32_t r : rows) {
      const bool drop = f == field && (token == kWholeField || (token != 0 && r == token));
      if (!drop) indices_.push_back(r);
    }
    if (indices_.size() == before) indices_.push_back(0);  // nothing left: OOV
    offsets_.push_back(static_cast<int32_t>(indices_.size()));
  }
  const std::span<const float> numeric = other.Numeric(row);
  numeric_.insert(numeric_.end(), numeric.begin(), numeric.end());
  ++size_;
}

void EncodedTable::AppendRowFromReplacing(const EncodedTable& other, int row, int field,
                                          std::span<const int32_t> tokens, int32_t skip) {
  for (int f = 0; f < num_fields_; ++f) {
    const size_t before = indices_.size();
    if (f == field) {
      for (const int32_t r : tokens) {
        if (skip == 0 || r != skip) indices_.push_back(r);
      }
    } else {
      const std::span<const int32_t> rows = other.Field(row, f);
      indices_.insert(indices_.end(), rows.begin(), rows.end());
    }
    if (indices_.size() == before) indices_.push_back(0);  // nothing: OOV
    offsets_.push_back(static_cast<int32_t>(indices_.size()));
  }
  const std::span<const float> numeric = other.Numeric(row);
  numeric_.insert(numeric_.end(), numeric.begin(), numeric.end());
  ++size_;
}

void EncodedTable::Clear() {
  size_ = 0;
  offsets_.assign(1, 0);
  indices_.clear();
  numeric_.clear();
}

absl::StatusOr<EncodedTable> EncodedTable::FromParts(int num_fields, int num_numeric,
                                                     std::vector<int32_t> offsets,
                                                     std::vector<int32_t> indices,
                                                     std::vector<float> numeric) {
  if (num_fields < 1 || num_numeric < 0 || offsets.empty() ||
      (offsets.size() - 1) % num_fields != 0 || offsets.front() != 0 ||
      offsets.back() != static_cast<int64_t>(indices.size())) {
    return absl::InvalidArgumentError("encoded table: inconsistent offsets");
  }
  for (size_t i = 1; i < offsets.size(); ++i) {
    if (offsets[i] <= offsets[i - 1]) {
      return absl::InvalidArgumentError("encoded table: empty field or decreasing offsets");
    }
  }
  const size_t rows = (offsets.size() - 1) / num_fields;
  if (numeric.size() != rows * num_numeric) {
    return absl::InvalidArgumentError("encoded table: numeric size does not match rows");
  }
  EncodedTable table(num_fields, num_numeric);
  table.size_ = static_cast<int>(rows);
  table.offsets_ = std::move(offsets);
  table.indices_ = std::move(indices);
  table.numeric_ = std::move(numeric);
  return table;
}

}  // namespace twotower
