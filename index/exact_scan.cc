#include "index/exact_scan.h"

#include <immintrin.h>

#include <algorithm>
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

// One accumulator per row and the same reduction tree as the eight-row kernel below
// ((0+1)+(2+3)) + ((4+5)+(6+7)), so a row scores bit for bit the same whichever kernel
// reads it: a query's answer never depends on its place in a batch.
__attribute__((target("avx2,fma"))) float DotAvx2(const float* x, const float* q, int dim) {
  const int whole = dim / 8 * 8;
  __m256 acc = _mm256_setzero_ps();
  for (int d = 0; d < whole; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(q + d), acc);
  const __m256 pairs = _mm256_hadd_ps(acc, acc);  // [0+1, 2+3, .. | 4+5, 6+7, ..]
  const __m256 quads = _mm256_hadd_ps(pairs, pairs);
  float sum = _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
  for (int d = whole; d < dim; ++d) sum += x[d] * q[d];
  return sum;
}

// Eight rows at a time when dim is a multiple of 8: each query chunk is loaded once for
// eight rows, and the eight sums are reduced together (hadd tree) into one vector, so a
// row costs about its dim/8 loads and FMAs instead of also a horizontal sum of its own.
__attribute__((target("avx2,fma"))) void ScoresAvx2(const float* rows, int count, int dim,
                                                     const float* q, float* out) {
  int r = 0;
  if (dim % 8 == 0) {
    const size_t stride = static_cast<size_t>(dim);
    for (; r + 8 <= count; r += 8) {
      const float* x = rows + static_cast<size_t>(r) * stride;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
             a3 = _mm256_setzero_ps(), a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(),
             a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
      for (int d = 0; d < dim; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), qv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + stride + d), qv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 2 * stride + d), qv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 3 * stride + d), qv, a3);
        a4 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 4 * stride + d), qv, a4);
        a5 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 5 * stride + d), qv, a5);
        a6 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 6 * stride + d), qv, a6);
        a7 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 7 * stride + d), qv, a7);
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

}  // namespace

bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

std::vector<std::vector<ScanHit>> ExactTopK(const float* rows, int n_rows, int dim,
                                            const float* queries, int n_queries, int k,
                                            std::span<const RowFilter> filters, ScanKernel kernel) {
  const bool avx2 = kernel == ScanKernel::kAvx2 || (kernel == ScanKernel::kAuto && CpuHasAvx2());
  // The first query of a block streams it from memory (row by row); the others find it
  // in L1 and take the eight-row kernel.
  const auto streaming_scores_of = avx2 ? ScoresAvx2Rowwise : ScoresScalar;
  const auto cached_scores_of = avx2 ? ScoresAvx2 : ScoresScalar;
  const auto above_of = avx2 ? AboveAvx2 : AboveScalar;
  std::vector<int> candidates;
  const int block_rows = BlockRows(dim);
  candidates.reserve(block_rows);
  // Min-heaps (worst on top) of each query's best k so far.
  std::vector<std::priority_queue<ScanHit, std::vector<ScanHit>, Worse>> heaps(n_queries);
  std::vector<float> scores(block_rows);
  for (int start = 0; start < n_rows; start += block_rows) {
    const int count = std::min(block_rows, n_rows - start);
    const float* block = rows + static_cast<size_t>(start) * dim;
    for (int q = 0; q < n_queries; ++q) {
      (q == 0 ? streaming_scores_of : cached_scores_of)(block, count, dim, queries + static_cast<size_t>(q) * dim, scores.data());
      auto& heap = heaps[q];
      const RowFilter* filter = filters.empty() || filters[q].empty() ? nullptr : &filters[q];
      // Rows scan in ascending order, so once the heap is full a row enters only with a
      // score strictly above the k-th best (on a tie the earlier row stays).
      // Until the heap is full every row is a candidate (whatever its score).
      candidates.clear();
      if (static_cast<int>(heap.size()) == k) {
        above_of(scores.data(), count, heap.top().score, &candidates);
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
  }
  std::vector<std::vector<ScanHit>> out(n_queries);
  for (int q = 0; q < n_queries; ++q) {
    auto& heap = heaps[q];
    out[q].resize(heap.size());
    for (size_t i = heap.size(); i > 0; --i) {
      out[q][i - 1] = heap.top();
      heap.pop();
    }
  }
  return out;
}

}  // namespace twotower
