#include "index/exact_scan.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <type_traits>
#include <queue>

#include "index/item_index.h"

namespace twotower {

namespace {

// Rows per block: ~16 KiB (64 rows of 64 floats), so the block a query has just read stays
// in L1 for the batch's other queries; a multiple of 8 for the eight-row kernel.
int BlockRows(int dim) { return std::clamp(16384 / (4 * std::max(dim, 1)) / 8 * 8, 8, 512); }

// Scores of `count` rows against one query.
void ScoresScalar(const float* rows, int count, int dim, const float* q, float* out) {
  for (int r = 0; r < count; ++r) {
    const float* x = rows + static_cast<size_t>(r) * dim;
    float lanes[8] = {};
    int d = 0;
    for (; d + 8 <= dim; d += 8) {
      for (int l = 0; l < 8; ++l) lanes[l] += x[d + l] * q[d + l];
    }
    float sum = 0;
    for (; d < dim; ++d) sum += x[d] * q[d];
    for (float l : lanes) sum += l;
    out[r] = sum;
  }
}

// Eight values of a row as floats: a load, or an fp16 conversion.
__attribute__((target("avx2"))) inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,f16c"))) inline __m256 Load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// One accumulator per row and the same reduction tree as the eight-row kernel below
// ((0+1)+(2+3)) + ((4+5)+(6+7)), so a row scores bit for bit the same whichever kernel
// reads it: a query's answer never depends on its place in a batch. Floats: any dim (the
// tail of dim % 8 values added last); fp16: dim a multiple of 8.
template <typename T>
__attribute__((target("avx2,fma,f16c"))) float DotAvx2(const T* x, const float* q, int dim) {
  const int whole = dim / 8 * 8;
  __m256 acc = _mm256_setzero_ps();
  for (int d = 0; d < whole; d += 8) acc = _mm256_fmadd_ps(Load8(x + d), _mm256_loadu_ps(q + d), acc);
  const __m256 pairs = _mm256_hadd_ps(acc, acc);  // [0+1, 2+3, .. | 4+5, 6+7, ..]
  const __m256 quads = _mm256_hadd_ps(pairs, pairs);
  float sum = _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
  if constexpr (std::is_same_v<T, float>) {
    for (int d = whole; d < dim; ++d) sum += x[d] * q[d];
  }
  return sum;
}

// Eight rows at a time when dim is a multiple of 8: each query chunk is loaded once for
// eight rows, and the eight sums are reduced together (hadd tree) into one vector, so a
// row costs about its dim/8 loads and FMAs instead of also a horizontal sum of its own.
// For fp16 rows (the first pass) exactness does not rest on these scores, only on
// HalfScoreErrorBound; they share the kernel, not the bit-for-bit requirement.
template <typename T>
__attribute__((target("avx2,fma,f16c"))) void ScoresAvx2(const T* rows, int count, int dim,
                                                          const float* q, float* out) {
  int r = 0;
  if (dim % 8 == 0) {
    const size_t stride = static_cast<size_t>(dim);
    for (; r + 8 <= count; r += 8) {
      const T* x = rows + static_cast<size_t>(r) * stride;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
             a3 = _mm256_setzero_ps(), a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(),
             a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
      for (int d = 0; d < dim; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        a0 = _mm256_fmadd_ps(Load8(x + d), qv, a0);
        a1 = _mm256_fmadd_ps(Load8(x + stride + d), qv, a1);
        a2 = _mm256_fmadd_ps(Load8(x + 2 * stride + d), qv, a2);
        a3 = _mm256_fmadd_ps(Load8(x + 3 * stride + d), qv, a3);
        a4 = _mm256_fmadd_ps(Load8(x + 4 * stride + d), qv, a4);
        a5 = _mm256_fmadd_ps(Load8(x + 5 * stride + d), qv, a5);
        a6 = _mm256_fmadd_ps(Load8(x + 6 * stride + d), qv, a6);
        a7 = _mm256_fmadd_ps(Load8(x + 7 * stride + d), qv, a7);
      }
      // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7]; two levels
      // leave row i's half sums in lane i of the low and of the high 128 bits.
      const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
      const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
      const __m256 low = _mm256_permute2f128_ps(s0123, s4567, 0x20);
      const __m256 high = _mm256_permute2f128_ps(s0123, s4567, 0x31);
      _mm256_storeu_ps(out + r, _mm256_add_ps(low, high));
    }
  }
  for (; r < count; ++r) out[r] = DotAvx2(rows + static_cast<size_t>(r) * dim, q, dim);
}

// One row at a time: a single sequential stream, which the hardware prefetcher follows
// best when the matrix comes from memory (one query: bandwidth-bound).
__attribute__((target("avx2,fma"))) void ScoresAvx2Rowwise(const float* rows, int count, int dim,
                                                            const float* q, float* out) {
  for (int r = 0; r < count; ++r) out[r] = DotAvx2(rows + static_cast<size_t>(r) * dim, q, dim);
}

// The fp16 pass for two queries at once: each fp16 chunk is converted once for both, four
// rows x two queries = 8 accumulators (the FMAs in flight their latency needs, and with
// the four row chunks and two query chunks 14 of AVX2's 16 registers). A batch's second
// query then costs about its FMAs only, not another conversion of every value.
__attribute__((target("avx2,fma,f16c"))) void HalfScoresPairAvx2(const uint16_t* rows, int count, int dim,
                                                              const float* q0, const float* q1,
                                                              float* out0, float* out1) {
  const size_t stride = static_cast<size_t>(dim);
  int r = 0;
  for (; r + 4 <= count; r += 4) {
    const uint16_t* x = rows + static_cast<size_t>(r) * stride;
    __m256 a00 = _mm256_setzero_ps(), a10 = _mm256_setzero_ps(), a20 = _mm256_setzero_ps(),
           a30 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps(),
           a21 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
    for (int d = 0; d < dim; d += 8) {
      const __m256 u = _mm256_loadu_ps(q0 + d), v = _mm256_loadu_ps(q1 + d);
      const __m256 x0 = Load8(x + d), x1 = Load8(x + stride + d);
      const __m256 x2 = Load8(x + 2 * stride + d), x3 = Load8(x + 3 * stride + d);
      a00 = _mm256_fmadd_ps(x0, u, a00);
      a01 = _mm256_fmadd_ps(x0, v, a01);
      a10 = _mm256_fmadd_ps(x1, u, a10);
      a11 = _mm256_fmadd_ps(x1, v, a11);
      a20 = _mm256_fmadd_ps(x2, u, a20);
      a21 = _mm256_fmadd_ps(x2, v, a21);
      a30 = _mm256_fmadd_ps(x3, u, a30);
      a31 = _mm256_fmadd_ps(x3, v, a31);
    }
    // Two hadd levels leave row i's sums of lanes 0-3 in lane i and of lanes 4-7 in lane
    // 4 + i; adding the two 128-bit halves gives the four rows' scores.
    const __m256 s0 = _mm256_hadd_ps(_mm256_hadd_ps(a00, a10), _mm256_hadd_ps(a20, a30));
    const __m256 s1 = _mm256_hadd_ps(_mm256_hadd_ps(a01, a11), _mm256_hadd_ps(a21, a31));
    _mm_storeu_ps(out0 + r, _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1)));
    _mm_storeu_ps(out1 + r, _mm_add_ps(_mm256_castps256_ps128(s1), _mm256_extractf128_ps(s1, 1)));
  }
  if (r < count) {
    const uint16_t* tail = rows + static_cast<size_t>(r) * stride;
    ScoresAvx2(tail, count - r, dim, q0, out0 + r);
    ScoresAvx2(tail, count - r, dim, q1, out1 + r);
  }
}

