// Exact inner-product top-k over a row-major matrix: the kernel behind the "Flat" index.
// Debian's FAISS is a generic build (no AVX2 kernels) and its single-query exact search
// runs several times above the memory-bandwidth floor. This scan walks the matrix in
// L1-sized blocks: the first query of a batch streams each block from memory row by row,
// the batch's other queries score it from L1 eight rows at a time; a vectorised compare
// against each query's k-th best so far skips most rows before the heap. AVX2/FMA is
// chosen at run time, with a scalar fallback.
//
// With a HalfRows copy (index/half_rows.h: fp16, half the bytes) the AVX2 scan first scores every row from
// it, and scores again from the floats only the rows whose fp16 score, widened by a proven
// bound on its error, could still enter the query's top k. The answer is the same, score
// for score, as from the floats alone; the pass that touches every row reads half as much
// memory, which is what a scan costs (it is bandwidth-bound), most of all when concurrent
// scans share the memory bus.
#ifndef TWOTOWER_INDEX_EXACT_SCAN_H_
#define TWOTOWER_INDEX_EXACT_SCAN_H_

#include <cstdint>
#include <span>
#include <vector>

#include "index/half_rows.h"

namespace twotower {

struct RowFilter;

struct ScanHit {
  int32_t row;
  float score;
};

enum class ScanKernel { kAuto, kScalar, kAvx2 };

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
