// The exact scan kernel against FAISS's IndexFlatIP: the same top-k, scalar and AVX2.
#include <faiss/IndexFlat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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

// The fp16 first pass changes no answer: the same rows, scores bit for bit, ties in row
// order, with filters and with k above the row count. The near-duplicate rows differ by
// less than fp16 can tell apart, so their order rests entirely on the error bound (with
// the bound set to zero this test fails).
TEST(ExactScanTest, HalfFirstPassAnswersAsTheFloats) {
  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU: the fp16 pass is AVX2-only";
  for (int dim : {8, 64, 72}) {
    for (const bool near_duplicates : {false, true}) {
      const int n = 3001;
      std::vector<float> rows = Random(static_cast<size_t>(n) * dim, dim);
      if (near_duplicates) {
        const std::vector<float> noise = Random(rows.size(), dim + 1);
        for (size_t i = 0; i < rows.size(); ++i) rows[i] = rows[i % dim] + 1e-4f * noise[i];
        std::copy(rows.begin() + 5 * dim, rows.begin() + 6 * dim, rows.begin() + 9 * dim);  // an exact tie
      }
      const std::optional<HalfRows> half = HalfRows::Of(rows, dim);
      ASSERT_TRUE(half.has_value()) << dim;
      // Seven queries: the fp16 kernels for two queries and for one, around query 3.
      const int n_queries = 7;
      std::vector<float> queries = Random(static_cast<size_t>(n_queries) * dim, 11);
      // Query 3 too large for the fp16 pass (its scores could overflow): the batch mixes
      // queries answered from the fp16 copy and one from the floats alone.
      queries[static_cast<size_t>(3) * dim] = 3e38f;
      const absl::flat_hash_set<int32_t> excluded = {0, 5, 17, 2000};
      std::vector<uint8_t> allowed(n, 1);
      for (int r = 0; r < n; r += 3) allowed[r] = 0;
      std::vector<RowFilter> filters(n_queries);
      filters[1].excluded = &excluded;
      filters[2].allowed = &allowed;
      filters[5].excluded = &excluded;
      filters[6].allowed = &allowed;
      for (int k : {1, 10, 100, 5000}) {
        for (const std::span<const RowFilter> with : {std::span<const RowFilter>{}, std::span<const RowFilter>(filters)}) {
          const auto floats = ExactTopK(rows.data(), n, dim, queries.data(), n_queries, k, with, ScanKernel::kAvx2);
          const auto halves = ExactTopK(rows.data(), n, dim, queries.data(), n_queries, k, with, ScanKernel::kAvx2, &*half);
          for (int q = 0; q < n_queries; ++q) {
            ASSERT_EQ(floats[q].size(), halves[q].size()) << dim << " k " << k << " query " << q;
            for (size_t r = 0; r < floats[q].size(); ++r) {
              ASSERT_EQ(floats[q][r].row, halves[q][r].row) << dim << " k " << k << " query " << q << " rank " << r
                                                            << (near_duplicates ? " near-duplicates" : "");
              ASSERT_EQ(floats[q][r].score, halves[q][r].score);
            }
          }
        }
      }
    }
  }
}

// fp16 -> float, for checking the copy (IEEE binary16: 1 sign, 5 exponent, 10 fraction bits).
float FromHalf(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(fraction), -24)
                                        : std::ldexp(static_cast<float>(fraction | 0x400), exponent - 25);
  return (h & 0x8000) != 0 ? -magnitude : magnitude;
}

