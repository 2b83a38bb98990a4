// The item index: exact inner-product search equals brute force, exclusions still give k
// results, ANN factories work, FAISS errors come back as Status.
#include <algorithm>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "index/huge_page_array.h"
#include "index/item_index.h"

namespace twotower {
namespace {

struct Data {
  std::vector<std::string> ids;
  std::vector<float> vectors;
};

Data RandomData(int n, int dim, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Data data;
  for (int i = 0; i < n; ++i) data.ids.push_back("item-" + std::to_string(i));
  data.vectors.resize(static_cast<size_t>(n) * dim);
  for (float& x : data.vectors) x = normal(rng);
  return data;
}

std::vector<int32_t> BruteForce(const Data& data, const float* q, int dim, int k,
                                const absl::flat_hash_set<int32_t>& excluded) {
  const int n = static_cast<int>(data.ids.size());
  std::vector<float> scores(n);
  for (int i = 0; i < n; ++i) {
    scores[i] = 0;
    for (int d = 0; d < dim; ++d) scores[i] += q[d] * data.vectors[static_cast<size_t>(i) * dim + d];
  }
  std::vector<int32_t> order;
  for (int i = 0; i < n; ++i) {
    if (!excluded.contains(i)) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] > scores[b]; });
  order.resize(std::min<size_t>(k, order.size()));
  return order;
}

TEST(HugePageArrayTest, CopiesOnAHugePageBoundary) {
  std::vector<float> values(600000);  // 2.4 MB: above one huge page
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  const HugePageFloats copy(values);
  ASSERT_EQ(copy.size(), values.size());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(copy.data()) % (uintptr_t{2} << 20), 0u);
  EXPECT_TRUE(std::equal(values.begin(), values.end(), copy.data()));
  const HugePageFloats empty(std::span<const float>{});
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.data(), nullptr);
  const std::vector<float> few = {1.0f, 2.0f, 3.0f};
  HugePageFloats small(few);  // below one huge page: ordinary alignment, same contents
  EXPECT_TRUE(std::equal(few.begin(), few.end(), small.data()));
  HugePageFloats moved(std::move(small));
  EXPECT_EQ(moved.size(), 3u);
  EXPECT_EQ(small.size(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(small.data(), nullptr);
  // The fp16 copies: the same for 2-byte values, also filled in place.
  auto halves = HugePageArray<uint16_t>::Uninitialized(1500000);  // 3 MB
  ASSERT_EQ(halves.size(), 1500000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(halves.data()) % (uintptr_t{2} << 20), 0u);
  for (size_t i = 0; i < halves.size(); ++i) halves.mutable_data()[i] = static_cast<uint16_t>(i);
  EXPECT_EQ(halves.data()[1499999], static_cast<uint16_t>(1499999));
  EXPECT_EQ(HugePageArray<uint16_t>::Uninitialized(0).data(), nullptr);
}

TEST(ItemIndexTest, FlatMatchesBruteForceWithExclusions) {
  const int dim = 8, k = 10;
  const Data data = RandomData(500, dim, 1);
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, {});
  ASSERT_TRUE(index.ok()) << index.status();
  const Data queries = RandomData(3, dim, 2);
  // Exclude the true top 5 of query 0: the index must still return exactly k others.
  const std::vector<int32_t> top = BruteForce(data, queries.vectors.data(), dim, 5, {});
  std::vector<absl::flat_hash_set<int32_t>> excluded(3);
  excluded[0].insert(top.begin(), top.end());
  absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
      (*index)->Search(queries.vectors.data(), 3, k, &excluded);
  ASSERT_TRUE(hits.ok()) << hits.status();
  for (int q = 0; q < 3; ++q) {
    const std::vector<int32_t> expected = BruteForce(data, queries.vectors.data() + q * dim, dim, k, excluded[q]);
    ASSERT_EQ((*hits)[q].size(), static_cast<size_t>(k));
    for (int r = 0; r < k; ++r) {
      EXPECT_EQ((*hits)[q][r].row, expected[r]) << "query " << q << " rank " << r;
      if (r > 0) {
        EXPECT_GE((*hits)[q][r - 1].score, (*hits)[q][r].score);
      }
    }
  }
  EXPECT_EQ((*index)->ids()[(*hits)[1][0].row], data.ids[(*hits)[1][0].row]);
}

