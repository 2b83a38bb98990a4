#include "features/feature_encoder.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "features/transforms.h"
#include "util/config_enums.h"
#include "util/status_macros.h"

namespace twotower {

namespace {
double Pretransform(v1::FeatureSpec::Transform transform, double x) {
  return transform == v1::FeatureSpec::TRANSFORM_LOG1P_STANDARDIZE ? std::log1p(std::max(x, 0.0)) : x;
}

bool IsNumeric(v1::FeatureSpec::Kind kind) {
  return kind == v1::FeatureSpec::KIND_NUMERIC || kind == v1::FeatureSpec::KIND_POPULARITY;
}

// The number a raw value holds after the spec's derivation and clipping, if any.
std::optional<double> NumberOf(const v1::FeatureSpec& spec, const RawValue& value) {
  std::optional<double> x;
  if (value.has_number) {
    x = value.number;
  } else if (!value.tokens.empty()) {
    x = ParseNumber(DeriveValue(spec, value.tokens.front()));
  }
  if (!x.has_value()) return std::nullopt;
  return Clip(spec, *x);
}

// Popularity is always log1p + standardise, whatever the spec says.
v1::FeatureSpec::Transform TransformOf(const v1::FeatureSpec& spec) {
  return spec.kind() == v1::FeatureSpec::KIND_POPULARITY ? v1::FeatureSpec::TRANSFORM_LOG1P_STANDARDIZE
                                                    : ResolvedTransform(spec);
}

// A vocabulary holds its tokens in one StringTable, which takes at most 4 GiB of
// characters (more than a bundle file can hold anyway): FAILED_PRECONDITION past that.
absl::Status CheckVocabularyFits(absl::string_view what, const absl::flat_hash_map<std::string, int64_t>& counts) {
  size_t chars = 0;
  for (const auto& [token, count] : counts) chars += token.size();
  if (chars > StringTable::kMaxChars || counts.size() > StringTable::kMaxStrings) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": ", counts.size(), " distinct values of ", chars,
                                                      " characters in all, more than a vocabulary holds"));
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<FeatureEncoder> FeatureEncoder::Fit(
    const std::vector<v1::FeatureSpec>& schema, const FeatureTable& table,
    const absl::flat_hash_map<std::string, int64_t>& id_counts, int64_t id_min_count) {
  FeatureEncoder encoder;
  encoder.schema_ = schema;
  RETURN_IF_ERROR(CheckVocabularyFits("ids", id_counts));
  encoder.ids_ = Vocabulary::Fit(id_counts, std::max<int64_t>(1, id_min_count));
  for (size_t f = 0; f < schema.size(); ++f) {
    const v1::FeatureSpec& spec = schema[f];
    if (IsNumeric(spec.kind())) {
      double sum = 0, sum_sq = 0;
      int64_t n = 0;
      const auto add = [&](double raw) {
        const double x = Pretransform(TransformOf(spec), raw);
        sum += x;
        sum_sq += x * x;
        ++n;
      };
      if (spec.kind() == v1::FeatureSpec::KIND_POPULARITY) {
        encoder.id_counts_ = id_counts;
        // Statistics over the table's entities (or over the ids seen, without a table).
        if (table.ids.empty()) {
          for (const auto& [id, count] : id_counts) add(static_cast<double>(count));
        }
        for (const std::string& id : table.ids) {
          const auto it = id_counts.find(id);
          add(it == id_counts.end() ? 0.0 : static_cast<double>(it->second));
        }
      } else {
        for (const std::vector<RawValue>& row : table.values) {
          if (const std::optional<double> x = NumberOf(spec, row[f])) add(*x);
        }
      }
      NumericState state{TransformOf(spec), 0.0, 1.0};
      if (state.transform != v1::FeatureSpec::TRANSFORM_IDENTITY && n > 0) {
        state.mean = sum / n;
        const double var = std::max(0.0, sum_sq / n - state.mean * state.mean);
        state.stddev = var > 1e-12 ? std::sqrt(var) : 1.0;
      }
      encoder.numeric_.push_back(static_cast<int>(f));
      encoder.numeric_state_.push_back(state);
      continue;
    }
    encoder.embedded_.push_back(static_cast<int>(f));
    if (spec.kind() == v1::FeatureSpec::KIND_BUCKETIZED) {
      std::vector<double> boundaries(spec.boundaries().begin(), spec.boundaries().end());
      if (boundaries.empty()) {
        std::vector<double> values;
        for (const std::vector<RawValue>& row : table.values) {
          if (const std::optional<double> x = NumberOf(spec, row[f])) values.push_back(*x);
        }
        boundaries = QuantileBoundaries(std::move(values), spec.quantile_buckets());
      }
      encoder.vocabularies_.emplace_back();
      encoder.boundaries_.push_back(std::move(boundaries));
      continue;
    }
    absl::flat_hash_map<std::string, int64_t> counts;
    if (spec.hash_buckets() == 0) {
      for (const std::vector<RawValue>& row : table.values) {
        for (const std::string& token : row[f].tokens) ++counts[DeriveValue(spec, token)];
      }
    }
    if (absl::Status s = CheckVocabularyFits(absl::StrCat("feature \"", spec.name(), "\""), counts); !s.ok()) {
      return s;
    }
    encoder.vocabularies_.push_back(
        Vocabulary::Fit(counts, std::max(1, spec.min_count()), spec.max_vocabulary_size()));
    encoder.boundaries_.emplace_back();
  }
  return encoder;
}

absl::StatusOr<FeatureEncoder> FeatureEncoder::FromState(
    const std::vector<v1::FeatureSpec>& schema, const v1::TowerState& state) {
  if (state.features_size() != static_cast<int>(schema.size())) {
    return absl::InvalidArgumentError(absl::StrCat("tower state has ", state.features_size(),
                                                   " features, schema has ", schema.size()));
  }
  FeatureEncoder encoder;
  encoder.schema_ = schema;
  encoder.ids_ = Vocabulary::FromTokens(state.id().vocabulary());
  for (size_t f = 0; f < schema.size(); ++f) {
    const v1::FeatureState& fs = state.features(static_cast<int>(f));
    if (fs.name() != schema[f].name()) {
      return absl::InvalidArgumentError(absl::StrCat("tower state feature ", f, " is \"",
                                                     fs.name(), "\", schema says \"",
                                                     schema[f].name(), "\""));
    }
    if (IsNumeric(schema[f].kind())) {
      if (!(fs.stddev() > 0) || !std::isfinite(fs.mean())) {
        return absl::InvalidArgumentError(
            absl::StrCat("feature \"", fs.name(), "\": invalid numeric statistics"));
      }
      if (schema[f].kind() == v1::FeatureSpec::KIND_POPULARITY) {
        if (fs.counts_size() != fs.vocabulary_size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("feature \"", fs.name(), "\": counts do not match ids"));
        }
        for (int i = 0; i < fs.counts_size(); ++i) {
          encoder.id_counts_[fs.vocabulary(i)] = fs.counts(i);
        }
      }
      encoder.numeric_.push_back(static_cast<int>(f));
      encoder.numeric_state_.push_back({TransformOf(schema[f]), fs.mean(), fs.stddev()});
    } else {
      encoder.embedded_.push_back(static_cast<int>(f));
      encoder.vocabularies_.push_back(
          Vocabulary::FromTokens(fs.vocabulary()));
      std::vector<double> boundaries(fs.boundaries().begin(), fs.boundaries().end());
      if (!std::is_sorted(boundaries.begin(), boundaries.end())) {
        return absl::InvalidArgumentError(
            absl::StrCat("feature \"", fs.name(), "\": boundaries are not ascending"));
      }
      encoder.boundaries_.push_back(std::move(boundaries));
    }
  }
  return encoder;
}

