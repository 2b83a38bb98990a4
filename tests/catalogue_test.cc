// Catalogue: upserts and removals as new catalogues (the old one unchanged), the delta
// of upserted items searched with the base and merged by score, removed or replaced rows
// never returned, exclusions and filters on both parts, k's promise, bad input. Checked
// against a brute-force model of what the catalogue holds, on the hand-made catalogue of
// tests/item_catalogue.h. (index_test covers the base index kinds, memory and WithIndex
// from lossy codes.)
#include "index/catalogue.h"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/item_catalogue.h"
#include "tests/status_matchers.h"

namespace twotower {
namespace {

using ::testing::HasSubstr;
using testing::BrandOf;
using testing::GenresOf;
using testing::IsOk;
using testing::StatusIs;

constexpr int kDim = 8;
constexpr int kItems = 120;
constexpr float kTolerance = 1e-4f;

using CataloguePtr = std::shared_ptr<const Catalogue>;

// What a catalogue should hold: id -> (item number whose features it has, vector).
struct Item {
  int features;
  std::vector<float> vector;
};
using Model = std::map<std::string, Item>;

std::vector<float> Slice(const std::vector<float>& vectors, int r) {
  return std::vector<float>(vectors.begin() + r * kDim, vectors.begin() + (r + 1) * kDim);
}

float Dot(const float* a, const std::vector<float>& b) {
  double dot = 0;
  for (int d = 0; d < kDim; ++d) dot += static_cast<double>(a[d]) * b[d];
  return static_cast<float>(dot);
}

// Whether item number r has a genre of `genres` (a genres filter's any_of).
bool AnyGenre(int r, const std::set<std::string>& genres) {
  for (const std::string& g : GenresOf(r)) {
    if (genres.contains(g)) return true;
  }
  return false;
}

class CatalogueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Bundle bundle = testing::ItemBundle(kItems, kDim, 7);
    for (int r = 0; r < kItems; ++r) model_[absl::StrCat("item-", r)] = {r, Slice(bundle.item_vectors, r)};
    absl::StatusOr<CataloguePtr> catalogue = Catalogue::Create(std::move(bundle), IndexOptions{});
    ASSERT_THAT(catalogue, IsOk());
    base_ = *std::move(catalogue);
    query_ = testing::RandomVectors(1, kDim, 8);
  }

  // Upserts items "item-<first>".. (features of those item numbers) with `vectors`,
  // into `catalogue` and into `model`.
  CataloguePtr Upsert(const Catalogue& catalogue, int first, const std::vector<float>& vectors, Model* model) {
    const int n = static_cast<int>(vectors.size()) / kDim;
    const EncodedEntities items = testing::EncodeItems(catalogue.bundle()->item.encoder, first, n);
    absl::StatusOr<CataloguePtr> next = catalogue.Upsert(items, vectors);
    EXPECT_THAT(next, IsOk());
    for (int i = 0; i < n; ++i) (*model)[items.ids[i]] = {first + i, Slice(vectors, i)};
    return next.ok() ? *next : nullptr;
  }

  // The base catalogue with `added` new items (features of rows kItems..) upserted, then
  // base item `replaced` upserted again with a new vector (random vectors from `seed`).
  CataloguePtr AddAndReplace(int added, int replaced, uint64_t seed, Model* model) {
    const CataloguePtr with_new = Upsert(*base_, kItems, testing::RandomVectors(added, kDim, seed), model);
    if (with_new == nullptr) return nullptr;
    return Upsert(*with_new, replaced, testing::RandomVectors(1, kDim, seed + 1), model);
  }

