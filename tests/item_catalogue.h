// A small hand-made item catalogue whose attributes the tests know exactly, for the
// attribute filter and catalogue tests: item r is "item-r" with
//   genres (multi-hot)   "g<r % 4>", plus "g9" when r % 5 == 0
//   brand (categorical)  "b<r % 3>", none when r % 7 == 6
//   price (numeric)      r
// and a random vector of `dim` floats. The encoder is fitted on exactly these items.
#ifndef TWOTOWER_TESTS_ITEM_CATALOGUE_H_
#define TWOTOWER_TESTS_ITEM_CATALOGUE_H_

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bundle/bundle.h"
#include "dataset/feature_table.h"
#include "features/feature_encoder.h"
#include "gtest/gtest.h"
#include "model/tower.h"
#include "tests/status_matchers.h"
#include "twotower/v1/retrieval.pb.h"

namespace twotower::testing {

inline std::vector<v1::FeatureSpec> ItemSchema() {
  std::vector<v1::FeatureSpec> schema(3);
  schema[0].set_name("genres");
  schema[0].set_kind(v1::FeatureSpec::KIND_MULTI_HOT);
  schema[0].set_embedding_dim(4);
  schema[1].set_name("brand");
  schema[1].set_kind(v1::FeatureSpec::KIND_CATEGORICAL);
  schema[1].set_embedding_dim(4);
  schema[2].set_name("price");
  schema[2].set_kind(v1::FeatureSpec::KIND_NUMERIC);
  return schema;
}

inline std::vector<std::string> GenresOf(int r) {
  std::vector<std::string> genres = {absl::StrCat("g", r % 4)};
  if (r % 5 == 0) genres.push_back("g9");
  return genres;
}
inline std::string BrandOf(int r) { return r % 7 == 6 ? "" : absl::StrCat("b", r % 3); }

// The raw features of item r, schema-aligned.
inline std::vector<RawValue> ItemValues(int r) {
  std::vector<RawValue> values(3);
  values[0].tokens = GenresOf(r);
  if (!BrandOf(r).empty()) values[1].tokens = {BrandOf(r)};
  values[2].number = r;
  values[2].has_number = true;
  return values;
}

inline FeatureEncoder FitItemEncoder(int n) {
  FeatureTable table;
  absl::flat_hash_map<std::string, int64_t> id_counts;
  for (int r = 0; r < n; ++r) {
    table.ids.push_back(absl::StrCat("item-", r));
    table.values.push_back(ItemValues(r));
    id_counts[table.ids.back()] = 1;
  }
  absl::StatusOr<FeatureEncoder> encoder = FeatureEncoder::Fit(ItemSchema(), table, id_counts, 1);
  EXPECT_THAT(encoder, IsOk());
  return encoder.ok() ? *std::move(encoder) : FeatureEncoder();
}

// Items "item-<first>".."item-<first + n - 1>" encoded by `encoder`.
inline EncodedEntities EncodeItems(const FeatureEncoder& encoder, int first, int n) {
  EncodedEntities items{{}, encoder.NewTable()};
  for (int r = first; r < first + n; ++r) {
    items.ids.push_back(absl::StrCat("item-", r));
    const std::vector<RawValue> values = ItemValues(r);
    encoder.Encode(items.ids.back(), &values, &items.rows);
  }
  return items;
}

using Filters = google::protobuf::RepeatedPtrField<v1::ItemFilter>;

// Appends a filter on `feature` passing items that hold any of `any_of`.
inline void AddFilter(Filters* filters, const std::string& feature, const std::vector<std::string>& any_of) {
  v1::ItemFilter* filter = filters->Add();
  filter->set_feature(feature);
  for (const std::string& value : any_of) filter->add_any_of(value);
}

inline std::vector<float> RandomVectors(int n, int dim, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> vectors(static_cast<size_t>(n) * dim);
  for (float& x : vectors) x = normal(rng);
  return vectors;
}

// A bundle of items 0..n-1 with `dim`-wide random vectors: what Catalogue::Create takes.
inline Bundle ItemBundle(int n, int dim, unsigned seed) {
  Bundle bundle;
  bundle.item.encoder = FitItemEncoder(n);
  TowerShape shape;
  shape.fields.push_back({n + 1, 4});
  shape.output_dim = dim;
  absl::StatusOr<Tower> tower = Tower::Create(shape, 1);
  EXPECT_THAT(tower, IsOk());
  if (tower.ok()) bundle.item.tower = *std::move(tower);
  bundle.items = EncodeItems(bundle.item.encoder, 0, n);
  bundle.item_vectors = RandomVectors(n, dim, seed);
  return bundle;
}

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_ITEM_CATALOGUE_H_
