// The value a config enum field stands for (proto/twotower/v1/config.proto). Every enum
// there has a zero value *_UNSPECIFIED: the field left unset. Where the field has a
// documented default, unset means that default, and these functions are the one place
// that says so; code reads those fields through them, never through the raw accessor.
// Kind and Objective have no such function: an unset kind is an error, and an unset
// objective is filled in by ApplyDefaults (trainer/config.h).
// Values outside the enum (a binary config from a newer build) are returned as they are;
// ValidateTrainerConfig refuses them.
#ifndef TWOTOWER_UTIL_CONFIG_ENUMS_H_
#define TWOTOWER_UTIL_CONFIG_ENUMS_H_

#include "twotower/v1/config.pb.h"

namespace twotower {

inline v1::TableSpec::Format ResolvedFormat(const v1::TableSpec& t) {
  return t.format() == v1::TableSpec::FORMAT_UNSPECIFIED ? v1::TableSpec::FORMAT_AUTO : t.format();
}

inline v1::TableSpec::Encoding ResolvedEncoding(const v1::TableSpec& t) {
  return t.encoding() == v1::TableSpec::ENCODING_UNSPECIFIED ? v1::TableSpec::ENCODING_UTF8
                                                             : t.encoding();
}

inline v1::FeatureSpec::Pooling ResolvedPooling(const v1::FeatureSpec& f) {
  return f.pooling() == v1::FeatureSpec::POOLING_UNSPECIFIED ? v1::FeatureSpec::POOLING_MEAN
                                                             : f.pooling();
}

inline v1::FeatureSpec::Derive ResolvedDerive(const v1::FeatureSpec& f) {
  return f.derive() == v1::FeatureSpec::DERIVE_UNSPECIFIED ? v1::FeatureSpec::DERIVE_NONE : f.derive();
}

inline v1::FeatureSpec::Transform ResolvedTransform(const v1::FeatureSpec& f) {
  return f.transform() == v1::FeatureSpec::TRANSFORM_UNSPECIFIED ? v1::FeatureSpec::TRANSFORM_STANDARDIZE
                                                                 : f.transform();
}

inline v1::FeatureSpec::HistoryContext ResolvedHistoryContext(const v1::FeatureSpec& f) {
  return f.history_context() == v1::FeatureSpec::HISTORY_CONTEXT_UNSPECIFIED
             ? v1::FeatureSpec::HISTORY_CONTEXT_LEAVE_ONE_OUT
             : f.history_context();
}

inline v1::TrainingSpec::Optimizer ResolvedOptimizer(const v1::TrainingSpec& t) {
  return t.optimizer() == v1::TrainingSpec::OPTIMIZER_UNSPECIFIED ? v1::TrainingSpec::OPTIMIZER_ADAM
                                                                  : t.optimizer();
}

inline v1::TrainingSpec::LearningRateSchedule ResolvedLearningRateSchedule(const v1::TrainingSpec& t) {
  return t.learning_rate_schedule() == v1::TrainingSpec::LEARNING_RATE_SCHEDULE_UNSPECIFIED
             ? v1::TrainingSpec::LEARNING_RATE_SCHEDULE_CONSTANT
             : t.learning_rate_schedule();
}

inline v1::TrainingSpec::ShortHistoryScope ResolvedShortHistoryScope(const v1::TrainingSpec& t) {
  return t.short_history_scope() == v1::TrainingSpec::SHORT_HISTORY_SCOPE_UNSPECIFIED
             ? v1::TrainingSpec::SHORT_HISTORY_SCOPE_ID_DROPPED
             : t.short_history_scope();
}

inline v1::TrainingSpec::ShortHistoryFrom ResolvedShortHistoryFrom(const v1::TrainingSpec& t) {
  return t.short_history_from() == v1::TrainingSpec::SHORT_HISTORY_FROM_UNSPECIFIED
             ? v1::TrainingSpec::SHORT_HISTORY_FROM_LAST
             : t.short_history_from();
}

}  // namespace twotower

#endif  // TWOTOWER_UTIL_CONFIG_ENUMS_H_