  // The top k of `model` for `query`, without `excluded`, items passing `pass`.
  static std::vector<std::pair<std::string, float>> Expected(const Model& model, const float* query, int k,
                                                             const std::set<std::string>& excluded,
                                                             const std::function<bool(int)>& pass) {
    std::vector<std::pair<std::string, float>> out;
    for (const auto& [id, item] : model) {
      if (!excluded.contains(id) && pass(item.features)) out.emplace_back(id, Dot(query, item.vector));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    out.resize(std::min<size_t>(out.size(), static_cast<size_t>(std::max(0, k))));
    return out;
  }

  // Searches one query and checks the answer is `expected`, ids in order and scores.
  static void ExpectSearch(const Catalogue& catalogue, const Catalogue::Query& query, const float* vector,
                           const std::vector<std::pair<std::string, float>>& expected) {
    absl::StatusOr<std::vector<std::vector<Catalogue::Result>>> results =
        catalogue.Search(vector, std::span<const Catalogue::Query>(&query, 1));
    ASSERT_THAT(results, IsOk());
    const std::vector<Catalogue::Result>& got = (*results)[0];
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].id, expected[i].first) << "rank " << i;
      EXPECT_NEAR(got[i].score, expected[i].second, kTolerance) << "rank " << i;
    }
  }

  void ExpectEverything(const Catalogue& catalogue, const Model& model) {
    ASSERT_EQ(catalogue.size(), static_cast<int64_t>(model.size()));
    Catalogue::Query all;
    all.k = kItems * 2;
    ExpectSearch(catalogue, all, query_.data(), Expected(model, query_.data(), all.k, {}, [](int) { return true; }));
  }

  Model model_;
  CataloguePtr base_;
  std::vector<float> query_;
};

TEST_F(CatalogueTest, UpsertedItemsAreSearchedWithTheBase) {
  Model model = model_;
  // New items, one of them scoring above every base item.
  std::vector<float> vectors = testing::RandomVectors(5, kDim, 9);
  for (int d = 0; d < kDim; ++d) vectors[2 * kDim + d] = 100 * query_[d];
  const CataloguePtr upserted = Upsert(*base_, kItems, vectors, &model);
  ASSERT_NE(upserted, nullptr);
  EXPECT_EQ(upserted->upserted(), 5);
  EXPECT_EQ(upserted->size(), kItems + 5);
  for (int r = kItems; r < kItems + 5; ++r) EXPECT_TRUE(upserted->Contains(absl::StrCat("item-", r)));
  ExpectEverything(*upserted, model);
  Catalogue::Query top;
  top.k = 1;
  ExpectSearch(*upserted, top, query_.data(), {{absl::StrCat("item-", kItems + 2), Dot(query_.data(), model.at(absl::StrCat("item-", kItems + 2)).vector)}});

  // The catalogue upserted into is unchanged.
  EXPECT_EQ(base_->upserted(), 0);
  EXPECT_FALSE(base_->Contains(absl::StrCat("item-", kItems)));
  ExpectEverything(*base_, model_);
}

TEST_F(CatalogueTest, AnUpsertReplacesTheItemOfItsId) {
  Model model = model_;
  // A base item, moved to the top.
  std::vector<float> top(kDim);
  for (int d = 0; d < kDim; ++d) top[d] = 50 * query_[d];
  const CataloguePtr once = Upsert(*base_, 3, top, &model);
  ASSERT_NE(once, nullptr);
  EXPECT_EQ(once->size(), kItems);
  EXPECT_EQ(once->upserted(), 1);
  ExpectEverything(*once, model);  // item-3 once, with its new score
  // Replaced again: the delta's own version goes too.
  std::vector<float> bottom(kDim);
  for (int d = 0; d < kDim; ++d) bottom[d] = -50 * query_[d];
  const CataloguePtr twice = Upsert(*once, 3, bottom, &model);
  ASSERT_NE(twice, nullptr);
  EXPECT_EQ(twice->size(), kItems);
  EXPECT_EQ(twice->upserted(), 1);
  ExpectEverything(*twice, model);
  Catalogue::Query first;
  first.k = 1;
  ExpectSearch(*twice, first, query_.data(), Expected(model, query_.data(), 1, {}, [](int) { return true; }));
  EXPECT_NE(Expected(model, query_.data(), 1, {}, [](int) { return true; })[0].first, "item-3");
}

