// The item index: exact inner-product search equals brute force, exclusions still give k
// results, ANN factories work, FAISS errors come back as Status, factory strings and
// search parameters FAISS would crash on are INVALID_ARGUMENT before it sees them, and
// every index returns min(k, eligible) rows.
#include <algorithm>
#include <climits>
#include <numeric>
#include <random>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "index/catalogue.h"
#include "index/huge_page_array.h"
#include "index/item_index.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

using ::twotower::testing::IsOk;

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
  ASSERT_THAT(index, IsOk());
  const Data queries = RandomData(3, dim, 2);
  // Exclude the true top 5 of query 0: the index must still return exactly k others.
  const std::vector<int32_t> top = BruteForce(data, queries.vectors.data(), dim, 5, {});
  std::vector<absl::flat_hash_set<int32_t>> excluded(3);
  excluded[0].insert(top.begin(), top.end());
  absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
      (*index)->Search(queries.vectors.data(), 3, k, &excluded);
  ASSERT_THAT(hits, IsOk());
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
  EXPECT_EQ((*index)->size(), 500);
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
  ASSERT_THAT(with, IsOk());
  ASSERT_THAT(without, IsOk());
  const absl::flat_hash_set<int32_t> excluded = {1, 2, 3, 500};
  std::vector<uint8_t> allowed(3000, 0);
  for (int r = 0; r < 3000; r += 2) allowed[r] = 1;
  std::vector<RowFilter> filters(n_queries);
  filters[1].excluded = &excluded;
  filters[3].allowed = &allowed;
  const auto a = (*with)->Search(queries.vectors.data(), n_queries, k, filters);
  const auto b = (*without)->Search(queries.vectors.data(), n_queries, k, filters);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
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
  ASSERT_THAT(index, IsOk());
  std::vector<absl::flat_hash_set<int32_t>> excluded = {{0, 1}};
  absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
      (*index)->Search(data.vectors.data(), 1, 100, &excluded);
  ASSERT_THAT(hits, IsOk());
  EXPECT_EQ((*hits)[0].size(), 3u);
}

TEST(ItemIndexTest, HnswAndIvfUseInnerProduct) {
  const int dim = 8;
  const Data data = RandomData(2000, dim, 4);
  const Data queries = RandomData(1, dim, 5);
  const std::vector<int32_t> exact = BruteForce(data, queries.vectors.data(), dim, 1, {});
  for (const IndexOptions& options : {IndexOptions{"HNSW32,Flat", 256, 0}, IndexOptions{"IVF16,Flat", 0, 16}}) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, options);
    ASSERT_THAT(index, IsOk());
    absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
        (*index)->Search(queries.vectors.data(), 1, 1, nullptr);
    ASSERT_THAT(hits, IsOk());
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
    ASSERT_THAT(index, IsOk());
    absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> hits =
        (*index)->Search(queries.vectors.data(), 2, k, filters);
    ASSERT_THAT(hits, IsOk());
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
  ASSERT_THAT(index, IsOk());
  EXPECT_FALSE((*index)->Search(data.vectors.data(), 1, 0, nullptr).ok());
}

