#include "trainer/config.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "index/item_index.h"
#include "util/status_macros.h"
#include "util/text_proto.h"
#include "util/utf8.h"
#include "util/config_enums.h"

namespace twotower {

namespace {

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("config: ", field, ": ", problem));
}

bool InRange(int64_t value, int64_t lo, int64_t hi) { return value >= lo && value <= hi; }

std::string Range(int64_t lo, int64_t hi) { return absl::StrCat("must be in ", lo, "..", hi); }

// Width of a feature's input to its tower's MLP.
int64_t InputWidth(const v1::FeatureSpec& f) {
  switch (f.kind()) {
    case v1::FeatureSpec::KIND_NUMERIC:
    case v1::FeatureSpec::KIND_POPULARITY:
      return 1;
    default:
      return int64_t{f.embedding_dim()} *
             (ResolvedPooling(f) == v1::FeatureSpec::POOLING_ATTENTION ? std::max(1, f.pooling_heads()) : 1);
  }
}

absl::Status ValidateTable(absl::string_view field, const v1::TableSpec& table) {
  if (table.path().empty()) return Invalid(absl::StrCat(field, ".table.path"), "must be set");
  // A binary config from a newer build may carry values this build does not know.
  if (!v1::TableSpec::Format_IsValid(table.format())) return Invalid(absl::StrCat(field, ".table.format"), "unknown");
  if (!v1::TableSpec::Encoding_IsValid(table.encoding())) {
    return Invalid(absl::StrCat(field, ".table.encoding"), "unknown");
  }
  return absl::OkStatus();
}

absl::Status ValidateColumn(absl::string_view field, const v1::ColumnRef& ref) {
  if (ref.ref_case() == v1::ColumnRef::REF_NOT_SET) return Invalid(field, "must be set");
  if (ref.ref_case() == v1::ColumnRef::kIndex && ref.index() < 0) return Invalid(field, "index must be >= 0");
  if (ref.ref_case() == v1::ColumnRef::kName && ref.name().empty()) return Invalid(field, "name is empty");
  return absl::OkStatus();
}

absl::Status ValidateInteractions(absl::string_view field, const v1::InteractionTableSpec& spec) {
  RETURN_IF_ERROR(ValidateTable(field, spec.table()));
  RETURN_IF_ERROR(ValidateColumn(absl::StrCat(field, ".user_column"), spec.user_column()));
  return ValidateColumn(absl::StrCat(field, ".item_column"), spec.item_column());
}

// The options only some kinds read: on another kind they would be silently ignored.
absl::Status ValidateKindOptions(const std::string& where, const v1::FeatureSpec& f) {
  const v1::FeatureSpec::Kind kind = f.kind();
  const bool tokens = kind == v1::FeatureSpec::KIND_CATEGORICAL || kind == v1::FeatureSpec::KIND_MULTI_HOT;
  const bool number = kind == v1::FeatureSpec::KIND_NUMERIC || kind == v1::FeatureSpec::KIND_BUCKETIZED;
  if (kind != v1::FeatureSpec::KIND_HISTORY &&
      (f.history_length() != 0 || ResolvedHistoryContext(f) != v1::FeatureSpec::HISTORY_CONTEXT_LEAVE_ONE_OUT)) {
    return Invalid(where, "history_length and history_context apply to KIND_HISTORY features only");
  }
  if (!v1::FeatureSpec::Derive_IsValid(f.derive())) return Invalid(where, "unknown derive");
  if (!v1::FeatureSpec::Transform_IsValid(f.transform())) return Invalid(where, "unknown transform");
  if (!v1::FeatureSpec::Pooling_IsValid(f.pooling())) {
    return Invalid(where, "pooling must be POOLING_MEAN, POOLING_SUM or POOLING_ATTENTION");
  }
  if (ResolvedPooling(f) == v1::FeatureSpec::POOLING_ATTENTION && kind != v1::FeatureSpec::KIND_HISTORY) {
    return Invalid(where, "pooling POOLING_ATTENTION applies to KIND_HISTORY features only");
  }
  if (f.pooling_heads() != 0 && ResolvedPooling(f) != v1::FeatureSpec::POOLING_ATTENTION) {
    return Invalid(where, "pooling_heads applies to pooling POOLING_ATTENTION only");
  }
  if (!InRange(f.pooling_heads(), 0, kMaxPoolingHeads)) {
    return Invalid(where, absl::StrCat("pooling_heads ", Range(0, kMaxPoolingHeads)));
  }
  if (!tokens && (f.hash_buckets() != 0 || f.max_vocabulary_size() != 0)) {
    return Invalid(where,
                   "hash_buckets and max_vocabulary_size apply to KIND_CATEGORICAL and KIND_MULTI_HOT "
                   "features only");
  }
  if (kind != v1::FeatureSpec::KIND_MULTI_HOT && !f.separator().empty()) {
    return Invalid(where, "separator applies to KIND_MULTI_HOT features only");
  }
  if (kind != v1::FeatureSpec::KIND_BUCKETIZED && (f.boundaries_size() > 0 || f.quantile_buckets() != 0)) {
    return Invalid(where, "boundaries and quantile_buckets apply to KIND_BUCKETIZED features only");
  }
  if (kind != v1::FeatureSpec::KIND_NUMERIC &&
      (ResolvedTransform(f) != v1::FeatureSpec::TRANSFORM_STANDARDIZE || f.has_default_value())) {
    return Invalid(where, "transform and default_value apply to KIND_NUMERIC features only");
  }
  if (!number && (f.has_clip_min() || f.has_clip_max())) {
    return Invalid(where, "clip_min and clip_max apply to KIND_NUMERIC and KIND_BUCKETIZED features only");
  }
  if (!tokens && !number && ResolvedDerive(f) != v1::FeatureSpec::DERIVE_NONE) {
    return Invalid(where, "derive applies to features read from a column");
  }
  if (f.prefix_length() != 0 && ResolvedDerive(f) != v1::FeatureSpec::DERIVE_PREFIX) {
    return Invalid(where, "prefix_length applies to derive: DERIVE_PREFIX only");
  }
  return absl::OkStatus();
}