TEST_F(CatalogueTest, BadUpsertsAreInvalidArgumentAndChangeNothing) {
  const FeatureEncoder& encoder = base_->bundle()->item.encoder;
  const EncodedEntities two = testing::EncodeItems(encoder, kItems, 2);
  EXPECT_THAT(base_->Upsert(two, testing::RandomVectors(3, kDim, 1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ids, rows and vectors do not match")));
  EncodedEntities empty_id = two;
  empty_id.ids[1].clear();
  EXPECT_THAT(base_->Upsert(empty_id, testing::RandomVectors(2, kDim, 1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("an item id is empty")));
  EncodedEntities repeated = two;
  repeated.ids[1] = repeated.ids[0];
  EXPECT_THAT(base_->Upsert(repeated, testing::RandomVectors(2, kDim, 1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("item \"" + two.ids[0] + "\" given twice")));
  ExpectEverything(*base_, model_);
}

TEST_F(CatalogueTest, RemovedItemsAreNeverReturned) {
  Model model = model_;
  const CataloguePtr replaced = AddAndReplace(4, 5, 10, &model);
  ASSERT_NE(replaced, nullptr);
  // Base items, an upserted one, a replaced base item (counted once), an unknown id.
  const std::vector<std::string> gone = {"item-0", "item-7", "item-50", absl::StrCat("item-", kItems + 1),
                                         "item-5", "no-such-item"};
  int64_t removed = -1;
  absl::StatusOr<CataloguePtr> after = replaced->Remove(gone, &removed);
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ(removed, 5);
  for (const std::string& id : gone) {
    EXPECT_FALSE((*after)->Contains(id)) << id;
    model.erase(id);
  }
  EXPECT_EQ((*after)->upserted(), 3);
  ExpectEverything(**after, model);
  // Whatever k, with filters and exclusions too.
  Catalogue::Query filtered;
  filtered.k = 1000;
  testing::Filters filters;
  testing::AddFilter(&filters, "genres", {"g0"});  // items 0, 4, 8, ...
  filtered.filters = &filters;
  ExpectSearch(**after, filtered, query_.data(),
               Expected(model, query_.data(), 1000, {}, [](int r) { return AnyGenre(r, {"g0"}); }));
  // Removing them again counts nothing; the catalogue they were removed from still has them.
  int64_t again = -1;
  ASSERT_THAT((*after)->Remove(gone, &again), IsOk());
  EXPECT_EQ(again, 0);
  EXPECT_TRUE(replaced->Contains("item-0"));
  EXPECT_TRUE(replaced->Contains("item-5"));
  EXPECT_TRUE(replaced->Contains(absl::StrCat("item-", kItems + 1)));
}

TEST_F(CatalogueTest, ExclusionsAndFiltersApplyToBaseAndDelta) {
  Model model = model_;
  // Upserted items with the features of items 120..139, and base item 4 replaced.
  const CataloguePtr catalogue = AddAndReplace(20, 4, 12, &model);
  ASSERT_NE(catalogue, nullptr);

  google::protobuf::RepeatedPtrField<std::string> exclude;
  for (const char* id : {"item-1", "item-8", "item-124", "item-125", "item-4", "no-such-item"}) {
    exclude.Add(std::string(id));
  }
  testing::Filters filters;
  testing::AddFilter(&filters, "genres", {"g0", "g1"});
  testing::AddFilter(&filters, "brand", {"b0", "b2"});
  const auto pass = [](int r) { return AnyGenre(r, {"g0", "g1"}) && (BrandOf(r) == "b0" || BrandOf(r) == "b2"); };
  const std::set<std::string> excluded(exclude.begin(), exclude.end());
  for (const int k : {1, 5, 1000}) {
    SCOPED_TRACE(k);
    Catalogue::Query query;
    query.k = k;
    query.exclude = &exclude;
    query.filters = &filters;
    ExpectSearch(*catalogue, query, query_.data(), Expected(model, query_.data(), k, excluded, pass));
  }
  // Rows of the bundle's catalogue excluded: item-4's row leaves out its upserted
  // replacement too; out-of-range rows are ignored.
  const std::vector<int32_t> rows = {4, 9, -1, kItems + 3};
  Catalogue::Query seen;
  seen.k = 1000;
  seen.exclude_rows = rows;
  ExpectSearch(*catalogue, seen, query_.data(),
               Expected(model, query_.data(), 1000, {"item-4", "item-9"}, [](int) { return true; }));
}

TEST_F(CatalogueTest, EachQueryGetsMinOfItsKAndTheEligibleItems) {
  Model model = model_;
  const CataloguePtr catalogue = Upsert(*base_, kItems, testing::RandomVectors(10, kDim, 14), &model);
  ASSERT_NE(catalogue, nullptr);
  const std::vector<float> vectors = testing::RandomVectors(4, kDim, 15);
  testing::Filters filters;
  testing::AddFilter(&filters, "genres", {"g9"});  // every fifth item
  std::vector<Catalogue::Query> queries(4);
  queries[0].k = 3;
  queries[1].k = 1000;
  queries[2].k = 1000;
  queries[2].filters = &filters;
  queries[3].k = 0;
  absl::StatusOr<std::vector<std::vector<Catalogue::Result>>> results = catalogue->Search(vectors.data(), queries);
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), 4u);
  EXPECT_EQ((*results)[0].size(), 3u);
  EXPECT_EQ((*results)[1].size(), static_cast<size_t>(kItems + 10));
  EXPECT_EQ((*results)[2].size(), static_cast<size_t>((kItems + 10) / 5));
  EXPECT_TRUE((*results)[3].empty());
  // A batch answers each query as it would be answered alone.
  for (size_t q = 0; q < queries.size(); ++q) {
    SCOPED_TRACE(q);
    std::vector<std::pair<std::string, float>> alone;
    for (const Catalogue::Result& r : (*results)[q]) alone.emplace_back(std::string(r.id), r.score);
    ExpectSearch(*catalogue, queries[q], vectors.data() + q * kDim, alone);
  }
}

TEST_F(CatalogueTest, FiltersOnFeaturesThatCannotFilterAreInvalidArgument) {
  const CataloguePtr catalogue = Upsert(*base_, kItems, testing::RandomVectors(2, kDim, 16), &model_);
  ASSERT_NE(catalogue, nullptr);
  for (const std::string feature : {"price", "shoe_size"}) {
    testing::Filters filters;
    testing::AddFilter(&filters, feature, {"1"});
    const std::string message = "filter on \"" + feature + "\": not a categorical or multi-hot item feature";
    EXPECT_THAT(catalogue->CheckFilters(filters), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)));
    Catalogue::Query query;
    query.k = 5;
    query.filters = &filters;
    EXPECT_THAT(catalogue->Search(query_.data(), std::span<const Catalogue::Query>(&query, 1)).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)));
  }
}