TEST(ExactScanTest, HalfRowsAndTheirErrorBound) {
  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU: the fp16 pass is AVX2-only";
  const int dim = 16, n = 2000;
  std::vector<float> rows = Random(static_cast<size_t>(n) * dim, 5);
  for (size_t i = 0; i < rows.size(); i += 7) rows[i] *= 1e-6f;  // below fp16's normal range
  const std::optional<HalfRows> half = HalfRows::Of(rows, dim);
  ASSERT_TRUE(half.has_value());
  ASSERT_EQ(half->rows(), n);
  ASSERT_EQ(half->dim(), dim);
  std::vector<double> norms(n);
  for (int r = 0; r < n; ++r) {
    double norm2 = 0;
    for (int d = 0; d < dim; ++d) {
      const float x = rows[static_cast<size_t>(r) * dim + d], h = FromHalf(half->data()[static_cast<size_t>(r) * dim + d]);
      ASSERT_LE(std::fabs(h - x), std::ldexp(std::fabs(x), -11) + std::ldexp(1.0f, -25)) << x;
      norm2 += static_cast<double>(x) * x;
    }
    norms[r] = std::sqrt(norm2);
    ASSERT_GE(half->group_norm(r / HalfRows::kGroupRows), norms[r]);
  }
  for (int g = 0; g < n / HalfRows::kGroupRows; ++g) {  // the largest of its rows, rounded up
    const double largest = *std::max_element(norms.begin() + g * HalfRows::kGroupRows,
                                             norms.begin() + (g + 1) * HalfRows::kGroupRows);
    EXPECT_NEAR(half->group_norm(g), largest, 1e-6 * largest);
  }
  EXPECT_NEAR(half->max_row_norm(), *std::max_element(norms.begin(), norms.end()), 1e-5);
  // The bound covers the fp16 rounding of every row (exactly, in double), and is tight:
  // somewhere the rounding uses a good part of it.
  const std::vector<float> queries = Random(static_cast<size_t>(20) * dim, 6);
  double worst = 0;
  for (int q = 0; q < 20; ++q) {
    const float* query = queries.data() + static_cast<size_t>(q) * dim;
    const std::optional<HalfErrorBound> bound = HalfScoreErrorBound(query, dim, half->max_row_norm());
    ASSERT_TRUE(bound.has_value());
    for (int r = 0; r < n; ++r) {
      double exact = 0, rounded = 0;
      for (int d = 0; d < dim; ++d) {
        const size_t at = static_cast<size_t>(r) * dim + d;
        exact += static_cast<double>(query[d]) * rows[at];
        rounded += static_cast<double>(query[d]) * FromHalf(half->data()[at]);
      }
      const double e = bound->For(half->group_norm(r / HalfRows::kGroupRows));
      ASSERT_LE(std::fabs(rounded - exact), e);
      worst = std::max(worst, std::fabs(rounded - exact) / e);
    }
  }
  EXPECT_GT(worst, 0.05) << "the bound is far looser than the rounding it covers";
  // One row of large norm (fp16's largest value) widens the bound of its own group only.
  std::vector<float> outlier = rows;
  outlier[3] = 65504.0f;
  const std::optional<HalfRows> wide = HalfRows::Of(outlier, dim);
  ASSERT_TRUE(wide.has_value());
  EXPECT_GE(wide->group_norm(0), 65504.0f);
  EXPECT_EQ(wide->group_norm(1), half->group_norm(1));
  // What fp16 cannot hold: no copy.
  for (const float bad : {70000.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> one(8, 1.0f);
    one[2] = bad;
    EXPECT_FALSE(HalfRows::Of(one, 8).has_value()) << bad;
  }
  // A query that is not finite, or so large a score could overflow: no fp16 pass.
  std::vector<float> query(dim, 1.0f);
  query[0] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(HalfScoreErrorBound(query.data(), dim, 1.0).has_value());
  query[0] = 3e38f;
  EXPECT_FALSE(HalfScoreErrorBound(query.data(), dim, 1.0).has_value());
}

// The fp16 pass prunes: on random rows only a few rows per query are scored again from
// the floats, also when one row has a norm far above the others (it widens the bound of
// its own group of rows, not of the whole matrix).
TEST(ExactScanTest, HalfPassScoresFewRowsAgain) {
  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU: the fp16 pass is AVX2-only";
  const int dim = 64, n = 20000, k = 50, n_queries = 4;
  std::vector<float> rows = Random(static_cast<size_t>(n) * dim, 8);
  for (int d = 0; d < dim; ++d) rows[static_cast<size_t>(777) * dim + d] *= 1000.0f;
  const std::vector<float> queries = Random(static_cast<size_t>(n_queries) * dim, 9);
  const std::optional<HalfRows> half = HalfRows::Of(rows, dim);
  ASSERT_TRUE(half.has_value());
  ScanStats stats;
  const auto halves = ExactTopK(rows.data(), n, dim, queries.data(), n_queries, k, {}, ScanKernel::kAvx2, &*half, &stats);
  const auto floats = ExactTopK(rows.data(), n, dim, queries.data(), n_queries, k, {}, ScanKernel::kAvx2);
  for (int q = 0; q < n_queries; ++q) {
    ASSERT_EQ(halves[q].size(), floats[q].size());
    for (size_t r = 0; r < floats[q].size(); ++r) EXPECT_EQ(halves[q][r].row, floats[q][r].row);
  }
  EXPECT_EQ(stats.half_queries, n_queries);
  EXPECT_GE(stats.float_rescored, static_cast<int64_t>(n_queries) * k);
  // The k best, the outlier's neighbourhood and a narrow band: a few hundred rows, not the 80,000.
  EXPECT_LT(stats.float_rescored, static_cast<int64_t>(n_queries) * (k + 200)) << "the fp16 pass kept too many rows";
}

}  // namespace
}  // namespace twotower