// The sizes and settings of f's kind (*histories counts the KIND_HISTORY features).
// Returns whether f is read from columns (false: derived from the interactions).
absl::StatusOr<bool> ValidateKindSettings(const std::string& where, const v1::FeatureSpec& f, int* histories) {
  switch (f.kind()) {
    case v1::FeatureSpec::KIND_CATEGORICAL:
    case v1::FeatureSpec::KIND_MULTI_HOT:
      if (!InRange(f.embedding_dim(), 1, kMaxEmbeddingDim)) {
        return Invalid(where, absl::StrCat("embedding_dim ", Range(1, kMaxEmbeddingDim)));
      }
      if (!InRange(f.hash_buckets(), 0, kMaxHashBuckets)) {
        return Invalid(where, absl::StrCat("hash_buckets ", Range(0, kMaxHashBuckets)));
      }
      if ((int64_t{f.hash_buckets()} + 1) * f.embedding_dim() > kMaxTensorFloats) {
        return Invalid(where, absl::StrCat("hash_buckets x embedding_dim must be <= ", kMaxTensorFloats,
                                           " (the embedding table must fit in a 2 GiB bundle file)"));
      }
      if (f.max_vocabulary_size() < 0) return Invalid(where, "max_vocabulary_size must be >= 0");
      break;
    case v1::FeatureSpec::KIND_BUCKETIZED: {
      if (!InRange(f.embedding_dim(), 1, kMaxEmbeddingDim)) {
        return Invalid(where, absl::StrCat("embedding_dim ", Range(1, kMaxEmbeddingDim)));
      }
      const bool fixed = f.boundaries_size() > 0;
      if (fixed == (f.quantile_buckets() > 0)) {
        return Invalid(where, "KIND_BUCKETIZED needs either boundaries or quantile_buckets");
      }
      if (!fixed && !InRange(f.quantile_buckets(), 2, kMaxBuckets)) {
        return Invalid(where, absl::StrCat("quantile_buckets ", Range(2, kMaxBuckets)));
      }
      if (f.boundaries_size() > kMaxBuckets) {
        return Invalid(where, absl::StrCat("boundaries: at most ", kMaxBuckets));
      }
      for (int b = 1; b < f.boundaries_size(); ++b) {
        if (!(f.boundaries(b) > f.boundaries(b - 1))) return Invalid(where, "boundaries must be strictly ascending");
      }
      break;
    }
    case v1::FeatureSpec::KIND_NUMERIC:
      if (f.embedding_dim() != 0) return Invalid(where, "KIND_NUMERIC features have no embedding_dim");
      break;
    case v1::FeatureSpec::KIND_HISTORY:
      if (!InRange(f.embedding_dim(), 1, kMaxEmbeddingDim)) {
        return Invalid(where, absl::StrCat("embedding_dim ", Range(1, kMaxEmbeddingDim)));
      }
      if (!InRange(f.history_length(), 0, kMaxHistoryLength)) {
        return Invalid(where, absl::StrCat("history_length ", Range(0, kMaxHistoryLength)));
      }
      if (!v1::FeatureSpec::HistoryContext_IsValid(f.history_context())) {
        return Invalid(where, "history_context must be HISTORY_CONTEXT_LEAVE_ONE_OUT or HISTORY_CONTEXT_PRECEDING");
      }
      if (++*histories > 1) return Invalid(where, "at most one KIND_HISTORY feature per tower");
      if (f.has_column() || f.flag_columns_size() > 0) {
        return Invalid(where, "KIND_HISTORY is derived from the interactions: no column");
      }
      return false;
    case v1::FeatureSpec::KIND_POPULARITY:
      if (f.embedding_dim() != 0 || f.has_column() || f.flag_columns_size() > 0) {
        return Invalid(where, "KIND_POPULARITY is derived from the interactions: no column, no embedding_dim");
      }
      return false;
    default:
      return Invalid(where,
                     "kind must be KIND_CATEGORICAL, KIND_MULTI_HOT, KIND_NUMERIC, KIND_BUCKETIZED, "
                     "KIND_POPULARITY or KIND_HISTORY");
  }
  return true;
}