void FeatureEncoder::ToState(v1::TowerState* state) const {
  state->mutable_id()->set_name("id");
  for (const absl::string_view token : ids_.tokens()) {
    state->mutable_id()->add_vocabulary(token.data(), token.size());
  }
  size_t e = 0, n = 0;
  for (size_t f = 0; f < schema_.size(); ++f) {
    v1::FeatureState* fs = state->add_features();
    fs->set_name(schema_[f].name());
    if (e < embedded_.size() && embedded_[e] == static_cast<int>(f)) {
      for (const absl::string_view token : vocabularies_[e].tokens()) fs->add_vocabulary(token.data(), token.size());
      for (const double b : boundaries_[e]) fs->add_boundaries(b);
      ++e;
    } else {
      fs->set_mean(numeric_state_[n].mean);
      fs->set_stddev(numeric_state_[n].stddev);
      if (schema_[f].kind() == v1::FeatureSpec::KIND_POPULARITY) {
        // Sorted, so the same model always serialises to the same bytes.
        std::vector<std::pair<std::string, int64_t>> counts(id_counts_.begin(), id_counts_.end());
        std::sort(counts.begin(), counts.end());
        for (const auto& [id, count] : counts) {
          fs->add_vocabulary(id);
          fs->add_counts(count);
        }
      }
      ++n;
    }
  }
}

