// AttributeFilter: the row bitmap of a request's filters (any_of within a filter, AND
// across filters), values the model does not know, and the filters it refuses, from
// Allowed and from Check alike. On the hand-made catalogue of tests/item_catalogue.h,
// whose attributes the expectations are computed from.
#include "index/attribute_filter.h"

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/item_catalogue.h"
#include "tests/status_matchers.h"

namespace twotower {
namespace {

using ::testing::HasSubstr;
using testing::AddFilter;
using testing::BrandOf;
using testing::Filters;
using testing::GenresOf;
using testing::IsOk;
using testing::StatusIs;

constexpr int kItems = 60;

bool HasGenre(int r, const std::string& genre) {
  const std::vector<std::string> genres = GenresOf(r);
  return std::find(genres.begin(), genres.end(), genre) != genres.end();
}

class AttributeFilterTest : public ::testing::Test {
 protected:
  AttributeFilterTest()
      : encoder_(testing::FitItemEncoder(kItems)),
        items_(testing::EncodeItems(encoder_, 0, kItems)),
        filter_(encoder_, items_.rows) {}

  // The bitmap Allowed gives, which must be OK.
  std::vector<uint8_t> Allowed(const Filters& filters) const {
    absl::StatusOr<std::vector<uint8_t>> allowed = filter_.Allowed(filters);
    EXPECT_THAT(allowed, IsOk());
    EXPECT_THAT(filter_.Check(filters), IsOk());
    return allowed.ok() ? *allowed : std::vector<uint8_t>();
  }

  // The bitmap a predicate on item numbers gives.
  static std::vector<uint8_t> Expected(const std::function<bool(int)>& pass) {
    std::vector<uint8_t> expected(kItems);
    for (int r = 0; r < kItems; ++r) expected[r] = pass(r) ? 1 : 0;
    return expected;
  }