// The reported strings (each killed the process: SIGABRT, SIGSEGV, SIGFPE) and their
// neighbours: INVALID_ARGUMENT from ValidateIndexOptions and from Build, naming the bad
// part, in this process (a crash would take the test binary with it).
TEST(IndexOptionsTest, FactoryStringsFaissCannotTakeAreInvalidArgument) {
  const Data data = RandomData(300, 8, 6);
  struct Case {
    std::string factory;
    std::string names;  // in the message
  };
  const std::vector<Case> cases = {
      {"IVF0,Flat", "nlist 0 is out of range 1..1048576"},  // FAISS assert: SIGABRT
      {"HNSW0", "HNSW M 0 is out of range 2..256"},         // SIGSEGV
      {"HNSW0,Flat", "HNSW M 0"},                           // SIGSEGV
      {"PQ0", "PQ m 0 is out of range"},                    // SIGFPE
      {"PQ4x64", "PQ nbits 64 is out of range 1..8"},       // SIGFPE
      {std::string(30000, 'A'), "longer than 256 characters"},  // SIGSEGV
      {"HNSW1", "HNSW M 1"},                                // FAISS: bad_alloc (level multiplier 1/ln 1)
      {"HNSW257", "HNSW M 257"},
      {"IVF1048577,Flat", "nlist 1048577"},
      {"IVF99999999999,Flat", "not a plain decimal"},
      {"IVF-1,Flat", "not a plain decimal"},
      {"IVF+1,Flat", "not a plain decimal"},
      {"IVF016,Flat", "not a plain decimal"},
      {"IVF,Flat", "not a plain decimal"},
      {"PQ4x0", "PQ nbits 0"},                              // SIGFPE
      {"PQ4x9", "PQ nbits 9"},
      {"IVF16,PQ4x16", "PQ nbits 16"},
      {"PQ4x", "PQ nbits \"\""},
      {"PQx8", "PQ m"},
      {"PQ5000", "PQ m 5000"},
      {"IVF16", "needs its codes"},
      {"HNSW32,SQ8", "Flat storage only"},
      {"HNSW32,PQ4", "Flat storage only"},
      {"IVF16,HNSW32", "not a supported index"},
      {"Flat,Flat", "not a supported index"},
      {"IVF16,Flat,Refine(Flat)", "not a supported index"},
      {"IDMap,Flat", "not a supported index"},
      {"OPQ4,PQ4", "not a supported index"},
      {"LSH", "not a supported index"},
      {"NoSuchIndex", "not a supported index; supported: Flat; HNSW<M>"},
      {"", "not a supported index"},
      {"flat", "not a supported index"},
      {" Flat", "not a supported index"},
      {"Flat ", "not a supported index"},
      {std::string("Flat\0x", 6), "not a supported index"},
  };
  for (const Case& c : cases) {
    const IndexOptions options{c.factory, 0, 0};
    const absl::Status valid = ValidateIndexOptions(options);
    EXPECT_EQ(valid.code(), absl::StatusCode::kInvalidArgument) << c.factory.substr(0, 40);
    EXPECT_TRUE(absl::StrContains(valid.message(), c.names)) << valid.message();
    EXPECT_LT(valid.message().size(), 1000u);  // the 30,000 characters are not echoed
    const absl::Status built = ItemIndex::Build(data.ids, data.vectors, 8, options).status();
    EXPECT_EQ(built, valid) << c.factory.substr(0, 40);
  }
}

TEST(IndexOptionsTest, SearchParametersAreBounded) {
  const auto code = [](const std::string& factory, int ef_search, int nprobe) {
    return ValidateIndexOptions({factory, ef_search, nprobe}).code();
  };
  constexpr auto kOk = absl::StatusCode::kOk;
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code("HNSW32,Flat", 2147483647, 0), kInvalid);  // accepted before; Retrieve aborted
  EXPECT_EQ(code("HNSW32,Flat", kMaxEfSearch + 1, 0), kInvalid);
  EXPECT_EQ(code("HNSW32,Flat", -1, 0), kInvalid);
  EXPECT_EQ(code("HNSW32,Flat", kMaxEfSearch, 0), kOk);
  EXPECT_EQ(code("HNSW32,Flat", 0, 0), kOk);
  EXPECT_EQ(code("IVF16,Flat", 0, 17), kInvalid);  // nprobe <= nlist
  EXPECT_EQ(code("IVF16,Flat", 0, -1), kInvalid);
  EXPECT_EQ(code("IVF16,Flat", 0, 16), kOk);
  EXPECT_EQ(code("IVF16,SQ8", 0, 2147483647), kInvalid);
  // A value for another kind of index (the server keeps the last ones across a rebuild):
  // bounded, otherwise ignored.
  EXPECT_EQ(code("HNSW32", 0, 4096), kOk);
  EXPECT_EQ(code("Flat", 512, 64), kOk);
  EXPECT_EQ(code("IVF16,Flat", 512, 0), kOk);
  EXPECT_EQ(code("Flat", 0, kMaxNlist + 1), kInvalid);
  EXPECT_TRUE(absl::StrContains(ValidateIndexOptions({"HNSW32,Flat", 2147483647, 0}).message(), "ef_search 2147483647"));
  EXPECT_TRUE(absl::StrContains(ValidateIndexOptions({"IVF16,Flat", 0, 17}).message(), "nprobe 17"));

  // The same bounds at Build and in SetSearchParams (which then changes nothing).
  const Data data = RandomData(500, 8, 13);
  EXPECT_EQ(ItemIndex::Build(data.ids, data.vectors, 8, {"HNSW32,Flat", 2147483647, 0}).status().code(), kInvalid);
  EXPECT_EQ(ItemIndex::Build(data.ids, data.vectors, 8, {"IVF16,Flat", 0, 17}).status().code(), kInvalid);
  absl::StatusOr<std::unique_ptr<ItemIndex>> hnsw = ItemIndex::Build(data.ids, data.vectors, 8, {"HNSW32,Flat", 64, 0});
  ASSERT_THAT(hnsw, IsOk());
  EXPECT_EQ((*hnsw)->SetSearchParams(2147483647, 0).code(), kInvalid);
  EXPECT_EQ((*hnsw)->SetSearchParams(-1, 0).code(), kInvalid);
  EXPECT_EQ((*hnsw)->options().ef_search, 64);
  EXPECT_THAT((*hnsw)->SetSearchParams(128, 0), IsOk());
  EXPECT_EQ((*hnsw)->options().ef_search, 128);
  absl::StatusOr<std::unique_ptr<ItemIndex>> ivf = ItemIndex::Build(data.ids, data.vectors, 8, {"IVF16,Flat", 0, 4});
  ASSERT_THAT(ivf, IsOk());
  EXPECT_EQ((*ivf)->SetSearchParams(0, 17).code(), kInvalid);
  EXPECT_EQ((*ivf)->options().nprobe, 4);
  EXPECT_THAT((*ivf)->SetSearchParams(0, 16), IsOk());
  EXPECT_EQ((*ivf)->options().nprobe, 16);
  for (const auto* index : {&*hnsw, &*ivf}) {
    const auto hits = (*index)->Search(data.vectors.data(), 1, 10, nullptr);
    ASSERT_THAT(hits, IsOk());
    EXPECT_EQ((*hits)[0].size(), 10u);
  }
}

