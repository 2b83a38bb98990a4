// Walker's alias method: O(n) set-up, O(1) per sample from a fixed discrete distribution.
// Used for "easy" negatives drawn from the whole catalogue with p(item) ~ count^alpha.
#ifndef TWOTOWER_TRAINER_ALIAS_SAMPLER_H_
#define TWOTOWER_TRAINER_ALIAS_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "util/random.h"

namespace twotower {

class AliasSampler {
 public:
  AliasSampler() = default;
  // `weights` must be non-negative and finite with a positive sum.
  static absl::StatusOr<AliasSampler> Create(const std::vector<double>& weights);

  // An index drawn with probability weights[i] / sum(weights).
  int32_t Sample(Rng& rng) const {
    const uint64_t bits = rng();
    // High 32 bits pick the bucket, low 32 bits the coin: one engine call per sample.
    const uint32_t bucket = static_cast<uint32_t>(((bits >> 32) * size()) >> 32);
    const double coin = static_cast<double>(bits & 0xffffffffu) * 0x1.0p-32;
    return coin < probability_[bucket] ? static_cast<int32_t>(bucket) : alias_[bucket];
  }
  uint64_t size() const { return probability_.size(); }
  // Normalised probability of index i (for tests and the logQ correction).
  double Probability(int32_t i) const { return normalised_[i]; }

 private:
  std::vector<double> probability_;
  std::vector<int32_t> alias_;
  std::vector<double> normalised_;
};

}  // namespace twotower

#endif  // TWOTOWER_TRAINER_ALIAS_SAMPLER_H_
