// Where negatives come from. Positives are the training interactions; negatives are
//  * easy: drawn from the whole catalogue with p(item) ~ count^alpha (alias table, O(1));
//  * in-batch: the other examples' positives (handled by the in-batch loss itself);
//  * hard: items the current model ranks high for the user but that are not the user's
//    training positives, re-mined periodically with the index.
// Exposures (shown, not clicked) are never negatives: they never reach this class.
#ifndef TWOTOWER_TRAINER_NEGATIVE_SAMPLER_H_
#define TWOTOWER_TRAINER_NEGATIVE_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tower.h"
#include "trainer/alias_sampler.h"
#include "trainer/training_data.h"
#include "util/random.h"

namespace twotower {

class NegativeSampler {
 public:
  static absl::StatusOr<NegativeSampler> Create(const TrainingData& data, float alpha);

  int32_t SampleEasy(Rng& rng) const { return easy_.Sample(rng); }
  // Probability that one easy draw is `item` (for the logQ correction).
  double EasyProbability(int32_t item) const { return easy_.Probability(item); }

  // Replaces every training user's pool with its current top `pool` items by the model,
  // excluding the user's training items.
  absl::Status MineHard(const TrainingData& data, const Tower& user_tower,
                        const std::vector<float>& item_vectors, int pool);
  bool has_hard() const { return !hard_.empty(); }
  // A uniformly drawn item of the user's pool (an easy negative if the pool is empty).
  int32_t SampleHard(int32_t user_row, Rng& rng) const;
  const std::vector<int32_t>& HardPool(int32_t user_row) const { return hard_[user_row]; }

 private:
  AliasSampler easy_;
  std::vector<std::vector<int32_t>> hard_;  // per user row
};

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_NEGATIVE_SAMPLER_H_