// What needs the data: Build's INVALID_ARGUMENT, before FAISS trains (its k-means throws
// on too few points, but SQ8 over no items segfaulted).
TEST(IndexOptionsTest, FactoriesThatDoNotFitTheItemsAreInvalidArgument) {
  const Data data = RandomData(100, 8, 14);
  const Data none = RandomData(0, 8, 14);
  struct Case {
    const Data* data;
    int dim;
    std::string factory;
    std::string names;
  };
  const std::vector<Case> cases = {
      {&data, 8, "IVF101,Flat", "needs at least 101 items to train, the catalogue has 100"},
      {&none, 8, "IVF1,Flat", "needs at least 1 items"},
      {&none, 8, "SQ8", "needs at least 1 items"},
      {&none, 8, "IVF1,SQfp16", "needs at least 1 items"},
      {&data, 8, "PQ4", "needs at least 256 items"},
      {&data, 8, "IVF4,PQ4x7", "needs at least 128 items"},
      {&data, 8, "PQ3x4", "PQ m 3 does not divide the dimension 8"},
      {&data, 8, "PQ16x2", "PQ m 16 does not divide the dimension 8"},
      {&data, 8, "IVF4,PQ5x2", "PQ m 5 does not divide"},
  };
  for (const Case& c : cases) {
    const absl::Status s = ItemIndex::Build(c.data->ids, c.data->vectors, c.dim, {c.factory, 0, 0}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.factory;
    EXPECT_TRUE(absl::StrContains(s.message(), c.names)) << s.message();
    EXPECT_THAT(ValidateIndexOptions({c.factory, 0, 0}), IsOk());  // the form is fine
  }
  // Indexes that need no training take an empty catalogue and answer nothing.
  for (const std::string factory : {"Flat", "HNSW32", "HNSW32,Flat", "SQfp16"}) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build({}, {}, 8, {factory, 0, 0});
    ASSERT_THAT(index, IsOk());
    const auto hits = (*index)->Search(data.vectors.data(), 2, 10, nullptr);
    ASSERT_THAT(hits, IsOk());
    EXPECT_TRUE((*hits)[0].empty() && (*hits)[1].empty()) << factory;
  }
}

// Checks one query's hits: at most k, sorted by descending score, no row twice, every row
// allowed by `filter` (may be null) and in range.
void ExpectWellFormed(const std::vector<ItemIndex::Hit>& hits, int k, int total, const RowFilter* filter,
                      const std::string& what) {
  EXPECT_LE(hits.size(), static_cast<size_t>(k)) << what;
  absl::flat_hash_set<int32_t> seen;
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_TRUE(hits[i].row >= 0 && hits[i].row < total) << what << " row " << hits[i].row;
    EXPECT_TRUE(seen.insert(hits[i].row).second) << what << " row " << hits[i].row << " twice";
    if (filter != nullptr) {
      EXPECT_TRUE(filter->Allows(hits[i].row)) << what << " row " << hits[i].row;
    }
    if (i > 0) {
      EXPECT_GE(hits[i - 1].score, hits[i].score) << what << " rank " << i;
    }
  }
}

// Rows where (row * 7919) % n < count: `count` rows spread over the catalogue.
std::vector<uint8_t> Spread(int n, int count) {
  std::vector<uint8_t> allowed(n, 0);
  for (int r = 0; r < n; ++r) allowed[r] = (static_cast<int64_t>(r) * 7919) % n < count;
  return allowed;
}

