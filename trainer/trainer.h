// The training loop: batches of positive interactions -> both towers forward -> loss ->
// both towers backward -> Adam. Evaluates on the configured held-out sets and packages the
// result as a Bundle.
#ifndef TWOTOWER_TRAINER_TRAINER_H_
#define TWOTOWER_TRAINER_TRAINER_H_

#include <cstdio>
#include <vector>

#include "absl/status/statusor.h"
#include "bundle/bundle.h"
#include "trainer/evaluator.h"
#include "trainer/training_data.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

struct TrainingReport {
  Bundle bundle;
  std::vector<EvalResult> final_eval;  // after the last epoch
  double examples_per_second = 0;
  double final_loss = 0;
};

// Trains on `data` per `config` (validated), printing progress to `log` (may be null).
// `data` stays valid for the returned bundle's lifetime only by copy: the bundle owns
// everything it holds.
absl::StatusOr<TrainingReport> Train(const v1::TrainerConfig& config, const TrainingData& data,
                                     std::FILE* log);

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_TRAINER_H_
