// Users or items with raw (untransformed) feature values, read from a table according to
// the feature schema. features/ turns raw values into model inputs.
#ifndef TWOTOWER_DATASET_FEATURE_TABLE_H_
#define TWOTOWER_DATASET_FEATURE_TABLE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

// One feature's value for one entity, before vocabularies / statistics are applied.
struct RawValue {
  std::vector<std::string> tokens;  // KIND_CATEGORICAL: 0 or 1 token; KIND_MULTI_HOT: 0..n tokens
  double number = 0.0;              // KIND_NUMERIC
  bool has_number = false;          // KIND_NUMERIC: false = missing
};

struct FeatureTable {
  std::vector<std::string> ids;
  std::vector<std::vector<RawValue>> values;  // [row][feature], schema order
  // Rows left out by skip_bad_rows: "source:line: problem".
  std::vector<std::string> skipped;
};

absl::StatusOr<FeatureTable> ReadFeatureTable(const v1::FeatureTableSpec& spec,
                                              const std::string& base_dir);

}  // namespace twotower

#endif  // TWOTOWER_DATASET_FEATURE_TABLE_H_