// The reported shortfalls: IVF16,Flat k = 100 gave 25 rows, with a filter matching 137
// rows k = 10 gave 0, HNSW32,Flat k = 1000 gave 117. Every search now returns min(k,
// eligible) rows, through the fallback (the counters show it ran).
TEST(ItemIndexTest, ApproximateIndexesReturnKWhenKEligibleRowsExist) {
  const int dim = 8, n = 2000;
  const Data data = RandomData(n, dim, 21);
  const Data queries = RandomData(4, dim, 22);
  const std::vector<uint8_t> allowed = Spread(n, 137);
  ASSERT_EQ(std::count(allowed.begin(), allowed.end(), 1), 137);
  RowFilter filter;
  filter.allowed = &allowed;
  const std::vector<RowFilter> filters(4, filter);
  // k = 10 with the 137-row filter: 10 allowed rows for every query.
  const auto expect_ten_filtered = [&](const ItemIndex& index, const std::string& name) {
    const absl::StatusOr<std::vector<std::vector<ItemIndex::Hit>>> filtered =
        index.Search(queries.vectors.data(), 4, 10, filters);
    ASSERT_THAT(filtered, IsOk());
    for (int q = 0; q < 4; ++q) {
      EXPECT_EQ((*filtered)[q].size(), 10u) << name << " 137 eligible query " << q;
      ExpectWellFormed((*filtered)[q], 10, n, &filter, name + " filtered");
    }
  };

  absl::StatusOr<std::unique_ptr<ItemIndex>> ivf = ItemIndex::Build(data.ids, data.vectors, dim, {"IVF16,Flat", 0, 0});
  ASSERT_THAT(ivf, IsOk());
  auto hits = (*ivf)->Search(queries.vectors.data(), 4, 100, nullptr);
  ASSERT_THAT(hits, IsOk());
  for (int q = 0; q < 4; ++q) {
    EXPECT_EQ((*hits)[q].size(), 100u) << "IVF16,Flat k=100 query " << q;
    ExpectWellFormed((*hits)[q], 100, n, nullptr, "IVF16,Flat k=100");
  }
  // k = 300: more than any one list holds (~125 rows each at nprobe 1): it had to widen.
  hits = (*ivf)->Search(queries.vectors.data(), 4, 300, nullptr);
  ASSERT_THAT(hits, IsOk());
  for (int q = 0; q < 4; ++q) {
    EXPECT_EQ((*hits)[q].size(), 300u) << "IVF16,Flat k=300 query " << q;
    ExpectWellFormed((*hits)[q], 300, n, nullptr, "IVF16,Flat k=300");
  }
  EXPECT_EQ((*ivf)->counters().widened, 4);
  expect_ten_filtered(**ivf, "IVF16,Flat");

  absl::StatusOr<std::unique_ptr<ItemIndex>> hnsw = ItemIndex::Build(data.ids, data.vectors, dim, {"HNSW32,Flat", 0, 0});
  ASSERT_THAT(hnsw, IsOk());
  hits = (*hnsw)->Search(queries.vectors.data(), 4, 1000, nullptr);
  ASSERT_THAT(hits, IsOk());
  for (int q = 0; q < 4; ++q) {
    ASSERT_EQ((*hits)[q].size(), 1000u) << "HNSW32,Flat k=1000 query " << q;
    ExpectWellFormed((*hits)[q], 1000, n, nullptr, "HNSW32,Flat k=1000");
    // k = 1000 of 2000 is beyond what a graph search is worth: the exact scan answered.
    const std::vector<int32_t> exact = BruteForce(data, queries.vectors.data() + q * dim, dim, 1000, {});
    for (int r = 0; r < 1000; r += 97) EXPECT_EQ((*hits)[q][r].row, exact[r]) << r;
  }
  EXPECT_EQ((*hnsw)->counters().exact, 4);
  expect_ten_filtered(**hnsw, "HNSW32,Flat");
  // A filter half the rows pass, inside the graph search (an IDSelector): k rows, all
  // allowed, no fallback.
  ASSERT_THAT((*hnsw)->SetSearchParams(64, 0), IsOk());
  const std::vector<uint8_t> half = Spread(n, n / 2);
  RowFilter half_filter;
  half_filter.allowed = &half;
  const std::vector<RowFilter> half_filters(4, half_filter);
  const ItemIndex::Counters before = (*hnsw)->counters();
  hits = (*hnsw)->Search(queries.vectors.data(), 4, 10, half_filters);
  ASSERT_THAT(hits, IsOk());
  for (int q = 0; q < 4; ++q) {
    EXPECT_EQ((*hits)[q].size(), 10u);
    ExpectWellFormed((*hits)[q], 10, n, &half_filter, "HNSW32,Flat half");
  }
  EXPECT_EQ((*hnsw)->counters().exact, before.exact);
  EXPECT_EQ((*hnsw)->counters().queries, before.queries + 4);
}

