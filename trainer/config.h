// Loading and validating the trainer configuration (proto/twotower/v1/config.proto).
#ifndef TWOTOWER_TRAINER_CONFIG_H_
#define TWOTOWER_TRAINER_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

// Upper bounds of the config's sizes. Past them a run cannot fit in memory or in a bundle
// file (one protobuf message, at most 2 GiB), and would end in an allocation failure or a
// refused bundle after the run instead of an error naming the field first.
inline constexpr int kMaxEmbeddingDim = 4096;      // id_embedding_dim, features' embedding_dim
inline constexpr int kMaxOutputDim = 4096;         // output_dim
inline constexpr int kMaxLayerWidth = 16384;       // each of hidden_dims
inline constexpr int kMaxHiddenLayers = 32;        // hidden_dims entries
inline constexpr int kMaxTowerInputWidth = 1 << 18;  // id + feature widths + numeric inputs
inline constexpr int64_t kMaxTensorFloats = (int64_t{1} << 29) - 1;  // float32 in a 2 GiB file
inline constexpr int kMaxHashBuckets = 1 << 26;
inline constexpr int kMaxBuckets = 4096;           // boundaries, quantile_buckets
inline constexpr int kMaxHistoryLength = 1 << 20;
inline constexpr int kMaxShortHistoryLength = 64;  // short_history_max_length
inline constexpr int kMaxPoolingHeads = 16;        // KIND_HISTORY pooling POOLING_ATTENTION
inline constexpr int kMaxBatchSize = 16384;
inline constexpr int64_t kMaxItemRowsPerStep = int64_t{1} << 22;  // batch x negatives
inline constexpr int kMaxEpochs = 100000;
inline constexpr int kMaxEvalK = 100000;           // eval_k cut-offs (search depth)
inline constexpr int kMaxHardNegativePool = 1000;  // kept per user
inline constexpr int64_t kMaxConfigBytes = 16 << 20;  // the config file
inline constexpr int64_t kMaxConfigTextBytes = 2 << 20;  // its canonical text (the bundle MANIFEST holds it)

// Reads a text-format TrainerConfig (at most kMaxConfigBytes; a FIFO such as a shell's
// <(...) is read to its end), fills defaults for unset training settings, and validates
// it. Errors name the offending field.
absl::StatusOr<v1::TrainerConfig> LoadTrainerConfig(const std::string& path);

// Defaults for unset (zero) settings: epochs 10, batch_size 256, learning_rate 0.002,
// temperature 0.1, eval_k {10, 50, 100}, id_min_count 1, separator "|", min_count 1.
void ApplyDefaults(v1::TrainerConfig* config);

// Every setting within its range (the sizes within the bounds above), every string valid
// UTF-8 (feature names reach the bundle's binary protobufs and the serving API).
absl::Status ValidateTrainerConfig(const v1::TrainerConfig& config);

// Merges a text-format TrainerConfig over `config` and re-applies defaults. Scalars
// replace; an entry of data.users.features, data.items.features or data.eval whose name
// is already there merges into that entry (e.g. `data { users { features { name:
// "history" history_length: 50 } } }` changes one field of the history feature); other
// repeated entries are appended. Changing the objective without giving num_negatives
// resets it to the new objective's default. Validate afterwards.
absl::Status ApplyOverride(absl::string_view text, v1::TrainerConfig* config);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_CONFIG_H_
