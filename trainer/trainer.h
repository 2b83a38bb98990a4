// The training loop: batches of positive interactions -> negatives -> both towers forward
// -> loss -> both towers backward -> optimizer. Evaluates on the configured held-out sets,
// optionally keeps the best epoch, and packages the result as a Bundle.
#ifndef TWOTOWER_TRAINER_TRAINER_H_
#define TWOTOWER_TRAINER_TRAINER_H_

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bundle/bundle.h"
#include "trainer/evaluator.h"
#include "trainer/training_data.h"
#include "trainer/training_log.h"
#include "twotower/v1/config.pb.h"
#include "util/random.h"

namespace twotower {

struct TrainOptions {
  std::FILE* log = nullptr;     // progress lines; null = quiet
  std::string metrics_path;     // JSON lines per epoch; empty = none
};

struct TrainingReport {
  Bundle bundle;
  std::vector<EpochRecord> history;
  int exported_epoch = 0;              // the last epoch, or the best with selection
  std::vector<EvalResult> final_eval;  // metrics of the exported model (if evaluated)
  double examples_per_second = 0;      // positives per second over all epochs
  double final_loss = 0;
};

// The factor on learning_rate at `step` (0-based) of `total_steps` under
// t.learning_rate_schedule(): 1 throughout for LEARNING_RATE_SCHEDULE_CONSTANT; from 1 down
// towards 0 for the decays.
float LearningRateScale(const v1::TrainingSpec& t, int64_t step, int64_t total_steps);

// The loss weight of each user row's examples when its id is dropped (TrainingSpec.
// cold_user_balance = b): n^-b for a user with n training positives (`train_users` holds
// one user row per positive), scaled so the mean over the positives is 1; 1 for users
// without positives. Empty when b is 0 (unweighted).
std::vector<float> ColdRowWeights(double balance, std::span<const int32_t> train_users,
                                  size_t num_users);

// What one training example does to its user's inputs (TrainingSpec user_id_dropout,
// user_history_dropout, short_history_*).
struct UserDrop {
  bool id = false;       // the id is replaced by the OOV row
  bool history = false;  // the history is emptied
  size_t keep = 0;       // the history is cut to `keep` items; 0 = all of it
  // Which `keep` (TrainingSpec.short_history_from): the last, the first, or drawn with
  // `seed` (SHORT_HISTORY_FROM_RANDOM, _ANY).
  v1::TrainingSpec::ShortHistoryFrom from = v1::TrainingSpec::SHORT_HISTORY_FROM_LAST;
  uint64_t seed = 0;
  // The history is the one the user had `gap` interactions before the example
  // (TrainingSpec.history_gap_max); 0 = just before it.
  int64_t gap = 0;
};

// Draws one example's UserDrop. The draws, in order: the id (always); the history (only
// when user_history_dropout is set; unset, it goes with the id); the short-history cut
// (only when short_history_rate > 0 and the example is in short_history_scope), then its
// length (and seed, SHORT_HISTORY_FROM_RANDOM / _ANY); the gap (only when history_gap_max
// > 0). A config without these options draws exactly one number per example, as before
// they existed, so its runs are unchanged bit for bit.
UserDrop DrawUserDrop(const v1::TrainingSpec& t, Rng& rng);

// Appends to `out` user row `row` of `all` as one training example sees it: the history
// field replaced by `history` minus `token` (the example's positive; 0 removes nothing),
// emptied (drop.history) or cut to drop.keep items (the last, the first, or drawn
// uniformly without replacement and kept in order, per drop.from); nothing left: the OOV
// row. drop.id puts the OOV row in the id field. `buffer` is scratch.
void AppendTrainingUser(const EncodedTable& all, int32_t row, int history_field,
                        std::span<const int32_t> history, int32_t token, const UserDrop& drop,
                        EncodedTable* out, std::vector<int32_t>* buffer);

// Trains on `data` per `config` (validated by LoadTrainerConfig / ValidateTrainerConfig).
absl::StatusOr<TrainingReport> Train(const v1::TrainerConfig& config, const TrainingData& data,
                                     const TrainOptions& options);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_TRAINER_H_