// The next float below / above a finite `f` (std::nextafter without the library call:
// these run once per block and query).
inline float NextDown(float f) {
  if (f == 0) return -std::numeric_limits<float>::denorm_min();
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  return std::bit_cast<float>(f > 0 ? bits - 1 : bits + 1);
}
inline float NextUp(float f) { return -NextDown(-f); }

// The largest float not above `value`: a threshold that may only err towards keeping rows.
inline float FloatNotAbove(double value) {
  const float f = static_cast<float>(value);
  return static_cast<double>(f) > value && std::isfinite(f) ? NextDown(f) : f;
}

// The smallest float not below `value`: an error bound rounded the safe way.
inline float FloatNotBelow(double value) {
  const float f = static_cast<float>(value);
  return static_cast<double>(f) < value && std::isfinite(f) ? NextUp(f) : f;
}

// A row the fp16 pass kept for the float pass: its fp16 score and that score's error bound.
struct KeptRow {
  int32_t row;
  float score;
  float error;
};

// Positions in scores[0, count) whose score is above `threshold` (AVX2 compare, 8 at a
// time), appended to `out`. Most rows of a scan are below the k-th best so far.
__attribute__((target("avx2"))) void AboveAvx2(const float* scores, int count, float threshold,
                                               std::vector<int>* out) {
  const __m256 t = _mm256_set1_ps(threshold);
  int r = 0;
  for (; r + 8 <= count; r += 8) {
    unsigned mask = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(scores + r), t, _CMP_GT_OQ)));
    while (mask != 0) {
      out->push_back(r + __builtin_ctz(mask));
      mask &= mask - 1;
    }
  }
  for (; r < count; ++r) {
    if (scores[r] > threshold) out->push_back(r);
  }
}