// The columns of a feature read from the table, and its value settings.
absl::Status ValidateColumnsAndValues(const std::string& where, const v1::FeatureSpec& f) {
  if (f.flag_columns_size() > 0) {
    if (f.kind() != v1::FeatureSpec::KIND_MULTI_HOT) return Invalid(where, "flag_columns is for KIND_MULTI_HOT only");
    if (f.has_column()) return Invalid(where, "set either column or flag_columns, not both");
    for (int c = 0; c < f.flag_columns_size(); ++c) {
      RETURN_IF_ERROR(ValidateColumn(absl::StrCat(where, ".flag_columns[", c, "]"), f.flag_columns(c)));
    }
  } else if (absl::Status s = ValidateColumn(absl::StrCat(where, ".column"), f.column()); !s.ok()) {
    return s;
  }
  if (f.min_count() < 0) return Invalid(where, "min_count must be >= 0");
  if (f.prefix_length() < 0) return Invalid(where, "prefix_length must be >= 0");
  if (f.has_clip_min() && f.has_clip_max() && f.clip_min() > f.clip_max()) {
    return Invalid(where, "clip_min must be <= clip_max");
  }
  if (ResolvedPooling(f) == v1::FeatureSpec::POOLING_SUM && f.kind() != v1::FeatureSpec::KIND_MULTI_HOT &&
      f.kind() != v1::FeatureSpec::KIND_HISTORY) {
    return Invalid(where, "pooling applies to KIND_MULTI_HOT and KIND_HISTORY features");
  }
  return absl::OkStatus();
}

absl::Status ValidateFeatures(absl::string_view field, const v1::FeatureTableSpec& spec) {
  if (spec.features_size() == 0 && !spec.has_table()) return absl::OkStatus();  // no features
  // Derived features (KIND_POPULARITY, KIND_HISTORY) come from the interactions: without a
  // feature read from a column, the table is optional (every entity of the interactions has
  // them).
  bool reads_columns = false;
  for (const v1::FeatureSpec& f : spec.features()) {
    reads_columns |= f.kind() != v1::FeatureSpec::KIND_POPULARITY && f.kind() != v1::FeatureSpec::KIND_HISTORY;
  }
  if (reads_columns || spec.has_table()) {
    RETURN_IF_ERROR(ValidateTable(field, spec.table()));
    RETURN_IF_ERROR(ValidateColumn(absl::StrCat(field, ".id_column"), spec.id_column()));
  } else if (spec.has_id_column()) {
    return Invalid(absl::StrCat(field, ".id_column"), "needs a table (derived features need neither)");
  }
  absl::flat_hash_set<std::string> names;
  int histories = 0;
  for (int i = 0; i < spec.features_size(); ++i) {
    const v1::FeatureSpec& f = spec.features(i);
    const std::string where = absl::StrCat(field, ".features[", i, "] (\"", f.name(), "\")");
    if (f.name().empty()) return Invalid(where, "name must be set");
    if (f.name() == "id") return Invalid(where, "the name \"id\" is reserved");
    if (!names.insert(f.name()).second) return Invalid(where, "duplicate feature name");
    RETURN_IF_ERROR(ValidateKindOptions(where, f));
    ASSIGN_OR_RETURN(const bool from_columns, ValidateKindSettings(where, f, &histories));
    if (!from_columns) continue;
    RETURN_IF_ERROR(ValidateColumnsAndValues(where, f));
  }
  return absl::OkStatus();
}