  const FeatureEncoder encoder_;
  const EncodedEntities items_;
  const AttributeFilter filter_;
};

TEST_F(AttributeFilterTest, NoFiltersAllowEveryRow) {
  EXPECT_EQ(Allowed(Filters()), std::vector<uint8_t>(kItems, 1));
}

TEST_F(AttributeFilterTest, AFilterPassesItemsHoldingAnyOfItsValues) {
  Filters genres;
  AddFilter(&genres, "genres", {"g1", "g9"});
  const std::vector<uint8_t> expected = Expected([](int r) { return HasGenre(r, "g1") || HasGenre(r, "g9"); });
  ASSERT_GT(std::count(expected.begin(), expected.end(), 1), 0);
  EXPECT_EQ(Allowed(genres), expected);

  Filters brand;
  AddFilter(&brand, "brand", {"b2"});
  EXPECT_EQ(Allowed(brand), Expected([](int r) { return BrandOf(r) == "b2"; }));
}

TEST_F(AttributeFilterTest, SeveralFiltersMustAllPass) {
  Filters filters;
  AddFilter(&filters, "genres", {"g0", "g9"});
  AddFilter(&filters, "brand", {"b0", "b1"});
  const std::vector<uint8_t> expected = Expected([](int r) {
    return (HasGenre(r, "g0") || HasGenre(r, "g9")) && (BrandOf(r) == "b0" || BrandOf(r) == "b1");
  });
  ASSERT_GT(std::count(expected.begin(), expected.end(), 1), 0);
  EXPECT_EQ(Allowed(filters), expected);
  // The same feature twice: both must pass.
  Filters twice;
  AddFilter(&twice, "genres", {"g0", "g1"});
  AddFilter(&twice, "genres", {"g9"});
  EXPECT_EQ(Allowed(twice), Expected([](int r) { return (HasGenre(r, "g0") || HasGenre(r, "g1")) && HasGenre(r, "g9"); }));
  // Filters that exclude one another leave nothing.
  Filters disjoint;
  AddFilter(&disjoint, "brand", {"b0"});
  AddFilter(&disjoint, "brand", {"b1"});
  EXPECT_EQ(Allowed(disjoint), std::vector<uint8_t>(kItems, 0));
}

TEST_F(AttributeFilterTest, UnknownValuesMatchNothing) {
  Filters unknown;
  AddFilter(&unknown, "brand", {"no-such-brand"});
  EXPECT_EQ(Allowed(unknown), std::vector<uint8_t>(kItems, 0));
  // Beside known values, an unknown one adds nothing.
  Filters mixed;
  AddFilter(&mixed, "genres", {"no-such-genre", "g3"});
  EXPECT_EQ(Allowed(mixed), Expected([](int r) { return HasGenre(r, "g3"); }));
  // Items without a brand pass no brand filter, whatever values it names.
  Filters every_brand;
  AddFilter(&every_brand, "brand", {"b0", "b1", "b2", ""});
  const std::vector<uint8_t> branded = Expected([](int r) { return !BrandOf(r).empty(); });
  ASSERT_LT(std::count(branded.begin(), branded.end(), 1), kItems);
  EXPECT_EQ(Allowed(every_brand), branded);

  // An item whose value the model never saw holds the OOV token: it is not matched by
  // that value, nor by any other.
  EncodedEntities rows = testing::EncodeItems(encoder_, 0, 2);
  std::vector<RawValue> values = testing::ItemValues(2);
  values[1].tokens = {"b-new"};
  encoder_.Encode("item-new", &values, &rows.rows);
  const AttributeFilter with_new(encoder_, rows.rows);
  Filters new_brand;
  AddFilter(&new_brand, "brand", {"b-new"});
  absl::StatusOr<std::vector<uint8_t>> allowed = with_new.Allowed(new_brand);
  ASSERT_THAT(allowed, IsOk());
  EXPECT_EQ(*allowed, std::vector<uint8_t>(3, 0));
  Filters old_brands;
  AddFilter(&old_brands, "brand", {"b0", "b1", "b2"});
  allowed = with_new.Allowed(old_brands);
  ASSERT_THAT(allowed, IsOk());
  EXPECT_EQ(*allowed, (std::vector<uint8_t>{1, 1, 0}));
}

TEST_F(AttributeFilterTest, BadFiltersAreInvalidArgumentFromAllowedAndCheck) {
  struct Case {
    std::string what;
    Filters filters;
    std::string message;
  };
  std::vector<Case> cases(5);
  cases[0].what = "unknown feature";
  AddFilter(&cases[0].filters, "shoe_size", {"44"});
  cases[0].message = "filter on \"shoe_size\": not a categorical or multi-hot item feature of this model";
  cases[1].what = "numeric feature";
  AddFilter(&cases[1].filters, "price", {"3"});
  cases[1].message = "filter on \"price\": not a categorical or multi-hot item feature of this model";
  cases[2].what = "no values";
  AddFilter(&cases[2].filters, "genres", {});
  cases[2].message = "filter on \"genres\" has no any_of values";
  cases[3].what = "a bad filter after good ones";
  AddFilter(&cases[3].filters, "genres", {"g1"});
  AddFilter(&cases[3].filters, "brand", {"b1"});
  AddFilter(&cases[3].filters, "", {"b1"});
  cases[3].message = "filter on \"\": not a categorical or multi-hot item feature of this model";
  cases[4].what = "too many filters";
  for (int f = 0; f <= AttributeFilter::kMaxFilters; ++f) AddFilter(&cases[4].filters, "genres", {"g1"});
  cases[4].message = "at most 255 filters, got 256";
  for (const Case& c : cases) {
    EXPECT_THAT(filter_.Allowed(c.filters), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.what;
    EXPECT_THAT(filter_.Check(c.filters), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.what;
  }
}

TEST_F(AttributeFilterTest, AsManyFiltersAsAllowedStillAnswerExactly) {
  Filters most;
  for (int f = 0; f < AttributeFilter::kMaxFilters - 1; ++f) AddFilter(&most, "genres", {"g1", "g2"});
  AddFilter(&most, "brand", {"b1"});
  ASSERT_EQ(most.size(), AttributeFilter::kMaxFilters);
  const std::vector<uint8_t> expected =
      Expected([](int r) { return (HasGenre(r, "g1") || HasGenre(r, "g2")) && BrandOf(r) == "b1"; });
  ASSERT_GT(std::count(expected.begin(), expected.end(), 1), 0);
  EXPECT_EQ(Allowed(most), expected);
}

}  // namespace
}  // namespace twotower