void AboveScalar(const float* scores, int count, float threshold, std::vector<int>* out) {
  for (int r = 0; r < count; ++r) {
    if (scores[r] > threshold) out->push_back(r);
  }
}

// Better = higher score, then lower row.
struct Worse {
  bool operator()(const ScanHit& a, const ScanHit& b) const {
    return a.score > b.score || (a.score == b.score && a.row < b.row);
  }
};

// The k-th largest of the values added so far, or a lower bound of it between
// compactions: values not below the bound are appended, and at 2k of them an nth_element
// keeps the k largest. O(1) amortised per value, where a heap pays log k per insertion
// (a scan inserts about k ln(n/k) times).
class KthLargest {
 public:
  explicit KthLargest(int k) : k_(k) { values_.reserve(2 * static_cast<size_t>(k)); }
  KthLargest(KthLargest&&) = default;

  // Whether k values have been compacted (bound() is then meaningful).
  bool known() const { return known_; }
  float bound() const { return bound_; }
  void Add(float value) {
    if (known_ && value < bound_) return;
    values_.push_back(value);
    if (values_.size() >= 2 * static_cast<size_t>(k_)) Compact();
  }
  // Makes bound() exact.
  void Compact() {
    if (values_.size() < static_cast<size_t>(k_)) return;
    std::nth_element(values_.begin(), values_.begin() + (k_ - 1), values_.end(), std::greater<float>());
    bound_ = values_[k_ - 1];
    values_.resize(k_);
    known_ = true;
  }

 private:
  int k_;
  std::vector<float> values_;
  float bound_ = 0;
  bool known_ = false;
};

}  // namespace

bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