// `features`: the tower's feature table (validated), for the MLP's input width.
absl::Status ValidateTower(absl::string_view field, const v1::TowerSpec& spec,
                           const v1::FeatureTableSpec& features) {
  if (!InRange(spec.id_embedding_dim(), 1, kMaxEmbeddingDim)) {
    return Invalid(absl::StrCat(field, ".id_embedding_dim"), Range(1, kMaxEmbeddingDim));
  }
  for (int h : spec.hidden_dims()) {
    if (!InRange(h, 1, kMaxLayerWidth)) {
      return Invalid(absl::StrCat(field, ".hidden_dims"), absl::StrCat("widths ", Range(1, kMaxLayerWidth)));
    }
  }
  if (spec.hidden_dims_size() > kMaxHiddenLayers) {
    return Invalid(absl::StrCat(field, ".hidden_dims"), absl::StrCat("at most ", kMaxHiddenLayers, " layers"));
  }
  if (!InRange(spec.output_dim(), 1, kMaxOutputDim)) {
    return Invalid(absl::StrCat(field, ".output_dim"), Range(1, kMaxOutputDim));
  }
  if (spec.id_min_count() < 0) return Invalid(absl::StrCat(field, ".id_min_count"), "must be >= 0");
  int64_t width = spec.id_embedding_dim();
  for (const v1::FeatureSpec& f : features.features()) width += InputWidth(f);
  if (width > kMaxTowerInputWidth) {
    return Invalid(field, absl::StrCat("input width (id_embedding_dim + the features' widths) ", width,
                                       " is over ", kMaxTowerInputWidth));
  }
  int64_t dense = 0;
  for (int h : spec.hidden_dims()) {
    dense += (width + 1) * h;
    width = h;
  }
  dense += (width + 1) * spec.output_dim();
  if (dense > kMaxTensorFloats) {
    return Invalid(absl::StrCat(field, ".hidden_dims"),
                   absl::StrCat("the layers have ", dense, " weights, over ", kMaxTensorFloats,
                                " (they must fit in a 2 GiB bundle file)"));
  }
  return absl::OkStatus();
}

}  // namespace

void ApplyDefaults(v1::TrainerConfig* config) {
  v1::TrainingSpec* t = config->mutable_training();
  if (t->objective() == v1::TrainingSpec::OBJECTIVE_UNSPECIFIED) {
    t->set_objective(v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX);
  }
  if (t->epochs() == 0) t->set_epochs(10);
  if (t->batch_size() == 0) t->set_batch_size(256);
  if (t->learning_rate() == 0) t->set_learning_rate(0.002f);
  if (t->temperature() == 0) t->set_temperature(0.1f);
  if (!t->has_num_negatives()) {
    switch (t->objective()) {
      case v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX: t->set_num_negatives(0); break;
      case v1::TrainingSpec::OBJECTIVE_TRIPLET_HINGE:
      case v1::TrainingSpec::OBJECTIVE_TRIPLET_LOGISTIC: t->set_num_negatives(1); break;
      case v1::TrainingSpec::OBJECTIVE_SAMPLED_SOFTMAX: t->set_num_negatives(10); break;
      default: t->set_num_negatives(3);  // pointwise 1:3
    }
  }
  if (!t->has_negative_alpha()) t->set_negative_alpha(0.75f);
  if (!t->has_logq_weight()) t->set_logq_weight(1.0f);
  if (!t->has_cold_logq_weight()) t->set_cold_logq_weight(t->logq_weight());
  if (t->hard_negative_every_epochs() == 0) t->set_hard_negative_every_epochs(1);
  if (t->hard_negative_pool() == 0) t->set_hard_negative_pool(50);
  if (t->pointwise_scale() == 0) t->set_pointwise_scale(10.0f);
  if (t->margin() == 0) t->set_margin(0.3f);
  if (t->pairwise_scale() == 0) t->set_pairwise_scale(10.0f);
  if (t->short_history_max_length() == 0) t->set_short_history_max_length(5);
  if (t->threads() == 0) t->set_threads(1);
  if (t->selection_k() == 0) t->set_selection_k(50);
  if (t->eval_k_size() == 0) {
    for (int k : {10, 50, 100}) t->add_eval_k(k);
  }
  for (v1::TowerSpec* tower : {config->mutable_user_tower(), config->mutable_item_tower()}) {
    if (tower->id_min_count() == 0) tower->set_id_min_count(1);
  }
  for (v1::FeatureTableSpec* table : {config->mutable_data()->mutable_users(),
                                      config->mutable_data()->mutable_items()}) {
    for (v1::FeatureSpec& f : *table->mutable_features()) {
      if (f.kind() == v1::FeatureSpec::KIND_MULTI_HOT && f.separator().empty()) f.set_separator("|");
      if (f.min_count() == 0) f.set_min_count(1);
    }
  }
}

