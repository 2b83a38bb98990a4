// Turns an entity (id + raw feature values) into tower inputs, with state fitted once on
// the training tables and stored in the bundle. The trainer and the server both encode
// through this class, so training and serving cannot disagree on a feature.
#ifndef TWOTOWER_FEATURES_FEATURE_ENCODER_H_
#define TWOTOWER_FEATURES_FEATURE_ENCODER_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "dataset/feature_table.h"
#include "features/encoded_table.h"
#include "features/vocabulary.h"
#include "google/protobuf/map.h"
#include "twotower/v1/bundle.pb.h"
#include "twotower/v1/config.pb.h"
#include "twotower/v1/features.pb.h"

namespace twotower {

// The history rule, the same for a stored history, a training example's and a request's:
// a KIND_HISTORY feature keeps the last `length` items (0 = all) of its distinct items in
// time order. Returns the index of the first item kept out of `size`.
inline size_t RecentHistoryStart(size_t size, int64_t length) {
  return length > 0 && size > static_cast<size_t>(length) ? size - static_cast<size_t>(length) : 0;
}

class FeatureEncoder {
 public:
  FeatureEncoder() = default;

  // Fits vocabularies (ids: from `id_counts`, the training interactions) and numeric
  // statistics on `table`.
  static absl::StatusOr<FeatureEncoder> Fit(
      const std::vector<v1::FeatureSpec>& schema, const FeatureTable& table,
      const absl::flat_hash_map<std::string, int64_t>& id_counts, int64_t id_min_count);
  // Restores the state written by ToState; checks it against the schema.
  static absl::StatusOr<FeatureEncoder> FromState(const std::vector<v1::FeatureSpec>& schema,
                                                  const v1::TowerState& state);
  // Fills state.id and state.features.
  void ToState(v1::TowerState* state) const;

  // Embedding fields: the id, then every KIND_CATEGORICAL / KIND_MULTI_HOT feature in
  // schema order.
  int num_fields() const { return 1 + static_cast<int>(embedded_.size()); }
  int num_numeric() const { return static_cast<int>(numeric_.size()); }
  // Rows of field f's embedding table (including the OOV row).
  int32_t FieldRows(int field) const;
  // Schema entry of embedding field f >= 1.
  const v1::FeatureSpec& FieldSpec(int field) const { return schema_[embedded_[field - 1]]; }
  // Vocabulary of embedding field f >= 1 (empty for hashed and bucketized fields).
  const Vocabulary& FieldVocabulary(int field) const { return vocabularies_[field - 1]; }
  // The embedding row of a raw token of field f >= 1 (derived, hashed or looked up;
  // OOV when unknown). Bucketized fields take the number the token spells.
  int32_t TokenRow(int field, absl::string_view token) const;
  const std::vector<v1::FeatureSpec>& schema() const { return schema_; }
  // Embedding field of the KIND_HISTORY feature, or -1 without one.
  int HistoryField() const;
  const Vocabulary& ids() const { return ids_; }
  EncodedTable NewTable() const { return EncodedTable(num_fields(), num_numeric()); }

  // Appends the encoding of one entity. `values` is schema-aligned, or null when nothing
  // is known but the id. Unknown ids / tokens and missing values map to the OOV row
  // (numeric: the training mean).
  void Encode(absl::string_view id, const std::vector<RawValue>* values, EncodedTable* out) const;

  // Request features -> raw values; an unknown name or a value of the wrong type is an
  // INVALID_ARGUMENT naming the feature.
  absl::StatusOr<std::vector<RawValue>> FromRequest(
      const google::protobuf::Map<std::string, v1::FeatureValue>& features) const;

 private:
  struct NumericState {
    v1::FeatureSpec::Transform transform;
    double mean = 0.0;
    double stddev = 1.0;
  };
  // The raw number of numeric input j for an entity, or nullopt when missing.
  std::optional<double> RawNumber(int j, absl::string_view id, const std::vector<RawValue>* values) const;
  float TransformNumber(int numeric_index, double x) const;

  std::vector<v1::FeatureSpec> schema_;
  Vocabulary ids_;
  std::vector<int> embedded_;            // schema index of embedding field f+1
  std::vector<Vocabulary> vocabularies_; // per embedded field
  std::vector<std::vector<double>> boundaries_;  // per embedded field (KIND_BUCKETIZED)
  std::vector<int> numeric_;             // schema index of numeric input j
  std::vector<NumericState> numeric_state_;
  // Training interaction counts per id, for KIND_POPULARITY features (empty without one).
  absl::flat_hash_map<std::string, int64_t> id_counts_;
};

}  // namespace twotower

#endif  // TWOTOWER_FEATURES_FEATURE_ENCODER_H_
