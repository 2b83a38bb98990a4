#include "trainer/alias_sampler.h"

#include <cmath>

namespace twotower {

absl::StatusOr<AliasSampler> AliasSampler::Create(const std::vector<double>& weights) {
  double sum = 0;
  for (double w : weights) {
    if (!(w >= 0) || !std::isfinite(w)) {
      return absl::InvalidArgumentError("alias sampler: weights must be finite and >= 0");
    }
    sum += w;
  }
  if (weights.empty() || !(sum > 0)) {
    return absl::InvalidArgumentError("alias sampler: weights must have a positive sum");
  }
  const size_t n = weights.size();
  AliasSampler sampler;
  sampler.probability_.assign(n, 1.0);
  sampler.alias_.resize(n);
  sampler.normalised_.resize(n);
  std::vector<double> scaled(n);
  std::vector<int32_t> small, large;
  for (size_t i = 0; i < n; ++i) {
    sampler.normalised_[i] = weights[i] / sum;
    scaled[i] = weights[i] / sum * static_cast<double>(n);
    sampler.alias_[i] = static_cast<int32_t>(i);
    (scaled[i] < 1.0 ? small : large).push_back(static_cast<int32_t>(i));
  }
  while (!small.empty() && !large.empty()) {
    const int32_t s = small.back(), l = large.back();
    small.pop_back();
    sampler.probability_[s] = scaled[s];
    sampler.alias_[s] = l;
    scaled[l] -= 1.0 - scaled[s];
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // Leftovers are 1 up to rounding.
  for (int32_t i : small) sampler.probability_[i] = 1.0;
  for (int32_t i : large) sampler.probability_[i] = 1.0;
  return sampler;
}

}  // namespace twotower