int FeatureEncoder::HistoryField() const {
  for (int f = 1; f < num_fields(); ++f) {
    if (FieldSpec(f).kind() == v1::FeatureSpec::KIND_HISTORY) return f;
  }
  return -1;
}

int32_t FeatureEncoder::FieldRows(int field) const {
  if (field == 0) return ids_.rows();
  const v1::FeatureSpec& spec = FieldSpec(field);
  if (spec.kind() == v1::FeatureSpec::KIND_BUCKETIZED) {
    return static_cast<int32_t>(boundaries_[field - 1].size()) + 2;
  }
  if (spec.hash_buckets() > 0) return spec.hash_buckets() + 1;
  return vocabularies_[field - 1].rows();
}

int32_t FeatureEncoder::TokenRow(int field, absl::string_view token) const {
  const v1::FeatureSpec& spec = FieldSpec(field);
  if (spec.kind() == v1::FeatureSpec::KIND_BUCKETIZED) {
    RawValue value;
    value.tokens.emplace_back(token);
    const std::optional<double> x = NumberOf(spec, value);
    return x.has_value() ? BucketOf(boundaries_[field - 1], *x) : Vocabulary::kOov;
  }
  const std::string derived = DeriveValue(spec, token);
  if (spec.hash_buckets() > 0) {
    return 1 + static_cast<int32_t>(StableHash(derived) % static_cast<uint64_t>(spec.hash_buckets()));
  }
  return vocabularies_[field - 1].Lookup(derived);
}

float FeatureEncoder::TransformNumber(int j, double x) const {
  const NumericState& s = numeric_state_[j];
  return static_cast<float>((Pretransform(s.transform, x) - s.mean) / s.stddev);
}

void FeatureEncoder::Encode(absl::string_view id, const std::vector<RawValue>* values,
                            EncodedTable* out) const {
  std::vector<std::vector<int32_t>> fields(num_fields());
  fields[0].push_back(ids_.Lookup(id));
  for (size_t e = 0; e < embedded_.size(); ++e) {
    std::vector<int32_t>& rows = fields[e + 1];
    const v1::FeatureSpec& spec = schema_[embedded_[e]];
    if (values != nullptr && spec.kind() == v1::FeatureSpec::KIND_BUCKETIZED) {
      if (const std::optional<double> x = NumberOf(spec, (*values)[embedded_[e]])) {
        rows.push_back(BucketOf(boundaries_[e], *x));
      }
    } else if (values != nullptr && spec.kind() == v1::FeatureSpec::KIND_HISTORY) {
      // As training stores a history: distinct ids (first occurrence kept), then only the
      // last history_length of them, so a request's long or repetitive list is cut the way
      // the model saw histories in training.
      const std::vector<std::string>& tokens = (*values)[embedded_[e]].tokens;
      std::vector<const std::string*> distinct;
      absl::flat_hash_set<absl::string_view> seen;
      for (const std::string& token : tokens) {
        if (seen.insert(token).second) distinct.push_back(&token);
      }
      for (size_t t = RecentHistoryStart(distinct.size(), spec.history_length()); t < distinct.size(); ++t)
        rows.push_back(TokenRow(static_cast<int>(e) + 1, *distinct[t]));
    } else if (values != nullptr) {
      for (const std::string& token : (*values)[embedded_[e]].tokens) {
        rows.push_back(TokenRow(static_cast<int>(e) + 1, token));
      }
    }
    if (rows.empty()) rows.push_back(Vocabulary::kOov);
  }
  std::vector<float> numeric(numeric_.size(), 0.0f);
  for (size_t j = 0; j < numeric_.size(); ++j) {
    if (const std::optional<double> x = RawNumber(static_cast<int>(j), id, values)) {
      numeric[j] = TransformNumber(static_cast<int>(j), *x);
    }
  }
  out->AppendRow(fields, numeric);
}