namespace {

using HitHeap = std::priority_queue<ScanHit, std::vector<ScanHit>, Worse>;  // worst on top

// Offers `hit` to a query's best k (rows arrive in ascending order, so on a tie the
// earlier row stays).
inline void Offer(const ScanHit& hit, int k, HitHeap& heap) {
  if (static_cast<int>(heap.size()) == k && !Worse()(hit, heap.top())) return;
  heap.push(hit);
  if (static_cast<int>(heap.size()) > k) heap.pop();
}

// One query's fp16 pass over a block of rows: keeps for the float pass every allowed row
// that can still be in the top k. Row r's fp16 score a_r is within e of its float score,
// e being the bound for the largest row norm of the block. Let L be the k-th best of
// (a_r - e_r) over the allowed rows: k rows have a float score >= L, so a row of the top
// k has a float score >= L and a_r >= L - e_r. Keep the rows with a_r >= (that k-th best
// so far) - e_r; L only grows, so that keeps every row of the final top k. (A lower bound
// of the k-th best only keeps more rows.)
template <typename Above>
void KeepHalfCandidates(const float* block_scores, int start, int count, float e, const RowFilter* filter, Above above,
                        KthLargest& best, std::vector<KeptRow>& kept, std::vector<int>& candidates) {
  candidates.clear();
  if (best.known()) {
    const float floor = FloatNotAbove(static_cast<double>(best.bound()) - e);
    // Strictly above the next float down: >= floor.
    above(block_scores, count, std::isfinite(floor) ? NextDown(floor) : floor, &candidates);
  } else {
    for (int r = 0; r < count; ++r) candidates.push_back(r);
  }
  for (const int r : candidates) {
    if (filter != nullptr && !filter->Allows(start + r)) continue;
    kept.push_back({start + r, block_scores[r], e});
    best.Add(FloatNotAbove(static_cast<double>(block_scores[r]) - e));
  }
}

// One query's float scores of a block into its best k. Once the heap is full a row enters
// only with a score strictly above the k-th best; until then every row is a candidate.
template <typename Above>
void OfferBlock(const float* scores, int start, int count, int k, const RowFilter* filter, Above above, HitHeap& heap,
                std::vector<int>& candidates) {
  candidates.clear();
  if (static_cast<int>(heap.size()) == k) {
    above(scores, count, heap.top().score, &candidates);
  } else {
    for (int r = 0; r < count; ++r) candidates.push_back(r);
  }
  for (const int r : candidates) {
    const ScanHit hit{start + r, scores[r]};
    if (static_cast<int>(heap.size()) == k && !Worse()(hit, heap.top())) continue;
    if (filter != nullptr && !filter->Allows(hit.row)) continue;
    heap.push(hit);
    if (static_cast<int>(heap.size()) > k) heap.pop();
  }
}

// The float pass of a query that had an fp16 pass: the kept rows with a_r + e_r >= the
// final L, scored from the floats (prefetched together: they are scattered over the
// matrix) and ranked as the float scan would rank them. Every other row scores below the
// k-th best. Returns how many rows were rescored.
int64_t RescoreKept(const float* rows, int dim, const float* query, int k, KthLargest& best,
                    const std::vector<KeptRow>& kept, HitHeap& heap, std::vector<int>& finalists) {
  best.Compact();
  const double floor = best.known() ? static_cast<double>(best.bound()) : -std::numeric_limits<double>::infinity();
  finalists.clear();
  for (const KeptRow& row : kept) {
    if (static_cast<double>(row.score) + row.error < floor) continue;
    finalists.push_back(row.row);
    const char* bytes = reinterpret_cast<const char*>(rows + static_cast<size_t>(row.row) * dim);
    for (size_t byte = 0; byte < sizeof(float) * dim; byte += 64) _mm_prefetch(bytes + byte, _MM_HINT_T0);
  }
  for (const int row : finalists) Offer({row, DotAvx2(rows + static_cast<size_t>(row) * dim, query, dim)}, k, heap);
  return static_cast<int64_t>(finalists.size());
}

// The heap's hits, best first.
std::vector<ScanHit> BestFirst(HitHeap& heap) {
  std::vector<ScanHit> out(heap.size());
  for (size_t i = heap.size(); i > 0; --i) {
    out[i - 1] = heap.top();
    heap.pop();
  }
  return out;
}

}  // namespace

