#include "index/attribute_filter.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

// INVALID_ARGUMENT for more filters than Allowed takes.
absl::Status CheckCount(const google::protobuf::RepeatedPtrField<v1::ItemFilter>& filters) {
  if (filters.size() > AttributeFilter::kMaxFilters) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", AttributeFilter::kMaxFilters, " filters, got ", filters.size()));
  }
  return absl::OkStatus();
}

}  // namespace

AttributeFilter::AttributeFilter(const FeatureEncoder& encoder, const EncodedTable& rows)
    : encoder_(&encoder), rows_(rows.size()) {
  postings_.resize(encoder_->num_fields());
  for (int f = 1; f < encoder_->num_fields(); ++f) {
    // Counted, then filled: exactly one array of rows per field.
    Postings& p = postings_[f];
    p.starts.assign(static_cast<size_t>(encoder_->FieldRows(f)) + 1, 0);
    for (int r = 0; r < rows_; ++r) {
      for (int32_t token : rows.Field(r, f)) ++p.starts[token + 1];
    }
    for (size_t t = 1; t < p.starts.size(); ++t) p.starts[t] += p.starts[t - 1];
    p.rows.resize(static_cast<size_t>(p.starts.back()));
    std::vector<int64_t> next(p.starts.begin(), p.starts.end() - 1);
    for (int r = 0; r < rows_; ++r) {
      for (int32_t token : rows.Field(r, f)) p.rows[next[token]++] = r;
    }
  }
}

size_t AttributeFilter::MemoryBytes() const {
  size_t bytes = postings_.capacity() * sizeof(Postings);
  for (const Postings& p : postings_) bytes += p.starts.capacity() * sizeof(int64_t) + p.rows.capacity() * sizeof(int32_t);
  return bytes;
}

absl::StatusOr<int> AttributeFilter::FieldOf(const v1::ItemFilter& filter) const {
  int field = 0;
  for (int f = 1; f < encoder_->num_fields(); ++f) {
    if (encoder_->FieldSpec(f).name() == filter.feature()) field = f;
  }
  if (field == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "filter on \"", filter.feature(),
        "\": not a categorical or multi-hot item feature of this model"));
  }
  if (filter.any_of_size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("filter on \"", filter.feature(), "\" has no any_of values"));
  }
  return field;
}

absl::Status AttributeFilter::Check(
    const google::protobuf::RepeatedPtrField<v1::ItemFilter>& filters) const {
  RETURN_IF_ERROR(CheckCount(filters));
  for (const v1::ItemFilter& filter : filters) {
    if (absl::StatusOr<int> field = FieldOf(filter); !field.ok()) return field.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> AttributeFilter::Allowed(
    const google::protobuf::RepeatedPtrField<v1::ItemFilter>& filters) const {
  RETURN_IF_ERROR(CheckCount(filters));
  // passed[r] = how many of the filters so far row r passes. A row reaches filter f's
  // count only through f's postings, once (rows already at f + 1 are skipped), so the
  // cost is one pass over the rows plus the postings of the values asked for, not a
  // pass over the catalogue per filter.
  std::vector<uint8_t> passed(rows_, 0);
  uint8_t f = 0;
  for (const v1::ItemFilter& filter : filters) {
    ASSIGN_OR_RETURN(int field, FieldOf(filter));
    for (const std::string& value : filter.any_of()) {
      const int32_t token = encoder_->TokenRow(field, value);
      if (token == Vocabulary::kOov) continue;  // rows with OOV are "unknown", not a match
      const Postings& p = postings_[field];
      for (int64_t i = p.starts[token]; i < p.starts[token + 1]; ++i) {
        const int32_t r = p.rows[i];
        if (passed[r] == f) passed[r] = f + 1;
      }
    }
    ++f;
  }
  for (uint8_t& row : passed) row = row == f ? 1 : 0;
  return passed;
}

}  // namespace twotower