// Every supported form builds and searches a small catalogue: unfiltered k = 10 and 100,
// k above the catalogue, a filter with 137 eligible rows, one with 5 (k = 10 gives 5),
// every row removed (0), a huge k. Scores of indexes that keep the floats are the true
// inner products; the best row of Flat-storage indexes with all lists / a deep search is
// the exact best.
TEST(ItemIndexTest, EverySupportedFactoryBuildsAndKeepsThePromiseOfK) {
  const int dim = 8, n = 2000;
  const Data data = RandomData(n, dim, 31);
  const Data queries = RandomData(3, dim, 32);
  const std::vector<uint8_t> allowed_137 = Spread(n, 137), allowed_5 = Spread(n, 5);
  absl::flat_hash_set<int32_t> all_rows;
  for (int r = 0; r < n; ++r) all_rows.insert(r);
  const absl::flat_hash_set<int32_t> excluded = {0, 1, 2, 3};
  std::vector<RowFilter> filters(3);
  filters[0].allowed = &allowed_137;
  filters[0].excluded = &excluded;
  filters[1].allowed = &allowed_5;
  filters[2].removed = &all_rows;  // an index over 0 items after all removals
  const std::vector<std::string> factories = {
      "Flat",        "HNSW2",          "HNSW32",       "HNSW32,Flat", "HNSW256,Flat", "IVF1,Flat",
      "IVF16,Flat",  "IVF16,SQ8",      "IVF16,SQfp16", "IVF16,PQ4",   "IVF16,PQ8x4",  "IVF16,PQ2x1",
      "SQ8",         "SQfp16",         "PQ4",          "PQ8x4",       "PQ1x1",        "PQ8"};
  for (const std::string& factory : factories) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, {factory, 0, 0});
    ASSERT_THAT(index, IsOk());
    for (int k : {1, 10, 100, 1999, 2000, 5000, INT_MAX}) {
      const auto hits = (*index)->Search(queries.vectors.data(), 3, k, nullptr);
      ASSERT_THAT(hits, IsOk());
      for (int q = 0; q < 3; ++q) {
        const std::string what = factory + " k " + std::to_string(k);
        ASSERT_EQ((*hits)[q].size(), static_cast<size_t>(std::min(k, n))) << what;
        ExpectWellFormed((*hits)[q], std::min(k, n), n, nullptr, what);
      }
    }
    const auto filtered = (*index)->Search(queries.vectors.data(), 3, 10, filters);
    ASSERT_THAT(filtered, IsOk());
    EXPECT_EQ((*filtered)[0].size(), 10u) << factory << " 137 eligible";
    EXPECT_EQ((*filtered)[1].size(), 5u) << factory << " 5 eligible";
    EXPECT_EQ((*filtered)[2].size(), 0u) << factory << " all removed";
    for (int q = 0; q < 3; ++q) ExpectWellFormed((*filtered)[q], 10, n, &filters[q], factory + " filtered");
    // Every one of the 5 eligible rows, whatever the index.
    for (const ItemIndex::Hit& hit : (*filtered)[1]) EXPECT_TRUE(allowed_5[hit.row]) << factory;

    const bool floats = factory == "Flat" || absl::StartsWith(factory, "HNSW") || absl::EndsWith(factory, ",Flat");
    if (floats) {
      const auto top = (*index)->Search(queries.vectors.data(), 1, 10, nullptr);
      ASSERT_THAT(top, IsOk());
      for (const ItemIndex::Hit& hit : (*top)[0]) {
        float dot = 0;
        for (int d = 0; d < dim; ++d) dot += queries.vectors[d] * data.vectors[static_cast<size_t>(hit.row) * dim + d];
        EXPECT_NEAR(hit.score, dot, 1e-4) << factory;
      }
    }
  }
}