std::vector<std::vector<ScanHit>> ExactTopK(const float* rows, int n_rows, int dim,
                                            const float* queries, int n_queries, int k,
                                            std::span<const RowFilter> filters, ScanKernel kernel,
                                            const HalfRows* half, ScanStats* stats) {
  const bool avx2 = kernel == ScanKernel::kAvx2 || (kernel == ScanKernel::kAuto && CpuHasAvx2());
  // Per query: the bound on its fp16 scores' error, or none for no fp16 pass.
  std::vector<std::optional<HalfErrorBound>> half_error(n_queries);
  std::vector<int> from_half;  // the queries with an fp16 pass
  if (avx2 && half != nullptr && half->dim() == dim && half->rows() == n_rows) {
    for (int q = 0; q < n_queries; ++q) {
      half_error[q] = HalfScoreErrorBound(queries + static_cast<size_t>(q) * dim, dim, half->max_row_norm());
      from_half.push_back(q);
    }
  }
  // The first query of a block streams it from memory (row by row); the others find it
  // in L1 and take the eight-row kernel.
  const auto streaming_scores_of = avx2 ? ScoresAvx2Rowwise : ScoresScalar;
  const auto cached_scores_of = avx2 ? ScoresAvx2<float> : ScoresScalar;
  const auto above_of = avx2 ? AboveAvx2 : AboveScalar;
  // Blocks of ~16 KiB of what the scan reads: twice the rows when every query reads fp16.
  const int block_rows =
      static_cast<int>(from_half.size()) == n_queries ? std::min(2 * BlockRows(dim), 1024) : BlockRows(dim);
  std::vector<int> candidates;
  candidates.reserve(block_rows);
  std::vector<HitHeap> heaps(n_queries);
  // Queries with an fp16 pass: the k-th best lower bound (fp16 score - e) so far and the
  // rows kept for the float pass, with their fp16 scores, in row order.
  std::vector<KthLargest> half_best;
  half_best.reserve(n_queries);
  for (int q = 0; q < n_queries; ++q) half_best.emplace_back(k);
  std::vector<std::vector<KeptRow>> half_kept(n_queries);
  std::vector<float> scores(block_rows);
  // The fp16 pass's scores of a block, per query (two queries at a time).
  std::vector<float> half_scores(from_half.empty() ? 0 : static_cast<size_t>(n_queries) * block_rows);
  const auto query_of = [&](int q) { return queries + static_cast<size_t>(q) * dim; };
  const auto half_scores_of = [&](int q) { return half_scores.data() + static_cast<size_t>(q) * block_rows; };
  for (int start = 0; start < n_rows; start += block_rows) {
    const int count = std::min(block_rows, n_rows - start);
    const float* block = rows + static_cast<size_t>(start) * dim;
    // The largest row norm of the block (of its groups'): the error bound of its fp16 scores.
    const float block_norm = from_half.empty() ? 0.0f : half->LargestNorm(start, start + count);
    if (!from_half.empty()) {
      const uint16_t* half_block = half->data() + static_cast<size_t>(start) * dim;
      size_t paired = 0;
      for (; paired + 2 <= from_half.size(); paired += 2) {
        const int q0 = from_half[paired], q1 = from_half[paired + 1];
        HalfScoresPairAvx2(half_block, count, dim, query_of(q0), query_of(q1), half_scores_of(q0), half_scores_of(q1));
      }
      if (paired < from_half.size()) {
        ScoresAvx2(half_block, count, dim, query_of(from_half[paired]), half_scores_of(from_half[paired]));
      }
    }
    for (int q = 0; q < n_queries; ++q) {
      const RowFilter* filter = filters.empty() || filters[q].empty() ? nullptr : &filters[q];
      if (half_error[q].has_value()) {
        const float e = FloatNotBelow(half_error[q]->For(block_norm));
        KeepHalfCandidates(half_scores_of(q), start, count, e, filter, above_of, half_best[q], half_kept[q],
                           candidates);
      } else {
        (q == 0 ? streaming_scores_of : cached_scores_of)(block, count, dim, query_of(q), scores.data());
        OfferBlock(scores.data(), start, count, k, filter, above_of, heaps[q], candidates);
      }
    }
  }
  std::vector<int> finalists;
  for (const int q : from_half) {
    const int64_t rescored = RescoreKept(rows, dim, query_of(q), k, half_best[q], half_kept[q], heaps[q], finalists);
    if (stats != nullptr) {
      ++stats->half_queries;
      stats->float_rescored += rescored;
    }
  }
  std::vector<std::vector<ScanHit>> out(n_queries);
  for (int q = 0; q < n_queries; ++q) out[q] = BestFirst(heaps[q]);
  return out;
}

}  // namespace twotower
