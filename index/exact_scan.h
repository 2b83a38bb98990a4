// Exact inner-product top-k over a row-major matrix: the kernel behind the "Flat" index.
// Debian's FAISS is a generic build (no AVX2 kernels) and its single-query exact search
// runs several times above the memory-bandwidth floor. This scan walks the matrix in
// L1-sized blocks: the first query of a batch streams each block from memory row by row,
// the batch's other queries score it from L1 eight rows at a time; a vectorised compare
// against each query's k-th best so far skips most rows before the heap. AVX2/FMA is
// chosen at run time, with a scalar fallback.
//
// With a HalfRows copy (fp16, half the bytes) the AVX2 scan first scores every row from
// it, and scores again from the floats only the rows whose fp16 score, widened by a proven
// bound on its error, could still enter the query's top k. The answer is the same, score
// for score, as from the floats alone; the pass that touches every row reads half as much
// memory, which is what a scan costs (it is bandwidth-bound), most of all when concurrent
// scans share the memory bus.
#ifndef TWOTOWER_INDEX_EXACT_SCAN_H_
#define TWOTOWER_INDEX_EXACT_SCAN_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "index/huge_page_array.h"

namespace twotower {

struct RowFilter;

struct ScanHit {
  int32_t row;
  float score;
};

enum class ScanKernel { kAuto, kScalar, kAvx2 };

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

// For each of `n_queries` queries (n_queries x dim), the `k` rows of `rows` (n_rows x dim)
// with the largest inner product, best first (ties: lower row first), skipping rows
// `filters[q]` refuses (`filters` empty = none). kAuto picks AVX2 when the CPU has it.
// `half` (optional, AVX2 kernel only): HalfRows::Of the same rows, for the fp16 first pass
// (ignored if its shape is not n_rows x dim).
// `stats` (optional): what the fp16 path did.
struct ScanStats {
  int64_t half_queries = 0;   // queries answered through the fp16 pass
  int64_t float_rescored = 0;  // rows those queries scored again from the floats
};
std::vector<std::vector<ScanHit>> ExactTopK(const float* rows, int n_rows, int dim,
                                            const float* queries, int n_queries, int k,
                                            std::span<const RowFilter> filters,
                                            ScanKernel kernel = ScanKernel::kAuto,
                                            const HalfRows* half = nullptr, ScanStats* stats = nullptr);

// Whether this CPU runs the AVX2 kernel.
bool CpuHasAvx2();

}  // namespace twotower

#endif  // TWOTOWER_INDEX_EXACT_SCAN_H_