// The queries of one batch are independent: a short query is searched again on its own,
// the others keep their first answer; plain and filtered queries mixed.
TEST(ItemIndexTest, MixedBatchesKeepEveryQuerysOwnAnswer) {
  const int dim = 8, n = 2000;
  const Data data = RandomData(n, dim, 41);
  const Data queries = RandomData(6, dim, 42);
  const std::vector<uint8_t> allowed = Spread(n, 137);
  std::vector<RowFilter> filters(6);
  filters[1].allowed = &allowed;
  filters[4].allowed = &allowed;
  for (const std::string factory : {"IVF16,Flat", "HNSW32,Flat", "PQ4", "IVF16,SQ8"}) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, {factory, 0, 0});
    ASSERT_THAT(index, IsOk());
    const auto batch = (*index)->Search(queries.vectors.data(), 6, 50, filters);
    ASSERT_THAT(batch, IsOk());
    for (int q = 0; q < 6; ++q) {
      const auto alone = (*index)->Search(queries.vectors.data() + q * dim, 1, 50, std::span<const RowFilter>(&filters[q], 1));
      ASSERT_THAT(alone, IsOk());
      ASSERT_EQ((*batch)[q].size(), 50u) << factory << " query " << q;
      ASSERT_EQ((*alone)[0].size(), 50u) << factory << " query " << q;
      for (int r = 0; r < 50; ++r) EXPECT_EQ((*batch)[q][r].row, (*alone)[0][r].row) << factory << " query " << q;
      ExpectWellFormed((*batch)[q], 50, n, filters[q].empty() ? nullptr : &filters[q], factory);
    }
  }
}

