#include "index/exact_scan.h"

#include <immintrin.h>

#include <algorithm>
#include <queue>

#include "index/item_index.h"

namespace twotower {

namespace {

constexpr int kBlockRows = 512;  // 512 x 64 floats = 128 KiB: stays in L2 across queries

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

__attribute__((target("avx2,fma"))) void ScoresAvx2(const float* rows, int count, int dim,
                                                     const float* q, float* out) {
  const int whole = dim / 8 * 8;
  for (int r = 0; r < count; ++r) {
    const float* x = rows + static_cast<size_t>(r) * dim;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int d = 0;
    for (; d + 16 <= whole; d += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(q + d), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + d + 8), _mm256_loadu_ps(q + d + 8), acc1);
    }
    for (; d < whole; d += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(q + d), acc0);
    const __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    float sum = _mm_cvtss_f32(s);
    for (; d < dim; ++d) sum += x[d] * q[d];
    out[r] = sum;
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
  const auto scores_of = avx2 ? ScoresAvx2 : ScoresScalar;
  // Min-heaps (worst on top) of each query's best k so far.
  std::vector<std::priority_queue<ScanHit, std::vector<ScanHit>, Worse>> heaps(n_queries);
  std::vector<float> scores(kBlockRows);
  for (int start = 0; start < n_rows; start += kBlockRows) {
    const int count = std::min(kBlockRows, n_rows - start);
    const float* block = rows + static_cast<size_t>(start) * dim;
    for (int q = 0; q < n_queries; ++q) {
      scores_of(block, count, dim, queries + static_cast<size_t>(q) * dim, scores.data());
      auto& heap = heaps[q];
      const RowFilter* filter = filters.empty() || filters[q].empty() ? nullptr : &filters[q];
      for (int r = 0; r < count; ++r) {
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
