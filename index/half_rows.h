// The fp16 copy of an item matrix that the exact scan reads first (index/exact_scan.h),
// and the bound on how far a score from it can be from the float score: what makes the
// fp16 pass exact, row for row and bit for bit, after the floats re-score the few rows
// the bound cannot rule out.
#ifndef TWOTOWER_INDEX_HALF_ROWS_H_
#define TWOTOWER_INDEX_HALF_ROWS_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "index/huge_page_array.h"

namespace twotower {

// An fp16 copy of a row-major matrix, with the largest row norm of every group of
// kGroupRows rows (the error bound scales with it: a few rows of large norm widen the
// bound of their own group only), for ExactTopK's first pass.
class HalfRows {
 public:
  static constexpr int kGroupRows = 8;

  // The copy of `rows` (n x dim), or nullopt where it cannot be used: the CPU lacks
  // AVX2/FMA/F16C, dim is not a multiple of 8, or a value is not finite or beyond fp16's
  // range (65504). The scan then reads the floats only.
  static std::optional<HalfRows> Of(std::span<const float> rows, int dim);

  const uint16_t* data() const { return values_.data(); }
  int rows() const { return rows_; }
  int dim() const { return dim_; }
  // The largest row norm of rows [kGroupRows g, kGroupRows (g + 1)), rounded up.
  float group_norm(int g) const { return group_norms_[g]; }
  // The largest of group_norm over the groups of rows [begin, end).
  float LargestNorm(int begin, int end) const {
    const float* norms = group_norms_.data();
    float largest = 0;
    for (int g = begin / kGroupRows; g < (end + kGroupRows - 1) / kGroupRows; ++g) largest = std::max(largest, norms[g]);
    return largest;
  }
  double max_row_norm() const { return max_row_norm_; }

 private:
  HalfRows() = default;
  HugePageArray<uint16_t> values_;
  int rows_ = 0;
  int dim_ = 0;
  std::vector<float> group_norms_;
  double max_row_norm_ = 0;
};

// How far the fp16 pass's score of a row of norm at most n can be from its float score,
// for one query: scale * n + offset. fp16 rounding (relative 2^-11, absolute 2^-25 below
// fp16's normal range) plus the float rounding of both dot products, bounded with
// Cauchy-Schwarz by the query's norms and n. Assumes IEEE arithmetic with gradual
// underflow (no flush-to-zero / denormals-are-zero mode, which nothing here sets).
struct HalfErrorBound {
  double scale = 0;
  double offset = 0;
  double For(double row_norm) const { return scale * row_norm + offset; }
};
// nullopt (no fp16 pass for this query) when the query is not finite or so large that a
// score could overflow against rows of norm up to `max_row_norm`.
std::optional<HalfErrorBound> HalfScoreErrorBound(const float* query, int dim, double max_row_norm);

}  // namespace twotower

#endif  // TWOTOWER_INDEX_HALF_ROWS_H_