TEST_F(CatalogueTest, ReindexingKeepsTheUpsertsAndRemovals) {
  Model model = model_;
  const CataloguePtr upserted = Upsert(*base_, kItems, testing::RandomVectors(6, kDim, 17), &model);
  ASSERT_NE(upserted, nullptr);
  int64_t removed = 0;
  const std::vector<std::string> gone = {"item-2", "item-11", absl::StrCat("item-", kItems + 4)};
  absl::StatusOr<CataloguePtr> changed = upserted->Remove(gone, &removed);
  ASSERT_THAT(changed, IsOk());
  for (const std::string& id : gone) model.erase(id);
  absl::StatusOr<CataloguePtr> hnsw = (*changed)->WithIndex(IndexOptions{"HNSW16", 0, 0});
  ASSERT_THAT(hnsw, IsOk());
  EXPECT_EQ((*hnsw)->index_options().factory, "HNSW16");
  EXPECT_EQ((*hnsw)->upserted(), 5);
  for (const std::string& id : gone) EXPECT_FALSE((*hnsw)->Contains(id)) << id;
  // Back to the exact index: the same answer as before the round trip, removals included.
  absl::StatusOr<CataloguePtr> flat = (*hnsw)->WithIndex(IndexOptions{});
  ASSERT_THAT(flat, IsOk());
  ExpectEverything(**flat, model);
  // k above the catalogue from the approximate index: every remaining item once.
  Catalogue::Query all;
  all.k = 1000;
  absl::StatusOr<std::vector<std::vector<Catalogue::Result>>> results =
      (*hnsw)->Search(query_.data(), std::span<const Catalogue::Query>(&all, 1));
  ASSERT_THAT(results, IsOk());
  std::set<std::string> ids;
  for (const Catalogue::Result& r : (*results)[0]) ids.emplace(r.id);
  std::set<std::string> expected;
  for (const auto& [id, item] : model) expected.insert(id);
  EXPECT_EQ(ids, expected);
}

}  // namespace
}  // namespace twotower
