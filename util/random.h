// Random numbers that are the same on every standard library and machine: the raw output
// of std::mt19937_64 is specified by the C++ standard, its distributions are not, so the
// trainer, the tower initialiser and the synthetic data draw through these functions
// only. Everything a seed drives (a training run, a synthetic dataset) reproduces bit for
// bit from it.
#ifndef TWOTOWER_UTIL_RANDOM_H_
#define TWOTOWER_UTIL_RANDOM_H_

#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <utility>
#include <vector>

namespace twotower {

using Rng = std::mt19937_64;

// Uniform in [0, 1): the top 53 bits of one draw.
inline double UniformDouble(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// True with probability p (p <= 0: never, without a draw).
inline bool Chance(Rng& rng, double p) { return p > 0 && UniformDouble(rng) < p; }

// Standard normal by Box-Muller (two uniform draws; the first kept off 0).
inline double StandardNormal(Rng& rng) {
  const double u1 = UniformDouble(rng) * (1 - 1e-12) + 1e-13, u2 = UniformDouble(rng);
  return std::sqrt(-2 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
}

// Uniform in [0, n), n >= 1, by one draw modulo n (bias below n / 2^64).
inline uint64_t UniformIndex(Rng& rng, uint64_t n) { return rng() % n; }

// Fisher-Yates shuffle with UniformIndex.
template <typename T>
void Shuffle(std::vector<T>& values, Rng& rng) {
  for (size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[UniformIndex(rng, i)]);
}

// SplitMix64 (Steele, Lea and Flood 2014): a cheap stream of well-mixed 64-bit values from
// one seed, for draws that must not advance an Rng (e.g. a per-example choice replayed
// from a stored seed).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t operator()() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

}  // namespace twotower

#endif  // TWOTOWER_UTIL_RANDOM_H_