// The catalogue over an approximate base: bad options leave it as it was, removals down
// to a few items (or none) still give every remaining item, a huge k is fine.
TEST(CatalogueTest, ApproximateBaseKeepsThePromiseAfterRemovals) {
  const int dim = 8, n = 300;
  const Data data = RandomData(n, dim, 51);
  auto bundle = std::make_shared<Bundle>();
  TowerShape shape;
  shape.fields.push_back({n + 1, 4});
  shape.output_dim = dim;
  absl::StatusOr<Tower> tower = Tower::Create(shape, 1);
  ASSERT_THAT(tower, IsOk());
  bundle->item.tower = *std::move(tower);
  bundle->items.ids = data.ids;
  bundle->items.rows = bundle->item.encoder.NewTable();
  for (int r = 0; r < n; ++r) bundle->items.rows.AppendRow(std::vector<std::vector<int32_t>>(1, std::vector<int32_t>{r + 1}), {});
  bundle->item_vectors = data.vectors;
  ASSERT_EQ(bundle->embedding_dim(), dim);

  EXPECT_EQ(Catalogue::Create(Bundle(*bundle), {"IVF0,Flat", 0, 0}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Catalogue::Create(Bundle(*bundle), {"IVF301,Flat", 0, 0}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue = Catalogue::Create(Bundle(*bundle), {"IVF16,Flat", 0, 0});
  ASSERT_THAT(catalogue, IsOk());
  for (const IndexOptions& bad : {IndexOptions{"HNSW0", 0, 0}, IndexOptions{"PQ4x64", 0, 0},
                                  IndexOptions{"HNSW32,Flat", 2147483647, 0}, IndexOptions{"PQ3", 0, 0}}) {
    EXPECT_EQ((*catalogue)->WithIndex(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad.factory;
  }
  EXPECT_EQ((*catalogue)->index_options().factory, "IVF16,Flat");

  std::vector<std::string> gone(data.ids.begin(), data.ids.end() - 3);
  int64_t removed = 0;
  absl::StatusOr<std::shared_ptr<const Catalogue>> few = (*catalogue)->Remove(gone, &removed);
  ASSERT_THAT(few, IsOk());
  EXPECT_EQ(removed, n - 3);
  std::vector<Catalogue::Query> queries(2);
  queries[0].k = 10;
  queries[1].k = INT_MAX;
  for (const auto& c : {*few, *(*few)->WithIndex({"HNSW16", 0, 0})}) {
    auto results = c->Search(data.vectors.data(), queries);
    ASSERT_THAT(results, IsOk());
    for (int q = 0; q < 2; ++q) {
      ASSERT_EQ((*results)[q].size(), 3u) << c->index_options().factory;
      absl::flat_hash_set<std::string> ids;
      for (const Catalogue::Result& r : (*results)[q]) ids.emplace(r.id);
      EXPECT_EQ(ids, (absl::flat_hash_set<std::string>{data.ids[n - 3], data.ids[n - 2], data.ids[n - 1]}));
    }
  }
  std::vector<std::string> rest(data.ids.end() - 3, data.ids.end());
  absl::StatusOr<std::shared_ptr<const Catalogue>> empty = (*few)->Remove(rest, &removed);
  ASSERT_THAT(empty, IsOk());
  EXPECT_EQ((*empty)->size(), 0);
  auto results = (*empty)->Search(data.vectors.data(), queries);
  ASSERT_THAT(results, IsOk());
  EXPECT_TRUE((*results)[0].empty() && (*results)[1].empty());
}

// A bundle of `data`'s items (ids, one-field encoded rows, vectors) with an item tower of
// the vectors' width: what Catalogue::Create takes.
Bundle BundleOf(const Data& data, int dim) {
  const int n = static_cast<int>(data.ids.size());
  Bundle bundle;
  TowerShape shape;
  shape.fields.push_back({n + 1, 4});
  shape.output_dim = dim;
  absl::StatusOr<Tower> tower = Tower::Create(shape, 1);
  EXPECT_THAT(tower, IsOk());
  bundle.item.tower = *std::move(tower);
  bundle.items.ids = data.ids;
  bundle.items.rows = bundle.item.encoder.NewTable();
  for (int r = 0; r < n; ++r) bundle.items.rows.AppendRow(std::vector<std::vector<int32_t>>(1, std::vector<int32_t>{r + 1}), {});
  bundle.item_vectors = data.vectors;
  return bundle;
}

// Every item of `catalogue` for `query`, (id, score) in rank order.
std::vector<std::pair<std::string, float>> Everything(const Catalogue& catalogue, const float* query) {
  std::vector<Catalogue::Query> queries(1);
  queries[0].k = static_cast<int>(catalogue.size());
  absl::StatusOr<std::vector<std::vector<Catalogue::Result>>> results = catalogue.Search(query, queries);
  EXPECT_THAT(results, IsOk());
  std::vector<std::pair<std::string, float>> out;
  if (results.ok()) {
    for (const Catalogue::Result& r : (*results)[0]) out.emplace_back(std::string(r.id), r.score);
  }
  return out;
}

// The catalogue takes the items out of the bundle: no second copy of the vectors, ids or
// encoded rows stays in the model it shares with the snapshot, and the catalogue serves
// them all from its own structures.
TEST(CatalogueTest, TheBundleKeepsNoItemsOnceTheCatalogueHasThem) {
  const int dim = 8, n = 200;
  const Data data = RandomData(n, dim, 61);
  absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue = Catalogue::Create(BundleOf(data, dim), IndexOptions{});
  ASSERT_THAT(catalogue, IsOk());
  const Bundle& model = *(*catalogue)->bundle();
  EXPECT_TRUE(model.item_vectors.empty());
  EXPECT_TRUE(model.items.ids.empty());
  EXPECT_EQ(model.items.rows.size(), 0);
  EXPECT_TRUE(model.items.rows.indices().empty());
  EXPECT_EQ(model.embedding_dim(), dim);  // the towers stay
  ASSERT_EQ((*catalogue)->size(), n);
  for (const std::string& id : data.ids) EXPECT_TRUE((*catalogue)->Contains(id)) << id;
  EXPECT_FALSE((*catalogue)->Contains("item-200"));
  const std::vector<std::pair<std::string, float>> all = Everything(**catalogue, data.vectors.data());
  const std::vector<int32_t> truth = BruteForce(data, data.vectors.data(), dim, n, {});
  ASSERT_EQ(all.size(), truth.size());
  for (int r = 0; r < n; ++r) EXPECT_EQ(all[r].first, data.ids[truth[r]]) << "rank " << r;
}

// The ids are held once, in one array of exactly their characters: every result's id
// points into it (ids held one string each would be 32 bytes apart or more), and the id
// table costs its characters plus ~10 bytes per id.
TEST(CatalogueTest, IdsAreStoredOnceInOneArray) {
  const int dim = 8, n = 500;
  const Data data = RandomData(n, dim, 62);
  size_t chars = 0;
  for (const std::string& id : data.ids) chars += id.size();
  absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue = Catalogue::Create(BundleOf(data, dim), IndexOptions{});
  ASSERT_THAT(catalogue, IsOk());
  std::vector<Catalogue::Query> queries(1);
  queries[0].k = n;
  absl::StatusOr<std::vector<std::vector<Catalogue::Result>>> results = (*catalogue)->Search(data.vectors.data(), queries);
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ((*results)[0].size(), static_cast<size_t>(n));
  const char* lowest = nullptr;
  const char* highest = nullptr;
  for (const Catalogue::Result& r : (*results)[0]) {
    if (lowest == nullptr || r.id.data() < lowest) lowest = r.id.data();
    if (highest == nullptr || r.id.data() + r.id.size() > highest) highest = r.id.data() + r.id.size();
  }
  EXPECT_EQ(static_cast<size_t>(highest - lowest), chars);
  EXPECT_LE((*catalogue)->memory().ids, chars + 11 * static_cast<size_t>(n));
}

// RebuildIndex needs no vectors from the bundle when the index keeps the floats ("Flat",
// HNSW, IVF,Flat): the rebuilt exact index answers exactly what an exact index built from
// the original vectors does, ids and scores. From lossy codes (SQ8) there is nothing to
// rebuild from without the bundle directory: FAILED_PRECONDITION, the catalogue unchanged.
TEST(CatalogueTest, RebuildIndexUsesTheIndexsOwnVectors) {
  const int dim = 8, n = 300;
  const Data data = RandomData(n, dim, 63);
  absl::StatusOr<std::shared_ptr<const Catalogue>> exact = Catalogue::Create(BundleOf(data, dim), IndexOptions{});
  ASSERT_THAT(exact, IsOk());
  const Data queries = RandomData(3, dim, 64);
  for (const char* factory : {"Flat", "HNSW16", "IVF8,Flat"}) {
    absl::StatusOr<std::shared_ptr<const Catalogue>> catalogue =
        Catalogue::Create(BundleOf(data, dim), IndexOptions{factory, 0, 0}, /*bundle_dir=*/"");
    ASSERT_THAT(catalogue, IsOk());
    for (const bool half : {true, false}) {
      IndexOptions flat;
      flat.half_first_pass = half;
      absl::StatusOr<std::shared_ptr<const Catalogue>> rebuilt = (*catalogue)->WithIndex(flat);
      ASSERT_THAT(rebuilt, IsOk());
      EXPECT_EQ((*rebuilt)->index_options().factory, "Flat");
      for (int q = 0; q < 3; ++q) {
        EXPECT_EQ(Everything(**rebuilt, queries.vectors.data() + q * dim), Everything(**exact, queries.vectors.data() + q * dim))
            << factory << " query " << q;
      }
    }
  }
  absl::StatusOr<std::shared_ptr<const Catalogue>> codes = Catalogue::Create(BundleOf(data, dim), IndexOptions{"SQ8", 0, 0});
  ASSERT_THAT(codes, IsOk());
  EXPECT_EQ((*codes)->WithIndex(IndexOptions{}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*codes)->index_options().factory, "SQ8");
  EXPECT_EQ((*codes)->WithIndex(IndexOptions{"NoSuchIndex", 0, 0}).status().code(), absl::StatusCode::kInvalidArgument);
}

// What the index gives back to rebuild from: the very floats it was built from where it
// keeps them, nothing where it keeps lossy codes.
TEST(ItemIndexTest, FloatsAreTheVectorsItWasBuiltFrom) {
  const int dim = 8, n = 300;
  const Data data = RandomData(n, dim, 65);
  for (const char* factory : {"Flat", "HNSW16", "HNSW8,Flat", "IVF8,Flat"}) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, {factory, 0, 0});
    ASSERT_THAT(index, IsOk());
    std::vector<float> scratch;
    const std::optional<std::span<const float>> floats = (*index)->Floats(&scratch);
    ASSERT_TRUE(floats.has_value()) << factory;
    EXPECT_TRUE(std::equal(floats->begin(), floats->end(), data.vectors.begin(), data.vectors.end())) << factory;
  }
  for (const char* factory : {"SQ8", "SQfp16", "PQ2x4", "IVF8,SQ8", "IVF8,PQ2x4"}) {
    absl::StatusOr<std::unique_ptr<ItemIndex>> index = ItemIndex::Build(data.ids, data.vectors, dim, {factory, 0, 0});
    ASSERT_THAT(index, IsOk());
    std::vector<float> scratch;
    EXPECT_FALSE((*index)->Floats(&scratch).has_value()) << factory;
  }
  // Built from floats it takes, an index answers as one built from a copy.
  std::vector<float> taken = data.vectors;
  absl::StatusOr<std::unique_ptr<ItemIndex>> owner = ItemIndex::Build(std::move(taken), dim, IndexOptions{});
  absl::StatusOr<std::unique_ptr<ItemIndex>> copy = ItemIndex::Build(std::span<const float>(data.vectors), dim, IndexOptions{});
  ASSERT_THAT(owner, IsOk());
  ASSERT_THAT(copy, IsOk());
  const auto a = (*owner)->Search(data.vectors.data(), 4, 10, nullptr);
  const auto b = (*copy)->Search(data.vectors.data(), 4, 10, nullptr);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  testing::ExpectSameAnswers(*a, *b, &ItemIndex::Hit::row);
}

}  // namespace
}  // namespace twotower