std::optional<double> FeatureEncoder::RawNumber(int j, absl::string_view id,
                                                const std::vector<RawValue>* values) const {
  if (schema_[numeric_[j]].kind() == v1::FeatureSpec::KIND_POPULARITY) {
    const auto it = id_counts_.find(id);
    return it == id_counts_.end() ? 0.0 : static_cast<double>(it->second);
  }
  const v1::FeatureSpec& spec = schema_[numeric_[j]];
  std::optional<double> x;
  if (values != nullptr) x = NumberOf(spec, (*values)[numeric_[j]]);
  if (!x.has_value() && spec.has_default_value()) x = Clip(spec, spec.default_value());
  return x;
}

absl::StatusOr<std::vector<RawValue>> FeatureEncoder::FromRequest(
    const google::protobuf::Map<std::string, v1::FeatureValue>& features) const {
  std::vector<RawValue> values(schema_.size());
  for (const auto& [name, value] : features) {
    size_t f = 0;
    while (f < schema_.size() && schema_[f].name() != name) ++f;
    if (f == schema_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown feature \"", name, "\""));
    }
    RawValue& raw = values[f];
    const v1::FeatureSpec::Kind kind = schema_[f].kind();
    if (kind == v1::FeatureSpec::KIND_POPULARITY) {
      return absl::InvalidArgumentError(absl::StrCat(
          "feature \"", name, "\" is derived from the training data and cannot be given"));
    }
    const std::string& feature = name;  // a structured binding cannot be captured (C++17)
    const auto wrong_type = [&feature](absl::string_view expected) {
      return absl::InvalidArgumentError(
          absl::StrCat("feature \"", feature, "\" expects a ", expected, " value"));
    };
    switch (value.value_case()) {
      case v1::FeatureValue::kCategorical:
        // A derived number ("01-Jan-1995" -> year) may arrive as its raw string.
        if ((kind == v1::FeatureSpec::KIND_NUMERIC || kind == v1::FeatureSpec::KIND_BUCKETIZED) &&
            ResolvedDerive(schema_[f]) == v1::FeatureSpec::DERIVE_NONE) {
          return wrong_type("numeric");
        }
        raw.tokens.push_back(value.categorical());
        break;
      case v1::FeatureValue::kCategoricalInt:
        if (kind == v1::FeatureSpec::KIND_NUMERIC || kind == v1::FeatureSpec::KIND_BUCKETIZED) {
          return wrong_type("numeric");
        }
        raw.tokens.push_back(absl::StrCat(value.categorical_int()));
        break;
      case v1::FeatureValue::kMultiHot:
        if (kind != v1::FeatureSpec::KIND_MULTI_HOT && kind != v1::FeatureSpec::KIND_HISTORY) {
          return wrong_type(kind == v1::FeatureSpec::KIND_NUMERIC ? "numeric" : "categorical");
        }
        raw.tokens.assign(value.multi_hot().values().begin(), value.multi_hot().values().end());
        break;
      case v1::FeatureValue::kNumeric:
        if (kind != v1::FeatureSpec::KIND_NUMERIC && kind != v1::FeatureSpec::KIND_BUCKETIZED) {
          return wrong_type("categorical");
        }
        if (!std::isfinite(value.numeric())) return wrong_type("finite numeric");
        raw.number = value.numeric();
        raw.has_number = true;
        break;
      case v1::FeatureValue::VALUE_NOT_SET:
        return absl::InvalidArgumentError(absl::StrCat("feature \"", name, "\" has no value"));
    }
  }
  return values;
}

}  // namespace twotower