namespace {

// The user tower has a KIND_HISTORY feature with HISTORY_CONTEXT_PRECEDING.
bool HasPrecedingHistory(const v1::FeatureTableSpec& users) {
  return std::any_of(users.features().begin(), users.features().end(), [](const v1::FeatureSpec& f) {
    return f.kind() == v1::FeatureSpec::KIND_HISTORY &&
           ResolvedHistoryContext(f) == v1::FeatureSpec::HISTORY_CONTEXT_PRECEDING;
  });
}

// data: the tables, their features, the history context, the eval sets.
absl::Status ValidateData(const v1::DataSpec& data) {
  if (!data.has_train()) return Invalid("data.train", "must be set");
  RETURN_IF_ERROR(ValidateInteractions("data.train", data.train()));
  RETURN_IF_ERROR(ValidateFeatures("data.users", data.users()));
  RETURN_IF_ERROR(ValidateFeatures("data.items", data.items()));
  // HISTORY_CONTEXT_PRECEDING orders each user's interactions by time: it needs the times.
  // On the item side it would give positives a history as of the example and negatives (and
  // serving) the stored one, a difference the model could learn instead of preferences.
  for (const auto& [side, table] : {std::pair{"data.users", &data.users()}, std::pair{"data.items", &data.items()}}) {
    for (const v1::FeatureSpec& f : table->features()) {
      if (f.kind() != v1::FeatureSpec::KIND_HISTORY || ResolvedHistoryContext(f) != v1::FeatureSpec::HISTORY_CONTEXT_PRECEDING) continue;
      const std::string where = absl::StrCat(side, ".features (\"", f.name(), "\")");
      if (table == &data.items()) return Invalid(where, "history_context HISTORY_CONTEXT_PRECEDING is for the user tower only");
      if (!data.train().has_timestamp_column()) {
        return Invalid(where, "history_context HISTORY_CONTEXT_PRECEDING needs data.train.timestamp_column");
      }
    }
  }
  absl::flat_hash_set<std::string> eval_names;
  for (int i = 0; i < data.eval_size(); ++i) {
    const std::string where = absl::StrCat("data.eval[", i, "]");
    if (data.eval(i).name().empty()) return Invalid(where, "name must be set");
    if (!eval_names.insert(data.eval(i).name()).second) return Invalid(where, "duplicate name");
    RETURN_IF_ERROR(ValidateInteractions(where + ".interactions", data.eval(i).interactions()));
    if (data.eval(i).has_history()) {
      RETURN_IF_ERROR(ValidateInteractions(where + ".history", data.eval(i).history()));
      if (data.eval(i).history().has_label_column()) {
        return Invalid(where + ".history.label_column", "a request's history holds interactions only");
      }
    }
  }
  return absl::OkStatus();
}

// training: the objective, its negatives and scales, logQ, optimizer, id dropout.
absl::Status ValidateObjective(const v1::TrainingSpec& t) {
  if (!v1::TrainingSpec::Objective_IsValid(t.objective()) ||
      t.objective() == v1::TrainingSpec::OBJECTIVE_UNSPECIFIED) {
    return Invalid("training.objective", "unsupported objective");
  }
  const bool in_batch = t.objective() == v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX;
  if (t.num_negatives() < (in_batch ? 0 : 1) || t.num_negatives() > 10000) {
    return Invalid("training.num_negatives", in_batch ? "must be in 0..10000" : "must be in 1..10000");
  }
  if (!(t.negative_alpha() >= 0) || t.negative_alpha() > 2) return Invalid("training.negative_alpha", "must be in [0, 2]");
  if (!(t.hard_negative_fraction() >= 0 && t.hard_negative_fraction() <= 1)) {
    return Invalid("training.hard_negative_fraction", "must be in [0, 1]");
  }
  if (in_batch && t.hard_negative_fraction() > 0) {
    return Invalid("training.hard_negative_fraction", "hard negatives need per-example negatives (not OBJECTIVE_IN_BATCH_SOFTMAX)");
  }
  if (t.hard_negative_every_epochs() < 1) return Invalid("training.hard_negative_every_epochs", "must be >= 1");
  if (!InRange(t.hard_negative_pool(), 1, kMaxHardNegativePool)) {
    return Invalid("training.hard_negative_pool", Range(1, kMaxHardNegativePool));
  }
  for (const auto& [name, value] : {std::pair{"training.pointwise_scale", t.pointwise_scale()},
                                    std::pair{"training.pairwise_scale", t.pairwise_scale()},
                                    std::pair{"training.margin", t.margin()}}) {
    if (!(value > 0) || !std::isfinite(value)) return Invalid(name, "must be > 0");
  }
  if (!(t.logq_weight() >= 0) || !std::isfinite(t.logq_weight())) return Invalid("training.logq_weight", "must be >= 0");
  if (!(t.cold_logq_weight() >= 0) || !std::isfinite(t.cold_logq_weight())) {
    return Invalid("training.cold_logq_weight", "must be >= 0");
  }
  if (t.logq_correction() && t.logq_weight() == 0 && t.cold_logq_weight() != 0) {
    // The cold weight is applied as a multiple of the warm one's column: with that at 0
    // it would be dropped without a word.
    return Invalid("training.cold_logq_weight", "needs logq_weight > 0");
  }
  if (!v1::TrainingSpec::Optimizer_IsValid(t.optimizer())) return Invalid("training.optimizer", "unknown optimizer");
  if (!v1::TrainingSpec::LearningRateSchedule_IsValid(t.learning_rate_schedule())) {
    return Invalid("training.learning_rate_schedule", "unknown schedule");
  }
  for (const auto& [name, value] : {std::pair{"training.user_id_dropout", t.user_id_dropout()},
                                    std::pair{"training.item_id_dropout", t.item_id_dropout()}}) {
    if (!(value >= 0 && value < 1)) return Invalid(name, "must be in [0, 1)");
  }
  return absl::OkStatus();
}

// training: the options of the user history (history dropout, short histories, gaps),
// which need a KIND_HISTORY feature in `users`.
absl::Status ValidateHistoryTraining(const v1::TrainingSpec& t, const v1::FeatureTableSpec& users) {
  // The history options act on the user tower's KIND_HISTORY feature: without one they would
  // be silently ignored.
  const bool user_history = std::any_of(users.features().begin(), users.features().end(), [](const v1::FeatureSpec& f) {
    return f.kind() == v1::FeatureSpec::KIND_HISTORY;
  });
  if (t.has_user_history_dropout()) {
    if (!(t.user_history_dropout() >= 0 && t.user_history_dropout() < 1)) {
      return Invalid("training.user_history_dropout", "must be in [0, 1)");
    }
    if (!user_history) return Invalid("training.user_history_dropout", "needs a KIND_HISTORY feature in data.users");
  }
  if (!(t.short_history_rate() >= 0 && t.short_history_rate() <= 1)) {
    return Invalid("training.short_history_rate", "must be in [0, 1]");
  }
  if (t.short_history_rate() > 0 && !user_history) {
    return Invalid("training.short_history_rate", "needs a KIND_HISTORY feature in data.users");
  }
  if (!InRange(t.short_history_max_length(), 1, kMaxShortHistoryLength)) {
    return Invalid("training.short_history_max_length", Range(1, kMaxShortHistoryLength));
  }
  if (!v1::TrainingSpec::ShortHistoryScope_IsValid(t.short_history_scope())) {
    return Invalid("training.short_history_scope", "must be SHORT_HISTORY_SCOPE_ID_DROPPED or SHORT_HISTORY_SCOPE_ALL");
  }
  if (!v1::TrainingSpec::ShortHistoryFrom_IsValid(t.short_history_from())) {
    return Invalid("training.short_history_from",
                   "must be SHORT_HISTORY_FROM_LAST, SHORT_HISTORY_FROM_FIRST, SHORT_HISTORY_FROM_RANDOM "
                   "or SHORT_HISTORY_FROM_ANY");
  }
  if (ResolvedShortHistoryFrom(t) != v1::TrainingSpec::SHORT_HISTORY_FROM_LAST) {
    if (!HasPrecedingHistory(users)) {
      return Invalid("training.short_history_from",
                     "all but SHORT_HISTORY_FROM_LAST need the user KIND_HISTORY feature's history_context "
                     "HISTORY_CONTEXT_PRECEDING");
    }
  }
  if (t.short_history_rate() > 0 && ResolvedShortHistoryScope(t) == v1::TrainingSpec::SHORT_HISTORY_SCOPE_ID_DROPPED &&
      t.user_id_dropout() == 0) {
    return Invalid("training.short_history_rate", "cuts the histories of the rows user_id_dropout drops; it is 0");
  }
  if (t.short_history_rate() > 0 && ResolvedShortHistoryScope(t) == v1::TrainingSpec::SHORT_HISTORY_SCOPE_ID_DROPPED &&
      !t.has_user_history_dropout()) {
    return Invalid("training.short_history_rate",
                   "the rows whose id is dropped have no history unless user_history_dropout is set");
  }
  if (!InRange(t.history_gap_max(), 0, kMaxHistoryLength)) {
    return Invalid("training.history_gap_max", Range(0, kMaxHistoryLength));
  }
  if (t.history_gap_max() > 0) {
    if (!HasPrecedingHistory(users)) {
      return Invalid("training.history_gap_max", "needs the user KIND_HISTORY feature's history_context HISTORY_CONTEXT_PRECEDING");
    }
  }
  return absl::OkStatus();
}

// training: cold-user balance, threads, selection, epochs, batch, rates, evaluation.
absl::Status ValidateLoop(const v1::TrainingSpec& t, int eval_sets) {
  const bool in_batch = t.objective() == v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX;
  if (!(t.cold_user_balance() >= 0 && t.cold_user_balance() <= 4)) {
    return Invalid("training.cold_user_balance", "must be in [0, 4]");
  }
  if (t.cold_user_balance() != 0 && t.objective() != v1::TrainingSpec::OBJECTIVE_IN_BATCH_SOFTMAX &&
      t.objective() != v1::TrainingSpec::OBJECTIVE_SAMPLED_SOFTMAX) {
    return Invalid("training.cold_user_balance", "is only implemented for the softmax objectives");
  }
  if (t.cold_user_balance() != 0 && t.user_id_dropout() == 0) {
    return Invalid("training.cold_user_balance", "weights the rows user_id_dropout drops; it is 0");
  }
  if (t.threads() < 1 || t.threads() > 256) return Invalid("training.threads", "must be in 1..256");
  if (t.patience() < 0) return Invalid("training.patience", "must be >= 0");
  if (t.log_every_steps() < 0) return Invalid("training.log_every_steps", "must be >= 0");
  if (t.select_best_epoch()) {
    if (eval_sets == 0) return Invalid("training.select_best_epoch", "needs data.eval sets (a validation split)");
    bool has_k = false;
    for (int k : t.eval_k()) has_k |= k == t.selection_k();
    if (!has_k) return Invalid("training.selection_k", "must be one of training.eval_k");
  }
  if (!InRange(t.epochs(), 1, kMaxEpochs)) return Invalid("training.epochs", Range(1, kMaxEpochs));
  if (!InRange(t.batch_size(), 2, kMaxBatchSize)) {
    return Invalid("training.batch_size", absl::StrCat(Range(2, kMaxBatchSize), " (>= 2: in-batch negatives)"));
  }
  // Item rows one step embeds: the batch's positives and its negatives (shared by the batch
  // for OBJECTIVE_IN_BATCH_SOFTMAX, per example otherwise).
  const int64_t item_rows = in_batch ? int64_t{t.batch_size()} + t.num_negatives()
                                     : int64_t{t.batch_size()} * (1 + t.num_negatives());
  if (item_rows > kMaxItemRowsPerStep) {
    return Invalid("training.num_negatives",
                   absl::StrCat("with batch_size ", t.batch_size(), " a step embeds ", item_rows,
                                " items, over ", kMaxItemRowsPerStep));
  }
  if (!(t.learning_rate() > 0) || !std::isfinite(t.learning_rate())) return Invalid("training.learning_rate", "must be > 0");
  if (!(t.temperature() > 0) || !std::isfinite(t.temperature())) return Invalid("training.temperature", "must be > 0");
  if (t.weight_decay() < 0) return Invalid("training.weight_decay", "must be >= 0");
  for (int k : t.eval_k()) {
    if (!InRange(k, 1, kMaxEvalK)) return Invalid("training.eval_k", absl::StrCat("cut-offs ", Range(1, kMaxEvalK)));
  }
  if (t.eval_every_epochs() < 0) return Invalid("training.eval_every_epochs", "must be >= 0");
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTrainerConfig(const v1::TrainerConfig& config) {
  if (absl::Status s = CheckUtf8Fields(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", s.message()));
  }
  // The bundle's MANIFEST carries the config as text.
  if (const size_t text = ToTextProto(config).size(); text > static_cast<size_t>(kMaxConfigTextBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("config: its text form is ", text, " bytes, over the ",
                                                   kMaxConfigTextBytes, " a bundle MANIFEST holds"));
  }
  RETURN_IF_ERROR(ValidateData(config.data()));
  RETURN_IF_ERROR(ValidateTower("user_tower", config.user_tower(), config.data().users()));
  RETURN_IF_ERROR(ValidateTower("item_tower", config.item_tower(), config.data().items()));
  if (config.user_tower().output_dim() != config.item_tower().output_dim()) {
    return Invalid("item_tower.output_dim",
                   absl::StrCat("must equal user_tower.output_dim (", config.user_tower().output_dim(), ")"));
  }
  const v1::TrainingSpec& t = config.training();
  RETURN_IF_ERROR(ValidateObjective(t));
  RETURN_IF_ERROR(ValidateHistoryTraining(t, config.data().users()));
  RETURN_IF_ERROR(ValidateLoop(t, config.data().eval_size()));
  // The index persisted in the bundle: a form the server takes (what needs the items, e.g.
  // IVF's nlist against the item count, is checked once the item table is read).
  if (const std::string& factory = config.export_().index_factory(); !factory.empty()) {
    if (absl::Status s = ValidateIndexOptions(IndexOptions{factory, 0, 0}); !s.ok()) {
      return Invalid("export.index_factory", s.message());
    }
  }
  return absl::OkStatus();
}

namespace {

// Merges each entry of *overrides whose name `into` has into that entry and removes it
// from *overrides, so that the MergeFrom that follows appends only new names.
template <typename Entry>
void MergeByName(google::protobuf::RepeatedPtrField<Entry>* overrides,
                 google::protobuf::RepeatedPtrField<Entry>* into) {
  google::protobuf::RepeatedPtrField<Entry> appended;
  for (Entry& entry : *overrides) {
    const auto same = std::find_if(into->begin(), into->end(),
                                   [&](const Entry& e) { return !entry.name().empty() && e.name() == entry.name(); });
    if (same != into->end()) {
      same->MergeFrom(entry);
    } else {
      *appended.Add() = std::move(entry);
    }
  }
  overrides->Swap(&appended);
}

}  // namespace

absl::Status ApplyOverride(absl::string_view text, v1::TrainerConfig* config) {
  v1::TrainerConfig overrides;
  RETURN_IF_ERROR(ParseTextProto(text, "override", &overrides));
  if (overrides.has_data()) {  // (only what the override sets: no empty messages added)
    v1::DataSpec* data = overrides.mutable_data();
    if (data->has_users()) {
      MergeByName(data->mutable_users()->mutable_features(),
                  config->mutable_data()->mutable_users()->mutable_features());
    }
    if (data->has_items()) {
      MergeByName(data->mutable_items()->mutable_features(),
                  config->mutable_data()->mutable_items()->mutable_features());
    }
    MergeByName(data->mutable_eval(), config->mutable_data()->mutable_eval());
  }
  config->MergeFrom(overrides);
  if (!overrides.training().has_num_negatives() &&
      overrides.training().objective() != v1::TrainingSpec::OBJECTIVE_UNSPECIFIED) {
    config->mutable_training()->clear_num_negatives();
  }
  ApplyDefaults(config);
  return absl::OkStatus();
}

absl::StatusOr<v1::TrainerConfig> LoadTrainerConfig(const std::string& path) {
  v1::TrainerConfig config;
  ReadFileOptions options;
  options.max_bytes = kMaxConfigBytes;
  RETURN_IF_ERROR(ReadTextProtoFile(path, &config, options));
  ApplyDefaults(&config);
  if (absl::Status s = ValidateTrainerConfig(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return config;
}

}  // namespace twotower
