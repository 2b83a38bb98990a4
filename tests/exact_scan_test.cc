// The exact scan kernel against FAISS's IndexFlatIP: the same top-k, scalar and AVX2.
#include <faiss/IndexFlat.h>

#include <algorithm>
#include <random>

#include "gtest/gtest.h"
#include "index/exact_scan.h"
#include "index/item_index.h"

namespace twotower {
namespace {

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void ExpectSameAsFaiss(int n, int dim, int n_queries, int k, ScanKernel kernel) {
  const std::vector<float> rows = Random(static_cast<size_t>(n) * dim, n + dim);
  const std::vector<float> queries = Random(static_cast<size_t>(n_queries) * dim, 7);
  faiss::IndexFlatIP faiss_index(dim);
  faiss_index.add(n, rows.data());
  std::vector<float> scores(static_cast<size_t>(n_queries) * k);
  std::vector<faiss::Index::idx_t> labels(static_cast<size_t>(n_queries) * k);
  faiss_index.search(n_queries, queries.data(), k, scores.data(), labels.data());
  const std::vector<std::vector<ScanHit>> ours =
      ExactTopK(rows.data(), n, dim, queries.data(), n_queries, k, {}, kernel);
  ASSERT_EQ(ours.size(), static_cast<size_t>(n_queries));
  for (int q = 0; q < n_queries; ++q) {
    ASSERT_EQ(ours[q].size(), static_cast<size_t>(std::min(n, k)));
    for (size_t r = 0; r < ours[q].size(); ++r) {
      EXPECT_EQ(ours[q][r].row, labels[q * k + r]) << "dim " << dim << " query " << q << " rank " << r;
      EXPECT_NEAR(ours[q][r].score, scores[q * k + r], 1e-4) << "dim " << dim;
    }
  }
}

TEST(ExactScanTest, ScalarMatchesFaiss) {
  // One query: the dot-product kernel; five: the block matrix product.
  for (int queries : {1, 5}) {
    for (int dim : {1, 7, 8, 32, 64, 67}) ExpectSameAsFaiss(3000, dim, queries, 20, ScanKernel::kScalar);
  }
}

TEST(ExactScanTest, Avx2MatchesFaiss) {
  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU (the scalar kernel serves it)";
  // 3003 rows: the last block ends with rows the eight-row kernel leaves to the tail loop.
  for (int queries : {1, 5}) {
    for (int dim : {1, 7, 8, 16, 32, 64, 67, 128}) {
      ExpectSameAsFaiss(3000, dim, queries, 20, ScanKernel::kAvx2);
      ExpectSameAsFaiss(3003, dim, queries, 100, ScanKernel::kAvx2);
    }
  }
}

// A query scores the same in any position of a batch (the first query of a block and the
// others are read by different kernels, which must add in the same order).
TEST(ExactScanTest, ScoresDoNotDependOnThePlaceInTheBatch) {
  // Only the AVX2 path has two kernels (the scalar one reads every query alike).
  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU: one kernel only, nothing to compare";
  for (const ScanKernel kernel : {ScanKernel::kAvx2}) {
    for (int dim : {8, 32, 64, 67}) {
      const std::vector<float> rows = Random(static_cast<size_t>(1001) * dim, 3);
      std::vector<float> queries = Random(static_cast<size_t>(2) * dim, 4);
      std::copy(queries.begin(), queries.begin() + dim, queries.begin() + dim);  // same query twice
      const std::vector<std::vector<ScanHit>> hits = ExactTopK(rows.data(), 1001, dim, queries.data(), 2, 50, {}, kernel);
      ASSERT_EQ(hits[0].size(), hits[1].size());
      for (size_t r = 0; r < hits[0].size(); ++r) {
        EXPECT_EQ(hits[0][r].row, hits[1][r].row) << dim;
        EXPECT_EQ(hits[0][r].score, hits[1][r].score) << dim;  // bit for bit
      }
    }
  }
}

// Rows scoring -inf still count while fewer than k rows have been found.
TEST(ExactScanTest, NonFiniteScoresStillFillTheTopK) {
  const std::vector<float> rows = {1.0f, -3e38f, -3e38f};  // dim 1: scores q, -inf, -inf
  const std::vector<float> query = {3e38f};
  const std::vector<std::vector<ScanHit>> hits = ExactTopK(rows.data(), 3, 1, query.data(), 1, 3, {});
  ASSERT_EQ(hits[0].size(), 3u);
  EXPECT_EQ(hits[0][0].row, 0);
}

TEST(ExactScanTest, KLargerThanRowsAndFilters) {
  const std::vector<float> rows = Random(10 * 8, 1), query = Random(8, 2);
  const std::vector<std::vector<ScanHit>> all = ExactTopK(rows.data(), 10, 8, query.data(), 1, 50, {});
  EXPECT_EQ(all[0].size(), 10u);
  const absl::flat_hash_set<int32_t> excluded = {all[0][0].row, all[0][1].row};
  std::vector<RowFilter> filters(1);
  filters[0].excluded = &excluded;
  const std::vector<std::vector<ScanHit>> rest = ExactTopK(rows.data(), 10, 8, query.data(), 1, 3, filters);
  ASSERT_EQ(rest[0].size(), 3u);
  EXPECT_EQ(rest[0][0].row, all[0][2].row);
  EXPECT_EQ(rest[0][2].row, all[0][4].row);
}

}  // namespace
}  // namespace twotower