// The exact index answers the same with and without its fp16 first pass (the default),
// rows and scores bit for bit, with exclusions and allowed-row filters.
TEST(ItemIndexTest, FlatAnswersTheSameWithAndWithoutTheHalfPass) {
  const int dim = 32, k = 25, n_queries = 5;
  const Data data = RandomData(3000, dim, 11);
  const Data queries = RandomData(n_queries, dim, 12);
  IndexOptions floats_only;
  floats_only.half_first_pass = false;
  absl::StatusOr<std::unique_ptr<ItemIndex>> with = ItemIndex::Build(data.ids, data.vectors, dim, {});
  absl::StatusOr<std::unique_ptr<ItemIndex>> without = ItemIndex::Build(data.ids, data.vectors, dim, floats_only);
  ASSERT_TRUE(with.ok() && without.ok());
  const absl::flat_hash_set<int32_t> excluded = {1, 2, 3, 500};
  std::vector<uint8_t> allowed(3000, 0);
  for (int r = 0; r < 3000; r += 2) allowed[r] = 1;
  std::vector<RowFilter> filters(n_queries);
  filters[1].excluded = &excluded;
  filters[3].allowed = &allowed;
  const auto a = (*with)->Search(queries.vectors.data(), n_queries, k, filters);
  const auto b = (*without)->Search(queries.vectors.data(), n_queries, k, filters);
  ASSERT_TRUE(a.ok() && b.ok());
  for (int q = 0; q < n_queries; ++q) {
    ASSERT_EQ((*a)[q].size(), static_cast<size_t>(k));
    ASSERT_EQ((*a)[q].size(), (*b)[q].size());
    for (int i = 0; i < k; ++i) {
      EXPECT_EQ((*a)[q][i].row, (*b)[q][i].row);
      EXPECT_EQ((*a)[q][i].score, (*b)[q][i].score);
    }
  }
}

TEST(ItemIndexTest, KLargerThanCatalogueReturnsEveryEligibleItem) {
  const Data data = RandomData(5, 4, 3);
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, 4, {});
  ASSERT_TRUE(index.ok());
  std::vector<absl::flat_hash_set<int32_t>> excluded = {{0, 1}};
  absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
      (*index)->Search(data.vectors.data(), 1, 100, &excluded);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ((*hits)[0].size(), 3u);
}

TEST(ItemIndexTest, HnswAndIvfUseInnerProduct) {
  const int dim = 8;
  const Data data = RandomData(2000, dim, 4);
  const Data queries = RandomData(1, dim, 5);
  const std::vector<int32_t> exact = BruteForce(data, queries.vectors.data(), dim, 1, {});
  for (const IndexOptions& options : {IndexOptions{"HNSW32,Flat", 256, 0}, IndexOptions{"IVF16,Flat", 0, 16}}) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, options);
    ASSERT_TRUE(index.ok()) << options.factory << ": " << index.status();
    absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
        (*index)->Search(queries.vectors.data(), 1, 1, nullptr);
    ASSERT_TRUE(hits.ok());
    // With every list probed / a deep search, the best inner product is found (an L2
    // index would usually pick another item: these vectors are not normalised).
    EXPECT_EQ((*hits)[0][0].row, exact[0]) << options.factory;
  }
}

TEST(ItemIndexTest, AllowedRowsAreHonouredByEveryIndexKind) {
  const int dim = 8, k = 10, n = 3000;
  const Data data = RandomData(n, dim, 7);
  const Data queries = RandomData(2, dim, 8);
  std::vector<uint8_t> allowed(n, 0);
  for (int r = 0; r < n; r += 20) allowed[r] = 1;  // 5% of the catalogue
  const absl::flat_hash_set<int32_t> excluded = {0, 20, 40};
  std::vector<RowFilter> filters(2);
  filters[0].allowed = &allowed;
  filters[0].excluded = &excluded;
  // Query 1 unfiltered: batched separately, must equal the plain top-k.
  for (const IndexOptions& options : {IndexOptions{"Flat", 0, 0}, IndexOptions{"IVF16,Flat", 0, 16},
                                      IndexOptions{"HNSW32,Flat", 64, 0}}) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, options);
    ASSERT_TRUE(index.ok()) << index.status();
    absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
        (*index)->Search(queries.vectors.data(), 2, k, filters);
    ASSERT_TRUE(hits.ok()) << hits.status();
    ASSERT_EQ((*hits)[0].size(), static_cast<size_t>(k)) << options.factory;
    for (const ItemIndex::Hit& hit : (*hits)[0]) {
      EXPECT_TRUE(allowed[hit.row] && !excluded.contains(hit.row)) << options.factory << " row " << hit.row;
    }
    ASSERT_EQ((*hits)[1].size(), static_cast<size_t>(k));
    if (options.factory == "Flat") {
      absl::flat_hash_set<int32_t> not_allowed = excluded;
      for (int r = 0; r < n; ++r) {
        if (!allowed[r]) not_allowed.insert(r);
      }
      const std::vector<int32_t> expected = BruteForce(data, queries.vectors.data(), dim, k, not_allowed);
      for (int r = 0; r < k; ++r) EXPECT_EQ((*hits)[0][r].row, expected[r]) << r;
      const std::vector<int32_t> plain = BruteForce(data, queries.vectors.data() + dim, dim, k, {});
      for (int r = 0; r < k; ++r) EXPECT_EQ((*hits)[1][r].row, plain[r]) << r;
    }
  }
}

TEST(ItemIndexTest, BadInputIsAStatusNotAnException) {
  const Data data = RandomData(10, 4, 6);
  EXPECT_EQ(ItemIndex::Build(data.ids, data.vectors, 4, {"NoSuchIndex", 0, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ItemIndex::Build(data.ids, data.vectors, 3, {}).ok());
  absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, 4, {});
  ASSERT_TRUE(index.ok());
  EXPECT_FALSE((*index)->Search(data.vectors.data(), 1, 0, nullptr).ok());
}

}  // namespace
}  // namespace twotower
