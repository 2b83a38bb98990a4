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
// t.learning_rate_schedule(): 1 throughout for CONSTANT; from 1 down towards 0 for the decays.
float LearningRateScale(const v1::TrainingSpec& t, int64_t step, int64_t total_steps);

// The loss weight of each user row's examples when its id is dropped (TrainingSpec.
// cold_user_balance = b): n^-b for a user with n training positives (`train_users` holds
// one user row per positive), scaled so the mean over the positives is 1; 1 for users
// without positives. Empty when b is 0 (unweighted).
std::vector<float> ColdRowWeights(double balance, std::span<const int32_t> train_users,
                                  size_t num_users);

// Trains on `data` per `config` (validated by LoadTrainerConfig / ValidateTrainerConfig).
absl::StatusOr<TrainingReport> Train(const v1::TrainerConfig& config, const TrainingData& data,
                                     const TrainOptions& options);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_TRAINER_H_
