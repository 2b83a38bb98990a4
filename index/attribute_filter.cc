#include "index/attribute_filter.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace twotower {

AttributeFilter::AttributeFilter(const FeatureEncoder& encoder, const EncodedTable& rows)
    : encoder_(&encoder), rows_(rows.size()) {
  postings_.resize(encoder_->num_fields());
  for (int f = 1; f < encoder_->num_fields(); ++f) {
    postings_[f].resize(encoder_->FieldRows(f));
    for (int r = 0; r < rows_; ++r) {
      for (int32_t token : rows.Field(r, f)) postings_[f][token].push_back(r);
    }
  }
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
  for (const v1::ItemFilter& filter : filters) {
    if (absl::StatusOr<int> field = FieldOf(filter); !field.ok()) return field.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> AttributeFilter::Allowed(
    const google::protobuf::RepeatedPtrField<v1::ItemFilter>& filters) const {
  std::vector<uint8_t> allowed(rows_, 1);
  std::vector<uint8_t> matches(rows_);
  for (const v1::ItemFilter& filter : filters) {
    absl::StatusOr<int> field_or = FieldOf(filter);
    if (!field_or.ok()) return field_or.status();
    const int field = *field_or;
    std::fill(matches.begin(), matches.end(), 0);
    for (const std::string& value : filter.any_of()) {
      const int32_t token = encoder_->TokenRow(field, value);
      if (token == Vocabulary::kOov) continue;  // rows with OOV are "unknown", not a match
      for (int32_t r : postings_[field][token]) matches[r] = 1;
    }
    for (int r = 0; r < rows_; ++r) allowed[r] &= matches[r];
  }
  return allowed;
}

}  // namespace twotower
