// Loading and validating the trainer configuration (proto/twotower/v1/config.proto).
#ifndef TWOTOWER_TRAINER_CONFIG_H_
#define TWOTOWER_TRAINER_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

// Reads a text-format TrainerConfig, fills defaults for unset training settings, and
// validates it. Errors name the offending field.
absl::StatusOr<v1::TrainerConfig> LoadTrainerConfig(const std::string& path);

// Defaults for unset (zero) settings: epochs 10, batch_size 256, learning_rate 0.002,
// temperature 0.1, eval_k {10, 50, 100}, id_min_count 1, separator "|", min_count 1.
void ApplyDefaults(v1::TrainerConfig* config);

absl::Status ValidateTrainerConfig(const v1::TrainerConfig& config);

// Merges a text-format TrainerConfig over `config` (scalars replace, repeated fields
// append) and re-applies defaults. Changing the objective without giving num_negatives
// resets it to the new objective's default. Validate afterwards.
absl::Status ApplyOverride(absl::string_view text, v1::TrainerConfig* config);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_CONFIG_H_
